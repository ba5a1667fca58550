"""Thread control without global side effects.

``threads(n)`` sets the numba thread count and the BLAS/OpenMP pools for the duration of a
``with`` block and restores the previous values on exit, so library calls never change the
caller's process-wide settings.
"""

from __future__ import annotations

import contextlib
import os


def available_threads() -> int:
    """Number of numba threads this process may use (NUMBA_NUM_THREADS or the core count)."""
    import numba

    return int(numba.config.NUMBA_NUM_THREADS)


def current_threads() -> int:
    """``numba.get_num_threads()`` without starting numba's thread pool for the question (a few
    milliseconds, which a store read would pay only to learn how many threads it may use): until
    the pool is started nothing can have changed the count from NUMBA_NUM_THREADS."""
    import numba
    from numba.np.ufunc import parallel

    if getattr(parallel, "_is_initialized", True):
        return numba.get_num_threads()
    return available_threads()


def resolve_threads(n: int | None) -> int:
    """Validate a thread request: ``None`` keeps the current numba setting (so an enclosing
    ``threads(...)`` block wins), 0 means all available threads."""
    import numba

    cap = available_threads()
    if n is None:
        return numba.get_num_threads()
    if n == 0:
        return cap
    n = int(n)
    if n < 0:
        raise ValueError(f"threads must be a positive integer or 0 (all), got {n}")
    return min(n, cap)


@contextlib.contextmanager
def threads(n: int | None = None, blas: int | None = 1):
    """Run a block with ``n`` numba threads and ``blas`` BLAS threads, restoring both after.

    Args:
        n: numba threads (None = keep the current setting, 0 = all available).
        blas: BLAS/OpenMP threads inside the block (default 1: our kernels parallelise over
            blocks themselves, nested BLAS threads would oversubscribe). None leaves BLAS alone.
    """
    import numba

    n = resolve_threads(n)
    previous = numba.get_num_threads()
    numba.set_num_threads(n)
    stack = contextlib.ExitStack()
    try:
        if blas is not None:
            try:
                from threadpoolctl import threadpool_limits

                # BLAS only: limiting "openmp" too would cap numba's own OpenMP threading layer
                stack.enter_context(threadpool_limits(limits=int(blas), user_api="blas"))
            except ImportError:  # pragma: no cover - threadpoolctl is a dependency
                pass
        with stack:
            yield n
    finally:
        numba.set_num_threads(previous)


def thread_info() -> dict:
    """Thread settings as seen by this process (for ``hpcquests info``)."""
    import numba

    info = {
        "numba_threads": numba.get_num_threads(),
        "numba_threading_layer": _threading_layer(),
        "cpu_count": os.cpu_count(),
    }
    try:
        from threadpoolctl import threadpool_info

        info["blas"] = [
            {k: p.get(k) for k in ("internal_api", "num_threads", "version", "architecture")}
            for p in threadpool_info()
        ]
    except Exception:  # pragma: no cover
        info["blas"] = []
    return info


def _threading_layer() -> str:
    import numba

    try:
        return numba.threading_layer()
    except ValueError:
        return "not initialised"
