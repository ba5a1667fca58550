"""Cluster labels over domains (distributed.clusters.domain_clusters) under mpiexec -n 1..4: every
rank reads a scattered slice of the atoms; after the domain exchange the labels of every atom
equal the serial hpcquests.clusters (itself checked against a brute-force periodic graph), for
orthogonal, triclinic and slab cells, sparse marks (many clusters) and percolating ones (one
cluster wrapping around the box through every domain)."""

import pytest

from .util import RANK_COUNTS, run_mpi

pytestmark = pytest.mark.mpi

SCRIPT = r'''
import numpy as np
import hpcquests as hq
from hpcquests import testing
from hpcquests.parallel import get_comm, partition
from hpcquests.distributed.domains import exchange_domains
from hpcquests.distributed.clusters import domain_clusters

comm = get_comm()
results = []
for kind in ("orthogonal", "triclinic", "slab"):
    for fraction in (0.15, 0.4):
        rng = np.random.default_rng(int(fraction * 100))
        if kind == "orthogonal":
            a = testing.perturbed_crystal("fcc", "Cu", size=(5, 5, 5), noise=0.1, seed=1)
        elif kind == "triclinic":
            a = testing.triclinic_crystal("Cu", size=(5, 5, 5), noise=0.1, shear=(0.3, -0.2, 0.25), seed=2)
        else:
            a = testing.perturbed_crystal("fcc", "Cu", size=(5, 5, 3), noise=0.1, seed=3)
            a.pbc = (True, True, False)
        n = len(a)
        mask = rng.random(n) < fraction
        ids = rng.permutation(n) + 1
        want = hq.clusters(a.positions, a.cell[:], a.pbc, mask, 3.0, ids=ids)
        perm = np.random.default_rng(7).permutation(n)  # ranks read scattered atoms
        lo, hi = partition(n, comm.size, comm.rank)
        mine = np.sort(perm[lo:hi])
        dom = exchange_domains(comm, a.positions[mine], mine, a.cell[:], a.pbc, 5.0, payload={"id": ids[mine]})
        no = dom["n_owned"]
        rows = dom["atom"][:no]
        lab = domain_clusters(comm, dom["pts"], dom["atom"], no, dom["id"], mask[rows], 3.0)
        got = np.zeros(n, np.int64)
        got[np.concatenate(comm.gather_objects(rows))] = np.concatenate(comm.gather_objects(lab))
        results.append(f"{kind} {fraction} {int(want.max())} clusters " + ("equal" if np.array_equal(got, want)
                                                                          else "DIFFERENT"))
if comm.rank == 0:
    print("\n".join(results))
'''


@pytest.mark.parametrize("n", RANK_COUNTS)
def test_labels_equal_the_serial_ones_on_any_rank_count(n, tmp_path):
    script = tmp_path / "clusters.py"
    script.write_text(SCRIPT)
    out = run_mpi(n, [str(script)], timeout=180)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("equal") == 6 and "DIFFERENT" not in out.stdout, out.stdout
    assert " 1 clusters" in out.stdout  # a percolating case: one cluster through every domain
