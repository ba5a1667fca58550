"""``generate(config, comm)``: a Rev-EM run from configuration to outputs (collective).

Outputs in ``OUT``: ``generated.extxyz`` (the bootstrap configurations, ``bootstrap=True``, and the
accepted ones, in (mode, window) order; ``info``: mode, window, bootstrap, entropy_gain, K,
candidate), ``generate.json`` (docs/generate.md lists its keys), ``generate.png`` (the entropy
of each window's set against the candidate index), ``checkpoint/`` (per-task progress; a rerun
with the same options resumes).
"""

from __future__ import annotations

import os
import time

import numpy as np

from .config import GenerateConfig, equilibrium_volume, window_edges


def generate(config: GenerateConfig, comm) -> dict:
    """Run (or resume) the generation; returns the summary on rank 0 ({} elsewhere)."""
    from ..io.run_dir import RunDirectory

    if not isinstance(config, GenerateConfig):
        raise TypeError(f"generate takes a GenerateConfig, got {type(config).__name__}")
    run_dir = RunDirectory(config.out, comm, lock_name="generate.lock", what="generation",
                           neutral_options="--compare, -q, --json and the number of ranks")
    with run_dir.locked():
        return _generate_locked(config, comm, run_dir)


def _signature(config, v_eq) -> dict:
    import dataclasses
    import json

    from .._json import json_default

    opts = config.signature_options()
    opts["snap"] = dataclasses.asdict(config.snap)
    opts.pop("out", None)
    return json.loads(json.dumps({**opts, "v_eq_used": v_eq}, default=json_default))


def _generate_locked(config, comm, run_dir) -> dict:
    from ..runtime import threads
    from .generator import run_tasks
    from .snap import load_lammps

    t0 = time.perf_counter()
    load_lammps()
    v_eq = config.v_eq if config.v_eq is not None else equilibrium_volume(config.element)
    edges = window_edges(v_eq, config)
    run_dir.prepare(_signature(config, v_eq), (("element", "--element"), ("accepted", "--accepted"),
                                                ("seed", "--seed"), ("mode", "--mode")))
    clock = [0.0]
    with threads(1):  # one BLAS thread: the same bits on any rank
        results = run_tasks(config, comm, edges, run_dir, clock)
    wall = time.perf_counter() - t0
    lammps_s = float(comm.reduce_sum(clock[0]))
    busy_s = float(comm.reduce_sum(wall))
    if comm.rank != 0:
        return {}
    summary = _summary(config, v_eq, edges, results, wall, lammps_s, busy_s, comm.size)
    frames = _frames(config, results)
    if config.compare:
        summary["compare"] = _compare(config, [a for a in frames if not a.info["bootstrap"]])
    _write_outputs(config, frames, results, summary)
    return summary


def _compare(config, accepted) -> dict:
    from .compare import compare_sets

    if len(accepted) < 2:
        raise ValueError("--compare needs at least two accepted configurations")
    return compare_sets(config.element, accepted, config.snap, config.seed)


def _summary(config, v_eq, edges, results, wall, lammps_s, busy_s, size) -> dict:
    import dataclasses

    windows = []
    for r in results:
        tried = r["next"]
        windows.append({k: r[k] for k in ("mode", "window", "v_start", "v_end", "r_core", "min_distance", "quota",
                                          "accepted_count", "rejected_entropy", "rejected_distance",
                                          "bootstrap_entropy", "scatter_ridge", "k")}
                       | {"candidates": tried, "acceptance_rate": r["accepted_count"] / tried if tried else None,
                          "entropy_trace": [a["entropy"] for a in r["accepted"]],
                          "entropy_final": r["accepted"][-1]["entropy"] if r["accepted"] else r["bootstrap_entropy"],
                          "gain_before_median": _median([t["gain_before"] for t in r["trace"]]),
                          "gain_median": _median([t["gain"] for t in r["trace"]])})
    accepted = sum(w["accepted_count"] for w in windows)
    tried = sum(w["candidates"] for w in windows)
    params = {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.compare}
    params["snap"] = config.snap.as_dict()
    return {"element": config.element, "v_eq": v_eq, "window_edges": edges.tolist(), "parameters": params,
            "accepted": accepted, "candidates": tried, "acceptance_rate": accepted / tried if tried else None,
            "shortfall": config.accepted * len(config.modes()) - accepted, "windows": windows,
            "gain_before_median": _median([t["gain_before"] for r in results for t in r["trace"]]),
            "gain_median": _median([t["gain"] for r in results for t in r["trace"]]),
            "wall_s": wall, "lammps_s": lammps_s, "lammps_share": lammps_s / busy_s if busy_s else None,
            "candidates_per_s": tried / wall if wall else None, "ranks": size,
            "outputs": ["generated.extxyz", "generate.json", "generate.png"]}


def _median(v):
    return float(np.median(v)) if v else None


def _frames(config, results):
    """ase.Atoms of the bootstrap and accepted configurations, in (mode, window) order."""
    from ase import Atoms

    frames = []
    for r in results:
        for b in r["bootstrap"]:
            a = Atoms(f"{config.element}{len(b['positions'])}", positions=b["positions"], cell=b["cell"], pbc=True)
            a.info.update(mode=r["mode"], window=r["window"], bootstrap=True)
            frames.append(a)
        for acc in r["accepted"]:
            a = Atoms(f"{config.element}{len(acc['positions'])}", positions=acc["positions"], cell=acc["cell"],
                      pbc=True)
            a.info.update(mode=r["mode"], window=r["window"], bootstrap=False, entropy_gain=acc["gain"], K=acc["k"],
                          candidate=acc["candidate"])
            frames.append(a)
    return frames


def _write_outputs(config, frames, results, summary):
    import io

    import ase.io

    from ..io.durable import write_text_durably
    from ..io.run_dir import write_json

    buf = io.StringIO()
    ase.io.write(buf, frames, format="extxyz", parallel=False)
    write_text_durably(os.path.join(config.out, "generated.extxyz"), buf.getvalue())
    write_json(os.path.join(config.out, "generate.json"), summary)
    _plot(os.path.join(config.out, "generate.png"), results)


def _plot(path, results):
    import io

    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from ..io.durable import write_durably

    modes = sorted({r["mode"] for r in results})
    fig, axes = plt.subplots(1, len(modes), figsize=(5 * len(modes), 3.6), dpi=120, squeeze=False)
    for ax, mode in zip(axes[0], modes):
        for r in (r for r in results if r["mode"] == mode):
            its = [0] + [a["candidate"] + 1 for a in r["accepted"]]
            ent = [r["bootstrap_entropy"]] + [a["entropy"] for a in r["accepted"]]
            ax.step(its, ent, where="post", lw=1, label=f"w{r['window']}")
        ax.set_xlabel("candidate")
        ax.set_ylabel("log det(Σ + λI) of the window's set")
        ax.set_title(mode)
    if len(results) <= 20:
        axes[0][-1].legend(fontsize=5, ncol=2)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    write_durably(path, buf.getvalue())
