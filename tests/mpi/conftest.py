"""Fixtures for tests that launch ``mpiexec -n N`` (helpers live in ``tests/mpi/util.py``)."""

import pytest

#: per-test limit (pytest-timeout)
TIMEOUT_S = 300

from .util import RANK_COUNTS, run_mpi


@pytest.fixture
def mpi_run():
    """``mpi_run(n, args, timeout=60, cwd=None, env=None)``: see ``util.run_mpi``."""
    return run_mpi


@pytest.fixture(params=RANK_COUNTS, ids=lambda n: f"np{n}")
def nranks(request):
    """Parametrize a test over 1, 2, 3 and 4 ranks."""
    return request.param


def pytest_collection_modifyitems(config, items):
    """Every test here runs subprocesses: a hang must fail fast. The signal method interrupts
    the wait for the subprocess, whose launcher group the helpers then kill (the thread
    method would end pytest and leave the ranks behind)."""
    here = __file__.rsplit("/", 1)[0]
    for item in items:
        if str(item.fspath).startswith(here) and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(TIMEOUT_S, method="signal"))
