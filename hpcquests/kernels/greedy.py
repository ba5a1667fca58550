"""CPU (numba) kernels of greedy MSC: per-environment running kernel sums, lazily refreshed.

MSC keeps, for every environment y of every candidate structure, the running log-sum-exp state
``(m, s)`` of Σ_{c∈C} K(y, c) over the environments C of the structures selected so far (the
state of ``hpcquests.kernels.cpu``: ``m`` the smallest squared distance seen, ``s`` the sum of
``exp(−(d² − m)/(2h²))``), so δH(y|C) = m/(2h²) − log s. A structure's score is
``max_y δH(y|C) + H(S)``.

Sums only grow as C grows, so every δH(y|C), and with it every score, only falls: a value
computed against an earlier C is an upper bound. The lazy greedy exploits this three times:

- structures sit in a max-heap of (possibly stale) score bounds and are worked on only when
  they reach the top;
- inside a structure, only environments whose bound can still keep it on top are worked on;
- an environment's bound is first lowered *cheaply*: each environment also keeps a lower bound
  of its kernel sum, the exact part folded so far plus float32 lower bounds of the terms of the
  selected structures it has not folded. A term's bound uses the r leading principal
  components of the descriptors (|y − x|² ≤ |y_r − x_r|² + (|y_t| + |x_t|)², t the trailing
  ones, exact on rotated data) and (1 − z/128)₊^128 ≤ e^(−z) instead of the exp: 4x fewer
  numbers per pair, half-width SIMD lanes, no exp (1.6 ns against ~10 ns per pair). Only an
  environment whose complete bound still tops is folded exactly (on the benchmark sets 2-5 %
  of the pairs; the rest are cheap).

A value is accepted only when no stale bound lies within a relative ``TIE_BAND`` of it, so
rounding in the last bits can never make the lazy result differ from the eager one; the cheap
bounds are upper bounds of the computed exact values to within rounding far inside that band
(``BOUND_SAFETY``, ``BOUND_SLACK_PER_DIM`` in ``compress.msc``; tested on adversarial data).

Determinism (the same picks on any number of ranks, lazy or eager, exact ties to the lowest
index) comes from computing every environment's exact value **on its own**: its state is folded
with one selected structure at a time, in selection order, by the same code, so it depends only
on the environment and the selected sequence, never on the partition, the batch or when it is
refreshed; the bounds only decide which work is done. Pruning and the exp are those of
``hpcquests.kernels.cpu`` (≤ 5e-14 in δH).
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from .cpu import BIG, PRUNE_MARGIN, _masked_expsum, _row_to_d2, prune_limit

#: Selected-structure rows per block of one environment's fold (bounds the scratch buffer).
COL_BLOCK = 2048
#: Selected structures an environment's cheap bound is extended over before it is checked
#: again (doubling while it stays above): smaller chunks evaluate fewer pairs but each call has
#: a fixed cost (state, reference rescaling, loop set-up over r + 2 field streams); the chunk
#: sizes measured are in docs/benchmarks.md ("Compression").
FOLD_CHUNK = 16
#: Relative band within which stale bounds are refreshed before a value is accepted.
TIE_BAND = 1e-10
#: Scales every float32 lower-bound increment: covers rounding in its terms and their sum
#: (≤ 2e-4 relative for a 2048-row block) and the exact sums' pruning and exp (≤ 5e-14).
BOUND_SAFETY = 1.0 - 1e-3

# Per-environment state, two 2-D arrays (one row per field, one column per environment), so
# the per-environment kernels take two arrays instead of seven:
#: ``fst`` (5, n_env) float64: M exact running minimum d², S exact sum (against M), MB, SB the
#: lower-bound state, UB the δH upper bound (exact once the environment is folded exactly).
M, S, MB, SB, UB = 0, 1, 2, 3, 4
#: ``ist`` (2, n_env) int64: F selected structures folded exactly, G covered by the bound.
F, G = 0, 1


def new_state(n_env: int):
    """(fst, ist) of ``n_env`` environments that have seen no selected structure."""
    fst = np.zeros((5, n_env))
    fst[M] = np.inf
    fst[MB] = np.inf
    fst[UB] = np.inf
    return fst, np.zeros((2, n_env), dtype=np.int64)


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
def _fold_env(e, y, yn, fst, x, xn, c0, c1, inv2h2, prune, row):
    """Fold reference rows x[c0:c1] into environment e's exact state (fst[M], fst[S]); returns
    pairs evaluated."""
    for r0 in range(c0, c1, COL_BLOCK):
        nr = min(COL_BLOCK, c1 - r0)
        _dots(y[e], x, r0, nr, row)
        rmin = _row_to_d2(yn[e], xn, r0, row, nr)
        m_old = fst[M, e]
        if rmin < m_old:
            if m_old < np.inf:
                fst[S, e] *= math.exp(-(m_old - rmin) * inv2h2)
            fst[M, e] = rmin
        mi = fst[M, e]
        # dense masked sum: blocks are one selected structure (tens of rows), and in compact
        # datasets nearly every term survives the pruning test anyway
        fst[S, e] += _masked_expsum(row, nr, mi, prune_limit(mi, prune), inv2h2)
    return c1 - c0


@nb.njit(cache=True)
def _exact_env(e, upto, y, yn, fst, ist, sel_x, sel_xn, sel_off, inv2h2, prune, row):
    """Fold selected structures ist[F, e]..upto-1 exactly into environment e, one at a time in
    selection order; the bound state becomes the exact one. Returns pairs evaluated."""
    pairs = 0
    for t in range(ist[F, e], upto):
        pairs += _fold_env(e, y, yn, fst, sel_x, sel_xn, sel_off[t], sel_off[t + 1], inv2h2, prune, row)
    if upto > ist[F, e]:
        ist[F, e] = upto
        ist[G, e] = upto
        fst[MB, e] = fst[M, e]
        fst[SB, e] = fst[S, e]
        fst[UB, e] = fst[M, e] * inv2h2 - math.log(fst[S, e])
    return pairs


#: Spare columns kept past the selected rows' bound fields: they pad the row stride off a power
#: of two, so the r + 2 field streams of one bound pass do not map to the same L1 sets (a
#: precaution; no difference measured on the benchmark sets).
LANES = 64


@nb.njit(cache=True, fastmath=True)
def _bound_d2(yb, e, xbt, r0, nr, row):
    """row[j] ← an upper bound of |y_e − x_{r0+j}|² (float32) from the leading principal components.

    With y, x rotated onto the principal axes, |y − x|² = |y_r − x_r|² + |y_t − x_t|² (r
    leading, t trailing components) and |y_t − x_t| ≤ |y_t| + |x_t|. Layout: ``yb`` is
    (n_env, r + 2) = (y_r, |y_r|² + slack, |y_t|) per environment; ``xbt`` holds the same
    fields of the selected rows transposed, (r + 2, rows + LANES), so every loop runs along
    rows in SIMD lanes. The slack covers float32 rounding. Returns the row minimum.

    Row indices are unsigned: with a signed runtime offset numba guards every access against
    negative indices, which stops LLVM vectorising (6x slower); slices would vectorise too but
    cost a reference-count round trip each.
    """
    r = yb.shape[1] - 2
    yq = yb[e, r]
    yt = yb[e, r + 1]
    n = nr
    u0 = np.uint64(r0)
    ur = np.uint64(r)
    for j in range(n):
        row[j] = yq + xbt[ur, u0 + np.uint64(j)]
    for k in range(r):
        yk = np.float32(-2.0) * yb[e, k]
        uk = np.uint64(k)
        for j in range(n):
            row[j] += yk * xbt[uk, u0 + np.uint64(j)]
    rmin = np.float32(3e38)
    ut = np.uint64(r + 1)
    for j in range(n):
        tt = yt + xbt[ut, u0 + np.uint64(j)]
        u = max(row[j], np.float32(0.0)) + tt * tt
        row[j] = u
        rmin = min(rmin, u)
    return rmin


@nb.njit(cache=True, fastmath=True)
def _lower_expsum(row, nr, mref, a):
    """Σ_j (1 − z_j/128)₊^128 with z_j = (row_j − mref)·a ≥ 0 (float32): a lower bound of
    Σ_j e^(−z_j) (log(1 − u) ≤ −u), within e^(−z²/256) of it; seven squarings, no exp.
    Terms with z > 51.2 are left out."""
    acc = np.float32(0.0)
    for j in range(nr):
        z = (row[j] - mref) * a
        u = min(np.float32(1.0) - z * np.float32(0.0078125), np.float32(1.0))
        # terms below 0.6^128 ≈ 4e-29 are dropped (still a lower bound): their squarings would
        # pass through float32 subnormals, which cost ~100 cycles each on x86
        u = u if u >= np.float32(0.6) else np.float32(0.0)
        u = u * u
        u = u * u
        u = u * u
        u = u * u
        u = u * u
        u = u * u
        u = u * u
        acc += u
    return acc


@nb.njit(cache=True)
def _float32_below(v):
    """The float32 nearest v from below (v ≥ 0 finite), as a float64."""
    f = np.float64(np.float32(v))
    if f > v:
        f = np.float64(np.float32(v - v * 1.2e-7))
    return f


@nb.njit(cache=True)
def _bound_env(e, upto, yb, fst, ist, sel_bt, sel_off, inv2h2, row):
    """Extend environment e's lower-bound sum over selected structures ist[G, e]..upto-1 (one
    vectorised float32 pass over their rows); fst[UB, e] becomes the matching upper bound of
    δH. The bound state (MB, SB) is float64 with MB kept float32-representable, so the float32
    terms are taken against exactly the same reference. Returns pairs."""
    r0 = sel_off[ist[G, e]]
    r1 = sel_off[upto]
    a32 = np.float32(inv2h2)
    mb = fst[MB, e]
    sb = fst[SB, e]
    if mb < np.inf:
        m32 = _float32_below(mb)
        if m32 < mb:
            sb *= math.exp(-(mb - m32) * inv2h2)
            mb = m32
    for c0 in range(r0, r1, COL_BLOCK):
        nr = min(COL_BLOCK, r1 - c0)
        rmin = np.float64(_bound_d2(yb, e, sel_bt, c0, nr, row))
        if rmin < mb:
            if mb < np.inf:
                sb *= math.exp(-(mb - rmin) * inv2h2)
            mb = rmin
        # the factor covers float32 rounding in the terms and their sum, and the pruning and
        # polynomial exp of the exact sums the bound must stay below
        sb += np.float64(_lower_expsum(row, nr, np.float32(mb), a32)) * BOUND_SAFETY
    fst[MB, e] = mb
    fst[SB, e] = sb
    if upto > ist[G, e]:
        ist[G, e] = upto
        fst[UB, e] = mb * inv2h2 - math.log(sb) if sb > 0.0 else np.inf
    return r1 - r0


@nb.njit(cache=True)
def _top_env(fst, a, b):
    """The environment of a..b-1 with the highest δH bound (the first on ties)."""
    top = a
    for e in range(a + 1, b):
        if fst[UB, e] > fst[UB, top]:
            top = e
    return top


@nb.njit(cache=True)
def _extend_bound(e, offset, limit, n_sel, yb, fst, ist, sel_bt, sel_off, inv2h2, row32):
    """Extend environment e's bound over the selected structures it has not seen, FOLD_CHUNK
    of them first and twice as many each time, until ``fst[UB, e] + offset`` falls below
    ``limit`` or it covers all."""
    pairs = 0
    chunk = FOLD_CHUNK
    while ist[G, e] < n_sel:
        pairs += _bound_env(e, min(n_sel, ist[G, e] + chunk), yb, fst, ist, sel_bt, sel_off, inv2h2, row32)
        if fst[UB, e] + offset < limit:
            break
        chunk *= 2
    return pairs


@nb.njit(cache=True)
def _structure_step(c, limit, n_sel, env_off, env, st, sel, structs, work, inv2h2, prune, use_bounds):
    """One unit of lazy work on structure c; adds the (exact, bound) pairs evaluated to
    ``work[2]``. Arguments as in ``lazy_best``; ``work`` is (row (COL_BLOCK,) float64, row32
    (COL_BLOCK,) float32, pairs (2,) int64).

    c can only stay above ``limit`` (the best other structure's score bound) through
    environments whose δH bound is at least limit − H(c), and each of them must fall below it
    otherwise: one sweep extends exactly those environments' cheap bounds (chunk by chunk,
    stopping when they drop below). If the top one still reaches it on a complete bound, it is
    folded exactly. When the top environment is exact, every other environment whose bound lies
    within the tie band of it is made exact too (bound first); when none is left the score is
    exact and ``st_folded[c]`` becomes ``n_sel``. ``st_bound[c]`` is updated either way.
    With no limit (−inf: c is being made exact) only the top environment's bound is extended,
    down to the runner-up's. Without ``use_bounds`` every environment that must move is folded
    exactly (the bound state is then the exact one).
    """
    y, yn, yb = env
    fst, ist = st
    sel_x, sel_xn, sel_bt, sel_off = sel
    entropies, st_bound, st_folded = structs
    row, row32, pairs = work
    a = env_off[c]
    b = env_off[c + 1]
    hc = entropies[c]
    # every test is written ub + H(c) vs limit, the very sum that becomes c's score bound: with
    # ub >= limit - H(c) instead, rounding can leave an environment "below" the limit while its
    # score ub + H(c) still equals it (an exact copy of the runner-up), and c would be worked on
    # forever without its bound moving
    if limit > -np.inf:
        for e in range(a, b):
            if fst[UB, e] + hc >= limit and ist[G, e] < n_sel:
                if use_bounds:
                    pairs[1] += _extend_bound(e, hc, limit, n_sel, yb, fst, ist, sel_bt, sel_off, inv2h2, row32)
                else:
                    pairs[0] += _exact_env(e, n_sel, y, yn, fst, ist, sel_x, sel_xn, sel_off, inv2h2, prune, row)
    top = a
    second = -np.inf
    for e in range(a + 1, b):
        v = fst[UB, e]
        if v > fst[UB, top]:
            second = fst[UB, top]
            top = e
        elif v > second:
            second = v
    if fst[UB, top] + hc >= limit:
        if use_bounds and ist[G, top] < n_sel:  # only with no limit
            pairs[1] += _extend_bound(top, 0.0, second, n_sel, yb, fst, ist, sel_bt, sel_off, inv2h2, row32)
        elif ist[F, top] < n_sel:
            pairs[0] += _exact_env(top, n_sel, y, yn, fst, ist, sel_x, sel_xn, sel_off, inv2h2, prune, row)
        elif not _exact_band(a, b, n_sel, env, st, sel, inv2h2, prune, work, use_bounds):
            st_folded[c] = n_sel
    st_bound[c] = fst[UB, _top_env(fst, a, b)] + entropies[c]


@nb.njit(cache=True)
def _exact_band(a, b, n_sel, env, st, sel, inv2h2, prune, work, use_bounds):
    """With the top environment of a..b-1 exact: make exact every other one whose bound lies
    within the tie band of it (bound first). Returns whether any was worked on."""
    y, yn, yb = env
    fst, ist = st
    sel_x, sel_xn, sel_bt, sel_off = sel
    row, row32, pairs = work
    v = fst[UB, _top_env(fst, a, b)]
    band = v - TIE_BAND * max(1.0, abs(v))
    work_done = False
    for e in range(a, b):
        if ist[F, e] < n_sel and fst[UB, e] >= band:
            work_done = True
            if use_bounds and ist[G, e] < n_sel:
                pairs[1] += _bound_env(e, n_sel, yb, fst, ist, sel_bt, sel_off, inv2h2, row32)
            if fst[UB, e] >= band:
                pairs[0] += _exact_env(e, n_sel, y, yn, fst, ist, sel_x, sel_xn, sel_off, inv2h2, prune, row)
    return work_done


@nb.njit(cache=True)
def _refresh_full(c, n_sel, env_off, env, st, sel, structs, inv2h2, prune, row):
    """Eager: fold every environment of structure c exactly up to n_sel; exact score. Returns pairs."""
    y, yn, yb = env
    fst, ist = st
    sel_x, sel_xn, sel_bt, sel_off = sel
    entropies, st_bound, st_folded = structs
    pairs = 0
    for e in range(env_off[c], env_off[c + 1]):
        pairs += _exact_env(e, n_sel, y, yn, fst, ist, sel_x, sel_xn, sel_off, inv2h2, prune, row)
    st_bound[c] = fst[UB, _top_env(fst, env_off[c], env_off[c + 1])] + entropies[c]
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
def _step_top(heap, n, n_sel, env_off, env, st, sel, structs, work, inv2h2, prune, use_bounds):
    """One structure step (``_structure_step``) on the heap top, whose limit is the best bound
    below it (heap positions 1 and 2), and the top sifted back into place."""
    st_bound = structs[1]
    limit = -np.inf
    if n > 1:
        limit = st_bound[heap[1]]
    if n > 2 and st_bound[heap[2]] > limit:
        limit = st_bound[heap[2]]
    _structure_step(heap[0], limit, n_sel, env_off, env, st, sel, structs, work, inv2h2, prune, use_bounds)
    _sift_down(heap, n, 0, st_bound)


@nb.njit(cache=True)
def lazy_best(heap, n, env_off, env, st, sel, n_sel, kernel, structs, scratch, use_bounds=True, floor=-np.inf):
    """The best live structure of this rank (heap top) with an exact, up-to-date score, or none
    when every live structure scores below ``floor``.

    Args:
        heap: (n_local,) int64 structure indices, heap[:n] the live ones, ordered on st_bound.
        env_off: (n_local + 1,) int64 environment offsets of the local structures.
        env: local environments (y (n_env, d) float64 centred, yn (n_env,) |y|², yb (n_env,
            r + 2) float32 bound fields: leading principal components, their |·|² plus slack,
            trailing-component norm).
        st: per-environment state (fst (5, n_env) float64, ist (2, n_env) int64; rows M, S,
            MB, SB, UB and F, G: see ``new_state``).
        sel: the selected environments (sel_x (rows, d), sel_xn (rows,), sel_bt (r + 2,
            rows + LANES) the bound fields transposed, sel_off (n_sel + 1,) row offsets per
            selected structure).
        structs: (entropies, st_bound, st_folded), each (n_local,): H(S), score bounds, exact
            fold counts.
        kernel: (1/(2h²), pruning distance² ``prune_d2``).
        scratch: (2·n_local,) int64 work space.
        use_bounds: lower bounds with the cheap float32 bounds first (False: exact folds only,
            for data whose float32 bound fields would overflow).
        floor: a score another rank's structure is known to reach (``compress.msc``'s
            two-round step): stop (and return -1) once the top score bound falls below it less
            the tie band, as no structure here can then win or tie.

    Returns:
        (local index or -1 when none is left, exact pairs evaluated, bound pairs evaluated).
    """
    st_bound = structs[1]
    st_folded = structs[2]
    inv2h2 = kernel[0]
    prune = min(kernel[1], BIG)
    if floor > -np.inf:
        floor -= TIE_BAND * max(1.0, abs(floor))
    work = (np.empty(COL_BLOCK), np.empty(COL_BLOCK, dtype=np.float32), np.zeros(2, dtype=np.int64))
    pairs = work[2]
    half = scratch.shape[0] // 2
    pos = scratch[:half]
    stack = scratch[half:]
    # every pass either folds or bounds at least one more (environment, selected structure)
    # pair, finishes a structure, or strictly lowers the top score bound (which only a fold can
    # raise again): a pass budget far above that count turns a future logic error into an
    # error instead of a hung job
    budget = 64 + 4 * (env[0].shape[0] * (2 * n_sel + 2) + 2 * n)
    while n > 0:
        budget -= 1
        if budget < 0:
            raise RuntimeError("lazy greedy made no progress (internal error): rerun with lazy=False")
        c = heap[0]
        if st_bound[c] < floor:
            break
        if st_folded[c] < n_sel:
            _step_top(heap, n, n_sel, env_off, env, st, sel, structs, work, inv2h2, prune, use_bounds)
            continue
        v = st_bound[c]
        band = v - TIE_BAND * max(1.0, abs(v))
        cnt = _collect_band(heap, n, st_bound, band, pos, stack)
        stale = 0
        for k in range(cnt - 1, -1, -1):  # deepest first, so every sift sees heap-ordered subtrees
            p = pos[k]
            q = heap[p]
            if st_folded[q] < n_sel:
                _structure_step(q, -np.inf, n_sel, env_off, env, st, sel, structs, work, inv2h2, prune, use_bounds)
                _sift_down(heap, n, p, st_bound)
                stale += 1
        if stale == 0:
            return heap[0], pairs[0], pairs[1]
    return -1, pairs[0], pairs[1]


@nb.njit(cache=True)
def heap_push(heap, n, c, bound):
    """Add structure c to the heap heap[:n]; returns the new size."""
    i = n
    heap[i] = c
    while i > 0:
        p = (i - 1) // 2
        if not _before(bound, heap[i], heap[p]):
            break
        heap[i], heap[p] = heap[p], heap[i]
        i = p
    return n + 1


@nb.njit(cache=True)
def settle_top(heap, n, env_off, env, st, sel, n_sel, kernel, structs, use_bounds, max_stale):
    """The exact score of this rank's top candidate when its state lags at most ``max_stale``
    selected structures behind (cheap: the exact best of the last step lags one), else -inf:
    the first round of ``compress.msc``'s two-round step, a lower bound of the step's best
    score that lets every rank stop its search there. Keeps the heap ordered. Arguments as in
    ``lazy_best``. Returns (score or -inf, exact pairs, bound pairs)."""
    st_bound = structs[1]
    st_folded = structs[2]
    if n == 0 or n_sel - st_folded[heap[0]] > max_stale:
        return -np.inf, 0, 0
    c = heap[0]
    work = (np.empty(COL_BLOCK), np.empty(COL_BLOCK, dtype=np.float32), np.zeros(2, dtype=np.int64))
    prune = min(kernel[1], BIG)
    budget = 64 + 4 * (env_off[c + 1] - env_off[c]) * (2 * n_sel + 2)  # as in lazy_best
    while st_folded[c] < n_sel:
        budget -= 1
        if budget < 0:
            raise RuntimeError("lazy greedy made no progress (internal error): rerun with lazy=False")
        _structure_step(c, -np.inf, n_sel, env_off, env, st, sel, structs, work, kernel[0], prune, use_bounds)
    _sift_down(heap, n, 0, st_bound)
    return st_bound[c], work[2][0], work[2][1]


@nb.njit(cache=True)
def look_ahead(heap, n, env_off, env, st, sel, n_sel, kernel, structs, aside, limits):
    """Work a rank can do while the other ranks finish a step: the lazy search for its *next*
    best candidates, as if its exact best (and the ones after it, up to ``aside.size``) had
    been picked. The rank whose candidate wins a step must find its next best in the following
    step, while the others, whose exact bests stand, wait; with this search done while waiting,
    that work is spread over the ranks instead of lying on one. It is the very work the lazy
    greedy does when those candidates rise to the top (each environment's value depends only on
    the selected sequence, never on when it is computed), so it changes no value.

    Exact candidates at the heap top are set aside (at most ``aside.size``), structure steps of
    ``lazy_best`` are done on the rest until ``limits`` = (steps, pairs) is reached (an exact
    pair counts as 6 cheap ones: about their cost, so a call lasts about as long whatever it
    does, and the caller tests the vote often enough), and the set-aside ones are put back.
    Arguments as in ``lazy_best``; ``aside`` (depth,) int64 scratch.
    Returns (structure steps done, exact pairs, bound pairs): 0 steps when nothing is left to do.
    """
    st_bound = structs[1]
    st_folded = structs[2]
    prune = min(kernel[1], BIG)
    work = (np.empty(COL_BLOCK), np.empty(COL_BLOCK, dtype=np.float32), np.zeros(2, dtype=np.int64))
    k = 0
    steps = 0
    pairs = work[2]
    while n > 0 and steps < limits[0] and 6 * pairs[0] + pairs[1] < limits[1]:
        c = heap[0]
        if st_folded[c] >= n_sel:
            if k == aside.shape[0]:
                break
            aside[k] = c
            k += 1
            n = heap_pop(heap, n, st_bound)
            continue
        _step_top(heap, n, n_sel, env_off, env, st, sel, structs, work, kernel[0], prune, True)
        steps += 1
    for i in range(k - 1, -1, -1):
        n = heap_push(heap, n, aside[i], st_bound)
    return steps, work[2][0], work[2][1]


@nb.njit(parallel=True, cache=True)
def refresh_all(cands, env_off, env, st, sel, n_sel, inv2h2, prune_d2, structs):
    """Eager refresh of every environment of the structures ``cands`` (parallel); returns pairs.
    Arguments as in ``lazy_best``."""
    prune = min(prune_d2, BIG)
    pairs = np.zeros(cands.shape[0], dtype=np.int64)
    for k in nb.prange(cands.shape[0]):
        row = np.empty(COL_BLOCK)
        pairs[k] = _refresh_full(cands[k], n_sel, env_off, env, st, sel, structs, inv2h2, prune, row)
    return pairs.sum()


@nb.njit(parallel=True, cache=True)
def exact_scores(cands, env_off, y, yn, sel_x, sel_xn, sel_off, inv2h2, prune_d2, entropies):
    """The lazy greedy's exact scores (bitwise: the same folds, one selected structure at a time in
    selection order) of the structures ``cands`` against every selected structure of ``sel_off``,
    each computed from scratch: max_e δH(y_e | C) + H(c). The certification of a float32 backend's
    argmax (``compress.msc._EagerPicker``). Returns (len(cands),) float64."""
    prune = min(prune_d2, BIG)
    n_sel = sel_off.shape[0] - 1
    out = np.empty(cands.shape[0])
    for k in nb.prange(cands.shape[0]):
        c = cands[k]
        a = env_off[c]
        b = env_off[c + 1]
        fst = np.zeros((5, b - a))
        fst[M] = np.inf
        fst[MB] = np.inf
        fst[UB] = np.inf
        ist = np.zeros((2, b - a), dtype=np.int64)
        row = np.empty(COL_BLOCK)
        ys = y[a:b]
        yns = yn[a:b]
        for e in range(b - a):
            _exact_env(e, n_sel, ys, yns, fst, ist, sel_x, sel_xn, sel_off, inv2h2, prune, row)
        out[k] = fst[UB, _top_env(fst, 0, b - a)] + entropies[c]
    return out


@nb.njit(parallel=True, cache=True)
def structure_entropies(y, env_off, inv2h2):
    """H(S) = log n − (1/n) Σ_i log Σ_j K(y_i, y_j) of each structure's own environments.

    Args: y (n_env, d) float64, env_off (n_struct + 1,) int64, inv2h2 = 1/(2h²).
    Returns (n_struct,) float64 nats. Each structure is computed on its own, centred on its own
    mean and pruned for its own size (``kernels.cpu.prune_exponent``), so a structure's value does
    not depend on the others, on the batch it comes in, on ranks or on threads.
    """
    n = env_off.shape[0] - 1
    out = np.empty(n)
    for c in nb.prange(n):
        a = env_off[c]
        b = env_off[c + 1]
        na = b - a
        prune = min((PRUNE_MARGIN + math.log(max(na, 1))) / inv2h2, BIG)
        # centre each structure on its own mean: distances within it lose no digits to
        # cancellation however far it lies from the origin
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
        fst = np.zeros((2, na))
        fst[M] = np.inf
        row = np.empty(COL_BLOCK)
        acc = 0.0
        for e in range(na):
            _fold_env(e, ys, yns, fst, ys, yns, 0, na, inv2h2, prune, row)
            acc += -fst[M, e] * inv2h2 + math.log(fst[S, e])
        out[c] = math.log(na) - acc / na
    return out
