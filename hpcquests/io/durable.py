"""Durable writes: the one I/O path for files whose presence means "done".

A file is built completely in memory (bytes; an HDF5 file as an in-memory image), then written
to a temporary name in the target directory by a loop that checks every ``os.write`` (a short
write or ENOSPC is an ``OSError``, never a half file taken for a whole one), ``fsync``ed,
closed, renamed onto its name, and the directory ``fsync``ed. Only after that does the file
count. HDF5's own disk I/O is not used for such files: h5py can swallow write errors at close
(and a full disk crashed the process), while here every failure is an ``OSError`` with its
errno, which the error channel turns into exit 74 (``EX_IOERR``) on every rank.

Fault injection (tests): ``HPCQUESTS_IOFAULT=OP[#N][@RANK]=ERR,...`` makes the N-th ``OP`` of
this process (of the launcher's rank RANK) fail (``write``, ``fsync``, ``close``, ``rename``;
ERR ``ENOSPC``, ``EIO`` or ``kill`` to SIGKILL the process at that step).
"""

from __future__ import annotations

import errno
import os
import signal

from ..faults import launcher_rank

ENV = "HPCQUESTS_IOFAULT"
_COUNTS: dict[str, int] = {}


def _fault(op: str, path: str) -> None:
    spec = os.environ.get(ENV)
    if not spec:
        return
    _COUNTS[op] = _COUNTS.get(op, 0) + 1
    for item in spec.split(","):
        if "=" not in item:
            continue
        where, what = item.strip().split("=", 1)
        where, _, rank = where.partition("@")
        name, _, nth = where.partition("#")
        if name != op or (nth and int(nth) != _COUNTS[op]) or (rank and int(rank) != launcher_rank()):
            continue
        if what == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        code = getattr(errno, what, errno.EIO)
        raise OSError(code, f"{os.strerror(code)} (injected at {op})", path)


def write_durably(path, data) -> None:
    """Write ``data`` (bytes-like) to ``path`` atomically and durably (see the module doc).
    Raises OSError (with the path) on any failure; the target is then untouched."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path)) or "."
    tmp = os.path.join(directory, f".{os.path.basename(path)}.tmp-{os.getpid()}")
    view = memoryview(data).cast("B")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    done = False
    try:
        try:
            pos = 0
            while pos < len(view):
                _fault("write", tmp)
                n = os.write(fd, view[pos:pos + (64 << 20)])
                if n <= 0:
                    raise OSError(errno.EIO, "write wrote nothing", tmp)
                pos += n
            _fault("fsync", tmp)
            os.fsync(fd)
        finally:
            _fault("close", tmp)
            os.close(fd)
        _fault("rename", tmp)
        os.replace(tmp, path)
        done = True
    finally:
        if not done:
            try:
                os.remove(tmp)
            except OSError:
                pass
    _fsync_dir(directory)


def _fsync_dir(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems do not sync directories
        pass
    finally:
        os.close(fd)


def hdf5_image(arrays: dict, attrs: dict | None = None) -> bytes:
    """An HDF5 file holding ``arrays`` (name → array) and ``attrs``, built in memory."""
    import h5py
    import numpy as np

    f = h5py.File(f"mem-{id(arrays)}", "w", driver="core", backing_store=False)
    try:
        for name, a in arrays.items():
            f.create_dataset(name, data=np.ascontiguousarray(a))
        for key, value in (attrs or {}).items():
            f.attrs[key] = value
        f.flush()
        return f.id.get_file_image()
    finally:
        f.close()


def write_hdf5_durably(path, arrays: dict, attrs: dict | None = None) -> None:
    """``write_durably`` of an in-memory HDF5 image of ``arrays``."""
    write_durably(path, hdf5_image(arrays, attrs))


def write_text_durably(path, text: str) -> None:
    write_durably(path, text.encode())
