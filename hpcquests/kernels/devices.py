"""CUDA devices as CuPy sees them: silent probes (never raise, print nothing, import CuPy only
when asked), the device of a node-local rank, and ``use_device`` (a restoring context)."""

from __future__ import annotations

import warnings
from contextlib import contextmanager


def _import_cupy():
    """The cupy module, or None when it does not import (silently: warnings are swallowed)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import cupy
        return cupy
    except Exception:
        return None


def gpu_device_count() -> int:
    """Number of CUDA devices CuPy sees (after CUDA_VISIBLE_DEVICES); 0 without CuPy (never raises)."""
    cp = _import_cupy()
    if cp is None:
        return 0
    try:
        return int(cp.cuda.runtime.getDeviceCount())
    except Exception:
        return 0


def gpu_available() -> bool:
    """True when CuPy imports and sees at least one CUDA device (never raises)."""
    return gpu_device_count() > 0


def gpu_devices() -> list[dict]:
    """The visible CUDA devices as ``{"id", "name", "memory_gib", "compute_capability"}`` dicts;
    [] without CuPy or a device (never raises, prints nothing)."""
    n = gpu_device_count()
    if n == 0:
        return []
    cp = _import_cupy()
    out = []
    for i in range(n):
        info = {"id": i, "name": "unknown", "memory_gib": None, "compute_capability": None}
        try:
            props = cp.cuda.runtime.getDeviceProperties(i)
            name = props.get("name", b"unknown")
            info["name"] = name.decode(errors="replace") if isinstance(name, bytes) else str(name)
            info["memory_gib"] = round(float(props["totalGlobalMem"]) / 2**30, 2)
            info["compute_capability"] = f"{props['major']}.{props['minor']}"
        except Exception:
            pass
        out.append(info)
    return out


def select_device(local_rank: int | None = None, n_visible: int | None = None) -> int:
    """The device for a node-local rank: ``local_rank % n_visible`` (defaults: rank 0, and the
    devices CuPy sees). ValueError when no device is visible."""
    if local_rank is None:
        local_rank = 0
    if n_visible is None:
        n_visible = gpu_device_count()
    if int(n_visible) < 1:
        raise ValueError("no CUDA device is visible (CuPy missing, no GPU, or CUDA_VISIBLE_DEVICES empty)")
    if int(local_rank) < 0:
        raise ValueError(f"local rank must be >= 0, got {local_rank!r}")
    return int(local_rank) % int(n_visible)


@contextmanager
def use_device(device: int | None):
    """Run the block with ``device`` as CuPy's current device, restoring the previous one on
    exit (also on error). None: leave the current device alone."""
    if device is None:
        yield None
        return
    n = gpu_device_count()
    if not 0 <= int(device) < n:
        raise ValueError(f"CUDA device {device!r} is not visible ({n} device(s))")
    runtime = _import_cupy().cuda.runtime
    previous = runtime.getDevice()
    runtime.setDevice(int(device))
    try:
        yield int(device)
    finally:
        runtime.setDevice(previous)
