"""python -m hpcquests.uq under mpiexec -n 1..4: per-atom δH equal to the serial path for every
atom (domain and periodic boundaries included), orthogonal and triclinic boxes; resume after a
signal; one message for bad input."""

import json
import os

import h5py
import numpy as np
import pytest

import hpcquests as hq
from hpcquests import testing
from hpcquests.io import lammps
from hpcquests.io.store import write_store

from .util import RANK_COUNTS, mpi_env, run_mpi

pytestmark = pytest.mark.mpi


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("uqmpi")
    train = [testing.perturbed_crystal("bcc", "Ta", size=(4, 4, 4), noise=0.05, seed=s) for s in range(2)]
    x = hq.get_descriptors(train)
    write_store(d / "ref.h5", x, [0, len(train[0]), len(x)], k=32, cutoff=5.0, species=["Ta"])
    testing.write_lammps_dump(d / "orth.lammpstrj", [testing.defective_crystal(size=(5, 5, 5), seed=1),
                                                     testing.perturbed_crystal("bcc", "Ta", size=(4, 5, 6), seed=2)],
                              ("id", "type", "xu", "yu", "zu"), seed=5)
    testing.write_lammps_dump(d / "many.lammpstrj",
                              [testing.perturbed_crystal("bcc", "Ta", size=(3, 3, 3 + f % 3), noise=0.05 + 0.01 * f, seed=f)
                               for f in range(7)], ("id", "type", "x", "y", "z"), seed=8)
    testing.write_lammps_dump(d / "tri.lammpstrj",
                              [testing.triclinic_crystal("Ta", size=(5, 4, 4), noise=0.06, shear=(0.25, 0.1, 0.2), seed=3)],
                              ("id", "type", "xs", "ys", "zs"), seed=6)
    exp = {}
    for name in ("orth", "tri", "many"):
        exp[name] = {}
        for f, atoms in enumerate(lammps.read_dump_frames(d / f"{name}.lammpstrj", type_map={1: "Ta"})):
            for i, v in zip(atoms.arrays["id"], hq.delta_entropy(hq.get_descriptors(atoms), x)):
                exp[name][(f, int(i))] = v
    return d, exp


def result(out_dir):
    with h5py.File(os.path.join(out_dir, "dH.h5")) as f:
        return {(int(a), int(b)): v for a, b, v in zip(f["frame"][...], f["atom_id"][...], f["dH"][...])}


def uq(n, *args, env=None, timeout=120):
    return run_mpi(n, ["-m", "hpcquests.uq", *map(str, args)], timeout=timeout, env=env)


@pytest.mark.parametrize("n", RANK_COUNTS)
@pytest.mark.parametrize("name", ["orth", "tri", "many"])
def test_same_dh_on_any_rank_count(data, n, name, tmp_path):
    d, exp = data
    out = uq(n, d / f"{name}.lammpstrj", d / "ref.h5", "--out", tmp_path / "o", "--types", "1=Ta",
             "--chunk-atoms", 90, "-q")
    assert out.returncode == 0, out.stderr
    got = result(tmp_path / "o")
    assert got.keys() == exp[name].keys()
    err = max(abs(got[k] - exp[name][k]) / max(1.0, abs(exp[name][k])) for k in got)
    assert err <= 1e-12
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["ranks"] == n and summary["atoms"] == len(exp[name])
    n_frames = len({f for f, _ in exp[name]})
    assert summary["mode"] == ("frames over ranks" if 1 < n <= n_frames else "domain decomposition per frame")
    assert [fr["frame"] for fr in summary["frames"]] == list(range(n_frames))


@pytest.mark.parametrize("n", [2, 3])
def test_read_block_size_does_not_change_results(data, n, tmp_path):
    """Streaming the read + exchange in blocks of a few lines (ranks with different numbers of
    blocks) gives bitwise the store and annotated dump of one block per rank."""
    d, _ = data
    args = [d / "orth.lammpstrj", d / "ref.h5", "--types", "1=Ta", "--chunk-atoms", 80, "-q"]
    assert uq(n, *args, "--out", tmp_path / "one", "--read-block", "1G").returncode == 0
    out = uq(n, *args, "--out", tmp_path / "many", "--read-block", "700")
    assert out.returncode == 0, out.stderr
    with h5py.File(tmp_path / "one" / "dH.h5") as a, h5py.File(tmp_path / "many" / "dH.h5") as b:
        for name in ("dH", "atom_id", "row", "frame"):
            assert np.array_equal(a[name][...], b[name][...]), name
    assert ((tmp_path / "one" / "orth_dH.lammpstrj").read_bytes()
            == (tmp_path / "many" / "orth_dH.lammpstrj").read_bytes())


@pytest.mark.parametrize("n,dump", [(2, "orth"), (3, "orth"), (3, "many")])
def test_resume_after_signal(data, n, dump, tmp_path):
    d, _ = data
    args = [d / f"{dump}.lammpstrj", d / "ref.h5", "--types", "1=Ta", "--chunk-atoms", 60, "-q"]
    assert uq(n, *args, "--out", tmp_path / "full").returncode == 0
    env = mpi_env()
    env["HPCQUESTS_TEST_SIGNAL_AFTER"] = "2"
    cut = uq(n, *args, "--out", tmp_path / "cut", env=env)
    assert cut.returncode == 75, cut.stderr
    assert not (tmp_path / "cut" / "summary.json").exists()
    logs = sorted((tmp_path / "cut" / "checkpoint").glob("computed-r*.log"))
    before = {p.name: p.read_text().split("\n")[:-1] for p in logs}
    assert before["computed-r00000.log"][:2] and len(before["computed-r00000.log"]) == 2
    assert uq(n, *args, "--out", tmp_path / "cut").returncode == 0
    for p in logs:  # the rerun appended only chunks that had not been computed
        lines = p.read_text().split("\n")[:-1]
        assert lines[:len(before[p.name])] == before[p.name] and len(set(lines)) == len(lines)
    assert result(tmp_path / "cut") == result(tmp_path / "full")
    a = json.loads((tmp_path / "cut" / "summary.json").read_text())
    b = json.loads((tmp_path / "full" / "summary.json").read_text())
    assert a["frames"] == b["frames"]


def test_bad_input_one_message(data, tmp_path):
    d, _ = data
    out = uq(3, d / "orth.lammpstrj", d / "ref.h5", "--out", tmp_path / "o")  # no --types
    assert out.returncode == 2
    errors = [ln for ln in out.stderr.splitlines() if "error:" in ln]
    assert len(errors) == 1 and "type 1 has no element" in errors[0], out.stderr
