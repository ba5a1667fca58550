"""``hpcquests`` console script.

Subcommands: descriptors, entropy, dh, overlap, bandwidth, info, demo. Every input ``IN`` is a
descriptor store (``.h5`` written by ``hpcquests descriptors``) or any structure file ASE reads.
``--json`` prints one machine-readable JSON object on stdout; progress goes to stderr. Bad input
exits with status 2 and one ``hpcquests: error: ...`` line, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys

import numpy as np

EXIT_USAGE = 2


class CliError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


# --------------------------------------------------------------------------- inputs

def _progress(args, label, total, unit):
    from .progress import Progress

    return Progress(label, total, unit, enabled=not args.quiet)


def load_descriptors(path: str, args, *, role: str = "IN"):
    """Descriptors of ``path`` (store or structure file) as (array, info dict)."""
    from .io.store import is_store, open_store

    if not os.path.exists(path):
        raise CliError(f"{role} {path}: no such file")
    if is_store(path):
        with open_store(path) as store:
            store.check_compatible(k=args.k, cutoff=args.cutoff)
            x = store.read("descriptors")
            return x, {"source": path, "kind": "store", "n_structures": int(store.n_structures),
                       "n_env": int(x.shape[0])}
    frames = read_frames([path], args)
    x = compute_descriptors(frames, args)
    return x, {"source": path, "kind": "structures", "n_structures": len(frames), "n_env": int(x.shape[0])}


def read_frames(paths, args):
    from .io.structures import read_structures

    return read_structures(paths, index=getattr(args, "index", ":"))


def compute_descriptors(frames, args):
    from .descriptors import get_descriptors, get_descriptors_multicomponent

    prog = _progress(args, "descriptors", len(frames), "structures")
    if getattr(args, "multicomponent", False):
        x = get_descriptors_multicomponent(frames, k=args.k, cutoff=args.cutoff, species=args.species,
                                           threads=args.threads, progress=prog)
    else:
        x = get_descriptors(frames, k=args.k, cutoff=args.cutoff, threads=args.threads, progress=prog)
    prog.close()
    return x


def _command_line(args) -> str:
    """The command as the user typed it (recorded in output files)."""
    return "hpcquests " + " ".join(shlex.quote(str(a)) for a in args.argv)


def _bandwidths(args):
    h = args.bandwidth if args.bandwidth else [0.015]
    return h[0] if len(h) == 1 else np.array(h, dtype=np.float64)


def _emit(args, payload: dict, lines: list[str]):
    if args.json:
        print(json.dumps(payload, indent=None, default=_json_default))
    else:
        print("\n".join(lines))


def _json_default(o):
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(type(o).__name__)


def _fmt_h(h):
    return ", ".join(f"{v:g}" for v in np.atleast_1d(h))


# --------------------------------------------------------------------------- commands

def cmd_descriptors(args):
    from .descriptors import dataset_species
    from .io.store import write_store
    from .io.structures import file_checksum

    frames = read_frames(args.inputs, args)
    x = compute_descriptors(frames, args)
    offsets = np.zeros(len(frames) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(a) for a in frames])
    species_env = np.concatenate([a.numbers for a in frames]).astype(np.int64)
    extra = {"species": species_env}
    energies = _energies(frames)
    if energies is not None:
        extra["energy"] = energies
    species = args.species if args.species else dataset_species(frames)
    write_store(args.output, x, offsets, k=args.k, cutoff=args.cutoff, species=species,
                descriptor_kind="quests-multicomponent" if args.multicomponent else "quests",
                extra=extra, sources=[{"path": os.path.abspath(p), "checksum": file_checksum(p)} for p in args.inputs],
                command=_command_line(args), rows_per_shard=args.rows_per_shard)
    payload = {"output": args.output, "n_structures": len(frames), "n_env": int(x.shape[0]),
               "width": int(x.shape[1]), "k": args.k, "cutoff": args.cutoff, "species": species}
    _emit(args, payload, [f"wrote {args.output}: {x.shape[0]} environments × {x.shape[1]} features "
                          f"from {len(frames)} structures (k={args.k}, cutoff={args.cutoff} Å)"])


def _energies(frames):
    vals = []
    for a in frames:
        try:
            vals.append(float(a.get_potential_energy()))
        except Exception:
            return None
    return np.array(vals)


def cmd_entropy(args):
    from .metrics import entropy_and_diversity

    x, info = load_descriptors(args.input, args)
    h = _bandwidths(args)
    H, D = entropy_and_diversity(x, h, threads=args.threads)
    n = x.shape[0]
    eff = np.asarray(H) / np.log(n) if n > 1 else np.nan * np.asarray(H)
    payload = {**info, "bandwidth": h, "entropy": H, "diversity": D, "efficiency": eff}
    lines = [f"{args.input}: {n} environments, h = {_fmt_h(h)}",
             f"  entropy H    = {_fmt_h(H)} nats",
             f"  diversity D  = {_fmt_h(D)}",
             f"  efficiency   = {_fmt_h(eff)} (H / log n)"]
    _emit(args, payload, lines)


def _summary(dh: np.ndarray) -> dict:
    q = np.quantile(dh, [0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0], axis=0)
    return {"mean": dh.mean(axis=0), "min": q[0], "p05": q[1], "p25": q[2], "median": q[3], "p75": q[4],
            "p95": q[5], "max": q[6], "fraction_positive": (dh > 0).mean(axis=0)}


def cmd_dh(args):
    from .metrics import as_bandwidths, kernel_logsum

    y, info_y = load_descriptors(args.test, args, role="TEST")
    x, info_x = load_descriptors(args.ref, args, role="REF")
    h = _bandwidths(args)
    prog = _progress(args, "dH", y.shape[0], "environments")
    hs, scalar = as_bandwidths(h)
    dh = -kernel_logsum(y, x, hs, threads=args.threads, progress=prog)
    prog.close()
    dh = dh[:, 0] if scalar else dh
    summary = _summary(dh)
    if args.output:
        _write_dh(args.output, dh, args)
    payload = {"test": info_y, "ref": info_x, "bandwidth": h, "summary": summary, "output": args.output}
    lines = [f"dH of {args.test} ({y.shape[0]} environments) against {args.ref} ({x.shape[0]}), h = {_fmt_h(h)}"]
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
    from .metrics import as_bandwidths, kernel_logsum

    y, info_y = load_descriptors(args.a, args, role="A")
    x, info_x = load_descriptors(args.b, args, role="B")
    h = _bandwidths(args)
    hs, scalar = as_bandwidths(h)
    dh = -kernel_logsum(y, x, hs, threads=args.threads)
    ov = (dh < args.eps).mean(axis=0)
    ov = float(ov[0]) if scalar else ov
    payload = {"a": info_y, "b": info_x, "bandwidth": h, "eps": args.eps, "overlap": ov,
               "novelty": 1 - np.asarray(ov)}
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
    _emit(args, {"volume_per_atom": v, "bandwidth": h, "source": source},
          [f"volume per atom {v:.4g} Å³ -> bandwidth h = {h:.6g}"])


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
    info["gpu"] = _gpu_info()
    lines = [f"hpcquests {info['hpcquests']} (python {info['python']})"]
    lines += [f"  {m:6s} {info[m]}" for m in ("numpy", "numba", "scipy", "h5py", "ase")]
    t = info["threads"]
    lines.append(f"  threads: numba {t['numba_threads']} ({t['numba_threading_layer']}), cpus {t['cpu_count']}")
    for b in t.get("blas", []):
        lines.append(f"  blas: {b.get('internal_api')} {b.get('version')} threads={b.get('num_threads')}")
    lines.append(f"  mpi: {json.dumps(info['mpi'], default=str)}")
    lines.append(f"  backends: {', '.join(info['backends'])}; gpu: {info['gpu']}")
    _emit(args, info, lines)


def _gpu_info():
    try:
        import cupy

        n = cupy.cuda.runtime.getDeviceCount()
        return {"cupy": cupy.__version__, "devices": n}
    except Exception:
        return "CuPy not available (CPU backend only)"


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
        p.add_argument("--index", default=":", help="ASE frame selection for structure files (default ':')")
    if bandwidth:
        p.add_argument("--bandwidth", "-H", type=float, nargs="+", default=None,
                       help="kernel bandwidth(s) h (default 0.015); several give one result each")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="hpcquests", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"hpcquests {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("descriptors", help="compute descriptors of structure files into a store")
    p.add_argument("inputs", nargs="+", metavar="IN", help="structure files (extxyz, POSCAR, ...)")
    p.add_argument("-o", "--output", required=True, help="store to write (.h5)")
    p.add_argument("--rows-per-shard", type=int, default=None, help="split the store into shards of this many rows")
    _common(p)
    p.set_defaults(func=cmd_descriptors)

    p = sub.add_parser("entropy", help="entropy H, diversity D and efficiency of a dataset")
    p.add_argument("input", metavar="IN", help="store or structure file")
    _common(p, bandwidth=True)
    p.set_defaults(func=cmd_entropy)

    p = sub.add_parser("dh", help="differential entropy dH of TEST environments against REF")
    p.add_argument("test", metavar="TEST")
    p.add_argument("ref", metavar="REF")
    p.add_argument("-o", "--output", default=None, help="write per-environment dH (.npy, .h5 or text)")
    _common(p, bandwidth=True)
    p.set_defaults(func=cmd_dh)

    p = sub.add_parser("overlap", help="fraction of A's environments covered by B (dH < eps)")
    p.add_argument("a", metavar="A")
    p.add_argument("b", metavar="B")
    p.add_argument("--eps", type=float, default=1e-5, help="dH threshold (default 1e-5)")
    _common(p, bandwidth=True)
    p.set_defaults(func=cmd_overlap)

    p = sub.add_parser("bandwidth", help="bandwidth h from the volume per atom")
    p.add_argument("input", nargs="?", metavar="IN", help="periodic structure file")
    p.add_argument("--volume", type=float, default=None, help="volume per atom, Å³/atom")
    p.add_argument("--index", default=":", help="ASE frame selection")
    _common(p, descriptors=False)
    p.set_defaults(func=cmd_bandwidth)

    p = sub.add_parser("info", help="versions, threads, MPI and GPU availability")
    _common(p, descriptors=False)
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("demo", help="end-to-end example on generated data (no download)")
    p.add_argument("--out", default=None, help="directory for the demo's files (default: a temporary one)")
    p.add_argument("--small", action="store_true", help="a smaller, faster demo")
    _common(p, descriptors=False)
    p.set_defaults(func=cmd_demo, k=32, cutoff=5.0)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv
    try:
        args.func(args)
    except (CliError, ValueError) as exc:
        print(f"hpcquests {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # e.g. `hpcquests demo | head`: not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:
        print(f"hpcquests {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("hpcquests: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
