"""Communicator wrapper: a Dup of COMM_WORLD under a launcher, a serial stand-in otherwise."""

from __future__ import annotations

import os
import subprocess
import sys

_LAUNCHER_VARS = ("PMI_RANK", "PMI_SIZE", "PMIX_RANK", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS",
                  "HYDRA_CONTROL_FD", "MV2_COMM_WORLD_SIZE", "I_MPI_HYDRA_HOST_FILE")


def launched_by_mpi() -> bool:
    """True when the environment shows an MPI launcher (mpiexec/mpirun/srun with PMI)."""
    if any(v in os.environ for v in _LAUNCHER_VARS):
        return True
    # srun without an MPI plugin still sets SLURM_PROCID; only count it for multi-task steps
    return int(os.environ.get("SLURM_NTASKS", os.environ.get("SLURM_STEP_NUM_TASKS", "1")) or 1) > 1 \
        and "SLURM_PROCID" in os.environ


class SerialComm:
    """The subset of mpi4py's lower-case communicator API hpcquests uses, for one process."""

    rank = 0
    size = 1
    is_serial = True

    def Get_rank(self):
        return 0

    def Get_size(self):
        return 1

    def bcast(self, obj, root=0):
        return obj

    def allreduce(self, obj, op=None):
        _check_op(op)
        return obj

    def reduce(self, obj, op=None, root=0):
        _check_op(op)
        return obj

    def gather(self, obj, root=0):
        return [obj]

    def allgather(self, obj):
        return [obj]

    def scatter(self, objs, root=0):
        return objs[0]

    def barrier(self):
        return None

    Barrier = barrier

    def Dup(self):
        return self

    def Free(self):
        return None

    def Abort(self, errorcode=1):
        raise SystemExit(errorcode)

    # the stop channel's interface (see ``parallel.channel``): one rank, so only signals
    def poll(self):
        """Raise ``StopRequested`` if a preemption signal is pending (outside deferred blocks)."""
        from .channel import SIGNALS, StopRequested, signal_message

        signum = SIGNALS.pending()
        if signum is not None:
            raise StopRequested(signal_message(signum))

    def wait(self, req):
        req.Wait()

    def finish(self, code, message=None):
        return int(code), 0, message


class Comm:
    """A real communicator whose blocking collectives cannot hang on a rank that has stopped.

    Each blocking collective first meets the other ranks in a non-blocking barrier, polling
    the ``StopChannel`` while it waits: when another rank has failed or been preempted, this
    raises ``JobStopped`` / ``StopRequested`` instead of waiting forever. Once every rank has
    arrived, the collective itself runs (it can no longer block on a departed rank).
    Point-to-point requests are waited for with ``wait``/``waitall``, which poll too.
    Everything else is mpi4py's, on the wrapped communicator ``raw``.
    """

    is_serial = False

    def __init__(self, raw):
        from .channel import StopChannel

        MPI = _import_mpi()
        self.raw = raw
        self.MPI = MPI
        self.rank = raw.Get_rank()
        self.size = raw.Get_size()
        self.channel = StopChannel(raw, MPI)

    # -- plain queries and non-blocking operations
    def Get_rank(self):
        return self.rank

    def Get_size(self):
        return self.size

    def Isend(self, *a, **kw):
        return self.raw.Isend(*a, **kw)

    def Irecv(self, *a, **kw):
        return self.raw.Irecv(*a, **kw)

    def Iallreduce(self, *a, **kw):
        return self.raw.Iallreduce(*a, **kw)

    def Split_type(self, *a, **kw):
        return self.raw.Split_type(*a, **kw)

    def Dup(self):
        return Comm(self.raw.Dup())

    def Free(self):
        self.channel.close()
        self.raw.Free()

    def Abort(self, errorcode=1):
        self.raw.Abort(errorcode)

    # -- the stop channel
    def poll(self):
        self.channel.poll()

    def wait(self, req):
        self.channel.wait(req)

    def waitall(self, reqs):
        for req in reqs:
            self.channel.wait(req)

    def finish(self, code, message=None):
        return self.channel.finish(code, message)

    def _meet(self):
        self.channel.poll()
        self.channel.wait(self.raw.Ibarrier())

    # -- blocking collectives, guarded
    def allgather(self, obj):
        self._meet()
        return self.raw.allgather(obj)

    def allreduce(self, obj, op=None):
        self._meet()
        return self.raw.allreduce(obj) if op is None else self.raw.allreduce(obj, op=op)

    def reduce(self, obj, op=None, root=0):
        self._meet()
        return self.raw.reduce(obj, root=root) if op is None else self.raw.reduce(obj, op=op, root=root)

    def bcast(self, obj, root=0):
        self._meet()
        return self.raw.bcast(obj, root=root)

    def gather(self, obj, root=0):
        self._meet()
        return self.raw.gather(obj, root=root)

    def scatter(self, objs, root=0):
        self._meet()
        return self.raw.scatter(objs, root=root)

    def Barrier(self):
        self._meet()

    barrier = Barrier

    def Bcast(self, buf, root=0):
        self._meet()
        return self.raw.Bcast(buf, root=root)

    def Allreduce(self, sendbuf, recvbuf, op=None):
        self._meet()
        return self.raw.Allreduce(sendbuf, recvbuf) if op is None else self.raw.Allreduce(sendbuf, recvbuf, op=op)

    def Allgatherv(self, sendbuf, recvbuf):
        self._meet()
        return self.raw.Allgatherv(sendbuf, recvbuf)

    def Alltoall(self, sendbuf, recvbuf):
        self._meet()
        return self.raw.Alltoall(sendbuf, recvbuf)

    def Alltoallv(self, sendbuf, recvbuf):
        self._meet()
        return self.raw.Alltoallv(sendbuf, recvbuf)


_OP_NAMES = ("sum", "max", "min")


def _check_op(op):
    if isinstance(op, str) and op.lower() not in _OP_NAMES:
        raise ValueError(f"op must be one of {_OP_NAMES} (or an MPI.Op), got {op!r}")


def mpi_op(comm, name: str):
    """The reduction operation ``name`` ("sum", "max" or "min") for ``comm.allreduce``:
    ``MPI.SUM``/``MPI.MAX``/``MPI.MIN`` on a real communicator, the name itself on a
    ``SerialComm`` (where any reduction of one value is that value)."""
    _check_op(name)
    if isinstance(name, str):
        name = name.lower()
    if getattr(comm, "is_serial", False) or not isinstance(name, str):
        return name
    MPI = _import_mpi()
    return {"sum": MPI.SUM, "max": MPI.MAX, "min": MPI.MIN}[name]


class MaxlocVote:
    """Non-blocking MAXLOC allreduce of one (value, index) pair per rank: the largest value,
    ties to the lowest index (MPI's MAXLOC rule), so a rank can work while the others catch up.

    ``test()`` polls, ``result()`` waits and returns (value, index). Indices must fit int32.
    """

    def __init__(self, comm, value: float, index: int):
        import numpy as np

        MPI = _import_mpi()
        dt = np.dtype([("v", "f8"), ("i", "i4")], align=True)
        self._send = np.array([(float(value), int(index))], dtype=dt)
        self._recv = np.empty(1, dtype=dt)
        self._req = comm.Iallreduce([self._send, MPI.DOUBLE_INT], [self._recv, MPI.DOUBLE_INT], op=MPI.MAXLOC)
        self._comm = comm

    def test(self) -> bool:
        done = bool(self._req.Test())
        if not done:
            self._comm.poll()
        return done

    def result(self) -> tuple[float, int]:
        self._comm.wait(self._req)
        return float(self._recv["v"][0]), int(self._recv["i"][0])


def _import_mpi():
    try:
        from mpi4py import MPI

        return MPI
    except Exception:  # no mpi4py, or it cannot load an MPI library
        return None


def get_comm(comm=None):
    """The communicator to use: ``comm`` if given, else a Dup of COMM_WORLD when launched with
    more than one rank, else ``SerialComm()`` (MPI is then never initialised)."""
    if comm is not None:
        return comm
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


def _node_rank_and_size(comm) -> tuple[int, int]:
    if getattr(comm, "is_serial", False) or comm.Get_size() == 1:
        return 0, 1
    MPI = _import_mpi()
    comm.Barrier()  # guarded: Split_type is a collective
    node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    try:
        return node.Get_rank(), node.Get_size()
    finally:
        node.Free()


def local_rank(comm) -> int:
    """Rank among the processes of this node (for device = local rank % GPUs)."""
    return _node_rank_and_size(comm)[0]


def node_size(comm) -> int:
    """Number of this communicator's ranks on this node."""
    return _node_rank_and_size(comm)[1]


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
