"""Dataset-level compression (``hpcquests compress``) and collection aggregation (``hpcquests aggregate``).

``compress_dataset`` reads a dataset (ColabFit Parquet export, extxyz, anything ASE reads) on
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


def compress_dataset(comm, path: str, out_dir: str, *, methods=("msc",), sizes=(0.1,), h: float = DEFAULT_BANDWIDTH,
                     k: int = 32, cutoff: float = 5.0, eps: float = DEFAULT_OVERLAP_EPS, seed: int = 0,
                     reference=None, scores=None, threads=None, write_structures: bool = True,
                     multicomponent: bool = False, species=None, drop_duplicates: bool = False,
                     labels: dict | None = None, types: dict | None = None,
                     command: str = "", progress_factory=None) -> dict:
    """Compress one dataset with every method at every size; returns the report (every rank).

    Args:
        comm: communicator (collective call). path: dataset. out_dir: output directory (created).
        methods: names from ``METHOD_NAMES``. sizes: counts or fractions (see ``resolve_sizes``).
        h: bandwidth; k, cutoff: descriptor parameters; eps: overlap threshold; seed: baselines'.
        reference: optional path of a reference dataset for conditional MSC.
        scores: optional per-structure importance scores for CCS ((N,) array).
        threads: numba threads per rank. progress_factory: callable(label, total, unit) → progress.
        drop_duplicates: remove exact copies (structures with bitwise identical environment
            sets) before any method, keeping the first of each group; sizes then count the
            remaining structures, selections keep the dataset's own indices, and the report
            lists every dropped copy with the structure it copies.
    """
    from ..faults import inject
    from ..io.structures import read_dataset
    from ..distributed.drivers import distributed_descriptors, local_structure_range
    from .msc import distributed_msc
    from .sizes import resolve_sizes

    t_start = time.perf_counter()
    methods = check_methods(methods)
    rank = comm.rank

    def load():
        if not os.path.exists(path):
            raise ValueError(f"dataset {path}: no such file or directory")
        return read_dataset(path, labels=labels, types=types)

    structures, ids = load()
    structures = list(structures)
    n = len(structures)
    if n == 0:
        raise ValueError(f"dataset {path} is empty (no structures)")
    _prepare_dir(out_dir)

    if multicomponent and species is None:
        from ..descriptors import dataset_species

        species = dataset_species(structures)
    prog = progress_factory("descriptors", n, "structures") if progress_factory else None
    x_local, (lo, hi) = distributed_descriptors(comm, structures, k, cutoff, multicomponent=multicomponent,
                                                species=species, threads=threads, progress=prog)
    if prog is not None:
        prog.close()
    atom_counts = np.array([len(a) for a in structures], dtype=np.int64)
    local_offsets = np.zeros(hi - lo + 1, dtype=np.int64)
    np.cumsum(atom_counts[lo:hi], out=local_offsets[1:])
    assert (lo, hi) == local_structure_range(comm, atom_counts)
    t_desc = time.perf_counter() - t_start

    # methods run on the kept structures (all of them unless copies are dropped); ``kept``
    # maps their indices back to the dataset's
    full_x_local, full_offsets = x_local, local_offsets
    copies = exact_copies(comm, x_local, local_offsets, n) if drop_duplicates else {}
    keep = np.ones(n, dtype=bool)
    keep[list(copies)] = False
    kept = np.flatnonzero(keep)
    if copies:
        x_local, local_offsets = _keep_structures(x_local, local_offsets, keep[lo:hi])
    first_kept = int(keep[:lo].sum())
    counts = resolve_sizes(list(sizes), int(kept.size))

    ref_x = None
    if reference is not None:
        ref_structures, _ = read_dataset(reference, labels=labels, types=types)
        ref_local, _ = distributed_descriptors(comm, list(ref_structures), k, cutoff, multicomponent=multicomponent,
                                               species=species, threads=threads)

        ref_x = comm.gather_rows(ref_local)

    selections: dict[str, tuple[list, float]] = {}
    entropies = None
    compile_s = {}
    if "msc" in methods:
        # compile (or load from numba's cache) first, so that MSC's time is the selection's only
        compile_s["msc"] = _warm_up_msc(x_local, local_offsets, h, threads)
        t0 = time.perf_counter()
        prog = progress_factory("msc", max(counts), "picks") if progress_factory else None
        res = distributed_msc(comm, x_local, local_offsets, first_kept, counts, h=h, reference=ref_x,
                              threads=threads, progress=prog)
        if prog is not None:
            prog.close()
        entropies = res.entropies
        dt = time.perf_counter() - t0
        for c in counts:
            selections[("msc", c)] = (res.order[:c], dt)
    baseline_methods = [m for m in methods if m != "msc"]
    if baseline_methods:
        descs = _gather_structures(comm, x_local, local_offsets, atom_counts[kept])
        if entropies is None and any(m in ("fps",) for m in baseline_methods):
            entropies = _structure_entropies(comm, x_local, local_offsets, h, threads)

        def run_baselines():
            out = {}
            if rank != 0:
                return out
            from .baselines import PREFIX_METHODS

            for m in baseline_methods:
                fn = _baseline(m)
                offered = {"seed": seed, "threads": threads, "entropies": entropies if m == "fps" else None,
                           "h": h if m == "ccs" else None, "scores": scores if m == "ccs" else None}
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

        selections.update(comm.broadcast(run_baselines(), root=0))
    # back to the dataset's indices
    selections = {key: ([int(kept[i]) for i in sel], dt) for key, (sel, dt) in selections.items()}
    if entropies is not None and copies:
        source = np.arange(n)
        for i, j in copies.items():
            source[i] = j
        entropies = np.asarray(entropies)[(np.cumsum(keep) - 1)[source]]
    x_local, local_offsets = full_x_local, full_offsets

    # metrics of every selection (collective), full set first
    from .report import coverage, force_tail, selection_rows, set_metrics

    full = set_metrics(comm, x_local, h, threads=threads)
    forces = _force_norms(structures)
    rows_out = []
    for m in methods:
        for c in counts:
            sel, dt = selections[(m, c)]
            x_sel_local = x_local[selection_rows(local_offsets, lo, sel)]
            met = set_metrics(comm, x_sel_local, h, threads=threads)
            ov = coverage(comm, x_local, x_sel_local, h, eps, threads=threads)
            row = {"method": m, "size": int(c), "fraction": c / kept.size, **met, "overlap": ov, "time_s": dt}
            if forces is not None:
                row["force_tail"] = force_tail(np.concatenate(forces),
                                               np.concatenate([forces[i] for i in sel]))
            rows_out.append(row)

    duplicates = None
    if drop_duplicates:
        duplicates = {"dropped": len(copies), "copies": [{"index": int(i), "id": ids[i], "copy_of": int(j),
                                                           "copy_of_id": ids[j]} for i, j in sorted(copies.items())]}
    report = {"dataset": path, "n_structures": n, "duplicates": duplicates, "bandwidth": h, "k": k, "cutoff": cutoff,
              "eps": eps,
              "seed": seed, "ranks": comm.size, "methods": methods, "sizes": counts, "full": full,
              "selections": rows_out, "descriptor_time_s": t_desc, "compile_s": compile_s, "command": command,
              "reference": reference, "wall_s": None}

    def write_outputs():
        if rank != 0:
            return
        inject("compress.write", rank)
        from ..io.colabfit import write_selection
        from ..io.durable import remove_stale_temporaries

        remove_stale_temporaries(out_dir, recursive=True)  # what a killed run left
        from .report import markdown_report, plot_curves, write_json, write_text

        for (m, c), (sel, _) in sorted(selections.items()):
            d = os.path.join(out_dir, "selections", m, f"size_{c}")
            os.makedirs(d, exist_ok=True)
            if write_structures:
                write_selection(d, structures, sel, [ids[i] for i in sel])
            else:
                write_text(os.path.join(d, "indices.txt"), "".join(f"{i}\n" for i in sel))
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

    write_outputs()
    report["wall_s"] = comm.broadcast(report["wall_s"], root=0)
    return report


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
    """H(S) of every structure (each rank its own, gathered), as MSC computes them."""
    from ..kernels.cpu import prune_exponent
    from ..kernels.greedy import structure_entropies
    from ..runtime import threads as thread_context

    local = np.zeros(0)
    if x_local.shape[0]:
        with thread_context(threads):
            local = structure_entropies(np.ascontiguousarray(x_local), local_offsets, 1.0 / (2 * h * h),
                                        2 * h * h * prune_exponent(int(np.diff(local_offsets).max())))
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
