import numpy as np
import pytest

from hpcquests.parallel import SerialComm, agree_on_error, get_comm, partition, weighted_partition


@pytest.mark.parametrize("n", [0, 1, 2, 3, 7, 10, 101])
@pytest.mark.parametrize("size", [1, 2, 3, 4, 16])
def test_partition_covers_and_balances(n, size):
    blocks = [partition(n, size, r) for r in range(size)]
    assert blocks[0][0] == 0 and blocks[-1][1] == n
    for (a, b), (c, d) in zip(blocks, blocks[1:]):
        assert b == c
    lengths = [b - a for a, b in blocks]
    assert max(lengths) - min(lengths) <= 1
    assert lengths == sorted(lengths, reverse=True)


def test_partition_errors():
    for args in [(-1, 2, 0), (5, 0, 0), (5, 2, 2), (5, 2, -1)]:
        with pytest.raises(ValueError):
            partition(*args)


@pytest.mark.parametrize("size", [1, 2, 3, 4, 7])
def test_weighted_partition(size):
    rng = np.random.default_rng(size)
    w = rng.integers(1, 200, 50)
    blocks = [weighted_partition(w, size, r) for r in range(size)]
    assert blocks[0][0] == 0 and blocks[-1][1] == len(w)
    assert all(b == c for (_, b), (c, _) in zip(blocks, blocks[1:]))
    sums = [w[a:b].sum() for a, b in blocks]
    assert max(sums) - min(sums) <= 2 * w.max()


def test_weighted_partition_edges():
    assert weighted_partition([], 3, 1) == (0, 0)
    assert [weighted_partition([5], 3, r) for r in range(3)] in ([(0, 1), (1, 1), (1, 1)], [(0, 0), (0, 1), (1, 1)])
    assert [weighted_partition([0, 0, 0, 0], 2, r) for r in range(2)] == [(0, 2), (2, 4)]
    with pytest.raises(ValueError):
        weighted_partition([1, -1], 2, 0)


def test_serial_comm_without_launcher(monkeypatch):
    for v in ("PMI_RANK", "PMI_SIZE", "PMIX_RANK", "OMPI_COMM_WORLD_SIZE", "SLURM_PROCID", "HYDRA_CONTROL_FD"):
        monkeypatch.delenv(v, raising=False)
    comm = get_comm()
    assert isinstance(comm, SerialComm)
    assert comm.allreduce(3) == 3 and comm.allgather(1) == [1] and comm.bcast("x") == "x"
    agree_on_error(comm, None)
    with pytest.raises(ValueError, match="boom"):
        agree_on_error(comm, ValueError("boom"))
