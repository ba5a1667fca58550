import tempfile

import pytest

#: per-test limit (pytest-timeout)
TIMEOUT_S = 600

from . import slurmtools


@pytest.fixture(scope="session")
def slurm_cluster():
    reason = slurmtools.available()
    if reason:
        pytest.skip(reason)
    root = tempfile.mkdtemp(prefix="hpcq-slurm-")
    cluster = slurmtools.Cluster(root).start()
    try:
        yield cluster
    finally:
        cluster.stop()


def pytest_collection_modifyitems(config, items):
    """Every test here runs subprocesses: a hang must fail fast. The signal method interrupts
    the wait for the subprocess, whose launcher group the helpers then kill (the thread
    method would end pytest and leave the ranks behind)."""
    here = __file__.rsplit("/", 1)[0]
    for item in items:
        if str(item.fspath).startswith(here) and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(TIMEOUT_S, method="signal"))
