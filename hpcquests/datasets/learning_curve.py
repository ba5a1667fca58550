"""Learning curves and the information gap (the QUESTS paper, Fig. 3a-b and S13/S16; Methods,
"Entropy asymptotes").

H is computed for seeded random subsets of growing size: for repeat r the units (structures or
environments) are put in the order of a permutation drawn from ``numpy.random.default_rng((seed,
r))`` and the subset of size N is the first N of them, so each repeat's subsets are nested and a
curve of its own. The subsets are defined on global unit indices: the same on any number of
ranks. Each rank holds a share of the rows and takes the ones whose unit is in the subset; H of
the subset is the distributed H (``distributed_entropy_diversity``).

The fit is the Methods' f(N) = a − b·exp(−c (log N)²) by non-linear least squares
(``scipy.optimize.curve_fit``), the first three and the last three sizes dropped, on the mean
curve with each size weighted by the standard error of its mean over the repeats, so that the
parameters' standard errors come from the repeats' scatter. The information gap at size N is
a − H̄(N); its uncertainty sqrt(σ_a² + sem(N)²).
"""

from __future__ import annotations

import warnings

import numpy as np

from ..metrics import DEFAULT_BANDWIDTH

#: sizes dropped at each end before the fit (the Methods: "the first and last three points")
FIT_DROP = 3
#: fewest sizes a learning curve takes (the fit then has four points)
MIN_SIZES = 10
#: a curve whose fitted points spread less than this (relative) is flat: saturated
FLAT = 1e-12


def learning_curve_sizes(n_units: int, count: int = 12, min_size: int = 1) -> np.ndarray:
    """``count`` strictly increasing subset sizes from ``min_size`` to ``n_units``, log-spaced
    (rounded; where rounding would repeat a size the next integer is taken). (count,) int64.
    Raises ValueError where ``n_units`` has fewer than ``count`` sizes above ``min_size``."""
    if count < MIN_SIZES:
        raise ValueError(f"a learning curve needs at least {MIN_SIZES} sizes (got {count})")
    if min_size < 1:
        raise ValueError(f"the smallest size must be at least 1 (got {min_size})")
    if n_units - min_size + 1 < count:
        raise ValueError(f"{n_units} units give fewer than {count} sizes from {min_size}")
    raw = np.rint(np.geomspace(min_size, n_units, count)).astype(np.int64)
    sizes = np.empty(count, dtype=np.int64)
    for i, s in enumerate(raw):
        low = sizes[i - 1] + 1 if i else min_size
        sizes[i] = min(max(int(s), low), n_units - (count - 1 - i))
    return sizes


def subset_order(n_units: int, seed: int, repeat: int) -> np.ndarray:
    """(n_units,) int64: each unit's place in repeat ``repeat``'s order; the subset of size N of
    that repeat is the units whose place is below N."""
    perm = np.random.default_rng((int(seed), int(repeat))).permutation(n_units)
    place = np.empty(n_units, dtype=np.int64)
    place[perm] = np.arange(n_units)
    return place


def learning_curve_entropies(comm, x_local, row_start: int, offsets, sizes, *, repeats: int = 5, seed: int = 0,
                             unit: str = "structures", h: float = DEFAULT_BANDWIDTH, progress=None,
                             **kw) -> dict:
    """H of the nested random subsets, over ranks.

    Args:
        x_local: (n_local, d) float64, this rank's rows, global rows [row_start, row_start + n_local).
        offsets: (n_structures + 1,) int64 global row offsets of the structures.
        sizes: subset sizes in units (``learning_curve_sizes``).
        unit: "structures" (whole structures) or "environments" (single rows).
        progress: called with the number of subsets done (optional).
        kw: ``ref_memory``, ``threads``, ``force_ring`` (as ``distributed_logsum``).

    Returns {"entropy": (n_sizes, repeats) nats, "environments": (n_sizes, repeats) int64}.
    Collective; the same on any number of ranks (to rounding of the sums, ≤ 1e-12).
    """
    from ..distributed.drivers import distributed_entropy_diversity

    offsets = np.asarray(offsets, dtype=np.int64)
    rows = np.arange(row_start, row_start + len(x_local), dtype=np.int64)
    if unit == "structures":
        unit_of_row, n_units = np.searchsorted(offsets, rows, side="right") - 1, len(offsets) - 1
    elif unit == "environments":
        unit_of_row, n_units = rows, int(offsets[-1])
    else:
        raise ValueError(f"unit must be 'structures' or 'environments' (got {unit!r})")
    sizes = np.asarray(sizes, dtype=np.int64)
    if sizes.size == 0 or sizes[0] < 1 or sizes[-1] > n_units or np.any(np.diff(sizes) <= 0):
        raise ValueError(f"sizes must increase strictly within 1..{n_units}")
    H = np.empty((sizes.size, repeats))
    envs = np.empty((sizes.size, repeats), dtype=np.int64)
    for r in range(repeats):
        place = subset_order(n_units, seed, r)[unit_of_row]
        for k, n in enumerate(sizes):
            if n == n_units and r > 0:  # the whole set: every repeat's subset is the same
                H[k, r], envs[k, r] = H[k, 0], envs[k, 0]
                continue
            mine = x_local[place < n]
            H[k, r] = distributed_entropy_diversity(comm, mine, h, **kw)[0]
            envs[k, r] = comm.reduce_sum(int(len(mine)))
            if progress is not None:
                progress(r * sizes.size + k + 1)
    return {"entropy": H, "environments": envs}


def asymptote_curve(n, a, b, c):
    """The Methods' f(N) = a − b·exp(−c (log N)²)."""
    return a - b * np.exp(-c * np.log(np.asarray(n, dtype=np.float64)) ** 2)


def fit_asymptote(sizes, entropy, drop: int = FIT_DROP, sigma=None) -> dict | None:
    """Fit f(N) = a − b·exp(−c (log N)²) to H(N) by non-linear least squares, the first and last
    ``drop`` points left out; ``sigma`` (per size, optional): the standard errors of H, which
    weight the points and set the parameters' standard errors (absolute). Returns {"a", "b", "c",
    "a_stderr", "b_stderr", "c_stderr" (None where undetermined), "determined" (a_stderr < b / 2:
    False for a curve flat or noisy over the fitted sizes)}, or None where the fit does not
    converge. A curve flat to rounding over the fitted sizes is saturated: a is its value,
    b = c = 0 (determined, gap zero)."""
    from scipy.optimize import curve_fit

    keep = slice(drop, len(sizes) - drop)
    n = np.asarray(sizes, dtype=np.float64)[keep]
    y = np.asarray(entropy, dtype=np.float64)[keep]
    if n.size < 3:
        raise ValueError(f"the fit needs at least 3 points after dropping {drop} at each end")
    if np.ptp(y) <= FLAT * max(1.0, float(np.max(np.abs(y)))):
        # saturated (copies, or a set whose smallest subsets hold all it has): a, b and c are not
        # separately defined by a flat curve; its asymptote is its value and the gap is zero
        return {"a": float(y.mean()), "b": 0.0, "c": 0.0, "a_stderr": 0.0, "b_stderr": None, "c_stderr": None,
                "determined": True}
    if sigma is not None:
        sigma = np.asarray(sigma, dtype=np.float64)[keep]
        if not np.any(sigma > 0):
            # every repeat gave the same H (copies of one structure, say): no scatter to weight
            # by; the errors come from the residuals, as with one repeat
            sigma = None
        else:
            # a size whose repeats happen to agree must not take all the weight
            sigma = np.maximum(sigma, 0.1 * float(np.median(sigma[sigma > 0])))
    a0 = float(y.max())
    b0 = max(a0 - float(y.min()), 1e-3)
    best = None
    # the least-squares problem is not convex in c: start from several c and keep the best fit
    for c0 in np.geomspace(1e-3, 3.0, 8):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # an undetermined covariance warns: reported as None below
                p, cov = curve_fit(asymptote_curve, n, y, p0=(a0 + 0.1 * b0, b0, c0), sigma=sigma,
                                   absolute_sigma=sigma is not None,
                                   bounds=((-np.inf, 0.0, 0.0), (np.inf, np.inf, np.inf)), max_nfev=20000,
                                   xtol=1e-15, ftol=1e-15, gtol=1e-15)
        except (RuntimeError, ValueError):
            continue
        r = (asymptote_curve(n, *p) - y) / (1.0 if sigma is None else sigma)
        cost = float(np.sum(r * r))
        if best is None or cost < best[0] * (1 - 1e-12):
            best = (cost, p, cov)
    if best is None:
        return None
    _, p, cov = best
    err = np.sqrt(np.diag(cov)) if np.all(np.isfinite(cov)) else [None] * 3
    # the asymptote means something where its error is small against the rise b it bounds
    determined = err[0] is not None and bool(err[0] < 0.5 * p[1])
    return {"a": float(p[0]), "b": float(p[1]), "c": float(p[2]),
            **{f"{k}_stderr": (None if e is None else float(e)) for k, e in zip("abc", err)}, "determined": determined}


def analyse_learning_curve(sizes, entropy, drop: int = FIT_DROP) -> dict:
    """The fit and the information gap from H of the subsets ((n_sizes, repeats) nats).

    The fit is to the mean curve, each size weighted by the standard error of its mean over
    the repeats (with one repeat: unweighted, the Methods' fit). Returns {"entropy_mean",
    "entropy_std" (sample standard deviation over repeats), "entropy_sem" (its standard error),
    "fit" (or None), "asymptote" (= fit a), "asymptote_std" (= fit a_stderr), "gap" (a − H̄(N)),
    "gap_std" (sqrt(a_stderr² + sem(N)²)), "fit_per_repeat" ({"a": each repeat's own fit, None
    where it failed; "failed"})}; spreads are None with one repeat.
    """
    H = np.asarray(entropy, dtype=np.float64)
    repeats = H.shape[1]
    mean = H.mean(axis=1)
    std = H.std(axis=1, ddof=1) if repeats > 1 else None
    sem = None if std is None else std / np.sqrt(repeats)
    fit = fit_asymptote(sizes, mean, drop, sigma=sem)
    per = [fit_asymptote(sizes, H[:, r], drop) for r in range(repeats)] if repeats > 1 else []
    a = None if fit is None else fit["a"]
    a_err = None if fit is None else fit["a_stderr"]
    gap_std = None
    if a_err is not None:
        gap_std = np.sqrt(a_err ** 2 + (0.0 if sem is None else sem) ** 2) * np.ones_like(mean)
    return {
        "entropy_mean": mean.tolist(), "entropy_std": None if std is None else std.tolist(),
        "entropy_sem": None if sem is None else sem.tolist(), "fit": fit, "asymptote": a, "asymptote_std": a_err,
        "gap": None if a is None else (a - mean).tolist(), "gap_std": None if gap_std is None else gap_std.tolist(),
        "fit_per_repeat": {"a": [None if p is None else p["a"] for p in per],
                           "failed": int(sum(p is None for p in per))},
    }
