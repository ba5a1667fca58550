"""The CuPy backend on a real GPU: the raw CUDA kernel and the CuPy array path against the CPU.

Skipped unless CuPy imports and sees a CUDA device (``gpu`` marker, see conftest.py).
"""

import numpy as np
import pytest

import hpcquests as hq
from hpcquests import testing
from hpcquests.compress.msc import msc
from hpcquests.kernels.gpu import GpuBackend
from hpcquests.kernels.precision import float32_error_bound
from hpcquests.kernels.registry import CpuBackend, get_backend, gpu_devices, use_device

from .common import assert_close, clustered, cpu_logsum, fold_all

pytestmark = pytest.mark.gpu

HS = np.array([0.01, 0.015, 0.05])


@pytest.fixture(params=["fused", "arrays"])
def be_kw(request):
    return {"fused": request.param == "fused"}


def test_device_backend_and_listing():
    import cupy

    devs = gpu_devices()
    assert devs and all(d["memory_gib"] > 0 for d in devs)
    be = get_backend("gpu")
    assert isinstance(be, GpuBackend) and 0 <= be.device < len(devs)
    x = clustered(500, 8, 0)
    st = be.start(x[:50], 1)
    assert isinstance(st.m, cupy.ndarray) and isinstance(st.s, cupy.ndarray)
    before = cupy.cuda.runtime.getDevice()
    with use_device(len(devs) - 1):
        assert cupy.cuda.runtime.getDevice() == len(devs) - 1
    assert cupy.cuda.runtime.getDevice() == before


@pytest.mark.parametrize("blocks", [(None, None), (7, 13), (300, 1000)])
def test_logsum_matches_cpu(be_kw, blocks):
    x = clustered(3000, 12, 1)
    y = clustered(700, 12, 2)
    be = GpuBackend(query_block=blocks[0], ref_block=blocks[1], **be_kw)
    got = be.logsum(y, be.prepare_reference(x, HS))
    assert isinstance(got, np.ndarray) and got.dtype == np.float64
    assert_close(got, cpu_logsum(y, x, HS))


def test_default_tiles_span_several_blocks(be_kw):
    x = clustered(9000, 63, 3)
    y = clustered(5000, 63, 4)
    be = GpuBackend(**be_kw)
    assert_close(be.logsum(y, be.prepare_reference(x, HS)), cpu_logsum(y, x, HS))


def test_shuffled_folds_exclude_far_empty(be_kw):
    x = clustered(2000, 10, 5)
    be = GpuBackend(query_block=64, ref_block=256, **be_kw)
    pieces = [(x[1500:], 1500), (np.zeros((0, 10)), 0), (x[:700], 0), (x[700:1500], 700)]
    got = fold_all(be, x, [p for p, _ in pieces], HS, offsets=[o for _, o in pieces])
    assert_close(got, fold_all(CpuBackend(), x, [p for p, _ in pieces], HS, offsets=[o for _, o in pieces]))
    far = np.stack([x[0] + d for d in (0.5, 1.0, 10.0, 100.0, 1e4)])
    got = be.logsum(far, be.prepare_reference(x, HS))
    assert np.isfinite(got).all()
    assert_close(got, cpu_logsum(far, x, HS))
    one = x[:1]
    assert np.isneginf(fold_all(be, one, [one], HS, offsets=[0])).all()
    st = be.start(np.zeros((0, 10)), 3)
    assert be.finish(st, 1 / (2 * HS**2)).shape == (0, 3)


def test_float32_within_bound(be_kw):
    x = hq.get_descriptors([testing.perturbed_crystal("bcc", "Ta", size=(6, 6, 6), noise=n, seed=90 + i)
                            for i, n in enumerate((0.03, 0.06, 0.09))])
    y = hq.get_descriptors([testing.perturbed_crystal("bcc", "Ta", size=(6, 6, 6), noise=n, seed=10 + i)
                            for i, n in enumerate((0.02, 0.08, 0.3))])
    c = x.mean(axis=0)
    xc, yc = x - c, y - c
    hs = np.array([0.015])
    be = GpuBackend(precision="float32", **be_kw)
    got = be.logsum(yc, be.prepare_reference(xc, hs))
    ref = cpu_logsum(yc, xc, hs)
    bound = float32_error_bound(hs, x.shape[1], np.linalg.norm(yc, axis=1), np.linalg.norm(xc, axis=1).max(),
                                len(x))
    rows = np.abs(got - ref).max(axis=1)
    print(f"float32 max |dL| = {rows.max():.3g} (bound {bound.min():.3g} .. {bound.max():.3g})")
    assert (rows <= bound).all()


def test_fused_equals_arrays_path():
    x = clustered(4000, 20, 6)
    y = clustered(1000, 20, 7)
    a = GpuBackend(fused=True, query_block=128, ref_block=512)
    b = GpuBackend(fused=False, query_block=128, ref_block=512)
    assert_close(a.logsum(y, a.prepare_reference(x, HS)), b.logsum(y, b.prepare_reference(x, HS)), rtol=1e-12)


def test_metrics_and_msc_on_gpu():
    x = hq.get_descriptors([testing.perturbed_crystal("bcc", "Ta", size=(3, 3, 3), noise=n, seed=i)
                            for i, n in enumerate((0.03, 0.06, 0.1))])
    y = hq.get_descriptors([testing.amorphous(60, seed=3)])
    assert_close(hq.delta_entropy(y, x, 0.015, backend="gpu"), hq.delta_entropy(y, x, 0.015))
    assert_close(hq.entropy(x, 0.015, backend="gpu"), hq.entropy(x, 0.015))
    descs = [hq.get_descriptors([testing.perturbed_crystal("bcc", "Ta", size=(2, 2, 2), noise=0.02 + 0.01 * i,
                                                           seed=i)], k=12, cutoff=4.0) for i in range(12)]
    cpu = msc(descs, 6, details=True)
    gpu = msc(descs, 6, details=True, backend="gpu")
    assert gpu.order == cpu.order
    np.testing.assert_allclose(gpu.scores, cpu.scores, rtol=1e-10, atol=1e-10)
