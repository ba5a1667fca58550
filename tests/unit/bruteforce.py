"""Independent, slow, obviously-correct references for the parity tests.

Written straight from DESIGN §1 with plain numpy/scipy; shares no code with hpcquests.
"""

import math

import numpy as np
from scipy.special import logsumexp


def _image_range(cell, pbc, cutoff):
    """Inclusive shift window per axis, ±(ceil(cutoff / width) + 1) along periodic axes (width =
    perpendicular width of the cell), {0} along the others. Centred on the nearest image of a
    pair, it holds every image within the cutoff."""
    cell = np.asarray(cell, dtype=float)
    ranges = []
    for a in range(3):
        if not pbc[a]:
            ranges.append(range(0, 1))
            continue
        b, c = cell[(a + 1) % 3], cell[(a + 2) % 3]
        normal = np.cross(b, c)
        width = abs(np.dot(cell[a], normal)) / np.linalg.norm(normal)
        n = int(math.ceil(cutoff / width)) + 1
        ranges.append(range(-n, n + 1))
    return ranges


def _periodic_span_complete(cell, pbc):
    """Replace non-periodic rows by vectors completing the periodic span (only the periodic rows
    matter for images; the others only enter the width computation above)."""
    cell = np.array(cell, dtype=float)
    for a in range(3):
        if not pbc[a]:
            cell[a] = 0.0
    periodic = [a for a in range(3) if pbc[a]]
    for a in range(3):
        if pbc[a]:
            continue
        # any unit vector orthogonal to the periodic rows (and to the completed ones)
        basis = [cell[p] for p in periodic] + [cell[b] for b in range(a) if not pbc[b]]
        for e in np.eye(3):
            v = e.copy()
            for u in basis:
                if np.linalg.norm(u) > 0:
                    uu = u / np.linalg.norm(u)
                    v -= np.dot(v, uu) * uu
            if np.linalg.norm(v) > 1e-3:
                cell[a] = v / np.linalg.norm(v)
                break
    return cell


def neighbour_lists(atoms, k, cutoff):
    """Per atom: list of (key, vector, r) of every neighbour within the cutoff, sorted by the
    DESIGN tie rule (distance rounded to 1e-9 Å, atom index j, image shift n lexicographic).

    The neighbour vector is ``positions[j] + n @ cell - positions[i]`` with the positions exactly
    as given (they may lie outside the cell, unwrapped): for each pair the shift window is centred
    on the shift that brings j nearest to i along each periodic axis, then widened by
    ceil(cutoff / width) + 1 along that axis, which covers every image within the cutoff.
    """
    pos = np.asarray(atoms.positions, dtype=float)
    pbc = np.asarray(atoms.pbc, dtype=bool)
    cell = _periodic_span_complete(atoms.cell.array, pbc) if pbc.any() else np.eye(3)
    inv = np.linalg.inv(cell)
    ranges = _image_range(cell, pbc, cutoff)
    window = np.array([(a, b, c) for a in ranges[0] for b in ranges[1] for c in ranges[2]], dtype=np.int64)
    out = []
    for i in range(len(pos)):
        frac = (pos - pos[i]) @ inv
        centre = np.where(pbc, -np.round(frac), 0.0).astype(np.int64)  # (n, 3)
        entries = []
        for j in range(len(pos)):
            shifts = centre[j] + window
            vecs = pos[j] + shifts @ cell - pos[i]
            r = np.sqrt((vecs ** 2).sum(axis=1))
            for s in np.nonzero(r < cutoff)[0]:
                if j == i and not shifts[s].any():
                    continue
                key = (round(float(r[s]), 9), j, *shifts[s].tolist())
                entries.append((key, vecs[s], float(r[s])))
        entries.sort(key=lambda e: e[0])
        out.append(entries)
    return out


def brute_descriptors(atoms, k=32, cutoff=5.0):
    """(n, 2k−1) QUESTS descriptors following DESIGN §1 literally."""
    lists = neighbour_lists(atoms, k, cutoff)
    n = len(lists)
    X = np.zeros((n, 2 * k - 1))
    for i, entries in enumerate(lists):
        chosen = entries[:k]
        m = len(chosen)
        r = np.array([e[2] for e in chosen])
        vec = np.array([e[1] for e in chosen]).reshape(m, 3)
        w = (1.0 - (r / cutoff) ** 2) ** 2
        x1 = np.zeros(k)
        x1[:m] = w / r
        M = np.zeros((k, k))
        for j in range(m):
            for l in range(m):
                if j != l:
                    M[j, l] = math.sqrt(w[j] * w[l]) / np.linalg.norm(vec[j] - vec[l])
        S = np.sort(M, axis=1)
        col = S.sum(axis=0) / k
        x2 = col[1:][::-1]
        X[i] = np.concatenate([x1, x2])
    return X


def kth_gap(atoms, k=32, cutoff=5.0):
    """Per atom d_(k+1) − d_k among neighbours within the cutoff (inf if fewer than k+1)."""
    gaps = []
    for entries in neighbour_lists(atoms, k, cutoff):
        r = sorted(e[2] for e in entries)
        gaps.append(r[k] - r[k - 1] if len(r) > k else np.inf)
    return np.array(gaps)


def brute_multicomponent(atoms, k=32, cutoff=5.0, species=None):
    """[x1_all, x1_s1, ..., x2_all, x2_s1, ...]; per-species blocks on that species only."""
    symbols = np.array(atoms.get_chemical_symbols())
    species = sorted(set(symbols)) if species is None else sorted(species)
    full = brute_descriptors(atoms, k, cutoff)
    if len(species) == 1:
        return full
    x1, x2 = [full[:, :k]], [full[:, k:]]
    for sp in species:
        mask = symbols == sp
        part = np.zeros_like(full)
        if mask.any():
            part[mask] = brute_descriptors(atoms[mask], k, cutoff)
        x1.append(part[:, :k])
        x2.append(part[:, k:])
    return np.concatenate(x1 + x2, axis=1)


def _logK(y, x, h):
    d2 = ((y[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    return logsumexp(-d2 / (2.0 * h * h), axis=1)


def brute_delta_entropy(y, x, h):
    hs = np.atleast_1d(h)
    out = np.stack([-_logK(y, x, hh) for hh in hs], axis=-1)
    return out[:, 0] if np.ndim(h) == 0 else out


def brute_entropy(x, h):
    hs = np.atleast_1d(h)
    out = np.array([-np.mean(_logK(x, x, hh) - np.log(len(x))) for hh in hs])
    return float(out[0]) if np.ndim(h) == 0 else out


def brute_diversity(x, h):
    hs = np.atleast_1d(h)
    out = np.array([logsumexp(-_logK(x, x, hh)) for hh in hs])
    return float(out[0]) if np.ndim(h) == 0 else out
