"""Named fault-injection points, for the tests of the error and preemption contract.

``HPCQUESTS_FAULT`` holds comma-separated ``POINT@RANK=ACTION`` items (``@RANK`` optional: every
rank; ``POINT`` may end in ``#N``: only the N-th time the point is reached with that rank,
counting from 1).
``inject(POINT, rank)`` performs the action when an item matches:

- ``value``: raise ``ValueError("injected fault at POINT (rank R)")`` (bad input, exit 2);
- ``runtime``: raise ``RuntimeError`` (an internal error, exit 1);
- ``usr2`` / ``term``: send this process SIGUSR2 / SIGTERM (a preemption);
- ``kill``: SIGKILL this process (a crash: no cleanup at all);
- ``sleep:S``: sleep S seconds (a slow rank).

Unset (always, outside tests), ``inject`` costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal
import time

ENV = "HPCQUESTS_FAULT"
_COUNTS: dict[tuple, int] = {}


def _items():
    spec = os.environ.get(ENV)
    if not spec:
        return ()
    out = []
    for item in spec.split(","):
        item = item.strip()
        if not item or "=" not in item:
            continue
        where, action = item.split("=", 1)
        rank = None
        if "@" in where:
            where, r = where.split("@", 1)
            rank = int(r)
        nth = None
        if "#" in where:
            where, n = where.split("#", 1)
            nth = int(n)
        out.append((where, rank, nth, action))
    return out


def launcher_rank() -> int:
    for var in ("PMI_RANK", "PMIX_RANK", "OMPI_COMM_WORLD_RANK", "SLURM_PROCID"):
        if var in os.environ:
            return int(os.environ[var])
    return 0


def inject(point: str, rank: int | None = None) -> None:
    """Perform the fault configured for ``point`` on ``rank`` (default: the launcher's rank of
    this process, for points reached before a communicator exists; see the module docstring)."""
    if ENV not in os.environ:
        return
    if rank is None:
        rank = launcher_rank()
    key = (point, rank)  # a serial helper run inside a rank (reported as rank 0) counts apart
    _COUNTS[key] = _COUNTS.get(key, 0) + 1
    for where, r, nth, action in _items():
        if where != point or (r is not None and r != rank) or (nth is not None and nth != _COUNTS[key]):
            continue
        if action == "value":
            raise ValueError(f"injected fault at {point} (rank {rank})")
        if action == "runtime":
            raise RuntimeError(f"injected fault at {point} (rank {rank})")
        if action == "usr2":
            os.kill(os.getpid(), signal.SIGUSR2)
        elif action == "term":
            os.kill(os.getpid(), signal.SIGTERM)
        elif action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        elif action.startswith("sleep:"):
            time.sleep(float(action.split(":", 1)[1]))
