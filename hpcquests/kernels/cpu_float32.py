"""float32 twin of ``hpcquests.kernels.cpu.kernel_logsum_update`` (``precision="float32"``).

Same running log-sum-exp state (m float64, s float64) and the same exact pruning, but the GEMM
tile (SGEMM), d², the exponent and the exponential are float32: twice the vector width and half
the GEMM cost. The rows are augmented by one column ([y, 1] and [x, −|x|²/2]) so that the GEMM
itself yields g' = y·x − |x|²/2 and d² = |y|² − 2g': each row needs one pass for its nearest
reference and one for the exps, nothing else. The error bound is
``kernels.precision.float32_error_bound`` (rows over the tolerance are recomputed in float64 by
the caller). Tiles are 256 × 512 (the fastest SGEMM shape for K = 63–64 measured on a Zen 2 core:
2.0× DGEMM's best tile).
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

QUERY_BLOCK = 256
REF_BLOCK = 512
#: Stands in for −inf inside fastmath loops (float32's largest finite is 3.4e38).
NEG32 = np.float32(-1e38)
_F0 = np.float32(0.0)
_F1 = np.float32(1.0)
_F2 = np.float32(2.0)
_HALF = np.float32(0.5)


@nb.njit(cache=True, fastmath={"contract", "arcp", "nsz"}, inline="always")
def _exp32(a):
    """exp(a) in float32 for a in [−64, 0], as exp(a/64)^64 (arguments below −64 are clamped).

    b = a/64 + 0.5 ∈ [−0.5, 0.5] (rounded by ≤ 2⁻²⁵); exp(b) by its degree-8 Taylor series
    (truncation ≤ 0.25u relative), coefficients rounded to float32 (≤ 2.7u), Horner's rounding
    (≤ γ₁₆·e = 43.5u without FMA), the factor exp(−0.5) (2u): exp(a/64) within 49u relative. Six
    squarings multiply that by 64 and add 63u: ≤ 3,200u = 1.9e-4 (``EXP32_REL_ERROR`` = 2e-4).
    Pure float32 arithmetic, so LLVM vectorises the loops that call it 8 (AVX2) or 16 wide.
    """
    if a < np.float32(-64.0):
        a = np.float32(-64.0)
    b = a * np.float32(0.015625) + np.float32(0.5)
    p = np.float32(2.48015873015873e-05)  # 1/8!
    p = p * b + np.float32(0.0001984126984126984)
    p = p * b + np.float32(0.001388888888888889)
    p = p * b + np.float32(0.008333333333333333)
    p = p * b + np.float32(0.041666666666666664)
    p = p * b + np.float32(0.16666666666666666)
    p = p * b + np.float32(0.5)
    p = p * b + np.float32(1.0)
    p = p * b + np.float32(1.0)
    p = p * np.float32(0.6065306597126334)  # exp(-0.5)
    p = p * p
    p = p * p
    p = p * p
    p = p * p
    p = p * p
    p = p * p
    return p


@nb.njit(cache=True)
def exp32_values(a):
    """``_exp32`` over a float32 array (for the accuracy tests)."""
    out = np.empty_like(a)
    for i in range(a.size):
        out[i] = _exp32(a[i])
    return out


@nb.njit(cache=True, fastmath=True)
def _row_max(row, nr, g_est):
    """(max_j g'_j, the number of g'_j above ``g_est``): the nearest reference (d² = |y|² − 2g'),
    and a count that only chooses the dense or the gathered sum (both exact)."""
    gmax = NEG32
    c = 0
    for j in range(nr):
        g = row[j]
        gmax = max(gmax, g)
        c += 1 if g > g_est else 0
    return gmax, c


@nb.njit(cache=True, fastmath=True)
def _masked_expsum(row, nr, g_cut, c_i, a2):
    """Σ exp(2a·g'_j + c_i) over g'_j > g_cut (d²_j − m < prune), each float32 term added in
    float64. The exponent is −(d²_j − m)·a; rounding can lift it above 0 by less than the bound,
    where it is clamped."""
    acc = 0.0
    for j in range(nr):
        g = row[j]
        e = _exp32(min(a2 * g + c_i, _F0))
        acc += np.float64(e) if g > g_cut else 0.0
    return acc


@nb.njit(cache=True)
def _compact_above(row, nr, g_cut, buf):
    c = 0
    for j in range(nr):
        g = row[j]
        buf[c] = g
        c += 1 if g > g_cut else 0
    return c


@nb.njit(cache=True, fastmath=True)
def _expsum(buf, c, c_i, a2):
    acc = 0.0
    for j in range(c):
        acc += np.float64(_exp32(min(a2 * buf[j] + c_i, _F0)))
    return acc


@nb.njit(cache=True)
def _augment(a, reference):
    """(rows rounded to float32 with one more column, their float32 squared norms summed in
    float64 and rounded once). The column is −|x|²/2 for a reference, 1 for queries."""
    n, d = a.shape
    out = np.empty((n, d + 1), dtype=np.float32)
    norms = np.empty(n, dtype=np.float32)
    for i in range(n):
        acc = 0.0
        for c in range(d):
            v = np.float32(a[i, c])
            out[i, c] = v
            acc += np.float64(v) * np.float64(v)
        norms[i] = np.float32(acc)
        out[i, d] = np.float32(-0.5 * np.float64(norms[i])) if reference else _F1
    return out, norms


def augment_queries(y):
    """(M, d + 1) float32 [y, 1] of centred float64 queries, and their (M,) float32 squared norms."""
    return _augment(y, False)


def augment_reference(x):
    """(N, d + 1) float32 [x, −|x|²/2] of a centred float64 reference: the GEMM of the augmented
    rows gives g' = y·x − |x|²/2 directly, so d² = |y|² − 2g' needs no pass over |x|²."""
    return _augment(x, True)[0]


@nb.njit(parallel=True, cache=True)
def kernel_logsum_update32(y, yn, x, inv2h2, prune_d2, m_state, s_state, exclude_offset):
    """Fold a float32 reference into the float64 running state of float32 queries.

    Args:
        y: (M, d + 1) float32 ``augment_queries`` rows; yn: (M,) float32 their squared norms.
        x: (N, d + 1) float32 ``augment_reference`` rows.
        inv2h2: (n_h,) float64 1/(2h²); prune_d2: as in ``kernels.cpu`` (float64).
        m_state: (M,) float64 running minimum d² (every value a float32), in place.
        s_state: (M, n_h) float64 running sums, in place.
        exclude_offset: query i skips reference row i − exclude_offset when ≥ 0.

    One SGEMM per 256 × 512 tile gives g' = y·x − |x|²/2; per row, one pass finds max g' (the
    nearest reference: d² = |y|² − 2g') and one sums exp(−(d² − m)·a) = exp(2a·g' − (|y|² − m)·a)
    over the kept terms (d² − m < prune_d2 ⇔ g' > (|y|² − m − prune_d2)/2).
    """
    M = y.shape[0]
    N = x.shape[0]
    n_h = inv2h2.shape[0]
    n_qb = (M + QUERY_BLOCK - 1) // QUERY_BLOCK
    prune = np.float32(min(prune_d2, 1e38))
    for qb in nb.prange(n_qb):
        q0 = qb * QUERY_BLOCK
        q1 = min(q0 + QUERY_BLOCK, M)
        yb = y[q0:q1]
        gflat = np.empty((q1 - q0) * REF_BLOCK, dtype=np.float32)
        buf = np.empty(REF_BLOCK, dtype=np.float32)
        for r0 in range(0, N, REF_BLOCK):
            r1 = min(r0 + REF_BLOCK, N)
            nr = r1 - r0
            gv = gflat[: (q1 - q0) * nr].reshape((q1 - q0, nr))
            np.dot(yb, x[r0:r1].T, gv)
            for ii in range(q1 - q0):
                i = q0 + ii
                row = gv[ii]
                yi = yn[i]
                if exclude_offset >= 0:
                    skip = i - exclude_offset - r0
                    if 0 <= skip < nr:
                        row[skip] = NEG32
                # the count uses the state's m before this tile (the cut only moves up after)
                g_est = (yi - np.float32(min(m_state[i], 1e38)) - prune) * _HALF
                gmax, c = _row_max(row, nr, g_est)
                if not gmax > NEG32:  # all excluded, or NaN (data beyond float32: recomputed)
                    continue
                r64 = np.float64(max(yi - _F2 * gmax, _F0))
                m_old = m_state[i]
                if r64 < m_old:
                    if m_old < np.inf:
                        for hh in range(n_h):
                            s_state[i, hh] *= math.exp(-(m_old - r64) * inv2h2[hh])
                    m_state[i] = r64
                m = np.float32(m_state[i])
                # as kernels.cpu.prune_limit: the cut stays below the nearest term, which is kept
                g_cut = (yi - m - max(prune, m * np.float32(1.2e-7))) * _HALF
                if not gmax > g_cut:
                    continue
                if 4 * c >= nr:
                    for hh in range(n_h):
                        a = np.float32(inv2h2[hh])
                        s_state[i, hh] += _masked_expsum(row, nr, g_cut, -(yi - m) * a, _F2 * a)
                else:
                    c = _compact_above(row, nr, g_cut, buf)
                    for hh in range(n_h):
                        a = np.float32(inv2h2[hh])
                        s_state[i, hh] += _expsum(buf, c, -(yi - m) * a, _F2 * a)
