"""LAMMPS dump frames over ranks: the frame index, each rank's byte range of a frame's atom lines
read in blocks and sent to spatial domains with a halo of the cutoff, and the checks every frame
passes (atom types with an element, unique ids, no overlapping atoms). Shared by the UQ scan and
the trajectory analysis.

A frame that cannot be used (``io.lammps.MalformedFrame``) is agreed on by every rank of the
frame's communicator, so ``--skip-bad-frames`` skips it everywhere; without it the lowest rank that
found the problem reports it through the error channel.
"""

from __future__ import annotations

import dataclasses
import os
import time

import numpy as np


def index_frames(comm, traj, frames_option, skip_bad_frames):
    """({file frame number: FrameInfo}, the chosen frame numbers, the skipped frames) on every
    rank; rank 0 indexes the dump. ``frames_option``: "START:STOP:STEP" or None (all)."""
    from ..io import lammps
    from ..io.structures import frame_selection

    def index():
        if comm.rank != 0:
            return None
        if not os.path.exists(traj):
            raise ValueError(f"TRAJ {traj}: no such file")
        return lammps.index_dump(traj, skip_bad_frames=skip_bad_frames)

    indexed = comm.broadcast(index(), root=0)
    good, bad = indexed if isinstance(indexed, tuple) else (indexed, [])
    if not good:
        raise ValueError(f"TRAJ {traj}: no usable frame")
    # frames keep the file's numbers (skipped ones included) in every output and in --frames
    frames = {info.index: info for info in good}
    n_file = max(frames) + 1 if not bad else max(max(frames), max(b["frame"] for b in bad)) + 1
    selected = frame_selection(frames_option or ":", n_file, f"TRAJ {traj}", option="--frames")
    chosen = [f for f in selected if f in frames]
    if not chosen:
        raise ValueError(f"TRAJ {traj}: no frames selected ({n_file} in file, --frames {frames_option})")
    return frames, chosen, [b for b in bad if b["frame"] in selected]


def atomic_numbers_of(path, part, types, frame_no):
    """Atomic numbers of a parsed block: its element column, or its types through ``types``
    (ValueError naming a type without an element)."""
    numbers = part.get("numbers")
    if numbers is not None:
        return numbers
    t = part["types"]
    unknown = sorted(set(np.unique(t).tolist()) - set(types))
    if unknown:
        raise ValueError(f"TRAJ {path} frame {frame_no}: LAMMPS type {unknown[0]} has no element: pass "
                         f"--types {unknown[0]}=<element>,...")
    from ase.data import atomic_numbers

    lut = np.zeros(max(types) + 1, dtype=np.int64)
    for tt, el in types.items():
        lut[tt] = atomic_numbers[el]
    return lut[t]


def agree_malformed(comm, found: list, skip: bool):
    """Raise the agreed outcome of a frame check whose results every rank holds (``found``: one
    message or None per rank). With ``skip`` every rank raises MalformedFrame (the frame is
    skipped everywhere); otherwise the lowest rank that found a problem raises it, and the others
    stop as for another rank's error, so that the one error line names that rank."""
    from ..io.lammps import MalformedFrame
    from ..parallel.channel import EXIT_BAD_INPUT, JobStopped

    bad = [(r, m) for r, m in enumerate(found) if m is not None]
    if not bad:
        return
    rank, msg = bad[0]
    if skip or comm.rank == rank:
        raise MalformedFrame(msg)
    raise JobStopped(rank, EXIT_BAD_INPUT, msg)


def check_unique_ids(comm, ids, rows, traj, info, skip: bool = False):
    """MalformedFrame if an atom id appears twice in the frame (collective). ``ids``, ``rows``:
    this rank's atoms and their rows (lines) in the frame, any partition: ids are sent to the
    rank ``id % size`` and checked there, so no rank holds the frame's ids."""
    size = comm.size
    ids = np.asarray(ids, dtype=np.int64)
    pairs = np.stack([ids, np.asarray(rows, dtype=np.int64)], axis=1)
    if size > 1:
        dest = ids % size
        order = np.argsort(dest, kind="stable")
        pairs = comm.exchange_rows(pairs[order], np.bincount(dest, minlength=size))
    pairs = pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]
    same = np.flatnonzero(pairs[1:, 0] == pairs[:-1, 0])
    dup = None
    if same.size:
        i = int(same[0])
        dup = (int(pairs[i, 0]), int(pairs[i, 1]), int(pairs[i + 1, 1]))
    # the lowest duplicated id over all ranks: the same message on any rank count
    found = comm.gather_objects(dup)
    if any(d is not None for d in found):
        atom_id, r0, r1 = min(d for d in found if d is not None)
        msg = (f"{traj} frame {info.index}: atom id {atom_id} appears twice (lines {info.first_line + r0} and "
               f"{info.first_line + r1}): duplicate atom ids")
        agree_malformed(comm, [msg if d is not None and d[0] == atom_id else None for d in found], skip)


def owned_descriptors(binned, ids, q0, q1, k, traj, frame_no):
    """Descriptors (q1 − q0, 2k − 1) of owned atoms q0:q1 of a domain's point set; ValueError
    naming the atom id when two atoms overlap (a neighbour closer than ``MIN_DISTANCE``, or two
    coinciding neighbours)."""
    from ..descriptors import MIN_DISTANCE

    x, nn, _ = binned.descriptors(q0, q1, k)
    close = nn < MIN_DISTANCE
    if close.any():
        i = int(np.argmax(close))
        raise ValueError(f"TRAJ {traj} frame {frame_no}: atom id {int(ids[q0 + i])} has a neighbour "
                         f"{nn[i]:.4g} Å away (< {MIN_DISTANCE} Å): overlapping atoms")
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():  # two of an atom's neighbours coincide (its own nearest is far enough)
        i = int(np.argmax(bad))
        raise ValueError(f"TRAJ {traj} frame {frame_no}: atom id {int(ids[q0 + i])} has two coinciding "
                         f"neighbours: overlapping atoms")
    return x


@dataclasses.dataclass(frozen=True)
class FrameReader:
    """How a job reads its dump's frames: the file, the type map (``io.lammps.parse_types``),
    the descriptor cutoff (the halo), the block size and whether bad frames are skipped."""

    traj: str
    types: dict
    cutoff: float
    read_block: int
    skip_bad_frames: bool

    def _read_block(self, info, a, b, frame_no, row_start=None, validate=True):
        """One block of this rank's atom lines, parsed; only ids and positions are kept.
        ``validate``: parse every column and check the types (the counting pass); the sending
        pass reads the same bytes again and parses only ids and positions."""
        from ..io import lammps

        part = lammps.read_atom_bytes(self.traj, info, a, b, row_start=row_start, columns=None if validate else [])
        if validate:
            atomic_numbers_of(self.traj, part, self.types, frame_no)  # every frame: no type without an element
        return {"ids": part["ids"], "positions": part["positions"], "n": part["n"], "row_start": part["row_start"]}

    def species(self, comm, info, frame_no) -> set:
        """Chemical symbols in frame ``frame_no`` (each rank parses its byte range a block at a
        time; the union over ``comm``). A malformed frame gives what was read when skipping."""
        from ase.data import chemical_symbols

        from ..io import lammps

        start, stop = lammps.byte_ranges(info, comm.size)[comm.rank]
        found = set()
        try:
            for part in lammps.iter_atom_blocks(self.traj, info, start, stop, block_bytes=self.read_block):
                found.update(np.unique(atomic_numbers_of(self.traj, part, self.types, frame_no)).tolist())
        except lammps.MalformedFrame:
            if not self.skip_bad_frames:
                raise  # (with --skip-bad-frames the frame is skipped when it is read)
        return set().union(*comm.gather_objects({chemical_symbols[z] for z in found}))

    def read_and_exchange(self, comm, info, f, timings=None, mem=None, check_ids=True):
        """This rank's byte range of frame ``f``, parsed and sent to the spatial domains in
        blocks of lines (``read_block``), in two passes: counts (parse, plan), then data (parse
        again, send straight into the receivers' preallocated arrays). Neither the rank's share
        of the frame nor the whole send set is ever held at once.

        Returns the domain's point set (``distributed.domains.DomainExchange.finish``) with the
        owned atoms' ``id`` and ``row`` (line in the frame) and ``part`` = this rank's
        ``byte_range``, ``n`` lines and ``row_counts`` of every rank. MalformedFrame (agreed
        by every rank) for a frame that cannot be used; with ``check_ids`` duplicate ids are one.
        """
        from ..io import lammps
        from .domains import DomainExchange

        timings = {} if timings is None else timings
        rank, size = comm.rank, comm.size
        t = time.perf_counter()
        start, stop = lammps.byte_ranges(info, size)[rank]
        blocks = lammps.block_ranges(info, start, stop, self.read_block, self.traj)
        ex = DomainExchange(comm, info.cell, info.pbc, self.cutoff)
        t_parse = [0.0]

        def count_pass():
            n, row = 0, None
            for a, b in blocks:
                t0 = time.perf_counter()
                part = self._read_block(info, a, b, f, row_start=row)
                t_parse[0] += time.perf_counter() - t0
                row = None if part["row_start"] is None else part["row_start"] + part["n"]
                n += part["n"]
                ex.count(part["positions"])
            return n

        try:
            n_local, bad = count_pass(), None
        except lammps.MalformedFrame as exc:
            n_local, bad = 0, str(exc)
        gathered = comm.gather_objects((n_local, bad))
        agree_malformed(comm, [b for _, b in gathered], self.skip_bad_frames)
        row_counts = [c for c, _ in gathered]
        row_start = int(sum(row_counts[:rank]))
        has_id = "id" in info.columns
        ex.allocate({"id": np.int64} if has_id else {})
        if mem is not None:
            mem("read + exchange: counts pass")
        row = row_start
        for i in range(ex.rounds):
            if i < len(blocks):
                t0 = time.perf_counter()
                part = self._read_block(info, *blocks[i], f, row, False)
                t_parse[0] += time.perf_counter() - t0
                rows = np.arange(row, row + part["n"], dtype=np.int64)
                row += part["n"]
                ex.send(part["positions"], rows, {"id": part["ids"]} if has_id else None)
                del part, rows
            else:  # this rank's blocks are done: keep taking part in the collective rounds
                comm.poll()
                ex.send()
        dom = ex.finish()
        # for owned atoms the tie-break index is the row: no need to send it twice
        dom["row"] = dom["atom"][:dom["n_owned"]].copy()
        if not has_id:
            dom["id"] = dom["row"] + 1  # LAMMPS numbers atoms from 1; without an id column use the row
        byte_range = (blocks[0][0], blocks[-1][1]) if blocks else (start, start)
        part = {"byte_range": byte_range, "n": n_local, "row_counts": row_counts, "row_start": row_start}
        timings["read"] = timings.get("read", 0.0) + t_parse[0]
        timings["exchange"] = timings.get("exchange", 0.0) + time.perf_counter() - t - t_parse[0]
        if check_ids and has_id:  # (frame, atom id) is the key of every result row
            check_unique_ids(comm, dom["id"][:dom["n_owned"]], dom["row"], self.traj, info, self.skip_bad_frames)
        return dom, part


# --------------------------------------------------------------------------- annotated dumps

#: Bytes of atom lines per formatted block of an annotated dump (~200k lines, ~60 MB of objects).
ANNOTATE_BYTES = 8 << 20


@dataclasses.dataclass(frozen=True)
class ExtraColumn:
    """A column appended to every atom line: its name (OVITO lower-cases non-standard names, so
    names are lower case), a printf format of fixed width (the output offsets are known before
    formatting: the format pads to the width, and a value that does not fit is an error) and
    that width."""

    name: str
    fmt: bytes
    width: int

    def format(self, value) -> bytes:
        return self.fmt % value


#: δH (as the UQ scan writes it) and a cluster label. "%16.9e" writes every finite δH with a
#: two-digit exponent as "% .9e" would, and pads inf and nan to the width.
DH_COLUMN = ExtraColumn("dh", b"%16.9e", 16)
CLUSTER_COLUMN = ExtraColumn("cluster", b"%10d", 10)


def values_to_readers(comm, rows, values, part) -> np.ndarray:
    """``values`` of owned atoms (rows ``rows``) sent back to the rank that read each row, in
    this rank's file order: (part["n"],) array (collective)."""
    owner = np.searchsorted(np.cumsum(part["row_counts"]), rows, side="right")
    order = np.argsort(owner, kind="stable")
    counts = np.bincount(owner, minlength=comm.size)
    back_rows = comm.exchange_rows(np.asarray(rows)[order], counts)
    back = comm.exchange_rows(np.asarray(values)[order], counts)
    mine = np.empty(part["n"], dtype=np.asarray(values).dtype)
    mine[back_rows - part["row_start"]] = back
    return mine


def pwrite_all(fd, data: bytes, offset: int, path: str) -> None:
    """``os.pwrite`` until every byte is written (a short write is not an error of pwrite; a
    frame of NUL bytes was once renamed into place because one went unchecked)."""
    import errno

    view = memoryview(data)
    while view:
        try:
            n = os.pwrite(fd, view, offset)
        except OSError as exc:  # (pwrite names no file)
            raise OSError(exc.errno, exc.strerror, path) from exc
        if n <= 0:
            raise OSError(errno.EIO, "pwrite wrote nothing", path)
        view = view[n:]
        offset += n


def write_annotated_frame(comm, traj, info, part, columns, values, path):
    """Frame ``info`` of ``traj`` with every original column plus ``columns`` (ExtraColumn),
    each rank writing the lines it read (``part``), in file order, at its byte offset of a shared
    file, streamed in blocks so memory stays bounded; the file appears at ``path`` whole.
    ``values``: one (part["n"],) array per column, in this rank's file order."""
    from ..io import lammps

    start, stop = part["byte_range"]
    n = part["n"]
    per_line = sum(1 + c.width for c in columns)
    body_size = (stop - start) + n * per_line
    header = lammps.frame_header(traj, info, extra_columns=[c.name for c in columns]) if comm.rank == 0 else b""
    with open(traj, "rb") as fh:  # lines without a trailing newline at EOF get one
        fh.seek(max(stop - 1, 0))
        if stop > start and fh.read(1) != b"\n":
            body_size += 1
    sizes = comm.gather_objects(body_size)
    hdr_len = comm.broadcast(len(header), root=0)
    offset = hdr_len + sum(sizes[: comm.rank])
    tmp = path + ".part"
    try:
        _write_lines(comm, traj, info, part, columns, values, header, hdr_len + sum(sizes), offset, tmp)
    except BaseException:
        if comm.rank == 0:  # no half-written frame left behind, whichever rank failed
            try:
                os.remove(tmp)
            except OSError:
                pass
        raise
    if comm.rank == 0:
        os.replace(tmp, path)


def _write_lines(comm, traj, info, part, columns, values, header, total, offset, tmp):
    """The body of ``write_annotated_frame``: rank 0 creates ``tmp`` (header, full size), every
    rank writes its lines at ``offset`` and fsyncs (collective)."""
    start, stop = part["byte_range"]
    n = part["n"]
    if comm.rank == 0:
        try:
            with open(tmp, "wb") as fh:
                fh.write(header)
                fh.truncate(total)
        except OSError as exc:
            raise OSError(exc.errno, exc.strerror, tmp) from exc
    comm.wait_for_all()
    fd = os.open(tmp, os.O_WRONLY)
    try:
        with open(traj, "rb") as src:
            src.seek(start)
            remaining, row = stop - start, 0
            per_line = 1 + sum(1 + c.width for c in columns)  # the newline and each " value"
            while remaining > 0:
                raw = src.read(min(remaining, ANNOTATE_BYTES))
                remaining -= len(raw)
                if remaining > 0:  # complete the last line of this block
                    extra = src.readline()
                    remaining -= len(extra)
                    raw += extra
                lines = raw.splitlines()
                cols = [v[row:row + len(lines)].tolist() for v in values]
                if any(len(c) != len(lines) for c in cols):
                    raise ValueError(f"TRAJ {traj}: atom lines changed while reading (frame {info.index})")
                out = b"".join(line + b"".join(b" " + c.format(v) for c, v in zip(columns, vals)) + b"\n"
                               for line, *vals in zip(lines, *cols))
                if len(out) != sum(map(len, lines)) + len(lines) * per_line:
                    _raise_misfit(traj, info, columns, cols, row)
                pwrite_all(fd, out, offset, tmp)
                offset += len(out)
                row += len(lines)
            if row != n:
                raise ValueError(f"TRAJ {traj}: {row} lines in byte range but {n} atoms parsed")
        try:
            os.fsync(fd)  # every rank's lines are on disk before the file is put in place
        except OSError as exc:
            raise OSError(exc.errno, exc.strerror, tmp) from exc
    finally:
        os.close(fd)
    comm.wait_for_all()


def _raise_misfit(traj, info, columns, cols, row):
    """ValueError naming the first value that does not fit its column's width (the file's
    offsets were computed from the widths)."""
    for i, vals in enumerate(zip(*cols)):
        for c, v in zip(columns, vals):
            if len(c.format(v)) != c.width:
                raise ValueError(f"TRAJ {traj} frame {info.index}, atom line {row + i + 1}: column '{c.name}' value "
                                 f"{v!r} does not fit its {c.width}-character field ({c.format(v)!r})")
    raise ValueError(f"TRAJ {traj}: atom lines changed while reading (frame {info.index})")


def concatenate_frames(paths, target):
    """The per-frame files ``paths`` joined into one dump at ``target`` (atomically)."""
    import shutil

    from ..io.atomic import atomic_path

    with atomic_path(target) as tmp:
        with open(tmp, "wb") as out:
            for p in paths:
                with open(p, "rb") as src:
                    shutil.copyfileobj(src, out, 16 << 20)
