"""The CPU backend: the numba log-sum-exp kernels behind the backend protocol the GPU twin
(``kernels.gpu``) shares; chosen through ``kernels.registry``."""

from __future__ import annotations

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

    ``precision``: ``"float64"`` (``kernels.cpu``) or ``"float32"`` (``kernels.cpu_float32``: the
    GEMM, d² and the exps in float32, the state in float64; bound in ``kernels.precision``).
    Inputs are float64 either way; float32 rounds them (and recomputes their norms) itself; values
    beyond float32's range become inf there, and their rows' bound is inf (recomputed in float64).
    """

    name = "cpu"

    def __init__(self, precision: str = "float64"):
        from .precision import check_precision

        self.precision = check_precision(precision)

    def __repr__(self):
        return f"CpuBackend(precision={self.precision})"

    def with_precision(self, precision: str) -> "CpuBackend":
        """This backend's twin in ``precision``."""
        return CpuBackend(precision)

    @property
    def _f32(self) -> bool:
        return self.precision == "float32"

    @staticmethod
    def reference_params(hs: np.ndarray, n_ref_total: int):
        from .cpu import prune_exponent

        return 1.0 / (2.0 * hs * hs), float(2.0 * hs.max() ** 2 * prune_exponent(n_ref_total))

    def start(self, yc: np.ndarray, n_h: int) -> QueryState:
        from .cpu import squared_norms

        if self._f32:
            from .cpu_float32 import augment_queries

            y, yn = augment_queries(np.ascontiguousarray(yc, dtype=np.float64))
            st = QueryState(y, n_h)
            st.yn = yn
        else:
            st = QueryState(np.ascontiguousarray(yc, dtype=np.float64), n_h)
            st.yn = squared_norms(st.y)
        st.m = np.full(st.y.shape[0], np.inf)
        st.s = np.zeros((st.y.shape[0], n_h))
        return st

    def fold(self, st: QueryState, xc: np.ndarray, inv2h2: np.ndarray, prune_d2: float, *, xn=None,
             exclude_offset: int = -1):
        from .cpu import kernel_logsum_update, squared_norms

        if xc.shape[0] == 0 or st.y.shape[0] == 0:
            return
        if self._f32:
            from .cpu_float32 import augment_reference, kernel_logsum_update32

            # a prepared reference is already augmented ([x, -|x|^2/2], float32, one column more)
            if not (xc.dtype == np.float32 and xc.shape[1] == st.y.shape[1]):
                xc = augment_reference(np.ascontiguousarray(xc, dtype=np.float64))
            kernel_logsum_update32(st.y, st.yn, xc, inv2h2, prune_d2, st.m, st.s, exclude_offset)
            return
        xc = np.ascontiguousarray(xc, dtype=np.float64)
        kernel_logsum_update(st.y, st.yn, xc, squared_norms(xc) if xn is None else xn, inv2h2, prune_d2,
                             st.m, st.s, exclude_offset)

    def finish(self, st: QueryState, inv2h2: np.ndarray) -> np.ndarray:
        from .cpu import logsum_finalize

        with np.errstate(divide="ignore", invalid="ignore"):  # float32 rows beyond its range: recomputed
            return logsum_finalize(st.m, st.s, inv2h2)

    # one-shot convenience (serial metrics)
    def prepare_reference(self, xc: np.ndarray, hs: np.ndarray) -> dict:
        from .cpu import squared_norms

        inv2h2, prune_d2 = self.reference_params(hs, xc.shape[0])
        if self._f32:
            from .cpu_float32 import augment_reference

            x32 = augment_reference(np.ascontiguousarray(xc, dtype=np.float64))
            return {"x": x32, "xn": None, "inv2h2": inv2h2, "prune_d2": prune_d2}
        xc = np.ascontiguousarray(xc, dtype=np.float64)
        return {"x": xc, "xn": squared_norms(xc), "inv2h2": inv2h2, "prune_d2": prune_d2}

    def logsum(self, yc: np.ndarray, ref: dict) -> np.ndarray:
        st = self.start(yc, ref["inv2h2"].size)
        self.fold(st, ref["x"], ref["inv2h2"], ref["prune_d2"], xn=ref["xn"])
        return self.finish(st, ref["inv2h2"])
