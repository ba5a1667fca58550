"""Durable writes: the one I/O path for files whose presence means "done".

A file is built completely in memory (bytes; an HDF5 file as an in-memory image), then written
to a temporary name in the target directory by a loop that checks every ``os.write`` (a short
write or ENOSPC is an ``OSError``, never a half file taken for a whole one), ``fsync``ed,
closed, renamed onto its name, and the directory ``fsync``ed. Only after that does the file
count. HDF5's own disk I/O is not used for such files: h5py can swallow write errors at close
(and a full disk crashed the process), while here every failure is an ``OSError`` with its
errno, which the error channel turns into exit 74 (``EX_IOERR``) on every rank.

Large HDF5 files (a store's shards and master) are not built in memory: ``durable_hdf5`` gives
an ``h5py.File`` whose every byte goes through ``CheckedFile`` (h5py's file-object driver), the
same checked write loop and fault points, the first error kept and raised after HDF5 closes the
file (HDF5 may swallow an error a callback raised), then the same fsync, close and rename.

Fault injection (tests): ``HPCQUESTS_IOFAULT=OP[#N][@RANK]=ERR,...`` makes the N-th ``OP`` of
this process (of the launcher's rank RANK) fail (``write``, ``fsync``, ``close``, ``rename``;
ERR ``ENOSPC``, ``EIO`` or ``kill`` to SIGKILL the process at that step).
``HPCQUESTS_IOFAULT=count:FILE`` injects nothing and appends ``OP RANK`` to FILE at every point
reached: the census a fault sweep iterates over.
"""

from __future__ import annotations

import contextlib
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
    if spec.startswith("count:"):  # the sweep's census: log every fault point reached
        with open(spec[len("count:"):], "a") as log:
            log.write(f"{op} {launcher_rank()}\n")
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


def _write_all(fd: int, view: memoryview, offset: int | None, path: str) -> None:
    """Write all of ``view`` (at ``offset``, or at the file position when None), looping over
    short writes; every call is a fault point."""
    pos = 0
    while pos < len(view):
        _fault("write", path)
        part = view[pos:pos + (64 << 20)]
        n = os.write(fd, part) if offset is None else os.pwrite(fd, part, offset + pos)
        if n <= 0:
            raise OSError(errno.EIO, "write wrote nothing", path)
        pos += n


def temporary_name(path) -> str:
    """``.NAME.tmp-PID`` next to ``path``: where a file is written before its rename."""
    path = os.fspath(path)
    return os.path.join(os.path.dirname(os.path.abspath(path)) or ".", f".{os.path.basename(path)}.tmp-{os.getpid()}")


@contextlib.contextmanager
def _committed(path, flags: int):
    """Yield ``(fd, tmp)``: a new temporary next to ``path``. When the block succeeds the file
    is fsynced, closed, renamed onto ``path`` and its directory fsynced (each step a fault
    point); on any failure it is closed and removed, and ``path`` is untouched."""
    path = os.fspath(path)
    tmp = temporary_name(path)
    fd = os.open(tmp, flags, 0o644)
    done = False
    try:
        yield fd, tmp
        _fault("fsync", tmp)
        os.fsync(fd)
        _fault("close", tmp)
        os.close(fd)
        fd = None
        _fault("rename", tmp)
        os.replace(tmp, path)
        done = True
    except OSError as exc:
        if exc.filename is None:  # os.write/fsync name no file: say which one the user asked for
            raise OSError(exc.errno, exc.strerror, path) from exc
        raise
    finally:
        if fd is not None:
            os.close(fd)
        if not done:
            try:
                os.remove(tmp)
            except OSError:
                pass
    _fsync_dir(os.path.dirname(tmp))


def write_durably(path, data) -> None:
    """Write ``data`` (bytes-like) to ``path`` atomically and durably (see the module doc).
    Raises OSError (with the path) on any failure; the target is then untouched."""
    with _committed(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC) as (fd, tmp):
        _write_all(fd, memoryview(data).cast("B"), None, tmp)


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def remove_stale_temporaries(directory, *, recursive: bool = False) -> int:
    """Remove the temporary files (``.NAME.tmp-PID``) that killed writers left in ``directory``
    (and below it with ``recursive``): those whose process is no longer alive on this host. A
    live writer's temporary is left alone. Returns the number removed."""
    import re

    pattern = re.compile(r"^\..+\.tmp-(\d+)$")
    removed = 0
    if recursive:
        walk = os.walk(directory)
    else:
        walk = [(directory, None, os.listdir(directory))] if os.path.isdir(directory) else []
    for root, _, names in walk:
        for name in names:
            m = pattern.match(name)
            if m and int(m.group(1)) != os.getpid() and not pid_alive(int(m.group(1))):
                try:
                    os.remove(os.path.join(root, name))
                    removed += 1
                except OSError:
                    pass
    return removed


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


_SYNC_FILE_RANGE = None
WRITEBACK_BYTES = 8 << 20  # start the disk write-out after every 8 MiB (as databases' bytes_per_sync)


def _start_writeback(fd: int) -> None:
    """Ask the kernel to start writing the file's dirty pages to disk now, without waiting
    (Linux ``sync_file_range(SYNC_FILE_RANGE_WRITE)``): the disk works while we go on writing,
    so the final ``fsync`` has little left to wait for. A no-op where unavailable; errors show
    up at the ``fsync``."""
    global _SYNC_FILE_RANGE
    if _SYNC_FILE_RANGE is None:
        _SYNC_FILE_RANGE = False
        try:
            import ctypes

            fn = ctypes.CDLL(None, use_errno=True).sync_file_range
            fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
            _SYNC_FILE_RANGE = fn
        except (OSError, AttributeError):
            pass
    if _SYNC_FILE_RANGE:
        _SYNC_FILE_RANGE(fd, 0, 0, 2)  # 2 = SYNC_FILE_RANGE_WRITE, whole file


class CheckedFile:
    """A binary file object over ``fd`` for h5py's file-object driver: writes go through the
    checked loop (``_write_all``); the first error is kept in ``error`` and never raised into
    HDF5 (``_lose``), which raises it once HDF5 is done with the file. The disk
    write-out is started every ``WRITEBACK_BYTES`` (``_start_writeback``)."""

    def __init__(self, fd: int, path: str):
        self.fd, self.path, self.pos, self.error = fd, path, 0, None
        self._unsynced = 0
        self.discard = False  # set once the file is lost (``_lose``)

    def _keep(self, exc):
        if self.error is None:
            self.error = exc

    def _lose(self, exc):
        """A write failed: the file is lost (``durable_hdf5`` raises ``exc`` once HDF5 has closed
        it, and removes it). HDF5 is told the write succeeded and later ones go nowhere: an
        error inside HDF5 can leave a file half closed, and its driver state is then freed at
        exit, after Python's, which crashes the process (exit 139 after the error line)."""
        self._keep(exc)
        self.discard = True

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        if not self.discard:
            try:
                _write_all(self.fd, view, self.pos, self.path)
            except OSError as exc:
                self._lose(exc)
        self.pos += len(view)
        self._unsynced += len(view)
        if self._unsynced >= WRITEBACK_BYTES and not self.discard:
            self._unsynced = 0
            _start_writeback(self.fd)
        return len(view)

    def readinto(self, buf) -> int:
        n = os.preadv(self.fd, [buf], self.pos)
        self.pos += n
        return n

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = max(os.fstat(self.fd).st_size - self.pos, 0)
        data = os.pread(self.fd, n, self.pos)
        self.pos += len(data)
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self.pos, 2: os.fstat(self.fd).st_size}[whence]
        self.pos = base + offset
        return self.pos

    def tell(self) -> int:
        return self.pos

    def truncate(self, size: int | None = None) -> int:
        size = self.pos if size is None else size
        if not self.discard:
            try:
                os.ftruncate(self.fd, size)
            except OSError as exc:
                self._lose(exc)
        return size

    def flush(self) -> None:
        pass

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True


SEAL_BYTES = 512  # the HDF5 user block that holds a sealed file's checksum
SEAL_MAGIC = b"hpcquests-seal v1 "


def _seal(fd: int, path: str) -> None:
    """Write the checksum of everything after the user block into the user block."""
    from ..kernels.checksum import hdf5_fletcher32

    size = os.fstat(fd).st_size
    body = os.pread(fd, size - SEAL_BYTES, SEAL_BYTES)
    header = SEAL_MAGIC + f"fletcher32={hdf5_fletcher32(body):08x} size={size}\n".encode()
    _write_all(fd, memoryview(header.ljust(SEAL_BYTES, b"\0")), 0, path)


def check_seal(path) -> bool | None:
    """True if the sealed file ``path`` is whole (checksum and size as sealed), False if not,
    None if it carries no seal. Reads the whole file (meant for small files: a store's master)."""
    from ..kernels.checksum import hdf5_fletcher32

    with open(path, "rb") as f:
        head = f.read(SEAL_BYTES)
        if not head.startswith(SEAL_MAGIC):
            return None
        body = f.read()
    try:
        fields = dict(item.split("=") for item in head[len(SEAL_MAGIC):].split(b"\n")[0].decode().split())
        return int(fields["size"]) == SEAL_BYTES + len(body) and int(fields["fletcher32"], 16) == hdf5_fletcher32(body)
    except (ValueError, KeyError, UnicodeDecodeError):
        return False


@contextlib.contextmanager
def durable_hdf5(path, *, seal: bool = False):
    """``with durable_hdf5(path) as f:`` — an ``h5py.File`` open for writing whose file appears
    at ``path`` only once it is complete and on disk (checked writes, fsync, close, rename,
    directory fsync). Any failure raises (``OSError`` for I/O) and leaves ``path`` untouched and
    no temporary file behind. ``seal``: the file gets a 512-byte HDF5 user block holding the
    checksum of the rest (``check_seal``), so any damage is found before HDF5 parses the file
    (HDF5 can crash on damaged metadata); HDF5 readers skip the user block."""
    import h5py

    with _committed(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC) as (fd, tmp):
        checked = CheckedFile(fd, tmp)
        # v110+: most metadata carries checksums too
        f = h5py.File(checked, "w", libver=("v110", "latest"), userblock_size=SEAL_BYTES if seal else 0)
        try:
            yield f
        finally:
            try:
                f.close()
            except Exception as exc:  # HDF5's own report of a failed flush at close
                checked._keep(exc if isinstance(exc, OSError) else OSError(errno.EIO, str(exc), tmp))
        if checked.error is not None:
            raise checked.error
        if seal:
            _seal(fd, tmp)


def hdf5_image(arrays: dict, attrs: dict | None = None) -> bytes:
    """An HDF5 file holding ``arrays`` (name → array, checksummed as a store's datasets) and
    ``attrs``, built in memory."""
    import h5py

    from .chunks import create_checked_dataset

    f = h5py.File(f"mem-{id(arrays)}", "w", driver="core", backing_store=False)
    try:
        for name, a in arrays.items():
            create_checked_dataset(f, name, a)  # fletcher32 chunks, as a store's shards
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
