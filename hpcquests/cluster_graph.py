"""Clusters of marked atoms: connected components of the graph whose nodes are the marked atoms
and whose edges join two of them at most ``cutoff`` Å apart under the cell's periodic boundaries
(any triclinic cell). The QUESTS paper finds solid nuclei in a melt this way: the nodes are the
atoms with δH ≤ 0 against a solid reference, the cutoff 3 Å (Fig. 2f–g, Fig. S12).

Connected components, not 2-connected subgraphs: the paper's Methods say "2-connected", its main
text and Fig. S12 count connected components; a nucleus joined to another by one atom is one
solid region for nucleation statistics, and components are what every rank count can agree on
by merging through shared boundary atoms (docs/trajectory.md).
"""

from __future__ import annotations

import numpy as np


def _checked(positions, cell, pbc, mask, cutoff, ids):
    positions = np.ascontiguousarray(positions, dtype=np.float64)
    if positions.ndim != 2 or positions.shape[1] != 3:
        raise ValueError(f"positions must be an (n, 3) array, got shape {positions.shape}")
    n = positions.shape[0]
    if not np.isfinite(positions).all():
        raise ValueError(f"positions row {int(np.argmin(np.isfinite(positions).all(axis=1)))} is not finite")
    cell = np.asarray(cell, dtype=np.float64)
    if cell.shape != (3, 3) or not np.isfinite(cell).all():
        raise ValueError(f"cell must be a finite (3, 3) array of lattice vectors (rows), got shape {cell.shape}")
    pbc = np.broadcast_to(np.asarray(pbc, dtype=bool), (3,)).copy()
    mask = np.asarray(mask)
    if mask.shape != (n,) or mask.dtype != bool:
        raise ValueError(f"mask must be an (n,) = ({n},) boolean array, got {mask.dtype} {mask.shape}")
    cutoff = float(cutoff)
    if not (np.isfinite(cutoff) and cutoff > 0):
        raise ValueError(f"cutoff must be a positive distance in Å, got {cutoff!r}")
    ids = np.arange(n, dtype=np.int64) if ids is None else np.asarray(ids, dtype=np.int64)
    if ids.shape != (n,):
        raise ValueError(f"ids must be an (n,) = ({n},) integer array, got shape {ids.shape}")
    return positions, cell, pbc, mask, cutoff, ids


def cluster_edges(positions, cell, pbc, cutoff):
    """(E, 2) int64 pairs i < j of atoms at most ``cutoff`` Å apart under the periodic
    boundaries (an atom and its own image are not an edge; a pair close through several images
    appears once)."""
    from scipy.spatial import cKDTree

    from .kernels.neighbors import periodic_points

    pts, atom, _ = periodic_points(positions, cell, pbc, cutoff)
    pairs = cKDTree(pts).query_pairs(cutoff, output_type="ndarray")
    a, b = atom[pairs[:, 0]], atom[pairs[:, 1]]
    keep = a != b
    e = np.stack([np.minimum(a[keep], b[keep]), np.maximum(a[keep], b[keep])], axis=1)
    return np.unique(e, axis=0) if e.size else np.zeros((0, 2), dtype=np.int64)


def labels_by_size(sizes, smallest) -> np.ndarray:
    """Labels 1, 2, … of clusters with these sizes and smallest ids: decreasing size, then id."""
    order = np.lexsort((smallest, -np.asarray(sizes)))
    lab = np.empty(len(order), dtype=np.int64)
    lab[order] = np.arange(1, len(order) + 1)
    return lab


def canonical_labels(component, ids) -> np.ndarray:
    """Labels 1, 2, … of components (``component``: (m,) any integer label per node) by
    decreasing size, ties by the smallest id in the component."""
    comp, inverse = np.unique(component, return_inverse=True)
    smallest = np.full(comp.size, np.iinfo(np.int64).max)
    np.minimum.at(smallest, inverse, ids)
    return labels_by_size(np.bincount(inverse), smallest)[inverse]


def clusters(positions, cell, pbc, mask, cutoff: float = 3.0, *, ids=None) -> np.ndarray:
    """Cluster label of every atom: 0 for atoms not in ``mask``; 1, 2, … for the connected
    components of the marked atoms (edges: at most ``cutoff`` Å apart under the periodic
    boundaries), numbered by decreasing size, ties by the smallest atom id.

    Args:
        positions: (n, 3) float64 Cartesian positions, Å (need not be wrapped).
        cell: (3, 3) lattice vectors as rows, Å (any triclinic cell; non-periodic axes may be 0).
        pbc: (3,) bool, or one bool for all axes.
        mask: (n,) bool, the atoms that are nodes (e.g. δH ≤ ε against a solid reference).
        cutoff: edge length, Å (the paper: 3.0).
        ids: (n,) int64 atom ids for the tie rule (default 0..n−1).

    Returns:
        (n,) int64 labels. A single marked atom is a cluster of size 1.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    positions, cell, pbc, mask, cutoff, ids = _checked(positions, cell, pbc, mask, cutoff, ids)
    labels = np.zeros(positions.shape[0], dtype=np.int64)
    nodes = np.flatnonzero(mask)
    if nodes.size == 0:
        return labels
    e = cluster_edges(positions[nodes], cell, pbc, cutoff)
    m = nodes.size
    graph = coo_matrix((np.ones(len(e), dtype=np.int8), (e[:, 0], e[:, 1])), shape=(m, m))
    _, component = connected_components(graph, directed=False)
    labels[nodes] = canonical_labels(component, ids[nodes])
    return labels


def cluster_sizes(labels) -> np.ndarray:
    """(n_clusters,) sizes of clusters 1, 2, … (decreasing)."""
    labels = np.asarray(labels)
    return np.bincount(labels[labels > 0])[1:] if (labels > 0).any() else np.zeros(0, dtype=np.int64)
