"""The one package that owns MPI (mpi4py is imported here only, lazily).

``get_comm()`` returns a real communicator (``Comm``) only when the process was started by a
launcher (mpiexec, srun) with more than one rank; otherwise a ``SerialComm`` stand-in with the
same named operations, so serial runs never initialise MPI. ``channel`` is the error-and-stop
channel every command ends through (``run_collectively``). Partitioning is a pure function of
(n, size, rank).
"""

from .comm import Comm, SerialComm, get_comm, launched_by_mpi, launcher_local_rank, mpi_info, mpi_self_handle
from .partition import partition, weighted_partition

__all__ = ["Comm", "SerialComm", "get_comm", "launched_by_mpi", "launcher_local_rank", "mpi_info", "mpi_self_handle", "partition",
           "weighted_partition"]
