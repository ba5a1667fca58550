"""QUESTS descriptors of atomistic structures (docs/science.md §1).

``get_descriptors(frames, k=32, cutoff=5.0)`` returns one row of 2k−1 float64 values per atom;
``get_descriptors_multicomponent`` appends per-species blocks in the reference's layout.
Inputs are validated at this boundary: every error is a ``ValueError`` naming the structure and
atom at fault, never an exception from inside numba.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

DEFAULT_K = 32
DEFAULT_CUTOFF = 5.0
#: Atoms closer than this (Å) are rejected as overlapping.
MIN_DISTANCE = 0.1


def check_species(query, reference, query_name: str, reference_name: str) -> None:
    """ValueError naming both sets when ``query`` has species that ``reference`` lacks (a
    reference of other elements gives large, meaningless δH: a Cu set scoring a Ta trajectory).
    Empty sets (species unknown) pass."""
    q, r = sorted(set(query)), sorted(set(reference))
    missing = [s for s in q if s not in r]
    if q and r and missing:
        raise ValueError(f"{reference_name} has species {r} but {query_name} has {q} ({missing} not in "
                         f"{reference_name.split()[0]}): δH against other elements is meaningless")
#: Structures with fewer atoms run single-threaded, several structures at a time.
SMALL_STRUCTURE = 4096


def _as_frames(frames) -> list:
    from ase import Atoms

    if isinstance(frames, Atoms):
        return [frames]
    if frames is None:
        raise ValueError("no structures given (frames is None)")
    try:
        frames = list(frames)
    except TypeError:
        raise ValueError(f"frames must be an ase.Atoms or a list of them, got {type(frames).__name__}") from None
    if not frames:
        raise ValueError("no structures given (empty input)")
    for s, atoms in enumerate(frames):
        if not isinstance(atoms, Atoms):
            raise ValueError(f"structure {s}: expected ase.Atoms, got {type(atoms).__name__}")
    return frames


def check_parameters(k, cutoff) -> tuple[int, float]:
    """Validate k (integer >= 2) and cutoff (finite, > 0 Å)."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 2:
        raise ValueError(f"k must be an integer >= 2, got {k!r}")
    try:
        cutoff = float(cutoff)
    except (TypeError, ValueError):
        raise ValueError(f"cutoff must be a positive number of Å, got {cutoff!r}") from None
    if not np.isfinite(cutoff) or cutoff <= 0:
        raise ValueError(f"cutoff must be a positive number of Å, got {cutoff!r}")
    return int(k), cutoff


def check_structure(s: int, positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray):
    """The checks every structure passes before any kernel sees it (finite positions, a cell
    along every periodic axis); ValueError naming structure ``s`` and the atom."""
    bad = ~np.isfinite(positions).all(axis=1)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"structure {s}, atom {i}: position is not finite ({positions[i].tolist()})")
    for a in range(3):
        if pbc[a] and (not np.all(np.isfinite(cell[a])) or np.linalg.norm(cell[a]) < 1e-12):
            raise ValueError(f"structure {s}: pbc is set along axis {a} but the cell vector is zero or not finite")


def structure_descriptors(positions, cell, pbc, k: int, cutoff: float, *, structure: int = 0,
                          check_overlap: bool = True, out: np.ndarray | None = None,
                          serial: bool | None = None) -> np.ndarray:
    """Descriptors (n, 2k−1) float64 of one structure given as raw arrays (Å).

    ``out``, if given, is a C-contiguous (n, 2k−1) float64 array written in place (saves a copy
    of the whole result for million-atom structures). ``serial`` runs the kernel on the calling
    thread (default: for structures below SMALL_STRUCTURE atoms).
    """
    from ..kernels.neighbors import periodic_points

    positions = np.ascontiguousarray(positions, dtype=np.float64).reshape(-1, 3)
    cell = np.asarray(cell, dtype=np.float64).reshape(3, 3)
    pbc = np.asarray(pbc, dtype=bool).reshape(3)
    n = positions.shape[0]
    check_structure(structure, positions, cell, pbc)
    if out is None:
        out = np.empty((n, 2 * k - 1))  # the kernel writes every entry
    if n == 0:
        return out
    try:
        pts, atom, shift = periodic_points(positions, cell, pbc, cutoff)
    except ValueError as exc:
        raise ValueError(f"structure {structure}: {exc}") from None
    nn_dist, nn_atom = point_set_descriptors(pts, atom, shift, n, k, cutoff, out=out, serial=serial)
    if check_overlap:
        close = nn_dist < MIN_DISTANCE
        if close.any():
            i = int(np.argmax(close))
            j = int(nn_atom[i])
            other = "its own periodic image" if j == i else f"atom {j}"
            raise ValueError(
                f"structure {structure}: atom {i} and {other} are {nn_dist[i]:.4g} Å apart "
                f"(< {MIN_DISTANCE} Å): overlapping atoms")
        bad = ~np.isfinite(out).all(axis=1)
        if bad.any():  # two of an atom's neighbours coincide (images of one atom, or two atoms)
            i = int(np.argmax(bad))
            raise ValueError(f"structure {structure}: atom {i} has two coinciding neighbours: overlapping atoms")
    return out


class BinnedPoints:
    """An open-boundary point set binned once, for descriptors of any query range.

    Args:
        pts: (P, 3) float64 positions (Å); atom: (P,) int64 global atom index of each point (the
            tie-break key); shift: (P, 3) int64 image shift of each point relative to the
            positions as given. The set must contain every point within ``cutoff`` of a query
            (a structure's atoms plus images, or a domain's owned atoms plus its halo).
    """

    def __init__(self, pts, atom, shift, cutoff: float):
        self._build({"pts": pts, "atom": atom, "shift": shift}, cutoff)

    @classmethod
    def taking(cls, arrays: dict, cutoff: float) -> "BinnedPoints":
        """Build from a dict holding ``pts``, ``atom`` and ``shift``, popping each array once its
        cell-ordered copy exists, so the point set is never held twice (10^7-atom domains)."""
        self = cls.__new__(cls)
        self._build(arrays, cutoff)
        return self

    def _build(self, arrays: dict, cutoff: float):
        from ..kernels.neighbors import bin_points

        self.cutoff = float(cutoff)
        self.order, self.keys, self.starts, self.dims = bin_points(arrays["pts"], cutoff)
        # cell order in memory: a cell's candidates are contiguous (cache-friendly on 10^6+ atoms)
        self.pts = np.ascontiguousarray(arrays.pop("pts")[self.order])
        self.atom = np.ascontiguousarray(arrays.pop("atom")[self.order])
        self.shift = np.ascontiguousarray(arrays.pop("shift")[self.order])

    def descriptors(self, q_lo: int, q_hi: int, k: int, *, out=None, serial=None):
        """Descriptors (q_hi − q_lo, 2k−1) of the points with original index in [q_lo, q_hi).

        Returns (out, nn_dist, nn_atom): nearest-neighbour distance and atom (validation)."""
        from ..kernels.descriptors import quests_descriptors_kernel, quests_descriptors_kernel_serial, sorting_network

        n = q_hi - q_lo
        if out is None:
            out = np.empty((n, 2 * k - 1))
        nn_dist = np.full(n, np.inf)
        nn_atom = np.full(n, -1, dtype=np.int64)
        n_nbrs = np.zeros(n, dtype=np.int64)
        if n == 0:
            return out, nn_dist, nn_atom
        if serial is None:
            serial = n < SMALL_STRUCTURE
        kernel = quests_descriptors_kernel_serial if serial else quests_descriptors_kernel
        points = (self.pts, self.atom, self.shift, self.order, self.keys, self.starts, self.dims)  # BinnedSet
        kernel(points, q_lo, q_hi, k, self.cutoff, sorting_network(k), (out, nn_dist, nn_atom, n_nbrs))
        return out, nn_dist, nn_atom


def point_set_descriptors(pts, atom, shift, n_query: int, k: int, cutoff: float, *, out=None, serial=None):
    """Descriptors of the first ``n_query`` points of an open-boundary point set (see
    ``BinnedPoints``). Returns (nn_dist, nn_atom) and fills ``out`` (n_query, 2k−1)."""
    if out is None:
        out = np.empty((n_query, 2 * k - 1))
    _, nn_dist, nn_atom = BinnedPoints(pts, atom, shift, cutoff).descriptors(0, n_query, k, out=out, serial=serial)
    return nn_dist, nn_atom


def _plain(s, atoms, k, cutoff, species, out=None):
    return structure_descriptors(atoms.positions, atoms.cell.array, atoms.pbc, k, cutoff, structure=s, out=out)


def _multicomponent(s, atoms, k, cutoff, species, out=None):
    pos = atoms.positions
    full = structure_descriptors(pos, atoms.cell.array, atoms.pbc, k, cutoff, structure=s)
    if len(species) == 1:
        return full
    symbols = np.array(atoms.get_chemical_symbols())
    unknown = sorted(str(u) for u in set(symbols) - set(species))
    if unknown:
        raise ValueError(f"structure {s}: species {unknown} not in the requested species {list(species)}")
    x1 = [full[:, :k]]
    x2 = [full[:, k:]]
    for sp in species:
        mask = symbols == sp
        part = np.zeros_like(full)
        if mask.any():
            part[mask] = structure_descriptors(pos[mask], atoms.cell.array, atoms.pbc, k, cutoff,
                                               structure=s, check_overlap=False)
        x1.append(part[:, :k])
        x2.append(part[:, k:])
    return np.concatenate(x1 + x2, axis=1)


def descriptor_width(k: int, n_species: int = 1) -> int:
    """Columns of a descriptor row: 2k−1, times (n_species+1) for multicomponent (n_species > 1)."""
    return (2 * k - 1) * (n_species + 1 if n_species > 1 else 1)


def descriptors_of(frames, k: int, cutoff: float, *, first_index: int = 0, multicomponent: bool = False,
                   species: Sequence[str] | None = None, threads: int | None = None, progress=None) -> np.ndarray:
    """Descriptors of a (possibly empty) list of structures whose global index starts at
    ``first_index`` (so errors name the structure as the user numbers it). The building block
    of ``get_descriptors`` and of the distributed driver."""
    from ..runtime import threads as thread_context

    k, cutoff = check_parameters(k, cutoff)
    if multicomponent:
        species = sorted(species) if species is not None else dataset_species(frames)
        if not species:
            raise ValueError("species must name at least one element")
        width = descriptor_width(k, len(species))
        one = _multicomponent
    else:
        width = descriptor_width(k)
        one = _plain
    counts = [len(atoms) for atoms in frames]
    rows = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])
    result = np.empty((int(rows[-1]), width))

    def run(s):
        block = result[rows[s]:rows[s + 1]]
        got = one(first_index + s, frames[s], k, cutoff, species, out=block if one is _plain else None)
        if got is not block:
            block[...] = got

    with thread_context(threads) as n_threads:
        small = [s for s, c in enumerate(counts) if c < SMALL_STRUCTURE]
        if n_threads > 1 and len(small) > 1:
            # small structures: one single-threaded kernel per structure, n_threads at a time
            # (kernels release the GIL); large ones use all threads inside the kernel
            _run_concurrently(run, small, n_threads, progress, len(frames))
            done = len(small)
            for s in (s for s, c in enumerate(counts) if c >= SMALL_STRUCTURE):
                run(s)
                done += 1
                if progress is not None:
                    progress(done, len(frames))
        else:
            for s in range(len(frames)):
                run(s)
                if progress is not None:
                    progress(s + 1, len(frames))
    return result


def _run_concurrently(run, items, n_threads, progress, total):
    """run(item) for every item on a pool of n_threads threads; the first error (lowest item)
    is raised after all have finished, so errors are deterministic."""
    from concurrent.futures import ThreadPoolExecutor

    errors = {}
    done = 0
    with ThreadPoolExecutor(max_workers=n_threads) as pool:
        futures = {pool.submit(run, s): s for s in items}
        for fut in futures:
            try:
                fut.result()
            except Exception as exc:  # noqa: BLE001 - re-raised below, lowest index first
                errors[futures[fut]] = exc
            done += 1
            if progress is not None:
                progress(done, total)
    if errors:
        raise errors[min(errors)]


def get_descriptors(frames, k: int = DEFAULT_K, cutoff: float = DEFAULT_CUTOFF, *,
                    threads: int | None = None, progress=None) -> np.ndarray:
    """QUESTS descriptors of every atom of every structure.

    Args:
        frames: an ``ase.Atoms`` or a sequence of them (periodic along ``atoms.pbc`` axes only).
        k: number of nearest neighbours (>= 2).
        cutoff: neighbour cutoff rc in Å (> 0).
        threads: numba threads for this call (None: all available); restored afterwards.
        progress: optional callable(done_structures, total_structures).

    Returns:
        (n_atoms_total, 2k−1) float64 array, rows in structure then atom order.
    """
    return descriptors_of(_as_frames(frames), k, cutoff, threads=threads, progress=progress)


def dataset_species(frames: Iterable) -> list[str]:
    """Sorted unique chemical symbols of a dataset."""
    symbols = set()
    for atoms in frames:
        symbols.update(atoms.get_chemical_symbols())
    return sorted(symbols)


def get_descriptors_multicomponent(frames, k: int = DEFAULT_K, cutoff: float = DEFAULT_CUTOFF,
                                   species: Sequence[str] | None = None, *,
                                   threads: int | None = None, progress=None) -> np.ndarray:
    """Multicomponent QUESTS descriptors (the reference's layout).

    Blocks are computed on all atoms, then for each species (sorted) on the atoms of that
    species only (zeros for atoms of other species), and laid out as
    ``[x1_all, x1_s1, ..., x2_all, x2_s1, ...]``: width (2k−1)(n_species+1), or 2k−1 when the
    dataset has a single species.
    """
    return descriptors_of(_as_frames(frames), k, cutoff, multicomponent=True, species=species,
                          threads=threads, progress=progress)
