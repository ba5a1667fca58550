"""Test-wide settings: a per-test time limit for every test that launches subprocesses."""

import os

import pytest

#: pytest-timeout limits (s) of the tests below these folders: every one runs subprocesses
#: (mpiexec, Slurm jobs), and a hang must fail fast
SUBPROCESS_TEST_LIMITS = {"mpi": 300, "slurm": 600}
HERE = os.path.dirname(os.path.abspath(__file__))


def pytest_collection_modifyitems(config, items):
    """The signal method interrupts the wait for the subprocess, whose launcher group the
    helpers then kill (the thread method would end pytest and leave the ranks behind)."""
    for item in items:
        rel = os.path.relpath(str(item.fspath), HERE).split(os.sep)
        limit = SUBPROCESS_TEST_LIMITS.get(rel[0]) if len(rel) > 1 else None
        if limit and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(limit, method="signal"))
