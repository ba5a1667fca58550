"""The precision switch (``float64`` | ``float32``) shared by the CPU and GPU kernels, and the one
error bound of the float32 path both use (docs/precision.md).

float32 mode, CPU (``kernels.cpu_float32``) and GPU (``kernels.gpu``) alike: the queries y and
the reference x (centred on the reference mean) are rounded to float32 and multiplied by a
float32 GEMM; the exponent −(d² − m)·a (a = 1/(2h²)) is formed and exponentiated in float32;
the running minimum m and the sums s stay float64. The CPU augments the rows ([y, 1] and
[x, −|x|²/2], d + 1 columns) so that its GEMM gives g' = y·x − |x|²/2 and d² = |y|² − 2g'; the GPU
forms d² = |y|² + |x|² − 2G in float64 from the float32 G = y·x. With u = 2⁻²⁴ the unit roundoff
of float32, for every pair (R_x = the largest centred reference norm):

1. Rounding y and x to float32 moves d² by at most 2u(|y| + |x|)²(1 + u) (|ŷ − y| ≤ u|y|).
2. The GEMM: |Ĝ − ŷ·x̂| ≤ γ_{d+1}(|ŷ||x̂| + |x̂|²/2) for the CPU's augmented rows (|x|²/2 is one
   more term of the sum, rounded once), γ_d|ŷ||x̂| for the GPU; γ_n = n·u/(1 − n·u), any
   summation order, FMA or not. Twice that in d².
3. The norms, each rounded once to float32 (≤ u|y|², u|x|²), and the float32 operations that form
   the exponent from them (CPU: |y|² − m, 2a·g' and their sum; GPU: the rounding of −t·a) move
   it by at most 5u·a(|y| + |x|)². In all,
   |Δd²|·a ≤ a·δ(y),  δ(y) = γ_{d+1}(2|y|R_x + R_x²) + 7u(|y| + R_x)².
4. L(y) = log Σ_j exp(−d²_j a) is 1-Lipschitz in the max-norm of the exponents: those errors move
   L by at most a·δ(y).
5. What is left of the exponent's rounding is relative: at most 3u·|t·a| ≤ 3u·T_eff (a itself
   rounded to float32, and the final product), where the kept terms have t·a ≤ T_eff =
   T·(h_max/h_min)², T = 32 + log N.
6. The exponential: relative error ≤ ``EXP32_REL_ERROR`` (the CPU's polynomial, derived in
   ``kernels.cpu_float32._exp32``; CUDA's expf, ≤ 2 ulp, is well inside it), which moves L by at
   most that much (a log of a sum of terms each off by that relative amount).
7. Pruning on float32 values, float64 sums of up to N terms, log: ≤ 1e-12 together.

So every row's L (hence δH, and each row's share of H) is within

    bound(y) = max_h a_h·δ(y) + 3u·T_eff + EXP32_REL_ERROR + 1e-12

of the exact value (``float32_error_bound``). A row whose bound exceeds the tolerance (default
1e-3 nats) is recomputed in float64 (``logsum_to_tolerance``), and the outputs count them. The
bound is a worst case: GEMM rounding errors are random, ~√d·u rather than d·u, so measured errors
are 10–100× smaller (docs/precision.md).
"""

from __future__ import annotations

import numpy as np

from ..faults import inject

PRECISIONS = ("float64", "float32")
DEFAULT_PRECISION = "float64"
#: A row whose float32 bound exceeds this (nats) is recomputed in float64.
DEFAULT_FLOAT32_TOLERANCE = 1e-3
#: The unit roundoff of float32.
U32 = 2.0 ** -24
#: Relative error of the float32 exponential: the CPU polynomial's derived bound (3,200 u, see
#: ``kernels.cpu_float32._exp32``; the tests measure it over [−64, 0]).
EXP32_REL_ERROR = 2e-4


def check_precision(precision, option: str = "precision") -> str:
    """The precision name (``float64`` or ``float32``); ValueError naming ``option`` otherwise."""
    try:  # a name, np.float32 or a dtype
        name = None if precision is None else np.dtype(precision).name
    except TypeError:
        name = None
    if name not in PRECISIONS:
        raise ValueError(f"{option} must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return str(name)


def row_norms(a) -> np.ndarray:
    """(n,) Euclidean norms of the rows of an (n, d) float64 array: the |y| and R_x of the bound."""
    return np.sqrt(np.einsum("ij,ij->i", a, a)) if len(a) else np.zeros(0)


def check_tolerance(tolerance, option: str = "float32_tolerance") -> float:
    """A positive finite tolerance in nats (ValueError naming ``option`` otherwise)."""
    try:
        tol = float(tolerance)
    except (TypeError, ValueError):
        raise ValueError(f"{option} must be a positive number of nats, got {tolerance!r}") from None
    if not (np.isfinite(tol) and tol > 0):
        raise ValueError(f"{option} must be a positive number of nats, got {tolerance!r}")
    return tol


def check_precision_options(precision, tolerance) -> tuple[str, float]:
    """(precision, tolerance) of a command's ``--precision``/``--float32-tolerance``, checked."""
    return check_precision(precision, "--precision"), check_tolerance(tolerance, "--float32-tolerance")


def float32_error_bound(hs, d: int, r_y, r_x: float, n_ref: int):
    """The worst-case |ΔL| = |ΔδH| (nats) of a float32 row (module docstring), CPU and GPU.

    Args:
        hs: bandwidth(s) (the smallest sets a_max; the ratio sets T_eff).
        d: descriptor width. r_y: the centred norm(s) |y_i| of the row(s) (float or (M,) array).
        r_x: the largest centred norm of the reference. n_ref: reference size (for T).
    Returns a float, or an (M,) float64 array for an array ``r_y``; +inf where the data are too
    large for float32 (their rows must be recomputed in float64).
    """
    from .cpu import prune_exponent

    hs = np.asarray(hs, dtype=np.float64).reshape(-1)
    r_y = np.asarray(r_y, dtype=np.float64)
    u = U32
    gamma = (d + 1) * u / (1.0 - (d + 1) * u)
    a_max = 1.0 / (2.0 * hs.min() ** 2)
    t_eff = prune_exponent(n_ref) * (hs.max() / hs.min()) ** 2
    with np.errstate(over="ignore", invalid="ignore"):
        delta = (gamma * (2.0 * r_y * r_x + r_x * r_x) + 7.0 * u * (r_y + r_x) ** 2) * (1.0 + 4.0 * u)
        out = a_max * delta + 3.0 * u * t_eff + EXP32_REL_ERROR + 1e-12
        # beyond float32's range (|x|² overflows) nothing is bounded
        out = np.where(np.isfinite(out) & (np.maximum(r_y, r_x) < 1e18), out, np.inf)
    return float(out) if out.ndim == 0 else out


def logsum_to_tolerance(logsum, yc, hs, *, r_x: float, n_ref: int, precision: str, tolerance: float,
                        agree_count=None, stats: dict | None = None, must_recompute=None) -> np.ndarray:
    """L of the centred queries ``yc`` in ``precision``; in float32, rows whose bound exceeds
    ``tolerance`` are computed in float64 instead, and rows ``must_recompute`` picks from the
    float32 result are recomputed in float64. The one place the float32 contract is kept.

    Args:
        logsum: callable(rows (m, d) float64 centred, precision) -> (m, n_h) float64 L. It may be
            collective (a ring): it is then called the same number of times on every rank
            (once in float32, then once in float64 when any rank has a row for it), with
            possibly empty rows.
        agree_count: callable(int) -> int, the count summed over ranks (None: serial).
        stats: accumulates (over calls) ``precision``, ``float32_recomputed_rows`` (this rank's
            rows done in float64) and ``float32_max_bound`` (the largest bound among rows kept in
            float32); and sets ``float32_recomputed_index``, the rows of this call done in float64.
        must_recompute: callable(L, bound) -> (m,) bool, rows to recompute in float64 whatever
            their bound (a decision on a threshold within the bound: overlap, UQ thresholds).
    """
    if stats is not None:
        stats["precision"] = precision
    if precision == "float64":
        return logsum(yc, precision)
    bound = np.asarray(float32_error_bound(hs, yc.shape[1], row_norms(yc), r_x, n_ref)).reshape(-1)
    # the bound needs no float32 result: rows over the tolerance go to float64 directly (a
    # widely spread set costs float64's time, not float32's plus float64's)
    over = ~(bound <= tolerance)
    kept = np.flatnonzero(~over)
    L32 = logsum(yc[kept] if over.any() else yc, precision)
    L = np.empty((yc.shape[0], L32.shape[1]))
    L[kept] = L32
    redo_mask = over
    if must_recompute is not None and kept.size:
        redo_mask = over.copy()
        redo_mask[kept] |= np.asarray(must_recompute(L32, bound[kept]), dtype=bool)
    redo = np.flatnonzero(redo_mask)
    inject("float32.recompute")
    n_redo = redo.size if agree_count is None else int(agree_count(int(redo.size)))
    if n_redo:
        L[redo] = logsum(yc[redo], "float64")
    if stats is not None:
        kept_bounds = bound[~redo_mask]
        stats["float32_recomputed_rows"] = stats.get("float32_recomputed_rows", 0) + int(redo.size)
        stats["float32_recomputed_index"] = redo
        stats["float32_max_bound"] = max(stats.get("float32_max_bound", 0.0),
                                         float(kept_bounds.max()) if kept_bounds.size else 0.0)
    return L


__all__ = ["PRECISIONS", "DEFAULT_PRECISION", "DEFAULT_FLOAT32_TOLERANCE", "EXP32_REL_ERROR", "U32",
           "check_precision", "check_tolerance", "check_precision_options", "row_norms", "float32_error_bound", "logsum_to_tolerance"]
