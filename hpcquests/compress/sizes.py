"""Selection sizes: counts or fractions of the dataset, validated once for every method."""

from __future__ import annotations

import math
import numbers

import numpy as np


def resolve_size(size, n: int, name: str = "size") -> int:
    """A count (int, 1 ≤ size ≤ n) or a fraction (float in (0, 1], rounded up as the reference
    does: ceil(n·f), at least 1) → a count."""
    if n <= 0:
        raise ValueError("the dataset is empty (no structures to select from)")
    if isinstance(size, (bool, np.bool_)):
        raise ValueError(f"{name} must be a count or a fraction, got {size!r}")
    if isinstance(size, numbers.Integral):
        k = int(size)
        if not 1 <= k <= n:
            raise ValueError(f"{name} = {k} is out of range: choose 1 ≤ {name} ≤ {n} (the number of structures) "
                             "or a fraction in (0, 1]")
        return k
    if isinstance(size, numbers.Real):
        f = float(size)
        if not (math.isfinite(f) and 0.0 < f <= 1.0):
            raise ValueError(f"{name} = {size!r} is out of range: a fraction must lie in (0, 1] "
                             f"(or give a count 1..{n})")
        return max(1, min(n, math.ceil(n * f - 1e-12)))
    raise ValueError(f"{name} must be a count or a fraction, got {size!r}")


def resolve_sizes(size, n: int, name: str = "size") -> list[int]:
    """One size or a list of sizes → a list of counts (same order as given)."""
    if np.ndim(size) == 0:
        return [resolve_size(size.item() if isinstance(size, np.generic) else size, n, name)]
    sizes = list(size)
    if not sizes:
        raise ValueError(f"{name}: no sizes given")
    return [resolve_size(s.item() if isinstance(s, np.generic) else s, n, name) for s in sizes]


def parse_size(text: str):
    """CLI text → int count ('50') or float fraction ('0.1', '25%')."""
    t = text.strip()
    try:
        if t.endswith("%"):
            return float(t[:-1]) / 100.0
        if any(ch in t for ch in ".eE"):
            return float(t)
        return int(t)
    except ValueError:
        raise ValueError(f"size {text!r} is neither a count (e.g. 50) nor a fraction (e.g. 0.1 or 10%)") from None
