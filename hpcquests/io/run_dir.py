"""A job's output directory: one writer at a time (a lock file), a checkpoint whose manifest pins
what it belongs to, per-frame results written whole or not at all. Shared by the UQ scan and the
trajectory analysis; ``comm`` is any communicator of ``hpcquests.parallel`` (rank 0 does the file
work, the others wait)."""

from __future__ import annotations

import contextlib
import json
import os


def remove_leftovers(*directories):
    """Temporary files of a killed run (``.NAME.tmp-PID``, ``*.part``): the lock on the output
    directory makes this job the only writer, so every one of them is a leftover."""
    for d in directories:
        if not os.path.isdir(d):
            continue
        for name in os.listdir(d):
            if (name.startswith(".") and ".tmp-" in name) or name.endswith(".part"):
                try:
                    os.remove(os.path.join(d, name))
                except OSError:
                    pass


def write_json(path, payload):
    """``payload`` as JSON at ``path``, atomically and durably."""
    from .._json import json_default
    from .durable import write_text_durably

    write_text_durably(path, json.dumps(payload, indent=1, default=json_default))


def acquire_lock(out_dir: str, name: str, what: str) -> str:
    """Take ``OUT/NAME`` (O_EXCL) holding host, pid and ``SLURM_JOB_ID``. A lock left by the
    same Slurm job (a requeued run) or by a dead process on this host is stale and taken over;
    any other lock is a ValueError naming its holder (``what``: "scan", "analysis"). Returns the
    lock's path."""
    import socket

    from .durable import pid_alive

    path = os.path.join(out_dir, name)
    me = {"host": socket.gethostname(), "pid": os.getpid(), "slurm_job_id": os.environ.get("SLURM_JOB_ID")}
    for _ in range(3):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            try:
                with open(path) as fh:
                    held = json.load(fh)
            except (OSError, ValueError):
                held = {}
            same_job = held.get("slurm_job_id") and held.get("slurm_job_id") == me["slurm_job_id"]
            dead = held.get("host") == me["host"] and not pid_alive(int(held.get("pid", -1) or -1))
            if not (same_job or dead or not held):
                raise ValueError(f"--out {out_dir} is in use by another {what} (pid {held.get('pid')} on "
                                 f"{held.get('host')}, Slurm job {held.get('slurm_job_id') or '-'}): wait for it, or "
                                 f"use another --out (remove {path} if that {what} is gone)")
            try:
                os.remove(path)  # stale: take it over
            except FileNotFoundError:
                pass
            continue
        with os.fdopen(fd, "w") as fh:
            json.dump(me, fh)
        return path
    raise ValueError(f"--out {out_dir}: could not take {path}")


def release_lock(path: str | None):
    """Remove the lock if this process holds it."""
    if path:
        try:
            with open(path) as fh:
                held = json.load(fh)
            if held.get("pid") == os.getpid():
                os.remove(path)
        except (OSError, ValueError):
            pass


def file_identity(path) -> dict:
    """What identifies an input file in a checkpoint's signature: a store's per-write id (a
    rebuilt store gets a new one), else the SHA-256 of the file's bytes."""
    from .store import is_store
    from .structures import file_checksum

    if is_store(path):
        import h5py

        with h5py.File(path, "r") as f:
            wid = f.attrs.get("write_id")
        if wid is not None:
            return {"store_write_id": str(wid)}
    return {"sha256": file_checksum(path)}


def signature_difference(old: dict, new: dict, names=()) -> str:
    """The first difference between two run signatures, in the user's words: an option
    (``--name``), else one of ``names`` ((key, description) pairs)."""
    oo, no = old.get("options", {}), new.get("options", {})
    for key in sorted(set(oo) | set(no)):
        if oo.get(key) != no.get(key):
            return f"--{key.replace('_', '-')} differs (checkpoint: {oo.get(key)!r}, now: {no.get(key)!r})"
    for key, what in names:
        if old.get(key) != new.get(key):
            return f"{what} differs (checkpoint: {old.get(key)!r}, now: {new.get(key)!r})"
    return "the checkpoint format differs"


class RunDirectory:
    """``OUT`` of a job that checkpoints per frame: ``OUT/LOCK`` while it runs,
    ``OUT/checkpoint/manifest.json`` (the run's signature) and ``OUT/checkpoint/frame-NNNNNN.json``
    (one finished frame's results)."""

    def __init__(self, out, comm, *, lock_name: str, what: str, neutral_options: str):
        self.out = out
        self.comm = comm
        self.dir = os.path.join(out, "checkpoint")
        self.lock_name, self.what, self.neutral = lock_name, what, neutral_options

    @contextlib.contextmanager
    def locked(self):
        """Create ``OUT`` if needed (its parent must exist) and hold its lock (collective)."""
        from .atomic import check_output_dir

        lock = None
        try:
            if self.comm.rank == 0:
                check_output_dir(self.out, "--out", parents=False)  # a typo in the parent is an error
                lock = acquire_lock(self.out, self.lock_name, self.what)
            self.comm.wait_for_all()
            yield self
        finally:
            release_lock(lock)

    def prepare(self, signature: dict, names=()):
        """Start or resume: an existing checkpoint must have this signature (collective)."""
        if self.comm.rank == 0:
            os.makedirs(self.dir, exist_ok=True)
            remove_leftovers(self.out, self.dir)
            path = os.path.join(self.dir, "manifest.json")
            if os.path.exists(path):
                with open(path) as fh:
                    old = json.load(fh)
                if old.get("signature") != signature:
                    why = signature_difference(old.get("signature", {}), signature, names)
                    raise ValueError(f"--out {self.out} holds the checkpoint of a different {self.what}: {why}; "
                                     f"resume with the same arguments and number of ranks (only {self.neutral} "
                                     "may change), or use a new --out")
            else:
                write_json(path, {"signature": signature})
        self.comm.wait_for_all()

    def frame_file(self, frame: int) -> str:
        return self.unit_file(f"frame-{frame:06d}")

    def unit_file(self, name: str) -> str:
        """The checkpoint file of one unit of work named ``name`` (a frame, a task)."""
        return os.path.join(self.dir, f"{name}.json")

    def save_unit(self, name: str, payload: dict):
        """A unit's results (or its progress), written whole."""
        write_json(self.unit_file(name), payload)

    def load_unit(self, name: str) -> dict | None:
        """A unit's saved results, or None when it has none; an unreadable file is an error."""
        path = self.unit_file(name)
        if not os.path.exists(path):
            return None
        try:
            with open(path) as fh:
                return json.load(fh)
        except (OSError, ValueError) as exc:
            raise ValueError(f"checkpoint file {path} cannot be read ({exc}); remove it and rerun to recompute "
                             "that part") from None

    def save_frame(self, frame: int, stats: dict):
        """Frame ``frame``'s results, written whole (that is the checkpoint); the frame is also
        appended to this rank's ``computed-rNNNNN.log`` (a record: each frame computed once)."""
        write_json(self.frame_file(frame), stats)
        with open(os.path.join(self.dir, f"computed-r{self.comm.rank:05d}.log"), "a") as fh:
            fh.write(f"{frame}\n")

    def load_frame(self, frame: int) -> dict:
        payload = self.load_unit(f"frame-{frame:06d}")
        if payload is None:
            raise ValueError(f"checkpoint file {self.frame_file(frame)} is missing; rerun to recompute that frame")
        return payload
