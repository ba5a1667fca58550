"""One registry for the kernel backends (``--backend auto|cpu|gpu``): a dict from name to factory.

A backend implements the protocol of ``kernels.cpu_backend.CpuBackend`` (``reference_params``,
``start``, ``fold``, ``finish``; ``prepare_reference``/``logsum`` for one-shot use). The GPU twin
(CuPy, ``kernels.gpu``) registers under ``gpu``; ``auto`` picks it only when CuPy imports and a
device exists, and otherwise falls back to ``cpu`` silently.

Device choice: ``get_backend("gpu", local_rank=r)`` binds the backend to ``select_device(r)``,
the node-local rank modulo the number of visible devices, so one rank per GPU needs no
configuration (with ``--gpus-per-task=1`` each rank sees one device and gets device 0). The node
rank comes from the caller's communicator (``comm.node_rank()``, the one source of it).
``use_device(i)`` scopes work to a device and restores the previous one. Nothing here imports
CuPy at import time.
"""

from __future__ import annotations

from .cpu_backend import CpuBackend, QueryState
from .devices import _import_cupy, gpu_available, gpu_device_count, gpu_devices, select_device, use_device

__all__ = ["BACKENDS", "CpuBackend", "QueryState", "available_backends", "get_backend", "gpu_available",
           "gpu_device_count", "gpu_devices", "select_device", "use_device", "_import_cupy"]


def _cpu(local_rank, precision="float64"):
    return CpuBackend(precision)


def _gpu(local_rank, precision="float64"):
    if not gpu_available():
        raise ValueError("backend 'gpu' requested but CuPy or a CUDA device is not available "
                         "(install hpcquests[gpu] on a GPU node, or use --backend cpu)")
    from .gpu import GpuBackend

    return GpuBackend(precision=precision, device=select_device(local_rank))


#: name -> factory(local_rank, precision) of a backend object
BACKENDS = {"cpu": _cpu, "gpu": _gpu}


def available_backends() -> list[str]:
    return ["cpu"] + (["gpu"] if gpu_available() else [])


def _is_backend(obj) -> bool:
    return all(callable(getattr(obj, f, None)) for f in ("reference_params", "start", "fold", "finish"))


def get_backend(name="cpu", local_rank: int | None = None, precision: str | None = None):
    """The backend object for ``name`` in {auto, cpu, gpu}; a backend object (anything with
    ``reference_params``/``start``/``fold``/``finish``, e.g. ``GpuBackend(xp=numpy)``) is returned
    as is, or as its twin in ``precision`` (``with_precision``) when that differs. ``local_rank``:
    this process's node-local rank (``comm.node_rank()``; default 0), which picks the device of
    ``gpu``. ``precision``: float64 | float32 (None: the object's own, float64 for a name)."""
    from .precision import check_precision

    if precision is not None:
        precision = check_precision(precision)
    if not isinstance(name, str) and _is_backend(name):
        if precision is None or getattr(name, "precision", "float64") == precision:
            return name
        return name.with_precision(precision)
    if name != "auto" and name not in BACKENDS:
        raise ValueError(f"backend must be one of auto, cpu, gpu; got {name!r}")
    if name == "auto":
        name = "gpu" if gpu_available() else "cpu"
    return BACKENDS[name](local_rank, precision or "float64")
