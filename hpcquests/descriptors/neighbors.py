"""Periodic images and the O(N) cell list behind the QUESTS descriptor.

The neighbour search works on an *open-boundary point set*: the atoms of a structure (wrapped
into the home cell along periodic axes) plus ghost copies of every atom whose periodic image
lies within the cutoff of the home cell. Each point carries the index of the atom it copies and
the integer image shift ``n`` such that ``point = positions[atom] + n @ cell`` with the
positions exactly as given (unwrapped). The same representation serves the halo decomposition
of large snapshots (a rank's owned atoms plus its halo), so the serial and distributed paths
share one kernel and one tie rule.

Points are binned into cubic Cartesian cells of edge >= cutoff, sorted by cell key; neighbour
cells are found by binary search in the sorted keys, so memory is O(points) even for sparse,
huge non-periodic clusters.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

#: Distances are compared after rounding to this many Å (the DESIGN tie rule).
TIE_RESOLUTION = 1e-9


def complete_cell(cell: np.ndarray, pbc: np.ndarray) -> np.ndarray:
    """Return a non-singular 3×3 basis whose periodic rows are the given lattice vectors.

    Non-periodic rows are replaced by an orthonormal completion (they do not change the
    physics; they only define fractional coordinates along the periodic axes).

    Raises ValueError if the periodic vectors are zero or linearly dependent.
    """
    cell = np.asarray(cell, dtype=np.float64).reshape(3, 3)
    pbc = np.asarray(pbc, dtype=bool).reshape(3)
    basis = np.zeros((3, 3))
    periodic = [a for a in range(3) if pbc[a]]
    for a in periodic:
        if not np.all(np.isfinite(cell[a])) or np.linalg.norm(cell[a]) < 1e-12:
            raise ValueError(f"pbc is set along axis {a} but the cell vector is zero or not finite")
        basis[a] = cell[a]
    if periodic:
        sub = cell[periodic]
        if np.linalg.matrix_rank(sub, tol=1e-10 * np.abs(sub).max()) < len(periodic):
            raise ValueError(f"the periodic cell vectors {periodic} are linearly dependent")
    # Orthonormal completion of the periodic span for the remaining rows.
    q = np.zeros((0, 3))
    if periodic:
        q, _ = np.linalg.qr(cell[periodic].T)
        q = q.T[: len(periodic)]
    filled = list(q)
    for a in range(3):
        if pbc[a]:
            continue
        for e in np.eye(3):
            v = e - sum(np.dot(e, f) * f for f in filled) if filled else e.copy()
            if np.linalg.norm(v) > 1e-6:
                v = v / np.linalg.norm(v)
                filled.append(v)
                basis[a] = v
                break
    if abs(np.linalg.det(basis)) < 1e-12:  # pragma: no cover - guarded above
        raise ValueError("cell is singular")
    return basis


@nb.njit(cache=True)
def _ghost_ranges(frac, pbc, reach):
    """Per atom and axis, the inclusive range of image shifts that can come within reach."""
    n = frac.shape[0]
    lo = np.zeros((n, 3), dtype=np.int64)
    hi = np.zeros((n, 3), dtype=np.int64)
    for i in range(n):
        for a in range(3):
            if pbc[a]:
                f = frac[i, a]
                lo[i, a] = math.ceil(-reach[a] - f)
                hi[i, a] = math.floor(1.0 + reach[a] - f)
    return lo, hi


@nb.njit(cache=True)
def _build_points(pos, wrap, lo, hi, basis):
    """Home points first (wrapped), then every ghost image inside the reach."""
    n = pos.shape[0]
    n_ghost = 0
    for i in range(n):
        c = (hi[i, 0] - lo[i, 0] + 1) * (hi[i, 1] - lo[i, 1] + 1) * (hi[i, 2] - lo[i, 2] + 1)
        n_ghost += c - 1  # the zero shift is the home point
    total = n + n_ghost
    pts = np.empty((total, 3))
    atom = np.empty(total, dtype=np.int64)
    shift = np.empty((total, 3), dtype=np.int64)
    for i in range(n):
        for a in range(3):
            shift[i, a] = wrap[i, a]
        for c in range(3):
            pts[i, c] = pos[i, c] + wrap[i, 0] * basis[0, c] + wrap[i, 1] * basis[1, c] + wrap[i, 2] * basis[2, c]
        atom[i] = i
    p = n
    for i in range(n):
        for s0 in range(lo[i, 0], hi[i, 0] + 1):
            for s1 in range(lo[i, 1], hi[i, 1] + 1):
                for s2 in range(lo[i, 2], hi[i, 2] + 1):
                    if s0 == 0 and s1 == 0 and s2 == 0:
                        continue
                    for c in range(3):
                        pts[p, c] = pts[i, c] + s0 * basis[0, c] + s1 * basis[1, c] + s2 * basis[2, c]
                    atom[p] = i
                    shift[p, 0] = wrap[i, 0] + s0
                    shift[p, 1] = wrap[i, 1] + s1
                    shift[p, 2] = wrap[i, 2] + s2
                    p += 1
    return pts, atom, shift


def periodic_points(positions: np.ndarray, cell: np.ndarray, pbc, cutoff: float):
    """Home atoms plus ghost images for one structure.

    Args:
        positions: (n, 3) float64 Cartesian positions, Å, as given (need not be wrapped).
        cell: (3, 3) lattice vectors as rows, Å.
        pbc: three booleans.
        cutoff: neighbour cutoff, Å.

    Returns:
        pts (P, 3) float64, atom (P,) int64, shift (P, 3) int64 with the first n points being
        the atoms themselves in order (wrapped into the home cell along periodic axes).
    """
    positions = np.ascontiguousarray(positions, dtype=np.float64)
    pbc = np.asarray(pbc, dtype=bool).reshape(3)
    n = positions.shape[0]
    if not pbc.any():
        return positions, np.arange(n, dtype=np.int64), np.zeros((n, 3), dtype=np.int64)
    basis = complete_cell(cell, pbc)
    frac = np.linalg.solve(basis.T, positions.T).T
    wrap = np.zeros((n, 3), dtype=np.int64)
    for a in range(3):
        if pbc[a]:
            wrap[:, a] = -np.floor(frac[:, a]).astype(np.int64)
            frac[:, a] += wrap[:, a]
    # Perpendicular width of the cell along each axis; a margin keeps the set a superset.
    volume = abs(np.linalg.det(basis))
    widths = np.array([volume / np.linalg.norm(np.cross(basis[(a + 1) % 3], basis[(a + 2) % 3])) for a in range(3)])
    reach = cutoff / widths + 1e-9
    lo, hi = _ghost_ranges(frac, pbc.astype(np.bool_), reach)
    return _build_points(positions, wrap, lo, hi, basis)


def bin_points(pts: np.ndarray, cell_size: float):
    """Sort points into cubic cells of edge ``cell_size``.

    Returns (order, keys, starts, dims, origin): ``order`` sorts the points by cell key,
    ``keys`` are the unique occupied keys (ascending) and ``starts`` (len(keys)+1) index into
    ``order``.
    """
    origin = pts.min(axis=0) if len(pts) else np.zeros(3)
    extent = (pts.max(axis=0) - origin) if len(pts) else np.zeros(3)
    # Cap each axis at 2**20 cells so keys fit int64; coarser cells stay correct (edge >= rc).
    dims = np.minimum(np.floor(extent / cell_size).astype(np.int64) + 1, 1 << 20)
    edge = np.maximum(cell_size, extent / np.maximum(dims, 1) * (1 + 1e-12))
    coords = np.minimum(((pts - origin) / edge).astype(np.int64), dims - 1)
    keys_all = coords[:, 0] + dims[0] * (coords[:, 1] + dims[1] * coords[:, 2])
    order = np.argsort(keys_all, kind="stable")
    sorted_keys = keys_all[order]
    # boundaries of runs of equal keys (already sorted: O(n), no second sort as np.unique would do)
    starts = np.flatnonzero(np.diff(sorted_keys)) + 1
    starts = np.concatenate([[0], starts, [len(sorted_keys)]]).astype(np.int64) if len(sorted_keys) else \
        np.zeros(1, dtype=np.int64)
    keys = sorted_keys[starts[:-1]]
    return order.astype(np.int64), keys.astype(np.int64), starts, dims, origin, edge
