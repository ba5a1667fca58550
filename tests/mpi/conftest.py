"""Fixtures for tests that launch ``mpiexec -n N`` (helpers live in ``tests/mpi/util.py``)."""

import pytest

from .util import RANK_COUNTS, run_mpi


@pytest.fixture
def mpi_run():
    """``mpi_run(n, args, timeout=60, cwd=None, env=None)``: see ``util.run_mpi``."""
    return run_mpi


@pytest.fixture(params=RANK_COUNTS, ids=lambda n: f"np{n}")
def nranks(request):
    """Parametrize a test over 1, 2, 3 and 4 ranks."""
    return request.param
