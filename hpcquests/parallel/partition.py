"""Partitioning as pure functions of (n, size, rank): no communicator, no state."""

from __future__ import annotations

import numpy as np


def _check(size, rank):
    if int(size) < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    if not 0 <= int(rank) < int(size):
        raise ValueError(f"rank must be in [0, {size}), got {rank}")


def partition(n: int, size: int, rank: int) -> tuple[int, int]:
    """Contiguous balanced block [start, stop) of ``n`` items for ``rank`` of ``size``.

    The first ``n % size`` ranks get one extra item; ranks beyond n get empty blocks.
    """
    if int(n) < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    _check(size, rank)
    n, size, rank = int(n), int(size), int(rank)
    base, extra = divmod(n, size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def weighted_partition(weights, size: int, rank: int) -> tuple[int, int]:
    """Contiguous block [start, stop) of items balancing the sum of ``weights`` (e.g. atoms per
    structure). Rank r takes the items whose weight midpoint falls in [r·W/size, (r+1)·W/size);
    every item is assigned exactly once, deterministically.
    """
    _check(size, rank)
    w = np.asarray(weights, dtype=np.float64).ravel()
    if np.any(w < 0) or not np.all(np.isfinite(w)):
        raise ValueError("weights must be finite and >= 0")
    n = w.size
    total = w.sum()
    if n == 0:
        return 0, 0
    if total == 0:
        return partition(n, size, rank)
    mid = np.cumsum(w) - 0.5 * w  # centre of each item on the [0, W) line
    bounds = np.arange(size + 1) * (total / size)
    cuts = np.searchsorted(mid, bounds, side="left")
    cuts[0], cuts[-1] = 0, n
    return int(cuts[rank]), int(cuts[rank + 1])
