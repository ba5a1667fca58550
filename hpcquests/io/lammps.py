"""A fast reader of LAMMPS text dumps (``dump atom`` / ``dump custom``), built for 10⁷+ atoms.

``index_dump`` makes one pass over the file and records, per frame, the byte range of its atom
lines without parsing them (newlines are counted in 16 MiB blocks with numpy). Frames are then
parsed — whole, or one byte range per MPI rank (``byte_ranges``, aligned to line starts) — by a
numba kernel that converts ASCII numbers directly (mantissa as an integer, one division or
multiplication by an exact power of ten: correctly rounded for the usual %g / %.Nf output).

Boxes: orthogonal ``ITEM: BOX BOUNDS pp pp pp`` and triclinic ``ITEM: BOX BOUNDS xy xz yz ...``
with LAMMPS' bounding-box convention; the cell rows are a = (lx, 0, 0), b = (xy, ly, 0),
c = (xz, yz, lz) and the origin (xlo, ylo, zlo). Positions come from x/y/z (as written),
xu/yu/zu (unwrapped), or the scaled xs/ys/zs, xsu/ysu/zsu (r = origin + s·cell). Species come
from an ``element`` column or from ``type`` with a type → element map. Atoms stay in file order
(ids may be unsorted); the frame's row number of each atom is its tie-break index.
"""

from __future__ import annotations

import dataclasses
import mmap
import os

import numba as nb
import numpy as np

BLOCK = 16 << 20
POSITION_SETS = (("x", "y", "z", False), ("xu", "yu", "zu", False), ("xs", "ys", "zs", True),
                 ("xsu", "ysu", "zsu", True))


@dataclasses.dataclass
class FrameInfo:
    """One frame of a dump: header values and the byte range of its atom lines."""

    index: int
    offset: int          # byte offset of "ITEM: TIMESTEP"
    timestep: int
    n_atoms: int
    cell: np.ndarray     # (3, 3) rows a, b, c (Å)
    origin: np.ndarray   # (3,) xlo, ylo, zlo
    pbc: np.ndarray      # (3,) bool
    columns: list
    atoms_offset: int    # first byte of the first atom line
    end_offset: int      # one past the last atom line's newline
    first_line: int      # 1-based line number of the first atom line
    box_header: str      # the "ITEM: BOX BOUNDS ..." line
    box_lines: list      # its three lines as written


def _parse_box(kind: str, lines: list[str], where: str):
    tokens = kind.split()[3:]
    try:
        vals = np.array([[float(v) for v in ln.split()] for ln in lines])
    except ValueError:
        raise ValueError(f"{where}: malformed box bounds {lines!r}") from None
    if vals.shape[0] != 3 or vals.shape[1] not in (2, 3):
        raise ValueError(f"{where}: unknown box format {kind.strip()!r}")
    flags = [t for t in tokens if t not in ("xy", "xz", "yz")]
    if tokens and tokens[0] == "abc":
        raise ValueError(f"{where}: general triclinic boxes (ITEM: BOX BOUNDS abc origin) are not supported")
    if len(flags) != 3:
        flags = ["pp", "pp", "pp"]
    pbc = np.array(["p" in f for f in flags])
    if vals.shape[1] == 3:
        tilt = vals[:, 2]
        labels = [t for t in tokens if t in ("xy", "xz", "yz")]
        if len(labels) == 3:
            tilt = np.array([tilt[labels.index(n)] for n in ("xy", "xz", "yz")])
        xy, xz, yz = tilt
        xlo = vals[0, 0] - min(0.0, xy, xz, xy + xz)
        xhi = vals[0, 1] - max(0.0, xy, xz, xy + xz)
        ylo = vals[1, 0] - min(0.0, yz)
        yhi = vals[1, 1] - max(0.0, yz)
    else:
        xy = xz = yz = 0.0
        xlo, xhi, ylo, yhi = vals[0, 0], vals[0, 1], vals[1, 0], vals[1, 1]
    zlo, zhi = vals[2, 0], vals[2, 1]
    cell = np.array([[xhi - xlo, 0.0, 0.0], [xy, yhi - ylo, 0.0], [xz, yz, zhi - zlo]])
    return cell, np.array([xlo, ylo, zlo]), pbc


def _nth_newline(mm, start: int, n: int):
    """Byte offset just past the n-th newline at or after ``start`` (n >= 1), and the number of
    newlines found if the file ends first (offset None)."""
    pos = start
    size = len(mm)
    remaining = n
    while remaining > 0:
        if pos >= size:
            return None, n - remaining
        block = np.frombuffer(mm[pos:min(pos + BLOCK, size)], dtype=np.uint8)
        nl = np.flatnonzero(block == 10)
        if len(nl) >= remaining:
            return pos + int(nl[remaining - 1]) + 1, n
        remaining -= len(nl)
        if pos + len(block) >= size and remaining == 1 and len(block) and block[-1] != 10:
            return size, n  # last line without a trailing newline
        pos += len(block)
    return pos, n


def index_dump(path, *, skip_bad_frames: bool = False):
    """Index every frame of a dump in one pass.

    Returns (frames, bad): ``frames`` a list of FrameInfo, ``bad`` a list of
    {"frame", "line", "error"} for frames skipped with ``skip_bad_frames`` (else the first bad
    frame raises ValueError naming the file, frame and line).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ValueError(f"{path}: no such file")
    if os.path.getsize(path) == 0:
        raise ValueError(f"{path}: file is empty")
    frames, bad = [], []
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        pos, line = 0, 1
        size = len(mm)

        def readline():
            nonlocal pos, line
            if pos >= size:
                return None
            end = mm.find(b"\n", pos)
            end = size if end < 0 else end
            text = mm[pos:end].decode("ascii", "replace")
            pos = end + 1
            line += 1
            return text

        while True:
            while pos < size and mm[pos:pos + 1] in (b"\n", b" ", b"\r", b"\t"):  # blank lines between frames
                if mm[pos:pos + 1] == b"\n":
                    line += 1
                pos += 1
            if pos >= size:
                break
            start, start_line, fidx = pos, line, len(frames) + len(bad)
            where = f"{path} frame {fidx} (line {start_line})"
            try:
                info = _read_header(readline, where, start, fidx)
                if info is None:
                    raise ValueError(f"{where}: expected 'ITEM: TIMESTEP'")
                info.atoms_offset, info.first_line = pos, line
                if info.n_atoms:
                    end, found = _nth_newline(mm, pos, info.n_atoms)
                    if end is None:
                        raise ValueError(f"{path} frame {fidx}: truncated: {info.n_atoms} atoms announced, "
                                         f"{found} atom lines before the end of the file (line {line + found})")
                    info.end_offset = end
                    line += info.n_atoms
                    pos = end
                else:
                    info.end_offset = pos
                frames.append(info)
            except ValueError as exc:
                if not skip_bad_frames:
                    raise
                bad.append({"frame": fidx, "line": start_line, "error": str(exc)})
                nxt = mm.find(b"ITEM: TIMESTEP", pos + 1 if pos > start else start + 1)
                if nxt < 0:
                    break
                line += mm[pos:nxt].count(b"\n") if nxt > pos else 0
                pos = nxt
    if not frames:
        raise ValueError(f"{path}: no complete frame in file" + (f" ({len(bad)} bad)" if bad else ""))
    return frames, bad


def _read_header(readline, where, start, fidx):
    first = readline()
    if first is None or not first.startswith("ITEM: TIMESTEP"):
        return None
    try:
        timestep = int(readline().split()[0])
    except (AttributeError, ValueError, IndexError):
        raise ValueError(f"{where}: malformed timestep") from None
    ln = readline()
    if ln is None or not ln.startswith("ITEM: NUMBER OF ATOMS"):
        raise ValueError(f"{where}: expected 'ITEM: NUMBER OF ATOMS', got {ln!r}")
    try:
        n_atoms = int(readline().split()[0])
    except (AttributeError, ValueError, IndexError):
        raise ValueError(f"{where}: malformed atom count") from None
    box = readline()
    if box is None or not box.startswith("ITEM: BOX BOUNDS"):
        raise ValueError(f"{where}: expected 'ITEM: BOX BOUNDS', got {box!r}")
    box_lines = [readline() for _ in range(3)]
    if any(b is None for b in box_lines):
        raise ValueError(f"{where}: truncated box")
    cell, origin, pbc = _parse_box(box, box_lines, where)
    atoms_line = readline()
    if atoms_line is None or not atoms_line.startswith("ITEM: ATOMS"):
        raise ValueError(f"{where}: expected 'ITEM: ATOMS', got {atoms_line!r}")
    columns = atoms_line.split()[2:]
    return FrameInfo(index=fidx, offset=start, timestep=timestep, n_atoms=n_atoms, cell=cell, origin=origin,
                     pbc=pbc, columns=columns, atoms_offset=0, end_offset=0, first_line=0,
                     box_header=box.rstrip(), box_lines=[b.rstrip() for b in box_lines])


def byte_ranges(info: FrameInfo, n_parts: int, path=None) -> list[tuple[int, int]]:
    """Split a frame's atom lines into ``n_parts`` byte ranges of about equal size, each starting
    at a line start (so ranks parse disjoint whole lines). Needs the file only to align; with
    ``path`` None the ranges are aligned lazily by ``read_atom_bytes``."""
    a, b = info.atoms_offset, info.end_offset
    cuts = [a + (b - a) * i // n_parts for i in range(n_parts + 1)]
    return [(cuts[i], cuts[i + 1]) for i in range(n_parts)]


def _align(mm, pos: int, lo: int, hi: int) -> int:
    """First line start at or after ``pos`` within [lo, hi]."""
    if pos <= lo:
        return lo
    if pos >= hi:
        return hi
    if mm[pos - 1:pos] == b"\n":
        return pos
    nl = mm.find(b"\n", pos, hi)
    return hi if nl < 0 else nl + 1


_SYMBOL_CODES = None


def _symbol_table():
    """uint8 pair → atomic number lookup (65536 entries) for an `element` column."""
    global _SYMBOL_CODES
    if _SYMBOL_CODES is None:
        from ase.data import chemical_symbols

        table = np.full(65536, -1, dtype=np.int64)
        for z, sym in enumerate(chemical_symbols):
            if z == 0 or not sym:
                continue
            c = sym.encode()
            key = c[0] * 256 + (c[1] if len(c) > 1 else 0)
            table[key] = z
        _SYMBOL_CODES = table
    return _SYMBOL_CODES


_P10 = np.array([10.0 ** i for i in range(23)])


@nb.njit(cache=True)
def _parse_rows(buf, n_cols, is_symbol, symtab, p10):
    """Parse whitespace-separated rows of a byte buffer into (rows, n_cols) float64.

    Returns (values, n_rows, err_row, err_col): err_row >= 0 flags a malformed row (a token
    that is not a number / element, or the wrong number of columns)."""
    n = buf.shape[0]
    n_rows = 0
    for i in range(n):
        if buf[i] == 10:
            n_rows += 1
    if n > 0 and buf[n - 1] != 10:
        n_rows += 1
    out = np.empty((n_rows, n_cols))
    i = 0
    row = 0
    while row < n_rows:
        col = 0
        while True:
            while i < n and (buf[i] == 32 or buf[i] == 9 or buf[i] == 13):
                i += 1
            if i >= n or buf[i] == 10:
                break
            if col >= n_cols:
                return out, n_rows, row, col
            if is_symbol[col]:
                c0 = np.int64(buf[i])
                c1 = np.int64(0)
                j = i + 1
                if j < n and buf[j] >= 97 and buf[j] <= 122:
                    c1 = np.int64(buf[j])
                    j += 1
                if j < n and not (buf[j] == 32 or buf[j] == 9 or buf[j] == 10 or buf[j] == 13):
                    return out, n_rows, row, col
                z = symtab[c0 * 256 + c1]
                if z < 0:
                    return out, n_rows, row, col
                out[row, col] = z
                i = j
                col += 1
                continue
            neg = False
            if buf[i] == 45:
                neg = True
                i += 1
            elif buf[i] == 43:
                i += 1
            mant = np.int64(0)
            digits = 0
            exp10 = 0
            any_digit = False
            while i < n and buf[i] >= 48 and buf[i] <= 57:
                any_digit = True
                if digits < 18:
                    mant = mant * 10 + (buf[i] - 48)
                    if mant > 0:
                        digits += 1
                else:
                    exp10 += 1
                i += 1
            if i < n and buf[i] == 46:
                i += 1
                while i < n and buf[i] >= 48 and buf[i] <= 57:
                    any_digit = True
                    if digits < 18:
                        mant = mant * 10 + (buf[i] - 48)
                        if mant > 0:
                            digits += 1
                        exp10 -= 1
                    i += 1
            if not any_digit:
                return out, n_rows, row, col
            if i < n and (buf[i] == 101 or buf[i] == 69):
                i += 1
                eneg = False
                if i < n and (buf[i] == 45 or buf[i] == 43):
                    eneg = buf[i] == 45
                    i += 1
                e = 0
                edig = False
                while i < n and buf[i] >= 48 and buf[i] <= 57:
                    e = e * 10 + (buf[i] - 48)
                    edig = True
                    i += 1
                if not edig:
                    return out, n_rows, row, col
                exp10 += -e if eneg else e
            if i < n and not (buf[i] == 32 or buf[i] == 9 or buf[i] == 10 or buf[i] == 13):
                return out, n_rows, row, col
            v = float(mant)
            if exp10 == 0:
                pass
            elif 0 < exp10 <= 22:
                v = v * p10[exp10]
            elif -22 <= exp10 < 0:
                v = v / p10[-exp10]
            else:
                v = v * 10.0 ** exp10
            out[row, col] = -v if neg else v
            col += 1
        if col != n_cols:
            return out, n_rows, row, col
        row += 1
        i += 1
    return out, n_rows, -1, -1


def read_atom_bytes(path, info: FrameInfo, start: int | None = None, stop: int | None = None) -> dict:
    """Parse the atom lines of ``info`` within the byte range [start, stop) (aligned forward to
    line starts; default: the whole frame).

    Returns dict: ``ids`` (n,) int64, ``types`` (n,) int64 or ``numbers`` (n,) int64 (from an
    element column), ``positions`` (n, 3) float64 Cartesian Å, ``columns`` {name: (n,) float64}
    for every column, ``row_start`` (the range's first row within the frame, or None when it
    was not counted), ``byte_range`` (aligned).
    """
    path = os.fspath(path)
    lo, hi = info.atoms_offset, info.end_offset
    start = lo if start is None else start
    stop = hi if stop is None else stop
    cols = info.columns
    is_symbol = np.array([c == "element" for c in cols], dtype=np.bool_)
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        a = _align(mm, start, lo, hi)
        b = _align(mm, stop, lo, hi)
        buf = np.frombuffer(mm, dtype=np.uint8, count=b - a, offset=a)  # no copy of the text
        vals, n_rows, err_row, err_col = _parse_rows(buf, len(cols), is_symbol, _symbol_table(), _P10)
        if err_row >= 0:
            before = mm[lo:a].count(b"\n")
            line_no = info.first_line + before + err_row
            text = bytes(buf).split(b"\n")[err_row].decode("ascii", "replace").strip()
            del buf
            raise ValueError(f"{path} frame {info.index} line {line_no}: malformed atom line {text[:120]!r} "
                             f"(column {err_col + 1} of {len(cols)}: {' '.join(cols)})")
        del buf  # release the view before the mmap closes
    columns = {c: vals[:, j] for j, c in enumerate(cols)}
    out = {"columns": columns, "byte_range": (a, b), "n": n_rows}
    out["ids"] = columns["id"].astype(np.int64) if "id" in columns else None
    if "element" in columns:
        out["numbers"] = columns["element"].astype(np.int64)
    if "type" in columns:
        out["types"] = columns["type"].astype(np.int64)
    if "numbers" not in out and "types" not in out:
        raise ValueError(f"{path} frame {info.index}: no 'type' or 'element' column in {' '.join(cols)}")
    out["positions"] = frame_positions(columns, info, path)
    if out["ids"] is None:
        out["ids"] = np.arange(n_rows, dtype=np.int64) + 1  # implicit ids (row order), made global by callers
    return out


def frame_positions(columns: dict, info: FrameInfo, path="dump") -> np.ndarray:
    """Cartesian positions (n, 3) from the first position column set present."""
    for cx, cy, cz, scaled in POSITION_SETS:
        if cx in columns and cy in columns and cz in columns:
            p = np.stack([columns[cx], columns[cy], columns[cz]], axis=1)
            if scaled:
                p = info.origin + p @ info.cell
            return np.ascontiguousarray(p)
    raise ValueError(f"{path} frame {info.index}: no position columns (x y z, xu yu zu, xs ys zs or xsu ysu zsu) "
                     f"in {' '.join(info.columns)}")


def frame_header(path, info: FrameInfo, extra_columns=()) -> bytes:
    """The frame's header as written, with ``extra_columns`` appended to ``ITEM: ATOMS``."""
    cols = " ".join([*info.columns, *extra_columns])
    lines = ["ITEM: TIMESTEP", str(info.timestep), "ITEM: NUMBER OF ATOMS", str(info.n_atoms), info.box_header,
             *info.box_lines, f"ITEM: ATOMS {cols}"]
    return ("\n".join(lines) + "\n").encode()


def read_frame(path, info: FrameInfo) -> dict:
    """Parse a whole frame (see ``read_atom_bytes``)."""
    return read_atom_bytes(path, info)


def read_dump_frames(path, frames=slice(None), type_map: dict | None = None) -> list:
    """Frames as ``ase.Atoms`` (file order of atoms; ids in ``atoms.arrays['id']``).

    ``type_map`` maps LAMMPS types to element symbols ({1: 'Ta'}); needed without an
    ``element`` column. Positions are Cartesian as in the dump (scaled columns → origin + s·cell).
    """
    from ase import Atoms
    from ase.data import atomic_numbers

    infos, _ = index_dump(path)
    out = []
    for info in infos[frames] if isinstance(frames, slice) else [infos[i] for i in frames]:
        part = read_atom_bytes(path, info)
        if "numbers" in part:
            numbers = part["numbers"]
        else:
            types = part["types"]
            missing = sorted(set(np.unique(types).tolist()) - set(type_map or {}))
            if missing:
                raise ValueError(f"{path} frame {info.index}: LAMMPS type {missing[0]} has no element "
                                 f"(give type_map, e.g. {{{missing[0]}: 'Ta'}})")
            numbers = np.array([atomic_numbers[type_map[t]] for t in types.tolist()], dtype=np.int64)
        atoms = Atoms(numbers=numbers, positions=part["positions"], cell=info.cell, pbc=info.pbc, celldisp=info.origin)
        atoms.arrays["id"] = part["ids"]
        atoms.info["timestep"] = info.timestep
        out.append(atoms)
    return out
