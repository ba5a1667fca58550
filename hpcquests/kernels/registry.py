"""One registry for the kernel backends (``--backend auto|cpu|gpu``).

A backend provides the running log-sum-exp kernel sum of ``hpcquests.kernels.cpu``:
``prepare_reference(x_centred, h) -> state`` and ``logsum(y_centred, state) -> (M, n_h)``.
The GPU twin (CuPy) registers under ``gpu``; ``auto`` picks it only when CuPy imports and a
device exists, and otherwise falls back to ``cpu`` silently.
"""

from __future__ import annotations

import numpy as np


class CpuBackend:
    name = "cpu"

    def prepare_reference(self, xc: np.ndarray, hs: np.ndarray) -> dict:
        from .cpu import prune_exponent, squared_norms

        xc = np.ascontiguousarray(xc, dtype=np.float64)
        return {
            "x": xc,
            "xn": squared_norms(xc),
            "inv2h2": 1.0 / (2.0 * hs * hs),
            "prune_d2": float(2.0 * hs.max() ** 2 * prune_exponent(xc.shape[0])),
        }

    def logsum(self, yc: np.ndarray, state: dict, *, exclude_offset: int = -1) -> np.ndarray:
        from .cpu import kernel_logsum_update, logsum_finalize, squared_norms

        yc = np.ascontiguousarray(yc, dtype=np.float64)
        m = np.full(yc.shape[0], np.inf)
        s = np.zeros((yc.shape[0], state["inv2h2"].size))
        kernel_logsum_update(yc, squared_norms(yc), state["x"], state["xn"], state["inv2h2"],
                             state["prune_d2"], m, s, exclude_offset)
        return logsum_finalize(m, s, state["inv2h2"])


def gpu_available() -> bool:
    """True when CuPy imports and sees at least one CUDA device (never raises)."""
    try:
        import cupy  # noqa: F401

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def available_backends() -> list[str]:
    return ["cpu"] + (["gpu"] if gpu_available() else [])


def get_backend(name: str = "cpu"):
    """Return the backend object for ``name`` in {auto, cpu, gpu}."""
    if name not in ("auto", "cpu", "gpu"):
        raise ValueError(f"backend must be one of auto, cpu, gpu; got {name!r}")
    if name == "auto":
        name = "gpu" if gpu_available() else "cpu"
    if name == "gpu":
        if not gpu_available():
            raise ValueError("backend 'gpu' requested but CuPy or a CUDA device is not available "
                             "(install hpcquests[gpu] on a GPU node, or use --backend cpu)")
        from .gpu import GpuBackend

        return GpuBackend()
    return CpuBackend()
