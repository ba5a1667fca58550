"""What the benchmarks that time whole processes share: one numba/BLAS thread per process, and a
subprocess run whose failure ends the benchmark with its output."""

from __future__ import annotations

import os
import subprocess

ENV1 = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}


def run(cmd, env=None, timeout=7200) -> str:
    """``cmd``'s stdout; one thread per process (``ENV1``) plus ``env``; SystemExit on failure."""
    out = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, **ENV1, **(env or {})),
                         timeout=timeout)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, cmd))} failed:\n{out.stdout[-2000:]}{out.stderr[-3000:]}")
    return out.stdout
