"""Atomic file creation: write to a temporary name in the target directory, rename on success."""

from __future__ import annotations

import contextlib
import os


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
    tmp = os.path.join(directory, f".{os.path.basename(path)}.tmp-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
