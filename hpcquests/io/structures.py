"""Reading structure files with ASE, with errors that name the file.

``parallel=False`` is passed to every ASE call: once mpi4py is imported ASE's I/O turns
collective (rank 0 reads and broadcasts), which hangs per-rank reads.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def read_structures(paths, index=":", *, types: dict | str | None = None, labels: dict | None = None) -> list:
    """Read every structure of one or more files: the one reader of every command.

    LAMMPS text dumps are read by hpcquests' own reader (``types`` maps LAMMPS types to
    elements: ``{1: "Ta"}`` or ``"1=Ta"`` as ``--types`` takes it; ASE would call type 1
    hydrogen), ColabFit Parquet exports (a ``.parquet`` file or an export directory) by
    ``io.colabfit`` (``labels`` chooses the calculation rows), anything else by ASE.

    Args:
        paths: a path or a list of paths.
        index: frame selection applied to each file: ``':'`` (all), ``'N'``, ``'START:STOP:STEP'``.

    Returns:
        list of ``ase.Atoms`` in file order, then frame order.

    Raises:
        ValueError naming the file when it is missing, unreadable, or holds no structure, and
        naming ``--index`` when the selection is outside the file.
    """
    import ase.io

    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    if isinstance(types, str):  # the command line's '1=Ta,2=W'
        from .lammps import parse_types

        types = parse_types(types)
    frames = []
    for path in paths:
        path = os.fspath(path)
        if not os.path.exists(path):
            raise ValueError(f"{path}: no such file")
        from .colabfit import is_parquet_dataset, read_colabfit_parquet

        if is_parquet_dataset(path):
            got, _ = read_colabfit_parquet(path, labels=labels)
            frames.extend(got[i] for i in frame_selection(index, len(got), path))
            continue
        if os.path.isdir(path):
            raise ValueError(f"{path}: is a directory, expected a structure file")
        if os.path.getsize(path) == 0:
            raise ValueError(f"{path}: file is empty")
        if is_lammps_dump(path):
            from . import lammps

            n = len(lammps.index_dump(path)[0])
            frames.extend(lammps.read_dump_frames(path, frame_selection(index, n, path), type_map=types or None))
            continue
        try:  # every frame, then our selection: its errors name --index and the frame count
            got = ase.io.read(path, index=":", parallel=False)
        except Exception as exc:  # ASE raises many types; report them uniformly
            msg = str(exc) or type(exc).__name__
            raise ValueError(f"{path}: cannot read structures ({type(exc).__name__}: {msg})") from None
        got = got if isinstance(got, list) else [got]
        if not got:
            raise ValueError(f"{path}: no structures in file")
        frames.extend(got[i] for i in frame_selection(index, len(got), path))
    return frames


def frame_selection(index, n: int, path, option: str = "--index") -> list[int]:
    """Frame numbers chosen by ``index`` (':' / 'N' / 'START:STOP:STEP', negative counting from
    the end) among ``n``; ValueError naming ``option`` and the file's frame count when it chooses
    a frame that is not there, or none. The one parser of frame selections (``--index`` of the
    commands, ``--frames`` of the UQ scan)."""
    text = str(index).strip() if index is not None else ":"
    try:
        parts = [int(p) if p.strip() else None for p in text.split(":")]
    except ValueError:
        raise ValueError(f"{option} {text!r}: expected N or START:STOP:STEP") from None
    if len(parts) == 1:
        i = parts[0]
        if i is None or not -n <= i < n:
            raise ValueError(f"{option} {text}: {path} has {n} frame(s) (0..{n - 1}, or -{n}..-1)")
        return [i % n]
    if len(parts) > 3:
        raise ValueError(f"{option} {text!r}: expected N or START:STOP:STEP")
    if len(parts) == 3 and parts[2] == 0:
        raise ValueError(f"{option} {text!r}: the step cannot be 0")
    chosen = list(range(n))[slice(*parts)]
    if not chosen:
        raise ValueError(f"{option} {text}: selects no frame of {path} ({n} frame(s))")
    return chosen


def is_lammps_dump(path) -> bool:
    """A LAMMPS text dump: its first non-blank line is an ``ITEM:`` line."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096).lstrip()
    except OSError:
        return False
    return head.startswith(b"ITEM: TIMESTEP") or head.startswith(b"ITEM: UNITS") or head.startswith(b"ITEM: TIME")


def file_checksum(path, algorithm: str = "sha256") -> str:
    """``"<algorithm>:<hex digest>"`` of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.new(algorithm)
    if os.path.isdir(path):  # a ColabFit export directory: its Parquet files, names and bytes
        from .colabfit import parquet_files

        files = parquet_files(path)
    else:
        files = [path]
    for f in files:
        if len(files) > 1 or f != path:
            h.update(os.path.relpath(f, path).encode() + b"\0")
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return f"{algorithm}:{h.hexdigest()}"


def is_hdf5(path) -> bool:
    """True if ``path`` is a file holding the HDF5 signature where HDF5 looks for it: at byte 0
    or after a user block (512, 1024, 2048, ... bytes; our store masters have one). False if
    missing."""
    try:
        with open(Path(path), "rb") as fh:
            for offset in (0, *(512 << i for i in range(12))):
                fh.seek(offset)
                head = fh.read(8)
                if head == HDF5_SIGNATURE:
                    return True
                if len(head) < 8:
                    return False
            return False
    except OSError:
        return False


# --------------------------------------------------------------------------- datasets (any format)

def count_structures(path) -> int:
    """Number of structures of a dataset (Parquet: from the file footers, nothing else read)."""
    from .colabfit import is_parquet_dataset, parquet_files

    path = os.fspath(path)
    if is_parquet_dataset(path):
        return sum(_parquet_rows(f) for f in parquet_files(path))
    return len(read_structures(path))


def _parquet_rows(file) -> int:
    from .colabfit import _open

    return _open(file).metadata.num_rows


def read_dataset(path, *, labels: dict | None = None, types: dict | None = None, index=":") -> tuple[list, list[str]]:
    """Every structure of a dataset and its id: a ColabFit Parquet export (file or directory;
    rows grouped into configurations, see ``iter_colabfit_parquet``), a LAMMPS dump (``types``
    maps its types to elements), or any file ASE reads (extxyz, ...). Ids come from the
    Parquet id column or the structure's info (``configuration_id``, ``co_id``, ``id``,
    ``name``), else the index in the file.

    Raises ValueError naming the file (and row/frame) on a missing, empty or malformed dataset.
    """
    from .colabfit import INFO_ID_KEYS, check_cell, is_parquet_dataset, read_colabfit_parquet

    path = os.fspath(path)
    if not os.path.exists(path):
        raise ValueError(f"dataset {path}: no such file or directory")
    if is_parquet_dataset(path):
        structures, ids = read_colabfit_parquet(path, labels=labels)
        return _select(structures, index, path), _select(ids, index, path)
    if labels:
        raise ValueError(f"--labels applies to ColabFit Parquet exports; {path} is not one")
    if os.path.isdir(path):
        raise ValueError(f"dataset {path}: a directory without Parquet files")
    if os.path.getsize(path) == 0:
        raise ValueError(f"dataset {path} is empty (no structures)")
    structures = read_structures(path, index=index, types=types)
    ids = []
    for i, a in enumerate(structures):
        check_cell(a.cell.array, a.pbc, f"{path}: frame {i}")
        cid = next((a.info[k] for k in INFO_ID_KEYS if k in a.info), None)
        ids.append(str(cid) if cid is not None else str(i))
    return structures, ids


def _select(items, index, path):
    sel = frame_selection(index, len(items), path)
    return [items[i] for i in sel]
