"""GpuBackend on the numpy stand-in (and the raw kernel run as C++) against the CPU backend.

Everything here runs without a GPU: the stand-in executes the backend's blocking, tile offsets,
self-pair indices, running-minimum rescales and log-sum finish on numpy; the emulated variant
runs the CUDA tile kernel's source itself (compiled as C++20, one thread per CUDA thread).
"""


import numpy as np
import pytest
from scipy.special import logsumexp

from hpcquests.kernels.gpu import GpuBackend, kernel_source
from hpcquests.kernels.precision import float32_error_bound
from hpcquests.kernels.registry import CpuBackend

from .common import assert_close, clustered, cpu_logsum, emulated_backend, fold_all

HS = np.array([0.01, 0.015, 0.05])


def brute(y, x, hs, exclude_offset=-1):
    d2 = ((y[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    if exclude_offset >= 0:
        i = np.arange(len(y))
        j = i - exclude_offset
        ok = (j >= 0) & (j < len(x))
        d2[i[ok], j[ok]] = np.inf
    return np.stack([logsumexp(-d2 / (2 * h * h), axis=1) for h in hs], axis=1)


@pytest.fixture(params=["standin", "emulated"])
def make(request):
    """Factory of the backend under test: numpy array path, or the raw kernel run as C++."""
    if request.param == "standin":
        return lambda **kw: GpuBackend(xp=np, **kw)
    emu = request.getfixturevalue("kernel_emulator")
    return lambda **kw: emulated_backend(emu, **kw)


@pytest.mark.parametrize("blocks", [(None, None), (7, 13), (1, 1), (64, 5000)])
def test_logsum_matches_cpu(make, blocks):
    x = clustered(900, 12, 0)
    y = clustered(150, 12, 1)
    be = make(query_block=blocks[0], ref_block=blocks[1])
    if blocks == (1, 1):  # one launch per pair: keep it small
        x, y = x[:120], y[:12]
    elif be.fused:  # the emulated kernel runs each CUDA block on 8 OS threads: fewer rows
        y = y[:60]
    got = be.logsum(y, be.prepare_reference(x, HS))
    assert got.dtype == np.float64 and got.shape == (len(y), HS.size)
    assert_close(got, cpu_logsum(y, x, HS))
    assert_close(got, brute(y, x, HS), rtol=1e-11)


def test_shuffled_multi_block_folds(make):
    x = clustered(1500, 10, 2)
    y = clustered(200, 10, 3)
    if make().fused:
        y = y[:60]
    rng = np.random.default_rng(4)
    cuts = np.sort(rng.choice(np.arange(1, len(x)), 6, replace=False))
    pieces = np.split(x, cuts)
    ref = cpu_logsum(y, x, HS)
    for trial in range(3):
        order = rng.permutation(len(pieces))
        got = fold_all(make(query_block=33, ref_block=97), y, [pieces[k] for k in order], HS, n_ref=len(x))
        assert_close(got, ref)


@pytest.mark.parametrize("h", [0.003, 0.015, 0.1, 1.0])
def test_single_bandwidths(make, h):
    x = clustered(600, 8, 5)
    y = clustered(80, 8, 6)
    hs = np.array([h])
    be = make(query_block=16, ref_block=128)
    assert_close(be.logsum(y, be.prepare_reference(x, hs)), cpu_logsum(y, x, hs))


def test_exclude_offset_self_pairs(make):
    be = make(query_block=50, ref_block=64)
    x = clustered(320 if be.fused else 700, 6, 7)
    # whole set against itself
    assert_close(fold_all(be, x, [x], HS, offsets=[0]), fold_all(CpuBackend(), x, [x], HS, offsets=[0]))
    assert_close(fold_all(be, x, [x], HS, offsets=[0]), brute(x, x, HS, exclude_offset=0), rtol=1e-11)
    # the first rows as queries against shards of x at global offsets 0, 150, 420:
    # query i skips shard row i − offset (exclude_offset = the shard's offset)
    y = x[:200]
    shards = [(x[250:], 250), (x[:150], 0), (x[150:250], 150)]
    pieces, offs = [p for p, _ in shards], [o for _, o in shards]
    got = fold_all(be, y, pieces, HS, n_ref=len(x), offsets=offs)
    assert_close(got, fold_all(CpuBackend(), y, pieces, HS, n_ref=len(x), offsets=offs))
    assert_close(got, brute(y, x, HS, exclude_offset=0), rtol=1e-11)


@pytest.mark.filterwarnings("ignore:divide by zero")  # the CPU backend's log(0) for L = −inf
def test_exclude_offset_beyond_block_and_single_row(make):
    x = clustered(40, 5, 8)
    be = make(query_block=3, ref_block=4)
    for off in (0, 3, 39, 40, 1000):
        assert_close(fold_all(be, x, [x], HS, offsets=[off]), fold_all(CpuBackend(), x, [x], HS, offsets=[off]))
    # a one-point reference that is the query's own pair: nothing is folded, L = −inf
    one = x[:1]
    got = fold_all(be, one, [one], HS, offsets=[0])
    assert np.isneginf(got).all()
    assert_close(got, fold_all(CpuBackend(), one, [one], HS, offsets=[0]))
    # ... and a later fold of another point makes it finite
    got = fold_all(be, one, [one, x[1:2]], HS, n_ref=2, offsets=[0, -1])
    assert_close(got, brute(one, x[1:2], HS))


def test_far_environments_stay_finite(make):
    x = clustered(400, 8, 9)
    y = np.stack([x[0] + d for d in (0.5, 1.0, 2.0, 10.0, 100.0, 1e4)])
    be = make(query_block=2, ref_block=50)
    got = be.logsum(y, be.prepare_reference(x, HS))
    assert np.isfinite(got).all()
    assert (np.diff(-got, axis=0) > 0).all()
    assert_close(got, cpu_logsum(y, x, HS))
    assert_close(got[:5], brute(y[:5], x, HS), rtol=1e-11)


def test_far_block_then_near_block_rescales(make):
    """A far block first sets m; a nearer one later lowers it (rescale by exp(−Δm·a) underflows)."""
    x = clustered(300, 6, 10)
    y = x[:30] + 1e-3
    far = x + 3.0
    be = make(query_block=7, ref_block=20)
    got = fold_all(be, y, [far, x[150:], x[:150]], HS)
    assert_close(got, fold_all(CpuBackend(), y, [far, x[150:], x[:150]], HS))
    assert_close(got, brute(y, np.concatenate([far, x]), HS), rtol=1e-11)


def test_empty_blocks(make):
    x = clustered(100, 4, 11)
    y = clustered(10, 4, 12)
    be = make()
    inv2h2, prune = be.reference_params(HS, len(x))
    # empty queries
    st = be.start(np.zeros((0, 4)), HS.size)
    be.fold(st, x, inv2h2, prune)
    out = be.finish(st, inv2h2)
    assert out.shape == (0, 3) and out.dtype == np.float64
    # empty reference blocks between real ones, and nothing folded at all
    st = be.start(y, HS.size)
    assert np.isneginf(be.finish(st, inv2h2)).all()
    for p in (np.zeros((0, 4)), x[:60], np.zeros((0, 4)), x[60:]):
        be.fold(st, p, inv2h2, prune)
    assert_close(be.finish(st, inv2h2), cpu_logsum(y, x, HS))


def test_finish_keeps_the_state():
    x = clustered(200, 4, 13)
    y = clustered(20, 4, 14)
    be = GpuBackend(xp=np, query_block=8, ref_block=32)
    inv2h2, prune = be.reference_params(HS, len(x))
    st = be.start(y, HS.size)
    be.fold(st, x[:100], inv2h2, prune)
    first = be.finish(st, inv2h2)
    assert_close(be.finish(st, inv2h2), first, rtol=0)
    be.fold(st, x[100:], inv2h2, prune)
    assert_close(be.finish(st, inv2h2), cpu_logsum(y, x, HS))


def test_xn_passed_in_is_used_consistently():
    x = clustered(300, 7, 15)
    y = clustered(30, 7, 16)
    cpu = CpuBackend()
    be = GpuBackend(xp=np)
    inv2h2, prune = cpu.reference_params(HS, len(x))
    st = be.start(y, HS.size)
    be.fold(st, x, inv2h2, prune, xn=(x * x).sum(1))
    assert_close(be.finish(st, inv2h2), cpu_logsum(y, x, HS))


def _ta_descriptors():
    import hpcquests as hq
    from hpcquests import testing

    x = hq.get_descriptors([testing.perturbed_crystal("bcc", "Ta", size=(4, 4, 4), noise=n, seed=90 + i)
                            for i, n in enumerate((0.03, 0.06, 0.09))])
    y = hq.get_descriptors([testing.perturbed_crystal("bcc", "Ta", size=(4, 4, 4), noise=n, seed=10 + i)
                            for i, n in enumerate((0.02, 0.08, 0.3))])
    return x, y


@pytest.mark.parametrize("hs", [np.array([0.015]), np.array([0.01, 0.015, 0.05])])
def test_float32_within_stated_bound(make, hs):
    x, y = _ta_descriptors()
    c = x.mean(axis=0)
    xc, yc = x - c, y - c
    be32 = make(precision="float32", query_block=40, ref_block=100)
    got = be32.logsum(yc, be32.prepare_reference(xc, hs))
    ref = cpu_logsum(yc, xc, hs)
    bound = float32_error_bound(hs, x.shape[1], np.linalg.norm(yc, axis=1), np.linalg.norm(xc, axis=1).max(),
                                len(x))
    rows = np.abs(got - ref).max(axis=1)
    err = rows.max()
    assert np.isfinite(got).all()
    assert (rows <= bound).all(), (err, bound.min())
    assert err < 5e-4  # measured ~1e-4: the bound is a worst case
    # far environments in float32 too
    far = yc[:3] + 0.5
    assert np.isfinite(be32.logsum(far, be32.prepare_reference(xc, hs))).all()


def test_constructor_validation():
    with pytest.raises(ValueError, match="precision"):
        GpuBackend(xp=np, precision="float16")
    with pytest.raises(ValueError, match="query_block"):
        GpuBackend(xp=np, query_block=0)
    be = GpuBackend(xp=np)
    assert be.name == "gpu" and not be.fused and be.query_block > 0 and be.ref_block > 0
    with pytest.raises(ValueError, match="n_h"):
        be.start(np.zeros((3, 2)), 0)
    st = be.start(np.zeros((3, 2)), 1)
    with pytest.raises(ValueError, match="features"):
        be.fold(st, np.zeros((4, 3)), np.array([1.0]), 10.0)


def test_kernel_source_is_complete():
    for dt, real, exp in (("float64", "double", "exp("), ("float32", "float", "expf(")):
        src = kernel_source(dt)
        assert "__HQ_" not in src and f"typedef {real} real_t;" in src and f"#define HQ_EXP {exp[:-1]}" in src
        assert src.count("{") == src.count("}")
    with pytest.raises(KeyError):
        kernel_source("float16")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_kernel_source_compiles_with_nvcc(tmp_path, dtype):
    """The raw kernel as CUDA (what NVRTC compiles under CuPy); skipped without nvcc."""
    import shutil
    import subprocess

    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc not found")
    src = tmp_path / f"tile_{dtype}.cu"
    src.write_text(kernel_source(dtype))
    proc = subprocess.run([nvcc, "-arch=sm_80", "-ptx", "-o", str(tmp_path / "tile.ptx"), str(src)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert ".entry hq_fold_tile" in (tmp_path / "tile.ptx").read_text()
