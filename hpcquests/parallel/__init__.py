"""The one place that imports mpi4py (lazily).

``get_comm()`` returns a real communicator only when the process was started by a launcher
(mpiexec, srun) with more than one rank; otherwise a ``SerialComm`` stand-in, so serial runs never
initialise MPI. Partitioning is a pure function of (n, size, rank).
"""

from .comm import Comm, SerialComm, get_comm, launched_by_mpi, local_rank, mpi_info, mpi_op, node_size
from .partition import partition, weighted_partition

__all__ = ["Comm", "SerialComm", "get_comm", "launched_by_mpi", "local_rank", "mpi_info", "mpi_op", "node_size",
           "partition", "weighted_partition"]
