"""Backend and device choice: auto/cpu/gpu without CuPy, device lists, local ranks, use_device.

CuPy is replaced by ``None`` in ``sys.modules`` (import fails) or by a small fake module, so
these tests behave the same whether or not the machine has CuPy and a GPU.
"""

import subprocess
import sys
import types
import warnings

import numpy as np
import pytest

from hpcquests.kernels import registry
from hpcquests.kernels.gpu import GpuBackend
from hpcquests.kernels.registry import (CpuBackend, available_backends, get_backend, gpu_available, gpu_devices,
                                        select_device, use_device)
from hpcquests.parallel.comm import LOCAL_RANK_VARS
from hpcquests.parallel.comm import launcher_local_rank as get_local_rank


class FakeRuntime:
    def __init__(self, n, fail=False):
        self.n, self.fail, self.current = n, fail, 0

    def getDeviceCount(self):
        if self.fail:
            raise RuntimeError("cudaErrorNoDevice")
        return self.n

    def getDevice(self):
        return self.current

    def setDevice(self, i):
        if not 0 <= i < self.n:
            raise RuntimeError("invalid device ordinal")
        self.current = i

    def getDeviceProperties(self, i):
        return {"name": f"Fake GPU {i}".encode(), "totalGlobalMem": 80 * 2**30, "major": 9, "minor": 0}


def fake_cupy(n=2, fail=False):
    mod = types.ModuleType("cupy")
    mod.__version__ = "0.0-fake"
    mod.cuda = types.SimpleNamespace(runtime=FakeRuntime(n, fail))
    return mod


@pytest.fixture
def no_cupy(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # `import cupy` raises ImportError


@pytest.fixture
def clean_env(monkeypatch):
    for var in LOCAL_RANK_VARS:
        monkeypatch.delenv(var, raising=False)


def test_without_cupy_everything_falls_back_silently(no_cupy, capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert gpu_available() is False
        assert gpu_devices() == []
        assert available_backends() == ["cpu"]
        assert isinstance(get_backend("auto"), CpuBackend)
        assert isinstance(get_backend("cpu"), CpuBackend)
        with pytest.raises(ValueError, match="CuPy or a CUDA device is not available"):
            get_backend("gpu")
        with pytest.raises(ValueError, match="no CUDA device"):
            select_device(0)
        with pytest.raises(ValueError, match="not visible"):
            with use_device(0):
                pass
        with use_device(None) as d:
            assert d is None
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""


def test_cupy_without_device_is_no_gpu(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy(fail=True))
    assert gpu_available() is False and gpu_devices() == [] and available_backends() == ["cpu"]
    assert isinstance(get_backend("auto"), CpuBackend)
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy(n=0))
    assert gpu_available() is False and isinstance(get_backend("auto"), CpuBackend)


def test_unknown_backend_name():
    with pytest.raises(ValueError, match="auto, cpu, gpu"):
        get_backend("tpu")
    with pytest.raises(ValueError, match="auto, cpu, gpu"):
        get_backend(42)


def test_backend_objects_pass_through():
    be = GpuBackend(xp=np)
    assert get_backend(be) is be
    cpu = CpuBackend()
    assert get_backend(cpu) is cpu


def test_fake_devices_listed_and_bound_by_local_rank(monkeypatch, clean_env):
    cp = fake_cupy(n=2)
    monkeypatch.setitem(sys.modules, "cupy", cp)
    assert gpu_available() and available_backends() == ["cpu", "gpu"]
    devs = gpu_devices()
    assert [d["id"] for d in devs] == [0, 1]
    assert devs[1] == {"id": 1, "name": "Fake GPU 1", "memory_gib": 80.0, "compute_capability": "9.0"}
    be = get_backend("gpu", local_rank=3)
    assert isinstance(be, GpuBackend) and be.name == "gpu" and be.device == 1
    assert get_backend("gpu").device == 0  # no rank given: rank 0
    # the serial API takes the launcher's node rank (the serial communicator's)
    from hpcquests import metrics

    monkeypatch.setenv("SLURM_LOCALID", "3")
    assert metrics._node_rank("gpu") == 3 and metrics._node_rank("cpu") == 0
    assert isinstance(get_backend("auto"), GpuBackend)
    assert cp.cuda.runtime.current == 0  # choosing a device changes nothing globally


def test_local_rank_from_environment(clean_env, monkeypatch):
    assert get_local_rank() == 0
    assert get_local_rank({}) == 0
    assert get_local_rank({"SLURM_LOCALID": "2"}) == 2
    assert get_local_rank({"PMI_LOCAL_RANK": "5"}) == 5
    assert get_local_rank({"MPI_LOCALRANKID": "1"}) == 1
    # mpirun inside a batch script: every rank inherits SLURM_LOCALID=0 of the batch step
    assert get_local_rank({"SLURM_LOCALID": "0", "OMPI_COMM_WORLD_LOCAL_RANK": "3"}) == 3
    assert get_local_rank({"OMPI_COMM_WORLD_LOCAL_RANK": "junk", "SLURM_LOCALID": "4"}) == 4
    assert get_local_rank({"SLURM_LOCALID": "-1"}) == 0
    monkeypatch.setenv("MPI_LOCALRANKID", "7")
    assert get_local_rank() == 7


def test_select_device_is_rank_modulo_visible():
    assert [select_device(r, 4) for r in range(9)] == [0, 1, 2, 3, 0, 1, 2, 3, 0]
    assert select_device(5, 1) == 0
    with pytest.raises(ValueError, match="no CUDA device"):
        select_device(0, 0)
    with pytest.raises(ValueError, match="local rank"):
        select_device(-1, 2)


def test_use_device_restores(monkeypatch):
    cp = fake_cupy(n=3)
    monkeypatch.setitem(sys.modules, "cupy", cp)
    rt = cp.cuda.runtime
    rt.current = 2
    with use_device(1) as d:
        assert d == 1 and rt.current == 1
        with use_device(0):
            assert rt.current == 0
        assert rt.current == 1
    assert rt.current == 2
    with pytest.raises(KeyError):
        with use_device(0):
            assert rt.current == 0
            raise KeyError("boom")
    assert rt.current == 2
    with pytest.raises(ValueError, match="not visible"):
        with use_device(3):
            pass
    assert rt.current == 2
    with use_device(None):
        assert rt.current == 2


def test_importing_hpcquests_does_not_import_cupy():
    code = ("import sys, hpcquests, hpcquests.kernels.registry, hpcquests.kernels.gpu, hpcquests.metrics; "
            "from hpcquests.kernels.gpu import GpuBackend; GpuBackend(); "
            "assert 'cupy' not in sys.modules, 'cupy imported'")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "" and proc.stderr == ""


def test_registry_helpers_exist_for_cli_info():
    # ``hpcquests info`` can list gpu_devices(); it must never raise
    assert callable(registry.gpu_devices) and isinstance(registry.gpu_devices(), list)
