"""Kernels of the spatial domain decomposition (``distributed.domains``): wrapping into the
home cell, the domains (and periodic image shifts) within reach of an atom, and image points
formed by the same arithmetic as ``kernels.neighbors``."""

from __future__ import annotations

import math

import numba as nb
import numpy as np


@nb.njit(cache=True)
def _wrap(pos, inv, pbc):
    """Integer wrap (into [0,1) along periodic axes) and wrapped fractional coordinates."""
    n = pos.shape[0]
    wrap = np.zeros((n, 3), dtype=np.int64)
    frac = np.empty((n, 3))
    for i in range(n):
        for a in range(3):
            f = pos[i, 0] * inv[0, a] + pos[i, 1] * inv[1, a] + pos[i, 2] * inv[2, a]
            if pbc[a]:
                w = -math.floor(f)
                wrap[i, a] = w
                f += w
            frac[i, a] = f
    return wrap, frac


@nb.njit(cache=True)
def _axis_index(f, p, lo_edge, hi_edge):
    """Domain index along one axis for fractional coordinate f (clamped for open axes)."""
    t = (f - lo_edge) / (hi_edge - lo_edge) * p
    d = np.int64(math.floor(t))
    if d < 0:
        d = 0
    if d >= p:
        d = p - 1
    return d


@nb.njit(cache=True)
def _targets(frac, pbc, shape, reach, lo_edge, hi_edge):
    """For every atom: (destination domain, image shift) pairs, owner first.

    Along a periodic axis the domain slabs are [j/p, (j+1)/p); an image with shift s lies at
    f + s and is sent to every domain whose slab expanded by ``reach`` (fractional) contains it.
    Along an open axis the slabs split [lo_edge, hi_edge] and there are no images.
    Returns (counts (n,), dest (T,), shifts (T, 3)) with T = counts.sum().
    """
    n = frac.shape[0]
    px, py = shape[0], shape[1]
    # candidate per-axis lists (domain, shift) per atom, combined as a product
    max_per_axis = 64
    counts = np.zeros(n, dtype=np.int64)
    total = 0
    for phase in range(2):
        if phase == 1:
            dest = np.empty(total, dtype=np.int64)
            shifts = np.empty((total, 3), dtype=np.int64)
            t = 0
        lists_d = np.empty((3, max_per_axis), dtype=np.int64)
        lists_s = np.empty((3, max_per_axis), dtype=np.int64)
        nlist = np.zeros(3, dtype=np.int64)
        for i in range(n):
            for a in range(3):
                p = shape[a]
                f = frac[i, a]
                own = _axis_index(f, p, lo_edge[a], hi_edge[a])
                c = 0
                lists_d[a, c] = own
                lists_s[a, c] = 0
                c += 1
                if p == 1 and not pbc[a]:
                    nlist[a] = c
                    continue
                span = hi_edge[a] - lo_edge[a]
                r = reach[a]
                smin = 0
                smax = 0
                if pbc[a]:
                    smin = -np.int64(math.ceil(r)) - 1
                    smax = np.int64(math.ceil(r)) + 1
                for s in range(smin, smax + 1):
                    g = f + s
                    for j in range(p):
                        lo = lo_edge[a] + span * j / p - r
                        hi = lo_edge[a] + span * (j + 1) / p + r
                        if g >= lo and g < hi and not (s == 0 and j == own):
                            if c >= max_per_axis:
                                raise ValueError("too many periodic images per axis for the domain grid "
                                                 "(cell much smaller than the cutoff): use fewer ranks")
                            lists_d[a, c] = j
                            lists_s[a, c] = s
                            c += 1
                nlist[a] = c
            m = 0
            for ia in range(nlist[0]):
                for ib in range(nlist[1]):
                    for ic in range(nlist[2]):
                        if phase == 1:
                            dest[t] = lists_d[0, ia] + px * (lists_d[1, ib] + py * lists_d[2, ic])
                            shifts[t, 0] = lists_s[0, ia]
                            shifts[t, 1] = lists_s[1, ib]
                            shifts[t, 2] = lists_s[2, ic]
                            t += 1
                        m += 1
            if phase == 0:
                counts[i] = m
                total += m
    return counts, dest, shifts


@nb.njit(cache=True)
def _image_points(pos, wrap, shifts, basis):
    """Coordinates of image points, with the same arithmetic as the serial point set:
    (pos + wrap·cell) first, then + shift·cell."""
    n = pos.shape[0]
    out = np.empty((n, 3))
    for i in range(n):
        for c in range(3):
            home = pos[i, c] + wrap[i, 0] * basis[0, c] + wrap[i, 1] * basis[1, c] + wrap[i, 2] * basis[2, c]
            s0 = shifts[i, 0]
            s1 = shifts[i, 1]
            s2 = shifts[i, 2]
            if s0 == 0 and s1 == 0 and s2 == 0:
                out[i, c] = home
            else:
                out[i, c] = home + s0 * basis[0, c] + s1 * basis[1, c] + s2 * basis[2, c]
    return out
