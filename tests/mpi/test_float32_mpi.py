"""--precision float32 under mpiexec -n 1..4: every value within its bound of the float64 brute
force, rows over the tolerance recomputed (counted over ranks, the ring's second pass collective),
and the decisions (overlap, UQ thresholds) equal to float64's on every rank count."""

from __future__ import annotations

import json
import os

import ase.io
import h5py
import numpy as np
import pytest

import hpcquests as hq
from hpcquests import testing
from hpcquests.io import lammps
from hpcquests.kernels.precision import float32_error_bound

from .util import RANK_COUNTS, run_mpi

pytestmark = pytest.mark.mpi


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("f32mpi")
    ref = [testing.perturbed_crystal("bcc", "Ta", size=(4, 4, 4), noise=n, seed=20 + i) for i, n in enumerate((0.04, 0.08))]
    test = [testing.perturbed_crystal("bcc", "Ta", size=(3, 3, 3), noise=n, seed=30 + i)
            for i, n in enumerate((0.02, 0.06, 0.3))]
    ase.io.write(d / "ref.extxyz", ref, parallel=False)
    ase.io.write(d / "test.extxyz", test, parallel=False)
    # the files' (rounded) positions, as the commands read them
    ref = ase.io.read(d / "ref.extxyz", ":", parallel=False)
    test = ase.io.read(d / "test.extxyz", ":", parallel=False)
    x, y = hq.get_descriptors(ref), hq.get_descriptors(test)
    c = x.mean(axis=0)
    bound = float32_error_bound([0.015], x.shape[1], np.linalg.norm(y - c, axis=1), np.linalg.norm(x - c, axis=1).max(),
                                len(x))
    testing.write_lammps_dump(d / "traj.lammpstrj", test, ("id", "type", "x", "y", "z"), seed=4)
    return d, x, y, bound


def hq_mpi(n, *args, module="hpcquests"):
    return run_mpi(n, ["-m", module, *map(str, args)], timeout=120)


def last_json(out):
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    assert len(lines) == 1, out.stdout + out.stderr
    return json.loads(lines[0])


@pytest.mark.parametrize("n", RANK_COUNTS)
@pytest.mark.parametrize("mem", ["2G", "0"])
def test_dh_float32_within_bound_on_any_rank_count(data, n, mem, tmp_path):
    d, x, y, bound = data
    exact = hq.delta_entropy(y, x)
    out = hq_mpi(n, "dh", d / "test.extxyz", d / "ref.extxyz", "--precision", "float32", "--ref-memory", mem,
                 "-o", tmp_path / "dh.npy", "--json", "-q")
    assert out.returncode == 0, out.stderr
    res = last_json(out)
    assert res["precision"]["float32_recomputed_rows"] == 0
    got = np.load(tmp_path / "dh.npy")
    assert (np.abs(got - exact) <= bound).all()
    # a tolerance that splits the rows: the over-tolerance ones are float64's, counted over ranks
    tol = float(np.quantile(bound, 0.7))
    out = hq_mpi(n, "dh", d / "test.extxyz", d / "ref.extxyz", "--precision", "float32", "--ref-memory", mem,
                 "--float32-tolerance", repr(tol), "-o", tmp_path / "dh2.npy", "--json", "-q")
    assert out.returncode == 0, out.stderr
    over = bound > tol
    assert last_json(out)["precision"]["float32_recomputed_rows"] == int(over.sum()) > 0
    got = np.load(tmp_path / "dh2.npy")
    assert (np.abs(got[over] - exact[over]) <= 1e-12 * np.maximum(1, np.abs(exact[over]))).all()


@pytest.mark.parametrize("n", RANK_COUNTS)
def test_overlap_float32_equals_float64_on_any_rank_count(data, n):
    d, x, y, _ = data
    # 1e-9 above a row's value: float32 alone could flip it, float64's rounding cannot
    eps = float(np.sort(hq.delta_entropy(y, x))[80]) + 1e-9
    out = hq_mpi(n, "overlap", d / "test.extxyz", d / "ref.extxyz", "--eps", repr(eps), "--precision", "float32",
                 "--ref-memory", "0", "--json", "-q")
    assert out.returncode == 0, out.stderr
    res = last_json(out)
    assert res["overlap"] == hq.overlap(y, x, eps=eps)
    assert res["precision"]["float32_recomputed_rows"] >= 1


@pytest.mark.parametrize("n", RANK_COUNTS)
def test_uq_float32_on_any_rank_count(data, n, tmp_path):
    d, x, _, _ = data
    frames = lammps.read_dump_frames(d / "traj.lammpstrj", type_map={1: "Ta"})
    exact, bounds = {}, {}
    c = x.mean(axis=0)
    r_x = np.linalg.norm(x - c, axis=1).max()
    for f, atoms in enumerate(frames):
        y = hq.get_descriptors(atoms)
        b = float32_error_bound([0.015], y.shape[1], np.linalg.norm(y - c, axis=1), r_x, len(x))
        for i, v, bb in zip(atoms.arrays["id"], hq.delta_entropy(y, x), b):
            exact[(f, int(i))], bounds[(f, int(i))] = v, bb
    thresholds = [float(v) + 1e-9 for v in sorted(exact.values())[::40][:4]]  # next to atoms' values
    out = hq_mpi(n, d / "traj.lammpstrj", d / "ref.extxyz", "--out", tmp_path / "o", "--types", "1=Ta", "--precision",
                 "float32", "--chunk-atoms", 50, "--threshold", *map(repr, thresholds), "-q", module="hpcquests.uq")
    assert out.returncode == 0, out.stderr
    with h5py.File(os.path.join(tmp_path / "o", "dH.h5")) as f:
        keys = list(zip(f["frame"][...].tolist(), f["atom_id"][...].tolist()))
        dh, flags = f["dH"][...], f["float64_recomputed"][...]
    assert sorted(keys) == sorted(exact)
    for k, v in zip(keys, dh):
        assert abs(v - exact[k]) <= bounds[k]
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["precision"]["float32_recomputed_rows"] == int(flags.sum()) >= len(thresholds)
    for fr in summary["frames"]:
        vals = np.array([v for (f, _), v in exact.items() if f == fr["frame"]])
        for t in thresholds:
            assert fr["fraction_above"][f"{t:g}"] == pytest.approx((vals > t).mean(), abs=0)


@pytest.mark.parametrize("rank", [0, 1])
def test_error_on_one_rank_between_the_ring_passes(data, rank):
    """A failure on one rank after the float32 ring pass and before the float64 one (collective):
    every rank stops with one message, exit 2, no hang."""
    d = data[0]
    out = run_mpi(2, ["-m", "hpcquests", "dh", str(d / "test.extxyz"), str(d / "ref.extxyz"), "--precision", "float32",
                      "--float32-tolerance", "1e-9", "--ref-memory", "0", "-q"],
                  timeout=90, env={"HPCQUESTS_FAULT": f"float32.recompute@{rank}=value"})
    assert out.returncode == 2, out.stderr
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert lines == [f"hpcquests dh: error: rank {rank}: injected fault at float32.recompute (rank {rank})"], lines
