"""How every command reads its inputs: a descriptor store, or structure files whose
descriptors are computed on the ranks."""

from __future__ import annotations

import os

import numpy as np

from .policy import CliError


def read_frames(paths, args):
    """Structures of ``paths`` as every command reads them: ``--index``, ``--types`` for LAMMPS
    dumps, ``--labels`` for ColabFit exports (``io.structures.read_structures``)."""
    from ..io.colabfit import parse_labels
    from ..io.lammps import parse_types
    from ..io.structures import read_structures

    return read_structures(paths, index=getattr(args, "index", ":"), types=parse_types(getattr(args, "types", None)),
                           labels=parse_labels(getattr(args, "labels", None)))


def load_local(path: str, args, ctx, *, role: str = "IN", layout: bool = False):
    """This rank's share of the descriptors of ``path`` (a store or a structure file).

    Stores are split by rows; structure files by structures (balanced by atom count), each
    rank computing the descriptors of its own structures. Returns (x_local (n, d) float64,
    info dict: source, kind, n_structures, n_env, species). With ``layout=True`` also (row_start,
    offsets): the global index of the first local row and the (n_structures + 1,) int64 global
    row offsets of the structures.
    """
    from ..distributed.drivers import distributed_descriptors, local_row_range
    from ..io.store import is_store, open_store

    if not os.path.exists(path):
        raise CliError(f"{role} {path}: no such file")
    if is_store(path):
        with open_store(path) as store:
            store.check_compatible(k=args.k, cutoff=args.cutoff)
            lo, hi = local_row_range(ctx.comm, store.n_env)
            info = {"source": path, "kind": "store", "n_structures": store.n_structures, "n_env": store.n_env,
                    "species": list(store.species or [])}
            x = store.read("descriptors", slice(lo, hi))
            return (x, info, (lo, store.offsets)) if layout else (x, info)
    frames = read_frames([path], args)
    prog = ctx.progress("descriptors", len(frames), "structures")
    x, (lo, _) = distributed_descriptors(ctx.comm, frames, args.k, args.cutoff, multicomponent=args.multicomponent,
                                         species=args.species, threads=ctx.threads, progress=prog)
    prog.close()
    offsets = np.concatenate([[0], np.cumsum([len(a) for a in frames], dtype=np.int64)])
    info = {"source": path, "kind": "structures", "n_structures": len(frames), "n_env": int(offsets[-1]),
            "species": sorted({s for a in frames for s in a.get_chemical_symbols()})}
    return (x, info, (int(offsets[lo]), offsets)) if layout else (x, info)
