"""The float32 path (docs/precision.md): its exponential, its error bound on adversarial inputs,
the float64 recomputation of rows over the tolerance, and the decisions it must leave to float64.

Every float32 value is checked against an independent float64 brute force (explicit differences,
``scipy.special.logsumexp``), row by row, against that row's own bound."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import logsumexp

import hpcquests as hq
from hpcquests import testing
from hpcquests.kernels.cpu_backend import CpuBackend
from hpcquests.kernels.cpu_float32 import exp32_values
from hpcquests.metrics import entropy_and_diversity
from hpcquests.kernels.precision import (EXP32_REL_ERROR, U32, check_precision, float32_error_bound,
                                         logsum_to_tolerance)


def brute_logsum(y, x, hs):
    """(M, n_h) log Σ_j exp(−|y_i − x_j|²/(2h²)) from explicit differences, in float64."""
    d2 = ((y[:, None, :] - x[None, :, :]) ** 2).sum(axis=2)
    return np.stack([logsumexp(-d2 / (2 * h * h), axis=1) for h in hs], axis=1)


def float32_rows(y, x, hs):
    """(L of the float32 kernel, each row's bound), centred on x's mean as the metrics do."""
    hs = np.atleast_1d(np.asarray(hs, dtype=np.float64))
    c = x.mean(axis=0)
    yc, xc = y - c, x - c
    be = CpuBackend("float32")
    L = be.logsum(yc, be.prepare_reference(xc, hs))
    bound = float32_error_bound(hs, x.shape[1], np.linalg.norm(yc, axis=1), np.linalg.norm(xc, axis=1).max(), len(x))
    return L, bound


def assert_within_bound(y, x, hs):
    L, bound = float32_rows(y, x, hs)
    err = np.abs(L - brute_logsum(y, x, np.atleast_1d(hs))).max(axis=1)
    finite = np.isfinite(bound)
    assert (err[finite] <= bound[finite]).all(), (err.max(), bound[finite].min())
    return err, bound


@pytest.fixture(scope="module")
def ta():
    x = hq.get_descriptors([testing.perturbed_crystal("bcc", "Ta", size=(4, 4, 4), noise=n, seed=30 + i)
                            for i, n in enumerate((0.03, 0.06, 0.09))])
    y = hq.get_descriptors([testing.perturbed_crystal("bcc", "Ta", size=(3, 3, 3), noise=n, seed=40 + i)
                            for i, n in enumerate((0.02, 0.08, 0.3))])
    return x, y


def test_exp32_relative_error_over_its_range():
    rng = np.random.default_rng(0)
    a = np.concatenate([np.linspace(-64.0, 0.0, 2_000_001), -64.0 * rng.random(1_000_000),
                        -np.logspace(-30, np.log10(64), 100_000)]).astype(np.float32)
    got = exp32_values(a).astype(np.float64)
    rel = np.abs(got / np.exp(a.astype(np.float64)) - 1.0)
    assert rel.max() <= EXP32_REL_ERROR
    assert rel.max() < 2e-5  # measured 1.2e-5 (six squarings amplify the series 64x); derived 1.9e-4
    assert exp32_values(np.array([0.0], np.float32))[0] == pytest.approx(1.0, abs=1e-6)
    assert exp32_values(np.array([-100.0], np.float32))[0] == pytest.approx(np.exp(-64.0), rel=1e-5)  # clamped


def test_bound_formula():
    hs, d, ry, rx, n = np.array([0.015]), 63, 0.4, 0.1, 4224
    u = 2.0 ** -24
    gamma = (d + 1) * u / (1 - (d + 1) * u)
    a = 1 / (2 * 0.015 ** 2)
    expect = a * (gamma * (2 * ry * rx + rx * rx) + 7 * u * (ry + rx) ** 2) * (1 + 4 * u) \
        + 3 * u * (32 + np.log(n)) + EXP32_REL_ERROR + 1e-12
    assert float32_error_bound(hs, d, ry, rx, n) == pytest.approx(expect, rel=1e-12)
    assert U32 == u
    # per row, monotone in the row's norm; inf beyond float32's range
    b = float32_error_bound(hs, d, np.array([0.0, 0.1, 1.0, 1e19]), rx, n)
    assert b[0] < b[1] < b[2] and b[3] == np.inf
    # several bandwidths: the smallest sets a, the ratio T_eff
    assert float32_error_bound(np.array([0.01, 0.05]), d, ry, rx, n) > float32_error_bound(np.array([0.01]), d, ry, rx, n)


def test_thermal_environments_within_bound(ta):
    x, y = ta
    err, bound = assert_within_bound(y, x, [0.015])
    assert err.max() < 1e-4 and bound.max() < 2e-3


@pytest.mark.parametrize("shift", [0.5, 5.0, 50.0])
def test_far_environments_within_bound(ta, shift):
    """Queries far from every reference point (δH of hundreds to millions of nats)."""
    x, y = ta
    far = y[:40] + shift * np.random.default_rng(1).standard_normal(y.shape[1]) / np.sqrt(y.shape[1])
    err, bound = assert_within_bound(far, x, [0.015])
    # relative to δH the float32 error stays small
    L = brute_logsum(far, x, [0.015])[:, 0]
    assert (err <= 1e-6 * np.abs(L) + bound).all()


@pytest.mark.parametrize("h", [1e-3, 1e-4])
def test_tiny_bandwidth_within_bound_and_recomputed(ta, h):
    x, y = ta
    err, bound = assert_within_bound(y[:60], x, [h])
    assert bound.min() > 1e-3  # nothing certified in float32 at this h...
    stats = {}
    got = hq.delta_entropy(y[:60], x, h, precision="float32", stats=stats)
    assert stats["float32_recomputed_rows"] == 60  # ...so every row is float64's
    np.testing.assert_array_equal(got, hq.delta_entropy(y[:60], x, h))


def test_large_coordinates_within_bound(ta):
    """|x| large against h: descriptors scaled by 100 (the bound grows as (R/h)²)."""
    x, y = ta
    assert_within_bound(100 * y[:40], 100 * x, [1.5, 3.0])


def test_several_bandwidths_within_bound(ta):
    x, y = ta
    assert_within_bound(y, x, [0.01, 0.015, 0.05])


def test_beyond_float32_range_recomputed(ta):
    x, y = ta
    big_x = np.vstack([x, x[:1] + 1e20])  # one reference row float32 cannot hold
    stats = {}
    with np.errstate(all="raise"):
        got = hq.delta_entropy(y[:10], big_x, precision="float32", stats=stats)
    assert stats["float32_recomputed_rows"] == 10
    np.testing.assert_array_equal(got, hq.delta_entropy(y[:10], big_x))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31), d=st.integers(1, 70), scale=st.floats(1e-3, 1e3), log_h=st.floats(-2, 1),
       far=st.floats(0, 20))
def test_generated_data_within_bound(seed, d, scale, log_h, far):
    rng = np.random.default_rng(seed)
    x = scale * rng.standard_normal((rng.integers(1, 300), d)) + scale * 10.0 * rng.standard_normal(d)
    y = x[rng.integers(0, len(x), 30)] + scale * (0.1 + far) * rng.standard_normal((30, d))
    assert_within_bound(y, x, [scale * 10.0 ** log_h])


def test_recomputed_rows_are_those_over_the_tolerance(ta):
    x, y = ta
    _, bound = float32_rows(y, x, [0.015])
    tol = float(np.median(bound))
    stats = {}
    got = hq.delta_entropy(y, x, precision="float32", float32_tolerance=tol, stats=stats)
    over = bound > tol
    assert stats["float32_recomputed_rows"] == int(over.sum()) > 0
    assert stats["float32_max_bound"] == pytest.approx(bound[~over].max())
    ref64 = hq.delta_entropy(y, x)
    np.testing.assert_array_equal(got[over], ref64[over])  # recomputed: float64's bits
    assert (np.abs(got - ref64)[~over] <= bound[~over]).all()


def test_entropy_and_diversity_within_mean_bound(ta):
    x, _ = ta
    stats = {}
    H32, D32 = entropy_and_diversity(x, [0.015, 0.03], precision="float32", stats=stats)
    H64, D64 = entropy_and_diversity(x, [0.015, 0.03])
    assert np.abs(H32 - H64).max() <= stats["float32_max_bound"]
    assert np.abs(D32 - D64).max() <= stats["float32_max_bound"]


def test_overlap_decides_near_threshold_rows_in_float64(ta):
    x, y = ta
    dh = hq.delta_entropy(y, x)
    # thresholds sitting on rows' δH (float32's error would flip them without the certification)
    for i in (3, 50, 100):
        for eps in (dh[i], np.nextafter(dh[i], np.inf), dh[i] + 2e-5):
            stats = {}
            got = hq.overlap(y, x, eps=eps, precision="float32", stats=stats)
            assert got == hq.overlap(y, x, eps=eps)
            assert stats["float32_recomputed_rows"] >= 1


def test_logsum_to_tolerance_agrees_counts_and_calls_collectively():
    """The recomputation is one more call when *any* rank has a row over (the ring is collective)."""
    calls = []

    def logsum(rows, precision):
        calls.append((len(rows), precision))
        return np.zeros((len(rows), 1))

    yc = np.zeros((5, 3))
    L = logsum_to_tolerance(logsum, yc, np.array([0.015]), r_x=0.1, n_ref=10, precision="float32", tolerance=1.0,
                            agree_count=lambda n: n + 2)  # another rank has 2 rows to redo
    assert calls == [(5, "float32"), (0, "float64")] and L.shape == (5, 1)
    # rows over the tolerance never run in float32: their bound needs no float32 result
    calls.clear()
    yc = np.zeros((5, 3))
    yc[[1, 3], 0] = 100.0
    stats = {}
    logsum_to_tolerance(logsum, yc, np.array([0.015]), r_x=0.1, n_ref=10, precision="float32", tolerance=1.0,
                        stats=stats)
    assert calls == [(3, "float32"), (2, "float64")]
    assert stats["float32_recomputed_index"].tolist() == [1, 3] and stats["float32_recomputed_rows"] == 2


def test_precision_names():
    assert check_precision("float32") == "float32" and check_precision(np.float64) == "float64"
    with pytest.raises(ValueError, match="precision must be one of float64, float32"):
        check_precision("float16")
    with pytest.raises(ValueError, match="float32_tolerance"):
        hq.delta_entropy(np.zeros((2, 3)), np.ones((2, 3)), precision="float32", float32_tolerance=0)
    with pytest.raises(ValueError, match="precision"):
        hq.entropy(np.zeros((2, 3)), precision="half")


@pytest.fixture(scope="module")
def files(tmp_path_factory, ta):
    from ase.io import write

    d = tmp_path_factory.mktemp("f32")
    write(d / "ref.extxyz", [testing.perturbed_crystal("bcc", "Ta", size=(4, 4, 4), noise=0.05, seed=1)])
    write(d / "test.extxyz", [testing.perturbed_crystal("bcc", "Ta", size=(3, 3, 3), noise=n, seed=2 + i)
                              for i, n in enumerate((0.02, 0.1, 0.4))])
    return d


def run_cli(*args):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "hpcquests", *map(str, args)], capture_output=True, text=True,
                          timeout=120)


def test_cli_dh_and_overlap_float32(files, tmp_path):
    out = run_cli("dh", files / "test.extxyz", files / "ref.extxyz", "--precision", "float32", "--json", "-q",
                  "-o", tmp_path / "dh.npy")
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    p = res["precision"]
    assert p["precision"] == "float32" and p["float32_tolerance"] == 1e-3 and p["float32_recomputed_rows"] == 0
    out64 = run_cli("dh", files / "test.extxyz", files / "ref.extxyz", "-q", "-o", tmp_path / "dh64.npy", "--json")
    assert json.loads(out64.stdout)["precision"] == {"precision": "float64"}
    err = np.abs(np.load(tmp_path / "dh.npy") - np.load(tmp_path / "dh64.npy"))
    assert 0 < err.max() <= p["float32_max_bound"]
    dh64 = np.load(tmp_path / "dh64.npy")
    eps = float(np.sort(dh64)[100])  # a threshold on a row's value
    ov = [json.loads(run_cli("overlap", files / "test.extxyz", files / "ref.extxyz", "--eps", repr(eps), "--json",
                             "-q", *extra).stdout) for extra in ((), ("--precision", "float32"))]
    assert ov[0]["overlap"] == ov[1]["overlap"]
    assert ov[1]["precision"]["float32_recomputed_rows"] >= 1


@pytest.mark.parametrize("args, message", [
    (("--precision", "float16"), "argument --precision: invalid choice: 'float16'"),
    (("--precision", "float32", "--float32-tolerance", "0"), "argument --float32-tolerance"),
    (("--float32-tolerance", "nan"), "argument --float32-tolerance"),
])
def test_cli_bad_precision_options(files, args, message):
    out = run_cli("entropy", files / "ref.extxyz", *args)
    assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr


@pytest.fixture(scope="module")
def dataset():
    descs = [hq.get_descriptors(a) for a in testing.mixed_dataset(n_structures=40, seed=3)]
    return descs + [descs[5].copy(), descs[7].copy(), descs[5].copy()]  # copies: exact ties


@pytest.mark.parametrize("h", [0.004, 0.015, 0.05])
@pytest.mark.parametrize("make", ["cpu32", "gpu32", "gpu64"])
def test_msc_float32_backend_picks_are_float64s(dataset, h, make):
    """The certified argmax: picks and scores bitwise the CPU lazy greedy's (float64), ties to the
    lowest index; a float64 eager backend too (its last bits differ; it is certified the same way)."""
    from hpcquests.compress.msc import msc
    from hpcquests.kernels.gpu import GpuBackend

    be = {"cpu32": lambda: CpuBackend("float32"),
          "gpu32": lambda: GpuBackend(xp=np, precision="float32", query_block=50, ref_block=70),
          "gpu64": lambda: GpuBackend(xp=np, query_block=50, ref_block=70)}[make]()
    ref = msc(dataset, 25, h, details=True)
    got = msc(dataset, 25, h, details=True, backend=be)
    assert got.order == ref.order
    assert [v.hex() for v in got.scores] == [v.hex() for v in ref.scores]
    assert got.extra["precision"] == be.precision and got.extra["exact_rescored_structures"] >= 24
    # conditional, with a reference set
    cond = np.concatenate(dataset[:3])
    assert msc(dataset, 10, h, reference=cond, backend=be) == msc(dataset, 10, h, reference=cond)


def test_msc_precision_switch(dataset):
    from hpcquests.compress.msc import msc

    ref = msc(dataset, 15, details=True)
    lazy32 = msc(dataset, 15, details=True, precision="float32")  # the lazy greedy: exact values are float64
    assert lazy32.order == ref.order and lazy32.extra["precision"] == "float32"
    eager32 = msc(dataset, 15, details=True, backend=CpuBackend(), precision="float32")
    assert eager32.order == ref.order and eager32.extra["precision"] == "float32"
    with pytest.raises(ValueError, match="precision"):
        msc(dataset, 3, precision="bfloat16")


def test_cli_compress_float32(tmp_path):
    """compress --precision float32: the same selections (MSC's picks are float64's), H and D within
    the bound, overlap equal (decided in float64 near eps), the recomputed rows in the report."""
    from ase.io import write

    write(tmp_path / "d.extxyz", testing.mixed_dataset(n_structures=24, seed=4))
    reports = []
    for p in ("float64", "float32"):
        out = run_cli("compress", tmp_path / "d.extxyz", "-o", tmp_path / p, "-m", "msc", "random", "-s", "4", "8",
                      "--precision", p, "-q")
        assert out.returncode == 0, out.stderr
        reports.append(json.loads((tmp_path / p / "report.json").read_text()))
        assert reports[-1]["precision"]["precision"] == p
    r64, r32 = reports
    bound = r32["precision"]["float32_max_bound"]
    assert r32["precision"]["float32_recomputed_rows"] >= 0 and 0 < bound <= 1e-3
    assert abs(r32["full"]["entropy"] - r64["full"]["entropy"]) <= bound
    for a, b in zip(r64["selections"], r32["selections"]):
        assert (a["method"], a["size"]) == (b["method"], b["size"])
        assert abs(a["entropy"] - b["entropy"]) <= bound and abs(a["diversity"] - b["diversity"]) <= bound
        assert a["overlap"] == b["overlap"]
    for m in ("msc", "random"):
        for size in (4, 8):
            rel = os.path.join("selections", m, f"size_{size}", "indices.txt")
            assert (tmp_path / "float64" / rel).read_text() == (tmp_path / "float32" / rel).read_text()
