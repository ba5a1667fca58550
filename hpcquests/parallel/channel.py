"""The error-and-stop channel: one way for any rank, in any phase, to stop every rank.

Every failure (bad input, a bug, a full disk) and every preemption signal (USR2, TERM) goes
through this one construct, so no rank is ever left waiting in a collective for a rank that
has left:

- Each real communicator (``comm.Comm``) owns a ``StopChannel`` on a duplicate of it. The
  channel keeps one non-blocking receive pre-posted for stop messages from any rank.
- Every blocking collective of ``comm.Comm`` first meets the other ranks in a non-blocking
  barrier and, while waiting, polls the channel (``StopChannel.wait``). A rank that is still
  computing is reached at its next poll: the next collective, or an explicit ``poll()`` at a
  chunk or frame boundary of work it does on its own (the scan's frames-over-ranks mode).
- A rank that fails sends one stop message (its exit code and its one-line message) to every
  other rank (``announce``), then finishes. A rank that polls a stop message raises
  ``JobStopped`` (``StopRequested`` for a preemption), unwinds and finishes.
- ``finish`` is the last collective of every run, successful or not: a non-blocking MAXLOC
  allreduce of (severity, rank), polled like any other wait, tells every rank the most severe
  outcome and the lowest rank that reported it; every rank exits with that status and rank 0
  prints that rank's line: exactly one line, naming the rank. A rank that failed after the
  others' last collective is therefore still reported.
- The last resort: once a stop is known, ranks that do not reach ``finish`` within
  ``HPCQUESTS_STOP_TIMEOUT`` seconds (default 300: longer than one chunk's compute) are taken
  down with ``Abort``.

Signals: ``preemption_signals()`` installs USR2/TERM handlers for the whole run and restores the
previous ones after. A handler only sets a flag; the flag is acted on at the next poll outside
a ``deferred_signals()`` block (the scan defers it while a chunk is in hand, so the chunk is
finished and checkpointed first), by announcing a preemption (exit 75) to every rank.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time

#: Exit statuses (sysexits where one fits): the launcher returns the agreed one on every rank.
EXIT_OK = 0
EXIT_INTERNAL = 1       # a bug, or an unexpected failure
EXIT_BAD_INPUT = 2      # bad input or usage: one message naming argument, file, frame, line, atom
EXIT_IOERR = 74         # EX_IOERR: the file system failed (disk full, EIO); the batch script does not requeue
EXIT_CHECKPOINTED = 75  # EX_TEMPFAIL: preempted after a checkpoint; the batch script requeues
EXIT_INTERRUPTED = 130  # Ctrl-C

#: Order of outcomes when several ranks report at once (the most severe is reported).
_SEVERITY = {EXIT_OK: 0, EXIT_CHECKPOINTED: 1, EXIT_INTERRUPTED: 2, EXIT_BAD_INPUT: 3, EXIT_IOERR: 4,
             EXIT_INTERNAL: 5}
_CODE_OF = {v: k for k, v in _SEVERITY.items()}

STOP_TAG = 0x5157
MESSAGE_BYTES = 4096
DEFAULT_STOP_TIMEOUT = 300.0


class StopRequested(Exception):
    """The job is stopping for a preemption signal; every finished chunk is checkpointed."""

    code = EXIT_CHECKPOINTED


class JobStopped(Exception):
    """Another rank stopped the job (its error or its preemption)."""

    def __init__(self, rank: int, code: int, message: str):
        super().__init__(message)
        self.rank, self.code, self.message = int(rank), int(code), message


class RemoteStopRequested(StopRequested, JobStopped):
    """Another rank received a preemption signal."""

    def __init__(self, rank, message):
        JobStopped.__init__(self, rank, EXIT_CHECKPOINTED, message)


def exit_code_of(exc: BaseException) -> int:
    """The exit status an exception stands for."""
    import errno

    if isinstance(exc, JobStopped):
        return exc.code
    if isinstance(exc, StopRequested):
        return EXIT_CHECKPOINTED
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EIO, errno.EDQUOT, errno.EROFS):
        return EXIT_IOERR
    if isinstance(exc, (ValueError, OSError)):
        return EXIT_BAD_INPUT
    return EXIT_INTERNAL


def describe(exc: BaseException) -> str:
    """One line for an exception (its message; the type too for unexpected ones)."""
    if isinstance(exc, JobStopped):
        return exc.message
    code = exit_code_of(exc)
    text = " ".join(str(exc).split()) or type(exc).__name__
    if code == EXIT_INTERNAL:
        text = f"internal error ({type(exc).__name__}: {text}); rerun with HPCQUESTS_DEBUG=1 for a traceback"
    if isinstance(exc, KeyboardInterrupt):
        text = "interrupted"
    return text


def severity(code: int) -> int:
    return _SEVERITY.get(int(code), _SEVERITY[EXIT_INTERNAL])


# --------------------------------------------------------------------------- signals

class _SignalState:
    """What the handlers saw (the only process-wide state: signals are process-wide)."""

    def __init__(self):
        self.signum = None
        self.deferred = 0

    def pending(self) -> int | None:
        return None if self.deferred else self.signum


SIGNALS = _SignalState()


def _handler(signum, frame):
    SIGNALS.signum = signum


@contextlib.contextmanager
def preemption_signals():
    """USR2 and TERM set a flag for the duration of the block (previous handlers restored)."""
    previous = {}
    for sig in (signal.SIGUSR2, signal.SIGTERM):
        try:
            previous[sig] = signal.signal(sig, _handler)
        except ValueError:  # not the main thread: leave signals alone
            pass
    SIGNALS.signum = None
    try:
        yield SIGNALS
    finally:
        for sig, prev in previous.items():
            signal.signal(sig, prev)


@contextlib.contextmanager
def deferred_signals():
    """Inside the block a received signal waits: the work in hand is finished first."""
    SIGNALS.deferred += 1
    try:
        yield
    finally:
        SIGNALS.deferred -= 1


def signal_message(signum: int, rank: int | None = None) -> str:
    name = signal.Signals(signum).name if signum in signal.Signals._value2member_map_ else str(signum)
    who = "" if rank is None else f"rank {rank} "
    return f"{who}received {name}: stopped after the last checkpoint; rerun to resume"


def stop_timeout() -> float:
    try:
        return max(0.0, float(os.environ.get("HPCQUESTS_STOP_TIMEOUT", DEFAULT_STOP_TIMEOUT)))
    except ValueError:
        return DEFAULT_STOP_TIMEOUT


# --------------------------------------------------------------------------- the channel

class StopChannel:
    """Stop messages between the ranks of one communicator (see the module docstring)."""

    def __init__(self, raw, MPI):
        self.MPI = MPI
        self.comm = raw.Dup()
        self.rank = self.comm.Get_rank()
        self.size = self.comm.Get_size()
        self._buf = bytearray(MESSAGE_BYTES)
        self._status = MPI.Status()
        self._recv = self._post()
        self._sends = []
        #: the first stop this rank knows of: (rank, code, message), its own included
        self.stopped = None
        self.messages = {}
        self.known_since = None
        self._closed = False

    def _post(self):
        return self.comm.Irecv([self._buf, self.MPI.BYTE], source=self.MPI.ANY_SOURCE, tag=STOP_TAG)

    def _drain(self):
        """Take every stop message that has arrived."""
        while self._recv is not None and self._recv.Test(self._status):
            n = self._status.Get_count(self.MPI.BYTE)
            try:
                rank, code, message = json.loads(bytes(self._buf[:n]).decode("utf-8", "replace"))
            except ValueError:
                rank, code, message = self._status.Get_source(), EXIT_INTERNAL, "unreadable stop message"
            self._record(int(rank), int(code), str(message))
            self._recv = self._post()

    def _record(self, rank, code, message):
        self.messages.setdefault(rank, (code, message))
        if self.stopped is None:
            self.stopped = (rank, code, message)
            self.known_since = time.monotonic()

    def poll(self):
        """Raise if another rank has stopped the job, or announce this rank's pending signal."""
        self._drain()
        if self.stopped is not None and self.stopped[0] != self.rank:
            rank, code, message = self.stopped
            if code == EXIT_CHECKPOINTED:
                raise RemoteStopRequested(rank, message)
            raise JobStopped(rank, code, message)
        signum = SIGNALS.pending()
        if signum is not None and self.stopped is None:
            message = signal_message(signum, self.rank if self.size > 1 else None)
            self.announce(EXIT_CHECKPOINTED, message)
            raise StopRequested(message)

    def announce(self, code: int, message: str):
        """Tell every other rank that this rank stops the job (once)."""
        if self.stopped is not None and self.stopped[0] == self.rank:
            return
        self._record(self.rank, code, message)
        self.messages[self.rank] = (code, message)
        payload = json.dumps([self.rank, int(code), message]).encode()
        if len(payload) > MESSAGE_BYTES:
            payload = json.dumps([self.rank, int(code), message[: MESSAGE_BYTES // 2] + " ..."]).encode()
        for dest in range(self.size):
            if dest != self.rank:
                self._sends.append(self.comm.Isend([payload, self.MPI.BYTE], dest=dest, tag=STOP_TAG))

    def wait(self, req):
        """Wait for ``req`` while polling (raises ``JobStopped`` instead of waiting forever)."""
        spins = 0
        pause = 2e-5
        while not req.Test():
            self.poll()
            spins += 1
            if spins > 200:  # leave the core to ranks still computing (oversubscribed nodes)
                time.sleep(pause)
                pause = min(pause * 1.5, 2e-3)

    def finish(self, code: int, message: str | None = None) -> tuple[int, int, str | None]:
        """The closing collective: every rank learns (code, rank, message) of the most severe
        outcome (ties: the lowest rank). Returns it; ``message`` is known on rank 0."""
        import numpy as np

        MPI = self.MPI
        if code != EXIT_OK:
            self.announce(code, message or "")
        dt = np.dtype([("v", "i4"), ("i", "i4")])
        send = np.array([(severity(code), self.rank)], dtype=dt)
        recv = np.empty(1, dtype=dt)
        req = self.comm.Iallreduce([send, MPI.INT_INT], [recv, MPI.INT_INT], op=MPI.MAXLOC)
        timeout = stop_timeout()
        pause = 2e-5
        while not req.Test():
            self._drain()
            if self.known_since is not None and time.monotonic() - self.known_since > timeout:
                self._abort(f"ranks did not stop within {timeout:g} s (HPCQUESTS_STOP_TIMEOUT)")
            time.sleep(pause)
            pause = min(pause * 1.5, 2e-3)
        worst, origin = int(recv["v"][0]), int(recv["i"][0])
        out_code = _CODE_OF.get(worst, EXIT_INTERNAL)
        text = None
        if out_code != EXIT_OK and self.rank == 0:
            # the origin sent its message before it joined the allreduce: it is on its way
            t0 = time.monotonic()
            while origin not in self.messages and time.monotonic() - t0 < max(timeout, 1.0):
                self._drain()
                time.sleep(1e-3)
            text = self.messages.get(origin, (out_code, f"rank {origin} failed (no message)"))[1]
        self.close()
        return out_code, origin, text

    def _abort(self, why):
        rank, code, message = self.stopped
        print(f"hpcquests: rank {rank}: {message}; {why}: aborting", file=sys.stderr, flush=True)
        self.comm.Abort(code)

    def close(self):
        """Cancel the pre-posted receive (before MPI_Finalize)."""
        if self._closed:
            return
        self._closed = True
        if self._recv is not None:
            self._recv.Cancel()
            self._recv.Wait()
            self._recv = None
        # stop messages are small (sent eagerly): complete, or their receiver has already left
        self._sends = []


# --------------------------------------------------------------------------- commands

def run_collectively(prog: str, comm, fn, *, on_success=None) -> int:
    """Run ``fn()`` on every rank of ``comm``; every outcome goes through ``comm.finish``.

    Returns the agreed exit status. On failure rank 0 prints exactly one line,
    ``PROG: error: [rank R: ]MESSAGE`` (``PROG: stopped: ...`` for a preemption), naming the
    rank that failed first in severity order. ``HPCQUESTS_DEBUG=1`` also prints the failing
    rank's traceback. ``on_success`` runs after the agreement, when every rank succeeded.
    """
    code, message = EXIT_OK, None
    try:
        fn()
    except BrokenPipeError:  # e.g. `hpcquests demo | head`: not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except JobStopped:  # another rank's stop: it reports it
        pass
    except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 - every failure is reported once, below
        code, message = exit_code_of(exc), describe(exc)
        if os.environ.get("HPCQUESTS_DEBUG"):
            import traceback

            traceback.print_exc()
    code, origin, text = comm.finish(code, message)
    if code != EXIT_OK:
        if comm.rank == 0:
            who = f"rank {origin}: " if comm.size > 1 else ""
            kind = "stopped" if code == EXIT_CHECKPOINTED else "error"
            tail = f" (exit {code})" if code == EXIT_CHECKPOINTED else ""
            print(f"{prog}: {kind}: {who}{text}{tail}", file=sys.stderr, flush=True)
        return code
    if on_success is not None:
        try:
            on_success()
        except BrokenPipeError:  # `python -m hpcquests.uq ... | head`: the reader left; not an error of ours
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return EXIT_OK
