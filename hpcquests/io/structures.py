"""Reading structure files with ASE, with errors that name the file.

``parallel=False`` is passed to every ASE call: once mpi4py is imported ASE's I/O turns
collective (rank 0 reads and broadcasts), which hangs per-rank reads.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def read_structures(paths, index=":") -> list:
    """Read every structure of one or more files (any format ASE reads).

    Args:
        paths: a path or a list of paths.
        index: ASE frame selection applied to each file (default ':' = all frames).

    Returns:
        list of ``ase.Atoms`` in file order, then frame order.

    Raises:
        ValueError naming the file when it is missing, unreadable, or holds no structure.
    """
    import ase.io

    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    frames = []
    for path in paths:
        path = os.fspath(path)
        if not os.path.exists(path):
            raise ValueError(f"{path}: no such file")
        if os.path.isdir(path):
            raise ValueError(f"{path}: is a directory, expected a structure file")
        if os.path.getsize(path) == 0:
            raise ValueError(f"{path}: file is empty")
        try:
            got = ase.io.read(path, index=index, parallel=False)
        except Exception as exc:  # ASE raises many types; report them uniformly
            msg = str(exc) or type(exc).__name__
            raise ValueError(f"{path}: cannot read structures ({type(exc).__name__}: {msg})") from None
        got = got if isinstance(got, list) else [got]
        if not got:
            raise ValueError(f"{path}: no structures in file (index {index!r})")
        frames.extend(got)
    return frames


def file_checksum(path, algorithm: str = "sha256") -> str:
    """``"<algorithm>:<hex digest>"`` of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return f"{algorithm}:{h.hexdigest()}"


def is_hdf5(path) -> bool:
    """True if ``path`` is a file starting with the HDF5 signature (False if missing)."""
    try:
        with open(Path(path), "rb") as fh:
            return fh.read(8) == HDF5_SIGNATURE
    except OSError:
        return False
