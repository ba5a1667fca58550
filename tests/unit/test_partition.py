import numpy as np
import pytest

from hpcquests.parallel import SerialComm, get_comm, partition, weighted_partition
from hpcquests.parallel.channel import run_collectively


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
    assert comm.reduce_sum(3) == 3 and comm.gather_objects(1) == [1] and comm.broadcast("x") == "x"
    assert run_collectively("prog", comm, lambda: None) == 0


LAUNCHER_VARS = ("PMI_RANK", "PMI_SIZE", "PMIX_RANK", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS", "HYDRA_CONTROL_FD",
                 "MV2_COMM_WORLD_SIZE", "I_MPI_HYDRA_HOST_FILE", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_STEP_NUM_TASKS")


def _no_launcher(monkeypatch):
    for v in LAUNCHER_VARS:
        monkeypatch.delenv(v, raising=False)


def test_partition_every_index_once():
    for n in range(0, 40):
        for size in range(1, 9):
            owner = np.full(n, -1)
            for r in range(size):
                a, b = partition(n, size, r)
                assert 0 <= a <= b <= n
                assert (owner[a:b] == -1).all()
                owner[a:b] = r
                assert b - a == n // size + (1 if r < n % size else 0)  # first n % size ranks get one more
            assert (owner >= 0).all() and (np.diff(owner) >= 0).all()


def test_partition_size_larger_than_n():
    assert [partition(2, 5, r) for r in range(5)] == [(0, 1), (1, 2), (2, 2), (2, 2), (2, 2)]
    assert [partition(0, 3, r) for r in range(3)] == [(0, 0)] * 3
    assert partition(np.int64(10), np.int32(3), np.int64(2)) == (7, 10)


@pytest.mark.parametrize("seed", range(12))
def test_weighted_partition_properties(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(0, 60))
    size = int(rng.integers(1, 12))
    w = rng.integers(0, 500, n) * (rng.random(n) < 0.9)  # some zero-weight items
    blocks = [weighted_partition(w, size, r) for r in range(size)]
    assert blocks == [weighted_partition(list(w), size, r) for r in range(size)]  # deterministic, input type free
    owner = np.full(n, -1)
    for r, (a, b) in enumerate(blocks):
        assert 0 <= a <= b <= n
        assert (owner[a:b] == -1).all()
        owner[a:b] = r
    assert (owner >= 0).all()
    if n and w.sum() > 0:
        # every block holds at most its fair share plus one item
        target = w.sum() / size
        assert max(int(w[a:b].sum()) for a, b in blocks) <= target + w.max() + 1e-9


def test_weighted_partition_more_ranks_than_items():
    w = [10, 1, 10]
    blocks = [weighted_partition(w, 8, r) for r in range(8)]
    assert sum(b - a for a, b in blocks) == 3
    assert sorted({i for a, b in blocks for i in range(a, b)}) == [0, 1, 2]
    assert sum(1 for a, b in blocks if b == a) == 5  # empty ranks allowed


def test_weighted_partition_errors():
    for args in [([1, 2], 0, 0), ([1, 2], 2, 2), ([1, 2], 2, -1), ([1, np.nan], 2, 0), ([1, np.inf], 1, 0)]:
        with pytest.raises(ValueError):
            weighted_partition(*args)


def test_serial_comm_api():
    """The serial stand-in has every named operation of ``Comm``, with one rank's answers."""
    comm = SerialComm()
    assert (comm.rank, comm.size, comm.is_serial) == (0, 1, True)
    for reduce in (comm.reduce_sum, comm.reduce_max, comm.reduce_min):
        assert reduce(2.5) == 2.5
    assert comm.reduce_max((1.0, -3)) == (1.0, -3)
    assert comm.any_rank(1) is True and comm.every_rank(0) is False
    assert comm.gather_to_root("a") == ["a"] and comm.gather_objects({"k": 1}) == [{"k": 1}]
    assert comm.broadcast([1, 2], root=0) == [1, 2]
    with pytest.raises(ValueError, match="root"):
        comm.broadcast(1, root=1)
    a = np.arange(6.0).reshape(3, 2)
    assert comm.broadcast_array(a) is a
    s = comm.sum_array(a)
    assert s is not a and np.array_equal(s, a)
    assert np.array_equal(comm.gather_rows(a), a) and np.array_equal(comm.gather_rows_to_root(a), a)
    assert comm.row_layout(7) == (0, 7)
    assert comm.exchange_counts([4]).tolist() == [4]
    assert np.array_equal(comm.exchange_rows(a, [3]), a)
    recv = np.zeros((5, 2))
    comm.exchange_rows_into(a, [3], recv, [3], [1])
    assert np.array_equal(recv[1:4], a) and not recv[0].any()
    seen = []
    comm.ring_pass(a, [3], seen.append)
    assert len(seen) == 1 and seen[0] is a
    vote = comm.maxloc_vote(2.0, 5)
    assert vote.test() and vote.result() == (2.0, 5)
    assert comm.wait_for_all() is None and comm.poll() is None
    assert comm.node_rank() == 0 and comm.node_size() == 1 and comm.self_handle() is None
    assert comm.duplicate() is comm and comm.release() is None


def test_serial_comm_node_rank_comes_from_the_launcher(monkeypatch):
    from hpcquests.parallel import launcher_local_rank

    for v in ("OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "PMI_LOCAL_RANK", "MV2_COMM_WORLD_LOCAL_RANK",
              "PALS_LOCAL_RANKID", "SLURM_LOCALID", "JSM_NAMESPACE_LOCAL_RANK", "LOCAL_RANK"):
        monkeypatch.delenv(v, raising=False)
    assert SerialComm().node_rank() == 0
    monkeypatch.setenv("SLURM_LOCALID", "3")
    assert SerialComm().node_rank() == 3 == launcher_local_rank()


def test_get_comm_passes_through_ours_and_refuses_other_objects():
    comm = SerialComm()
    assert get_comm(comm) is comm
    with pytest.raises(TypeError, match="comm must be"):
        get_comm(object())


def _raise(exc):
    def fn():
        raise exc
    return fn


def test_run_collectively_exit_codes_and_one_line(capsys):
    """Every failure becomes one line and its exit status (serial stand-in)."""
    import errno

    comm = SerialComm()
    cases = [(ValueError("structure 3: bad"), 2, "prog: error: structure 3: bad"),
             (OSError(errno.ENOSPC, "No space left on device"), 74, "prog: error: [Errno 28] No space left on device"),
             (FileNotFoundError(errno.ENOENT, "No such file", "x.h5"), 2, "prog: error: [Errno 2] No such file: 'x.h5'"),
             (RuntimeError("oops"), 1, "prog: error: internal error (RuntimeError: oops); rerun with HPCQUESTS_DEBUG=1"),
             (KeyboardInterrupt(), 130, "prog: error: interrupted")]
    for exc, code, line in cases:
        assert run_collectively("prog", comm, _raise(exc)) == code
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(line), (exc, err)


def test_run_collectively_success_hook_only_on_success():
    seen = []
    assert run_collectively("prog", SerialComm(), lambda: None, on_success=lambda: seen.append(1)) == 0
    assert run_collectively("prog", SerialComm(), _raise(ValueError("x")), on_success=lambda: seen.append(2)) == 2
    assert seen == [1]


def test_import_does_not_touch_mpi(monkeypatch):
    """``import hpcquests``/``hpcquests.parallel`` and a serial get_comm() never import mpi4py."""
    import os
    import subprocess
    import sys

    _no_launcher(monkeypatch)
    code = ("import sys, hpcquests, hpcquests.parallel as p\n"
            "assert not [m for m in sys.modules if m.startswith('mpi4py')], 'import'\n"
            "c = p.get_comm()\n"
            "assert type(c).__name__ == 'SerialComm'\n"
            "assert not [m for m in sys.modules if m.startswith('mpi4py')], 'get_comm'\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=dict(os.environ))
    assert out.returncode == 0, out.stderr


def test_falls_back_when_mpi4py_missing(monkeypatch):
    import sys

    from hpcquests.parallel import mpi_info

    monkeypatch.setenv("PMI_RANK", "0")
    monkeypatch.setenv("PMI_SIZE", "2")
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # import mpi4py -> ImportError
    monkeypatch.setitem(sys.modules, "mpi4py.MPI", None)
    assert isinstance(get_comm(), SerialComm)
    info = mpi_info()
    assert info["size"] == 1 and "unavailable" in info["mpi4py"]


def test_mpi_info_serial(monkeypatch):
    from hpcquests.parallel import mpi_info

    _no_launcher(monkeypatch)
    info = mpi_info()
    assert info["launched"] is False and info["size"] == 1
    assert {"mpi4py", "library"} <= set(info) or "unavailable" in info.get("mpi4py", "")
