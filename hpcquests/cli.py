"""hpcquests: information-theoretic analysis of atomistic data (QUESTS descriptors, dataset
entropy H, differential entropy dH, diversity, overlap) and entropy-driven dataset compression,
serial or on MPI ranks (mpiexec, srun).

Subcommands: descriptors, entropy, dh, overlap, compress, aggregate, bandwidth, info, demo. Every input ``IN`` is a
descriptor store (``.h5`` written by ``hpcquests descriptors``), a ColabFit Parquet export, a LAMMPS
dump (with ``--types``) or any structure file ASE reads.
``--json`` prints one machine-readable JSON object on stdout; progress goes to stderr. Bad input
exits with status 2 and one ``hpcquests: error: ...`` line, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import textwrap

import numpy as np

from ._args import memory_size
from ._json import emit

EXIT_USAGE = 2


class CliError(ValueError):
    """A user-facing error: printed as one line, exit status 2."""


# --------------------------------------------------------------------------- ranks

def _comm(args):
    """The communicator of this run (a serial stand-in unless started by mpiexec/srun)."""
    comm = getattr(args, "comm", None)
    if comm is None:
        from .parallel import get_comm

        comm = get_comm()
        args.comm = comm
        if comm.size > 1 and getattr(args, "threads", None) is None:
            # ranks sharing a node share its cores: one numba thread pool per rank, no oversubscription
            args.threads = max(1, (os.cpu_count() or 1) // comm.node_size())
    return comm


def _is_root(args) -> bool:
    return _comm(args).rank == 0


def _progress(args, label, total, unit):
    from .progress import Progress

    return Progress(label, total, unit, enabled=not args.quiet and _is_root(args))


# --------------------------------------------------------------------------- inputs

def load_local(path: str, args, *, role: str = "IN"):
    """This rank's share of the descriptors of ``path`` (a store or a structure file).

    Stores are split by rows; structure files by structures (balanced by atom count), each
    rank computing the descriptors of its own structures. Returns (x_local, info).
    """
    from .io.store import is_store, open_store
    from .distributed.drivers import distributed_descriptors, local_row_range

    comm = _comm(args)

    def kind():
        if not os.path.exists(path):
            raise CliError(f"{role} {path}: no such file")
        return "store" if is_store(path) else "structures"

    if kind() == "store":
        def read():
            with open_store(path) as store:
                store.check_compatible(k=args.k, cutoff=args.cutoff)
                lo, hi = local_row_range(comm, store.n_env)
                return store.read("descriptors", slice(lo, hi)), {
                    "source": path, "kind": "store", "n_structures": store.n_structures, "n_env": store.n_env,
                    "species": list(store.species or [])}
        return read()
    frames = read_frames([path], args)
    prog = _progress(args, "descriptors", len(frames), "structures")
    x, _ = distributed_descriptors(comm, frames, args.k, args.cutoff, multicomponent=args.multicomponent,
                                   species=args.species, threads=args.threads, progress=prog)
    prog.close()
    return x, {"source": path, "kind": "structures", "n_structures": len(frames),
               "n_env": int(sum(len(a) for a in frames)),
               "species": sorted({s for a in frames for s in a.get_chemical_symbols()})}


def read_frames(paths, args):
    """Structures of ``paths`` as every command reads them: ``--index``, ``--types`` for LAMMPS
    dumps, ``--labels`` for ColabFit exports (``io.structures.read_structures``)."""
    from .io.colabfit import parse_labels
    from .io.lammps import parse_types
    from .io.structures import read_structures

    return read_structures(paths, index=getattr(args, "index", ":"), types=parse_types(getattr(args, "types", None)),
                           labels=parse_labels(getattr(args, "labels", None)))


def _command_line(args) -> str:
    """The command as the user typed it (recorded in output files)."""
    return "hpcquests " + " ".join(shlex.quote(str(a)) for a in args.argv)


def _bandwidths(args):
    h = args.bandwidth if args.bandwidth else [0.015]
    return h[0] if len(h) == 1 else np.array(h, dtype=np.float64)


def _emit(args, payload: dict, lines: list[str]):
    if _is_root(args):
        emit(payload, lines, as_json=args.json)


def _fmt_h(h):
    return ", ".join(f"{v:g}" for v in np.atleast_1d(h))


def _logsum_kwargs(args) -> dict:
    return {"ref_memory": args.ref_memory, "threads": args.threads, "force_ring": args.ref_memory == 0}


# --------------------------------------------------------------------------- commands

def cmd_descriptors(args):
    from .descriptors import dataset_species
    from .io.store import store_attrs, write_store
    from .io.structures import file_checksum
    from .distributed.drivers import distributed_descriptors, write_store_distributed

    comm = _comm(args)
    frames = read_frames(args.inputs, args)
    species = sorted(args.species) if args.species else dataset_species(frames)
    prog = _progress(args, "descriptors", len(frames), "structures")
    x_local, (lo, hi) = distributed_descriptors(comm, frames, args.k, args.cutoff,
                                                multicomponent=args.multicomponent, species=species,
                                                threads=args.threads, progress=prog)
    prog.close()
    offsets = np.zeros(len(frames) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(a) for a in frames])
    per_structure = {}
    energies = _energies(frames)
    if energies is not None:
        per_structure["energy"] = energies
    sources = None
    if _is_root(args):
        sources = [{"path": os.path.abspath(p), "checksum": file_checksum(p)} for p in args.inputs]
    sources = comm.broadcast(sources, root=0)
    kind = "quests-multicomponent" if args.multicomponent else "quests"
    local_species = (np.concatenate([a.numbers for a in frames[lo:hi]]).astype(np.int64) if hi > lo
                     else np.zeros(0, dtype=np.int64))
    if comm.size == 1 and args.rows_per_shard:
        write_store(args.output, x_local, offsets, k=args.k, cutoff=args.cutoff, species=species,
                   descriptor_kind=kind, extra={"species": local_species, **per_structure}, sources=sources,
                   command=_command_line(args), rows_per_shard=args.rows_per_shard)
    else:
        attrs = store_attrs(k=args.k, cutoff=args.cutoff, species=species, descriptor_kind=kind, sources=sources,
                            command=_command_line(args))
        write_store_distributed(comm, args.output, x_local, (lo, hi), offsets,
                                extra_rows={"species": local_species}, per_structure=per_structure, attrs=attrs)
    width = int(x_local.shape[1])
    payload = {"output": args.output, "n_structures": len(frames), "n_env": int(offsets[-1]),
               "width": width, "k": args.k, "cutoff": args.cutoff, "species": species,
               "ranks": comm.size}
    _emit(args, payload, [f"wrote {args.output}: {offsets[-1]} environments × {width} features "
                          f"from {len(frames)} structures (k={args.k}, cutoff={args.cutoff} Å, "
                          f"{comm.size} rank(s))"])


def _energies(frames):
    vals = []
    for a in frames:
        try:
            vals.append(float(a.get_potential_energy()))
        except Exception:
            return None
    return np.array(vals)


def cmd_entropy(args):
    from .distributed.drivers import distributed_entropy_diversity

    comm = _comm(args)
    x, info = load_local(args.input, args)
    h = _bandwidths(args)
    H, D = distributed_entropy_diversity(comm, x, h, **_logsum_kwargs(args))
    n = info["n_env"]
    eff = np.asarray(H) / np.log(n) if n > 1 else np.nan * np.asarray(H)
    payload = {**info, "bandwidth": h, "entropy": H, "diversity": D, "efficiency": eff, "ranks": comm.size}
    lines = [f"{args.input}: {n} environments, h = {_fmt_h(h)}",
             f"  entropy H    = {_fmt_h(H)} nats",
             f"  diversity D  = {_fmt_h(D)}",
             f"  efficiency   = {_fmt_h(eff)} (H / log n)"]
    _emit(args, payload, lines)


def _summary(dh: np.ndarray) -> dict:
    q = np.quantile(dh, [0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0], axis=0)
    return {"mean": dh.mean(axis=0), "min": q[0], "p05": q[1], "p25": q[2], "median": q[3], "p75": q[4],
            "p95": q[5], "max": q[6], "fraction_positive": (dh > 0).mean(axis=0)}


def _dh_gathered(args, test, ref, roles):
    """δH of every TEST environment against REF, gathered on rank 0 (None elsewhere)."""
    from .metrics import as_bandwidths
    from .distributed.drivers import distributed_logsum

    comm = _comm(args)
    from .descriptors import check_species

    y, info_y = load_local(test, args, role=roles[0])
    x, info_x = load_local(ref, args, role=roles[1])
    check_species(info_y.get("species", ()), info_x.get("species", ()), f"{roles[0]} {test}", f"{roles[1]} {ref}")
    h = _bandwidths(args)
    hs, scalar = as_bandwidths(h)
    stats = {}
    L = distributed_logsum(comm, y, x, hs, stats=stats, **_logsum_kwargs(args))
    dh = comm.gather_rows_to_root(-L)
    if dh is not None and scalar:
        dh = dh[:, 0]
    return dh, h, info_y, info_x, stats


def cmd_dh(args):

    comm = _comm(args)
    dh, h, info_y, info_x, stats = _dh_gathered(args, args.test, args.ref, ("TEST", "REF"))
    if args.output and _is_root(args):
        _write_dh(args.output, dh, args)
    if not _is_root(args):
        return
    summary = _summary(dh)
    payload = {"test": info_y, "ref": info_x, "bandwidth": h, "summary": summary, "output": args.output,
               "ranks": comm.size, "reference_path": stats.get("path")}
    lines = [f"dH of {args.test} ({info_y['n_env']} environments) against {args.ref} ({info_x['n_env']}), "
             f"h = {_fmt_h(h)}"]
    for key in ("mean", "min", "median", "p95", "max", "fraction_positive"):
        lines.append(f"  {key:18s} {_fmt_h(summary[key])}")
    if args.output:
        lines.append(f"  per-environment dH written to {args.output}")
    _emit(args, payload, lines)


def _write_dh(path, dh, args):
    from .io.atomic import atomic_path

    if path.endswith(".npy"):
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, dh)
    elif path.endswith(".h5"):
        import h5py

        with atomic_path(path) as tmp:
            with h5py.File(tmp, "w") as f:
                f.create_dataset("dH", data=dh)
                f.attrs["format"] = "hpcquests-dh"
                f.attrs["bandwidth"] = np.atleast_1d(_bandwidths(args))
                f.attrs["command"] = _command_line(args)
    else:
        with atomic_path(path) as tmp:
            np.savetxt(tmp, np.atleast_2d(dh.T).T, fmt="%.17g", header="dH per environment (nats)")


def cmd_overlap(args):
    comm = _comm(args)
    dh, h, info_y, info_x, _ = _dh_gathered(args, args.a, args.b, ("A", "B"))
    if not _is_root(args):
        return
    ov = (dh < args.eps).mean(axis=0)
    ov = float(ov) if np.ndim(ov) == 0 else ov
    payload = {"a": info_y, "b": info_x, "bandwidth": h, "eps": args.eps, "overlap": ov,
               "novelty": 1 - np.asarray(ov), "ranks": comm.size}
    _emit(args, payload, [f"overlap of {args.a} on {args.b} (h = {_fmt_h(h)}, eps = {args.eps:g}): {_fmt_h(ov)}",
                          f"novelty: {_fmt_h(1 - np.asarray(ov))}"])


def cmd_bandwidth(args):
    from .metrics import get_bandwidth

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
              "default h = 0.015 for dH, overlap, UQ scans and compression, whose thresholds assume it")
    _emit(args, {"volume_per_atom": v, "bandwidth": h, "source": source, "default_bandwidth": 0.015, "advice": advice},
          [f"volume per atom {v:.4g} Å³ -> bandwidth h = {h:.6g} (the volume fit of the QUESTS paper)",
           f"  {advice}"])


def cmd_info(args):
    from . import __version__
    from .kernels.registry import available_backends
    from .runtime import thread_info

    info = {"hpcquests": __version__, "python": sys.version.split()[0]}
    for mod in ("numpy", "numba", "scipy", "h5py", "ase"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception as exc:  # pragma: no cover
            info[mod] = f"unavailable ({exc})"
    info["threads"] = thread_info()
    try:
        from .parallel import mpi_info

        info["mpi"] = mpi_info()
    except Exception as exc:  # pragma: no cover
        info["mpi"] = {"available": False, "error": str(exc)}
    info["backends"] = available_backends()
    info["gpu"] = _gpu_info(_comm(args))
    lines = [f"hpcquests {info['hpcquests']} (python {info['python']})"]
    lines += [f"  {m:6s} {info[m]}" for m in ("numpy", "numba", "scipy", "h5py", "ase")]
    t = info["threads"]
    lines.append(f"  threads: numba {t['numba_threads']} ({t['numba_threading_layer']}), cpus {t['cpu_count']}")
    for b in t.get("blas", []):
        lines.append(f"  blas: {b.get('internal_api')} {b.get('version')} threads={b.get('num_threads')}")
    lines.append(f"  mpi: {json.dumps(info['mpi'], default=str)}")
    lines.append(f"  backends: {', '.join(info['backends'])}; gpu: {info['gpu']}")
    _emit(args, info, lines)


def _gpu_info(comm):
    """CuPy version and the visible devices (the device each rank takes is local rank mod count)."""
    from .kernels.registry import _import_cupy, gpu_devices

    cp = _import_cupy()
    if cp is None:
        return "CuPy not available (CPU backend only)"
    devices = gpu_devices()
    if not devices:
        return f"CuPy {cp.__version__}, no CUDA device visible (CPU backend only)"
    rank = comm.node_rank()
    return {"cupy": cp.__version__, "devices": devices, "local_rank": rank, "device": rank % len(devices)}


def cmd_compress(args):
    from .compress.run import CompressConfig, run_compression
    from .compress.sizes import parse_size
    from .io.colabfit import parse_labels
    from .io.lammps import parse_types

    comm = _comm(args)
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
    h = args.bandwidth[0] if args.bandwidth else 0.015
    config = CompressConfig(args.data, args.output, methods=args.method, sizes=sizes, h=h, k=args.k,
                            cutoff=args.cutoff, eps=args.eps, seed=args.seed, reference=args.reference, scores=scores,
                            threads=args.threads, write_structures=not args.no_structures,
                            multicomponent=args.multicomponent, species=args.species,
                            drop_duplicates=args.drop_duplicates, labels=parse_labels(args.labels),
                            types=parse_types(args.types), command=_command_line(args),
                            progress_factory=lambda label, total, unit: _progress(args, label, total, unit))
    rep = run_compression(config, comm).report
    dropped = (f" ({rep['duplicates']['dropped']} exact copies dropped, see {args.output}/duplicates.tsv)"
               if rep.get("duplicates") else "")
    lines = [f"{args.data}: {rep['n_structures']} structures{dropped}, {rep['full']['n_envs']} environments, "
             f"H = {rep['full']['entropy']:.4f} ({comm.size} rank(s)); wrote {args.output}/report.json",
             f"{'method':>9} {'size':>6} {'envs':>8} {'H':>8} {'D':>8} {'overlap':>8} {'eff':>6} {'time s':>7}"]
    for r in rep["selections"]:
        lines.append(f"{r['method']:>9} {r['size']:>6} {r['n_envs']:>8} {r['entropy']:>8.4f} {r['diversity']:>8.4f} "
                     f"{r['overlap']:>8.4f} {r['efficiency']:>6.3f} {r['time_s']:>7.2f}")
    _emit(args, rep, lines)


def cmd_aggregate(args):
    from .compress.run import aggregate

    if not _is_root(args):
        return
    dirs = []
    for d in args.dirs:
        if os.path.isfile(d):  # a manifest: one dataset output directory per line
            with open(d) as fh:
                dirs += [ln.strip() for ln in fh if ln.strip() and not ln.startswith("#")]
        else:
            dirs.append(d)
    # `aggregate results/* -o results/_collection` run twice: its own output is not a dataset
    own = os.path.realpath(args.output)
    dirs = [d for d in dirs if os.path.realpath(d) != own
            and not (os.path.isfile(os.path.join(d, "collection.csv")) and not os.path.exists(os.path.join(d, "report.json")))]
    if not dirs:
        raise CliError("no result directories given")
    res = aggregate(dirs, args.output, method=args.method)
    lines = [f"{res['datasets']} datasets: {res['datasets'] - len(res['failed'])} done, "
             f"{len(res['failed'])} failed or missing; wrote {args.output}/collection.csv and collection.md"]
    lines += [f"  {f['dataset']}: {f['status']}" for f in res["failed"]]
    _emit(args, {"datasets": res["datasets"], "failed": res["failed"], "rows": len(res["rows"]),
                 "output": args.output}, lines)
    if res["failed"] and args.strict:
        raise CliError(f"{len(res['failed'])} dataset(s) failed or missing")


def cmd_store(args):
    """``store verify``: read everything, checking every checksum; ``store relink``: point a
    renamed copy's master at its own shard folder. Rank 0 does the work."""
    from .io.store import relink_store, verify_store

    if not _is_root(args):
        return
    if args.action == "verify":
        counts = verify_store(args.store)
        _emit(args, {"store": args.store, "datasets": counts, "verified": True},
              [f"{args.store}: {len(counts)} datasets, {max(counts.values(), default=0)} rows, every chunk's "
               "checksum and every descriptor verified"])
    else:
        out = relink_store(args.store)
        _emit(args, out, [f"{args.store}: {out['shards']} shard(s) now read from its own "
                          f"{os.path.basename(args.store)}.shards/ (were {', '.join(out['was']) or 'none'})"])


def cmd_demo(args):
    from .demo import run_demo

    run_demo(args)


# --------------------------------------------------------------------------- parser

def _common(p, *, descriptors=True, bandwidth=False):
    p.add_argument("--threads", type=int, default=None, help="numba threads (default: all)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    if descriptors:
        p.add_argument("-k", type=int, default=32, help="nearest neighbours (default 32)")
        p.add_argument("--cutoff", type=float, default=5.0, help="cutoff radius in Å (default 5.0)")
        p.add_argument("--multicomponent", action="store_true", help="per-species descriptor blocks")
        p.add_argument("--species", nargs="+", default=None, help="species for --multicomponent")
        p.add_argument("--index", default=":", help="frames of each structure file: N, START:STOP:STEP (default ':', all)")
        p.add_argument("--types", default=None, metavar="T=EL,...",
                       help="LAMMPS dumps: element of each type, e.g. 1=Ta,2=W (not needed with an element column)")
        p.add_argument("--labels", nargs="+", default=None, metavar="KEY=VALUE",
                       help="ColabFit exports: the calculation rows that label each configuration, e.g. "
                            "method=PBE (needed when a configuration has rows of several methods)")
    if bandwidth:
        p.add_argument("--bandwidth", "-H", type=float, nargs="+", default=None,
                       help="kernel bandwidth(s) h (default 0.015); several give one result each")
        p.add_argument("--ref-memory", type=memory_size, default="2G",
                       help="under MPI, gather the reference on every rank when it needs at most this "
                            "much memory (default 2G), else pass shards around a ring; 0 forces the ring")


def _add_descriptors(sub):
    p = sub.add_parser("descriptors", help="compute descriptors of structure files into a store")
    p.add_argument("inputs", nargs="+", metavar="IN", help="structure files (extxyz, POSCAR, ...)")
    p.add_argument("-o", "--output", required=True, help="store to write (.h5)")
    p.add_argument("--rows-per-shard", type=int, default=None, help="split the store into shards of this many rows")
    _common(p)
    p.set_defaults(func=cmd_descriptors)


def _add_entropy(sub):
    p = sub.add_parser("entropy", help="entropy H, diversity D and efficiency of a dataset")
    p.add_argument("input", metavar="IN", help="store or structure file")
    _common(p, bandwidth=True)
    p.set_defaults(func=cmd_entropy)


def _add_dh(sub):
    p = sub.add_parser("dh", help="differential entropy dH of TEST environments against REF")
    p.add_argument("test", metavar="TEST", help="the environments to score: store or structure file")
    p.add_argument("ref", metavar="REF", help="the reference (training set): store or structure file")
    p.add_argument("-o", "--output", default=None, help="write per-environment dH (.npy, .h5 or text)")
    _common(p, bandwidth=True)
    p.set_defaults(func=cmd_dh)


def _add_overlap(sub):
    p = sub.add_parser("overlap", help="fraction of A's environments covered by B (dH < eps)")
    p.add_argument("a", metavar="A", help="the set whose coverage is measured: store or structure file")
    p.add_argument("b", metavar="B", help="the covering set: store or structure file")
    p.add_argument("--eps", type=float, default=1e-5, help="dH threshold (default 1e-5)")
    _common(p, bandwidth=True)
    p.set_defaults(func=cmd_overlap)


def _add_bandwidth(sub):
    p = sub.add_parser("bandwidth", help="bandwidth h from the volume per atom")
    p.add_argument("input", nargs="?", metavar="IN", help="periodic structure file")
    p.add_argument("--volume", type=float, default=None, help="volume per atom, Å³/atom")
    p.add_argument("--index", default=":", help="frames: N or START:STOP:STEP (default ':', all)")
    p.add_argument("--types", default=None, metavar="T=EL,...", help="LAMMPS dumps: element of each type")
    _common(p, descriptors=False)
    p.set_defaults(func=cmd_bandwidth)


def _add_info(sub):
    p = sub.add_parser("info", help="versions, threads, MPI and GPU availability")
    _common(p, descriptors=False)
    p.set_defaults(func=cmd_info)


def _add_compress(sub):
    p = sub.add_parser("compress", help="select the most informative structures (MSC and baselines)")
    p.add_argument("data", metavar="DATA", help="dataset: ColabFit Parquet export (dir or .parquet), extxyz, "
                                               "or any file ASE reads")
    p.add_argument("-o", "--output", required=True, help="output directory (report, selections, plots)")
    p.add_argument("--method", "-m", nargs="+", default=["msc"],
                   help="msc, random, kmeans, mean-fps, fps, ccs, logdet (several allowed; default msc)")
    p.add_argument("--size", "-s", nargs="+", default=["0.1"],
                   help="sizes: counts (50) or fractions (0.1, 10%%); one greedy run serves all (default 0.1)")
    p.add_argument("--bandwidth", "-H", type=float, nargs=1, default=None, help="kernel bandwidth h (default 0.015)")
    p.add_argument("--eps", type=float, default=1e-5, help="overlap threshold on dH (default 1e-5)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random baselines (default 0)")
    p.add_argument("--reference", default=None, help="conditional MSC: dataset already selected (C starts as it)")
    p.add_argument("--scores", default=None, help="CCS: text file of one importance score per structure")
    p.add_argument("--no-structures", action="store_true", help="write indices only, no selected.extxyz")
    p.add_argument("--drop-duplicates", action="store_true",
                   help="remove exact copies (identical environment sets) before any method; sizes then count the "
                        "remaining structures; the copies are listed in duplicates.tsv and the report")
    _common(p)
    p.set_defaults(func=cmd_compress)


def _add_aggregate(sub):
    p = sub.add_parser("aggregate", help="collect compress reports of a collection into one table")
    p.add_argument("dirs", nargs="+", metavar="DIR", help="compress output directories (or a file listing them)")
    p.add_argument("-o", "--output", required=True, help="directory for collection.csv/.md/.png")
    p.add_argument("--method", default=None, help="only this method's rows")
    p.add_argument("--strict", action="store_true", help="exit non-zero when a dataset failed or is missing")
    _common(p, descriptors=False)
    p.set_defaults(func=cmd_aggregate)


def _add_store(sub):
    p = sub.add_parser("store", help="check a descriptor store (verify) or repair a renamed copy (relink)")
    p.add_argument("action", choices=["verify", "relink"],
                   help="verify: read every dataset, checking every chunk's checksum; relink: make a renamed copy "
                        "(cp a.h5 b.h5; cp -r a.h5.shards b.h5.shards) read its own shard folder")
    p.add_argument("store", metavar="STORE", help="the store's master file (.h5)")
    _common(p, descriptors=False)
    p.set_defaults(func=cmd_store)


def _add_demo(sub):
    p = sub.add_parser("demo", help="end-to-end example on generated data (no download)")
    p.add_argument("--out", default=None, help="directory for the demo's files (default: a temporary one)")
    p.add_argument("--small", action="store_true", help="a smaller, faster demo")
    _common(p, descriptors=False)
    p.set_defaults(func=cmd_demo, k=32, cutoff=5.0)


#: the subcommands, in the order ``hpcquests --help`` lists them
SUBCOMMANDS = (_add_descriptors, _add_entropy, _add_dh, _add_overlap, _add_bandwidth, _add_info, _add_compress, _add_aggregate, _add_store, _add_demo)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="hpcquests", description=textwrap.fill(" ".join(__doc__.split("\n\n")[0].split()), 96),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="inputs: a descriptor store (.h5), a ColabFit Parquet export (.parquet or its directory), a LAMMPS\n"
               "dump (--types 1=Ta), or any structure file ASE reads (extxyz, POSCAR, CIF, ...).\n"
               "UQ scans of MD trajectories: python -m hpcquests.uq --help. Exit status: 0 ok, 2 bad input,\n"
               "74 file system error, 75 preempted (rerun resumes), 1 internal error. Docs: docs/ in the repository.")
    parser.add_argument("--version", action="version", version=f"hpcquests {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def main(argv=None) -> int:
    """Run one subcommand on every rank; returns the exit status every rank agreed on (0 ok,
    2 bad input, 74 I/O error, 1 internal error), rank 0 printing one line on failure."""
    from .parallel.channel import run_collectively

    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv
    comm = _comm(args)

    def run():
        if comm.rank == 0:
            _check_output(args)  # before any work: an unwritable output fails in seconds, not after hours
        args.func(args)

    return run_collectively(f"hpcquests {args.command}", comm, run)


#: The output option of each command: (attribute, option as typed, a file or a directory).
OUTPUTS = {"descriptors": ("output", "-o", "file"), "dh": ("output", "-o", "file"),
           "compress": ("output", "-o", "dir"), "aggregate": ("output", "-o", "dir"), "demo": ("out", "--out", "dir")}


def _check_output(args):
    from .io.atomic import check_output_dir, check_output_file

    attr, option, kind = OUTPUTS.get(args.command, (None, None, None))
    path = getattr(args, attr, None) if attr else None
    if path:
        (check_output_file if kind == "file" else check_output_dir)(path, option)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
