"""Overlap matrices and generation novelty over ranks.

Every dataset is spread over the ranks (each rank holds its share of every dataset's
environments: stores by rows, structure files by structures). An entry of either table is a
count of environments with δH below or above ε against a reference set spread over the ranks
(``distributed.drivers.distributed_logsum``: the reference gathered, or passed around a ring),
summed over ranks: the same on any number of ranks to the last bit of the counts.
"""

from __future__ import annotations

import numpy as np

from ..metrics import DEFAULT_BANDWIDTH, DEFAULT_OVERLAP_EPS


def _below(comm, y_local, x_local, h, eps, **kw) -> np.ndarray:
    """Per-query booleans δH(y | X) < eps for this rank's queries (X spread over the ranks)."""
    from ..distributed.drivers import distributed_logsum

    return -distributed_logsum(comm, y_local, x_local, h, **kw)[:, 0] < eps


def _fraction_below(comm, y_local, x_local, h, eps, **kw) -> float:
    """Fraction of the queries (all ranks) with δH(y | X) < eps."""
    below = _below(comm, y_local, x_local, h, eps, **kw)
    n = int(comm.reduce_sum(int(below.size)))
    if n == 0:
        raise ValueError("a dataset has no environments")
    return int(comm.reduce_sum(int(np.count_nonzero(below)))) / n


def overlap_matrix(comm, sets, h: float = DEFAULT_BANDWIDTH, eps: float = DEFAULT_OVERLAP_EPS, **kw) -> np.ndarray:
    """(k, k) float64: entry [i, j] is the overlap of dataset i on dataset j, the fraction of
    i's environments with δH(y | X_j) < eps. ``sets``: this rank's share of each dataset
    ((n_i, d) arrays). Collective; ``kw``: ``ref_memory``, ``threads`` (as ``distributed_logsum``).

    The diagonal is 1 without computing it when eps > 0: an environment's own kernel term is 1,
    so δH(x | X ∋ x) ≤ 0. Each reference j is loaded (gathered or put on the ring) once, for
    the queries of every other dataset together.
    """
    k = len(sets)
    sizes = np.array([int(comm.reduce_sum(int(len(s)))) for s in sets])
    if np.any(sizes == 0):
        raise ValueError(f"dataset {int(np.argmin(sizes))} has no environments")
    out = np.eye(k) if eps > 0 else np.empty((k, k))
    for j in range(k):
        queries = [i for i in range(k) if i != j or eps <= 0]
        y = np.concatenate([np.asarray(sets[i], dtype=np.float64) for i in queries])
        below = _below(comm, y, sets[j], h, eps, **kw)
        segment = np.repeat(np.arange(len(queries)), [len(sets[i]) for i in queries])
        counts = np.bincount(segment[below], minlength=len(queries)).astype(np.int64)
        total = np.asarray(comm.reduce_sum(counts))
        for i, c in zip(queries, total):
            out[i, j] = int(c) / sizes[i]
    return out


def generation_novelty(comm, generations, h: float = DEFAULT_BANDWIDTH, eps: float = DEFAULT_OVERLAP_EPS,
                       **kw) -> list[dict]:
    """For each generation n ≥ 1 (increments of an active-learning campaign), the fraction of
    its environments that are novel (δH ≥ eps) against the union of generations 0 … n−1.
    ``generations``: this rank's share of each. Returns [{"generation", "environments",
    "reference_environments", "novelty"}]. Collective."""
    out = []
    for n in range(1, len(generations)):
        union = np.concatenate([np.asarray(g, dtype=np.float64).reshape(-1, generations[n].shape[1])
                                for g in generations[:n]])
        novelty = 1.0 - _fraction_below(comm, generations[n], union, h, eps, **kw)
        out.append({"generation": n, "environments": int(comm.reduce_sum(int(len(generations[n])))),
                    "reference_environments": int(comm.reduce_sum(int(len(union)))), "novelty": novelty})
    return out
