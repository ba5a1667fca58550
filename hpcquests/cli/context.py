"""What every command gets besides its options: the communicator, the thread count, how to
print (``RunContext``). Built once per run by ``hpcquests.cli.main``; the parsed options are
never modified."""

from __future__ import annotations

import dataclasses
import os
import shlex


@dataclasses.dataclass(frozen=True)
class RunContext:
    """comm: this run's communicator (a serial stand-in unless started by mpiexec/srun).
    threads: numba threads per rank (None: numba's default). json, quiet: output options.
    argv: the command line as typed (recorded in output files)."""

    comm: object
    threads: int | None = None
    json: bool = False
    quiet: bool = False
    argv: tuple = ()

    @classmethod
    def create(cls, args, argv, comm) -> "RunContext":
        threads = args.threads
        if threads is None and comm.size > 1:
            # ranks sharing a node share its cores: one numba thread pool per rank, no oversubscription
            threads = max(1, (os.cpu_count() or 1) // comm.node_size())
        return cls(comm, threads, bool(args.json), bool(args.quiet), tuple(argv))

    @property
    def is_root(self) -> bool:
        return self.comm.rank == 0

    @property
    def command_line(self) -> str:
        return "hpcquests " + " ".join(shlex.quote(str(a)) for a in self.argv)

    def progress(self, label, total, unit):
        """A progress line on stderr (rank 0, unless --quiet)."""
        from ..progress import Progress

        return Progress(label, total, unit, enabled=not self.quiet and self.is_root)

    def emit(self, payload: dict, lines: list[str]):
        """The command's result: ``lines`` on stdout, or one JSON object with --json (rank 0)."""
        from .._json import emit

        if self.is_root:
            emit(payload, lines, as_json=self.json)
