"""A fast reader of LAMMPS text dumps (``dump atom`` / ``dump custom``), built for 10⁷+ atoms.

``index_dump`` makes one pass over the file and records, per frame, the header values and the
byte range of its atom lines without parsing them (newlines are counted in 16 MiB blocks with
``bytes.count``). Frames are then parsed — whole (``read_frame``), a row range of one frame, or
one byte range per MPI rank (``byte_ranges`` + ``read_atom_bytes``, aligned to line starts),
optionally a block of lines at a time (``block_ranges``, ``iter_atom_blocks``) — by a numba
kernel that converts ASCII numbers directly: the mantissa is accumulated as an integer and
divided or multiplied once by an exact power of ten (≤ 10²²), so the usual ``%g`` /
``%.Nf`` output (≤ 15 significant digits, moderate exponents) is correctly rounded; the rare other
tokens (longer mantissas, far exponents) are handed to ``float()``. Every value is therefore
identical to Python's ``float()`` of its text (dumps written with ``%.17g`` parse slower).

Boxes: orthogonal ``ITEM: BOX BOUNDS pp pp pp`` and triclinic ``ITEM: BOX BOUNDS xy xz yz ...``
with LAMMPS' bounding-box convention (xlo = xlo_bound − min(0, xy, xz, xy+xz), ...); the cell
rows are a = (xhi−xlo, 0, 0), b = (xy, yhi−ylo, 0), c = (xz, yz, zhi−zlo) and the origin is
(xlo, ylo, zlo). A dimension is periodic when its boundary flag is ``pp`` (f/s/m: not).

Positions are Cartesian in LAMMPS' frame, taken from the first complete set of x y z (as
written, wrapped), xs ys zs (scaled: r = origin + s·cell), xu yu zu (unwrapped), xsu ysu zsu —
ASE's order of preference. Note: for scaled columns ASE's reader drops the origin (it builds
``Atoms(scaled_positions=s, celldisp=origin)``), so ASE's positions are ours − origin there;
for x/xu columns they are equal.

Species come from an ``element`` column or from ``type`` with a type → element map. Atoms stay
in FILE ORDER (ids may be unsorted; ASE's reader sorts by id); ids are kept.

``dump_modify units yes`` / ``time yes`` items (``ITEM: UNITS``, ``ITEM: TIME``) are accepted
before ``ITEM: TIMESTEP``. Not supported: general triclinic boxes (``BOX BOUNDS abc origin``),
``dump_modify types labels`` (non-numeric type column), gzipped and binary dumps.
"""

from __future__ import annotations

import dataclasses
import mmap
import os

import numpy as np

from ..kernels.atom_lines import _E_NUMBER, _E_TOO_FEW, _E_TOO_MANY, _P10, _parse_rows

BLOCK = 16 << 20
# ASE's order of preference: wrapped before unwrapped, Cartesian before scaled
POSITION_SETS = (("x", "y", "z", False), ("xs", "ys", "zs", True), ("xu", "yu", "zu", False),
                 ("xsu", "ysu", "zsu", True))
_WS = (b" ", b"\t", b"\r", b"\n")


@dataclasses.dataclass
class FrameInfo:
    """One frame of a dump: header values and the byte range of its atom lines."""

    index: int           # frame number in the file (0-based, bad frames counted)
    offset: int          # byte offset of "ITEM: TIMESTEP"
    timestep: int
    n_atoms: int
    cell: np.ndarray     # (3, 3) rows a, b, c (Å)
    origin: np.ndarray   # (3,) xlo, ylo, zlo
    pbc: np.ndarray      # (3,) bool
    columns: list        # names of the ITEM: ATOMS columns
    atoms_offset: int    # first byte of the first atom line
    end_offset: int      # one past the last atom line (its newline included)
    first_line: int      # 1-based line number of the first atom line
    box_header: str      # the "ITEM: BOX BOUNDS ..." line
    box_lines: list      # its three lines as written
    path: str = ""       # the file (lets byte_ranges align without being told)
    header_line: int = 0  # 1-based line number of its "ITEM: TIMESTEP"

    @property
    def position_columns(self):
        """(cx, cy, cz, scaled) of the position set in use."""
        for cx, cy, cz, scaled in POSITION_SETS:
            if cx in self.columns and cy in self.columns and cz in self.columns:
                return cx, cy, cz, scaled
        return None


# --------------------------------------------------------------------------------------------
# index


def _parse_box(kind: str, lines: list[str], where: str, line: int):
    at = f" (line {line})"
    tokens = kind.split()[3:]
    if tokens and tokens[0] == "abc":
        raise ValueError(f"{where}: unknown box format {kind.strip()!r} (general triclinic boxes are not "
                         f"supported; use dump_modify triclinic/general no){at}")
    try:
        rows = [[float(v) for v in ln.split()] for ln in lines]
    except ValueError:
        raise ValueError(f"{where}: malformed box bounds {lines!r}{at}") from None
    widths = {len(r) for r in rows}
    if len(rows) != 3 or len(widths) != 1 or widths.pop() not in (2, 3):
        raise ValueError(f"{where}: unknown box format {kind.strip()!r} with lines {lines!r}{at}")
    vals = np.array(rows)
    labels = [t for t in tokens if t in ("xy", "xz", "yz")]
    flags = [t for t in tokens if t not in ("xy", "xz", "yz")]
    if vals.shape[1] == 2 and labels:
        raise ValueError(f"{where}: unknown box format {kind.strip()!r}: tilt labels without tilt values{at}")
    if len(flags) == 0:
        flags = ["pp", "pp", "pp"]  # very old LAMMPS wrote no flags (its boxes were periodic)
    if len(flags) != 3 or any(len(f) != 2 or set(f) - set("pfsm") for f in flags):
        raise ValueError(f"{where}: unknown box format {kind.strip()!r}{at}")
    pbc = np.array([f == "pp" for f in flags])
    if vals.shape[1] == 3:
        tilt = vals[:, 2]
        if len(labels) == 3:
            tilt = np.array([tilt[labels.index(n)] for n in ("xy", "xz", "yz")])
        xy, xz, yz = (float(t) for t in tilt)
        xlo = vals[0, 0] - min(0.0, xy, xz, xy + xz)
        xhi = vals[0, 1] - max(0.0, xy, xz, xy + xz)
        ylo = vals[1, 0] - min(0.0, yz)
        yhi = vals[1, 1] - max(0.0, yz)
    else:
        xy = xz = yz = 0.0
        xlo, xhi, ylo, yhi = vals[0, 0], vals[0, 1], vals[1, 0], vals[1, 1]
    zlo, zhi = vals[2, 0], vals[2, 1]
    cell = np.array([[xhi - xlo, 0.0, 0.0], [xy, yhi - ylo, 0.0], [xz, yz, zhi - zlo]])
    return cell, np.array([xlo, ylo, zlo], dtype=float), pbc


def _release(mm, start: int, stop: int):
    """Drop the mapped pages of [start, stop) from this process (they stay in the page cache):
    scanning a multi-GB dump through an mmap would otherwise count the whole file in the
    process's resident set (and its peak RSS) until the mapping closes."""
    lo = start - start % mmap.PAGESIZE
    if stop > lo and hasattr(mm, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
        try:
            mm.madvise(mmap.MADV_DONTNEED, lo, min(stop, len(mm)) - lo)
        except (OSError, ValueError):
            pass


def _count_newlines(mm, start: int, stop: int) -> int:
    n = 0
    while start < stop:
        end = min(start + BLOCK, stop)
        n += mm[start:end].count(b"\n")
        _release(mm, start, end)
        start = end
    return n


def _skip_lines(mm, pos: int, n: int):
    """(offset just past the n-th newline at or after ``pos``, n) — or (None, lines found) when
    the file ends first. A last line without a trailing newline counts as a line."""
    size = len(mm)
    remaining = n
    while remaining > 0 and pos < size:
        stop = min(pos + BLOCK, size)
        chunk = mm[pos:stop]
        c = chunk.count(b"\n")
        if c >= remaining:
            if remaining <= 64:
                k = -1
                for _ in range(remaining):
                    k = chunk.find(b"\n", k + 1)
            else:
                k = int(np.flatnonzero(np.frombuffer(chunk, dtype=np.uint8) == 10)[remaining - 1])
            return pos + k + 1, n
        remaining -= c
        _release(mm, pos, stop)
        if stop == size and remaining == 1 and chunk[-1:] != b"\n" and chunk[chunk.rfind(b"\n") + 1:].strip():
            return size, n  # the last line has no trailing newline
        pos = stop
    return (pos, n) if remaining == 0 else (None, n - remaining)


class _Lines:
    """Header line reader over an mmap, tracking the 1-based line number."""

    def __init__(self, mm):
        self.mm, self.pos, self.line, self.size = mm, 0, 1, len(mm)

    def skip_blank(self):
        mm, size = self.mm, self.size
        while self.pos < size and mm[self.pos:self.pos + 1] in _WS:
            if mm[self.pos:self.pos + 1] == b"\n":
                self.line += 1
            self.pos += 1

    def readline(self):
        if self.pos >= self.size:
            return None
        end = self.mm.find(b"\n", self.pos)
        end = self.size if end < 0 else end
        text = self.mm[self.pos:end].decode("ascii", "replace").rstrip("\r")
        self.pos = end + 1
        self.line += 1
        return text


def _read_header(lines: _Lines, path: str, fidx: int):
    """Parse one frame header; returns FrameInfo with atoms_offset / first_line set."""

    def fail(msg, line=None):
        raise ValueError(f"{path} frame {fidx}: {msg} (line {lines.line - 1 if line is None else line})")

    def value_line(what, conv):
        ln = lines.readline()
        try:
            return conv(ln.split()[0])
        except (AttributeError, ValueError, IndexError):
            fail(f"malformed {what} {ln!r}" if ln is not None else f"truncated header: no {what}")

    offset = lines.pos
    ln = lines.readline()
    while ln is not None and ln.startswith(("ITEM: UNITS", "ITEM: TIME")) and not ln.startswith("ITEM: TIMESTEP"):
        lines.readline()  # its value
        lines.skip_blank()
        offset = lines.pos
        ln = lines.readline()
    if ln is None or not ln.startswith("ITEM: TIMESTEP"):
        fail(f"expected 'ITEM: TIMESTEP', got {ln!r}")
    start_line = lines.line - 1
    timestep = value_line("timestep", int)
    n_atoms = box = cell = None
    while True:
        ln = lines.readline()
        if ln is None:
            fail("truncated header: no 'ITEM: ATOMS' line")
        if ln.startswith("ITEM: NUMBER OF ATOMS"):
            n_atoms = value_line("atom count", int)
            if n_atoms < 0:
                fail(f"negative atom count {n_atoms}")
        elif ln.startswith("ITEM: BOX BOUNDS"):
            box_line = lines.line - 1
            box = (ln.rstrip(), [lines.readline() for _ in range(3)])
            if any(b is None for b in box[1]):
                fail("truncated box bounds")
            cell, origin, pbc = _parse_box(ln, box[1], f"{path} frame {fidx}", box_line)
        elif ln.startswith("ITEM: ATOMS"):
            columns = ln.split()[2:]
            break
        else:
            fail(f"unexpected header line {ln!r}")
    if n_atoms is None:
        fail("no 'ITEM: NUMBER OF ATOMS' in the header")
    if cell is None:
        fail("no 'ITEM: BOX BOUNDS' in the header")
    if len(set(columns)) != len(columns) or not columns:
        fail(f"bad column list {' '.join(columns)!r}")
    info = FrameInfo(index=fidx, offset=offset, timestep=timestep, n_atoms=n_atoms, cell=cell, origin=origin,
                     pbc=pbc, columns=columns, atoms_offset=lines.pos, end_offset=lines.pos,
                     first_line=lines.line, box_header=box[0], box_lines=[b.rstrip() for b in box[1]], path=path)
    if info.position_columns is None:
        fail(f"missing columns: no positions (x y z, xs ys zs, xu yu zu or xsu ysu zsu) in "
             f"'ITEM: ATOMS {' '.join(columns)}'")
    if "type" not in columns and "element" not in columns:
        fail(f"missing columns: neither 'type' nor 'element' in 'ITEM: ATOMS {' '.join(columns)}'")
    return info, start_line


def index_dump(path, *, skip_bad_frames: bool = False):
    """Index every frame of a dump in one pass, without parsing atom lines.

    Returns ``(frames, bad)``: ``frames`` a list of FrameInfo (file order), ``bad`` a list of
    ``{"frame", "line", "error"}`` for frames skipped with ``skip_bad_frames``. Without it the
    first bad frame raises ValueError naming the file, the frame and the line: empty file,
    malformed or truncated header, unknown box format, missing position / species columns, a
    frame with fewer atom lines than announced (truncated) or more. Malformed numbers in atom
    lines are found when the lines are parsed (``read_frame`` / ``read_atom_bytes``).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ValueError(f"{path}: no such file")
    if os.path.getsize(path) == 0:
        raise ValueError(f"{path}: file is empty")
    frames, bad = [], []
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        lines = _Lines(mm)
        size = len(mm)
        while True:
            lines.skip_blank()
            if lines.pos >= size:
                break
            start, begin_line, fidx = lines.pos, lines.line, len(frames) + len(bad)
            start_line = begin_line
            try:
                info, start_line = _read_header(lines, path, fidx)
                if info.n_atoms:
                    end, found = _skip_lines(mm, info.atoms_offset, info.n_atoms)
                else:
                    end, found = info.atoms_offset, 0
                if end is None or not _frame_follows(mm, end):
                    item = mm.find(b"ITEM:", info.atoms_offset, size if end is None else end)
                    if item >= 0:  # the next frame's header where atom lines should be
                        found = _count_newlines(mm, info.atoms_offset, item)
                        raise ValueError(f"{path} frame {fidx}: truncated: {info.n_atoms} atoms announced, "
                                         f"{found} atom lines before {_line_at(mm, item)!r} "
                                         f"(line {info.first_line + found})")
                    if end is None:
                        raise ValueError(f"{path} frame {fidx}: truncated: {info.n_atoms} atoms announced, "
                                         f"{found} atom lines before the end of the file "
                                         f"(line {info.first_line + found})")
                    nxt = end
                    while mm[nxt:nxt + 1] in _WS:
                        nxt += 1
                    at = info.first_line + info.n_atoms + _count_newlines(mm, end, nxt)
                    raise ValueError(f"{path} frame {fidx}: more atom lines than the {info.n_atoms} announced: "
                                     f"{_line_at(mm, nxt)!r} (line {at})")
                info.end_offset = end
                info.header_line = start_line
                lines.pos, lines.line = end, info.first_line + info.n_atoms
                frames.append(info)
            except ValueError as exc:
                if not skip_bad_frames:
                    raise
                bad.append({"frame": fidx, "line": start_line, "error": str(exc)})
                own = mm[start:start + 10] == b"ITEM: TIME"  # TIMESTEP or TIME: this frame's own header
                first = mm.find(b"ITEM: TIMESTEP", start)
                nxt = mm.find(b"ITEM: TIMESTEP", first + 1) if own and first >= 0 else first
                if nxt < 0:
                    break
                while True:  # back up over the next frame's ITEM: UNITS / ITEM: TIME items
                    prev = mm.rfind(b"ITEM:", start + 1, nxt)
                    seg = mm[prev:nxt] if prev >= 0 else b""
                    if seg.split(b"\n")[0].strip() in (b"ITEM: TIME", b"ITEM: UNITS") and seg.count(b"\n") <= 3:
                        nxt = prev
                    else:
                        break
                lines.line = begin_line + _count_newlines(mm, start, nxt)
                lines.pos = nxt
    if not frames:
        msg = f"{path}: no complete frame in the file"
        raise ValueError(msg + (f" ({len(bad)} bad: {bad[0]['error']})" if bad else ""))
    return frames, bad


def _frame_follows(mm, pos: int) -> bool:
    """Only blanks, then the end of the file or an ITEM line, at ``pos``."""
    size = len(mm)
    while pos < size and mm[pos:pos + 1] in _WS:
        pos += 1
    return pos >= size or mm[pos:pos + 5] == b"ITEM:"


def _line_at(mm, pos: int) -> str:
    """The line at ``pos``, at most 120 characters of it (a line may be 50 MB long)."""
    end = mm.find(b"\n", pos, pos + 121)
    end = min(len(mm), pos + 120) if end < 0 else end
    return mm[pos:end].decode("ascii", "replace").rstrip()


# --------------------------------------------------------------------------------------------
# byte ranges


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


def byte_ranges(info: FrameInfo, n_parts: int, path=None) -> list[tuple[int, int]]:
    """Split a frame's atom lines into ``n_parts`` contiguous byte ranges of about equal size,
    each starting at a line start, together covering the atom section exactly once (some may be
    empty when lines are fewer than parts). Aligns using ``path`` (default ``info.path``); with no
    file known the cuts are left raw and ``read_atom_bytes`` aligns them identically."""
    if n_parts < 1:
        raise ValueError(f"n_parts must be >= 1, got {n_parts}")
    a, b = info.atoms_offset, info.end_offset
    cuts = [a + (b - a) * i // n_parts for i in range(n_parts + 1)]
    path = os.fspath(path) if path is not None else info.path
    if path and b > a and n_parts > 1:
        with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            cuts = [_align(mm, c, a, b) for c in cuts]
    return [(cuts[i], cuts[i + 1]) for i in range(n_parts)]


def block_ranges(info: FrameInfo, start: int | None = None, stop: int | None = None, block_bytes: int = 32 << 20,
                 path=None) -> list[tuple[int, int]]:
    """Split the byte range [start, stop) of a frame's atom lines (default: all of them; both
    aligned forward to line starts as in ``read_atom_bytes``) into consecutive blocks of about
    ``block_bytes`` bytes, each a whole number of lines: parsing them one at a time bounds the
    memory a rank needs for its share of a huge frame. Together the blocks cover exactly the
    aligned range (none when it is empty); every block holds at least one line."""
    if block_bytes < 1:
        raise ValueError(f"block_bytes must be >= 1, got {block_bytes}")
    lo, hi = info.atoms_offset, info.end_offset
    start = lo if start is None else start
    stop = hi if stop is None else stop
    path = os.fspath(path) if path is not None else info.path
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        a = _align(mm, start, lo, hi)
        b = _align(mm, max(stop, a), lo, hi)
        out = []
        while a < b:
            c = b if b - a <= block_bytes else _align(mm, a + block_bytes, a, b)
            out.append((a, c))
            a = c
    return out


def iter_atom_blocks(path, info: FrameInfo, start: int | None = None, stop: int | None = None, *,
                     block_bytes: int = 32 << 20, columns=None, row_start: int | None = None):
    """``read_atom_bytes`` of each block of ``block_ranges``, in file order: the same rows, values
    and ids as one ``read_atom_bytes(path, info, start, stop)``, a block at a time. ``row_start``
    (the range's first row, when known) saves counting lines before the range."""
    for a, b in block_ranges(info, start, stop, block_bytes, path=path):
        part = read_atom_bytes(path, info, a, b, columns=columns, row_start=row_start)
        if part["row_start"] is not None:
            row_start = part["row_start"] + part["n"]
        yield part


# --------------------------------------------------------------------------------------------
# parsing kernel

_SYMBOL_CODES = None


def _symbol_table():
    """(first byte × 256 + second byte) → atomic number, −1 for non-symbols."""
    global _SYMBOL_CODES
    if _SYMBOL_CODES is None:
        from ase.data import chemical_symbols

        table = np.full(65536, -1, dtype=np.int64)
        for z, sym in enumerate(chemical_symbols):
            if z == 0 or not sym or len(sym) > 2:
                continue
            c = sym.encode()
            table[c[0] * 256 + (c[1] if len(c) > 1 else 0)] = z
        _SYMBOL_CODES = table
    return _SYMBOL_CODES


class MalformedFrame(ValueError):
    """A frame whose atom lines cannot be used (malformed or non-finite values, duplicate ids):
    ``--skip-bad-frames`` skips such a frame; anything else is an error of the run."""


_SPACE = np.zeros(256, dtype=bool)
_SPACE[[9, 10, 11, 12, 13, 32]] = True


def _token_end(buf, off: int) -> int:
    """End of the token starting at ``off``, looked for in doubling windows (a 50 MB token
    costs a few vectorised passes, not a Python loop over its bytes)."""
    n = len(buf)
    pos, width = off, 64
    while pos < n:
        hit = np.flatnonzero(_SPACE[buf[pos:pos + width]])
        if hit.size:
            return pos + int(hit[0])
        pos += width
        width *= 2
    return n


def _fix_slow(buf, vals, slow):
    """Set the values the kernel left to ``float()`` (exact, correctly rounded)."""
    trip = np.asarray(slow, dtype=np.int64).reshape(-1, 3)
    for off, k, row in trip.tolist():
        vals[k, row] = float(bytes(buf[off:_token_end(buf, off)]))


def _row_text(mm, a: int, row: int) -> str:
    """The text of line ``row`` (0-based) of the range starting at byte ``a`` (clipped)."""
    line_start = a
    for _ in range(row):
        line_start = mm.find(b"\n", line_start) + 1
    return _line_at(mm, line_start)


def read_atom_bytes(path, info: FrameInfo, start: int | None = None, stop: int | None = None, *,
                    columns=None, row_start: int | None = None) -> dict:
    """Parse the atom lines of ``info`` within the byte range [start, stop) (both aligned forward
    to line starts; default: the whole frame) — one MPI rank's share of a huge frame.

    ``columns``: names of the extra columns wanted in ``out["columns"]`` (default all; the id,
    species and position columns are always parsed). ``row_start``: the range's first row in the
    frame if the caller knows it (it is counted only when needed: no ``id`` column).

    Returns dict: ``ids`` (n,) int64 (without an id column: row in the frame + 1), ``types``
    (n,) int64 and/or ``numbers`` (n,) int64 (from an element column), ``positions`` (n, 3)
    float64 Cartesian, ``columns`` {name: (n,) float64}, ``n``, ``row_start`` (or None when not
    counted), ``byte_range`` (aligned).
    """
    path = os.fspath(path)
    lo, hi = info.atoms_offset, info.end_offset
    start = lo if start is None else start
    stop = hi if stop is None else stop
    cols = list(info.columns)
    pos_set = info.position_columns
    if pos_set is None:
        raise ValueError(f"{path} frame {info.index}: missing columns: no positions in {' '.join(cols)} "
                         f"(line {info.first_line - 1})")
    needed = {"id", "type", "element", *pos_set[:3]}
    if columns is None:
        wanted = cols
    else:
        unknown = [c for c in columns if c not in cols]
        if unknown:
            raise ValueError(f"{path} frame {info.index}: no column {unknown[0]!r} in {' '.join(cols)}")
        wanted = [c for c in cols if c in needed or c in columns]
    kinds = np.array([(2 if c == "element" else 1) if c in wanted else 0 for c in cols], dtype=np.int64)
    dest = np.full(len(cols), -1, dtype=np.int64)
    for k, c in enumerate(wanted):
        dest[cols.index(c)] = k
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        a = _align(mm, start, lo, hi)
        b = _align(mm, max(stop, a), lo, hi)
        buf = np.frombuffer(mm, dtype=np.uint8, count=b - a, offset=a)  # no copy of the text
        try:
            vals, slow, n_rows, err_row, err_col, code = _parse_rows(buf, kinds, dest, len(wanted),
                                                                     _symbol_table(), _P10)
            if err_row < 0 and len(slow):
                _fix_slow(buf, vals, slow)
        finally:
            del buf  # release the view before the mmap closes
        if row_start is None and (a == lo or ("id" not in cols) or err_row >= 0):
            row_start = 0 if a == lo else _count_newlines(mm, lo, a)
        if err_row >= 0:
            raise MalformedFrame(f"{path} frame {info.index}: {_parse_error(code, err_col, cols)}: "
                                 f"{_row_text(mm, a, err_row)!r} (line {info.first_line + row_start + err_row}; "
                                 f"columns: {' '.join(cols)})")
        parsed = {c: vals[k] for k, c in enumerate(wanted)}
        pos_cols = np.stack([parsed[c] for c in pos_set[:3]]) if n_rows else np.zeros((3, 0))
        finite = np.isfinite(pos_cols).all(axis=0)
        if not finite.all():
            err_row = int(np.argmin(finite))
            if row_start is None:
                row_start = _count_newlines(mm, lo, a)
            atom = f"atom id {int(parsed['id'][err_row])}" if "id" in parsed else f"atom {row_start + err_row + 1}"
            raise MalformedFrame(f"{path} frame {info.index}: {atom}: position is not finite "
                                 f"({', '.join(repr(float(v)) for v in pos_cols[:, err_row])}): "
                                 f"{_row_text(mm, a, err_row)!r} (line {info.first_line + row_start + err_row})")
    out = {"columns": parsed, "byte_range": (a, b), "n": n_rows, "row_start": row_start}
    if "id" in parsed:
        out["ids"] = parsed["id"].astype(np.int64)
    else:
        out["ids"] = np.arange(row_start + 1, row_start + n_rows + 1, dtype=np.int64)
    if "element" in parsed:
        out["numbers"] = parsed["element"].astype(np.int64)
    if "type" in parsed:
        out["types"] = parsed["type"].astype(np.int64)
    out["positions"] = frame_positions(parsed, info, path)
    if columns is not None:
        for c in needed - set(columns):
            parsed.pop(c, None)
    return out


def _parse_error(code, err_col, cols) -> str:
    """What the atom-line parser's error ``code`` at column ``err_col`` means, in words."""
    if code == _E_NUMBER:
        return f"malformed number in column {err_col + 1} ({cols[err_col]})"
    if code == _E_TOO_MANY:
        return f"more than {len(cols)} values"
    if code == _E_TOO_FEW:
        return f"{err_col} values where {len(cols)} are expected"
    return f"unknown element in column {err_col + 1} ({cols[err_col]})"


def frame_positions(columns: dict, info: FrameInfo, path="dump") -> np.ndarray:
    """Cartesian positions (n, 3) from the first position column set present (see module doc)."""
    pos_set = info.position_columns
    if pos_set is None or any(c not in columns for c in pos_set[:3]):
        raise ValueError(f"{path} frame {info.index}: missing columns: no positions (x y z, xs ys zs, xu yu zu "
                         f"or xsu ysu zsu) in {' '.join(info.columns)} (line {info.first_line - 1})")
    cx, cy, cz, scaled = pos_set
    p = np.empty((len(columns[cx]), 3))
    p[:, 0], p[:, 1], p[:, 2] = columns[cx], columns[cy], columns[cz]
    if scaled:
        p = p @ info.cell
        p += info.origin
    return p


def read_frame(path, info: FrameInfo, *, rows=None, columns=None) -> dict:
    """Parse a frame's atom lines: all, or the row range ``rows`` = (start, stop) (file order,
    0-based, stop exclusive; found by counting newlines, no parsing). See ``read_atom_bytes``
    for ``columns`` and the result."""
    if rows is None:
        return read_atom_bytes(path, info, columns=columns, row_start=0)
    r0, r1 = (int(r) for r in rows)
    r0, r1 = max(0, min(r0, info.n_atoms)), max(0, min(r1, info.n_atoms))
    r1 = max(r0, r1)
    with open(os.fspath(path), "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        a = info.atoms_offset if r0 == 0 else _skip_lines(mm, info.atoms_offset, r0)[0]
        b = a if r1 == r0 else _skip_lines(mm, a, r1 - r0)[0]
    return read_atom_bytes(path, info, a, b, columns=columns, row_start=r0)


def frame_header(path, info: FrameInfo, extra_columns=()) -> bytes:
    """The frame's header as written, with ``extra_columns`` appended to ``ITEM: ATOMS``."""
    cols = " ".join([*info.columns, *extra_columns])
    lines = ["ITEM: TIMESTEP", str(info.timestep), "ITEM: NUMBER OF ATOMS", str(info.n_atoms), info.box_header,
             *info.box_lines, f"ITEM: ATOMS {cols}"]
    return ("\n".join(lines) + "\n").encode()


# --------------------------------------------------------------------------------------------
# ASE convenience

_NOT_ARRAYS = {"id", "element", "x", "y", "z", "xs", "ys", "zs", "xu", "yu", "zu", "xsu", "ysu", "zsu"}


def read_dump_frames(path, frames=slice(None), type_map: dict | None = None) -> list:
    """Frames as ``ase.Atoms``, atoms in FILE ORDER (ASE's own reader sorts them by id).

    ``frames``: an int, a slice or a list of frame numbers. ``type_map`` maps LAMMPS types to
    elements ({1: 'Ta', 2: 'W'}; symbols or atomic numbers); needed without an ``element``
    column (ValueError naming the type and the frame otherwise). Cell, pbc, ``celldisp`` = box
    origin; positions Cartesian as in the module doc (for scaled columns ASE's reader gives
    ours − origin). ``atoms.arrays['id']`` holds the ids, ``'type'`` the types, other columns
    are float arrays by name; ``atoms.info['timestep']``.
    """
    from ase import Atoms
    from ase.data import atomic_numbers

    path = os.fspath(path)
    infos, _ = index_dump(path)
    if isinstance(frames, slice):
        chosen = infos[frames]
    elif isinstance(frames, (int, np.integer)):
        chosen = [infos[frames]]
    else:
        chosen = [infos[i] for i in frames]
    lut = None
    if type_map:
        lut = np.full(max(int(t) for t in type_map) + 1, -1, dtype=np.int64)
        for t, el in type_map.items():
            z = el if isinstance(el, (int, np.integer)) else atomic_numbers.get(el)
            if z is None:
                raise ValueError(f"type_map: {el!r} (type {t}) is not a chemical element")
            lut[int(t)] = int(z)
    out = []
    for info in chosen:
        part = read_atom_bytes(path, info, row_start=0)
        if "numbers" in part:
            numbers = part["numbers"]
        else:
            types = part["types"]
            uniq = np.unique(types)
            missing = [int(t) for t in uniq if lut is None or t < 0 or t >= len(lut) or lut[t] < 0]
            if missing:
                raise ValueError(f"{path} frame {info.index}: LAMMPS type {missing[0]} has no element "
                                 f"(give type_map, e.g. {{{missing[0]}: 'Ta'}}) (line {info.first_line - 1})")
            numbers = lut[types]
        atoms = Atoms(numbers=numbers, positions=part["positions"], cell=info.cell, pbc=info.pbc,
                      celldisp=info.origin)
        atoms.arrays["id"] = part["ids"]
        for name, col in part["columns"].items():
            if name == "type":
                atoms.arrays["type"] = part["types"]
            elif name not in _NOT_ARRAYS and name not in atoms.arrays:
                atoms.arrays[name] = np.ascontiguousarray(col)
        atoms.info["timestep"] = info.timestep
        out.append(atoms)
    return out


def parse_types(text: str | None) -> dict[int, str]:
    """'1=Ta,2=W' → {1: 'Ta', 2: 'W'} (ValueError naming the bad item)."""
    from ase.data import atomic_numbers

    if not text:
        return {}
    out = {}
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        if "=" not in item:
            raise ValueError(f"--types: expected TYPE=ELEMENT, got {item!r}")
        t, el = item.split("=", 1)
        try:
            t = int(t)
        except ValueError:
            raise ValueError(f"--types: type {t!r} is not an integer") from None
        el = el.strip()
        if el not in atomic_numbers:
            raise ValueError(f"--types: {el!r} is not a chemical element")
        out[t] = el
    return out
