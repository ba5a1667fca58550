"""Seeded generators of synthetic atomistic data, shared by the tests, benchmarks and demo.

Every function takes ``seed`` and draws from ``numpy.random.default_rng(seed)``, so the same
call always returns the same structure. Lengths are Å. Thermal motion is imitated by Gaussian
displacements of standard deviation ``noise`` (Å); the noise levels used here keep atoms far
from the 0.1 Å overlap limit.
"""

from __future__ import annotations

import os

import numpy as np

_LATTICE = {"Ta": ("bcc", 3.30), "W": ("bcc", 3.16), "Mo": ("bcc", 3.15), "Fe": ("bcc", 2.87),
            "Cu": ("fcc", 3.61), "Ni": ("fcc", 3.52), "Al": ("fcc", 4.05), "Ag": ("fcc", 4.09),
            "Mg": ("hcp", 3.21), "Ti": ("hcp", 2.95), "Si": ("diamond", 5.43), "C": ("diamond", 3.57)}


def _rng(seed):
    return np.random.default_rng(seed)


# nearest-neighbour distance = factor · a for each structure (hcp: ideal c/a = 1.633)
_NN_FACTOR = {"fcc": 1.0 / np.sqrt(2.0), "bcc": np.sqrt(3.0) / 2.0, "hcp": 1.0, "diamond": np.sqrt(3.0) / 4.0,
              "sc": 1.0}


def _lattice_constant(symbol, structure, a):
    """Lattice constant (Å) of ``symbol`` in ``structure``: the element's own one when the
    structure is its native one, otherwise the one keeping its nearest-neighbour distance."""
    if a is not None:
        return float(a)
    if structure not in _NN_FACTOR:
        raise ValueError(f"unknown structure {structure!r}: expected one of {sorted(_NN_FACTOR)}")
    if symbol in _LATTICE:
        native, a0 = _LATTICE[symbol]
        return a0 if native == structure else a0 * _NN_FACTOR[native] / _NN_FACTOR[structure]
    return {"bcc": 3.3, "fcc": 3.6, "hcp": 3.0, "diamond": 5.4, "sc": 2.7}[structure]


def perturbed_crystal(structure: str = "bcc", symbol: str = "Ta", a: float | None = None,
                      size=(3, 3, 3), noise: float = 0.05, seed: int = 0, cubic: bool = True):
    """A periodic supercell of ``structure`` (fcc/bcc/hcp/diamond/sc) with Gaussian noise (Å)."""
    from ase.build import bulk

    a = _lattice_constant(symbol, structure, a)
    if structure == "hcp":
        atoms = bulk(symbol, "hcp", a=a, c=1.633 * a, orthorhombic=cubic)
    elif structure == "sc":
        atoms = bulk(symbol, "sc", a=a)
    else:
        atoms = bulk(symbol, structure, a=a, cubic=cubic)
    atoms = atoms.repeat(tuple(size))
    atoms.positions += _rng(seed).normal(0.0, noise, atoms.positions.shape)
    return atoms


def crystal_at_temperatures(structure: str = "bcc", symbol: str = "Ta", temperatures=(300, 600, 900, 1200),
                            n_per_temperature: int = 1, size=(3, 3, 3), seed: int = 0):
    """Snapshots at several temperatures: noise = 0.05·sqrt(T/300) Å. Returns a list."""
    frames = []
    for t_i, T in enumerate(temperatures):
        for r in range(n_per_temperature):
            frames.append(perturbed_crystal(structure, symbol, size=size, noise=0.05 * np.sqrt(T / 300.0),
                                            seed=seed * 1000 + t_i * 100 + r))
    return frames


def triclinic_crystal(symbol: str = "Cu", size=(3, 3, 3), noise: float = 0.05,
                      shear=(0.3, 0.2, 0.1), seed: int = 0):
    """A crystal in a sheared (triclinic) periodic cell: the fcc primitive cell, repeated, then
    strained by an upper-triangular shear (xy, xz, yz) with the atoms moved along."""
    from ase.build import bulk

    structure, a = _LATTICE.get(symbol, ("fcc", 3.6))
    atoms = bulk(symbol, structure, a=a).repeat(tuple(size))
    strain = np.eye(3)
    strain[0, 1], strain[0, 2], strain[1, 2] = shear
    atoms.set_cell(atoms.cell.array @ strain, scale_atoms=True)
    atoms.positions += _rng(seed).normal(0.0, noise, atoms.positions.shape)
    return atoms


def _widths(cell):
    """Perpendicular widths (Å) of a 3-D cell: volume / area of the opposite face."""
    cell = np.asarray(cell, dtype=float)
    vol = abs(np.linalg.det(cell))
    return np.array([vol / np.linalg.norm(np.cross(cell[(i + 1) % 3], cell[(i + 2) % 3])) for i in range(3)])


def small_cell(symbol: str = "Cu", structure: str = "fcc", noise: float = 0.05, seed: int = 0,
               a: float | None = None):
    """A 2–8 atom periodic cell (fcc/bcc/hcp/diamond/sc) whose perpendicular widths are below
    5 Å, so that a 5 Å cutoff needs several images per axis (an atom's own images are neighbours).

    One-atom primitive cells (fcc, sc) are doubled with whichever of a few determinant-2
    supercell matrices gives the most compact cell. The hcp cell is the 2-atom primitive one; its
    width along c is 1.633·a, below 5 Å when a < 3.06 Å (Cu, Ti, Ta; not Mg). Noise in Å.
    """
    from ase.build import bulk, make_supercell

    a = _lattice_constant(symbol, structure, a)
    if structure == "hcp":
        atoms = bulk(symbol, "hcp", a=a, c=1.633 * a)
    elif structure == "bcc":
        atoms = bulk(symbol, "bcc", a=a, cubic=True)  # 2 atoms, widths a
    else:
        atoms = bulk(symbol, structure, a=a)  # primitive: fcc/sc 1 atom, diamond 2 atoms
    if len(atoms) < 2:
        candidates = [np.diag([2, 1, 1]), np.array([[1, 1, 0], [-1, 1, 0], [0, 0, 1]]),
                      np.array([[1, 1, 0], [0, 1, 1], [1, 0, 1]]), np.array([[1, -1, 0], [0, 1, -1], [1, 1, 1]])]
        best = min(candidates, key=lambda P: (_widths(P @ atoms.cell.array).max(), P.tolist()))
        atoms = make_supercell(atoms, best)
    atoms.positions += _rng(seed).normal(0.0, noise, atoms.positions.shape)
    return atoms


def _random_packing(n_atoms, box, min_distance, rng, periodic=True):
    """Random sequential addition with rejection; box is a length 3 array (orthorhombic)."""
    pos = np.empty((0, 3))
    tries = 0
    while len(pos) < n_atoms:
        tries += 1
        if tries > 200:
            raise RuntimeError("could not place atoms: density too high for min_distance")
        cand = rng.random((4 * (n_atoms - len(pos)) + 8, 3)) * box
        for c in cand:
            if len(pos):
                d = pos - c
                if periodic:
                    d -= box * np.round(d / box)
                if (np.einsum("ij,ij->i", d, d) < min_distance**2).any():
                    continue
            pos = np.vstack([pos, c])
            if len(pos) == n_atoms:
                break
    return pos


def amorphous(n_atoms: int = 200, density: float = 0.05, symbol: str = "Ta", min_distance: float = 2.2,
              seed: int = 0):
    """A random dense packing in a cubic periodic box (liquid/amorphous stand-in).

    density in atoms/Å³ (bcc Ta is 0.055); atoms are at least ``min_distance`` Å apart.
    """
    from ase import Atoms

    L = (n_atoms / density) ** (1.0 / 3.0)
    box = np.array([L, L, L])
    pos = _random_packing(n_atoms, box, min_distance, _rng(seed))
    return Atoms(symbol * n_atoms if len(symbol) <= 2 else symbol, positions=pos, cell=np.diag(box), pbc=True)


def with_vacancies(atoms, fraction: float = 0.05, seed: int = 0):
    """A copy of ``atoms`` with round(fraction·n) randomly chosen atoms removed (at least one)."""
    out = atoms.copy()
    n_remove = max(1, int(round(fraction * len(out))))
    idx = _rng(seed).choice(len(out), n_remove, replace=False)
    del out[sorted(idx.tolist())]
    return out


def surface_slab(structure: str = "fcc", symbol: str = "Cu", size=(4, 4, 4), vacuum: float = 8.0,
                 noise: float = 0.05, seed: int = 0):
    """A slab periodic in x and y (pbc True, True, False) with ``vacuum`` Å on each side."""
    atoms = perturbed_crystal(structure, symbol, size=size, noise=noise, seed=seed)
    atoms.center(vacuum=vacuum, axis=2)
    atoms.pbc = (True, True, False)
    return atoms


def wire(structure: str = "fcc", symbol: str = "Cu", size=(4, 2, 2), vacuum: float = 8.0,
         noise: float = 0.05, seed: int = 0):
    """A wire periodic along x only (pbc True, False, False)."""
    atoms = perturbed_crystal(structure, symbol, size=size, noise=noise, seed=seed)
    atoms.center(vacuum=vacuum, axis=(1, 2))
    atoms.pbc = (True, False, False)
    return atoms


def molecule(n_atoms: int = 20, symbols=("C", "H", "O"), min_distance: float = 1.0, seed: int = 0):
    """A compact random non-periodic cluster (no cell, pbc False) of mixed species."""
    from ase import Atoms

    rng = _rng(seed)
    L = (n_atoms * 8.0) ** (1.0 / 3.0)
    pos = _random_packing(n_atoms, np.array([L, L, L]), min_distance, rng, periodic=False)
    syms = [symbols[i] for i in rng.integers(0, len(symbols), n_atoms)]
    return Atoms(syms, positions=pos, pbc=False)


def multicomponent(structure: str = "rocksalt", symbols=("Na", "Cl"), size=(3, 3, 3), noise: float = 0.05,
                   seed: int = 0):
    """Periodic multi-species crystals: 'rocksalt' (2 species), 'b2' (CsCl type), or
    'random_alloy' (fcc sites with species drawn at random from ``symbols``)."""
    from ase.build import bulk

    rng = _rng(seed)
    if structure == "rocksalt":
        atoms = bulk("".join(symbols[:2]), "rocksalt", a=5.64, cubic=True)
    elif structure == "b2":
        atoms = bulk("".join(symbols[:2]), "cesiumchloride", a=3.0)
    elif structure == "random_alloy":
        atoms = bulk(symbols[0], "fcc", a=3.6, cubic=True)
    else:
        raise ValueError(f"unknown multicomponent structure {structure!r}")
    atoms = atoms.repeat(tuple(size))
    if structure == "random_alloy":
        # random species, each present at least once when there are enough sites
        draw = rng.integers(0, len(symbols), len(atoms))
        if len(atoms) >= len(symbols):
            draw[rng.permutation(len(atoms))[:len(symbols)]] = np.arange(len(symbols))
        atoms.set_chemical_symbols([symbols[i] for i in draw])
    atoms.positions += rng.normal(0.0, noise, atoms.positions.shape)
    return atoms


def defective_crystal(structure: str = "bcc", symbol: str = "Ta", size=(6, 6, 6), noise: float = 0.05,
                      radius: float | None = None, seed: int = 0):
    """A thermal crystal whose central sphere is replaced by a random (molten-like) packing.

    Useful for UQ: atoms in and near the sphere should have high δH against bulk crystal.
    """
    from ase import Atoms

    rng = _rng(seed)
    atoms = perturbed_crystal(structure, symbol, size=size, noise=noise, seed=seed)
    center = atoms.cell.array.sum(axis=0) / 2.0
    if radius is None:
        radius = 0.3 * min(atoms.cell.lengths())
    d = np.linalg.norm(atoms.positions - center, axis=1)
    inside = d < radius
    n_in = int(inside.sum())
    keep = atoms[~inside]
    # random points in the sphere, at least 2.3 Å from each other and from the kept atoms
    placed = []
    others = keep.positions[np.linalg.norm(keep.positions - center, axis=1) < radius + 3.0]
    tries = 0
    while len(placed) < int(0.92 * n_in) and tries < 200000:
        tries += 1
        p = center + radius * rng.normal(size=3) / np.sqrt(3.0) * rng.random() ** (1 / 3)
        if np.linalg.norm(p - center) >= radius:
            continue
        ref = np.vstack([others] + placed) if placed else others
        if len(ref) and (np.linalg.norm(ref - p, axis=1) < 2.3).any():
            continue
        placed.append(p[None, :])
    molten = Atoms(symbol * len(placed) if len(placed) else "", positions=np.vstack(placed) if placed else np.zeros((0, 3)),
                   cell=atoms.cell, pbc=atoms.pbc)
    return keep + molten


def mixed_dataset(n_structures: int = 600, seed: int = 0):
    """A list of small (about 16–128 atoms) varied periodic structures, ~50 atoms on average:
    bcc/fcc crystals at several temperatures, vacancies, amorphous boxes and slabs."""
    rng = _rng(seed)
    frames = []
    kinds = ("bcc", "fcc", "vac", "amorphous", "slab", "hot")
    for s in range(n_structures):
        kind = kinds[s % len(kinds)]
        sub = int(rng.integers(0, 2**31 - 1))
        if kind == "bcc":
            frames.append(perturbed_crystal("bcc", "Ta", size=(3, 3, 3), noise=0.04 + 0.04 * rng.random(), seed=sub))
        elif kind == "fcc":
            frames.append(perturbed_crystal("fcc", "Ta", a=4.2, size=(2, 2, 3), noise=0.05, seed=sub))
        elif kind == "vac":
            frames.append(with_vacancies(perturbed_crystal("bcc", "Ta", size=(3, 3, 3), seed=sub), 0.05, seed=sub))
        elif kind == "amorphous":
            frames.append(amorphous(n_atoms=48, density=0.05, seed=sub))
        elif kind == "slab":
            frames.append(surface_slab("bcc", "Ta", size=(3, 3, 3), vacuum=6.0, seed=sub))
        else:
            frames.append(perturbed_crystal("bcc", "Ta", size=(2, 2, 4), noise=0.15, seed=sub))
    return frames


def with_harmonic_forces(atoms, reference_positions, stiffness: float = 8.0, noise: float = 0.05, seed: int = 0):
    """Attach a single-point calculator with forces −k·u (u = displacement from
    ``reference_positions``, k in eV/Å²) plus Gaussian noise, and the harmonic energy (eV)."""
    from ase.calculators.singlepoint import SinglePointCalculator

    u = atoms.positions - reference_positions
    f = -stiffness * u + _rng(seed).normal(0.0, noise, u.shape)
    atoms.calc = SinglePointCalculator(atoms, energy=float(0.5 * stiffness * (u * u).sum()), forces=f)
    return atoms


def make_compression_dataset(n_ordinary: int = 40, seed: int = 0, symbol: str = "Ta"):
    """A compression test set: ``n_ordinary`` ordinary structures (bcc, one temperature:
    2x2x2 cells, 0.05 Å noise) followed by four rare ones tagged ``info['rare'] = True``:
    a vacancy cluster (3x3x3 cell, 4 neighbouring atoms removed), a (001) surface slab, and two
    much hotter crystals (0.25 Å noise). Every structure carries harmonic forces and energy.
    The rare ones sit at seeded random positions in the list."""
    rng = _rng(seed)
    frames = []
    for i in range(n_ordinary):
        sub = int(rng.integers(0, 2**31 - 1))
        ideal = perturbed_crystal("bcc", symbol, size=(2, 2, 2), noise=0.0)
        a = perturbed_crystal("bcc", symbol, size=(2, 2, 2), noise=0.05, seed=sub)
        frames.append(with_harmonic_forces(a, ideal.positions, seed=sub))
    rare = []
    ideal = perturbed_crystal("bcc", symbol, size=(3, 3, 3), noise=0.0)
    centre = ideal.cell.array.sum(0) / 2
    near = np.argsort(np.linalg.norm(ideal.positions - centre, axis=1))[:4]
    vac = perturbed_crystal("bcc", symbol, size=(3, 3, 3), noise=0.05, seed=seed + 11)
    keep = np.setdiff1d(np.arange(len(vac)), near)
    vac = vac[keep]
    rare.append(with_harmonic_forces(vac, ideal.positions[keep], seed=seed + 11))
    slab = surface_slab("bcc", symbol, size=(2, 2, 3), vacuum=6.0, noise=0.0, seed=seed + 12)
    ideal_slab = slab.positions.copy()
    slab.positions += _rng(seed + 12).normal(0.0, 0.05, slab.positions.shape)
    rare.append(with_harmonic_forces(slab, ideal_slab, seed=seed + 12))
    for j in range(2):
        ideal = perturbed_crystal("bcc", symbol, size=(2, 2, 2), noise=0.0)
        hot = perturbed_crystal("bcc", symbol, size=(2, 2, 2), noise=0.25, seed=seed + 13 + j)
        rare.append(with_harmonic_forces(hot, ideal.positions, seed=seed + 13 + j))
    for a in rare:
        a.info["rare"] = True
    for a in rare:
        frames.insert(int(rng.integers(0, len(frames) + 1)), a)
    return frames


def write_colabfit_parquet(path, frames, **kwargs):
    """Write ``frames`` in ColabFit's Parquet export layout (``path/co/co_0.parquet``, or the
    file itself when ``path`` ends in .parquet); see ``hpcquests.io.colabfit``."""
    from .io.colabfit import write_colabfit_parquet as write

    return write(path, frames, **kwargs)


def large_snapshot(n_atoms: int = 1_000_000, structure: str = "bcc", symbol: str = "Ta", a: float | None = None,
                   noise: float = 0.05, seed: int = 0):
    """One periodic perturbed bcc/fcc/sc crystal of about ``n_atoms`` atoms, built with vectorised
    numpy (fast for 10⁷ atoms). The cubic supercell has n·n·n conventional cells."""
    from ase import Atoms

    basis = {"bcc": [[0, 0, 0], [0.5, 0.5, 0.5]],
             "fcc": [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]],
             "sc": [[0, 0, 0]]}[structure]
    a = _lattice_constant(symbol, structure, a)
    n = max(1, int(round((n_atoms / len(basis)) ** (1.0 / 3.0))))
    grid = np.stack(np.meshgrid(np.arange(n), np.arange(n), np.arange(n), indexing="ij"), axis=-1).reshape(-1, 1, 3)
    frac = (grid + np.asarray(basis, dtype=float)[None, :, :]).reshape(-1, 3)
    pos = frac * a + _rng(seed).normal(0.0, noise, frac.shape)
    return Atoms(numbers=np.full(len(pos), _atomic_number(symbol)), positions=pos, cell=np.eye(3) * n * a, pbc=True)


def _atomic_number(symbol):
    from ase.data import atomic_numbers

    return atomic_numbers[symbol]


def random_descriptors(n: int, d: int = 63, seed: int = 0, scale: float = 0.05, center: float = 0.2):
    """An (n, d) float64 cloud of descriptor-like positive values for metric tests."""
    rng = _rng(seed)
    return np.abs(center + scale * rng.normal(size=(n, d)))


def to_lammps_frame(atoms):
    """Rotate a structure so its cell is LAMMPS' lower-triangular prism (a ∥ x, b in the xy
    plane). Returns a rotated copy; distances and descriptors are unchanged."""
    cell = atoms.cell.array
    q, r = np.linalg.qr(cell.T)
    signs = np.sign(np.diag(r))
    signs[signs == 0] = 1.0
    rot = (q * signs).T  # rows: new orthonormal axes
    out = atoms.copy()
    out.set_cell(cell @ rot.T, scale_atoms=False)
    out.positions = atoms.positions @ rot.T
    new = out.cell.array.copy()
    new[np.abs(new) < 1e-12] = 0.0
    out.set_cell(new, scale_atoms=False)
    return out


def write_lammps_dump(path, frames, columns=("id", "type", "x", "y", "z"), *, type_map=None, seed=None,
                      timesteps=None, fmt="%.10g"):
    """Write frames as a LAMMPS text dump (the format ``dump custom`` writes).

    Args:
        frames: ase.Atoms (cells are rotated into LAMMPS' prism form first if needed).
        columns: any of id, type, element, x y z, xu yu zu, xs ys zs, xsu ysu zsu, plus names of
            per-atom arrays of the Atoms.
        type_map: {element: type}; default: sorted elements numbered from 1.
        seed: if given, atom lines are written in a random order (ids stay attached), as
            LAMMPS does without ``dump_modify sort``.
    """
    if not isinstance(frames, (list, tuple)):
        frames = [frames]
    rng = _rng(seed) if seed is not None else None
    with open(path, "w") as fh:
        for f, atoms in enumerate(frames):
            a = to_lammps_frame(atoms)
            cell = a.cell.array
            lx, ly, lz = (float(cell[i, i]) for i in range(3))
            xy, xz, yz = float(cell[1, 0]), float(cell[2, 0]), float(cell[2, 1])
            tri = any(abs(v) > 0 for v in (xy, xz, yz))
            flags = " ".join("pp" if p else "ff" for p in a.pbc)
            n = len(a)
            order = rng.permutation(n) if rng is not None else np.arange(n)
            syms = np.array(a.get_chemical_symbols())
            tmap = type_map or {s: i + 1 for i, s in enumerate(sorted(set(syms)))}
            frac = np.linalg.solve(cell.T, a.positions.T).T
            wrapped = frac.copy()
            for ax in range(3):
                if a.pbc[ax]:
                    wrapped[:, ax] -= np.floor(wrapped[:, ax])
            cols = {"id": np.arange(1, n + 1), "type": np.array([tmap[s] for s in syms]),
                    "xu": a.positions[:, 0], "yu": a.positions[:, 1], "zu": a.positions[:, 2],
                    "xsu": frac[:, 0], "ysu": frac[:, 1], "zsu": frac[:, 2],
                    "xs": wrapped[:, 0], "ys": wrapped[:, 1], "zs": wrapped[:, 2]}
            xw = wrapped @ cell
            cols.update(x=xw[:, 0], y=xw[:, 1], z=xw[:, 2])
            fh.write(f"ITEM: TIMESTEP\n{timesteps[f] if timesteps is not None else 100 * f}\n")
            fh.write(f"ITEM: NUMBER OF ATOMS\n{n}\n")
            if tri:
                xlo_b = min(0.0, xy, xz, xy + xz)
                xhi_b = lx + max(0.0, xy, xz, xy + xz)
                fh.write(f"ITEM: BOX BOUNDS xy xz yz {flags}\n")
                fh.write(f"{xlo_b!r} {xhi_b!r} {xy!r}\n{min(0.0, yz)!r} {ly + max(0.0, yz)!r} {xz!r}\n0.0 {lz!r} {yz!r}\n")
            else:
                fh.write(f"ITEM: BOX BOUNDS {flags}\n0.0 {lx!r}\n0.0 {ly!r}\n0.0 {lz!r}\n")
            fh.write("ITEM: ATOMS " + " ".join(columns) + "\n")
            lines = []
            for i in order:
                parts = []
                for c in columns:
                    if c == "element":
                        parts.append(syms[i])
                    elif c in ("id", "type"):
                        parts.append(str(int(cols[c][i])))
                    elif c in cols:
                        parts.append(fmt % cols[c][i])
                    else:
                        parts.append(fmt % a.arrays[c][i])
                lines.append(" ".join(parts))
            fh.write("\n".join(lines) + "\n")


def write_colabfit_export(path, frames, *, methods=("PBE", "r2SCAN"), energy_shift: float = 100.0,
                          force_chunks: int = 2, text_chunks=(1,), ids=None):
    """A ColabFit export as colabfit-tools writes it (``path/co/co_0.parquet``): one row per
    property object (calculation), every column of its configuration-property schema, each
    configuration computed with every method in ``methods`` (rows interleaved; method m's energy
    is the frame's + m·``energy_shift`` eV, its forces the frame's + m), forces split over
    ``force_chunks`` columns ``atomic_forces_00``, ... by atoms (chunks in ``text_chunks`` hold
    JSON text, as the exporter writes some), positions whole. Returns the file's path."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    os.makedirs(os.path.join(path, "co"), exist_ok=True)
    out = os.path.join(path, "co", "co_0.parquet")
    ids = [f"CO_{i:020d}" for i in range(len(frames))] if ids is None else list(ids)
    rows = []
    for i, a in enumerate(frames):
        e0 = float(a.get_potential_energy()) if a.calc is not None else 0.0
        f0 = a.get_forces() if a.calc is not None else np.zeros((len(a), 3))
        for m, method in enumerate(methods):
            rows.append((i, m, method, e0 + m * energy_shift, f0 + m))
    n_rows = len(rows)
    chunk_of = []
    for i, m, method, e, f in rows:
        n = len(f)
        bounds = np.linspace(0, n, force_chunks + 1).astype(int)
        chunk_of.append([f[bounds[c]:bounds[c + 1]] for c in range(force_chunks)])
    cols = {
        "property_id": pa.array([f"PO_{k:020d}" for k in range(n_rows)], pa.string()),
        "property_hash": pa.array([f"{k:040x}" for k in range(n_rows)], pa.string()),
        "last_modified": pa.array([0] * n_rows, pa.timestamp("us")),
        "dataset_id": pa.array(["DS_test_0"] * n_rows, pa.string()),
        "multiplicity": pa.array([1] * n_rows, pa.int32()),
        "software": pa.array(["VASP"] * n_rows, pa.string()),
        "method": pa.array([r[2] for r in rows], pa.string()),
        "energy": pa.array([r[3] for r in rows], pa.float64()),
        "cauchy_stress": pa.array([None] * n_rows, pa.list_(pa.list_(pa.float64()))),
        "cauchy_stress_volume_normalized": pa.array([None] * n_rows, pa.bool_()),
        "electronic_band_gap": pa.array([None] * n_rows, pa.float64()),
        "electronic_band_gap_type": pa.array([None] * n_rows, pa.string()),
        "formation_energy": pa.array([None] * n_rows, pa.float64()),
        "adsorption_energy": pa.array([None] * n_rows, pa.float64()),
        "atomization_energy": pa.array([None] * n_rows, pa.float64()),
        "max_force_norm": pa.array([float(np.linalg.norm(r[4], axis=1).max()) for r in rows], pa.float64()),
        "mean_force_norm": pa.array([float(np.linalg.norm(r[4], axis=1).mean()) for r in rows], pa.float64()),
        "energy_above_hull": pa.array([None] * n_rows, pa.float64()),
        "configuration_id": pa.array([ids[r[0]] for r in rows], pa.string()),
        "configuration_hash": pa.array([f"{r[0]:040x}" for r in rows], pa.string()),
        "structure_hash": pa.array([f"{r[0]:040x}" for r in rows], pa.string()),
        "cell": pa.array([frames[r[0]].cell.array.tolist() for r in rows], pa.list_(pa.list_(pa.float64()))),
        "positions": pa.array([frames[r[0]].positions.tolist() for r in rows], pa.list_(pa.list_(pa.float64()))),
        "pbc": pa.array([[bool(p) for p in frames[r[0]].pbc] for r in rows], pa.list_(pa.bool_())),
        "chemical_formula_hill": pa.array([frames[r[0]].get_chemical_formula("hill") for r in rows], pa.string()),
        "chemical_formula_reduced": pa.array([frames[r[0]].get_chemical_formula("hill") for r in rows], pa.string()),
        "chemical_formula_anonymous": pa.array(["A"] * n_rows, pa.string()),
        "elements": pa.array([sorted(set(frames[r[0]].get_chemical_symbols())) for r in rows], pa.list_(pa.string())),
        "elements_ratios": pa.array([[1.0]] * n_rows, pa.list_(pa.float64())),
        "atomic_numbers": pa.array([frames[r[0]].numbers.tolist() for r in rows], pa.list_(pa.int32())),
        "nsites": pa.array([len(frames[r[0]]) for r in rows], pa.int32()),
        "nelements": pa.array([len(set(frames[r[0]].numbers)) for r in rows], pa.int32()),
        "nperiodic_dimensions": pa.array([int(sum(frames[r[0]].pbc)) for r in rows], pa.int32()),
        "dimension_types": pa.array([[int(p) for p in frames[r[0]].pbc] for r in rows], pa.list_(pa.int32())),
        "names": pa.array([["generated"]] * n_rows, pa.list_(pa.string())),
        "labels": pa.array([[]] * n_rows, pa.list_(pa.string())),
        "metadata": pa.array(["{}"] * n_rows, pa.string()),
        "has_forces": pa.array([True] * n_rows, pa.bool_()),
        "has_stress": pa.array([False] * n_rows, pa.bool_()),
        "element_filter": pa.array([None] * n_rows, pa.string()),
    }
    for c in range(force_chunks):
        name = f"atomic_forces_{c:02d}"
        parts = [ch[c] for ch in chunk_of]
        if c in text_chunks:
            cols[name] = pa.array([json.dumps(p.tolist()) if len(p) else None for p in parts], pa.string())
        else:
            cols[name] = pa.array([p.tolist() if len(p) else None for p in parts], pa.list_(pa.list_(pa.float64())))
    pq.write_table(pa.table(cols), out, row_group_size=5)
    return out
