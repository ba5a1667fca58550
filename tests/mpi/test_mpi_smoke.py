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
rank, size = comm.Get_rank(), comm.Get_size()
data = np.arange(1000, dtype=np.float64) ** 1.5
lo, hi = partition(len(data), size, rank)
total = comm.allreduce(float(data[lo:hi].sum()))

# a small distributed dH: queries partitioned, reference replicated, results gathered
x = testing.random_descriptors(300, d=16, seed=1, scale=0.02)
y = testing.random_descriptors(101, d=16, seed=2, scale=0.02)
a, b = partition(len(y), size, rank)
part = hq.delta_entropy(y[a:b], x, 0.02) if b > a else np.zeros(0)
dh = np.concatenate(comm.allgather(part))
if rank == 0:
    print(json.dumps({"size": size, "total": total, "dh": dh.tolist()}))
'''

FAIL = r'''
import sys
from hpcquests.parallel import get_comm, agree_on_error
comm = get_comm()
err = None
try:
    if comm.Get_rank() == 1:
        raise ValueError("structure 7, atom 3: bad input on rank one")
except Exception as exc:
    err = exc
try:
    agree_on_error(comm, err)
except Exception as exc:
    if comm.Get_rank() == 0:
        print(f"error: {exc}", file=sys.stderr)
    sys.exit(3)
'''


@pytest.mark.mpi
@pytest.mark.parametrize("n", RANK_COUNTS)
def test_ranks_agree(n, tmp_path):
    import hpcquests as hq
    from hpcquests import testing

    script = tmp_path / "smoke.py"
    script.write_text(SCRIPT)
    out = run_mpi(n, [str(script)])
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
def test_one_failing_rank_stops_all(tmp_path):
    script = tmp_path / "fail.py"
    script.write_text(FAIL)
    t = time.perf_counter()
    out = run_mpi(3, [str(script)], timeout=60)
    assert time.perf_counter() - t < 20
    assert out.returncode != 0
    assert "rank 1: structure 7, atom 3: bad input on rank one" in out.stderr
