"""Launch ``mpiexec -n N`` subprocesses for the MPI tests (one numba/BLAS thread per rank).

``run_mpi(n, args, timeout)`` runs ``mpiexec -n n <python> args...`` and returns a
``subprocess.CompletedProcess``; a missing ``mpiexec`` skips the test, a run past ``timeout``
kills the whole launcher process group (no orphaned ranks left spinning) and fails the test with
the output so far.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys

import pytest

RANK_COUNTS = [1, 2, 3, 4]

# per-rank thread pools: ranks x threads must not oversubscribe the cores
THREAD_VARS = ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def mpiexec() -> str | None:
    """``mpiexec`` next to this interpreter (the venv's, from the mpich wheel), else on PATH."""
    here = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    return here if os.path.exists(here) else shutil.which("mpiexec")


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def mpi_env(n: int = 1, extra: dict | None = None) -> dict:
    """Environment for ``n`` ranks: one thread per rank; when the ranks outnumber the cores,
    MPICH waits with nanosleep instead of busy polling (ranks blocked in a collective then
    leave the cores to the ranks still computing: 3-4x faster 4-rank runs on 2 cores)."""
    env = dict(os.environ)
    for var in THREAD_VARS:
        env[var] = "1"
    if n > cpu_count():
        env.setdefault("MPIR_CVAR_ENABLE_HEAVY_YIELD", "1")  # MPICH only; other MPIs ignore it
    if extra:
        env.update(extra)
    return env


def run_mpi(n: int, args, timeout: float = 60, cwd=None, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``mpiexec -n n <sys.executable> args...`` (``args``: a script path or a list of
    arguments, e.g. ``["-m", "hpcquests", "entropy", ...]``); skip the test if there is no
    mpiexec."""
    exe = mpiexec()
    if exe is None:
        pytest.skip("mpiexec not found (install hpcquests[mpi])")
    if isinstance(args, (str, os.PathLike)):
        args = [args]
    cmd = [exe, "-n", str(n), sys.executable, *map(str, args)]
    proc = subprocess.Popen(cmd, env=mpi_env(n, env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=cwd, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        out, err = proc.communicate()
        pytest.fail(f"mpiexec -n {n} {' '.join(map(str, args))} ran past {timeout} s\n"
                    f"--- stdout\n{out}\n--- stderr\n{err}")
    finally:
        if proc.poll() is None:  # interrupted (Ctrl-C): leave no ranks behind
            _kill_group(proc)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()
