"""Launch ``mpiexec -n N`` subprocesses for the MPI tests (one numba/BLAS thread per rank)."""

import os
import shutil
import subprocess
import sys

import pytest

RANK_COUNTS = [1, 2, 3, 4]


def mpiexec() -> str | None:
    here = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    return here if os.path.exists(here) else shutil.which("mpiexec")


def mpi_env() -> dict:
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = "1"
    return env


def run_mpi(n: int, args: list[str], timeout: float = 120, cwd=None) -> subprocess.CompletedProcess:
    """Run ``mpiexec -n n python args...``; skip the test if there is no mpiexec."""
    exe = mpiexec()
    if exe is None:
        pytest.skip("mpiexec not found (install hpcquests[mpi])")
    cmd = [exe, "-n", str(n), sys.executable, *args]
    return subprocess.run(cmd, env=mpi_env(), capture_output=True, text=True, timeout=timeout, cwd=cwd)
