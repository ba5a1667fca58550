"""The dataset commands: compress (MSC and baselines) and aggregate (a collection's reports)."""

from __future__ import annotations

import os

import numpy as np

from .options import (DEFAULT_BANDWIDTH, add_descriptor_options, add_precision_options, add_run_options,
                      add_structure_options)
from .policy import CliError


def add_compress(sub):
    p = sub.add_parser("compress", help="select the most informative structures (MSC and baselines)")
    p.add_argument("data", metavar="DATA", help="dataset: ColabFit Parquet export (dir or .parquet), extxyz, "
                                               "or any file ASE reads")
    p.add_argument("-o", "--output", required=True, help="output directory (report, selections, plots)")
    p.add_argument("--method", "-m", nargs="+", default=["msc"],
                   help="msc, random, kmeans, mean-fps, fps, ccs, logdet (several allowed; default msc)")
    p.add_argument("--size", "-s", nargs="+", default=["0.1"],
                   help="sizes: counts (50) or fractions (0.1, 10%%); one greedy run serves all (default 0.1)")
    p.add_argument("--bandwidth", "-H", type=float, nargs=1, default=None,
                   help=f"kernel bandwidth h (default {DEFAULT_BANDWIDTH})")
    p.add_argument("--eps", type=float, default=1e-5, help="overlap threshold on dH (default 1e-5)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random baselines (default 0)")
    p.add_argument("--reference", default=None, help="conditional MSC: dataset already selected (C starts as it)")
    p.add_argument("--scores", default=None, help="CCS: text file of one importance score per structure")
    p.add_argument("--no-structures", action="store_true", help="write indices only, no selected.extxyz")
    p.add_argument("--drop-duplicates", action="store_true",
                   help="remove exact copies (identical environment sets) before any method; sizes then count the "
                        "remaining structures; the copies are listed in duplicates.tsv and the report")
    add_descriptor_options(p)
    add_structure_options(p)
    add_precision_options(p)
    add_run_options(p)
    p.set_defaults(func=cmd_compress)


def compress_config(args, ctx):
    """The ``CompressConfig`` of a parsed ``hpcquests compress`` command line."""
    from ..compress.run import CompressConfig
    from ..compress.sizes import parse_size
    from ..io.colabfit import parse_labels
    from ..io.lammps import parse_types

    try:
        sizes = [parse_size(s) for s in args.size]
    except ValueError as exc:
        raise CliError(str(exc)) from None
    scores = None
    if args.scores:
        try:
            scores = np.loadtxt(args.scores, dtype=np.float64, ndmin=1)
        except (OSError, ValueError) as exc:
            raise CliError(f"--scores {args.scores}: {exc}") from None
    h = args.bandwidth[0] if args.bandwidth else DEFAULT_BANDWIDTH
    return CompressConfig(args.data, args.output, methods=args.method, sizes=sizes, h=h, k=args.k,
                          cutoff=args.cutoff, eps=args.eps, seed=args.seed, reference=args.reference, scores=scores,
                          threads=ctx.threads, write_structures=not args.no_structures,
                          multicomponent=args.multicomponent, species=args.species,
                          drop_duplicates=args.drop_duplicates, labels=parse_labels(args.labels),
                          types=parse_types(args.types), command=ctx.command_line, progress_factory=ctx.progress,
                          precision=args.precision, float32_tolerance=args.float32_tolerance)


def cmd_compress(args, ctx):
    from ..compress.run import run_compression

    rep = run_compression(compress_config(args, ctx), ctx.comm).report
    dropped = (f" ({rep['duplicates']['dropped']} exact copies dropped, see {args.output}/duplicates.tsv)"
               if rep.get("duplicates") else "")
    lines = [f"{args.data}: {rep['n_structures']} structures{dropped}, {rep['full']['n_envs']} environments, "
             f"H = {rep['full']['entropy']:.4f} ({ctx.comm.size} rank(s)); wrote {args.output}/report.json",
             f"{'method':>9} {'size':>6} {'envs':>8} {'H':>8} {'D':>8} {'overlap':>8} {'eff':>6} {'time s':>7}"]
    for r in rep["selections"]:
        lines.append(f"{r['method']:>9} {r['size']:>6} {r['n_envs']:>8} {r['entropy']:>8.4f} {r['diversity']:>8.4f} "
                     f"{r['overlap']:>8.4f} {r['efficiency']:>6.3f} {r['time_s']:>7.2f}")
    ctx.emit(rep, lines)


def add_aggregate(sub):
    p = sub.add_parser("aggregate", help="collect compress reports of a collection into one table")
    p.add_argument("dirs", nargs="+", metavar="DIR", help="compress output directories (or a file listing them)")
    p.add_argument("-o", "--output", required=True, help="directory for collection.csv/.md/.png")
    p.add_argument("--method", default=None, help="only this method's rows")
    p.add_argument("--strict", action="store_true", help="exit non-zero when a dataset failed or is missing")
    add_run_options(p)
    p.set_defaults(func=cmd_aggregate)


def _result_dirs(entries, output):
    """The dataset result directories named by ``entries`` (directories, or manifest files of
    one directory per line), without the aggregate's own output directory."""
    dirs = []
    for d in entries:
        if os.path.isfile(d):
            with open(d) as fh:
                dirs += [ln.strip() for ln in fh if ln.strip() and not ln.startswith("#")]
        else:
            dirs.append(d)
    # `aggregate results/* -o results/_collection` run twice: its own output is not a dataset
    own = os.path.realpath(output)
    return [d for d in dirs if os.path.realpath(d) != own and not (
        os.path.isfile(os.path.join(d, "collection.csv")) and not os.path.exists(os.path.join(d, "report.json")))]


def cmd_aggregate(args, ctx):
    from ..compress.run import aggregate

    if not ctx.is_root:
        return
    dirs = _result_dirs(args.dirs, args.output)
    if not dirs:
        raise CliError("no result directories given")
    res = aggregate(dirs, args.output, method=args.method)
    lines = [f"{res['datasets']} datasets: {res['datasets'] - len(res['failed'])} done, "
             f"{len(res['failed'])} failed or missing; wrote {args.output}/collection.csv and collection.md"]
    lines += [f"  {f['dataset']}: {f['status']}" for f in res["failed"]]
    ctx.emit({"datasets": res["datasets"], "failed": res["failed"], "rows": len(res["rows"]), "output": args.output},
             lines)
    if res["failed"] and args.strict:
        raise CliError(f"{len(res['failed'])} dataset(s) failed or missing")
