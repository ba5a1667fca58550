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

#: Distances are compared after rounding to this many Å (the tie rule of docs/science.md §1).
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
    norms = [math.sqrt(float(cell[a] @ cell[a])) if np.isfinite(cell[a]).all() else 0.0 for a in range(3)]
    for a in periodic:
        if norms[a] < 1e-12:
            raise ValueError(f"pbc is set along axis {a} but the cell vector is zero or not finite")
        basis[a] = cell[a]
    if len(periodic) == 3:  # the common case: no completion needed, a determinant suffices
        if abs(np.linalg.det(cell)) <= 1e-10 * norms[0] * norms[1] * norms[2]:
            raise ValueError("the periodic cell vectors [0, 1, 2] are linearly dependent")
        return basis
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
    inv = np.linalg.inv(basis)
    # Perpendicular width of the cell along each axis (volume / opposite face area); a small
    # margin keeps the image set a superset.
    volume = abs(np.linalg.det(basis))
    widths = np.array([volume / _norm_cross(basis[(a + 1) % 3], basis[(a + 2) % 3]) for a in range(3)])
    reach = cutoff / widths + 1e-9
    wrap, lo, hi = _wrap_and_ranges(positions, inv, pbc.astype(np.bool_), reach)
    return _build_points(positions, wrap, lo, hi, basis)


def _norm_cross(u, v) -> float:
    x = u[1] * v[2] - u[2] * v[1]
    y = u[2] * v[0] - u[0] * v[2]
    z = u[0] * v[1] - u[1] * v[0]
    return math.sqrt(x * x + y * y + z * z)


@nb.njit(cache=True)
def _wrap_and_ranges(pos, inv, pbc, reach):
    """Integer wrap into the home cell along periodic axes, and per atom/axis the inclusive
    range of image shifts whose fractional coordinate lies within ``reach`` of [0, 1)."""
    n = pos.shape[0]
    wrap = np.zeros((n, 3), dtype=np.int64)
    lo = np.zeros((n, 3), dtype=np.int64)
    hi = np.zeros((n, 3), dtype=np.int64)
    for i in range(n):
        for a in range(3):
            if pbc[a]:
                f = pos[i, 0] * inv[0, a] + pos[i, 1] * inv[1, a] + pos[i, 2] * inv[2, a]
                w = -math.floor(f)
                wrap[i, a] = w
                f += w
                lo[i, a] = math.ceil(-reach[a] - f)
                hi[i, a] = math.floor(1.0 + reach[a] - f)
    return wrap, lo, hi


def bin_points(pts: np.ndarray, cell_size: float):
    """Sort points into cubic cells of edge >= ``cell_size``.

    Returns (order, keys, starts, dims): ``order`` (P,) sorts the points by cell key (stable),
    ``keys`` are the occupied keys ascending and ``starts`` (len(keys)+1) index into ``order``;
    dims (3,) is the grid shape (key = cx + dims[0]·(cy + dims[1]·cz)).
    """
    return _bin_points(np.ascontiguousarray(pts, dtype=np.float64), float(cell_size))


@nb.njit(cache=True)
def _bin_points(pts, cell_size):
    n = pts.shape[0]
    origin = np.zeros(3)
    extent = np.zeros(3)
    if n:
        for c in range(3):
            lo = pts[0, c]
            hi = pts[0, c]
            for i in range(n):
                lo = min(lo, pts[i, c])
                hi = max(hi, pts[i, c])
            origin[c] = lo
            extent[c] = hi - lo
    dims = np.empty(3, dtype=np.int64)
    edge = np.empty(3)
    for c in range(3):
        # at most 2**20 cells per axis so keys fit int64; coarser cells stay correct (edge >= rc)
        dims[c] = min(np.int64(math.floor(extent[c] / cell_size)) + 1, 1 << 20)
        edge[c] = max(cell_size, extent[c] / dims[c] * (1.0 + 1e-12))
    keys_all = np.empty(n, dtype=np.int64)
    for i in range(n):
        cx = min(np.int64((pts[i, 0] - origin[0]) / edge[0]), dims[0] - 1)
        cy = min(np.int64((pts[i, 1] - origin[1]) / edge[1]), dims[1] - 1)
        cz = min(np.int64((pts[i, 2] - origin[2]) / edge[2]), dims[2] - 1)
        keys_all[i] = cx + dims[0] * (cy + dims[1] * cz)
    order = np.argsort(keys_all, kind="mergesort")
    n_keys = 0
    for t in range(n):
        if t == 0 or keys_all[order[t]] != keys_all[order[t - 1]]:
            n_keys += 1
    keys = np.empty(n_keys, dtype=np.int64)
    starts = np.empty(n_keys + 1, dtype=np.int64)
    u = 0
    for t in range(n):
        kk = keys_all[order[t]]
        if t == 0 or kk != keys_all[order[t - 1]]:
            keys[u] = kk
            starts[u] = t
            u += 1
    starts[n_keys] = n
    return order.astype(np.int64), keys, starts, dims
