"""The analysis commands: descriptors, entropy, dh, overlap, bandwidth. Each has its parser
(``add_<command>``) and its body (``cmd_<command>(args, ctx)``)."""

from __future__ import annotations

import os

import numpy as np

from .inputs import load_local, read_frames
from .options import (DEFAULT_BANDWIDTH, add_bandwidth_option, add_descriptor_options, add_precision_options,
                      add_ref_memory_option, add_run_options, add_structure_options, add_types_option)
from .policy import CliError


def _bandwidths(args):
    """h as a float, or an array with several (one result each)."""
    h = args.bandwidth if args.bandwidth else [DEFAULT_BANDWIDTH]
    return h[0] if len(h) == 1 else np.array(h, dtype=np.float64)


def _fmt_h(h):
    return ", ".join(f"{v:g}" for v in np.atleast_1d(h))


def _logsum_kwargs(args, ctx) -> dict:
    return {"ref_memory": args.ref_memory, "threads": ctx.threads, "force_ring": args.ref_memory == 0,
            "precision": args.precision, "float32_tolerance": args.float32_tolerance}


def _precision_out(args, ctx, stats: dict):
    """(payload entry, text lines) of the precision used (collective: float32 counts are summed)."""
    from ..distributed.drivers import precision_summary

    summary = precision_summary(ctx.comm, stats, args.float32_tolerance)
    lines = []
    if summary["precision"] == "float32":
        kept = (f"largest bound kept {summary['float32_max_bound']:.2g} nats" if summary["float32_max_bound"] > 0
                else "no row kept in float32")
        n = summary["float32_recomputed_rows"]
        lines.append(f"  precision    float32: {n} row{'' if n == 1 else 's'} recomputed in float64 "
                     f"(bound > {summary['float32_tolerance']:g} nats); {kept}")
    return summary, lines


def _energies(frames):
    """Every structure's energy, or None when any lacks one."""
    vals = []
    for a in frames:
        try:
            vals.append(float(a.get_potential_energy()))
        except Exception:
            return None
    return np.array(vals)


# --------------------------------------------------------------------------- descriptors

def add_descriptors(sub):
    p = sub.add_parser("descriptors", help="compute descriptors of structure files into a store")
    p.add_argument("inputs", nargs="+", metavar="IN", help="structure files (extxyz, POSCAR, ...)")
    p.add_argument("-o", "--output", required=True, help="store to write (.h5)")
    p.add_argument("--rows-per-shard", type=int, default=None, help="split the store into shards of this many rows")
    add_descriptor_options(p)
    add_structure_options(p)
    add_run_options(p)
    p.set_defaults(func=cmd_descriptors)


def cmd_descriptors(args, ctx):
    from ..descriptors import dataset_species
    from ..distributed.drivers import distributed_descriptors
    from ..io.structures import file_checksum

    comm = ctx.comm
    frames = read_frames(args.inputs, args)
    species = sorted(args.species) if args.species else dataset_species(frames)
    prog = ctx.progress("descriptors", len(frames), "structures")
    x_local, (lo, hi) = distributed_descriptors(comm, frames, args.k, args.cutoff,
                                                multicomponent=args.multicomponent, species=species,
                                                threads=ctx.threads, progress=prog)
    prog.close()
    offsets = np.zeros(len(frames) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(a) for a in frames])
    sources = None
    if ctx.is_root:
        sources = [{"path": os.path.abspath(p), "checksum": file_checksum(p)} for p in args.inputs]
    sources = comm.broadcast(sources, root=0)
    local_species = (np.concatenate([a.numbers for a in frames[lo:hi]]).astype(np.int64) if hi > lo
                     else np.zeros(0, dtype=np.int64))
    _write_descriptor_store(args, ctx, x_local, (lo, hi), offsets, species, sources, local_species,
                            _energies(frames))
    width = int(x_local.shape[1])
    payload = {"output": args.output, "n_structures": len(frames), "n_env": int(offsets[-1]),
               "width": width, "k": args.k, "cutoff": args.cutoff, "species": species,
               "ranks": comm.size}
    ctx.emit(payload, [f"wrote {args.output}: {offsets[-1]} environments × {width} features "
                       f"from {len(frames)} structures (k={args.k}, cutoff={args.cutoff} Å, "
                       f"{comm.size} rank(s))"])


def _write_descriptor_store(args, ctx, x_local, span, offsets, species, sources, local_species, energies):
    from ..distributed.drivers import write_store_distributed
    from ..io.store import store_attrs, write_store

    per_structure = {} if energies is None else {"energy": energies}
    kind = "quests-multicomponent" if args.multicomponent else "quests"
    if ctx.comm.size == 1 and args.rows_per_shard:
        write_store(args.output, x_local, offsets, k=args.k, cutoff=args.cutoff, species=species,
                    descriptor_kind=kind, extra={"species": local_species, **per_structure}, sources=sources,
                    command=ctx.command_line, rows_per_shard=args.rows_per_shard)
    else:
        attrs = store_attrs(k=args.k, cutoff=args.cutoff, species=species, descriptor_kind=kind, sources=sources,
                            command=ctx.command_line)
        write_store_distributed(ctx.comm, args.output, x_local, span, offsets,
                                extra_rows={"species": local_species}, per_structure=per_structure, attrs=attrs)


# --------------------------------------------------------------------------- entropy

def add_entropy(sub):
    p = sub.add_parser("entropy", help="entropy H, diversity D and efficiency of a dataset")
    p.add_argument("input", metavar="IN", help="store or structure file")
    _add_metric_options(p)
    p.set_defaults(func=cmd_entropy)


def _add_metric_options(p):
    add_descriptor_options(p)
    add_structure_options(p)
    add_bandwidth_option(p, several=True)
    add_ref_memory_option(p)
    add_precision_options(p)
    add_run_options(p)


def cmd_entropy(args, ctx):
    from ..distributed.drivers import distributed_entropy_diversity

    x, info = load_local(args.input, args, ctx)
    h = _bandwidths(args)
    stats = {}
    H, D = distributed_entropy_diversity(ctx.comm, x, h, stats=stats, **_logsum_kwargs(args, ctx))
    precision, precision_lines = _precision_out(args, ctx, stats)
    n = info["n_env"]
    eff = np.asarray(H) / np.log(n) if n > 1 else np.nan * np.asarray(H)
    payload = {**info, "bandwidth": h, "entropy": H, "diversity": D, "efficiency": eff, "ranks": ctx.comm.size,
               "precision": precision}
    ctx.emit(payload, [f"{args.input}: {n} environments, h = {_fmt_h(h)}",
                       f"  entropy H    = {_fmt_h(H)} nats",
                       f"  diversity D  = {_fmt_h(D)}",
                       f"  efficiency   = {_fmt_h(eff)} (H / log n)"] + precision_lines)


# --------------------------------------------------------------------------- dh, overlap

def add_dh(sub):
    p = sub.add_parser("dh", help="differential entropy dH of TEST environments against REF")
    p.add_argument("test", metavar="TEST", help="the environments to score: store or structure file")
    p.add_argument("ref", metavar="REF", help="the reference (training set): store or structure file")
    p.add_argument("-o", "--output", default=None, help="write per-environment dH (.npy, .h5 or text)")
    _add_metric_options(p)
    p.set_defaults(func=cmd_dh)


def add_overlap(sub):
    p = sub.add_parser("overlap", help="fraction of A's environments covered by B (dH < eps)")
    p.add_argument("a", metavar="A", help="the set whose coverage is measured: store or structure file")
    p.add_argument("b", metavar="B", help="the covering set: store or structure file")
    p.add_argument("--eps", type=float, default=1e-5, help="dH threshold (default 1e-5)")
    _add_metric_options(p)
    p.set_defaults(func=cmd_overlap)


def _summary(dh: np.ndarray) -> dict:
    q = np.quantile(dh, [0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0], axis=0)
    return {"mean": dh.mean(axis=0), "min": q[0], "p05": q[1], "p25": q[2], "median": q[3], "p75": q[4],
            "p95": q[5], "max": q[6], "fraction_positive": (dh > 0).mean(axis=0)}


def _dh_gathered(args, ctx, test, ref, roles, eps=None):
    """δH of every TEST environment against REF, gathered on rank 0 (None elsewhere). ``eps``: a
    threshold whose decisions float32 must leave to float64 (overlap)."""
    from ..descriptors import check_species
    from ..distributed.drivers import distributed_logsum
    from ..metrics import as_bandwidths, near_threshold

    y, info_y = load_local(test, args, ctx, role=roles[0])
    x, info_x = load_local(ref, args, ctx, role=roles[1])
    check_species(info_y.get("species", ()), info_x.get("species", ()), f"{roles[0]} {test}", f"{roles[1]} {ref}")
    h = _bandwidths(args)
    hs, scalar = as_bandwidths(h)
    stats = {}
    L = distributed_logsum(ctx.comm, y, x, hs, stats=stats, **_logsum_kwargs(args, ctx),
                           must_recompute=None if eps is None else near_threshold(eps))
    stats["precision_summary"], stats["precision_lines"] = _precision_out(args, ctx, stats)
    dh = ctx.comm.gather_rows_to_root(-L)
    if dh is not None and scalar:
        dh = dh[:, 0]
    return dh, h, info_y, info_x, stats


def cmd_dh(args, ctx):
    dh, h, info_y, info_x, stats = _dh_gathered(args, ctx, args.test, args.ref, ("TEST", "REF"))
    if not ctx.is_root:
        return
    if args.output:
        _write_dh(args.output, dh, h, ctx.command_line)
    summary = _summary(dh)
    payload = {"test": info_y, "ref": info_x, "bandwidth": h, "summary": summary, "output": args.output,
               "ranks": ctx.comm.size, "reference_path": stats.get("path"), "precision": stats["precision_summary"]}
    lines = [f"dH of {args.test} ({info_y['n_env']} environments) against {args.ref} ({info_x['n_env']}), "
             f"h = {_fmt_h(h)}"]
    for key in ("mean", "min", "median", "p95", "max", "fraction_positive"):
        lines.append(f"  {key:18s} {_fmt_h(summary[key])}")
    lines += stats["precision_lines"]
    if args.output:
        lines.append(f"  per-environment dH written to {args.output}")
    ctx.emit(payload, lines)


def _write_dh(path, dh, h, command):
    """Per-environment δH to ``path``: .npy, .h5 (dataset dH, the bandwidths and the command as
    attributes) or text; written whole or not at all."""
    from ..io.atomic import atomic_path

    with atomic_path(path) as tmp:
        if path.endswith(".npy"):
            with open(tmp, "wb") as fh:
                np.save(fh, dh)
        elif path.endswith(".h5"):
            import h5py

            with h5py.File(tmp, "w") as f:
                f.create_dataset("dH", data=dh)
                f.attrs["format"] = "hpcquests-dh"
                f.attrs["bandwidth"] = np.atleast_1d(h)
                f.attrs["command"] = command
        else:
            np.savetxt(tmp, np.atleast_2d(dh.T).T, fmt="%.17g", header="dH per environment (nats)")


def cmd_overlap(args, ctx):
    dh, h, info_y, info_x, stats = _dh_gathered(args, ctx, args.a, args.b, ("A", "B"), eps=args.eps)
    if not ctx.is_root:
        return
    ov = (dh < args.eps).mean(axis=0)
    ov = float(ov) if np.ndim(ov) == 0 else ov
    payload = {"a": info_y, "b": info_x, "bandwidth": h, "eps": args.eps, "overlap": ov,
               "novelty": 1 - np.asarray(ov), "ranks": ctx.comm.size, "precision": stats["precision_summary"]}
    ctx.emit(payload, [f"overlap of {args.a} on {args.b} (h = {_fmt_h(h)}, eps = {args.eps:g}): {_fmt_h(ov)}",
                       f"novelty: {_fmt_h(1 - np.asarray(ov))}"] + stats["precision_lines"])


# --------------------------------------------------------------------------- bandwidth

def add_bandwidth(sub):
    p = sub.add_parser("bandwidth", help="bandwidth h from the volume per atom")
    p.add_argument("input", nargs="?", metavar="IN", help="periodic structure file")
    p.add_argument("--volume", type=float, default=None, help="volume per atom, Å³/atom")
    p.add_argument("--index", default=":", help="frames: N or START:STOP:STEP (default ':', all)")
    add_types_option(p)
    add_run_options(p)
    p.set_defaults(func=cmd_bandwidth)


def cmd_bandwidth(args, ctx):
    from ..metrics import get_bandwidth

    if args.volume is not None:
        v = args.volume
        source = "--volume"
    elif args.input:
        frames = read_frames([args.input], args)
        vols = []
        for s, a in enumerate(frames):
            if not a.pbc.all():
                raise CliError(f"{args.input} structure {s}: volume per atom needs a fully periodic cell")
            vols.append(a.get_volume() / len(a))
        v = float(np.mean(vols))
        source = args.input
    else:
        raise CliError("bandwidth: give --volume V (Å³/atom) or a structure file")
    h = get_bandwidth(v)
    advice = ("use it to compare entropies of structures at different densities (phases, temperatures); keep the "
              f"default h = {DEFAULT_BANDWIDTH} for dH, overlap, UQ scans and compression, whose thresholds assume it")
    ctx.emit({"volume_per_atom": v, "bandwidth": h, "source": source, "default_bandwidth": DEFAULT_BANDWIDTH,
              "advice": advice},
             [f"volume per atom {v:.4g} Å³ -> bandwidth h = {h:.6g} (the volume fit of the QUESTS paper)",
              f"  {advice}"])
