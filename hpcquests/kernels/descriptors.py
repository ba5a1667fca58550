"""Numba kernels of the QUESTS descriptor (docs/science.md §1).

For each query atom the k nearest neighbours within the cutoff are selected from the cell list
with the deterministic tie rule (distance rounded to 1e-9 Å, then atom index, then image shift),
then

    x1_j = w(r_j) / r_j                                   (k values, nearest first)
    M_jl = sqrt(w_j w_l) / r_jl,  M_jj = 0, zero padded to k×k
    x2   = (1/k) · column sums of the row-sorted M, column 0 dropped, largest first.

Rows of M are sorted with a Batcher odd–even merge network applied to all rows at once: M is
symmetric, so sorting every row equals sorting every column, and one comparator then acts on
two contiguous rows with vector min/max instead of k branchy scalar sorts.
"""

from __future__ import annotations

import functools
import math
from collections import namedtuple

import numba as nb
import numpy as np


@functools.lru_cache(maxsize=None)
def sorting_network(n: int) -> np.ndarray:
    """Comparator pairs (lo, hi) of Batcher's odd–even merge sort for ``n`` inputs.

    Generated for the next power of two; comparators touching padded positions are dropped,
    which is valid because all comparators point low→high (padding acts as +inf).
    Returns an (n_comparators, 2) int64 array.
    """
    size = 1
    while size < n:
        size *= 2
    pairs = []
    p = 1
    while p < size:
        step = p
        while step >= 1:
            for j in range(step % p, size - step, 2 * step):
                for i in range(min(step, size - j - step)):
                    a, b = i + j, i + j + step
                    if a // (2 * p) == b // (2 * p) and b < n:
                        pairs.append((a, b))
            step //= 2
        p *= 2
    return np.array(pairs, dtype=np.int64).reshape(-1, 2)


@nb.njit(cache=True, inline="always")
def _key_less(d1, a1, s10, s11, s12, d2, a2, s20, s21, s22):
    if d1 != d2:
        return d1 < d2
    if a1 != a2:
        return a1 < a2
    if s10 != s20:
        return s10 < s20
    if s11 != s21:
        return s11 < s21
    return s12 < s22


@nb.njit(cache=True, fastmath={"nnan", "ninf", "nsz"})
def _network_sort_columns(M, network, ncol):
    """Sort columns 0..ncol-1 of M in place (ascending down the rows) with the comparator network."""
    for c in range(network.shape[0]):
        a = network[c, 0]
        b = network[c, 1]
        Ma = M[a]
        Mb = M[b]
        for col in range(ncol):
            x = Ma[col]
            y = Mb[col]
            Ma[col] = min(x, y)
            Mb[col] = max(x, y)


# error_model="numpy": a zero distance (coincident atoms) gives inf instead of raising from
# inside the kernel; the callers' nearest-neighbour check then names the overlapping atoms
#: A binned open-boundary point set in cell order (see ``quests_descriptors_kernel``).
BinnedSet = namedtuple("BinnedSet", "pts atom shift order keys starts dims")
#: Per-query outputs: descriptors (n, 2k−1), nearest distance, its atom, neighbour count.
DescriptorOutput = namedtuple("DescriptorOutput", "out nn_dist nn_atom n_nbrs")
#: Per-thread work arrays of ``_descriptor_one`` (sizes from k).
_Scratch = namedtuple("_Scratch", "b_dk b_atom b_shift b_idx vec r w M colsum")


@nb.njit(cache=True, error_model="numpy")
def _descriptor_one(q, cand, n_cand, points, k, cutoff, network, scratch, out_row):
    """Descriptor of point q from its candidate points. Returns (n_neighbours, r_min, atom_min)."""
    pts, atom, shift = points.pts, points.atom, points.shift
    b_dk, b_atom, b_shift, b_idx = scratch.b_dk, scratch.b_atom, scratch.b_shift, scratch.b_idx
    vec, r, w, M, colsum = scratch.vec, scratch.r, scratch.w, scratch.M, scratch.colsum
    rc2 = cutoff * cutoff
    qx = pts[q, 0]
    qy = pts[q, 1]
    qz = pts[q, 2]
    sq0 = shift[q, 0]
    sq1 = shift[q, 1]
    sq2 = shift[q, 2]
    m = 0
    for t in range(n_cand):
        c = cand[t]
        if c == q:
            continue
        dx = pts[c, 0] - qx
        dy = pts[c, 1] - qy
        dz = pts[c, 2] - qz
        d2 = dx * dx + dy * dy + dz * dz
        if d2 >= rc2:
            continue
        dk = np.int64(math.floor(math.sqrt(d2) * 1e9 + 0.5))
        ca = atom[c]
        c0 = shift[c, 0] - sq0
        c1 = shift[c, 1] - sq1
        c2 = shift[c, 2] - sq2
        if m == k and not _key_less(dk, ca, c0, c1, c2, b_dk[m - 1], b_atom[m - 1],
                                    b_shift[m - 1, 0], b_shift[m - 1, 1], b_shift[m - 1, 2]):
            continue
        pos = m if m < k else k - 1
        while pos > 0 and _key_less(dk, ca, c0, c1, c2, b_dk[pos - 1], b_atom[pos - 1],
                                    b_shift[pos - 1, 0], b_shift[pos - 1, 1], b_shift[pos - 1, 2]):
            b_dk[pos] = b_dk[pos - 1]
            b_atom[pos] = b_atom[pos - 1]
            b_shift[pos, 0] = b_shift[pos - 1, 0]
            b_shift[pos, 1] = b_shift[pos - 1, 1]
            b_shift[pos, 2] = b_shift[pos - 1, 2]
            b_idx[pos] = b_idx[pos - 1]
            pos -= 1
        b_dk[pos] = dk
        b_atom[pos] = ca
        b_shift[pos, 0] = c0
        b_shift[pos, 1] = c1
        b_shift[pos, 2] = c2
        b_idx[pos] = c
        if m < k:
            m += 1

    inv_rc2 = 1.0 / rc2
    for j in range(m):
        c = b_idx[j]
        ex = pts[c, 0] - qx
        ey = pts[c, 1] - qy
        ez = pts[c, 2] - qz
        vec[0, j] = ex
        vec[1, j] = ey
        vec[2, j] = ez
        rr = math.sqrt(ex * ex + ey * ey + ez * ez)
        r[j] = rr
        z = 1.0 - rr * rr * inv_rc2
        w[j] = z  # sqrt(w(r)) = 1 - (r/rc)^2 >= 0 inside the cutoff; M needs only sqrt(w)
        out_row[j] = z * z / rr
    for j in range(m, k):
        out_row[j] = 0.0

    for j in range(k):
        for l in range(k):
            M[j, l] = 0.0
    # upper triangle row by row (contiguous, vectorisable), then mirrored
    for j in range(m):
        vxj = vec[0, j]
        vyj = vec[1, j]
        vzj = vec[2, j]
        wj = w[j]
        Mj = M[j]
        for l in range(j + 1, m):
            ex = vxj - vec[0, l]
            ey = vyj - vec[1, l]
            ez = vzj - vec[2, l]
            Mj[l] = wj * w[l] / math.sqrt(ex * ex + ey * ey + ez * ez)
    for j in range(m):
        for l in range(j + 1, m):
            M[l, j] = M[j, l]
    # Sort every row of M (= every column, M is symmetric) with the network, columns < m only:
    # columns >= m are all zero and sort to zeros.
    _network_sort_columns(M, network, m)
    for s in range(k):
        acc = 0.0
        for col in range(m):
            acc += M[s, col]
        colsum[s] = acc
    inv_k = 1.0 / k
    for t in range(k - 1):
        out_row[k + t] = colsum[k - 1 - t] * inv_k
    if m > 0:
        return m, r[0], b_atom[0]
    return 0, np.inf, np.int64(-1)


@nb.njit(cache=True, nogil=True)
def _cell_descriptors(u, points, q_lo, q_hi, k, cutoff, network, res):
    """Descriptors of the query points (original index in [q_lo, q_hi)) in occupied cell ``u``;
    results go to row (index − q_lo) of ``res`` (see quests_descriptors_kernel)."""
    order, keys, starts, dims = points.order, points.keys, points.starts, points.dims
    n_cells = keys.shape[0]
    dx = dims[0]
    dy = dims[1]
    dz = dims[2]
    s0 = starts[u]
    s1 = starts[u + 1]
    has_query = False
    for t in range(s0, s1):
        if q_lo <= order[t] < q_hi:
            has_query = True
            break
    if not has_query:
        return
    key = keys[u]
    cx = key % dx
    cy = (key // dx) % dy
    cz = key // (dx * dy)
    # candidates: the points of the 27 neighbouring cells (contiguous runs in cell order)
    n_cand = 0
    lo_idx = np.empty(27, dtype=np.int64)
    hi_idx = np.empty(27, dtype=np.int64)
    nb_cells = 0
    for ox in range(-1, 2):
        x = cx + ox
        if x < 0 or x >= dx:
            continue
        for oy in range(-1, 2):
            y = cy + oy
            if y < 0 or y >= dy:
                continue
            for oz in range(-1, 2):
                z = cz + oz
                if z < 0 or z >= dz:
                    continue
                nkey = x + dx * (y + dy * z)
                pos = np.searchsorted(keys, nkey)
                if pos < n_cells and keys[pos] == nkey:
                    lo_idx[nb_cells] = starts[pos]
                    hi_idx[nb_cells] = starts[pos + 1]
                    n_cand += starts[pos + 1] - starts[pos]
                    nb_cells += 1
    cand = np.empty(n_cand, dtype=np.int64)
    p = 0
    for c in range(nb_cells):
        for t in range(lo_idx[c], hi_idx[c]):
            cand[p] = t
            p += 1
    scratch = _Scratch(np.empty(k, dtype=np.int64), np.empty(k, dtype=np.int64), np.empty((k, 3), dtype=np.int64),
                       np.empty(k, dtype=np.int64), np.empty((3, k)), np.empty(k), np.empty(k), np.empty((k, k)),
                       np.empty(k))
    for t in range(s0, s1):
        q = order[t] - q_lo
        if q < 0 or order[t] >= q_hi:
            continue
        m, rmin, amin = _descriptor_one(t, cand, n_cand, points, k, cutoff, network, scratch, res.out[q])
        res.nn_dist[q] = rmin
        res.nn_atom[q] = amin
        res.n_nbrs[q] = m


@nb.njit(parallel=True, cache=True)
def quests_descriptors_kernel(points, q_lo, q_hi, k, cutoff, network, res):
    """QUESTS descriptors of the query points of a binned open-boundary point set, threads over cells.

    Args:
        points: the fields of ``BinnedSet`` as a plain tuple (numba types those on its fast
            dispatch path; they are named inside): pts (P, 3) float64 positions, Å; atom (P,) int64 atom indices;
            shift (P, 3) integer image shifts, all already permuted into cell order
            (``pts_sorted = pts[order]``, so a cell's candidates are contiguous in memory); order
            (P,) original point index of each sorted point; keys/starts/dims: the cell list from
            ``bin_points``. The points with original index in [q_lo, q_hi) are the queries (row
            index − q_lo of the outputs).
        k: neighbours; cutoff: Å; network: ``sorting_network(k)``.
        res: the fields of ``DescriptorOutput`` as a tuple: out (q_hi − q_lo, 2k-1) float64, written; nn_dist/nn_atom/
            n_nbrs (q_hi − q_lo,): nearest neighbour distance, its atom, and the neighbour count,
            written (for validation).
    """
    # the prange body sees arrays only (numba's parfor lowering cannot take tuples of arrays in)
    pts, atom, shift, order, keys, starts, dims = points
    out, nn_dist, nn_atom, n_nbrs = res
    for u in nb.prange(keys.shape[0]):
        _cell_descriptors(u, BinnedSet(pts, atom, shift, order, keys, starts, dims), q_lo, q_hi, k, cutoff, network,
                          DescriptorOutput(out, nn_dist, nn_atom, n_nbrs))


@nb.njit(cache=True, nogil=True)
def quests_descriptors_kernel_serial(points, q_lo, q_hi, k, cutoff, network, res):
    """The same on the calling thread, GIL released: for small structures, which are run
    concurrently over structures instead (a parallel region per tiny structure costs more
    than it saves)."""
    points = BinnedSet(points[0], points[1], points[2], points[3], points[4], points[5], points[6])
    res = DescriptorOutput(res[0], res[1], res[2], res[3])
    for u in range(points.keys.shape[0]):
        _cell_descriptors(u, points, q_lo, q_hi, k, cutoff, network, res)
