"""Trajectory analysis: the entropy H of every frame and the δH of every atom against the first
frame, on any number of ranks, in one pass over a LAMMPS dump.

Built on the UQ scan's parts: the dump's frame index and the per-rank byte ranges of its atom
lines, read in blocks and sent to spatial domains with a halo (``distributed.dump_frames``), the
descriptors of owned atoms, the reference set gathered or passed around a ring
(``distributed.drivers.ReferenceSet``), statistics reduced without gathering values
(``distributed.statistics``), the locked output directory and its per-frame checkpoint
(``io.run_dir``), and the error-and-stop channel.

Per frame (n atoms, descriptors x_i):

- **entropy**: H = log n − (1/n) Σ_i log Σ_j K(x_i, x_j), exact (every pair) when n ≤
  ``exact_atoms``; above it, the mean over a simple random sample of m = ``sample_atoms`` query
  atoms (each still against the whole frame), reported with its standard error
  s/√m · √(1 − m/n) (finite-population correction). The sample is the m atoms with the smallest
  hash of (seed, frame, atom id): the same atoms on any number of ranks.
- **δH vs first**: δH(x_i | first frame) of every atom against the first selected frame (its
  descriptors kept as a ``ReferenceSet`` for the whole run); per frame the mean, min, max,
  quantiles and the novelty, the fraction of atoms with δH ≥ ε.

Parallel modes (as the scan): every rank works on every frame (domain decomposition), or, with
at least as many remaining frames as ranks, frames of at most ``frame_parallel_atoms`` atoms
and a first frame that fits ``ref_memory`` on every rank, each rank takes whole frames. The first
frame is always analysed by all ranks together (it becomes the reference). Results agree to
rounding (≤ 1e-12 relative) on any number of ranks and in either mode.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time

import numpy as np

from .config import TrajectoryConfig, frame_range

RESULT_JSON = "trajectory.json"
RESULT_CSV = "trajectory.csv"
RESULT_PNG = "trajectory.png"
#: trajectory.csv's columns (the scalars of trajectory.json's frames), in order.
CSV_COLUMNS = ("frame", "timestep", "atoms", "entropy", "entropy_stderr", "entropy_exact", "entropy_sample",
               "dH_vs_first_mean", "dH_vs_first_min", "dH_vs_first_p50", "dH_vs_first_max", "novelty",
               "n_clusters", "largest_cluster", "clustered_atoms")
CLUSTER_CSV = "cluster_sizes.csv"
CNT_PNG = "cnt_fit.png"
#: Boltzmann's constant, eV/K.
K_B = 8.617333262e-5


@dataclasses.dataclass
class _Run:
    """One analysis' state shared by its stages."""

    config: TrajectoryConfig
    world: object
    reader: object
    h: float
    run_dir: object
    first_ref: object = None
    cluster_ref: object = None
    timings: dict = dataclasses.field(default_factory=lambda: dict.fromkeys(
        ("read", "exchange", "descriptors", "entropy", "dH", "clusters", "write"), 0.0))

    def frame_done(self):
        if self.config.on_frame is not None:
            self.config.on_frame(self.world.rank)


def analyse_trajectory(config: TrajectoryConfig, comm) -> dict:
    """Run the analysis (collective); returns the summary (rank 0; {} elsewhere) and writes
    ``OUT/trajectory.json``, ``trajectory.csv`` and ``trajectory.png``."""
    from ..io.run_dir import RunDirectory

    if not isinstance(config, TrajectoryConfig):
        raise TypeError(f"analyse_trajectory takes a TrajectoryConfig, got {type(config).__name__}")
    run_dir = RunDirectory(config.out, comm, lock_name="trajectory.lock", what="analysis",
                           neutral_options="--read-block, --threads, -q, --json and the --cnt-* options")
    with run_dir.locked():
        return _analyse_locked(config, comm, run_dir)


def _analyse_locked(config, comm, run_dir) -> dict:
    from ..distributed.dump_frames import FrameReader, index_frames
    from ..io import lammps

    t0 = time.perf_counter()
    reader = FrameReader(config.traj, lammps.parse_types(config.types), config.cutoff, config.read_block,
                         config.skip_bad_frames)
    frames, chosen, bad = index_frames(comm, config.traj, config.frames, config.skip_bad_frames)
    h = _bandwidth(config, frames[chosen[0]])
    run = _Run(config, comm, reader, h, run_dir)
    signature = comm.broadcast(_signature(config, comm.size, h, chosen) if comm.rank == 0 else None, root=0)
    run_dir.prepare(signature, (("traj", "TRAJ"), ("ranks", "the number of ranks"), ("frames", "the frames"),
                                ("bandwidth_used", "the bandwidth"), ("clusters_ref", "the --clusters reference")))
    if config.clusters:
        _load_cluster_reference(run, frames[chosen[0]], chosen[0])
    rest = _first_frame(run, frames, chosen)
    mode = _mode(run, frames, rest)
    _analyse_frames(run, frames, rest, mode)
    comm.wait_for_all()
    run.timings = {k: float(comm.reduce_max(v)) for k, v in run.timings.items()}  # the slowest rank's
    summary = None
    if comm.rank == 0:
        summary = _finalize(run, chosen, bad, mode, time.perf_counter() - t0)
    return summary or {}


def _load_cluster_reference(run, info, f):
    """The solid reference of ``--clusters`` as a ReferenceSet (its species checked against the
    first frame's), and the folder of the annotated frames."""
    from ..distributed.drivers import load_reference_rows

    config, comm = run.config, run.world
    species = run.reader.species(comm, info, f)
    x = load_reference_rows(comm, config.clusters, k=config.k, cutoff=config.cutoff, species=species,
                            traj=config.traj, threads=config.threads, option="--clusters")
    run.cluster_ref = _reference_set(config, comm, x, run.h)
    if comm.rank == 0 and not config.no_annotated_dump:
        os.makedirs(os.path.join(config.out, "annotated"), exist_ok=True)
    comm.wait_for_all()


def _bandwidth(config, info) -> float:
    if config.bandwidth != "auto":
        return float(config.bandwidth)
    from ..metrics import get_bandwidth

    if not info.pbc.all():
        raise ValueError(f"--bandwidth auto: frame {info.index} of TRAJ {config.traj} is not periodic in every "
                         "direction (no volume per atom); give --bandwidth H")
    return float(get_bandwidth(abs(np.linalg.det(info.cell)) / info.n_atoms))


def _signature(config, size, h, chosen) -> dict:
    import json

    from .._json import json_default

    sig = {"options": config.signature_options(), "bandwidth_used": h, "ranks": size, "frames": list(chosen),
           "clusters_ref": _identity(config.clusters) if config.clusters else None,
           "traj": {"path": os.path.abspath(config.traj), "size": os.path.getsize(config.traj),
                    "mtime_ns": os.stat(config.traj).st_mtime_ns}}
    return json.loads(json.dumps(sig, default=json_default))


def _identity(path) -> dict:
    """The --clusters reference's path and identity (``io.run_dir.file_identity``)."""
    from ..io.run_dir import file_identity

    if not os.path.exists(path):
        raise ValueError(f"--clusters {path}: no such file")
    return {"path": os.path.abspath(path), **file_identity(path)}


def _first_frame(run, frames, chosen) -> list:
    """Analyse the first usable chosen frame on all ranks together; with ``vs_first`` its
    descriptors become the reference. Returns the frames still to do."""
    config, comm = run.config, run.world
    for i, f in enumerate(chosen):
        done = os.path.exists(run.run_dir.frame_file(f))
        if done and not config.vs_first:
            continue
        stats, x = _analyse_frame(run, comm, frames[f], f, keep_x=config.vs_first)
        if "skipped" in stats:
            if comm.rank == 0:
                run.run_dir.save_frame(f, stats)
            continue
        if config.vs_first:
            run.first_ref = _reference_set(config, comm, x, run.h)
            if not done:  # the first frame against itself
                stats.update(_vs_first(run, comm, x))
            del x
        if not done:
            if comm.rank == 0:
                run.run_dir.save_frame(f, stats)
            run.frame_done()
        return chosen[i + 1:]
    return []


def _mode(run, frames, rest) -> str:
    """Whole frames over ranks (each rank its own frames, the first frame's reference gathered on
    every rank), or every frame by domain decomposition over all ranks."""
    comm, config = run.world, run.config
    ring = any(r is not None and r.ring for r in (run.first_ref, run.cluster_ref))
    whole = (comm.size > 1 and len(rest) >= comm.size and not ring
             and max(frames[f].n_atoms for f in rest) <= config.frame_parallel_atoms)
    return "frames over ranks" if whole else "domain decomposition per frame"


def _analyse_frames(run, frames, rest, mode):
    from ..parallel import SerialComm
    from ..progress import Progress

    comm = run.world
    whole = mode == "frames over ranks"
    mine = rest[comm.rank::comm.size] if whole else rest
    frame_comm = SerialComm() if whole else comm
    prog = Progress("frames", len(mine), "frames", enabled=comm.rank == 0 and not run.config.quiet)
    for i, f in enumerate(mine):
        comm.poll()  # a frame boundary: stops of the other ranks (and signals) act here
        if not os.path.exists(run.run_dir.frame_file(f)):
            stats, _ = _analyse_frame(run, frame_comm, frames[f], f, keep_x=False)
            if frame_comm.rank == 0:
                run.run_dir.save_frame(f, stats)
            run.frame_done()
        prog.update(i + 1)
    prog.close()


def _analyse_frame(run, comm, info, f, keep_x):
    """(statistics, this rank's descriptors or None) of frame f over ``comm``."""
    from ..descriptors import BinnedPoints
    from ..distributed.dump_frames import owned_descriptors
    from ..io.lammps import MalformedFrame

    config = run.config
    try:
        dom, part = run.reader.read_and_exchange(comm, info, f, run.timings)
    except MalformedFrame as exc:  # agreed by every rank of ``comm``
        if not config.skip_bad_frames:
            raise
        return {"frame": int(f), "timestep": int(info.timestep), "skipped": str(exc),
                "line": int(info.header_line)}, None
    points = (dom["pts"].copy(), dom["atom"].copy()) if config.clusters else None  # (binning takes them)
    t = time.perf_counter()
    binned = BinnedPoints.taking(dom, config.cutoff)
    n_owned = dom["n_owned"]
    x = np.empty((n_owned, 2 * config.k - 1))
    for q0 in range(0, n_owned, config.chunk_atoms):
        q1 = min(q0 + config.chunk_atoms, n_owned)
        x[q0:q1] = owned_descriptors(binned, dom["id"], q0, q1, config.k, config.traj, f)
        run.world.poll()
    del binned
    run.timings["descriptors"] += time.perf_counter() - t
    n = int(comm.reduce_sum(n_owned))
    stats = {"frame": int(f), "timestep": int(info.timestep), "atoms": n}
    if config.entropy:
        t = time.perf_counter()
        stats.update(_frame_entropy(run, comm, x, dom["id"][:n_owned], f, n))
        run.timings["entropy"] += time.perf_counter() - t
    if config.vs_first and run.first_ref is not None:
        t = time.perf_counter()
        stats.update(_vs_first(run, comm, x))
        run.timings["dH"] += time.perf_counter() - t
    if config.clusters:
        stats.update(_frame_clusters(run, comm, info, f, x, dom, part, points))
    return stats, (x if keep_x else None)


def _frame_clusters(run, comm, info, f, x, dom, part, points) -> dict:
    """δH of every atom against the solid reference, the clusters of the atoms below
    ``cluster_eps``, their sizes, and the annotated frame (``dh``, ``cluster`` columns)."""
    from ..distributed.clusters import domain_clusters
    from ..distributed.dump_frames import (CLUSTER_COLUMN, DH_COLUMN, values_to_readers,
                                           write_annotated_frame)

    config = run.config
    t = time.perf_counter()
    L, recomputed = _chunked_logsum(run, comm, run.cluster_ref, x, "clusters", eps=config.cluster_eps)
    dh = -L
    run.timings["dH"] += time.perf_counter() - t
    t = time.perf_counter()
    n_owned = dom["n_owned"]
    labels = domain_clusters(comm, points[0], points[1], n_owned, dom["id"][:n_owned], dh < config.cluster_eps,
                             config.cluster_cutoff)
    n_clusters = int(comm.reduce_max(int(labels.max(initial=0))))
    sizes = np.asarray(comm.reduce_sum(np.bincount(labels, minlength=n_clusters + 1).astype(np.int64)))[1:]
    size_values, size_counts = np.unique(sizes, return_counts=True)
    run.timings["clusters"] += time.perf_counter() - t
    if not config.no_annotated_dump:
        t = time.perf_counter()
        write_annotated_frame(comm, config.traj, info, part, [DH_COLUMN, CLUSTER_COLUMN],
                              [values_to_readers(comm, dom["row"], dh, part),
                               values_to_readers(comm, dom["row"], labels, part)],
                              _annotated_frame_path(config, f))
        run.timings["write"] += time.perf_counter() - t
    return {"n_clusters": n_clusters, "largest_cluster": int(sizes.max(initial=0)),
            "clustered_atoms": int(sizes.sum()),
            "cluster_sizes": [[int(s), int(c)] for s, c in zip(size_values, size_counts)],
            **recomputed}


def _annotated_frame_path(config, f) -> str:
    return os.path.join(config.out, "annotated", f"frame-{f:06d}.lammpstrj")


def _reference_set(config, comm, x, h):
    """A ReferenceSet in the run's precision (collective)."""
    from ..distributed.drivers import ReferenceSet

    return ReferenceSet(comm, x, h, ref_memory=config.ref_memory, precision=config.precision,
                        float32_tolerance=config.float32_tolerance)


def _chunked_logsum(run, comm, ref, q, measure: str, eps=None) -> tuple[np.ndarray, dict]:
    """(log Σ_j K(q_i, x_j) of this rank's queries against ``ref``, {}), ``chunk_atoms`` at a
    time; the same number of calls on every rank of ``comm`` (the ring is collective). In float32,
    rows within their bound of ``eps`` (a δH threshold the measure decides on) are recomputed in
    float64 too, and the dict is ``{MEASURE_float32_recomputed: rows recomputed}`` (collective)."""
    from ..metrics import near_threshold

    chunk = run.config.chunk_atoms
    n_chunks = int(comm.reduce_max(-(-q.shape[0] // chunk)))
    out = np.empty(q.shape[0])
    stats = {}
    decide = None if eps is None else near_threshold(eps)
    for c in range(n_chunks):
        a, b = min(c * chunk, q.shape[0]), min((c + 1) * chunk, q.shape[0])
        out[a:b] = ref.logsum(q[a:b], run.config.threads, stats=stats, must_recompute=decide)[:, 0]
        run.world.poll()
    if run.config.precision != "float32":
        return out, {}
    return out, {f"{measure}_float32_recomputed": int(comm.reduce_sum(int(stats.get("float32_recomputed_rows", 0))))}


def sample_hashes(seed: int, frame: int, ids) -> np.ndarray:
    """(n,) uint64 hash of (seed, frame, atom id) (splitmix64's finaliser): the sampling key, the
    same whatever rank holds the atom."""
    with np.errstate(over="ignore"):
        z = (np.asarray(ids, dtype=np.uint64) + np.uint64(frame) * np.uint64(0x9E3779B97F4A7C15)
             + np.uint64(seed) * np.uint64(0xD1B54A32D192ED03) + np.uint64(0x632BE59BD9B4E019))
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def sample_mask(comm, keys, m: int) -> np.ndarray:
    """This rank's atoms among the m with the smallest ``keys`` over all ranks (collective): the
    threshold is found by bisection on the key with summed counts, so no rank gathers keys."""
    lo, hi = 0, 2**64 - 1  # the m-th smallest key lies in [lo, hi]
    while lo < hi:
        mid = (lo + hi) // 2
        if int(comm.reduce_sum(int(np.count_nonzero(keys <= np.uint64(mid))))) >= m:
            hi = mid
        else:
            lo = mid + 1
    return keys <= np.uint64(lo)


def _frame_entropy(run, comm, x, ids, f, n) -> dict:
    """H of the frame: exact, or estimated from a sample of query atoms (with its standard error)."""
    config = run.config
    ref = _reference_set(config, comm, x, run.h)
    exact = n <= config.exact_atoms or config.sample_atoms >= n
    q = x if exact else x[sample_mask(comm, sample_hashes(config.seed, f, ids), config.sample_atoms)]
    L, recomputed = _chunked_logsum(run, comm, ref, q, "entropy")
    m = int(comm.reduce_sum(int(L.size)))
    mean = float(comm.reduce_sum(float(L.sum()))) / m
    out = {"entropy": math.log(n) - mean, "entropy_stderr": 0.0, "entropy_exact": exact, "entropy_sample": m,
           **recomputed}
    if not exact:
        var = float(comm.reduce_sum(float(((L - mean) ** 2).sum()))) / (m - 1)
        out["entropy_stderr"] = math.sqrt(var / m * (1.0 - m / n))
    return out


def _vs_first(run, comm, x) -> dict:
    """δH of this frame's atoms against the first frame: mean, extremes, quantiles, novelty."""
    from ..distributed.statistics import frame_statistics

    L, recomputed = _chunked_logsum(run, comm, run.first_ref, x, "dH_vs_first", eps=run.config.eps)
    dh = -L
    st = frame_statistics(comm, dh, [])
    novel = int(comm.reduce_sum(int(np.count_nonzero(dh >= run.config.eps))))
    q = st["quantiles"]
    return {"dH_vs_first_mean": st["mean"], "dH_vs_first_min": st["min"], "dH_vs_first_max": st["max"],
            "dH_vs_first_quantiles": q, "dH_vs_first_p50": q["p50"],
            "dH_vs_first_quantile_resolution": st["quantile_resolution"], "novelty": novel / st["atoms"],
            **recomputed}


def _finalize(run, chosen, bad, mode, wall) -> dict:
    """trajectory.json, trajectory.csv and trajectory.png from the frames' checkpoint (rank 0)."""
    import json

    from .._json import json_default
    from ..io.durable import write_text_durably

    config, out = run.config, run.config.out
    frames, skipped = [], list(bad)
    for f in chosen:
        st = run.run_dir.load_frame(f)
        if "skipped" in st:
            skipped.append({"frame": f, "line": st.get("line"), "error": st["skipped"]})
        else:
            frames.append(st)
    skipped.sort(key=lambda b: b["frame"])
    summary = {"traj": os.path.abspath(config.traj), "bandwidth": run.h, "bandwidth_option": config.bandwidth,
               "k": config.k, "cutoff": config.cutoff, "entropy": config.entropy, "vs_first": config.vs_first,
               "first_frame": frames[0]["frame"] if frames else None, "eps": config.eps,
               "exact_atoms": config.exact_atoms, "sample_atoms": config.sample_atoms, "seed": config.seed,
               "ranks": run.world.size, "mode": mode, "wall_s": wall, "timings_s": run.timings, "frames": frames,
               "skipped_frames": skipped,
               "columns": list(CSV_COLUMNS)}
    write_text_durably(os.path.join(out, RESULT_CSV), _csv(frames))
    _plot(os.path.join(out, RESULT_PNG), frames, summary)
    if config.clusters:
        summary.update(clusters_ref=os.path.abspath(config.clusters), cluster_eps=config.cluster_eps,
                       cluster_cutoff=config.cluster_cutoff)
        write_text_durably(os.path.join(out, CLUSTER_CSV), "frame,size,count\n" + "".join(
            f"{st['frame']},{s},{c}\n" for st in frames for s, c in st.get("cluster_sizes", [])))
        if not config.no_annotated_dump:
            from ..distributed.dump_frames import concatenate_frames

            stem = os.path.splitext(os.path.basename(config.traj))[0]
            summary["annotated_dump"] = os.path.join(out, f"{stem}_clusters.lammpstrj")
            concatenate_frames([_annotated_frame_path(config, st["frame"]) for st in frames],
                               summary["annotated_dump"])
        if config.cnt_volume is not None:
            summary["cnt_fit"] = cnt_fit(frames, config)
            _plot_cnt(os.path.join(out, CNT_PNG), summary["cnt_fit"])
    write_text_durably(os.path.join(out, RESULT_JSON), json.dumps(summary, indent=1, default=json_default))
    return summary


def _csv(frames) -> str:
    lines = [",".join(CSV_COLUMNS)]
    for st in frames:
        row = []
        for c in CSV_COLUMNS:
            v = st.get(c)
            row.append("" if v is None else (repr(float(v)) if isinstance(v, float) else str(int(v))))
        lines.append(",".join(row))
    return "\n".join(lines) + "\n"


def _plot(path, frames, summary):
    """Entropy (with its standard error) and mean δH vs first against the timestep."""
    import io

    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from ..io.durable import write_durably

    steps = [st["timestep"] for st in frames]
    panels = [k for k in ("entropy", "dH_vs_first_mean") if frames and k in frames[0]]
    fig, axes = plt.subplots(len(panels) or 1, 1, figsize=(7, 2.8 * max(1, len(panels))), dpi=120, sharex=True,
                             squeeze=False)
    for ax, key in zip(axes[:, 0], panels):
        y = np.array([st[key] for st in frames])
        if key == "entropy":
            err = np.array([st["entropy_stderr"] for st in frames])
            ax.errorbar(steps, y, yerr=err, marker="o", ms=3, lw=1)
            ax.set_ylabel("H (nats)")
        else:
            ax.plot(steps, y, marker="o", ms=3, lw=1, color="C3")
            ax.set_ylabel("mean δH vs first (nats)")
    axes[-1, 0].set_xlabel("timestep")
    axes[0, 0].set_title(f"{os.path.basename(summary['traj'])}, h = {summary['bandwidth']:.4g}")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    write_durably(path, buf.getvalue())



def cnt_fit(frames, config) -> dict:
    """The classical nucleation theory fit of the paper's Methods ("Cluster size distribution"):
    log N_r = log N₀ − 4πr³Δg/(3k_BT) − 4πr²γ/(k_BT), N_r the mean number of clusters of size s
    per frame over the frames of ``cnt_frames``, r = (3 s v / 4π)^(1/3) with v = ``cnt_volume``
    (Å³ per atom), T = ``cnt_temperature``. Linear least squares in (log N₀, Δg, γ); errors from
    the residual variance. Δg in eV/Å³, γ in eV/Å²; ValueError with fewer than four sizes."""
    lo, hi = frame_range(config.cnt_frames)
    used = [st for st in frames if lo <= st["frame"] < hi]
    counts = {}
    for st in used:
        for s, c in st.get("cluster_sizes", []):
            counts[s] = counts.get(s, 0) + c
    sizes = np.array(sorted(counts), dtype=np.float64)
    if sizes.size < 4:
        where = f"--cnt-frames {config.cnt_frames}" if config.cnt_frames else "the frames analysed"
        raise ValueError(f"the nucleation fit needs clusters of at least 4 different sizes in {where} ({sizes.size} "
                         f"found in {len(used)} frame(s)); widen --cnt-frames or leave out --cnt-volume")
    n_r = np.array([counts[int(s)] for s in sizes]) / len(used)
    kt = K_B * float(config.cnt_temperature)
    r = (3.0 * sizes * float(config.cnt_volume) / (4.0 * math.pi)) ** (1.0 / 3.0)
    design = np.column_stack([np.ones_like(r), -4.0 * math.pi * r ** 3 / (3.0 * kt), -4.0 * math.pi * r ** 2 / kt])
    y = np.log(n_r)
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    resid = y - design @ coef
    dof = max(1, len(y) - 3)
    cov = float(resid @ resid) / dof * np.linalg.inv(design.T @ design)
    err = np.sqrt(np.diag(cov))
    return {"log_n0": float(coef[0]), "log_n0_err": float(err[0]), "delta_g": float(coef[1]),
            "delta_g_err": float(err[1]), "gamma": float(coef[2]), "gamma_err": float(err[2]),
            "units": {"delta_g": "eV/Å^3", "gamma": "eV/Å^2", "r": "Å"}, "temperature": float(config.cnt_temperature),
            "volume_per_atom": float(config.cnt_volume), "frames": [st["frame"] for st in used],
            "sizes": sizes.astype(int).tolist(), "r": r.tolist(), "n_r": n_r.tolist(),
            "fitted_log_n_r": (design @ coef).tolist()}


def _plot_cnt(path, fit):
    import io

    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from ..io.durable import write_durably

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    ax.plot(fit["r"], np.log(fit["n_r"]), "o", ms=4, label="clusters (mean per frame)")
    ax.plot(fit["r"], fit["fitted_log_n_r"], "-", label=f"CNT: γ = {fit['gamma']:.3g} ± {fit['gamma_err']:.2g} eV/Å², "
                                                       f"Δg = {fit['delta_g']:.3g} ± {fit['delta_g_err']:.2g} eV/Å³")
    ax.set_xlabel("cluster radius r (Å)")
    ax.set_ylabel("log N_r")
    ax.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    write_durably(path, buf.getvalue())
