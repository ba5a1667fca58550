"""Clusters of marked atoms over spatial domains: the same labels as ``hpcquests.clusters`` on
any number of ranks.

Each rank holds its domain's owned atoms and a halo (``distributed.domains``; halo width ≥ the
cluster cutoff). Every atom has a global row (its line in the frame) and an id.

1. Whether a halo atom is marked is asked of a directory: the rank ``row % size`` holds the
   marked rows its owners sent it (no rank holds the frame's marks).
2. Each rank joins its marked atoms (owned and halo, periodic images of one atom being that one
   atom) at most ``cutoff`` apart and labels the local components; components get global
   numbers (rank offsets).
3. An atom seen by several ranks (owned on one, halo on others) ties their components: each rank
   sends (row, component) for every marked row it sees to the directory, which pairs the
   components listed for the same row. Only those pairs and one (size, smallest id) per
   component go to rank 0, which merges them (connected components of the component graph) and
   numbers the merged clusters by decreasing size, ties by smallest atom id — numbers that do not
   depend on the rank count.
"""

from __future__ import annotations

import numpy as np


def _to_directory(comm, rows, values):
    """Send (row, *values) rows to rank ``row % size``; returns what this rank receives, (k, 1 + v)."""
    size = comm.size
    data = np.column_stack([rows.astype(np.int64)] + [np.asarray(v, dtype=np.int64) for v in values])
    if size == 1:
        return data
    dest = data[:, 0] % size
    order = np.argsort(dest, kind="stable")
    return comm.exchange_rows(np.ascontiguousarray(data[order]), np.bincount(dest, minlength=size))


def _halo_marked(comm, marked_rows, halo_rows):
    """Whether each halo row is marked by its owner (two all-to-alls through the directory)."""
    size = comm.size
    have = np.unique(_to_directory(comm, marked_rows, [])[:, 0])
    if size == 1:
        return np.isin(halo_rows, have)
    dest = halo_rows % size
    order = np.argsort(dest, kind="stable")
    counts = np.bincount(dest, minlength=size)
    asked = comm.exchange_rows(np.ascontiguousarray(halo_rows[order].reshape(-1, 1)), counts)[:, 0]
    answer = np.isin(asked, have).astype(np.int64).reshape(-1, 1)
    back = comm.exchange_rows(answer, comm.exchange_counts(counts))[:, 0]  # in the order asked
    out = np.empty(halo_rows.size, dtype=bool)
    out[order] = back.astype(bool)
    return out


def domain_clusters(comm, pts, atom, n_owned, ids, marked, cutoff: float) -> np.ndarray:
    """Cluster labels (n_owned,) int64 of this rank's owned atoms (0: not marked).

    Args:
        pts: (P, 3) the domain's points, owned first then halo (Å, images as placed).
        atom: (P,) int64 global row of each point (owned rows ascending).
        n_owned: owned atom count. ids: (n_owned,) atom ids (the tie rule). marked: (n_owned,) bool.
        cutoff: edge length, Å (at most the halo width).
    Collective over ``comm``.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree

    atom = np.asarray(atom, dtype=np.int64)
    marked = np.asarray(marked, dtype=bool)
    node = np.concatenate([marked, _halo_marked(comm, atom[:n_owned][marked], atom[n_owned:])])
    idx = np.flatnonzero(node)
    rows, inv = np.unique(atom[idx], return_inverse=True)  # images of one atom are one node
    pairs = cKDTree(pts[idx]).query_pairs(cutoff, output_type="ndarray") if idx.size > 1 else np.zeros((0, 2), int)
    a, b = inv[pairs[:, 0]], inv[pairs[:, 1]]
    keep = a != b
    graph = coo_matrix((np.ones(int(keep.sum()), dtype=np.int8), (a[keep], b[keep])), shape=(rows.size, rows.size))
    n_comp, comp = connected_components(graph, directed=False) if rows.size else (0, np.zeros(0, np.int64))
    offset = int(sum(comm.gather_objects(int(n_comp))[:comm.rank]))
    gid = offset + comp.astype(np.int64)
    # per component: owned members and their smallest id (each atom counted by its owner only)
    owned_rows = atom[:n_owned][marked]
    pos = np.searchsorted(rows, owned_rows)
    owned_gid = gid[pos]
    count = np.bincount(comp[pos], minlength=n_comp).astype(np.int64)
    smallest = np.full(n_comp, np.iinfo(np.int64).max)
    np.minimum.at(smallest, comp[pos], np.asarray(ids, dtype=np.int64)[marked])
    # components listing the same row are one cluster: paired at the row's directory rank
    listed = _to_directory(comm, rows, [gid])
    links = np.zeros((0, 2), dtype=np.int64)
    if len(listed):
        listed = listed[np.lexsort((listed[:, 1], listed[:, 0]))]
        first = np.r_[True, listed[1:, 0] != listed[:-1, 0]]
        head = listed[np.maximum.accumulate(np.where(first, np.arange(len(listed)), 0)), 1]
        links = np.column_stack([head, listed[:, 1]])[~first]
    label_of = _merge_on_root(comm, links, count, smallest)
    out = np.zeros(n_owned, dtype=np.int64)
    out[np.flatnonzero(marked)] = label_of[owned_gid]
    return out


def _merge_on_root(comm, links, count, smallest):
    """Final label of every global component (rank 0 merges, every rank gets the table)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    from ..cluster_graph import labels_by_size

    got = comm.gather_to_root((links, count, smallest), root=0)
    table = None
    if comm.rank == 0:
        links = np.concatenate([g[0] for g in got]) if got else np.zeros((0, 2), np.int64)
        count = np.concatenate([g[1] for g in got])
        smallest = np.concatenate([g[2] for g in got])
        n = count.size
        graph = coo_matrix((np.ones(len(links), dtype=np.int8), (links[:, 0], links[:, 1])), shape=(n, n))
        _, merged = connected_components(graph, directed=False) if n else (0, np.zeros(0, np.int64))
        size = np.bincount(merged, weights=count, minlength=merged.max(initial=-1) + 1).astype(np.int64)
        low = np.full(size.size, np.iinfo(np.int64).max)
        np.minimum.at(low, merged, smallest)
        # one representative node per merged cluster, weighted by its size, for the canonical order
        table = np.zeros(n, dtype=np.int64)
        real = size > 0
        if real.any():
            reps = np.flatnonzero(real)
            lab = labels_by_size(size[reps], low[reps])
            per_cluster = np.zeros(size.size, dtype=np.int64)
            per_cluster[reps] = lab
            table = per_cluster[merged]
    return comm.broadcast(table, root=0)

