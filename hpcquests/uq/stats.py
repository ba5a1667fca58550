"""Per-frame δH statistics of the scan (``distributed.statistics``) and its histogram plot.

Counts, mean, min, max and fractions above thresholds are exact (allreduce); quantiles come from
a 16,384-bin histogram over the frame's global [min, max] (the q-quantile is the smallest value v
with F(v) ≥ q, numpy's "inverted_cdf"), so they are exact to one bin width
((max − min)/16384, reported as ``quantile_resolution``). No rank ever holds all of a frame's δH.
"""

from __future__ import annotations

import numpy as np


def write_histogram_png(path, frames: list[dict], thresholds):
    """dH_hist.png: the δH histogram of every frame (log counts), thresholds marked."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    for fr in frames:
        if not fr.get("atoms"):
            continue
        h = fr["histogram"]
        edges = np.asarray(h["edges"])
        ax.stairs(np.maximum(h["counts"], 0), edges, label=f"frame {fr['frame']} (t={fr['timestep']})")
    for t in thresholds:
        ax.axvline(t, color="k", ls="--", lw=0.8)
    ax.set_yscale("log")
    ax.set_xlabel("δH (nats)")
    ax.set_ylabel("atoms")
    ax.set_title("Differential entropy per atom")
    if len(frames) <= 8:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
