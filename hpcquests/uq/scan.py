"""The UQ scan: per-atom δH of LAMMPS dump frames against a reference, on any number of ranks.

Pipeline per frame (every rank takes part in every frame):

1. rank 0 indexes the dump once (byte offsets of frames); each rank parses its own byte range of
   the frame's atom lines — no rank reads the whole frame — a block of ``--read-block`` bytes
   at a time;
2. atoms move to spatial domains with a halo of the cutoff (``distributed.domains.DomainExchange``),
   streamed in those blocks in two passes (counts, then data straight into preallocated receive
   arrays), so a rank never holds its whole share of the lines; descriptors of owned atoms are
   bitwise the serial ones;
3. owned atoms are processed in chunks of ``--chunk-atoms``: descriptors, then δH against the
   reference (gathered on every rank, or passed around a ring when larger than
   ``--ref-memory``); each finished chunk is written atomically to its own shard — that is the
   checkpoint;
4. δH values return to the rank that read their lines, which writes them, in file order, into
   the annotated dump (all original columns + ``dh``) at its byte offset;
5. frame statistics are reduced across ranks (no gathering of values).

USR2 / TERM: ranks finish the chunk in hand, agree to stop, and exit with status 75 after the
checkpoint; a rerun with the same arguments and rank count skips every finished chunk and gives
the same results as an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
import time

import numpy as np

from .._json import json_default
from .config import ScanConfig


RESULT_NAME = "dH.h5"


# --------------------------------------------------------------------------- reference

def load_reference(comm, config, scan_species):
    """This rank's share of the reference descriptors, checked against the scan's parameters."""
    from ..distributed.drivers import load_reference_rows
    from ..faults import inject

    x = load_reference_rows(comm, config.ref, k=config.k, cutoff=config.cutoff, species=scan_species,
                            traj=config.traj, threads=config.threads)
    inject("uq.reference", comm.rank)
    return x


# --------------------------------------------------------------------------- checkpoint

class Checkpoint:
    """Finished chunks are files (written atomically); the manifest pins what they belong to."""

    def __init__(self, out_dir, signature: dict, comm):
        self.dir = os.path.join(out_dir, "checkpoint")
        self.shards = os.path.join(out_dir, RESULT_NAME + ".shards")
        self.comm = comm
        self.signature = signature
        self.rank = comm.rank
        # the run id: chunk files of any other scan never match this one's names
        self.run_id = hashlib.sha256(json.dumps(signature, sort_keys=True, default=str).encode()).hexdigest()[:12]

    def prepare(self):
        """Validate an existing checkpoint against this run (collective)."""
        from ..io.run_dir import remove_leftovers

        def check():
            path = os.path.join(self.dir, "manifest.json")
            if self.rank == 0:
                os.makedirs(self.dir, exist_ok=True)
                os.makedirs(self.shards, exist_ok=True)
                remove_leftovers(os.path.dirname(self.dir), self.dir, self.shards,
                                 os.path.join(os.path.dirname(self.dir), "annotated"))
                if os.path.exists(path):
                    with open(path) as fh:
                        old = json.load(fh)
                    if old.get("signature") != self.signature:
                        why = signature_difference(old.get("signature", {}), self.signature)
                        raise ValueError(f"--out {os.path.dirname(self.dir)} holds the checkpoint of a different scan: "
                                         f"{why}; resume with the same arguments and number of ranks (only "
                                         f"--read-block, --threads, -q and --json may change), or use a new --out")
                else:
                    _atomic_json(path, {"signature": self.signature})
        check()
        self.comm.wait_for_all()

    def chunk_file(self, frame: int, chunk: int) -> str:
        return os.path.join(self.shards, f"{self.run_id}-f{frame:06d}-r{self.rank:05d}-c{chunk:05d}.h5")

    def frame_file(self, frame: int) -> str:
        return os.path.join(self.dir, f"frame-{frame:06d}.json")

    def log_computed(self, frame, chunk):
        """A record of the chunks computed (the chunk files themselves are the checkpoint)."""
        with open(os.path.join(self.dir, f"computed-r{self.rank:05d}.log"), "a") as fh:
            fh.write(f"{frame} {chunk}\n")
            fh.flush()
            os.fsync(fh.fileno())


def _atomic_json(path, payload):
    from ..io.run_dir import write_json

    write_json(path, payload)


def _write_chunk(path, arrays: dict):
    """A checkpoint chunk: built in memory, then written, fsynced and renamed (``io.durable``);
    it counts (exists) only when all of it is on disk. A full disk is an OSError (exit 74)."""
    from ..io.durable import write_hdf5_durably

    write_hdf5_durably(path, arrays)


def _read_chunk(path) -> dict:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return {name: f[name][...] for name in f}
    except (OSError, KeyError, RuntimeError) as exc:  # a chunk's datasets carry fletcher32 checksums
        raise ValueError(f"checkpoint chunk {path} is damaged ({exc}); remove it and rerun to recompute it") from None


# --------------------------------------------------------------------------- frames



def scan_signature(config, size: int, mode: str, ref_path: str, chosen) -> dict:
    """Everything that changes a scan's results: every option but ``RESULT_NEUTRAL``, the
    trajectory and reference identities, the rank count and the mode (as JSON reads it back)."""
    from ..io.run_dir import file_identity

    options = config.signature_options()
    sig = {"options": options, "traj": {"path": os.path.abspath(config.traj), "size": os.path.getsize(config.traj),
                                        "mtime_ns": os.stat(config.traj).st_mtime_ns},
           "ref": {"path": os.path.abspath(config.ref), **file_identity(ref_path)},
           "ranks": size, "mode": mode, "frames": list(chosen)}
    return json.loads(json.dumps(sig, default=json_default))


#: The signature's parts other than the options, as the user names them.
SIGNATURE_PARTS = (("traj", "TRAJ"), ("ref", "REF"), ("ranks", "the number of ranks"), ("mode", "the scan mode"),
                   ("frames", "the frames"))


def signature_difference(old: dict, new: dict) -> str:
    """The first difference between two signatures, in the user's words."""
    from ..io.run_dir import signature_difference as difference

    return difference(old, new, SIGNATURE_PARTS)


# --------------------------------------------------------------------------- the lock of --out

LOCK_NAME = "scan.lock"


def scan(config: ScanConfig, comm) -> dict:
    """Run the scan (collective); returns the summary (rank 0) or {} (other ranks)."""
    if not isinstance(config, ScanConfig):
        raise TypeError(f"scan takes a ScanConfig (ScanConfig.from_namespace for parsed arguments), "
                        f"got {type(config).__name__}")
    from ..io.run_dir import RunDirectory

    out = RunDirectory(config.out, comm, lock_name=LOCK_NAME, what="scan",
                       neutral_options="--read-block, --threads, -q and --json")
    with out.locked():
        return _scan_locked(config, comm)


@dataclasses.dataclass
class _Run:
    """One scan's state, shared by its stages: the configuration, the world communicator, the
    reference, the checkpoint, the dump reader, the phase timings and the memory trace."""

    config: ScanConfig
    world: object
    ref: object
    ckpt: object
    reader: object
    mode: str
    annotated_dir: str
    mem: object
    timings: dict = dataclasses.field(default_factory=lambda: dict.fromkeys(
        ("read", "exchange", "descriptors", "dH", "write"), 0.0))

    def chunk_done(self):
        """After a chunk was computed and checkpointed: the configuration's hook."""
        if self.config.on_chunk is not None:
            self.config.on_chunk(self.world.rank)


def _scan_locked(config: ScanConfig, comm) -> dict:
    from ..faults import inject
    from ..io import lammps

    t_start = time.perf_counter()
    from ..distributed.dump_frames import FrameReader, index_frames

    reader = FrameReader(config.traj, lammps.parse_types(config.types), config.cutoff, config.read_block,
                         config.skip_bad_frames)
    frames, chosen, bad = index_frames(comm, config.traj, config.frames, config.skip_bad_frames)
    run = _prepare(config, comm, frames, chosen, reader)
    _scan_frames(run, frames, chosen)
    inject("uq.frames-done", comm.rank)
    comm.wait_for_all()
    frame_stats = []
    if comm.rank == 0:
        for f in chosen:
            with open(run.ckpt.frame_file(f)) as fh:
                st = json.load(fh)
            if "skipped" in st:
                bad.append({"frame": f, "line": st.get("line"), "error": st["skipped"]})
            else:
                frame_stats.append(st)
        bad.sort(key=lambda b: b["frame"])
    done = [s["frame"] for s in frame_stats] if comm.rank == 0 else None
    return _finalize(run, comm.broadcast(done, root=0), frame_stats, bad, time.perf_counter() - t_start)


def _prepare(config: ScanConfig, comm, frames, chosen, reader) -> _Run:
    """The reference (checked against the first frame's species), the mode, the checkpoint."""
    from ..distributed.drivers import ReferenceSet

    rank, size = comm.rank, comm.size
    mem = MemTrace(rank)
    mem("index")
    # the first chosen frame's species (streamed in blocks), to check against the reference
    species = reader.species(comm, frames[chosen[0]], chosen[0])
    x_ref = load_reference(comm, config, species)
    ref = ReferenceSet(comm, x_ref, config.bandwidth, ref_memory=config.ref_memory, backend=config.backend,
                       precision=config.precision, float32_tolerance=config.float32_tolerance)
    del x_ref
    mem("reference")
    # many frames, small ones, a gathered reference: each rank scans whole frames on its own;
    # otherwise every rank works on every frame (domain decomposition)
    frame_parallel = (size > 1 and len(chosen) >= size and not ref.ring
                      and max(frames[f].n_atoms for f in chosen) <= config.frame_parallel_atoms)
    mode = "frames over ranks" if frame_parallel else "domain decomposition per frame"
    signature = comm.broadcast(scan_signature(config, size, f"{mode}, reference {ref.path}", config.ref, chosen)
                               if rank == 0 else None, root=0)
    ckpt = Checkpoint(config.out, signature, comm)
    ckpt.prepare()
    annotated_dir = os.path.join(config.out, "annotated")
    if rank == 0 and not config.no_annotated_dump:
        os.makedirs(annotated_dir, exist_ok=True)
    comm.wait_for_all()
    return _Run(config, comm, ref, ckpt, reader, mode, annotated_dir, mem)


def _scan_frames(run: _Run, frames, chosen):
    """Every chosen frame not finished in an earlier run: whole frames over ranks, or each frame
    by domain decomposition over all ranks."""
    from ..parallel import SerialComm
    from ..progress import Progress

    comm = run.world
    frame_parallel = run.mode == "frames over ranks"
    mine = chosen[comm.rank::comm.size] if frame_parallel else chosen
    frame_comm = SerialComm() if frame_parallel else comm
    for n_done, f in enumerate(mine):
        info = frames[f]
        comm.poll()  # a frame boundary: stops of the other ranks (and signals) act here
        if os.path.exists(run.ckpt.frame_file(f)):  # whole frame done in an earlier run
            continue
        prog = Progress(f"frame {f} ({n_done + 1}/{len(mine)}), {info.n_atoms:,} atoms", 1, "chunks",
                        enabled=frame_comm.rank == 0 and comm.rank == 0 and not run.config.quiet, interval=0.0)
        stats = _scan_frame(run, frame_comm, info, f, prog)
        if frame_comm.rank == 0:
            _atomic_json(run.ckpt.frame_file(f), stats)


def _scan_chunk(run, binned, dom, info, f, c, q0, q1, dh_owned, redone_owned):
    """Descriptors and δH of owned atoms q0:q1 of frame f, written as checkpoint chunk c."""
    config, world, ref, ckpt, timings = run.config, run.world, run.ref, run.ckpt, run.timings
    from ..distributed.dump_frames import owned_descriptors
    from ..faults import inject
    from ..metrics import near_threshold

    rank = world.rank  # fault points and the test signal name the world rank
    t = time.perf_counter()
    x = owned_descriptors(binned, dom["id"], q0, q1, config.k, config.traj, f)
    inject("uq.chunk", rank)
    timings["descriptors"] += time.perf_counter() - t
    t = time.perf_counter()
    precision = {}
    dh = ref.delta_entropy(x, config.threads, stats=precision, must_recompute=near_threshold(config.threshold))
    timings["dH"] += time.perf_counter() - t
    t = time.perf_counter()
    arrays = {"dH": dh, "frame": np.full(q1 - q0, f, dtype=np.int64), "atom_id": dom["id"][q0:q1],
              "timestep": np.full(q1 - q0, info.timestep, dtype=np.int64), "row": dom["row"][q0:q1]}
    if config.precision == "float32":  # which atoms' dH float32 could not bound: recomputed in float64
        redone = np.zeros(q1 - q0, dtype=np.uint8)
        redone[precision["float32_recomputed_index"]] = 1
        arrays["float64_recomputed"] = redone
        redone_owned[q0:q1] = redone
    _write_chunk(ckpt.chunk_file(f, c), arrays)
    ckpt.log_computed(f, c)
    timings["write"] += time.perf_counter() - t
    run.chunk_done()
    dh_owned[q0:q1] = dh


def _scan_frame(run, comm, info, f, prog):
    config, world, timings, ckpt = run.config, run.world, run.timings, run.ckpt
    from ..descriptors import BinnedPoints
    from ..parallel.channel import deferred_signals
    from ..distributed.statistics import frame_statistics

    from ..io.lammps import MalformedFrame

    mem = MemTrace(comm.rank)
    mem("before frame")
    try:
        # memory per rank ~ its domain + halo, never the frame nor its whole share of the lines
        dom, part = run.reader.read_and_exchange(comm, info, f, timings, mem)
    except MalformedFrame as exc:  # agreed by every rank of ``comm``
        if not config.skip_bad_frames:
            raise
        return {"frame": int(f), "timestep": int(info.timestep), "skipped": str(exc), "line": int(info.header_line)}
    mem("read + exchange: data pass")
    t = time.perf_counter()
    binned = BinnedPoints.taking(dom, config.cutoff)  # pops pts/atom/shift from dom
    timings["exchange"] += time.perf_counter() - t
    mem("binning")
    n_owned = dom["n_owned"]
    # the same chunk count on every rank: the ring path of the reference is collective
    n_chunks = comm.reduce_max(-(-n_owned // config.chunk_atoms))
    prog.total = n_chunks
    dh_owned = np.empty(n_owned)
    redone_owned = np.zeros(n_owned, dtype=np.uint8)
    for c in range(n_chunks):
        q0 = min(c * config.chunk_atoms, n_owned)
        q1 = min(q0 + config.chunk_atoms, n_owned)
        path = ckpt.chunk_file(f, c)
        done_here = os.path.exists(path)
        # every rank must agree whether to compute (the ring is collective)
        all_done = comm.every_rank(done_here)
        if all_done:
            chunk = _read_chunk(path)
            dh_owned[q0:q1] = chunk["dH"]
            redone_owned[q0:q1] = chunk.get("float64_recomputed", 0)
            prog.update(c + 1)
            continue
        with deferred_signals():  # a signal now waits until this chunk is checkpointed
            _scan_chunk(run, binned, dom, info, f, c, q0, q1, dh_owned, redone_owned)
        prog.update(c + 1)
        world.poll()  # a chunk boundary: act on a signal, or on another rank's stop
    binned = None  # the point set: not needed any more
    dom.pop("id")
    mem("chunks (descriptors, dH, shards)")
    stats = frame_statistics(comm, dh_owned, config.threshold)
    stats.update(frame=int(f), timestep=int(info.timestep))
    if config.precision == "float32":
        stats["float32_recomputed_rows"] = int(comm.reduce_sum(int(redone_owned.sum())))
    if not config.no_annotated_dump:
        t = time.perf_counter()
        # δH back to the rank that read each row, then written in file order
        from ..distributed.dump_frames import DH_COLUMN, values_to_readers, write_annotated_frame

        mine = values_to_readers(comm, dom["row"], dh_owned, part)
        write_annotated_frame(comm, config.traj, info, part, [DH_COLUMN], [mine],
                              os.path.join(run.annotated_dir, f"frame-{f:06d}.lammpstrj"))
        timings["write"] += time.perf_counter() - t
    mem("annotated dump")
    return stats




def _vm_status():
    """(VmRSS, VmHWM) of this process in MiB from /proc/self/status (None off Linux)."""
    try:
        with open("/proc/self/status") as fh:
            d = dict(line.split(":", 1) for line in fh if line.startswith(("VmRSS", "VmHWM")))
        return int(d["VmRSS"].split()[0]) / 1024.0, int(d["VmHWM"].split()[0]) / 1024.0
    except (OSError, KeyError, ValueError):
        return None


class MemTrace:
    """``HPCQUESTS_UQ_MEMTRACE=1``: after each phase, print this rank's peak RSS during the phase
    and its RSS at its end (stderr), resetting the kernel's high-water mark in between
    (/proc/self/clear_refs), so the peak is attributed to the phase that made it. The scan's
    reported peak is then the largest phase peak (resetting the mark also resets getrusage's)."""

    peak = 0.0

    def __init__(self, rank):
        self.rank = rank
        self.enabled = bool(os.environ.get("HPCQUESTS_UQ_MEMTRACE")) and _vm_status() is not None
        self.t = time.perf_counter()

    def __call__(self, phase):
        if not self.enabled:
            return
        rss, hwm = _vm_status()
        MemTrace.peak = max(MemTrace.peak, hwm)
        now = time.perf_counter()
        print(f"[mem] rank {self.rank} {phase}: peak {hwm:.0f} MiB, now {rss:.0f} MiB ({now - self.t:.1f} s)",
              file=sys.stderr, flush=True)
        self.t = now
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
        except OSError:
            pass


def _finalize(run, chosen, frame_stats, bad, wall):
    """Result store master, dH_hist.png, annotated dump, then summary.json (rank 0 writes).
    ``chosen``: the scanned frames (file numbers), skipped ones excluded."""
    config, comm, ckpt, ref, timings = run.config, run.world, run.ckpt, run.ref, run.timings
    from .stats import write_histogram_png

    import resource

    rank = comm.rank
    timings = {k: float(comm.reduce_max(v)) for k, v in timings.items()}
    MemTrace(rank)("finalize")
    peak_rss = comm.gather_objects(max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, MemTrace.peak))

    def write():
        if rank != 0:
            return {}
        from ..io.store import shard_layout, store_attrs, write_master

        prefix = ckpt.run_id + "-f"
        names = sorted(n for n in os.listdir(ckpt.shards) if n.endswith(".h5") and n.startswith(prefix))
        infos, row = [], 0
        per_frame = {}
        import h5py

        for n in names:
            fr = int(n[len(prefix):len(prefix) + 6])
            path = os.path.join(ckpt.shards, n)
            with h5py.File(path, "r") as fh:
                shapes = {k: {"shape": list(fh[k].shape), "dtype": fh[k].dtype.str} for k in fh}
            m = shapes["dH"]["shape"][0]
            per_frame[fr] = per_frame.get(fr, 0) + m
            infos.append({"file": os.path.join(os.path.basename(ckpt.shards), n), "row_start": row, "n_rows": m,
                          "datasets": shapes, "size": os.path.getsize(path), **shard_layout(path)})
            row += m
        offsets = np.concatenate([[0], np.cumsum([per_frame.get(fr, 0) for fr in chosen])]).astype(np.int64)
        attrs = store_attrs(k=config.k, cutoff=config.cutoff, species=[], descriptor_kind="uq-result",
                            sources=[{"path": os.path.abspath(config.traj)}, {"path": os.path.abspath(config.ref)}],
                            command="python -m hpcquests.uq " + " ".join(sys.argv[1:]), bandwidth=config.bandwidth,
                            frames=list(chosen))
        write_master(os.path.join(config.out, RESULT_NAME), infos, offsets, attrs=attrs)
        frame_stats.sort(key=lambda s: s["frame"])
        summary = {"traj": config.traj, "ref": config.ref, "reference_environments": ref.n_ref,
                   "reference_path": ref.path, "bandwidth": config.bandwidth, "thresholds": config.threshold,
                   "precision": _precision_summary(config, frame_stats),
                   "ranks": comm.size, "mode": run.mode, "frames": frame_stats, "skipped_frames": bad,
                   "atoms": int(sum(s.get("atoms", 0) for s in frame_stats)),
                   "timings_s": timings, "wall_s": wall, "peak_rss_mib_per_rank": peak_rss}
        write_histogram_png(os.path.join(config.out, "dH_hist.png"), frame_stats, config.threshold)
        if not config.no_annotated_dump:
            _concatenate_annotated(config, chosen)
        # last: a directory with summary.json is a finished scan
        _atomic_json(os.path.join(config.out, "summary.json"), summary)
        return summary

    return write()


def _precision_summary(config, frame_stats) -> dict:
    """The precision record of summary.json: in float32, the tolerance and the atoms recomputed in
    float64 (counted from the chunks themselves, so a resumed scan counts every chunk)."""
    if config.precision != "float32":
        return {"precision": config.precision}
    return {"precision": "float32", "float32_tolerance": config.float32_tolerance,
            "float32_recomputed_rows": int(sum(s.get("float32_recomputed_rows", 0) for s in frame_stats))}


def _concatenate_annotated(config, chosen):
    from ..distributed.dump_frames import concatenate_frames

    stem = os.path.splitext(os.path.basename(config.traj))[0]
    concatenate_frames([os.path.join(config.out, "annotated", f"frame-{f:06d}.lammpstrj") for f in chosen],
                       os.path.join(config.out, f"{stem}_dH.lammpstrj"))
