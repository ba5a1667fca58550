"""hpcquests: QUESTS descriptors, entropy metrics and entropy-driven compression at HPC scale.

The public names are loaded lazily (PEP 562) so that ``import hpcquests`` does no work: numba
kernels are only compiled or loaded from cache when a function is first called.
"""

from ._version import __version__

_LAZY = {
    "get_descriptors": "hpcquests.descriptors",
    "get_descriptors_multicomponent": "hpcquests.descriptors",
    "entropy": "hpcquests.metrics",
    "delta_entropy": "hpcquests.metrics",
    "diversity": "hpcquests.metrics",
    "structure_entropies": "hpcquests.metrics",
    "overlap": "hpcquests.metrics",
    "novelty": "hpcquests.metrics",
    "efficiency": "hpcquests.metrics",
    "get_bandwidth": "hpcquests.metrics",
    "DEFAULT_BANDWIDTH": "hpcquests.metrics",
    "clusters": "hpcquests.cluster_graph",
    "threads": "hpcquests.runtime",
    "trajectory_entropy": "hpcquests.trajectory",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'hpcquests' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
