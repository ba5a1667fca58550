"""Entropy-driven dataset compression ([MSC] (docs/science.md)) and its baselines.

- ``msc(descs, size, h)``: greedy MSC (lazy, distributed-ready: ``distributed_msc``),
  conditional on a reference set with ``reference=``;
- baselines in ``hpcquests.compress.baselines`` (random, k-means, mean-FPS, FPS, CCS, log-det);
- ``select(descs, method, sizes, ...)``: one entry point for every method;
- ``selection_report`` (``hpcquests.compress.report``): H, D, overlap, efficiency, force tails.

Names load lazily: importing this package does no work.
"""

_LAZY = {
    "msc": "hpcquests.compress.msc",
    "distributed_msc": "hpcquests.compress.msc",
    "GreedyResult": "hpcquests.compress.msc",
    "resolve_size": "hpcquests.compress.sizes",
    "resolve_sizes": "hpcquests.compress.sizes",
}

__all__ = list(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'hpcquests.compress' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
