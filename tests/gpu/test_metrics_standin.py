"""Metrics, the distributed reference set and MSC through GpuBackend(xp=numpy) vs the CPU backend."""

import numpy as np
import pytest

import hpcquests as hq
from hpcquests import metrics, testing
from hpcquests.compress.msc import msc
from hpcquests.kernels import registry
from hpcquests.kernels.gpu import GpuBackend
from hpcquests.parallel.comm import SerialComm
from hpcquests.distributed.drivers import ReferenceSet, distributed_entropy_diversity, distributed_logsum

from .common import assert_close

H = 0.015


@pytest.fixture
def gpu_standin(monkeypatch):
    """``get_backend('gpu')`` → a numpy-backed GpuBackend with small, uneven tiles."""
    original = registry.get_backend
    made = []

    def fake(name="cpu", local_rank=None, precision=None):
        if name == "gpu":
            be = GpuBackend(xp=np, query_block=37, ref_block=211, precision=precision or "float64")
            made.append(be)
            return be
        return original(name, local_rank, precision)

    monkeypatch.setattr(registry, "get_backend", fake)
    return made


@pytest.fixture(scope="module")
def data():
    x = hq.get_descriptors([testing.perturbed_crystal("bcc", "Ta", size=(3, 3, 3), noise=n, seed=i)
                            for i, n in enumerate((0.03, 0.06, 0.1))])
    y = hq.get_descriptors([testing.perturbed_crystal("bcc", "Ta", size=(3, 3, 3), noise=0.2, seed=50),
                            testing.amorphous(60, seed=3)])
    return x, y


@pytest.mark.parametrize("h", [H, np.array([0.01, 0.015, 0.05])])
def test_metrics_gpu_equals_cpu(gpu_standin, data, h):
    x, y = data
    for fn, args in ((metrics.delta_entropy, (y, x)), (metrics.entropy, (x,)), (metrics.diversity, (x,)),
                     (metrics.overlap, (y, x))):
        got = fn(*args, h, backend="gpu")
        ref = fn(*args, h, backend="cpu")
        assert_close(got, ref)
    assert gpu_standin, "the gpu backend was not used"
    H_g, D_g = metrics.entropy_and_diversity(x, h, backend="gpu")
    H_c, D_c = metrics.entropy_and_diversity(x, h, backend="cpu")
    assert_close(H_g, H_c)
    assert_close(D_g, D_c)


def test_float32_metrics_through_the_gpu_twin(gpu_standin, data):
    """--backend gpu --precision float32: the GPU twin's float32 within the shared bound, rows over
    the tolerance recomputed by its float64 twin, overlap decided as float64's."""
    x, y = data
    stats = {}
    got = metrics.delta_entropy(y, x, H, backend="gpu", precision="float32", stats=stats)
    ref = metrics.delta_entropy(y, x, H)
    assert gpu_standin[0].precision == "float32"
    assert np.abs(got - ref).max() <= max(stats["float32_max_bound"], 1e-12)
    stats = {}
    got = metrics.delta_entropy(y, x, H, backend="gpu", precision="float32", float32_tolerance=1e-9, stats=stats)
    assert stats["float32_recomputed_rows"] == len(y)
    assert_close(got, ref)
    eps = float(np.sort(ref)[40]) + 1e-9  # float32 alone could flip it; float64 on either twin cannot
    assert metrics.overlap(y, x, H, eps, backend="gpu", precision="float32") == metrics.overlap(y, x, H, eps)


def test_metrics_accept_a_backend_object(data):
    x, y = data
    be = GpuBackend(xp=np, query_block=100, ref_block=100)
    assert_close(hq.delta_entropy(y, x, H, backend=be), hq.delta_entropy(y, x, H))
    assert_close(hq.entropy(x, H, backend=be), hq.entropy(x, H))


def test_far_queries_through_metrics(gpu_standin, data):
    x, _ = data
    far = x[:5] + np.array([[0.5], [1.0], [5.0], [50.0], [500.0]])
    got = metrics.delta_entropy(far, x, H, backend="gpu")
    assert np.isfinite(got).all() and (np.diff(got) > 0).all()
    assert_close(got, metrics.delta_entropy(far, x, H, backend="cpu"))


def test_reference_set_and_drivers(gpu_standin, data):
    x, y = data
    comm = SerialComm()
    hs = np.array([0.01, 0.015])
    got = ReferenceSet(comm, x, hs, backend="gpu").delta_entropy(y)
    assert_close(got, ReferenceSet(comm, x, hs, backend="cpu").delta_entropy(y))
    assert_close(distributed_logsum(comm, y, x, H, backend="gpu"), distributed_logsum(comm, y, x, H, backend="cpu"))
    Hg, Dg = distributed_entropy_diversity(comm, x, H, backend="gpu")
    Hc, Dc = distributed_entropy_diversity(comm, x, H, backend="cpu")
    assert_close(Hg, Hc)
    assert_close(Dg, Dc)


def _structures(n=16, seed=0):
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n):
        if i % 3 == 0:
            frames.append(testing.perturbed_crystal("bcc", "Ta", size=(2, 2, 2), noise=rng.uniform(0.02, 0.15),
                                                    seed=100 + i))
        elif i % 3 == 1:
            frames.append(testing.small_cell(seed=100 + i))
        else:
            frames.append(testing.perturbed_crystal("fcc", "Cu", size=(2, 2, 2), noise=rng.uniform(0.02, 0.1),
                                                    seed=100 + i))
    return [hq.get_descriptors([a], k=12, cutoff=4.0) for a in frames]


@pytest.fixture(scope="module")
def descs():
    return _structures()


def test_msc_with_a_gpu_backend_object(descs):
    cpu = msc(descs, 10, details=True)
    gpu = msc(descs, 10, details=True, backend=GpuBackend(xp=np, query_block=16, ref_block=24))
    assert gpu.order == cpu.order
    assert gpu.extra["backend"] == "gpu"
    np.testing.assert_allclose(gpu.scores, cpu.scores, rtol=1e-10, atol=1e-10)


def test_msc_conditional_with_gpu_name(gpu_standin, descs):
    ref = np.concatenate(descs[:2])
    cpu = msc(descs[2:], [4, 8], details=True, reference=ref)
    gpu = msc(descs[2:], [4, 8], details=True, reference=ref, backend="gpu")
    assert gpu.order == cpu.order
    np.testing.assert_allclose(gpu.scores, cpu.scores, rtol=1e-10, atol=1e-10)
    assert gpu_standin
