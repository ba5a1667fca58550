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


def _fraction_below(comm, y_local, x_local, h, eps, **kw) -> float:
    """Fraction of the queries (all ranks) with δH(y | X) < eps."""
    from ..distributed.drivers import distributed_logsum

    dh = -distributed_logsum(comm, y_local, x_local, h, **kw)[:, 0]
    below = int(comm.reduce_sum(int(np.count_nonzero(dh < eps))))
    n = int(comm.reduce_sum(int(dh.size)))
    if n == 0:
        raise ValueError("a dataset has no environments")
    return below / n


def overlap_matrix(comm, sets, h: float = DEFAULT_BANDWIDTH, eps: float = DEFAULT_OVERLAP_EPS, **kw) -> np.ndarray:
    """(k, k) float64: entry [i, j] is the overlap of dataset i on dataset j, the fraction of
    i's environments with δH(y | X_j) < eps (1 on the diagonal for eps > 0). ``sets``: this
    rank's share of each dataset ((n_i, d) arrays). Collective; ``kw``: ``ref_memory``,
    ``threads`` (as ``distributed_logsum``)."""
    k = len(sets)
    out = np.empty((k, k))
    for i in range(k):
        for j in range(k):
            out[i, j] = _fraction_below(comm, sets[i], sets[j], h, eps, **kw)
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
