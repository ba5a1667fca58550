import tempfile

import pytest

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
