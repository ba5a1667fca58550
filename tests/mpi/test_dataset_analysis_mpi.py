"""hpcquests overlap-matrix and novelty under mpiexec -n 1..4 (the reference gathered and on the
ring): the same tables as the serial run."""

import json

import ase.io
import numpy as np
import pytest

from hpcquests import testing

from .util import RANK_COUNTS, mpi_env, run_mpi

pytestmark = pytest.mark.mpi


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from hpcquests.cli import main

    d = tmp_path_factory.mktemp("dsmpi")
    paths = []
    for i, noise in enumerate((0.04, 0.07, 0.1)):
        paths.append(str(d / f"g{i}.extxyz"))
        ase.io.write(paths[-1], [testing.perturbed_crystal("bcc", "Ta", size=(3, 3, 3), noise=noise, seed=10 * i + s)
                                 for s in range(3)], parallel=False)
    for cmd in ("overlap-matrix", "novelty"):
        assert main([cmd, *paths, "-o", str(d / "serial"), "-q"]) == 0
    return d, paths


@pytest.mark.parametrize("n", RANK_COUNTS)
@pytest.mark.parametrize("ring", [False, True])
def test_tables_equal_the_serial_ones(data, n, ring, tmp_path):
    d, paths = data
    for cmd, stem, key in (("overlap-matrix", "overlap_matrix", "overlap"), ("novelty", "novelty", "rows")):
        args = ["-m", "hpcquests", cmd, *paths, "-o", str(tmp_path), "-q"] + (["--ref-memory", "0"] if ring else [])
        res = run_mpi(n, args, timeout=180, env=mpi_env(n))
        assert res.returncode == 0, res.stdout + res.stderr
        got = json.loads((tmp_path / f"{stem}.json").read_text())
        want = json.loads((d / "serial" / f"{stem}.json").read_text())
        assert got[key] == want[key] and got["ranks"] == n
    assert np.diag(np.array(got_matrix(tmp_path))).tolist() == [1.0, 1.0, 1.0]


def got_matrix(out):
    return json.loads((out / "overlap_matrix.json").read_text())["overlap"]
