"""One registry for the kernel backends (``--backend auto|cpu|gpu``).

A backend provides the running log-sum-exp kernel sum of ``hpcquests.kernels.cpu``:
``prepare_reference(x_centred, h) -> state`` and ``logsum(y_centred, state) -> (M, n_h)``.
The GPU twin (CuPy, ``hpcquests.kernels.gpu``) registers under ``gpu``; ``auto`` picks it only
when CuPy imports and a device exists, and otherwise falls back to ``cpu`` silently.

Device choice: ``get_backend("gpu")`` binds the backend to ``select_device()``, i.e. the node-local
MPI rank (``get_local_rank()``, from the launcher's environment) modulo the number of visible
devices, so one rank per GPU needs no configuration (with ``--gpus-per-task=1`` each rank sees
one device and gets device 0). ``use_device(i)`` scopes work to a device and restores the
previous one. Nothing here imports CuPy at import time; every probe is silent and never raises.
"""

from __future__ import annotations

import os
import warnings
from contextlib import contextmanager

import numpy as np


class QueryState:
    """Running log-sum-exp state of a block of (centred) queries: see ``hpcquests.kernels.cpu``."""

    def __init__(self, yc, n_h):
        self.y = yc
        self.yn = None
        self.m = None
        self.s = None
        self.n_h = n_h


class CpuBackend:
    """numba kernels. Protocol shared with the GPU twin:

    ``reference_params(hs, n_ref_total)`` → (inv2h2, prune_d2);
    ``start(yc, n_h)`` → state; ``fold(state, xc, inv2h2, prune_d2)`` folds one reference block or
    shard (any order); ``finish(state, inv2h2)`` → L, an (M, n_h) float64 numpy array.
    """

    name = "cpu"

    @staticmethod
    def reference_params(hs: np.ndarray, n_ref_total: int):
        from .cpu import prune_exponent

        return 1.0 / (2.0 * hs * hs), float(2.0 * hs.max() ** 2 * prune_exponent(n_ref_total))

    def start(self, yc: np.ndarray, n_h: int) -> QueryState:
        from .cpu import squared_norms

        st = QueryState(np.ascontiguousarray(yc, dtype=np.float64), n_h)
        st.yn = squared_norms(st.y)
        st.m = np.full(st.y.shape[0], np.inf)
        st.s = np.zeros((st.y.shape[0], n_h))
        return st

    def fold(self, st: QueryState, xc: np.ndarray, inv2h2: np.ndarray, prune_d2: float, *, xn=None,
             exclude_offset: int = -1):
        from .cpu import kernel_logsum_update, squared_norms

        xc = np.ascontiguousarray(xc, dtype=np.float64)
        if xc.shape[0] == 0 or st.y.shape[0] == 0:
            return
        kernel_logsum_update(st.y, st.yn, xc, squared_norms(xc) if xn is None else xn, inv2h2, prune_d2,
                             st.m, st.s, exclude_offset)

    def finish(self, st: QueryState, inv2h2: np.ndarray) -> np.ndarray:
        from .cpu import logsum_finalize

        return logsum_finalize(st.m, st.s, inv2h2)

    # one-shot convenience (serial metrics)
    def prepare_reference(self, xc: np.ndarray, hs: np.ndarray) -> dict:
        from .cpu import squared_norms

        xc = np.ascontiguousarray(xc, dtype=np.float64)
        inv2h2, prune_d2 = self.reference_params(hs, xc.shape[0])
        return {"x": xc, "xn": squared_norms(xc), "inv2h2": inv2h2, "prune_d2": prune_d2}

    def logsum(self, yc: np.ndarray, ref: dict) -> np.ndarray:
        st = self.start(yc, ref["inv2h2"].size)
        self.fold(st, ref["x"], ref["inv2h2"], ref["prune_d2"], xn=ref["xn"])
        return self.finish(st, ref["inv2h2"])


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


#: Environment variables holding the node-local rank, most specific first: the MPI launchers'
#: own variables come before SLURM_LOCALID, which ranks started by ``mpirun`` inside a batch
#: script inherit from the batch step (0 for all of them).
LOCAL_RANK_VARS = (
    "OMPI_COMM_WORLD_LOCAL_RANK",  # Open MPI
    "MPI_LOCALRANKID",             # MPICH / Intel MPI (hydra)
    "PMI_LOCAL_RANK",              # PMI-based launchers
    "MV2_COMM_WORLD_LOCAL_RANK",   # MVAPICH2
    "PALS_LOCAL_RANKID",           # HPE Cray PALS (aprun successor)
    "SLURM_LOCALID",               # srun
    "JSM_NAMESPACE_LOCAL_RANK",    # IBM jsrun
    "LOCAL_RANK",                  # torchrun and friends
)


def get_local_rank(environ=None) -> int:
    """This process's node-local rank from the launcher's environment (0 when none is set)."""
    env = os.environ if environ is None else environ
    for var in LOCAL_RANK_VARS:
        value = env.get(var)
        if value is None:
            continue
        try:
            r = int(str(value).strip())
        except ValueError:
            continue
        if r >= 0:
            return r
    return 0


def select_device(local_rank: int | None = None, n_visible: int | None = None) -> int:
    """The device for a node-local rank: ``local_rank % n_visible`` (defaults: from the
    environment and from CuPy). ValueError when no device is visible."""
    if local_rank is None:
        local_rank = get_local_rank()
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


def available_backends() -> list[str]:
    return ["cpu"] + (["gpu"] if gpu_available() else [])


def _is_backend(obj) -> bool:
    return all(callable(getattr(obj, f, None)) for f in ("reference_params", "start", "fold", "finish"))


def get_backend(name="cpu"):
    """Return the backend object for ``name`` in {auto, cpu, gpu}; a backend object (anything
    with ``reference_params``/``start``/``fold``/``finish``, e.g. ``GpuBackend(xp=numpy)``) is
    returned as is. ``gpu`` is bound to ``select_device()``."""
    if not isinstance(name, str) and _is_backend(name):
        return name
    if name not in ("auto", "cpu", "gpu"):
        raise ValueError(f"backend must be one of auto, cpu, gpu; got {name!r}")
    if name == "auto":
        name = "gpu" if gpu_available() else "cpu"
    if name == "gpu":
        if not gpu_available():
            raise ValueError("backend 'gpu' requested but CuPy or a CUDA device is not available "
                             "(install hpcquests[gpu] on a GPU node, or use --backend cpu)")
        from .gpu import GpuBackend

        return GpuBackend(device=select_device())
    return CpuBackend()
