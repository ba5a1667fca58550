"""``hpcquests overlap-matrix A B C …`` and ``hpcquests novelty GEN0 GEN1 …`` (``hpcquests.datasets``)."""

from __future__ import annotations

import os

import numpy as np

from .inputs import load_local
from .options import add_bandwidth_option, add_descriptor_options, add_ref_memory_option, add_run_options, \
    add_structure_options
from .policy import CliError


def _add_common(p):
    p.add_argument("--eps", type=float, default=1e-5, help="dH threshold (default 1e-5)")
    p.add_argument("-o", "--output", default=None, help="directory for the JSON, CSV and plot (optional)")
    add_descriptor_options(p)
    add_structure_options(p)
    add_bandwidth_option(p, several=False)
    add_ref_memory_option(p)
    add_run_options(p)


def add_overlap_matrix(sub):
    p = sub.add_parser("overlap-matrix", help="overlap of every dataset on every other (a table and a heat map)")
    p.add_argument("inputs", nargs="+", metavar="DATA", help="datasets: stores, structure files, ColabFit exports")
    _add_common(p)
    p.set_defaults(func=cmd_overlap_matrix)


def add_novelty(sub):
    p = sub.add_parser("novelty", help="novelty of each generation against the generations before it")
    p.add_argument("inputs", nargs="+", metavar="GEN", help="generations in order (increments): stores or "
                                                            "structure files")
    _add_common(p)
    p.set_defaults(func=cmd_novelty)


def _load_all(args, ctx, role):
    sets, infos = [], []
    for i, path in enumerate(args.inputs):
        x, info = load_local(path, args, ctx, role=f"{role}{i}")
        sets.append(x)
        infos.append(info)
    widths = {x.shape[1] for x in sets if x.size}
    if len(widths) > 1:
        raise CliError(f"the inputs have different descriptor widths {sorted(widths)} (mixed --multicomponent?)")
    return sets, infos


def _kw(args, ctx):
    return {"ref_memory": args.ref_memory, "threads": ctx.threads, "force_ring": args.ref_memory == 0}


def cmd_overlap_matrix(args, ctx):
    from ..datasets.analysis import overlap_matrix

    if len(args.inputs) < 2:
        raise CliError("overlap-matrix: give at least two datasets")
    sets, infos = _load_all(args, ctx, "DATA")
    m = overlap_matrix(ctx.comm, sets, args.bandwidth, args.eps, **_kw(args, ctx))
    names = [os.path.basename(p) for p in args.inputs]
    payload = {"datasets": args.inputs, "environments": [i["n_env"] for i in infos], "bandwidth": args.bandwidth,
               "eps": args.eps, "overlap": m.tolist(), "ranks": ctx.comm.size,
               "meaning": "overlap[i][j]: fraction of dataset i's environments with dH < eps against dataset j"}
    w = max(len(n) for n in names)
    lines = [f"overlap of each row dataset on each column dataset (h = {args.bandwidth:g}, eps = {args.eps:g})",
             " " * (w + 2) + " ".join(f"{n[:10]:>10s}" for n in names)]
    lines += [f"{names[i]:{w}s}  " + " ".join(f"{v:10.4f}" for v in m[i]) for i in range(len(names))]
    if ctx.is_root and args.output:
        _write_outputs(args.output, "overlap_matrix", payload, names, m)
    ctx.emit(payload, lines)


def cmd_novelty(args, ctx):
    from ..datasets.analysis import generation_novelty

    if len(args.inputs) < 2:
        raise CliError("novelty: give at least two generations")
    sets, infos = _load_all(args, ctx, "GEN")
    rows = generation_novelty(ctx.comm, sets, args.bandwidth, args.eps, **_kw(args, ctx))
    payload = {"generations": args.inputs, "bandwidth": args.bandwidth, "eps": args.eps, "rows": rows,
               "ranks": ctx.comm.size}
    lines = [f"novelty of each generation against the union of the ones before (h = {args.bandwidth:g}, "
             f"eps = {args.eps:g})"]
    lines += [f"  generation {r['generation']} ({os.path.basename(args.inputs[r['generation']])}): "
              f"{100 * r['novelty']:.2f}% novel of {r['environments']} environments "
              f"(against {r['reference_environments']})" for r in rows]
    if ctx.is_root and args.output:
        _write_outputs(args.output, "novelty", payload, [r["generation"] for r in rows],
                       np.array([r["novelty"] for r in rows]))
    ctx.emit(payload, lines)


def _write_outputs(out, stem, payload, names, values):
    """OUT/STEM.json, and a plot (a heat map for a matrix, a line for novelty), written whole."""
    import io
    import json

    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from .._json import json_default
    from ..io.durable import write_durably, write_text_durably

    os.makedirs(out, exist_ok=True)
    write_text_durably(os.path.join(out, f"{stem}.json"), json.dumps(payload, indent=1, default=json_default))
    fig, ax = plt.subplots(figsize=(6, 5 if values.ndim == 2 else 3.5), dpi=120)
    if values.ndim == 2:
        im = ax.imshow(values, vmin=0, vmax=1, cmap="viridis")
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(len(names)), names, fontsize=7)
        ax.set_xlabel("reference dataset")
        ax.set_ylabel("dataset")
        fig.colorbar(im, ax=ax, label="overlap")
    else:
        ax.plot(names, values, marker="o")
        ax.set_xlabel("generation")
        ax.set_ylabel("novel fraction")
        ax.set_ylim(0, 1)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    write_durably(os.path.join(out, f"{stem}.png"), buf.getvalue())
