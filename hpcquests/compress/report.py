"""Metrics of a selection (docs/compress.md) and the report files.

Per selection: size, n_envs, H, D, overlap(full | selected) (the fraction of all environments
with δH(y | selected) < ε), efficiency H / log n_envs, and, when forces exist, the force-magnitude
tail of the selected structures against the full set: P(|F| ≥ f) at the full set's 50/90/99/
99.9th percentiles of |F|. Everything is computed with the communicator passed in (rows spread
over ranks); the result is the same on every rank.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np

from .._json import json_default

TAIL_QUANTILES = (0.5, 0.9, 0.99, 0.999)


def selection_rows(local_offsets, first_index: int, selected) -> np.ndarray:
    """Row indices (into this rank's x_local) of the environments of the selected structures."""
    n_local = local_offsets.size - 1
    sel = np.asarray(sorted(selected), dtype=np.int64) - first_index
    sel = sel[(sel >= 0) & (sel < n_local)]
    if sel.size == 0:
        return np.zeros(0, dtype=np.int64)
    return np.concatenate([np.arange(local_offsets[c], local_offsets[c + 1]) for c in sel])


def set_metrics(comm, x_local, h: float, *, threads=None, ref_memory=None, **precision) -> dict:
    """H, D, n_envs and efficiency of the set whose rows are spread over the ranks. ``precision``:
    ``precision=``, ``float32_tolerance=``, ``stats=`` (``distributed.drivers.distributed_logsum``)."""
    from ..distributed.drivers import DEFAULT_REF_MEMORY, distributed_entropy_diversity

    n = int(comm.reduce_sum(int(x_local.shape[0])))
    H, D = distributed_entropy_diversity(comm, x_local, h, threads=threads,
                                         ref_memory=DEFAULT_REF_MEMORY if ref_memory is None else ref_memory,
                                         **precision)
    return {"n_envs": n, "entropy": float(H), "diversity": float(D),
            "efficiency": float(H / math.log(n)) if n > 1 else float("nan")}


def coverage(comm, x_local, x_sel_local, h: float, eps: float, *, threads=None, ref_memory=None,
             precision=None, float32_tolerance=1e-3, stats=None) -> float:
    """overlap(full | selected): fraction of all environments with δH(y | selected) < eps (in
    float32, the rows within their bound of eps are decided in float64: float64's fraction)."""
    from ..distributed.drivers import DEFAULT_REF_MEMORY, ReferenceSet
    from ..metrics import near_threshold

    ref = ReferenceSet(comm, x_sel_local, h, ref_memory=DEFAULT_REF_MEMORY if ref_memory is None else ref_memory,
                       precision=precision, float32_tolerance=float32_tolerance)
    dh = ref.delta_entropy(x_local, threads=threads, stats=stats, must_recompute=near_threshold(eps))
    hits = int(comm.reduce_sum(int((dh < eps).sum())))
    total = int(comm.reduce_sum(int(x_local.shape[0])))
    return hits / total


def force_tail(force_norms_full: np.ndarray, force_norms_selected: np.ndarray) -> dict:
    """P(|F| ≥ f) for the full set and the selection at the full set's upper quantiles of |F|
    (eV/Å). Returns {"thresholds": [...], "quantiles": [...], "full": [...], "selected": [...],
    "max_full", "max_selected"}."""
    full = np.asarray(force_norms_full, dtype=np.float64)
    sel = np.asarray(force_norms_selected, dtype=np.float64)
    thr = np.quantile(full, TAIL_QUANTILES)
    return {"quantiles": list(TAIL_QUANTILES), "thresholds": thr.tolist(),
            "full": [float((full >= t).mean()) for t in thr],
            "selected": [float((sel >= t).mean()) if sel.size else float("nan") for t in thr],
            "max_full": float(full.max()), "max_selected": float(sel.max()) if sel.size else float("nan")}


def write_json(path: str, payload: dict) -> None:
    write_text(path, json.dumps(payload, indent=1, default=json_default) + "\n")


def write_text(path: str, text: str) -> None:
    """Written whole or not at all, fsynced (``io.durable``): report.json marks a dataset done."""
    from ..io.durable import write_text_durably

    write_text_durably(path, text)


def markdown_report(report: dict) -> str:
    """The report as a Markdown document (one table of selections)."""
    full = report["full"]
    lines = [f"# Compression of {report['dataset']}", "",
             f"{report['n_structures']} structures, {full['n_envs']} environments; h = {report['bandwidth']:g}, "
             f"k = {report['k']}, cutoff = {report['cutoff']} Å, overlap ε = {report['eps']:g}; "
             f"{report['ranks']} rank(s).", "",
             f"Full set: H = {full['entropy']:.4f}, D = {full['diversity']:.4f}, "
             f"efficiency = {full['efficiency']:.4f}.", ""]
    dup = report.get("duplicates")
    if dup:
        lines += [f"{dup['dropped']} exact copies dropped before selection (`duplicates.tsv`): "
                  + ", ".join(f"{c['index']} (= {c['copy_of']})" for c in dup["copies"][:20])
                  + (", ..." if dup["dropped"] > 20 else "") + ".", ""]
    comp = report.get("compile_s") or {}
    if comp:
        lines += ["Kernel compilation (or loading from numba's cache), not in the times below: "
                  + ", ".join(f"{m} {t:.2f} s" for m, t in comp.items()) + ".", ""]
    lines += ["| method | size | fraction | environments | H | D | overlap(full \\| sel) | efficiency | time (s) |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in report["selections"]:
        lines.append(f"| {r['method']} | {r['size']} | {r['fraction']:.3f} | {r['n_envs']} | {r['entropy']:.4f} | "
                     f"{r['diversity']:.4f} | {r['overlap']:.4f} | {r['efficiency']:.4f} | {r['time_s']:.2f} |")
    tails = [r for r in report["selections"] if r.get("force_tail")]
    if tails:
        q = tails[0]["force_tail"]["quantiles"]
        lines += ["", "Force-magnitude tail P(|F| ≥ f) at the full set's quantiles of |F| "
                  f"({', '.join(f'{v:g}' for v in q)}):", "",
                  "| method | size | " + " | ".join(f"q{v:g}" for v in q) + " |",
                  "|---|---:|" + "---:|" * len(q),
                  "| full | " + str(report["n_structures"]) + " | "
                  + " | ".join(f"{v:.4f}" for v in tails[0]["force_tail"]["full"]) + " |"]
        for r in tails:
            lines.append(f"| {r['method']} | {r['size']} | "
                         + " | ".join(f"{v:.4f}" for v in r["force_tail"]["selected"]) + " |")
    return "\n".join(lines) + "\n"


def plot_curves(report: dict, path: str) -> None:
    """compress_curves.png: H, D and overlap(full | selected) against size, one line per method
    (the paper's comparison), plus the force tail when forces exist."""
    import io

    import matplotlib

    from ..io.durable import write_durably

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    sels = report["selections"]
    methods = list(dict.fromkeys(r["method"] for r in sels))
    panels = [("entropy", "H (nats)"), ("diversity", "D"), ("overlap", "overlap(full | selected)")]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), constrained_layout=True)
    for ax, (key, label) in zip(axes, panels):
        for m in methods:
            rows = sorted((r for r in sels if r["method"] == m), key=lambda r: r["size"])
            ax.plot([r["fraction"] for r in rows], [r[key] for r in rows], marker="o", label=m)
        if key in report["full"]:
            ax.axhline(report["full"][key], color="k", lw=0.8, ls="--", label="full")
        ax.set_xlabel("fraction of structures")
        ax.set_ylabel(label)
    axes[0].legend(fontsize=8)
    fig.suptitle(os.path.basename(str(report["dataset"])))
    image = io.BytesIO()
    fig.savefig(image, dpi=110, format="png")
    plt.close(fig)
    write_durably(path, image.getbuffer())
