"""δH statistics of a frame spread over ranks, reduced without gathering the values.

Counts, mean, min, max and fractions above thresholds are exact (allreduce); quantiles come from
a 16,384-bin histogram over the frame's global [min, max] (the q-quantile is the smallest value v
with F(v) ≥ q, numpy's "inverted_cdf"), so they are exact to one bin width
((max − min)/16384, reported as ``quantile_resolution``). No rank ever holds all of a frame's δH.
"""

from __future__ import annotations

import numpy as np

FINE_BINS = 16384
REPORT_BINS = 100
QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)


def frame_statistics(comm, dh_local: np.ndarray, thresholds) -> dict:
    """Statistics of one frame's δH spread over ranks (collective)."""
    dh = np.asarray(dh_local, dtype=np.float64).ravel()
    n = int(comm.reduce_sum(int(dh.size)))
    if n == 0:
        return {"atoms": 0}
    lo = float(comm.reduce_min(float(dh.min()) if dh.size else np.inf))
    hi = float(comm.reduce_max(float(dh.max()) if dh.size else -np.inf))
    total = float(comm.reduce_sum(float(dh.sum())))
    above = [int(comm.reduce_sum(int((dh > t).sum()))) for t in thresholds]
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ValueError(f"dH of this frame is not finite (min {lo}, max {hi})")
    # a frame whose values are all (nearly) equal — the perfect lattice at step 0 of a dump, a
    # cell smaller than the cutoff — still needs FINE_BINS distinct bin edges: the range is
    # widened to a width they resolve (64 ulps per bin at this magnitude)
    min_span = FINE_BINS * 64 * np.finfo(np.float64).eps * max(1.0, abs(lo), abs(hi))
    edges_hi = hi if hi - lo >= min_span else lo + min_span
    fine, _ = np.histogram(dh, bins=FINE_BINS, range=(lo, edges_hi))
    fine = np.asarray(comm.reduce_sum(fine.astype(np.int64)))
    width = (edges_hi - lo) / FINE_BINS
    cum = np.cumsum(fine)
    quantiles = {}
    for q in QUANTILES:
        idx = int(np.searchsorted(cum, q * n, side="left"))
        quantiles[f"p{int(round(q * 100)):02d}"] = lo + (min(idx, FINE_BINS - 1) + 0.5) * width
    report = fine.reshape(REPORT_BINS, -1).sum(axis=1) if FINE_BINS % REPORT_BINS == 0 else \
        np.histogram(np.repeat(np.arange(FINE_BINS), fine), bins=REPORT_BINS, range=(0, FINE_BINS))[0]
    return {
        "atoms": n, "mean": total / n, "min": lo, "max": hi, "quantiles": quantiles,
        "quantile_resolution": width,
        "fraction_above": {f"{t:g}": c / n for t, c in zip(thresholds, above)},
        "histogram": {"edges": np.linspace(lo, edges_hi, REPORT_BINS + 1).tolist(), "counts": report.tolist()},
    }
