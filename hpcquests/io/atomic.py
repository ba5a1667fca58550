"""Atomic file creation: write to a temporary name in the target directory, rename on success."""

from __future__ import annotations

import contextlib
import os

from .durable import temporary_name


@contextlib.contextmanager
def atomic_path(path: str):
    """Yield a temporary path next to ``path``; ``os.replace`` it onto ``path`` if the block
    succeeds, remove it otherwise, so readers never see a half-written file."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise ValueError(f"output directory {directory} does not exist")
    if not os.access(directory, os.W_OK):
        raise ValueError(f"output directory {directory} is not writable")
    tmp = temporary_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        if exc.filename is None:  # a full disk at write or close names no file: name the target
            raise OSError(exc.errno, exc.strerror, path) from exc
        raise
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def check_output_dir(path, what: str, *, parents: bool = True) -> None:
    """Create output directory ``path`` if needed (with its parents, or only when its parent
    exists) and check that files can be created in it, up front (before any work): ValueError
    naming ``what`` (the option) and the reason."""
    path = os.fspath(path)
    parent = os.path.dirname(os.path.abspath(path)) or "."
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"{what} {path}: exists and is not a directory")
    if not parents and not os.path.isdir(parent):
        raise ValueError(f"{what} {path}: parent directory {parent} does not exist")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"{what} {path}: cannot create the directory ({exc.strerror})") from None
    _probe(path, what, path)


def check_output_file(path, what: str) -> None:
    """Check up front that file ``path`` can be written (its directory exists and takes a new
    file; the path is not a directory): ValueError naming ``what`` and the reason."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path)) or "."
    if os.path.isdir(path):
        raise ValueError(f"{what} {path}: is a directory")
    if not os.path.isdir(directory):
        raise ValueError(f"{what} {path}: directory {directory} does not exist")
    _probe(directory, what, path)


def _probe(directory, what, path):
    """Create and remove a file in ``directory`` (os.access says yes to root on read-only mounts)."""
    probe = os.path.join(directory, f".hpcquests-probe-{os.getpid()}")
    try:
        with open(probe, "wb"):
            pass
        os.remove(probe)
    except OSError as exc:
        raise ValueError(f"{what} {path}: {directory} is not writable ({exc.strerror})") from None
