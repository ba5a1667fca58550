"""exchange_domains under mpiexec -n 1..4: every rank reads an arbitrary slice of a frame; after
the Alltoallv each atom is owned once and its descriptor equals the serial one bitwise."""

import pytest

from .util import RANK_COUNTS, run_mpi

pytestmark = pytest.mark.mpi

SCRIPT = r'''
import sys
import numpy as np
import hpcquests as hq
from hpcquests import testing
from hpcquests.descriptors import point_set_descriptors
from hpcquests.parallel import get_comm, partition
from hpcquests.distributed.domains import DomainExchange, exchange_domains

comm = get_comm()
rank, size = comm.rank, comm.size
frames = {
    "bcc": testing.perturbed_crystal("bcc", "Ta", size=(5, 5, 5), seed=1),
    "triclinic": testing.triclinic_crystal("Cu", size=(4, 4, 4), seed=2),
    "slab": testing.surface_slab("fcc", "Cu", size=(3, 3, 4), vacuum=3.0, seed=3),
}
ok = True
for name, atoms in frames.items():
    n = len(atoms)
    perm = np.random.default_rng(7).permutation(n)       # ranks read scattered atoms
    lo, hi = partition(n, size, rank)
    mine = perm[lo:hi]
    dom = exchange_domains(comm, atoms.positions[mine], mine, atoms.cell.array, atoms.pbc, 5.0,
                           payload={"index": mine})
    # streamed: a different number of blocks on every rank (extra rounds, empty blocks), same result
    ex = DomainExchange(comm, atoms.cell.array, atoms.pbc, 5.0)
    blocks = np.array_split(np.arange(len(mine)), 2 * rank + 1 + (len(mine) % 3))
    for b in blocks:
        ex.count(atoms.positions[mine[b]])
    ex.allocate({"index": np.int64})
    assert ex.rounds == max(comm.gather_objects(len(blocks)))
    for i in range(ex.rounds):
        if i < len(blocks):
            b = blocks[i]
            ex.send(atoms.positions[mine[b]], mine[b], {"index": mine[b]})
        else:
            ex.send()
    streamed = ex.finish()
    assert streamed.keys() == dom.keys()
    for key in dom:
        assert np.array_equal(streamed[key], dom[key]), (name, key)
        assert np.asarray(streamed[key]).dtype == np.asarray(dom[key]).dtype
    assert dom["shift"].dtype == np.int8
    x = np.empty((dom["n_owned"], 63))
    point_set_descriptors(dom["pts"], dom["atom"], dom["shift"], dom["n_owned"], 32, 5.0, out=x)
    idx = comm.gather_to_root(dom["index"], root=0)
    xs = comm.gather_to_root(x, root=0)
    if rank == 0:
        idx = np.concatenate(idx)
        xs = np.concatenate(xs)
        assert np.array_equal(np.sort(idx), np.arange(n)), name
        full = np.empty_like(xs)
        full[idx] = xs
        same = np.array_equal(full, hq.get_descriptors(atoms))
        print(name, "equal" if same else "DIFFERENT", dom["shape"], flush=True)
        ok &= same
sys.exit(0 if ok else 1)
'''


@pytest.mark.parametrize("n", RANK_COUNTS)
def test_exchange_domains_bitwise(n, tmp_path):
    script = tmp_path / "dom.py"
    script.write_text(SCRIPT)
    out = run_mpi(n, [str(script)], timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("equal") == 3 and "DIFFERENT" not in out.stdout
