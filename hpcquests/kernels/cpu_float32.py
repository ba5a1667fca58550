"""float32 twin of ``hpcquests.kernels.cpu.kernel_logsum_update`` (``precision="float32"``).

Same running log-sum-exp state (m float64, s float64) and the same exact pruning, but the GEMM
tile (SGEMM), d² = |y|² + |x|² − 2G, the exponent and the exponential are float32: twice the
vector width and half the GEMM cost. The error bound is ``kernels.precision.float32_error_bound``
(rows over the tolerance are recomputed in float64 by the caller). Tiles are 256 × 512 (the
fastest SGEMM shape for K = 63 measured on a Zen 2 core: 2.0× DGEMM's best tile).
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

QUERY_BLOCK = 256
REF_BLOCK = 512
#: Stands in for +inf inside fastmath loops (float32's largest finite is 3.4e38).
BIG32 = np.float32(1e38)
_F0 = np.float32(0.0)
_F2 = np.float32(2.0)


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


@nb.njit(cache=True)
def squared_norms32(x):
    """(n,) float32 squared norms of a (n, d) float32 array, summed in float64 and rounded once."""
    n, d = x.shape
    out = np.empty(n, dtype=np.float32)
    for i in range(n):
        acc = 0.0
        for c in range(d):
            v = np.float64(x[i, c])
            acc += v * v
        out[i] = np.float32(acc)
    return out


@nb.njit(cache=True, fastmath=True)
def _row_to_d2(yi, xn, r0, row, nr, lim_est):
    """row[j] ← max(|y|² + |x_j|² − 2 y·x_j, 0) in place; returns (row minimum, the number of
    d² below ``lim_est``), the count only choosing the dense or the gathered sum (both exact)."""
    rmin = BIG32
    c = 0
    for j in range(nr):
        d2 = max(yi + xn[r0 + j] - _F2 * row[j], _F0)
        row[j] = d2
        rmin = min(rmin, d2)
        c += 1 if d2 < lim_est else 0
    return rmin, c


@nb.njit(cache=True, fastmath=True)
def _row_min(row, nr):
    rmin = BIG32
    for j in range(nr):
        rmin = min(rmin, row[j])
    return rmin


@nb.njit(cache=True, fastmath=True)
def _masked_expsum(row, nr, m, lim, a):
    """Σ exp(−(d² − m)·a) over d² < lim, each float32 term added in float64."""
    acc = 0.0
    for j in range(nr):
        t = row[j]
        e = _exp32(-(t - m) * a)
        acc += np.float64(e) if t < lim else 0.0
    return acc


@nb.njit(cache=True)
def _compact_below(row, nr, lim, m, buf):
    c = 0
    for j in range(nr):
        t = row[j]
        buf[c] = t - m
        c += 1 if t < lim else 0
    return c


@nb.njit(cache=True, fastmath=True)
def _expsum(buf, c, a):
    acc = 0.0
    for j in range(c):
        acc += np.float64(_exp32(-buf[j] * a))
    return acc


@nb.njit(parallel=True, cache=True)
def kernel_logsum_update32(y, yn, x, xn, inv2h2, prune_d2, m_state, s_state, exclude_offset):
    """Fold a float32 reference into the float64 running state of float32 queries.

    Args:
        y: (M, d) float32 centred queries; yn: (M,) float32 squared norms (``squared_norms32``).
        x: (N, d) float32 centred reference; xn: (N,) float32 squared norms.
        inv2h2: (n_h,) float64 1/(2h²); prune_d2: as in ``kernels.cpu`` (float64).
        m_state: (M,) float64 running minimum d² (every value a float32), in place.
        s_state: (M, n_h) float64 running sums, in place.
        exclude_offset: query i skips reference row i − exclude_offset when ≥ 0.
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
                # the count uses the state's m before this tile (one pass fewer over the row)
                lim_est = np.float32(min(m_state[i], 1e38)) + prune
                rmin, c = _row_to_d2(yn[i], xn, r0, row, nr, lim_est)
                if exclude_offset >= 0:
                    skip = i - exclude_offset - r0
                    if 0 <= skip < nr:
                        row[skip] = BIG32
                        rmin = _row_min(row, nr)
                if not rmin < BIG32:  # also NaN (data beyond float32: the caller recomputes)
                    continue
                m_old = m_state[i]
                r64 = np.float64(rmin)
                if r64 < m_old:
                    if m_old < np.inf:
                        for hh in range(n_h):
                            s_state[i, hh] *= math.exp(-(m_old - r64) * inv2h2[hh])
                    m_state[i] = r64
                m = np.float32(m_state[i])
                # as kernels.cpu.prune_limit: always above m, so the nearest term is kept
                lim = m + max(prune, m * np.float32(1.2e-7))
                if not rmin < lim:
                    continue
                if 4 * c >= nr:
                    for hh in range(n_h):
                        s_state[i, hh] += _masked_expsum(row, nr, m, lim, np.float32(inv2h2[hh]))
                else:
                    c = _compact_below(row, nr, lim, m, buf)
                    for hh in range(n_h):
                        s_state[i, hh] += _expsum(buf, c, np.float32(inv2h2[hh]))
