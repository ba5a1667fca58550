"""The Rev-EM objective of a candidate configuration C added to a set S (the paper's Eq. 4):

    F(C | S) = K · S(S ∪ C) − V_core(C),   V_core = Σ_pairs (1 + cos(π r / R_core)) for r < R_core,

and its gradient with respect to C's atom positions (Å), in the input frame.

Modes (the paper, Sec. 2.1): ``per-atom`` adds each atom's feature vector B_i to the set;
``per-config`` adds the configuration's mean vector. The chain rule:

- per-atom: ∂S/∂r_k = Σ_i (∂S/∂B_i) · ∂B_i/∂r_k, the per-pair derivatives from LAMMPS's
  ``compute snap … dgradflag 1`` (``BispectrumEngine.features_and_pair_gradients``);
- per-config: ∂S/∂r_k = (∂S/∂B̄) · ∂(Σ_i B_i)/∂r_k / n, from ``compute snad/atom``
  (``features_and_sum_gradient``).

V_core counts every pair of atoms (periodic images included) once.
"""

from __future__ import annotations

import numpy as np

MODES = ("per-atom", "per-config")


def periodic_pairs(positions, cell, cutoff: float, quantities: str):
    """ASE's neighbour list of a periodic configuration (every pair within ``cutoff`` Å, periodic
    images included, each pair as (i, j) and (j, i)): the ``quantities`` it names ("ijdD", "d")."""
    from ase import Atoms
    from ase.neighborlist import neighbor_list

    x = np.asarray(positions, dtype=np.float64)
    atoms = Atoms(numbers=np.ones(len(x), dtype=int), positions=x, cell=cell, pbc=True)
    return neighbor_list(quantities, atoms, float(cutoff))


def core_repulsion(positions, cell, r_core: float) -> tuple[float, np.ndarray]:
    """(V_core, ∂V_core/∂r (n, 3)) of a periodic configuration; ``r_core`` Å (> 0)."""
    if not r_core > 0:
        raise ValueError(f"R_core must be positive (got {r_core})")
    x = np.asarray(positions, dtype=np.float64)
    i, j, d, vec = periodic_pairs(x, cell, r_core, "ijdD")
    # every pair appears as (i, j) and (j, i): half of each
    energy = 0.5 * float(np.sum(1.0 + np.cos(np.pi * d / r_core)))
    dv_dd = -0.5 * (np.pi / r_core) * np.sin(np.pi * d / r_core)  # d(½ V_pair)/d(distance)
    f = (dv_dd / np.where(d > 0, d, 1.0))[:, None] * vec  # ∂/∂r_j of ½ V_pair; −that on r_i
    grad = np.zeros_like(x)
    np.add.at(grad, j, f)
    np.add.at(grad, i, -f)
    return energy, grad


def candidate_rows(b: np.ndarray, mode: str) -> np.ndarray:
    """The rows a candidate adds to the set: every atom's B (per-atom) or their mean (per-config)."""
    if mode == "per-atom":
        return b
    if mode == "per-config":
        return b.mean(axis=0, keepdims=True)
    raise ValueError(f"mode must be one of {MODES} (got {mode!r})")


def objective(engine, state, positions, k: float, r_core: float, mode: str) -> tuple[float, np.ndarray, dict]:
    """(F, ∂F/∂r (n, 3), parts) for the candidate in ``engine`` (a ``BispectrumEngine``) at
    ``positions`` (n, 3) Å added to ``state`` (a ``LogDetEntropy`` of the set's rows in ``mode``).
    ``parts``: {"entropy": S(S ∪ C), "v_core": V_core}."""
    if mode == "per-atom":
        b, d = engine.features_and_pair_gradients(positions)
        s, g_rows = state.entropy_and_gradient(b)
        ds = np.einsum("ic,ikac->ka", g_rows, d)
    elif mode == "per-config":
        b, g = engine.features_and_sum_gradient(positions)
        s, g_rows = state.entropy_and_gradient(b.mean(axis=0, keepdims=True))
        ds = np.einsum("c,kac->ka", g_rows[0], g) / len(b)
    else:
        raise ValueError(f"mode must be one of {MODES} (got {mode!r})")
    v, dv = core_repulsion(positions, engine.cell, r_core)
    return k * s - v, k * ds - dv, {"entropy": s, "v_core": v}


def objective_value(engine, state, positions, k: float, r_core: float, mode: str) -> float:
    """F alone (features only: no derivatives asked of LAMMPS), for line searches and checks."""
    b = engine.features(positions)
    s = state.entropy_with(candidate_rows(b, mode))
    return k * s - core_repulsion(positions, engine.cell, r_core)[0]
