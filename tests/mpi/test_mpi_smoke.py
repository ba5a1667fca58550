"""MPI smoke tests: real ranks under mpiexec -n 1..4."""

import json
import time

import numpy as np
import pytest

from .util import RANK_COUNTS, run_mpi

SCRIPT = r'''
import json, sys
import numpy as np
from hpcquests.parallel import get_comm, partition
import hpcquests as hq
from hpcquests import testing

comm = get_comm()
rank, size = comm.rank, comm.size
data = np.arange(1000, dtype=np.float64) ** 1.5
lo, hi = partition(len(data), size, rank)
total = comm.reduce_sum(float(data[lo:hi].sum()))

# a small distributed dH: queries partitioned, reference replicated, results gathered
x = testing.random_descriptors(300, d=16, seed=1, scale=0.02)
y = testing.random_descriptors(101, d=16, seed=2, scale=0.02)
a, b = partition(len(y), size, rank)
part = hq.delta_entropy(y[a:b], x, 0.02) if b > a else np.zeros(0)
dh = np.concatenate(comm.gather_objects(part))
if rank == 0:
    print(json.dumps({"size": size, "total": total, "dh": dh.tolist()}))
'''

FAIL = r'''
import sys
from hpcquests.parallel import get_comm
from hpcquests.parallel.channel import run_collectively

comm = get_comm()


def work():
    if comm.rank == 1:
        raise ValueError("structure 7, atom 3: bad input on rank one")
    comm.wait_for_all()  # the others wait here: the stop channel wakes them


sys.exit(run_collectively("smoke", comm, work))
'''


@pytest.mark.mpi
@pytest.mark.parametrize("n", RANK_COUNTS)
def test_ranks_agree(n, tmp_path):
    import hpcquests as hq
    from hpcquests import testing

    script = tmp_path / "smoke.py"
    script.write_text(SCRIPT)
    out = run_mpi(n, [str(script)], timeout=60)
    assert out.returncode == 0, out.stderr
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1, out.stdout  # printed once, by rank 0
    res = json.loads(lines[0])
    assert res["size"] == n
    assert res["total"] == pytest.approx(float((np.arange(1000.0) ** 1.5).sum()), rel=1e-14)
    x = testing.random_descriptors(300, d=16, seed=1, scale=0.02)
    y = testing.random_descriptors(101, d=16, seed=2, scale=0.02)
    serial = hq.delta_entropy(y, x, 0.02)
    got = np.array(res["dh"])
    assert np.abs(got - serial).max() <= 1e-12 * max(1.0, np.abs(serial).max())


@pytest.mark.mpi
@pytest.mark.parametrize("n", [2, 3, 4])
def test_one_failing_rank_stops_all(n, tmp_path):
    script = tmp_path / "fail.py"
    script.write_text(FAIL)
    t = time.perf_counter()
    out = run_mpi(n, [str(script)], timeout=60)
    assert time.perf_counter() - t < 20
    assert out.returncode == 2
    assert "smoke: error: rank 1: structure 7, atom 3: bad input on rank one" in out.stderr
    assert out.stderr.count("bad input on rank one") == 1  # printed once, by rank 0


HANG = r'''
import sys, time
from hpcquests.parallel import get_comm
comm = get_comm()
print("started", flush=True)
if comm.rank == 0:
    time.sleep(600)  # the other ranks wait in the barrier
comm.wait_for_all()
'''


@pytest.mark.mpi
def test_launcher_timeout_kills_every_rank(tmp_path):
    """A run past its timeout fails the test and leaves no rank behind (spinning in a barrier)."""
    psutil = pytest.importorskip("psutil")
    script = tmp_path / "hang_marker_for_cleanup.py"
    script.write_text(HANG)
    t = time.perf_counter()
    with pytest.raises(pytest.fail.Exception, match="ran past 5 s"):
        run_mpi(2, [str(script)], timeout=5)
    assert time.perf_counter() - t < 30
    time.sleep(0.5)
    left = [p for p in psutil.process_iter(["cmdline"]) if str(script) in " ".join(p.info["cmdline"] or [])]
    assert not left, left
