"""The one error -> exit policy of every entry point (``hpcquests`` and ``python -m hpcquests.uq``).

Every rank runs the command; every outcome goes through one agreement
(``parallel.channel.run_collectively``): the exit status is the same on every rank and rank 0
prints one line, ``PROG: error: [rank R: ]MESSAGE``, never a traceback (``HPCQUESTS_DEBUG=1``
adds it). Bad command lines are argparse's: a usage line and status 2.
"""

from __future__ import annotations


#: The exit statuses, as the parsers' epilogs print them.
EXIT_STATUS_HELP = ("Exit status: 0 ok, 2 bad input, 74 file system error (EX_IOERR), 75 preempted after a "
                    "checkpoint (rerun resumes), 1 internal error.")


class CliError(ValueError):
    """A user-facing error: printed as one line, exit status 2."""


def run_command(prog: str, comm, fn, *, on_success=None) -> int:
    """Run ``fn()`` on every rank of ``comm`` and return the exit status they agree on;
    ``on_success()`` runs after the agreement when every rank succeeded."""
    from ..parallel.channel import run_collectively

    return run_collectively(prog, comm, fn, on_success=on_success)


def preemptible():
    """``with preemptible():`` USR2 and TERM are caught and acted on at the command's next poll
    (the UQ scan polls after every chunk and exits 75 after its checkpoint). Commands that do
    not poll leave them their default action (the process ends)."""
    from ..parallel.channel import preemption_signals

    return preemption_signals()


def preemptible_main(prog: str, parser, argv, compute, report, *, startup=None) -> int:
    """The body of a checkpointing entry point (``python -m hpcquests.uq``, ``… .trajectory``):
    USR2/TERM caught from start-up on, ``compute(args, comm)`` run under the error policy, and
    ``report(result, args)`` on rank 0 once every rank succeeded. ``startup``: called first
    (a fault point)."""
    from ..parallel import get_comm

    with preemptible():
        if startup is not None:
            startup()
        args = parser.parse_args(argv)
        comm = get_comm()
        result = {}

        def run():
            result["value"] = compute(args, comm)

        def on_success():
            if comm.rank == 0:
                report(result["value"], args)

        return run_command(prog, comm, run, on_success=on_success)


def signal_after_hook():
    """HPCQUESTS_TEST_SIGNAL_AFTER=N (a test hook of the checkpointing entry points, for tests that
    run them in a subprocess): a callable ``hook(world_rank)`` for the configuration's per-unit
    callback (a chunk of the scan, a frame of the trajectory analysis); world rank 0 sends itself
    SIGUSR2 at its N-th call, so the real handler and the collective stop run at a known point.
    None when unset."""
    import os

    n = os.environ.get("HPCQUESTS_TEST_SIGNAL_AFTER")
    if n is None:
        return None
    import signal

    done = [0]

    def hook(rank):
        done[0] += 1
        if rank == 0 and done[0] == int(n):
            os.kill(os.getpid(), signal.SIGUSR2)

    return hook
