"""Baseline selection methods that MSC is compared with (docs/science.md §3, [MSC],
[CCS] (docs/science.md), [Rev-EM] (docs/science.md)).

Every method has the signature ``fn(descs, size, *, seed=0, **options) -> list[int]``:
``descs`` is a list of per-structure (n_i, d) float64 descriptor arrays, ``size`` a count (or
a fraction, see ``hpcquests.compress.sizes``); the result holds ``size`` distinct structure
indices, in selection order. All randomness comes from ``numpy.random.default_rng(seed)``,
so a method called twice with the same arguments returns the same selection.

- ``random``: a seeded permutation's first ``size`` entries (a prefix method).
- ``kmeans``: k-means (k-means++ seeding, Lloyd) on the per-structure mean descriptors with
  k = size clusters, one seeded-random member per cluster; an empty cluster is re-seeded with
  the point farthest from its centre, so the selection has exactly ``size`` structures (when
  fewer than ``size`` distinct means exist, seeded-random structures fill up).
- ``mean-fps``: farthest-point sampling on mean descriptors from a seeded random start,
  max–min criterion (the reference implementation's ``mean_fps``); ``criterion="mean"`` uses
  the largest *average* distance to the selected set instead (the paper's Algorithm 3 text).
- ``fps``: max–min farthest-point sampling over structures, the distance of two structures
  being the mean Euclidean distance over all pairs of their environments; starts from the
  highest-entropy structure (the reference's ``fps``; deterministic, ``seed`` unused).
- ``ccs``: coverage-centric coreset selection: importance score per structure (default the
  mean δH of its environments against all environments of the *other* structures, or a
  user-given score), prune the hardest fraction β, split the score range into equal-width
  strata and spread the budget evenly over them (smallest strata first, leftovers passed on).
- ``logdet``: greedy D-optimal selection: each step adds the structure that maximises
  log det(Σ_C + λI) of the environment covariance of the selection, λ = 1e-6·tr(Σ_full)/d.

Ties always go to the lowest structure index.
"""

from __future__ import annotations

import math

import numpy as np

from ..metrics import DEFAULT_BANDWIDTH

#: Methods whose size-s selection is the first s entries of a longer run (one run serves all sizes).
PREFIX_METHODS = frozenset({"random", "mean-fps", "fps", "logdet"})


def _prepare(descs, size, name="descs"):
    from .msc import stack_structures
    from .sizes import resolve_size

    x, offsets = stack_structures(descs, name)
    n = offsets.size - 1
    return x, offsets, n, resolve_size(size, n)


def _mean_descriptors(x, offsets):
    counts = np.diff(offsets).astype(np.float64)
    return np.add.reduceat(x, offsets[:-1], axis=0) / counts[:, None]


# --------------------------------------------------------------------------- random

def random_selection(descs, size, *, seed: int = 0) -> list[int]:
    """``size`` distinct structures uniformly at random (seeded); prefixes are consistent."""
    n = len(descs)
    from .sizes import resolve_size

    size = resolve_size(size, n)
    if n == 0:
        raise ValueError("descs: the dataset is empty (no structures)")
    return [int(i) for i in np.random.default_rng(seed).permutation(n)[:size]]


# --------------------------------------------------------------------------- k-means

def _kmeans_pp(points, k, rng):
    n = points.shape[0]
    centres = np.empty((k, points.shape[1]))
    centres[0] = points[rng.integers(n)]
    d2 = ((points - centres[0]) ** 2).sum(1)
    for c in range(1, k):
        total = d2.sum()
        i = int(rng.choice(n, p=d2 / total)) if total > 0 else int(rng.integers(n))
        centres[c] = points[i]
        d2 = np.minimum(d2, ((points - centres[c]) ** 2).sum(1))
    return centres


def _sq_dists(points, centres):
    d2 = (points * points).sum(1)[:, None] + (centres * centres).sum(1)[None, :] - 2.0 * points @ centres.T
    return np.maximum(d2, 0.0)


def kmeans_labels(points, k: int, *, seed: int = 0, max_iter: int = 100, tol: float = 1e-10):
    """Lloyd k-means with k-means++ seeding; no empty cluster while ≥ k distinct points exist
    (an emptied cluster takes the point farthest from its centre). Returns (labels, centres)."""
    rng = np.random.default_rng(seed)
    points = np.asarray(points, dtype=np.float64)
    centres = _kmeans_pp(points, k, rng)
    labels = np.zeros(points.shape[0], dtype=np.int64)
    for _ in range(max_iter):
        d2 = _sq_dists(points, centres)
        labels = d2.argmin(1)
        counts = np.bincount(labels, minlength=k)
        for c in np.flatnonzero(counts == 0):
            far = d2[np.arange(points.shape[0]), labels]
            j = int(far.argmax())
            if far[j] <= 0:
                break  # fewer distinct points than clusters
            counts[labels[j]] -= 1
            labels[j] = c
            counts[c] = 1
            d2[j] = 0.0
        new = np.zeros_like(centres)
        np.add.at(new, labels, points)
        nz = counts > 0
        new[nz] /= counts[nz, None]
        new[~nz] = centres[~nz]
        shift = float(((new - centres) ** 2).sum())
        centres = new
        if shift <= tol * max(float((centres ** 2).sum()), 1e-300):
            break
    return labels, centres


def kmeans_selection(descs, size, *, seed: int = 0) -> list[int]:
    """One seeded-random structure per k-means cluster of the mean descriptors, k = size."""
    x, offsets, n, size = _prepare(descs, size)
    means = _mean_descriptors(x, offsets)
    labels, _ = kmeans_labels(means, size, seed=seed)
    rng = np.random.default_rng(seed + 1)
    chosen = []
    for c in range(size):
        members = np.flatnonzero(labels == c)
        if members.size:
            chosen.append(int(members[rng.integers(members.size)]))
    if len(chosen) < size:  # fewer distinct means than clusters: fill up at random
        rest = np.setdiff1d(np.arange(n), chosen)
        chosen += [int(i) for i in rng.permutation(rest)[:size - len(chosen)]]
    return chosen


# --------------------------------------------------------------------------- mean-FPS

def mean_fps_selection(descs, size, *, seed: int = 0, criterion: str = "maxmin") -> list[int]:
    """Farthest-point sampling on mean descriptors from a seeded random start.

    criterion: 'maxmin' (the reference's mean_fps: farthest from its nearest selected point)
    or 'mean' (largest average distance to the selected points, the paper's Algorithm 3 text).
    """
    if criterion not in ("maxmin", "mean"):
        raise ValueError(f"criterion must be 'maxmin' or 'mean', got {criterion!r}")
    x, offsets, n, size = _prepare(descs, size)
    means = _mean_descriptors(x, offsets)
    start = int(np.random.default_rng(seed).integers(n))
    chosen = [start]
    taken = np.zeros(n, dtype=bool)
    taken[start] = True
    acc = np.full(n, np.inf) if criterion == "maxmin" else np.zeros(n)
    while len(chosen) < size:
        d = np.linalg.norm(means - means[chosen[-1]], axis=1)
        acc = np.minimum(acc, d) if criterion == "maxmin" else acc + d
        score = np.where(taken, -np.inf, acc)
        nxt = int(score.argmax())
        chosen.append(nxt)
        taken[nxt] = True
    return chosen


# --------------------------------------------------------------------------- FPS over structures

def fps_selection(descs, size, *, seed: int = 0, entropies=None, h: float = DEFAULT_BANDWIDTH,
                  threads=None) -> list[int]:
    """Max–min FPS over structures (mean pairwise environment distance), starting from the
    highest-entropy structure. ``entropies``: (N,) H(S_i) (computed with bandwidth h if None)."""
    from ..kernels.cpu import squared_norms
    from ..kernels.distances import mean_distances
    from ..metrics import structure_entropies
    from ..runtime import threads as thread_context

    x, offsets, n, size = _prepare(descs, size)
    if entropies is None:
        entropies = structure_entropies(x, offsets, h, threads=threads)
    entropies = np.asarray(entropies, dtype=np.float64)
    if entropies.shape != (n,):
        raise ValueError(f"entropies must have shape ({n},), got {entropies.shape}")
    xn = squared_norms(x)
    first = int(entropies.argmax())
    chosen = [first]
    active = np.ones(n, dtype=np.bool_)
    active[first] = False
    nearest = np.full(n, np.inf)
    with thread_context(threads):
        while len(chosen) < size:
            a0, a1 = offsets[chosen[-1]], offsets[chosen[-1] + 1]
            d = mean_distances(np.ascontiguousarray(x[a0:a1]), xn[a0:a1], x, xn, offsets, active)
            nearest = np.minimum(nearest, d)
            nxt = int(np.where(active, nearest, -np.inf).argmax())
            chosen.append(nxt)
            active[nxt] = False
    return chosen


# --------------------------------------------------------------------------- CCS

#: Environments per query group in ``leave_one_out_delta_entropy``.
_GROUP_ENVS = 512


def leave_one_out_delta_entropy(x, offsets, h: float = DEFAULT_BANDWIDTH, *, threads=None) -> np.ndarray:
    """(N,) mean over each structure's environments of δH(y | environments of all *other*
    structures), nats; +inf where a structure is the whole dataset. Exact log-sum-exp, never
    a difference of sums (which would cancel catastrophically for unique structures)."""
    from ..kernels.registry import CpuBackend
    from ..runtime import threads as thread_context

    be = CpuBackend()
    hs = np.array([float(h)])
    n = offsets.size - 1
    inv2h2, prune_d2 = be.reference_params(hs, x.shape[0])
    out = np.empty(n)
    s = 0
    with thread_context(threads):
        while s < n:
            # a group of consecutive structures: the rest of the data is folded once for all of
            # them, then each folds its group mates (its own rows excluded)
            e = s + 1
            while e < n and offsets[e + 1] - offsets[s] <= _GROUP_ENVS:
                e += 1
            g0, g1 = offsets[s], offsets[e]
            st = be.start(x[g0:g1], 1)
            be.fold(st, x[:g0], inv2h2, prune_d2)
            be.fold(st, x[g1:], inv2h2, prune_d2)
            for t in range(s, e):
                a, b = offsets[t], offsets[t + 1]
                sub = be.start(x[a:b], 1)
                sub.m = st.m[a - g0:b - g0].copy()
                sub.s = st.s[a - g0:b - g0].copy()
                be.fold(sub, x[g0:a], inv2h2, prune_d2)
                be.fold(sub, x[b:g1], inv2h2, prune_d2)
                with np.errstate(divide="ignore"):
                    L = be.finish(sub, inv2h2)[:, 0]
                out[t] = float(np.mean(-L)) if np.isfinite(L).all() else math.inf
            s = e
    return out


def ccs_selection(descs, size, *, seed: int = 0, scores=None, beta: float = 0.1, strata: int = 100,
                  h: float = DEFAULT_BANDWIDTH, threads=None) -> list[int]:
    """Coverage-centric coreset selection ([CCS] (docs/science.md)).

    scores: (N,) importance per structure (higher = harder); default: mean leave-one-out δH
        (``leave_one_out_delta_entropy``). beta: fraction of hardest structures pruned first
        (lowered to 1 − size/N when fewer than ``size`` would remain). strata: number of
        equal-width score intervals. Returns indices in ascending score-stratum order.
    """
    x, offsets, n, size = _prepare(descs, size)
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"beta must lie in [0, 1), got {beta}")
    if int(strata) < 1:
        raise ValueError(f"strata must be >= 1, got {strata}")
    if scores is None:
        scores = leave_one_out_delta_entropy(x, offsets, h, threads=threads)
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape != (n,):
        raise ValueError(f"scores must have shape ({n},), got {scores.shape}")
    if np.isnan(scores).any():
        raise ValueError(f"scores[{int(np.flatnonzero(np.isnan(scores))[0])}] is NaN")
    rng = np.random.default_rng(seed)
    # prune the hardest (score descending; among equal scores the highest index goes first,
    # so ties keep the lowest indices), keeping at least ``size`` structures
    n_prune = min(int(math.floor(beta * n)), n - size)
    order = np.lexsort((-np.arange(n), -scores))
    kept = np.sort(order[n_prune:])
    s = scores[kept]
    finite = np.isfinite(s)
    lo, hi = (float(s[finite].min()), float(s[finite].max())) if finite.any() else (0.0, 0.0)
    k = int(strata)
    if hi > lo:
        bins = np.clip(((np.where(finite, s, hi) - lo) / (hi - lo) * k).astype(np.int64), 0, k - 1)
    else:
        bins = np.zeros(kept.size, dtype=np.int64)
    groups = [kept[bins == b] for b in range(k)]
    groups = [g for g in groups if g.size]
    chosen = []
    budget = size
    for i, g in enumerate(sorted(groups, key=lambda g: (g.size, int(g[0])))):
        take = min(g.size, budget // (len(groups) - i))
        chosen += [int(v) for v in np.sort(rng.choice(g, take, replace=False))]
        budget -= take
    return chosen


# --------------------------------------------------------------------------- log-det (D-optimal)

def logdet_selection(descs, size, *, seed: int = 0, ridge: float | None = None, chunk: int = 256) -> list[int]:
    """Greedy D-optimal selection: maximise log det(Σ_C + λI), Σ_C the covariance of all
    environments of the selected structures, λ = ``ridge`` or 1e-6·tr(Σ_full)/d.
    Deterministic (``seed`` unused); the first pick maximises log det(Σ_S + λI) alone."""
    x, offsets, n, size = _prepare(descs, size)
    d = x.shape[1]
    centre = x.mean(0)
    xc = x - centre  # moments about the data mean: better conditioned sums
    counts = np.diff(offsets).astype(np.float64)
    sums = np.add.reduceat(xc, offsets[:-1], axis=0)
    if ridge is None:
        ridge = 1e-6 * float((xc * xc).sum()) / (x.shape[0] * d)
        ridge = ridge if ridge > 0 else 1e-12
    lam = ridge * np.eye(d)
    second = np.empty((n, d, d))
    for s in range(n):
        blk = xc[offsets[s]:offsets[s + 1]]
        second[s] = blk.T @ blk
    c_n, c_sum, c_sec = 0.0, np.zeros(d), np.zeros((d, d))
    active = np.ones(n, dtype=bool)
    chosen = []
    while len(chosen) < size:
        best, best_val = -1, -math.inf
        idx = np.flatnonzero(active)
        for a in range(0, idx.size, chunk):
            sl = idx[a:a + chunk]
            m = c_n + counts[sl]
            mu = (c_sum[None, :] + sums[sl]) / m[:, None]
            cov = (c_sec[None] + second[sl]) / m[:, None, None] - mu[:, :, None] * mu[:, None, :]
            sign, val = np.linalg.slogdet(cov + lam)
            val = np.where(sign > 0, val, -math.inf)
            j = int(val.argmax())
            if val[j] > best_val:  # strict: earlier chunks (lower indices) win ties
                best, best_val = int(sl[j]), float(val[j])
        if best < 0:
            best = int(idx[0])
        chosen.append(best)
        active[best] = False
        c_n += counts[best]
        c_sum += sums[best]
        c_sec += second[best]
    return chosen


#: name -> selection function. Each takes (descs, size) and only the keyword options in its
#: signature; an unknown option is a TypeError, never silently ignored.
METHODS = {
    "random": random_selection,
    "kmeans": kmeans_selection,
    "mean-fps": mean_fps_selection,
    "fps": fps_selection,
    "ccs": ccs_selection,
    "logdet": logdet_selection,
}
