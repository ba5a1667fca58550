"""The communicators: ``Comm`` (a Dup of COMM_WORLD under a launcher) and ``SerialComm`` (its
stand-in for one process), with the same named operations. Applications and drivers call only
these (broadcast, gather_objects, reduce_sum, gather_rows, exchange_rows, ring_pass,
maxloc_vote, wait_for_all, poll, ...); mpi4py stays inside this package."""

from __future__ import annotations

import os
import subprocess
import sys

import time

import numpy as np

_LAUNCHER_VARS = ("PMI_RANK", "PMI_SIZE", "PMIX_RANK", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS",
                  "HYDRA_CONTROL_FD", "MV2_COMM_WORLD_SIZE", "I_MPI_HYDRA_HOST_FILE")


def launched_by_mpi() -> bool:
    """True when the environment shows an MPI launcher (mpiexec/mpirun/srun with PMI)."""
    if any(v in os.environ for v in _LAUNCHER_VARS):
        return True
    # srun without an MPI plugin still sets SLURM_PROCID; only count it for multi-task steps
    return int(os.environ.get("SLURM_NTASKS", os.environ.get("SLURM_STEP_NUM_TASKS", "1")) or 1) > 1 \
        and "SLURM_PROCID" in os.environ


#: Environment variables holding the node-local rank, most specific first: the MPI launchers'
#: own variables come before SLURM_LOCALID, which ranks started by ``mpirun`` inside a batch
#: script inherit from the batch step (0 for all of them).
LOCAL_RANK_VARS = (
    "OMPI_COMM_WORLD_LOCAL_RANK",  # Open MPI
    "MPI_LOCALRANKID",             # MPICH / Intel MPI (hydra)
    "PMI_LOCAL_RANK",              # PMI-based launchers
    "MV2_COMM_WORLD_LOCAL_RANK",   # MVAPICH2
    "PALS_LOCAL_RANKID",           # HPE Cray PALS (aprun successor)
    "SLURM_LOCALID",               # srun
    "JSM_NAMESPACE_LOCAL_RANK",    # IBM jsrun
    "LOCAL_RANK",                  # torchrun and friends
)


def launcher_local_rank(environ=None) -> int:
    """This process's node-local rank as the launcher's environment gives it (0 when none is
    set). Used where no communicator spans the node: a serial run started several times per node."""
    env = os.environ if environ is None else environ
    for var in LOCAL_RANK_VARS:
        value = env.get(var)
        if value is None:
            continue
        try:
            r = int(str(value).strip())
        except ValueError:
            continue
        if r >= 0:
            return r
    return 0


class SerialComm:
    """The communicator of a run on one process: every named operation of ``Comm``, for one rank
    (reductions return their input, gathers a one-element list, exchanges their input), so
    drivers are written once and a serial run never initialises MPI."""

    rank = 0
    size = 1
    is_serial = True

    # -- objects
    def broadcast(self, obj, root=0):
        _check_root(root, 1)
        return obj

    def gather_to_root(self, obj, root=0):
        _check_root(root, 1)
        return [obj]

    def gather_objects(self, obj):
        return [obj]

    def reduce_sum(self, value):
        return value

    reduce_max = reduce_min = reduce_sum

    def any_rank(self, flag) -> bool:
        return bool(flag)

    every_rank = any_rank

    # -- arrays
    def broadcast_array(self, array, root=0):
        _check_root(root, 1)
        return array

    def sum_array(self, array):
        return np.array(array, copy=True)

    def gather_rows(self, local):
        return np.ascontiguousarray(local, dtype=np.float64)

    def gather_rows_to_root(self, local, root=0):
        _check_root(root, 1)
        return np.asarray(local)

    def row_layout(self, n_local) -> tuple[int, int]:
        return 0, int(n_local)

    def exchange_counts(self, send_counts):
        return np.array(send_counts, dtype=np.int64)

    def exchange_rows(self, array, send_counts):
        return np.ascontiguousarray(array)

    def exchange_rows_into(self, array, send_counts, recv, recv_counts, recv_displ):
        d, c = int(recv_displ[0]), int(recv_counts[0])
        recv[d:d + c] = np.ascontiguousarray(array, dtype=recv.dtype)[:c]

    def ring_pass(self, local, sizes, visit):
        if len(local):
            visit(local)

    def maxloc_vote(self, value: float, index: int):
        return _SettledVote(value, index)

    def wait_for_all(self):
        return None

    # -- the stop channel's interface (see ``parallel.channel``): one rank, so only signals
    def poll(self):
        """Raise ``StopRequested`` if a preemption signal is pending (outside deferred blocks)."""
        from .channel import SIGNALS, StopRequested, signal_message

        signum = SIGNALS.pending()
        if signum is not None:
            raise StopRequested(signal_message(signum))

    def finish(self, code, message=None):
        return int(code), 0, message

    def task_queue(self, n_tasks: int):
        """Tasks 0 … n_tasks − 1 handed out one at a time (``TaskQueue``)."""
        return SerialTaskQueue(n_tasks)

    # -- the node and libraries
    def node_rank(self) -> int:
        return launcher_local_rank()

    def node_size(self) -> int:
        return 1

    def self_handle(self):
        """None: a library given it runs on its own process (MPI is not initialised here)."""
        return None

    def duplicate(self):
        return self

    def release(self):
        return None


class _SettledVote:
    """A MAXLOC vote on one rank: decided at once."""

    def __init__(self, value, index):
        self._result = (float(value), int(index))

    def test(self) -> bool:
        return True

    def result(self, spin: bool = False) -> tuple[float, int]:
        return self._result


class Comm:
    """A real communicator that exposes only named operations, whose blocking collectives cannot
    hang on a rank that has stopped.

    Each blocking operation first meets the other ranks in a non-blocking barrier, polling the
    ``StopChannel`` while it waits: when another rank has failed or been preempted, this raises
    ``JobStopped`` / ``StopRequested`` instead of waiting forever. Once every rank has arrived,
    the collective itself runs (it can no longer block on a departed rank). Point-to-point
    transfers (the ring) and the non-blocking MAXLOC vote are waited for while polling too.
    The mpi4py communicator is private to this package.
    """

    is_serial = False

    def __init__(self, raw):
        from .channel import StopChannel

        MPI = _import_mpi()
        self._raw = raw
        self._MPI = MPI
        self.rank = raw.Get_rank()
        self.size = raw.Get_size()
        self._channel = StopChannel(raw, MPI)

    def _meet(self):
        self._channel.poll()
        self._channel.wait(self._raw.Ibarrier())

    def _wait(self, req):
        self._channel.wait(req)

    # -- objects
    def broadcast(self, obj, root=0):
        """``obj`` of rank ``root``, on every rank (any picklable object)."""
        _check_root(root, self.size)
        self._meet()
        return self._raw.bcast(obj, root=root)

    def gather_to_root(self, obj, root=0):
        """Every rank's ``obj`` in rank order on ``root``; None elsewhere."""
        _check_root(root, self.size)
        self._meet()
        return self._raw.gather(obj, root=root)

    def gather_objects(self, obj):
        """Every rank's ``obj`` in rank order, on every rank."""
        self._meet()
        return self._raw.allgather(obj)

    def reduce_sum(self, value):
        """Sum over ranks of a number or a numpy array (elementwise), on every rank."""
        self._meet()
        return self._raw.allreduce(value, op=self._MPI.SUM)

    def reduce_max(self, value):
        """Maximum over ranks (elementwise for arrays; tuples compare as Python's ``max``)."""
        return self._extreme(value, self._MPI.MAX, np.maximum)

    def reduce_min(self, value):
        """Minimum over ranks (elementwise for arrays)."""
        return self._extreme(value, self._MPI.MIN, np.minimum)

    def _extreme(self, value, op, ufunc):
        self._meet()
        if isinstance(value, np.ndarray):  # mpi4py's object MAX/MIN compare whole arrays: reduce here
            parts = self._raw.allgather(value)
            return ufunc.reduce(np.stack(parts), axis=0)
        return self._raw.allreduce(value, op=op)

    def any_rank(self, flag) -> bool:
        """True on every rank when ``flag`` is true on at least one."""
        return bool(self.reduce_max(int(bool(flag))))

    def every_rank(self, flag) -> bool:
        """True on every rank when ``flag`` is true on all."""
        return bool(self.reduce_min(int(bool(flag))))

    # -- arrays (buffers: no pickling)
    def broadcast_array(self, array, root=0):
        """Fill ``array`` (contiguous, the same shape and dtype on every rank) with rank
        ``root``'s values, in place; returns it."""
        _check_root(root, self.size)
        self._meet()
        self._raw.Bcast(array, root=root)
        return array

    def sum_array(self, array):
        """Elementwise sum over ranks of a numeric array (a new array, on every rank)."""
        array = np.ascontiguousarray(array)
        out = np.empty_like(array)
        self._meet()
        self._raw.Allreduce(array, out, op=self._MPI.SUM)
        return out

    def gather_rows(self, local):
        """Every rank's (n_r, d) float64 rows concatenated in rank order, on every rank."""
        local = np.ascontiguousarray(local, dtype=np.float64)
        d = local.shape[1] if local.ndim == 2 else 0
        counts = np.array(self.gather_objects(local.size), dtype=np.int64)
        out = np.empty(int(counts.sum()), dtype=np.float64)
        displs = np.concatenate([[0], np.cumsum(counts)[:-1]])
        self._meet()
        self._raw.Allgatherv(local.ravel(), [out, counts, displs, self._MPI.DOUBLE])
        return out.reshape(-1, d)

    def gather_rows_to_root(self, local, root=0):
        """Every rank's rows concatenated in rank order on ``root`` (None elsewhere)."""
        parts = self.gather_to_root(np.asarray(local), root=root)
        return np.concatenate(parts) if self.rank == root else None

    def row_layout(self, n_local) -> tuple[int, int]:
        """(offset of this rank's rows, total rows) for rows laid out in rank order."""
        sizes = self.gather_objects(int(n_local))
        return int(sum(sizes[: self.rank])), int(sum(sizes))

    def exchange_counts(self, send_counts):
        """All-to-all of one count per destination: returns what each rank sends here."""
        send_counts = np.ascontiguousarray(send_counts, dtype=np.int64)
        recv = np.empty_like(send_counts)
        self._meet()
        self._raw.Alltoall(send_counts, recv)
        return recv

    def exchange_rows_into(self, array, send_counts, recv, recv_counts, recv_displ):
        """Send rows ``array[sum(send_counts[:r]) : ...]`` to rank r; rows from rank r land at
        ``recv[recv_displ[r] : recv_displ[r] + recv_counts[r]]``. Counts and displacements are
        in rows (a contiguous row datatype), so they stay far below 2**31 on huge domains."""
        from mpi4py.util.dtlib import from_numpy_dtype

        array = np.ascontiguousarray(array, dtype=recv.dtype)
        if recv.dtype == np.bool_:
            array, recv = array.view(np.uint8), recv.view(np.uint8)
        row = int(np.prod(recv.shape[1:])) if recv.ndim > 1 else 1
        base = from_numpy_dtype(recv.dtype)
        mpitype = base.Create_contiguous(row).Commit() if row > 1 else base
        sd = np.concatenate([[0], np.cumsum(send_counts)[:-1]]).astype(np.int64)
        try:
            self._meet()
            self._raw.Alltoallv([array.reshape(-1), (np.asarray(send_counts), sd), mpitype],
                                [recv.reshape(-1), (np.asarray(recv_counts), np.asarray(recv_displ)), mpitype])
        finally:
            if row > 1:
                mpitype.Free()

    def exchange_rows(self, array, send_counts):
        """Send rows ``array[sum(send_counts[:r]) : ...]`` to rank r; returns the received rows
        in rank order (any dtype and trailing shape)."""
        array = np.ascontiguousarray(array)
        send_counts = np.asarray(send_counts, dtype=np.int64)
        recv_counts = self.exchange_counts(send_counts)
        out = np.empty((int(recv_counts.sum()), *array.shape[1:]), dtype=array.dtype)
        recv_displ = np.concatenate([[0], np.cumsum(recv_counts)[:-1]]).astype(np.int64)
        self.exchange_rows_into(array, send_counts, out, recv_counts, recv_displ)
        return out

    def ring_pass(self, local, sizes, visit):
        """Pass every rank's (sizes[r], d) float64 block around the ring and call ``visit(block)``
        for each (this rank's own first, then its left neighbour's, ...), the next block arriving
        (double-buffered Isend/Irecv) while the current one is visited. Collective."""
        size, rank = self.size, self.rank
        right, left = (rank + 1) % size, (rank - 1) % size
        local = np.ascontiguousarray(local, dtype=np.float64)
        d = local.shape[1] if local.ndim == 2 else 1
        cap = max(sizes) * d
        bufs = [np.empty(max(cap, 1)), np.empty(max(cap, 1))]
        cur = 0
        n_cur = sizes[rank]
        bufs[cur][: n_cur * d] = local.ravel()
        for step in range(size):
            owner = (rank - step) % size
            reqs = []
            if step < size - 1:
                n_next = sizes[(owner - 1) % size]
                reqs.append(self._raw.Irecv(bufs[1 - cur][: n_next * d], source=left, tag=RING_TAG + step))
                reqs.append(self._raw.Isend(bufs[cur][: n_cur * d], dest=right, tag=RING_TAG + step))
            if n_cur:
                visit(bufs[cur][: n_cur * d].reshape(n_cur, d))
            for req in reqs:
                self._wait(req)  # polls the stop channel
            if reqs:
                cur = 1 - cur
                n_cur = n_next

    def maxloc_vote(self, value: float, index: int):
        """A non-blocking MAXLOC vote (``MaxlocVote``) of this rank's (value, index)."""
        return MaxlocVote(self, value, index)

    def wait_for_all(self):
        """Return once every rank has arrived (a barrier that polls the stop channel)."""
        self._meet()

    def task_queue(self, n_tasks: int):
        """Tasks 0 … n_tasks − 1 handed out dynamically: each rank asks for the next when it is
        free (``TaskQueue``). Collective to create and to ``close``."""
        return TaskQueue(self, n_tasks)

    # -- the stop channel
    def poll(self):
        """Raise if another rank has stopped the job; announce this rank's pending signal."""
        self._channel.poll()

    def finish(self, code, message=None):
        return self._channel.finish(code, message)

    # -- the node and libraries
    def _node(self):
        self._meet()  # Split_type is a collective
        node = self._raw.Split_type(self._MPI.COMM_TYPE_SHARED)
        try:
            return node.Get_rank(), node.Get_size()
        finally:
            node.Free()

    def node_rank(self) -> int:
        """Rank among this communicator's processes on this node (device = node rank % GPUs)."""
        return self._node()[0]

    def node_size(self) -> int:
        """Number of this communicator's ranks on this node (collective)."""
        return self._node()[1]

    def self_handle(self):
        """``MPI.COMM_SELF``: for a library (LAMMPS) that runs one instance per rank."""
        return self._MPI.COMM_SELF

    def duplicate(self):
        return Comm(self._raw.Dup())

    def release(self):
        self._channel.close()
        self._raw.Free()


RING_TAG = 7301
TASK_REQUEST_TAG = 7401
TASK_REPLY_TAG = 7402


class SerialTaskQueue:
    """``TaskQueue`` on one process: the tasks in order."""

    def __init__(self, n_tasks: int):
        self._next, self._n = 0, int(n_tasks)

    def next(self):
        """The next task index, or None when every task has been handed out."""
        if self._next >= self._n:
            return None
        self._next += 1
        return self._next - 1

    def serve(self):
        return None

    def close(self):
        return None


class TaskQueue(SerialTaskQueue):
    """Dynamic hand-out of task indices over ranks, rank 0 keeping the counter while it works.

    Other ranks ask rank 0 (a point-to-point request, answered with the next index or −1 when
    none is left) and wait while polling the stop channel. Rank 0 answers whenever it calls
    ``serve()`` (the caller does so between units of its own work: answers wait at most one
    unit) and in its own ``next()``; ``close()`` (every rank, when its ``next()`` has returned
    None) has rank 0 answer until every rank has been told there is nothing left. Which rank runs
    a task depends on timing; what a task computes must not.
    """

    def __init__(self, comm, n_tasks: int):
        super().__init__(n_tasks)
        self._comm = comm
        self._raw, self._MPI = comm._raw, comm._MPI
        self._told_done = 0  # ranks (other than 0) told there is nothing left
        comm.wait_for_all()

    def _take(self) -> int:
        task = super().next()
        return -1 if task is None else task

    def serve(self):
        """Rank 0: answer every pending request (non-blocking). Other ranks: nothing."""
        if self._comm.rank != 0:
            return
        status = self._MPI.Status()
        while self._raw.Iprobe(source=self._MPI.ANY_SOURCE, tag=TASK_REQUEST_TAG, status=status):
            src = status.Get_source()
            self._raw.Recv(np.empty(1, dtype=np.int64), source=src, tag=TASK_REQUEST_TAG)
            reply = np.array([self._take()], dtype=np.int64)
            self._told_done += int(reply[0] < 0)
            self._raw.Send(reply, dest=src, tag=TASK_REPLY_TAG)

    def next(self):
        if self._comm.rank == 0:
            self.serve()
            task = self._take()
            return None if task < 0 else task
        reply = np.empty(1, dtype=np.int64)
        recv = self._raw.Irecv(reply, source=0, tag=TASK_REPLY_TAG)
        self._comm._wait(self._raw.Isend(np.array([self._comm.rank], dtype=np.int64), dest=0, tag=TASK_REQUEST_TAG))
        self._comm._wait(recv)
        return None if reply[0] < 0 else int(reply[0])

    def close(self):
        """Rank 0: answer until every other rank has heard that nothing is left. Collective."""
        if self._comm.rank == 0:
            pause = 2e-5
            while self._told_done < self._comm.size - 1:
                self.serve()
                self._comm.poll()
                time.sleep(pause)
                pause = min(pause * 1.5, 2e-3)
        self._comm.wait_for_all()


def _check_root(root, size):
    if not 0 <= int(root) < int(size):
        raise ValueError(f"root must be a rank in [0, {size}), got {root!r}")


class MaxlocVote:
    """Non-blocking MAXLOC allreduce of one (value, index) pair per rank: the largest value,
    ties to the lowest index (MPI's MAXLOC rule), so a rank can work while the others catch up.

    ``test()`` polls, ``result()`` waits and returns (value, index). Indices must fit int32.
    ``result(spin=True)`` polls without pausing: for callers whose ranks each have a core (the
    pauses of the ordinary wait, up to 2 ms, leave the core to ranks still computing on an
    oversubscribed node, but add up to that much to each short wait).
    """

    def __init__(self, comm: Comm, value: float, index: int):
        MPI = comm._MPI
        dt = np.dtype([("v", "f8"), ("i", "i4")], align=True)
        self._send = np.array([(float(value), int(index))], dtype=dt)
        self._recv = np.empty(1, dtype=dt)
        self._req = comm._raw.Iallreduce([self._send, MPI.DOUBLE_INT], [self._recv, MPI.DOUBLE_INT], op=MPI.MAXLOC)
        self._comm = comm

    def test(self) -> bool:
        done = bool(self._req.Test())
        if not done:
            self._comm.poll()
        return done

    def result(self, spin: bool = False) -> tuple[float, int]:
        if spin:
            while not self.test():
                pass
        else:
            self._comm._wait(self._req)
        return float(self._recv["v"][0]), int(self._recv["i"][0])


def _import_mpi():
    try:
        from mpi4py import MPI

        return MPI
    except Exception:  # no mpi4py, or it cannot load an MPI library
        return None


def mpi_self_handle():
    """mpi4py's COMM_SELF (MPI initialised), for a library that runs its own instance on each
    rank (LAMMPS); None where mpi4py cannot load an MPI library."""
    MPI = _import_mpi()
    return None if MPI is None else MPI.COMM_SELF


def get_comm(comm=None):
    """The communicator to use: ``comm`` if it is one of ours; an mpi4py communicator wrapped
    (``Comm``); else a Dup of COMM_WORLD when launched with more than one rank, else
    ``SerialComm()`` (MPI is then never initialised)."""
    if isinstance(comm, (Comm, SerialComm)):
        return comm
    if comm is not None:
        if all(callable(getattr(comm, m, None)) for m in ("Get_rank", "Get_size", "Dup", "Ibarrier")):
            return SerialComm() if comm.Get_size() == 1 else Comm(comm.Dup())
        raise TypeError(f"comm must be an hpcquests communicator (get_comm()) or an mpi4py communicator, "
                        f"got {type(comm).__name__}")
    if not launched_by_mpi():
        return SerialComm()
    MPI = _import_mpi()
    if MPI is None:
        return SerialComm()
    try:
        if MPI.COMM_WORLD.Get_size() == 1:
            return SerialComm()
        raw = MPI.COMM_WORLD.Dup()
    except Exception:  # an MPI library that loads but cannot start: run serially
        return SerialComm()
    return Comm(raw)


def mpi_info() -> dict:
    """mpi4py and MPI library versions and the world size as this process sees it; never raises.

    Outside a launcher MPI is not initialised here: the library version is asked of a short
    child process (``MPI_Get_library_version`` is callable before ``MPI_Init``), so that this
    process never imports ``mpi4py.MPI`` (ASE switches to parallel I/O once it is imported).
    """
    info = {"launched": False}
    try:
        info["launched"] = launched_by_mpi()
        try:
            import mpi4py

            info["mpi4py"] = mpi4py.__version__
        except Exception as exc:
            info["mpi4py"] = f"unavailable ({type(exc).__name__}: {exc})"
            info["size"] = 1
            return info
        if not info["launched"] and "mpi4py.MPI" not in sys.modules:
            info["library"] = _library_version_subprocess()
            info["size"] = 1
            info["note"] = "not started by mpiexec/srun: running serially, MPI not initialised"
            return info
        MPI = _import_mpi()
        if MPI is None:
            info["library"] = "unavailable: mpi4py could not load an MPI library"
            info["size"] = 1
            return info
        info["library"] = _first_line(MPI.Get_library_version())
        info["size"] = MPI.COMM_WORLD.Get_size() if MPI.Is_initialized() else 1
    except Exception as exc:  # pragma: no cover - defensive: info must never fail
        info["error"] = f"{type(exc).__name__}: {exc}"
    return info


def _first_line(text: str) -> str:
    text = (text or "").strip()
    return " ".join(text.splitlines()[0].split()) if text else "unknown"


def _library_version_subprocess(timeout: float = 20.0) -> str:
    code = ("import mpi4py; mpi4py.rc.initialize = False; mpi4py.rc.finalize = False\n"
            "from mpi4py import MPI; print(MPI.Get_library_version())")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "PMIX_", "OMPI_", "HYDRA_"))}
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                             env=env, stdin=subprocess.DEVNULL)
    except Exception as exc:
        return f"unavailable ({type(exc).__name__})"
    if out.returncode != 0:
        last = _first_line(out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "")
        return f"unavailable: mpi4py could not load an MPI library ({last})"
    return _first_line(out.stdout)
