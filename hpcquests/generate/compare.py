"""``hpcquests generate --compare``: the generated set against rattled and strained crystals of
the element with the same atom counts.

For every generated configuration of n atoms, one crystal of n atoms: the element's ASE
reference crystal (``ase.build.bulk``, primitive) repeated into a supercell of n atoms (the
repeats the three most even factors of n / atoms-per-primitive-cell, rounded up), scaled to the
generated configuration's volume per atom, strained by a symmetric strain with entries uniform
in [−STRAIN, STRAIN] and rattled by Gaussian displacements of σ = RATTLE Å; seeded by (seed, i).

Measured on both sets: log det(Σ + λ I) of the bispectrum features in both modes with one λ
for both (1e-6 · tr(Σ) / d of the union, so the two values are comparable); QUESTS H and D
(k = 32, rc = 5 Å, h = 0.015 Å⁻¹); the overlap of each set on the other (δH < 1e-5).
"""

from __future__ import annotations

import numpy as np

from ..metrics import DEFAULT_BANDWIDTH as BANDWIDTH

STRAIN = 0.05
RATTLE = 0.1


def _factors(m: int) -> tuple[int, int, int]:
    """Three factors of m, as even as possible."""
    best = (1, 1, m)
    for a in range(1, m + 1):
        if m % a:
            continue
        for b in range(a, m // a + 1):
            if (m // a) % b or m // a // b < b:
                continue
            c = m // a // b
            if c - a < best[2] - best[0]:
                best = (a, b, c)
    return best


def reference_crystals(element: str, generated, seed: int = 0):
    """Rattled and strained crystals matching ``generated`` (ase.Atoms) one to one in atom count
    (up to the primitive cell's atom count) and volume per atom."""
    from ase.build import bulk

    prim = bulk(element)
    out = []
    for i, g in enumerate(generated):
        rng = np.random.default_rng((seed, i, 2))
        reps = _factors(max(1, -(-len(g) // len(prim))))
        a = prim.repeat(reps)
        v = g.get_volume() / len(g)
        a.set_cell(a.cell.array * (v / (a.get_volume() / len(a))) ** (1 / 3), scale_atoms=True)
        eps = rng.uniform(-STRAIN, STRAIN, (3, 3))
        a.set_cell(a.cell.array @ (np.eye(3) + 0.5 * (eps + eps.T)), scale_atoms=True)
        a.positions = a.positions + rng.normal(0.0, RATTLE, a.positions.shape)
        a.wrap()
        out.append(a)
    return out


def compare_sets(element: str, generated, params, seed: int = 0) -> dict:
    """The comparison table (serial; the sets are small). Keys: sets (names), atoms, logdet
    ({mode: [generated, crystals]}), entropy, diversity, overlap ({"generated_on_crystals",
    "crystals_on_generated"}), crystal parameters."""
    from ..descriptors import DEFAULT_CUTOFF, DEFAULT_K, get_descriptors
    from ..metrics import diversity, entropy, overlap
    from .dataset import structure_features
    from .entropy import LogDetEntropy
    from .objective import candidate_rows

    crystals = reference_crystals(element, generated, seed)
    sets = {"generated": generated, "crystals": crystals}
    feats = {k: structure_features(v, params, source=k) for k, v in sets.items()}
    out = {"sets": list(sets), "atoms": [int(sum(len(a) for a in v)) for v in sets.values()],
           "structures": [len(v) for v in sets.values()], "logdet": {},
           "crystals": {"strain": STRAIN, "rattle_A": RATTLE, "seed": seed, "bandwidth": BANDWIDTH}}
    for mode in ("per-atom", "per-config"):
        rows = {k: np.concatenate([candidate_rows(b, mode) for b in v]) for k, v in feats.items()}
        union = np.concatenate(list(rows.values()))
        cov = np.cov(union.T, bias=True)
        lam = 1e-6 * float(np.trace(cov)) / cov.shape[0]
        out["logdet"][mode] = [LogDetEntropy(r, scatter_ridge=lam * len(r)).entropy if len(r) > 1 else None
                               for r in rows.values()]
    x = {k: get_descriptors(v, k=DEFAULT_K, cutoff=DEFAULT_CUTOFF) for k, v in sets.items()}
    out["entropy"] = [float(entropy(v, BANDWIDTH)) for v in x.values()]
    out["diversity"] = [float(diversity(v, BANDWIDTH)) for v in x.values()]
    out["overlap"] = {"generated_on_crystals": float(overlap(x["generated"], x["crystals"], BANDWIDTH)),
                      "crystals_on_generated": float(overlap(x["crystals"], x["generated"], BANDWIDTH))}
    out["lines"] = _lines(out)
    return out


def _lines(c) -> list[str]:
    lines = ["  comparison with rattled and strained crystals (same atom counts):",
             f"    {'':28s} {'generated':>12s} {'crystals':>12s}"]
    for mode, v in c["logdet"].items():
        lines.append(f"    log det(Σ+λI) {mode:14s} {v[0]:12.3f} {v[1]:12.3f}")
    lines.append(f"    QUESTS H (nats){'':13s} {c['entropy'][0]:12.4f} {c['entropy'][1]:12.4f}")
    lines.append(f"    QUESTS D{'':20s} {c['diversity'][0]:12.4f} {c['diversity'][1]:12.4f}")
    lines.append(f"    overlap: generated on crystals {c['overlap']['generated_on_crystals']:.4f}, crystals on "
                 f"generated {c['overlap']['crystals_on_generated']:.4f}")
    return lines
