"""CPU (numba) kernels of greedy MSC: per-environment running kernel sums, lazily refreshed.

MSC keeps, for every environment y of every candidate structure, the running log-sum-exp state
``(m, s)`` of Σ_{c∈C} K(y, c) over the environments C of the structures selected so far (the
state of ``hpcquests.kernels.cpu``: ``m`` the smallest squared distance seen, ``s`` the sum of
``exp(−(d² − m)/(2h²))``), so δH(y|C) = m/(2h²) − log s. A structure's score is
``max_y δH(y|C) + H(S)``.

Sums only grow as C grows, so every δH(y|C), and with it every score, only falls: a value
computed against an earlier C is an upper bound. The lazy greedy exploits this twice:

- structures sit in a max-heap of (possibly stale) scores and are brought up to date only when
  they reach the top;
- inside a structure, only the environment with the largest (possibly stale) δH is brought up
  to date, until the largest one is fresh; its value is then the structure's exact maximum.

A value is accepted only when no stale bound lies within a relative ``TIE_BAND`` of it, so
rounding in the last bits can never make the lazy result differ from the eager one.

Determinism (the same picks on any number of ranks, lazy or eager, exact ties to the lowest
index) comes from computing every environment **on its own**: its state is folded with one
selected structure at a time, in selection order, by the same code, so it depends only on the
environment and the selected sequence, never on the partition, the batch or when it is
refreshed. Pruning and the exp are those of ``hpcquests.kernels.cpu`` (≤ 5e-14 in δH).
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from .cpu import BIG, _masked_expsum, _row_to_d2

#: Selected-structure rows per block of one environment's fold (bounds the scratch buffer).
COL_BLOCK = 2048
#: Selected structures folded into an environment before its bound is checked again (doubling
#: while it stays on top): checking after every one minimises kernel pairs, but the bookkeeping
#: between checks then costs more than the pairs saved (600 structures x 54 atoms: 8 gives 1.1x
#: the pairs of 1 and 1.8x less time; tried and dropped: a centroid (Jensen) bound on the
#: unfolded structures, and a second bound-only sum over the newest ones: both cost more).
FOLD_CHUNK = 8
#: Relative band within which stale bounds are refreshed before a value is accepted.
TIE_BAND = 1e-10


@nb.njit(cache=True, fastmath=True)
def _dots(yv, x, r0, nr, out):
    """out[j] = yv · x[r0 + j] for j < nr, four rows at a time (shared loads of yv).

    fastmath lets LLVM vectorise each sum, in an order fixed by this compiled code and by j's
    position in the block (four-row group or tail). Callers always pass one selected structure
    (or one fixed sub-block of it) at a time, so a given pair is always computed by the same
    instructions: the result is bitwise the same on any batch, rank or refresh time.
    """
    d = yv.shape[0]
    j = 0
    while j + 4 <= nr:
        a0 = a1 = a2 = a3 = 0.0
        for k in range(d):
            yk = yv[k]
            a0 += yk * x[r0 + j, k]
            a1 += yk * x[r0 + j + 1, k]
            a2 += yk * x[r0 + j + 2, k]
            a3 += yk * x[r0 + j + 3, k]
        out[j] = a0
        out[j + 1] = a1
        out[j + 2] = a2
        out[j + 3] = a3
        j += 4
    while j < nr:
        acc = 0.0
        for k in range(d):
            acc += yv[k] * x[r0 + j, k]
        out[j] = acc
        j += 1


@nb.njit(cache=True)
def _fold_env(e, y, yn, m, s, x, xn, c0, c1, inv2h2, prune, row, buf):
    """Fold reference rows x[c0:c1] into environment e's state; returns pairs evaluated."""
    for r0 in range(c0, c1, COL_BLOCK):
        nr = min(COL_BLOCK, c1 - r0)
        _dots(y[e], x, r0, nr, row)
        rmin = _row_to_d2(yn[e], xn, r0, row, nr)
        m_old = m[e]
        if rmin < m_old:
            if m_old < np.inf:
                s[e] *= math.exp(-(m_old - rmin) * inv2h2)
            m[e] = rmin
        mi = m[e]
        # dense masked sum: blocks are one selected structure (tens of rows), and in compact
        # datasets nearly every term survives the pruning test anyway
        s[e] += _masked_expsum(row, nr, mi, mi + prune, inv2h2)
    return c1 - c0


@nb.njit(cache=True)
def _fold_env_steps(e, upto, y, yn, m, s, env_folded, env_bound, sel_x, sel_xn, sel_off, inv2h2, prune, row, buf):
    """Fold selected structures env_folded[e]..upto-1 into environment e; returns pairs."""
    pairs = 0
    for t in range(env_folded[e], upto):
        pairs += _fold_env(e, y, yn, m, s, sel_x, sel_xn, sel_off[t], sel_off[t + 1], inv2h2, prune, row, buf)
    if upto > env_folded[e]:
        env_folded[e] = upto
        env_bound[e] = m[e] * inv2h2 - math.log(s[e])
    return pairs


@nb.njit(cache=True)
def _top_env(env_bound, a, b):
    top = a
    for e in range(a + 1, b):
        if env_bound[e] > env_bound[top]:
            top = e
    return top


@nb.njit(cache=True)
def _structure_step(c, limit, env_off, y, yn, m, s, env_folded, env_bound, sel_x, sel_xn, sel_off, n_sel, inv2h2,
                    prune, entropies, st_bound, st_folded, row, buf):
    """One unit of lazy work on structure c; returns pairs evaluated.

    The environment with the largest bound folds the next selected structures (FOLD_CHUNK, then
    twice as many each time) until its bound falls below the runner-up (the next environment of c, or ``limit``, the best
    other structure's score bound) or it is fully folded. Bounds fall as sums grow; a partial sum
    is still an upper bound, and folding in selection order keeps every state deterministic.
    When the top environment is fully folded, any other environment whose bound is within the
    tie band of it folds one structure too; when none is left, the score is exact and
    ``st_folded[c]`` becomes ``n_sel``. ``st_bound[c]`` is updated either way.
    """
    a = env_off[c]
    b = env_off[c + 1]
    pairs = 0
    top = a
    second = -np.inf
    for e in range(a + 1, b):
        v = env_bound[e]
        if v > env_bound[top]:
            second = env_bound[top]
            top = e
        elif v > second:
            second = v
    if env_folded[top] < n_sel:
        thr = max(second, limit - entropies[c])
        chunk = FOLD_CHUNK
        while True:
            pairs += _fold_env_steps(top, min(n_sel, env_folded[top] + chunk), y, yn, m, s, env_folded, env_bound,
                                     sel_x, sel_xn, sel_off, inv2h2, prune, row, buf)
            if env_folded[top] >= n_sel or env_bound[top] < thr:
                break
            chunk *= 2
    else:
        f = env_bound[top]
        band = f - TIE_BAND * max(1.0, abs(f))
        for e in range(a, b):
            if env_folded[e] < n_sel and env_bound[e] >= band:
                pairs += _fold_env_steps(e, env_folded[e] + 1, y, yn, m, s, env_folded, env_bound, sel_x, sel_xn,
                                         sel_off, inv2h2, prune, row, buf)
        if pairs == 0:
            st_folded[c] = n_sel
    st_bound[c] = env_bound[_top_env(env_bound, a, b)] + entropies[c]
    return pairs


@nb.njit(cache=True)
def _refresh_full(c, env_off, y, yn, m, s, env_folded, env_bound, sel_x, sel_xn, sel_off, n_sel, inv2h2, prune,
                  entropies, st_bound, st_folded, row, buf):
    """Eager: fold every environment of structure c up to n_sel; exact score."""
    pairs = 0
    for e in range(env_off[c], env_off[c + 1]):
        pairs += _fold_env_steps(e, n_sel, y, yn, m, s, env_folded, env_bound, sel_x, sel_xn, sel_off, inv2h2,
                                 prune, row, buf)
    st_bound[c] = env_bound[_top_env(env_bound, env_off[c], env_off[c + 1])] + entropies[c]
    st_folded[c] = n_sel
    return pairs


@nb.njit(cache=True, inline="always")
def _before(bound, p, q):
    """Heap order: higher score first, then the lower index."""
    return bound[p] > bound[q] or (bound[p] == bound[q] and p < q)


@nb.njit(cache=True)
def _sift_down(heap, n, i, bound):
    while True:
        left = 2 * i + 1
        if left >= n:
            return
        best = left
        right = left + 1
        if right < n and _before(bound, heap[right], heap[left]):
            best = right
        if _before(bound, heap[best], heap[i]):
            heap[i], heap[best] = heap[best], heap[i]
            i = best
        else:
            return


@nb.njit(cache=True)
def heap_build(heap, n, bound):
    """Turn heap[:n] (structure indices) into a max-heap on ``bound`` (ties: lower index first)."""
    for i in range(n // 2 - 1, -1, -1):
        _sift_down(heap, n, i, bound)


@nb.njit(cache=True)
def heap_pop(heap, n, bound):
    """Remove the top; returns the new size."""
    n -= 1
    heap[0] = heap[n]
    _sift_down(heap, n, 0, bound)
    return n


@nb.njit(cache=True)
def _collect_band(heap, n, bound, band, out, stack):
    """Heap positions whose bound ≥ band (a subtree at the top) into out, sorted; returns count."""
    cnt = 0
    sp = 0
    if n > 0 and bound[heap[0]] >= band:
        stack[0] = 0
        sp = 1
    while sp > 0:
        sp -= 1
        i = stack[sp]
        out[cnt] = i
        cnt += 1
        for ch in (2 * i + 1, 2 * i + 2):
            if ch < n and bound[heap[ch]] >= band:
                stack[sp] = ch
                sp += 1
    out[:cnt].sort()
    return cnt


@nb.njit(cache=True)
def lazy_best(heap, n, env_off, y, yn, m, s, env_folded, env_bound, sel_x, sel_xn, sel_off, n_sel, inv2h2,
              prune_d2, entropies, st_bound, st_folded, scratch):
    """The best live structure of this rank (heap top) with an exact, up-to-date score.

    Args:
        heap: (n_local,) int64 structure indices, heap[:n] the live ones, ordered on st_bound.
        env_off (n_local + 1,), y (n_env, d) centred, yn (n_env,): the local environments.
        m, s, env_folded, env_bound: (n_env,) per-environment states, fold counts, δH bounds.
        sel_x (rows, d), sel_xn (rows,), sel_off (n_sel + 1,): selected environments (centred).
        entropies, st_bound, st_folded: (n_local,) H(S), score bounds, fold counts.
        scratch: (2·n_local,) int64 work space.

    Returns:
        (local index or -1 when none is left, kernel pairs evaluated).
    """
    prune = min(prune_d2, BIG)
    row = np.empty(COL_BLOCK)
    buf = np.empty(COL_BLOCK)
    half = scratch.shape[0] // 2
    pos = scratch[:half]
    stack = scratch[half:]
    pairs = 0
    while n > 0:
        c = heap[0]
        if st_folded[c] < n_sel:
            limit = -np.inf
            if n > 1:
                limit = st_bound[heap[1]]
            if n > 2 and st_bound[heap[2]] > limit:
                limit = st_bound[heap[2]]
            pairs += _structure_step(c, limit, env_off, y, yn, m, s, env_folded, env_bound, sel_x, sel_xn, sel_off, n_sel,
                                     inv2h2, prune, entropies, st_bound, st_folded, row, buf)
            _sift_down(heap, n, 0, st_bound)
            continue
        f = st_bound[c]
        band = f - TIE_BAND * max(1.0, abs(f))
        cnt = _collect_band(heap, n, st_bound, band, pos, stack)
        stale = 0
        for k in range(cnt - 1, -1, -1):  # deepest first, so every sift sees heap-ordered subtrees
            p = pos[k]
            q = heap[p]
            if st_folded[q] < n_sel:
                pairs += _structure_step(q, -np.inf, env_off, y, yn, m, s, env_folded, env_bound, sel_x, sel_xn, sel_off,
                                         n_sel, inv2h2, prune, entropies, st_bound, st_folded, row, buf)
                _sift_down(heap, n, p, st_bound)
                stale += 1
        if stale == 0:
            return heap[0], pairs
    return -1, pairs


@nb.njit(parallel=True, cache=True)
def refresh_all(cands, env_off, y, yn, m, s, env_folded, env_bound, sel_x, sel_xn, sel_off, n_sel, inv2h2,
                prune_d2, entropies, st_bound, st_folded):
    """Eager refresh of every environment of the structures ``cands`` (parallel); returns pairs."""
    prune = min(prune_d2, BIG)
    pairs = np.zeros(cands.shape[0], dtype=np.int64)
    for k in nb.prange(cands.shape[0]):
        row = np.empty(COL_BLOCK)
        buf = np.empty(COL_BLOCK)
        pairs[k] = _refresh_full(cands[k], env_off, y, yn, m, s, env_folded, env_bound, sel_x, sel_xn, sel_off,
                                 n_sel, inv2h2, prune, entropies, st_bound, st_folded, row, buf)
    return pairs.sum()


@nb.njit(parallel=True, cache=True)
def structure_entropies(y, env_off, inv2h2, prune_d2):
    """H(S) = log n − (1/n) Σ_i log Σ_j K(y_i, y_j) of each structure's own environments.

    Args: y (n_env, d) float64, env_off (n_struct + 1,) int64, inv2h2 = 1/(2h²), prune_d2.
    Returns (n_struct,) float64 nats. Each structure is computed on its own (deterministic).
    """
    n = env_off.shape[0] - 1
    out = np.empty(n)
    prune = min(prune_d2, BIG)
    for c in nb.prange(n):
        a = env_off[c]
        b = env_off[c + 1]
        na = b - a
        # centre each structure on its own mean: distances within it lose no digits to
        # cancellation however far it lies from the common centre
        ys = y[a:b].copy()
        mu = np.zeros(ys.shape[1])
        for i in range(na):
            mu += ys[i]
        mu /= na
        for i in range(na):
            ys[i] -= mu
        yns = np.empty(na)
        for i in range(na):
            yns[i] = np.dot(ys[i], ys[i])
        m = np.full(na, np.inf)
        s = np.zeros(na)
        row = np.empty(COL_BLOCK)
        buf = np.empty(COL_BLOCK)
        acc = 0.0
        for e in range(na):
            _fold_env(e, ys, yns, m, s, ys, yns, 0, na, inv2h2, prune, row, buf)
            acc += -m[e] * inv2h2 + math.log(s[e])
        out[c] = math.log(na) - acc / na
    return out
