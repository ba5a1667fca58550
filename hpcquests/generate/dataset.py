"""Bispectrum features and their log-det entropy for a whole dataset, over ranks: each rank
computes the features of its own structures in its own LAMMPS instance; the rows are gathered in
global order for the sums, so the entropy is the same bits on any number of ranks."""

from __future__ import annotations

import numpy as np

from .entropy import DEFAULT_RIDGE, LogDetEntropy
from .objective import candidate_rows
from .snap import BispectrumEngine, SnapParameters


def check_element(symbol: str) -> str:
    """``symbol`` if it names a chemical element, else ValueError naming it."""
    from ase.data import atomic_numbers

    if symbol not in atomic_numbers or atomic_numbers[symbol] == 0:
        raise ValueError(f"unknown element {symbol!r}")
    return symbol


def single_element(frames, source: str) -> str:
    """The one element of every structure in ``frames`` (the features are for one element)."""
    elements = sorted({s for a in frames for s in a.get_chemical_symbols()})
    if len(elements) != 1:
        raise ValueError(f"{source}: the bispectrum entropy takes structures of one element; found {elements}")
    return check_element(elements[0])


def structure_features(frames, params: SnapParameters = SnapParameters(), first_index: int = 0,
                       source: str = "structures") -> list[np.ndarray]:
    """B (n_atoms, K) of each structure (periodic cells), through LAMMPS."""
    from ..descriptors import check_structure

    out = []
    for s, atoms in enumerate(frames):
        try:
            check_structure(first_index + s, atoms.positions, atoms.cell.array, atoms.pbc)
        except ValueError as exc:
            raise ValueError(f"{source}: {exc}") from None
        if not atoms.pbc.all():
            raise ValueError(f"{source} structure {first_index + s}: the features need a periodic cell (pbc on all "
                             f"three axes)")
        try:
            with BispectrumEngine(atoms.cell.array, len(atoms), params) as eng:
                out.append(eng.features(atoms.positions))
        except ValueError as exc:
            raise ValueError(f"{source} structure {first_index + s}: {exc}") from None
    return out


def distributed_logdet(comm, rows_local, ridge: float = DEFAULT_RIDGE, what: str = "features") -> LogDetEntropy:
    """The ``LogDetEntropy`` of the rows spread over the ranks (this rank's (m, K) share, ranks
    holding consecutive rows), the same bits on every rank and any number of ranks.

    The rows are gathered on rank 0 in global order and the sums computed there with one BLAS
    thread, then broadcast: log det of a covariance with a 1e-6 ridge has a condition number of
    about 1e6 · d, so sums taken in another order (over other rank counts) would move S by
    ~1e-9 nats; gathered, it does not move at all. The rows are small next to the features'
    cost (8 · K bytes each: 44 MB per 10⁵ per-atom rows). ``what`` names the rows in errors."""
    from ..runtime import threads

    rows = comm.gather_rows_to_root(np.asarray(rows_local, dtype=np.float64))
    if comm.rank == 0:
        if len(rows) < 2:
            raise ValueError(f"{what}: the entropy needs at least two feature rows (got {len(rows)})")
        try:
            with threads(blas=1):
                state = LogDetEntropy(rows, ridge)
        except ValueError as exc:
            raise ValueError(f"{what}: {exc}") from None
        sums = (state.n, state.mean, state.scatter, state.scatter_ridge)
    else:
        sums = None
    n, mean, scatter, lam = comm.broadcast(sums, root=0)
    return LogDetEntropy.from_sums(n, mean, scatter, scatter_ridge=lam)


def mode_rows(features, mode: str, n_features: int) -> np.ndarray:
    """The rows (m, n_features) of a list of per-structure features in ``mode`` (per-atom or
    per-config)."""
    if not features:
        return np.zeros((0, n_features))
    return np.concatenate([candidate_rows(b, mode) for b in features])
