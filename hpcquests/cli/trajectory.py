"""``hpcquests trajectory TRAJ`` and ``python -m hpcquests.trajectory TRAJ``: entropy per frame
and δH against the first frame of a LAMMPS dump (``hpcquests.trajectory``). USR2 and TERM stop
the analysis after the frame in hand is checkpointed (exit 75; a rerun resumes)."""

from __future__ import annotations

import argparse
import json
import textwrap

from .options import (DEFAULT_BANDWIDTH, add_descriptor_options, add_precision_options, add_ref_memory_option,
                      add_run_options, add_types_option, memory_size)
from .policy import EXIT_STATUS_HELP, preemptible_main, signal_after_hook

HELP = "entropy per frame, dH against the first frame and solid-like clusters of an MD trajectory"


def bandwidth_or_auto(text):
    if str(text).strip().lower() == "auto":
        return "auto"
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a bandwidth: {text!r} (a number, or auto)") from None


def add_options(p):
    """The analysis' options (both entry points)."""
    from ..trajectory.config import TrajectoryConfig

    p.add_argument("traj", metavar="TRAJ", help="LAMMPS text dump (*.lammpstrj)")
    p.add_argument("--out", help="output directory (default trajectory-out)")
    p.add_argument("--entropy", action="store_true", help="entropy H of every frame")
    p.add_argument("--vs-first", action="store_true", help="dH of every atom against the first selected frame")
    p.add_argument("--bandwidth", "-H", type=bandwidth_or_auto,
                   help=f"kernel bandwidth h, or auto (from the first frame's volume per atom; default "
                        f"{DEFAULT_BANDWIDTH})")
    p.add_argument("--frames", help="frame selection START:STOP:STEP (default all)")
    add_types_option(p)
    add_descriptor_options(p)
    p.add_argument("--exact-atoms", type=int, help="exact H (all pairs) for frames of at most this many atoms; "
                                                   "larger frames are sampled (default 200,000)")
    p.add_argument("--sample-atoms", type=int, help="query atoms of the sampled H (default 20,000)")
    p.add_argument("--seed", type=int, help="seed of the sample (default 0)")
    p.add_argument("--eps", type=float, help="novelty: the fraction of atoms with dH >= eps (default 1e-5)")
    p.add_argument("--chunk-atoms", type=int, help="query atoms per rank per kernel call (bounds memory)")
    p.add_argument("--read-block", type=memory_size,
                   help="bytes of atom lines a rank parses and sends at a time (default 32M; no effect on "
                        "results)")
    add_ref_memory_option(p)
    add_precision_options(p)
    g = p.add_argument_group("solid-like clusters (nucleation)")
    g.add_argument("--clusters", metavar="REF",
                   help="solid reference (store or structure file): atoms with dH < --cluster-eps against it, joined "
                        "when at most --cluster-cutoff apart, form clusters (connected components)")
    g.add_argument("--cluster-eps", type=float, help="node threshold on dH against REF (default 1e-5)")
    g.add_argument("--cluster-cutoff", type=float, help="edge length, Å (default 3.0; at most --cutoff)")
    g.add_argument("--cnt-volume", type=float, help="classical nucleation fit: volume per atom, Å^3")
    g.add_argument("--cnt-temperature", type=float, help="classical nucleation fit: temperature, K")
    g.add_argument("--cnt-frames", help="classical nucleation fit: frames START:STOP (default all)")
    g.add_argument("--no-annotated-dump", action="store_true",
                   help="do not write the dump with the dh and cluster columns")
    p.add_argument("--skip-bad-frames", action="store_true", help="skip truncated/malformed frames")
    p.add_argument("--frame-parallel-atoms", type=int,
                   help="with at least as many frames as ranks, frames of at most this many atoms are analysed "
                        "whole, one rank each; larger ones by domains (default 200,000)")
    add_run_options(p)
    p.set_defaults(**TrajectoryConfig.defaults())


def add_trajectory(sub):
    p = sub.add_parser("trajectory", help=HELP)
    add_options(p)
    p.set_defaults(func=cmd_trajectory, preemptible=True)


def cmd_trajectory(args, ctx):
    result = analyse(args, ctx.comm)
    if ctx.is_root:
        print_summary(result, args.out, ctx.json)


def analyse(args, comm) -> dict:
    from ..trajectory.analysis import analyse_trajectory
    from ..trajectory.config import TrajectoryConfig

    return analyse_trajectory(TrajectoryConfig.from_namespace(args, on_frame=signal_after_hook()), comm)


def print_summary(summary, out, as_json):
    from .._json import json_default

    if as_json:  # one JSON object on stdout, nothing else
        print(json.dumps(summary, default=json_default))
        return
    fr = summary["frames"]
    print(f"hpcquests trajectory: {len(fr)} frame(s), h = {summary['bandwidth']:.4g}, {summary['wall_s']:.1f} s; "
          f"results in {out}/ (trajectory.json, trajectory.csv, trajectory.png)")
    for s in fr:
        parts = [f"frame {s['frame']} (step {s['timestep']}): {s['atoms']:,} atoms"]
        if "entropy" in s:
            err = "" if s["entropy_exact"] else f" ± {s['entropy_stderr']:.4f} (sample of {s['entropy_sample']:,})"
            parts.append(f"H {s['entropy']:.4f}{err}")
        if "dH_vs_first_mean" in s:
            parts.append(f"mean dH vs first {s['dH_vs_first_mean']:.3f}, novelty {100 * s['novelty']:.2f}%")
        if "n_clusters" in s:
            parts.append(f"{s['n_clusters']} cluster(s), largest {s['largest_cluster']}")
        print("  " + ", ".join(parts))
    fit = summary.get("cnt_fit")
    if fit:
        print(f"  nucleation fit: gamma {fit['gamma']:.4g} ± {fit['gamma_err']:.2g} eV/Å², delta_g "
              f"{fit['delta_g']:.4g} ± {fit['delta_g_err']:.2g} eV/Å³ ({len(fit['sizes'])} sizes)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m hpcquests.trajectory", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Entropy H of every frame and dH of every atom against the first frame of a LAMMPS "
                    "trajectory. Same code serial, under mpiexec and srun.",
        epilog=textwrap.fill(EXIT_STATUS_HELP + " USR2 or TERM: the analysis stops after the frame in hand (exit "
                             "75).", 100))
    add_options(p)
    return p


def main(argv=None) -> int:
    """Entry point of ``python -m hpcquests.trajectory``: the exit status agreed by every rank."""
    return preemptible_main("hpcquests.trajectory", build_parser(), argv, analyse,
                            lambda summary, args: print_summary(summary, args.out, args.json))
