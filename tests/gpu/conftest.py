"""Fixtures of the GPU-backend tests.

Most tests here run everywhere: they drive ``GpuBackend(xp=numpy)`` (the CPU stand-in of the
CuPy backend) and, where a C++20 compiler exists, the raw CUDA tile kernel compiled as plain
C++ with one thread per CUDA thread (``common.KernelEmulator``). Tests marked ``gpu`` need
CuPy and a CUDA device and are skipped otherwise.
"""

import pytest

from hpcquests.kernels.registry import gpu_available


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs CuPy and a CUDA device (skipped otherwise)")


def pytest_collection_modifyitems(config, items):
    if gpu_available():
        return
    skip = pytest.mark.skip(reason="needs CuPy and a CUDA device")
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def kernel_emulator(tmp_path_factory):
    """Build the CUDA tile kernel as C++ (skip without g++ with C++20); see common.KernelEmulator."""
    from .common import KernelEmulator

    try:
        return KernelEmulator(tmp_path_factory.mktemp("cuda-shim"))
    except RuntimeError as exc:
        pytest.skip(str(exc))
