"""Dataset-level compression (``hpcquests compress``) and collection aggregation (``hpcquests aggregate``).

``run_compression(CompressConfig(...), comm)`` (or ``compress_dataset``) reads a dataset (ColabFit Parquet export, extxyz, anything ASE reads) on
every rank, computes descriptors distributed over the ranks (balanced by atom count), runs the
requested methods for every size (greedy MSC distributed: one run serves every size; the
baselines on rank 0, their selection broadcast), measures each selection (``report``), and
writes into the output directory:

- ``selections/<method>/size_<n>/{indices.txt, ids.txt, selected.extxyz}``;
- ``report.json``, ``report.md``, ``compress_curves.png``.

``report.json`` is written last and atomically: its presence marks the dataset as done (the
Slurm array skips such datasets on a rerun).
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import os
import time

import numpy as np

from ..metrics import DEFAULT_BANDWIDTH, DEFAULT_OVERLAP_EPS

#: Method names accepted by ``compress_dataset`` (``msc`` plus the baselines).
METHOD_NAMES = ("msc", "random", "kmeans", "mean-fps", "fps", "ccs", "logdet")
REPORT = "report.json"
FAILED = "FAILED"


def check_methods(methods) -> list[str]:
    out = []
    for m in methods:
        key = str(m).lower().replace("_", "-")
        if key not in METHOD_NAMES:
            raise ValueError(f"unknown method {m!r}: choose from {', '.join(METHOD_NAMES)}")
        if key not in out:
            out.append(key)
    if not out:
        raise ValueError("no method given")
    return out


def _baseline(name: str):
    from . import baselines

    table = getattr(baselines, "METHODS", {})
    for key in (name, name.replace("-", "_"), name.replace("-", "")):
        if key in table:
            return table[key]
    raise ValueError(f"method {name!r} is not available in hpcquests.compress.baselines")


@dataclasses.dataclass(frozen=True)
class CompressConfig:
    """What ``run_compression`` does: validated at construction, immutable.

    data: dataset path. out_dir: output directory (created). methods: names from
    ``METHOD_NAMES``. sizes: counts or fractions (see ``sizes.resolve_sizes``). h: bandwidth;
    k, cutoff: descriptor parameters; eps: overlap threshold; seed: the random baselines'.
    reference: optional dataset path for conditional MSC. scores: optional (N,) importance
    scores for CCS. threads: numba threads per rank. drop_duplicates: remove exact copies
    (bitwise identical environment sets) before any method, keeping the first of each group;
    sizes then count the remaining structures, selections keep the dataset's own indices, and
    the report lists every dropped copy. command: recorded in the report. progress_factory:
    callable(label, total, unit) -> progress object (a hook; not part of the result).
    precision, float32_tolerance: the kernels' precision (docs/precision.md): in float32 the
    report's H, D and overlap are float32's within their bound (rows over the tolerance and
    overlap decisions near eps in float64, counted in the report); MSC (the CPU lazy greedy,
    whose accepted values are float64) is the same in both.
    """

    data: str
    out_dir: str
    methods: tuple = ("msc",)
    sizes: tuple = (0.1,)
    h: float = DEFAULT_BANDWIDTH
    k: int = 32
    cutoff: float = 5.0
    eps: float = DEFAULT_OVERLAP_EPS
    seed: int = 0
    reference: str | None = None
    scores: object = dataclasses.field(default=None, compare=False)
    threads: int | None = None
    write_structures: bool = True
    multicomponent: bool = False
    species: tuple | None = None
    drop_duplicates: bool = False
    labels: dict | None = None
    types: dict | None = None
    command: str = ""
    progress_factory: object = dataclasses.field(default=None, compare=False)
    precision: str = "float64"
    float32_tolerance: float = 1e-3

    def __post_init__(self):
        from ..kernels.precision import check_precision_options

        precision, tolerance = check_precision_options(self.precision, self.float32_tolerance)
        object.__setattr__(self, "precision", precision)
        object.__setattr__(self, "float32_tolerance", tolerance)
        object.__setattr__(self, "methods", tuple(check_methods(self.methods)))
        object.__setattr__(self, "sizes", tuple(self.sizes))
        if self.species is not None:
            object.__setattr__(self, "species", tuple(self.species))

    def progress(self, label, total, unit):
        return self.progress_factory(label, total, unit) if self.progress_factory else None


@dataclasses.dataclass
class CompressResult:
    """``report``: the report (every rank; ``report.json``'s content). ``selections``:
    {(method, size): (dataset indices, seconds)}. ``entropies``: H(S) per structure or None."""

    report: dict
    selections: dict
    entropies: object


@dataclasses.dataclass
class _Described:
    """The dataset and this rank's descriptors (structures [lo, hi))."""

    structures: list
    ids: list
    atom_counts: np.ndarray
    x_local: np.ndarray
    local_offsets: np.ndarray
    lo: int
    hi: int
    species: object
    seconds: float

    @property
    def n(self) -> int:
        return len(self.structures)


@dataclasses.dataclass
class _Kept:
    """The structures the methods run on (all unless copies are dropped); ``kept`` maps their
    indices back to the dataset's."""

    x_local: np.ndarray
    local_offsets: np.ndarray
    keep: np.ndarray
    kept: np.ndarray
    copies: dict
    first: int
    counts: list


def compress_dataset(comm, path: str, out_dir: str, **options) -> dict:
    """``run_compression(CompressConfig(path, out_dir, **options), comm).report``."""
    return run_compression(CompressConfig(path, out_dir, **options), comm).report


def run_compression(config: CompressConfig, comm) -> CompressResult:
    """Compress one dataset with every method at every size (collective): describe, drop copies,
    select, evaluate, write. Returns the result on every rank."""
    t_start = time.perf_counter()
    described = _describe(config, comm, t_start)
    kept = _drop_copies(config, comm, described)
    selections, entropies, compile_s = _select(config, comm, described, kept)
    # back to the dataset's indices
    selections = {key: ([int(kept.kept[i]) for i in sel], dt) for key, (sel, dt) in selections.items()}
    if entropies is not None and kept.copies:
        source = np.arange(described.n)
        for i, j in kept.copies.items():
            source[i] = j
        entropies = np.asarray(entropies)[(np.cumsum(kept.keep) - 1)[source]]
    report = _report(config, comm, described, kept, selections, compile_s)
    if comm.rank == 0:
        _write_outputs(config, described, selections, entropies, report, t_start)
    report["wall_s"] = comm.broadcast(report["wall_s"], root=0)
    return CompressResult(report, selections, entropies)


def _describe(config: CompressConfig, comm, t_start) -> _Described:
    """Read the dataset (every rank) and compute this rank's descriptors."""
    from ..distributed.drivers import distributed_descriptors, local_structure_range
    from ..io.structures import read_dataset

    structures, ids = read_dataset(config.data, labels=config.labels, types=config.types)
    structures = list(structures)
    n = len(structures)
    if n == 0:
        raise ValueError(f"dataset {config.data} is empty (no structures)")
    _prepare_dir(config.out_dir)

    species = config.species
    if config.multicomponent and species is None:
        from ..descriptors import dataset_species

        species = dataset_species(structures)
    prog = config.progress("descriptors", n, "structures")
    x_local, (lo, hi) = distributed_descriptors(comm, structures, config.k, config.cutoff,
                                                multicomponent=config.multicomponent, species=species,
                                                threads=config.threads, progress=prog)
    if prog is not None:
        prog.close()
    atom_counts = np.array([len(a) for a in structures], dtype=np.int64)
    local_offsets = np.zeros(hi - lo + 1, dtype=np.int64)
    np.cumsum(atom_counts[lo:hi], out=local_offsets[1:])
    assert (lo, hi) == local_structure_range(comm, atom_counts)
    return _Described(structures, ids, atom_counts, x_local, local_offsets, lo, hi, species,
                      time.perf_counter() - t_start)


def _drop_copies(config: CompressConfig, comm, d: _Described) -> _Kept:
    from .sizes import resolve_sizes

    copies = exact_copies(comm, d.x_local, d.local_offsets, d.n) if config.drop_duplicates else {}
    keep = np.ones(d.n, dtype=bool)
    keep[list(copies)] = False
    kept = np.flatnonzero(keep)
    x_local, local_offsets = d.x_local, d.local_offsets
    if copies:
        x_local, local_offsets = _keep_structures(x_local, local_offsets, keep[d.lo:d.hi])
    counts = resolve_sizes(list(config.sizes), int(kept.size))
    return _Kept(x_local, local_offsets, keep, kept, copies, int(keep[:d.lo].sum()), counts)


def _reference_rows(config: CompressConfig, comm, species):
    """The conditional-MSC reference's descriptors on every rank, or None."""
    from ..distributed.drivers import distributed_descriptors
    from ..io.structures import read_dataset

    if config.reference is None:
        return None
    ref_structures, _ = read_dataset(config.reference, labels=config.labels, types=config.types)
    ref_local, _ = distributed_descriptors(comm, list(ref_structures), config.k, config.cutoff,
                                           multicomponent=config.multicomponent, species=species,
                                           threads=config.threads)
    return comm.gather_rows(ref_local)


def _select(config: CompressConfig, comm, d: _Described, kept: _Kept):
    """{(method, size): (kept-structure indices, seconds)}, H(S) of the kept structures (or
    None) and the kernels' compile seconds."""
    from .msc import distributed_msc

    ref_x = _reference_rows(config, comm, d.species)
    selections: dict = {}
    entropies = None
    compile_s = {}
    if "msc" in config.methods:
        # compile (or load from numba's cache) first, so that MSC's time is the selection's only
        compile_s["msc"] = _warm_up_msc(kept.x_local, kept.local_offsets, config.h, config.threads)
        t0 = time.perf_counter()
        prog = config.progress("msc", max(kept.counts), "picks")
        res = distributed_msc(comm, kept.x_local, kept.local_offsets, kept.first, kept.counts, h=config.h,
                              reference=ref_x, threads=config.threads, progress=prog)
        if prog is not None:
            prog.close()
        entropies = res.entropies
        dt = time.perf_counter() - t0
        for c in kept.counts:
            selections[("msc", c)] = (res.order[:c], dt)
    baseline_methods = [m for m in config.methods if m != "msc"]
    if baseline_methods:
        descs = _gather_structures(comm, kept.x_local, kept.local_offsets, d.atom_counts[kept.kept])
        if entropies is None and "fps" in baseline_methods:
            entropies = _structure_entropies(comm, kept.x_local, kept.local_offsets, config.h, config.threads)
        out = _run_baselines(config, baseline_methods, descs, kept.counts, entropies) if comm.rank == 0 else {}
        selections.update(comm.broadcast(out, root=0))
    return selections, entropies, compile_s


def _run_baselines(config: CompressConfig, methods, descs, counts, entropies) -> dict:
    """The baselines on this rank (rank 0): {(method, size): (indices, seconds)}."""
    from .baselines import PREFIX_METHODS

    out = {}
    for m in methods:
        fn = _baseline(m)
        offered = {"seed": config.seed, "threads": config.threads, "entropies": entropies if m == "fps" else None,
                   "h": config.h if m == "ccs" else None, "scores": config.scores if m == "ccs" else None}
        accepted = inspect.signature(fn).parameters
        opts = {k: v for k, v in offered.items() if k in accepted and (v is not None or k == "threads")}
        if m in PREFIX_METHODS:  # one run at the largest size serves every size
            t0 = time.perf_counter()
            sel = [int(i) for i in fn(descs, max(counts), **opts)]
            dt = time.perf_counter() - t0
            for c in counts:
                out[(m, c)] = (sel[:c], dt)
            continue
        for c in counts:
            t0 = time.perf_counter()
            sel = [int(i) for i in fn(descs, c, **opts)]
            out[(m, c)] = (sel, time.perf_counter() - t0)
    return out


def _report(config: CompressConfig, comm, d: _Described, kept: _Kept, selections, compile_s) -> dict:
    """Metrics of the full set and of every selection (collective), as the report."""
    from .report import coverage, force_tail, selection_rows, set_metrics

    from ..distributed.drivers import precision_summary

    h, threads = config.h, config.threads
    kernel = {"threads": threads, "precision": config.precision, "float32_tolerance": config.float32_tolerance,
              "stats": {}}
    full = set_metrics(comm, d.x_local, h, **kernel)
    forces = _force_norms(d.structures)
    rows_out = []
    for m in config.methods:
        for c in kept.counts:
            sel, dt = selections[(m, c)]
            x_sel_local = d.x_local[selection_rows(d.local_offsets, d.lo, sel)]
            met = set_metrics(comm, x_sel_local, h, **kernel)
            ov = coverage(comm, d.x_local, x_sel_local, h, config.eps, **kernel)
            row = {"method": m, "size": int(c), "fraction": c / kept.kept.size, **met, "overlap": ov, "time_s": dt}
            if forces is not None:
                row["force_tail"] = force_tail(np.concatenate(forces),
                                               np.concatenate([forces[i] for i in sel]))
            rows_out.append(row)
    duplicates = None
    if config.drop_duplicates:
        ids = d.ids
        duplicates = {"dropped": len(kept.copies),
                      "copies": [{"index": int(i), "id": ids[i], "copy_of": int(j), "copy_of_id": ids[j]}
                                 for i, j in sorted(kept.copies.items())]}
    return {"dataset": config.data, "n_structures": d.n, "duplicates": duplicates, "bandwidth": h, "k": config.k,
            "cutoff": config.cutoff, "eps": config.eps, "seed": config.seed, "ranks": comm.size,
            "methods": list(config.methods), "sizes": kept.counts, "full": full, "selections": rows_out,
            "descriptor_time_s": d.seconds, "compile_s": compile_s, "command": config.command,
            "reference": config.reference, "wall_s": None,
            "precision": precision_summary(comm, kernel["stats"], config.float32_tolerance)}


def _write_outputs(config: CompressConfig, d: _Described, selections, entropies, report, t_start):
    """Selections, duplicates, entropies, report.md, the curves and, last, report.json (rank 0)."""
    from ..faults import inject
    from ..io.colabfit import write_selection
    from ..io.durable import remove_stale_temporaries
    from .report import markdown_report, plot_curves, write_json, write_text

    out_dir, ids = config.out_dir, d.ids
    inject("compress.write", 0)
    remove_stale_temporaries(out_dir, recursive=True)  # what a killed run left
    for (m, c), (sel, _) in sorted(selections.items()):
        sd = os.path.join(out_dir, "selections", m, f"size_{c}")
        os.makedirs(sd, exist_ok=True)
        if config.write_structures:
            write_selection(sd, d.structures, sel, [ids[i] for i in sel])
        else:
            write_text(os.path.join(sd, "indices.txt"), "".join(f"{i}\n" for i in sel))
    duplicates = report["duplicates"]
    if duplicates is not None:
        write_text(os.path.join(out_dir, "duplicates.tsv"),
                   "index\tid\tcopy_of\tcopy_of_id\n" + "".join(
                       f"{c['index']}\t{c['id']}\t{c['copy_of']}\t{c['copy_of_id']}\n"
                       for c in duplicates["copies"]))
    if entropies is not None:
        write_text(os.path.join(out_dir, "structure_entropies.txt"),
                   "".join(f"{i}\t{ids[i]}\t{v:.12g}\n" for i, v in enumerate(entropies)))
    write_text(os.path.join(out_dir, "report.md"), markdown_report(report))
    plot_curves(report, os.path.join(out_dir, "compress_curves.png"))
    report["wall_s"] = time.perf_counter() - t_start
    failed = os.path.join(out_dir, FAILED)
    if os.path.exists(failed):
        os.remove(failed)
    write_json(os.path.join(out_dir, REPORT), report)  # last: marks the dataset done


def _warm_up_msc(x_local, local_offsets, h, threads) -> float:
    """Seconds to compile (or load from cache) the greedy's kernels: a serial MSC on this rank's
    first structures (no communication), so that the timed run measures the selection only."""
    from .msc import msc

    t = time.perf_counter()
    n = min(3, local_offsets.size - 1)
    if n >= 2:
        descs = [x_local[local_offsets[i]:local_offsets[i + 1]] for i in range(n)]
        msc(descs, 2, h=h, threads=threads)
    return time.perf_counter() - t


def structure_digest(x: np.ndarray) -> bytes:
    """A digest of a structure's environment set: equal for exact copies (bitwise identical
    descriptor rows in any order), different otherwise (up to SHA-256 collisions)."""
    import hashlib

    x = np.ascontiguousarray(x, dtype=np.float64) + 0.0  # -0.0 → +0.0
    order = np.lexsort(x.T[::-1]) if x.shape[0] > 1 else np.arange(x.shape[0])
    h = hashlib.sha256(np.asarray(x.shape, dtype=np.int64).tobytes())
    h.update(np.ascontiguousarray(x[order]).tobytes())
    return h.digest()


def exact_copies(comm, x_local, local_offsets, n: int) -> dict[int, int]:
    """{index of a copy: index of the first structure it copies} over the whole dataset
    (structures in contiguous blocks over the ranks, in rank order; collective)."""
    local = [structure_digest(x_local[a:b]) for a, b in zip(local_offsets[:-1], local_offsets[1:])]
    digests = [dg for part in comm.gather_objects(local) for dg in part]
    if len(digests) != n:
        raise RuntimeError(f"exact_copies: {len(digests)} digests for {n} structures (internal error)")
    first: dict[bytes, int] = {}
    copies = {}
    for i, dg in enumerate(digests):
        if dg in first:
            copies[i] = first[dg]
        else:
            first[dg] = i
    return copies


def _keep_structures(x_local, local_offsets, keep_local):
    """Rows and offsets of the kept local structures."""
    counts = np.diff(local_offsets)[keep_local]
    rows = np.repeat(keep_local, np.diff(local_offsets))
    offsets = np.zeros(counts.size + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return np.ascontiguousarray(x_local[rows]), offsets


def _prepare_dir(out_dir: str) -> None:
    from ..io.atomic import check_output_dir

    check_output_dir(out_dir, "output directory")


def _gather_structures(comm, x_local, local_offsets, atom_counts):
    """Every structure's descriptors on rank 0 (a list; None elsewhere)."""

    x = comm.gather_rows_to_root(x_local, root=0)
    if comm.rank != 0:
        return None
    offsets = np.concatenate([[0], np.cumsum(atom_counts)])
    return [x[offsets[i]:offsets[i + 1]] for i in range(atom_counts.size)]


def _structure_entropies(comm, x_local, local_offsets, h, threads):
    """H(S) of every structure (each rank its own, gathered): ``metrics.structure_entropies``."""
    from ..metrics import structure_entropies

    local = np.zeros(0)
    if x_local.shape[0]:
        local = structure_entropies(x_local, local_offsets, h, threads=threads)
    return np.concatenate(comm.gather_objects(local))


def _force_norms(structures):
    """Per-structure |F| arrays (eV/Å) when every structure has forces, else None."""
    out = []
    for a in structures:
        f = a.arrays.get("forces")
        if f is None:
            try:
                f = a.get_forces()
            except Exception:
                return None
        out.append(np.linalg.norm(np.asarray(f, dtype=np.float64), axis=1))
    return out


# --------------------------------------------------------------------------- aggregate

def aggregate(dirs, out_dir: str, *, method: str | None = None) -> dict:
    """Collect the reports of several compressed datasets into one table (CSV + Markdown + PNG).

    A directory without ``report.json`` is reported as failed (with the text of its ``FAILED``
    file when the array task left one) or missing; it does not stop the aggregation.
    Returns {"rows": [...], "failed": [...], "datasets": n}.
    """
    import csv
    import io
    import json

    from .report import write_text

    _prepare_dir(out_dir)
    rows, failed = [], []
    for d in dirs:
        name = os.path.basename(os.path.normpath(d))
        rep = os.path.join(d, REPORT)
        if not os.path.exists(rep):
            reason = "missing (no report.json)"
            fpath = os.path.join(d, FAILED)
            if os.path.exists(fpath):
                with open(fpath) as fh:
                    lines = fh.read().strip().splitlines() or ["(no message)"]
                # the tool's own error line, not the launcher's (srun: error: ... exit code 2)
                ours = [ln for ln in lines if ln.startswith("hpcquests") and "error:" in ln]
                reason = "failed: " + (ours or lines)[-1]
            elif not os.path.isdir(d):
                reason = "missing (no such directory)"
            failed.append({"dataset": name, "status": reason})
            continue
        with open(rep) as fh:
            r = json.load(fh)
        for s in r["selections"]:
            if method and s["method"] != method:
                continue
            rows.append({"dataset": name, "status": "ok", "n_structures": r["n_structures"],
                         "n_envs_full": r["full"]["n_envs"], "H_full": r["full"]["entropy"],
                         "D_full": r["full"]["diversity"], "method": s["method"], "size": s["size"],
                         "fraction": s["fraction"], "n_envs": s["n_envs"], "H": s["entropy"], "D": s["diversity"],
                         "overlap": s["overlap"], "efficiency": s["efficiency"], "time_s": s["time_s"]})
    fields = ["dataset", "status", "n_structures", "n_envs_full", "H_full", "D_full", "method", "size", "fraction",
              "n_envs", "H", "D", "overlap", "efficiency", "time_s"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    for f in failed:
        w.writerow({"dataset": f["dataset"], "status": f["status"]})
    write_text(os.path.join(out_dir, "collection.csv"), buf.getvalue())
    md = ["# Compression of a collection", "",
          f"{len(dirs)} datasets: {len(dirs) - len(failed)} done, {len(failed)} failed or missing.", "",
          "| dataset | method | size | fraction | H | H full | overlap | efficiency |",
          "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        md.append(f"| {r['dataset']} | {r['method']} | {r['size']} | {r['fraction']:.3f} | {r['H']:.4f} | "
                  f"{r['H_full']:.4f} | {r['overlap']:.4f} | {r['efficiency']:.4f} |")
    if failed:
        md += ["", "## Failed or missing", ""] + [f"- {f['dataset']}: {f['status']}" for f in failed]
    write_text(os.path.join(out_dir, "collection.md"), "\n".join(md) + "\n")
    if rows:
        _plot_collection(rows, os.path.join(out_dir, "collection.png"))
    return {"rows": rows, "failed": failed, "datasets": len(dirs)}


def _plot_collection(rows, path):
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from ..io.atomic import atomic_path

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), constrained_layout=True)
    for (ds, m) in dict.fromkeys((r["dataset"], r["method"]) for r in rows):
        sub = sorted((r for r in rows if r["dataset"] == ds and r["method"] == m), key=lambda r: r["fraction"])
        fr = [r["fraction"] for r in sub]
        axes[0].plot(fr, [r["H"] / r["H_full"] if r["H_full"] else math.nan for r in sub], marker="o",
                     label=f"{ds} ({m})")
        axes[1].plot(fr, [r["overlap"] for r in sub], marker="o")
    axes[0].set_xlabel("fraction of structures")
    axes[0].set_ylabel("H(selected) / H(full)")
    axes[1].set_xlabel("fraction of structures")
    axes[1].set_ylabel("overlap(full | selected)")
    axes[0].legend(fontsize=7)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
