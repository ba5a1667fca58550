"""Bispectrum features and their log-det entropy for a whole dataset, over ranks: each rank
computes the features of its own structures in its own LAMMPS instance; the mean and the centred
scatter are summed over ranks (two passes), so the entropy is the same on any number of ranks
(within rounding of the sums)."""

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
    out = []
    for s, atoms in enumerate(frames):
        if not atoms.pbc.all():
            raise ValueError(f"{source} structure {first_index + s}: the features need a periodic cell (pbc on all "
                             f"three axes)")
        try:
            with BispectrumEngine(atoms.cell.array, len(atoms), params) as eng:
                out.append(eng.features(atoms.positions))
        except ValueError as exc:
            raise ValueError(f"{source} structure {first_index + s}: {exc}") from None
    return out


def distributed_logdet(comm, rows_local, ridge: float = DEFAULT_RIDGE) -> LogDetEntropy:
    """The ``LogDetEntropy`` of the rows spread over the ranks (this rank's (m, K) share), the
    same on every rank: the global mean, then the centred scatter, summed over ranks."""
    rows_local = np.asarray(rows_local, dtype=np.float64)
    k = rows_local.shape[1]
    n = int(comm.reduce_sum(int(rows_local.shape[0])))
    if n < 2:
        raise ValueError(f"the entropy needs at least two feature rows (got {n})")
    mean = np.asarray(comm.reduce_sum(rows_local.sum(axis=0) if len(rows_local) else np.zeros(k))) / n
    xc = rows_local - mean
    scatter = np.asarray(comm.reduce_sum(xc.T @ xc))
    return LogDetEntropy.from_sums(n, mean, scatter, ridge)


def mode_rows(features, mode: str, n_features: int) -> np.ndarray:
    """The rows (m, n_features) of a list of per-structure features in ``mode`` (per-atom or
    per-config)."""
    if not features:
        return np.zeros((0, n_features))
    return np.concatenate([candidate_rows(b, mode) for b in features])
