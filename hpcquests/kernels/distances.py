"""Distances between sets of environments (the FPS baseline's structure-to-structure distance)."""

from __future__ import annotations

import math

import numba as nb
import numpy as np


@nb.njit(parallel=True, cache=True)
def mean_distances(xa, xan, x, xn, offsets, active):
    """(N,) mean Euclidean distance between the rows of ``xa`` and each active structure's
    rows of ``x`` (|a|² + |b|² − 2a·b, clamped at 0, then sqrt); inactive entries are 0."""
    n = offsets.size - 1
    out = np.zeros(n)
    na = xa.shape[0]
    for s in nb.prange(n):
        if not active[s]:
            continue
        o0 = offsets[s]
        o1 = offsets[s + 1]
        g = xa @ x[o0:o1].T
        acc = 0.0
        for i in range(na):
            for j in range(o1 - o0):
                d = xan[i] + xn[o0 + j] - 2.0 * g[i, j]
                acc += math.sqrt(d) if d > 0.0 else 0.0
        out[s] = acc / (na * (o1 - o0))
    return out
