"""``hpcquests overlap-matrix A B C …``, ``hpcquests novelty GEN0 GEN1 …`` and ``hpcquests learning-curve
DATA`` (``hpcquests.datasets``)."""

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


def add_learning_curve(sub):
    p = sub.add_parser("learning-curve", help="H of random subsets of growing size, its asymptote and the "
                                              "information gap")
    p.add_argument("input", metavar="DATA", help="the dataset: store, structure file, ColabFit export")
    p.add_argument("--unit", choices=("structures", "environments"), default="structures",
                   help="what a subset is made of (default structures)")
    p.add_argument("--sizes", type=int, default=12, help="number of subset sizes, log-spaced (default 12, "
                                                          "at least 10)")
    p.add_argument("--min-size", type=int, default=1, help="smallest subset, in units (default 1)")
    p.add_argument("--repeats", type=int, default=5, help="random subsets per size (default 5)")
    p.add_argument("--seed", type=int, default=0, help="seed of the subsets (default 0)")
    p.add_argument("-o", "--output", default=None, help="directory for the JSON and the plot (optional)")
    add_descriptor_options(p)
    add_structure_options(p)
    add_bandwidth_option(p, several=False)
    add_ref_memory_option(p)
    add_run_options(p)
    p.set_defaults(func=cmd_learning_curve)


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


def cmd_learning_curve(args, ctx):
    from ..datasets.learning_curve import FIT_DROP, analyse_learning_curve, learning_curve_entropies, \
        learning_curve_sizes

    if args.repeats < 1:
        raise CliError(f"--repeats must be at least 1 (got {args.repeats})")
    x, info, (row_start, offsets) = load_local(args.input, args, ctx, role="DATA", layout=True)
    n_units = info["n_structures"] if args.unit == "structures" else info["n_env"]
    try:
        sizes = learning_curve_sizes(n_units, args.sizes, args.min_size)
    except ValueError as exc:
        hint = " (try --unit environments)" if args.unit == "structures" and "fewer than" in str(exc) else ""
        raise CliError(f"DATA {args.input}: {exc}{hint}") from None
    prog = ctx.progress("learning curve", len(sizes) * args.repeats, "subsets")
    res = learning_curve_entropies(ctx.comm, x, row_start, offsets, sizes, repeats=args.repeats, seed=args.seed,
                                   unit=args.unit, h=args.bandwidth, progress=prog, **_kw(args, ctx))
    prog.close()
    curve = analyse_learning_curve(sizes, res["entropy"])
    payload = {"input": args.input, "unit": args.unit, "units": n_units, "environments_total": info["n_env"],
               "bandwidth": args.bandwidth, "seed": args.seed, "repeats": args.repeats, "sizes": sizes.tolist(),
               "fit_points": [FIT_DROP, len(sizes) - FIT_DROP], "entropy": res["entropy"].tolist(),
               "environments": res["environments"].tolist(), **curve, "ranks": ctx.comm.size}
    fit = curve["fit"]
    spread = "" if curve["asymptote_std"] is None else f" {_pm(curve['asymptote_std'])}"
    head = (f"asymptote a = {fit['a']:.4f} nats{spread}; "
            f"f(N) = a - {fit['b']:.4g} exp(-{fit['c']:.4g} (log N)^2)" if fit else "the fit did not converge")
    lines = [f"learning curve of {args.input}: {n_units} {args.unit}, {args.repeats} repeat(s), "
             f"h = {args.bandwidth:g}", f"  {head}"]
    if fit and not fit["determined"]:
        lines.append(f"  the fit is poorly determined (a ± {_pm(fit['a_stderr'])[2:] or 'undefined'} against a rise "
                     f"b = {fit['b']:.3g}): H is flat or noisy over the fitted sizes; more repeats or sizes help")
    lines.append(f"  {'N':>9s} {'H (nats) ± sd':>18s} {'gap a - H':>18s}")
    for k, n in enumerate(sizes):
        mark = "" if FIT_DROP <= k < len(sizes) - FIT_DROP else "  (not fitted)"
        h_txt = f"{curve['entropy_mean'][k]:.4f} {_pm(None if curve['entropy_std'] is None else curve['entropy_std'][k])}"
        g_txt = "" if curve["gap"] is None else \
            f"{curve['gap'][k]:.4f} {_pm(None if curve['gap_std'] is None else curve['gap_std'][k])}"
        lines.append(f"  {int(n):9d} {h_txt:>18s} {g_txt:>18s}{mark}")
    if ctx.is_root and args.output:
        _write_learning_curve(args.output, payload)
    ctx.emit(payload, lines)


def _pm(std):
    return "" if std is None else f"± {std:.4f}"


def _figure_bytes(fig) -> bytes:
    import io

    import matplotlib.pyplot as plt

    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _write_learning_curve(out, payload):
    """OUT/learning_curve.json and OUT/learning_curve.png (H with the fit and its asymptote; the
    gap), written whole."""
    import json

    from .._json import json_default
    from ..datasets.learning_curve import asymptote_curve
    from ..io.durable import write_durably, write_text_durably

    plt = _pyplot()
    os.makedirs(out, exist_ok=True)
    write_text_durably(os.path.join(out, "learning_curve.json"), json.dumps(payload, indent=1, default=json_default))
    n = np.array(payload["sizes"], dtype=np.float64)
    fitted = np.zeros(n.size, dtype=bool)
    fitted[slice(*payload["fit_points"])] = True
    std = payload["entropy_std"] or [0.0] * n.size
    fig, (ax, gx) = plt.subplots(1, 2, figsize=(9, 3.6), dpi=120)
    ax.errorbar(n[fitted], np.array(payload["entropy_mean"])[fitted], np.array(std)[fitted], fmt="o", ms=4,
                label="H, fitted")
    ax.errorbar(n[~fitted], np.array(payload["entropy_mean"])[~fitted], np.array(std)[~fitted], fmt="o", ms=4,
                mfc="none", label="H, not fitted")
    if payload["fit"]:
        f = payload["fit"]
        grid = np.geomspace(n[0], n[-1], 200)
        ax.plot(grid, asymptote_curve(grid, f["a"], f["b"], f["c"]), "-", lw=1, label="fit")
        ax.axhline(f["a"], ls="--", color="tab:red", lw=1, label=f"asymptote {f['a']:.3f}")
        gx.errorbar(n, payload["gap"], payload["gap_std"] or None, fmt="o-", ms=4)
    ax.set_xscale("log")
    ax.set_xlabel(f"subset size ({payload['unit']})")
    ax.set_ylabel("entropy H (nats)")
    ax.legend(fontsize=7)
    gx.set_xscale("log")
    gx.set_xlabel(f"subset size ({payload['unit']})")
    gx.set_ylabel("information gap a - H (nats)")
    write_durably(os.path.join(out, "learning_curve.png"), _figure_bytes(fig))


def _write_outputs(out, stem, payload, names, values):
    """OUT/STEM.json, and a plot (a heat map for a matrix, a line for novelty), written whole."""
    import json

    from .._json import json_default
    from ..io.durable import write_durably, write_text_durably

    plt = _pyplot()
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
    write_durably(os.path.join(out, f"{stem}.png"), _figure_bytes(fig))
