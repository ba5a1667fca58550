"""Parallel drivers: compose the array kernels with a communicator passed in.

Every function takes ``comm`` (``parallel.Comm`` or ``SerialComm``) and each rank's local
part of the data; results are the same on any number of ranks (bitwise for integer data and
selections, within 1e-12 relative for floating sums).

δH / H / D share one driver, ``distributed_logsum``: queries stay where they are (partitioned),
the reference is either gathered on every rank (when it fits ``ref_memory`` bytes) or left
sharded and passed around the ring (``comm.ring_pass``), the next shard arriving
while the current one is folded into the running log-sum-exp state. Both paths fold the same
pairs into the same state, so they agree to rounding.
"""

from __future__ import annotations

import math

import numpy as np

from ..faults import inject
from ..kernels.precision import DEFAULT_FLOAT32_TOLERANCE
from ..parallel.partition import partition, weighted_partition

#: Gather the whole reference on every rank when it needs at most this many bytes.
DEFAULT_REF_MEMORY = 2 * 1024**3


def distributed_logsum(comm, y_local, x_local, h, *, ref_memory: int = DEFAULT_REF_MEMORY,
                       backend: str = "cpu", threads=None, force_ring: bool = False, stats: dict | None = None,
                       precision: str | None = None, float32_tolerance: float = DEFAULT_FLOAT32_TOLERANCE,
                       must_recompute=None):
    """L(y | X) = log Σ_{x∈X} K(y, x) for this rank's queries against the reference spread over
    all ranks (each rank passes its own shard ``x_local``, possibly empty).

    Returns (M_local, n_h) float64. ``stats`` (a dict) receives the path taken and the shape, and
    in float32 this rank's recomputed rows and largest kept bound (``ReferenceSet``).
    """
    y_local = np.ascontiguousarray(y_local, dtype=np.float64)
    widths = {w for n, w in comm.gather_objects(y_local.shape) if n > 0}
    ref = ReferenceSet(comm, x_local, h, ref_memory=ref_memory, backend=backend, force_ring=force_ring,
                       precision=precision, float32_tolerance=float32_tolerance)
    if widths - {ref.d}:
        raise ValueError(f"descriptor widths differ between the query and reference sets: "
                         f"{sorted(widths | {ref.d})}")
    if stats is not None:
        stats.update(path=ref.path, n_ref=ref.n_ref, ranks=comm.size)
    return ref.logsum(y_local, threads, stats=stats, must_recompute=must_recompute)


def distributed_delta_entropy(comm, y_local, x_local, h, **kw):
    """δH of this rank's queries; (M_local,) or (M_local, n_h) for an array h."""
    L = distributed_logsum(comm, y_local, x_local, h, **kw)
    return -L[:, 0] if np.ndim(h) == 0 else -L


def distributed_entropy_diversity(comm, x_local, h, **kw):
    """(H, D) of the set spread over all ranks (rows in rank order), each a float or (n_h,)."""
    L = distributed_logsum(comm, x_local, x_local, h, **kw)
    n_total = comm.reduce_sum(int(L.shape[0]))
    sum_L = np.asarray(comm.reduce_sum(L.sum(axis=0)))
    H = math.log(n_total) - sum_L / n_total
    # D = log Σ_i exp(−L_i): a global log-sum-exp from per-rank (max, scaled sum)
    neg = -L
    local_max = neg.max(axis=0) if neg.shape[0] else np.full(neg.shape[1], -np.inf)
    gmax = np.asarray(comm.reduce_max(local_max))
    local_sum = np.exp(neg - gmax).sum(axis=0) if neg.shape[0] else np.zeros(neg.shape[1])
    D = gmax + np.log(np.asarray(comm.reduce_sum(local_sum)))
    if np.ndim(h) == 0:
        return float(H[0]), float(D[0])
    return H, D


def precision_summary(comm, stats: dict, tolerance: float) -> dict:
    """What the outputs record of the precision used: ``precision``, and in float32 the tolerance,
    the rows recomputed in float64 (summed over ranks) and the largest bound kept (max over
    ranks). Collective. ``stats``: this rank's, as filled by ``ReferenceSet.logsum``."""
    precision = stats.get("precision", "float64")
    out = {"precision": precision}
    if precision == "float32":
        out.update(float32_tolerance=float(tolerance),
                   float32_recomputed_rows=int(comm.reduce_sum(int(stats.get("float32_recomputed_rows", 0)))),
                   float32_max_bound=float(comm.reduce_max(float(stats.get("float32_max_bound", 0.0)))))
    return out


def local_structure_range(comm, atom_counts) -> tuple[int, int]:
    """This rank's contiguous block of structures, balanced by atom count."""
    return weighted_partition(np.asarray(atom_counts, dtype=np.float64), comm.size, comm.rank)


def local_row_range(comm, n_rows: int) -> tuple[int, int]:
    return partition(int(n_rows), comm.size, comm.rank)


def distributed_descriptors(comm, frames, k, cutoff, *, multicomponent=False, species=None, threads=None,
                            progress=None):
    """Descriptors of this rank's structures (balanced by atom count) from a list every rank holds.

    Returns (x_local, (lo, hi)) where [lo, hi) is the global structure range. Errors (with global
    structure indices) are agreed: every rank raises the same one.
    """
    from ..descriptors import check_parameters, dataset_species, descriptors_of

    k, cutoff = check_parameters(k, cutoff)
    counts = [len(a) for a in frames]
    lo, hi = local_structure_range(comm, counts)
    if multicomponent and species is None:
        species = dataset_species(frames)
    x = descriptors_of(frames[lo:hi], k, cutoff, first_index=lo, multicomponent=multicomponent, species=species,
                       threads=threads, progress=progress)
    inject("descriptors", comm.rank)
    return x, (lo, hi)


def write_store_distributed(comm, path, x_local, struct_range, offsets, *, extra_rows=None, per_structure=None,
                            attrs: dict):
    """Each rank writes its shard (its rows in global order); rank 0 writes the master last."""
    from ..io.store import new_write_id, remove_orphan_shards, remove_unreferenced_shards, write_master, write_shard

    rank = comm.rank
    lo, hi = struct_range
    offsets = np.asarray(offsets, dtype=np.int64)
    row_start, row_stop = int(offsets[lo]), int(offsets[hi])
    counts = np.diff(offsets[lo:hi + 1])
    rows = {"structure_index": np.repeat(np.arange(lo, hi, dtype=np.int64), counts),
            "atom_index": np.arange(row_start, row_stop, dtype=np.int64) - np.repeat(offsets[lo:hi], counts)}
    if x_local is not None:
        rows["descriptors"] = np.asarray(x_local, dtype=np.float64)
    rows.update(extra_rows or {})
    if rank == 0:
        remove_orphan_shards(path)  # what failed writes left; before any rank writes (the bcast orders it)
    write_id = comm.broadcast(new_write_id() if rank == 0 else None, root=0)
    info = write_shard(path, rank, row_start, rows, write_id)
    infos = comm.gather_to_root(info, root=0)

    if rank == 0:
        write_master(path, infos, offsets, attrs=attrs, per_structure=per_structure or {}, write_id=write_id)
        remove_unreferenced_shards(path, infos)  # only once the new master is in place
    comm.wait_for_all()  # the store is complete on every rank's return


class ReferenceSet:
    """A reference set prepared once (centred, gathered or sharded) for many δH calls.

    ``logsum(y_local)`` is collective when the ring is used: every rank must call it the same
    number of times (pass an empty block when a rank has nothing left).

    ``precision="float32"``: the float32 kernels, and rows whose error bound (with the reference's
    largest centred norm over all ranks) exceeds ``float32_tolerance`` recomputed in float64
    (``kernels.precision.logsum_to_tolerance``; on the ring, a second pass when any rank has one).
    """

    def __init__(self, comm, x_local, h, *, ref_memory: int = DEFAULT_REF_MEMORY, backend: str = "cpu",
                 force_ring: bool = False, precision: str | None = None,
                 float32_tolerance: float = DEFAULT_FLOAT32_TOLERANCE):
        from ..kernels.precision import check_tolerance, row_norms
        from ..metrics import as_bandwidths, backend_on

        self.comm = comm
        self.hs, self.scalar = as_bandwidths(h)
        x_local = np.ascontiguousarray(x_local, dtype=np.float64)
        shapes = comm.gather_objects(x_local.shape)
        widths = {s[1] for s in shapes if s[0] > 0}
        if len(widths) > 1:
            raise ValueError(f"reference shards have different widths: {sorted(widths)}")
        self.sizes = [s[0] for s in shapes]
        self.n_ref = int(sum(self.sizes))
        if self.n_ref == 0:
            raise ValueError("the reference set is empty")
        self.d = widths.pop()
        self.tolerance = check_tolerance(float32_tolerance, "float32 tolerance")
        self.be = backend_on(backend, comm, precision=precision)
        self.precision = getattr(self.be, "precision", "float64")
        self._twins = {self.precision: self.be}
        total = np.asarray(comm.reduce_sum(x_local.sum(axis=0) if x_local.shape[0] else np.zeros(self.d)))
        self.center = total / self.n_ref
        self.inv2h2, self.prune_d2 = self.be.reference_params(self.hs, self.n_ref)
        self.ring = comm.size > 1 and (force_ring or self.n_ref * self.d * 8 > ref_memory)
        xc = x_local - self.center
        self.r_x = float(comm.reduce_max(float(row_norms(xc).max(initial=0.0))))  # the float32 bound's largest reference norm
        self.x = xc if (self.ring or comm.size == 1) else comm.gather_rows(xc)

    @property
    def path(self) -> str:
        return "ring" if self.ring else "broadcast"

    def _backend(self, precision: str):
        if precision not in self._twins:
            self._twins[precision] = self.be.with_precision(precision)
        return self._twins[precision]

    def _fold_all(self, yc, precision: str) -> np.ndarray:
        """L of centred rows against the whole reference in ``precision`` (collective on the ring)."""
        be = self._backend(precision)
        st = be.start(yc, self.hs.size)
        if self.ring:
            self.comm.ring_pass(self.x.reshape(-1, self.d), self.sizes,
                                lambda block: be.fold(st, block, self.inv2h2, self.prune_d2))
        else:
            be.fold(st, self.x, self.inv2h2, self.prune_d2)
        return be.finish(st, self.inv2h2)

    def logsum(self, y_local, threads=None, *, stats: dict | None = None, must_recompute=None) -> np.ndarray:
        """L(y|X) (M_local, n_h) for this rank's queries. ``stats``/``must_recompute``: see
        ``kernels.precision.logsum_to_tolerance`` (float32 only)."""
        from ..kernels.precision import logsum_to_tolerance
        from ..runtime import threads as thread_context

        y_local = np.ascontiguousarray(y_local, dtype=np.float64).reshape(-1, self.d)
        inject("logsum", self.comm.rank)
        with thread_context(threads):
            return logsum_to_tolerance(self._fold_all, y_local - self.center, self.hs, r_x=self.r_x, n_ref=self.n_ref,
                                       precision=self.precision, tolerance=self.tolerance,
                                       agree_count=self.comm.reduce_sum if self.ring else None, stats=stats,
                                       must_recompute=must_recompute)

    def delta_entropy(self, y_local, threads=None, **options) -> np.ndarray:
        L = self.logsum(y_local, threads, **options)
        return -L[:, 0] if self.scalar else -L


def load_reference_rows(comm, ref, *, k, cutoff, species, traj, threads=None, option="REF"):
    """This rank's share of a reference's descriptors (a store: rows split over ranks; a structure
    file: structures split, descriptors computed here), checked against the job's ``k``,
    ``cutoff`` and the ``species`` of its trajectory ``traj``. ValueError naming ``option`` and
    the file otherwise."""
    import os

    from ..descriptors import check_species
    from ..io.store import is_store, open_store

    if not os.path.exists(ref):
        raise ValueError(f"{option} {ref}: no such file")
    if is_store(ref):
        with open_store(ref) as store:
            store.check_compatible(k=k, cutoff=cutoff)
            if store.attrs.get("descriptor_kind", "quests") != "quests":
                raise ValueError(f"{option} {ref}: {store.attrs.get('descriptor_kind')} descriptors are not "
                                 "supported here (plain QUESTS descriptors only)")
            check_species(species, store.species or (), f"TRAJ {traj}", f"{option} {ref}")
            lo, hi = local_row_range(comm, store.n_env)
            return store.read("descriptors", slice(lo, hi))
    from ..io.structures import read_structures

    frames = read_structures([ref])
    check_species(species, {s for a in frames for s in a.get_chemical_symbols()}, f"TRAJ {traj}", f"{option} {ref}")
    x, _ = distributed_descriptors(comm, frames, k, cutoff, threads=threads)
    return x
