"""Greedy MSC (maximum-entropy structure compression, [MSC] (docs/science.md)), serial and distributed.

Criterion (docs/science.md §3): the first pick is argmax_i H(S_i); every later pick is

    argmax_i [ max_{y∈S_i} δH(y | C) + H(S_i) ]     over the unselected structures,

where C holds the environments of the structures selected so far (plus a reference set R for
conditional MSC, in which case every pick, the first included, uses the criterion). Ties go to
the lowest global structure index.

Nothing is recomputed: each candidate environment keeps a running log-sum-exp state of its
kernel sum over C (``hpcquests.kernels.greedy``). The sums only grow as C grows, so every
structure's score only falls and a stale score is an upper bound. The *lazy* greedy keeps the
candidates in a max-heap of (possibly stale) scores and brings a structure up to date only
when it reaches the top; it gives the identical selection to the eager greedy (which updates
every candidate after every pick) with far fewer kernel evaluations. Bounds are lowered
first with cheap float32 lower bounds of the kernel sums on the leading principal components
of the descriptors (``principal_axes``, ``bound_rank``, ``bound_fields``), and an environment
is folded exactly only when its complete bound still tops. A structure is accepted only when
no bound lies within a relative 1e-10 of its exact score, so rounding in the last bits can
never make the lazy and eager selections differ.

Distributed: structures are split in contiguous blocks over the ranks (balanced by number of
environments). A step has two rounds: every rank settles the exact score of its top candidate
where that is cheap (it lags one pick behind) and one vote gives the largest, L; every rank then
searches its own candidates only down to L and proposes its exact best (or nothing), and a
MAXLOC vote picks the winner (ties → lowest index). Its owner broadcasts the chosen structure's
environments and bound fields (one buffer) and every rank appends them to C. Per step: two small
non-blocking votes and one broadcast; a rank waiting on a vote searches ahead for its next best
candidates. Scores are computed per structure with fixed blocking, so the selection is bitwise
the same on any number of ranks. docs/compress.md explains why (and what limits the scaling).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from ..metrics import DEFAULT_BANDWIDTH


@dataclass
class GreedyResult:
    """Outcome of a greedy MSC run (identical on every rank).

    Attributes:
        order: global structure indices in selection order (a prefix of length s is the
            size-s selection).
        scores: (len(order),) criterion value at each pick (nats); the unconditional first
            pick's value is its H(S).
        entropies: (N,) H(S_i) of every structure (nats).
        kernel_pairs: kernel evaluations done (all ranks), and ``eager_pairs`` what the eager
            greedy would have needed for the same picks.
    """

    order: list
    scores: np.ndarray
    entropies: np.ndarray
    kernel_pairs: int = 0
    eager_pairs: int = 0
    extra: dict = field(default_factory=dict)


def _size_list(size, n: int, name: str = "size") -> list[int]:
    """Validate one size or a list of sizes (counts ≥ 1, or fractions in (0, 1]) → counts."""
    from .sizes import resolve_sizes

    return resolve_sizes(size, n, name=name)


def _checked_arrays(descs, name: str):
    """Validated per-structure float64 arrays, their common width d and the row offsets."""
    if len(descs) == 0:
        raise ValueError(f"{name}: the dataset is empty (no structures)")
    arrs = []
    for i, a in enumerate(descs):
        a = np.asarray(a, dtype=np.float64)
        if a.ndim != 2 or a.shape[0] == 0:
            raise ValueError(f"{name}[{i}] must be a non-empty (n_environments, n_features) array, "
                             f"got shape {a.shape}")
        arrs.append(a)
    widths = {a.shape[1] for a in arrs}
    if len(widths) != 1:
        raise ValueError(f"{name}: structures have different descriptor widths {sorted(widths)}")
    for i, a in enumerate(arrs):
        if not np.isfinite(a).all():
            row = int(np.argmin(np.isfinite(a).all(axis=1)))
            raise ValueError(f"{name}[{i}] environment {row} is not finite")
    offsets = np.zeros(len(arrs) + 1, dtype=np.int64)
    np.cumsum([a.shape[0] for a in arrs], out=offsets[1:])
    return arrs, widths.pop(), offsets


def stack_structures(descs, name: str = "descriptors"):
    """(x (n_env, d) float64, offsets (N + 1,) int64) from a list of per-structure arrays."""
    arrs, _, offsets = _checked_arrays(descs, name)
    return np.ascontiguousarray(np.concatenate(arrs)), offsets


def _stack_centred(arrs, d, offsets):
    """What ``distributed_msc`` builds from a stacked block, built straight from the validated
    per-structure arrays (one large array instead of two: at 1.6M environments each copy costs
    ~1 s of first-touch page faults): (y (n_env, d) float64 centred on structure 0's mean,
    centre (d,))."""
    centre = arrs[0].mean(axis=0)
    y = np.empty((int(offsets[-1]), d))
    for a, lo, hi in zip(arrs, offsets[:-1], offsets[1:]):
        np.subtract(a, centre, out=y[lo:hi])
    return y, centre


def msc(descs, size, h: float = DEFAULT_BANDWIDTH, *, reference=None, lazy: bool = True, threads=None,
        backend: str = "cpu", progress=None, details: bool = False, precision: str | None = None):
    """Greedy MSC selection of ``size`` structures from a list of descriptor arrays (serial).

    Args:
        descs: list of (n_i, d) float64 arrays, one per structure.
        size: count (int ≥ 1), fraction in (0, 1] (rounded up, as the reference), or a list of
            them: one greedy run serves every size (selections are prefixes).
        h: bandwidth. reference: optional (n_R, d) environments for conditional MSC.
        lazy: lazy greedy (default) or eager (every candidate updated every step).
        threads: numba threads; backend: 'cpu' (lazy/eager numba kernels) or 'gpu'/'auto'
            (eager updates through the kernel backend registry).
        details: return the ``GreedyResult`` instead of the index list(s).
        precision: float64 (None: the default, or a backend object's own) or float32. Picks and
            scores are float64's either way: the CPU's lazy greedy does its bulk work (the
            bounds) in float32 and every value it accepts in float64; a float32 backend's
            argmax is certified (``_EagerPicker``).

    Returns:
        The selected global indices in pick order (a list, or a list of lists for a list of
        sizes), or the ``GreedyResult``.
    """
    from ..parallel.comm import SerialComm

    if precision is not None:
        from ..kernels.precision import check_precision

        precision = check_precision(precision)
        if not (isinstance(backend, str) and backend == "cpu"):  # the eager greedy in this precision
            from ..metrics import backend_on

            backend = backend_on(backend, precision=precision)
    arrs, d, offsets = _checked_arrays(descs, "descriptors")
    entropies = _entropies_of_list(arrs, offsets, h, threads)
    y, centre = _stack_centred(arrs, d, offsets)
    comm = SerialComm()
    run = _plan_run(comm, offsets, 0, d, size, h, reference)
    res = _run_greedy(comm, y, offsets, 0, run, centre, entropies, (lazy, threads, backend, progress))
    res.extra["precision"] = precision or res.extra["precision"]
    if details:
        return res
    sizes = res.extra["sizes"]
    if np.ndim(size) == 0:
        return res.order[: sizes[0]]
    return [res.order[:s] for s in sizes]


def _entropies_of_list(arrs, offsets, h, threads, batch_rows: int = 1 << 20):
    """H(S) of every structure of a validated list (``metrics.structure_entropies``), stacked a
    batch of structures at a time (a structure's value does not depend on its batch)."""
    from ..metrics import structure_entropies

    out, s = [], 0
    while s < len(arrs):
        e = int(np.searchsorted(offsets, offsets[s] + batch_rows, side="right")) - 1
        e = min(max(e, s + 1), len(arrs))
        out.append(structure_entropies(np.concatenate(arrs[s:e]), offsets[s:e + 1] - offsets[s], h, threads=threads,
                                       checked=False))
        s = e
    return np.concatenate(out) if out else np.zeros(0)


def distributed_msc(comm, x_local, local_offsets, first_index: int, size, *, h: float = DEFAULT_BANDWIDTH,
                    reference=None, lazy: bool = True, threads=None, backend: str = "cpu",
                    progress=None, overwrite_x: bool = False) -> GreedyResult:
    """Greedy MSC over structures spread in contiguous blocks over the ranks of ``comm``.

    Args:
        comm: communicator (``parallel.get_comm()``: ``Comm`` or ``SerialComm``); collective.
        x_local: (n_env_local, d) float64 environments of this rank's structures.
        local_offsets: (n_local + 1,) int64 row offsets of those structures in ``x_local``.
        first_index: global index of this rank's first structure (ranks hold consecutive blocks
            in rank order).
        size: as in ``msc`` (validated against the global structure count).
        reference: conditional MSC reference (n_R, d), the same on every rank (or None).
        overwrite_x: the greedy may keep its centred environments in ``x_local`` itself (when
            it is a writeable C-contiguous float64 array) instead of a centred copy: it saves
            the copy (8 bytes per feature per environment: 4 GiB per rank for 16M environments
            on 2 ranks) and leaves ``x_local`` centred, i.e. changed.
        Others as in ``msc`` (a backend object keeps its own precision: ``_EagerPicker``).
    """
    from ..metrics import structure_entropies

    x_local = np.ascontiguousarray(x_local, dtype=np.float64)
    local_offsets = np.ascontiguousarray(local_offsets, dtype=np.int64)
    _check_offsets(x_local, local_offsets, first_index)
    run = _plan_run(comm, local_offsets, first_index, x_local.shape[1], size, h, reference)
    centre = _common_centre(comm, x_local, local_offsets, int(run.owner_of[0]))
    # H(S) from the rows as given (the one routine: bitwise what the baselines and the report use)
    ent_local = structure_entropies(x_local, local_offsets, run.h, threads=threads, checked=False)
    if overwrite_x and x_local.flags.writeable:
        y = _centre_in_place(x_local, centre)
    else:
        y = _centred(x_local, centre)
    return _run_greedy(comm, y, local_offsets, first_index, run, centre, ent_local,
                       (lazy, threads, backend, progress))


class _Run(NamedTuple):
    """What every rank knows of a greedy run before it starts (``_plan_run``)."""

    sizes: list
    target: int
    n_total: int
    h: float
    inv2h2: float
    prune_d2: float
    all_counts: np.ndarray  # environments per structure, every structure
    owner_of: np.ndarray  # the rank of every structure
    ref: object  # the conditional reference (n_R, d) or None


def _plan_run(comm, local_offsets, first_index, width, size, h, reference) -> _Run:
    """Validated sizes, bandwidth and reference, and every structure's environment count and
    rank (collective)."""
    from ..kernels.cpu import prune_exponent

    n_local = local_offsets.size - 1
    layout, n_total, d = _global_layout(comm, first_index, n_local, width)
    sizes = _size_list(size, n_total)
    hs = float(h)
    if not (math.isfinite(hs) and hs > 0):
        raise ValueError(f"bandwidth h must be positive and finite, got {h!r}")
    # global environment counts per structure (everyone needs them to receive a broadcast)
    all_counts = np.concatenate(comm.gather_objects(np.diff(local_offsets))).astype(np.int64)
    owner_of = np.repeat(np.arange(len(layout)), [c for _, c, _ in layout])
    ref = None if reference is None else _checked_reference(reference, d)
    prune_d2 = 2.0 * hs * hs * prune_exponent(int(all_counts.sum()) + (0 if ref is None else ref.shape[0]))
    return _Run(sizes, max(sizes), n_total, hs, 1.0 / (2.0 * hs * hs), prune_d2, all_counts, owner_of, ref)


def _run_greedy(comm, y, local_offsets, first_index, run: _Run, centre, ent_local, options) -> GreedyResult:
    """The greedy on centred rows ``y`` of this rank's structures (their H(S) ``ent_local``);
    ``options`` = (lazy, threads, backend, progress)."""
    from ..kernels.cpu import squared_norms
    from ..runtime import threads as thread_context

    lazy, threads, backend, progress = options
    yn = squared_norms(y) if y.shape[0] else np.zeros(0)
    entropies = np.concatenate(comm.gather_objects(ent_local))
    plan = _PickPlan(run.target, run.n_total, first_index, run.owner_of, run.all_counts)
    ref = run.ref
    if backend != "cpu":
        return _eager_backend(comm, backend, y, local_offsets, entropies, plan, centre, ref, run.sizes,
                              threads, progress, (run.inv2h2, run.prune_d2))
    n_env_total = int(run.all_counts.sum())
    axes, spectrum = principal_axes(comm, y)
    rank = bound_rank(spectrum, n_env_total, run.h, y.shape[1])
    # the float32 bound fields hold |y|² and the exponent's scale 1/(2h²): beyond ~1e30 they
    # would overflow, so such data (never descriptors) is folded exactly throughout
    ref_c = None if ref is None else _centred(ref, centre)
    ref_max = 0.0 if ref_c is None else float(squared_norms(ref_c).max(initial=0.0))
    biggest = comm.reduce_max(max(float(yn.max(initial=0.0)), ref_max))
    use_bounds = biggest < BOUND_LIMIT and run.inv2h2 < BOUND_LIMIT
    state = _LazyState(y, yn, local_offsets, ent_local, first_index, lazy=lazy, axes=axes, rank=rank,
                       use_bounds=use_bounds)
    if ref_c is not None:
        state.append_selected(ref_c)
    picker = _LazyPicker(state, ent_local, first_index, run.inv2h2, run.prune_d2, conditional=ref is not None)
    with thread_context(threads):  # (the look-ahead decision reads the thread count)
        overlap = comm.size > 1 and run.n_total < 2**31 - 1 and state.use_bounds and _may_speculate(comm)
        order, scores = _pick_loop(comm, picker, plan, overlap, progress)
    pairs = int(comm.reduce_sum(state.pairs))
    bound_pairs = int(comm.reduce_sum(state.bound_pairs))
    eager = _eager_pair_count(order, run.all_counts, None if ref is None else ref.shape[0], ref is not None)
    return GreedyResult(order, np.asarray(scores), entropies, pairs, eager,
                        extra={"sizes": run.sizes, "n_env_total": n_env_total, "bound_pairs": bound_pairs,
                               "bound_rank": rank if use_bounds else 0, "precision": "float64"})


class _PickPlan(NamedTuple):
    """What every rank knows of the candidates: ``target`` picks out of ``n_total`` structures;
    this rank holds [first_index, first_index + n_local); ``owner_of[g]`` is structure g's rank,
    ``all_counts[g]`` its environment count."""

    target: int
    n_total: int
    first_index: int
    owner_of: np.ndarray
    all_counts: np.ndarray


def _pick_loop(comm, picker, plan: _PickPlan, overlap: bool, progress):
    """The one MSC pick loop, whatever computes the scores: each rank proposes its best live
    candidate (``picker.propose``), one MAXLOC vote picks the winner (largest score, ties to the
    lowest index), its owner hands over its rows (``picker.take``), every rank adds them
    (``picker.add``). Returns (order, scores).

    On several ranks a step has two rounds when the picker can bid (``picker.floor_bid``): every
    rank first settles the exact score of its top candidate where that is cheap (the exact best
    of the last step, one pick behind), and one vote gives the largest, L; each rank then
    searches only down to L (``propose(step, floor)``). Without it the rank whose best was
    picked searched alone down to its own next best, below the step's winner, while the others
    waited: the step's work lay on one rank.

    With ``overlap`` the votes are non-blocking and a rank whose part is done works ahead
    (``picker.look_ahead``) until the others are done."""
    from ..faults import inject

    if overlap:
        picker.look_ahead()  # loads the compiled kernel now, not in the first wait
    order, scores = [], []
    for step in range(plan.target):
        inject("msc.step", comm.rank)
        floor = -math.inf
        if comm.size > 1:
            bid = picker.floor_bid(step)  # (value, -global index), or None: no first round
            if bid is not None:
                floor = _vote(comm, picker, bid, plan.n_total, overlap)[0]
        value, g = _vote(comm, picker, picker.propose(step, floor), plan.n_total, overlap)
        if g < 0 or g >= plan.n_total:
            raise RuntimeError(f"MSC step {step}: no candidate left (internal error)")
        owner = int(plan.owner_of[g])
        if comm.rank == owner:
            buffers = picker.take(g - plan.first_index)
        else:
            buffers = picker.empty(int(plan.all_counts[g]))
        for buf in buffers:
            comm.broadcast_array(buf, root=owner)
        picker.add(*buffers)
        order.append(int(g))
        scores.append(float(value))
        if progress is not None:
            progress(step + 1, plan.target)
    return order, scores


def _vote(comm, picker, best, n_total: int, overlap: bool):
    """(largest value, its global index) over the ranks' ``best`` = (value, −global index), ties
    to the lowest index. With ``overlap`` (every rank has a core): a non-blocking vote, the
    picker working ahead while it is open, then polled without pauses (a step's wait is often
    well under a millisecond: the ordinary wait's pauses would add up to 2 ms to it)."""
    if overlap:
        vote = comm.maxloc_vote(best[0], min(-best[1], n_total))
        while not vote.test():
            if not picker.look_ahead():
                break
        return vote.result(spin=True)
    key = comm.reduce_max(best)
    return key[0], -key[1]


class _LazyPicker:
    """Scores from the lazy greedy's state (``_LazyState``): cheap bounds, exact folds only where
    a candidate can still win. A rank searches only down to the step's floor (``floor_bid``), the
    part of the serial search that lies on its own candidates, so the pairs stay close to the
    serial run's; looking ahead searches for its next best candidates while a vote is open."""

    def __init__(self, state, ent_local, first_index, inv2h2, prune_d2, *, conditional):
        self.state, self.ent_local, self.first_index = state, ent_local, first_index
        self.inv2h2, self.prune_d2, self.conditional = inv2h2, prune_d2, conditional

    def propose(self, step, floor=-math.inf):
        if step == 0 and not self.conditional:
            return _best_of(self.ent_local, self.first_index, self.state.alive)
        return self.state.local_best(self.inv2h2, self.prune_d2, floor)

    def floor_bid(self, step):
        if step == 0 and not self.conditional:
            return None
        return self.state.settle_top(self.inv2h2, self.prune_d2)

    def look_ahead(self) -> bool:
        return self.state.look_ahead(self.inv2h2, self.prune_d2)

    def take(self, loc):
        self.state.remove(loc)
        return (self.state.rows_of(loc),)

    def empty(self, n_rows):
        return (self.state.empty_rows(n_rows),)

    def add(self, buf):
        self.state.append_selected(*self.state.unpack_rows(buf))


class _EagerPicker:
    """Scores from a kernel backend (the GPU path): every live candidate's state is folded with
    each pick; the scores come from one ``finish`` per step, and the step's leaders are scored
    again exactly (``_certified_best``), so the picks are the CPU lazy greedy's.

    float32 backend (``precision="float32"``): its scores are within a bound B_i of the float64
    ones (``kernels.precision.float32_error_bound`` of each environment, with the largest norm
    folded so far; a structure's score moves by at most its environments' largest bound). The
    argmax is *certified*: every live structure whose float32 score + B_i reaches the leader's
    float32 score − B_lead is a contender, and the contenders' scores are recomputed in float64
    by the CPU lazy greedy's own exact folds (``kernels.greedy.exact_scores``: each environment on
    its own, one selected structure at a time in order). The proposed (score, index) is then the
    CPU greedy's, bit for bit, so the picks are float64's, exact ties included.
    """

    def __init__(self, be, y, offsets, ent_local, first_index, inv2h2, prune_d2, n_prune: int = 1):
        self.be, self.y, self.offsets = be, y, offsets
        self.ent_local, self.first_index = ent_local, first_index
        self.inv = np.array([inv2h2])
        self.prune_d2 = prune_d2
        self.alive = np.ones(offsets.size - 1, dtype=bool)
        self.st = be.start(y, 1)
        self.folded_any = False
        from ..kernels.cpu import squared_norms

        self.float32 = getattr(be, "precision", "float64") == "float32"
        self.yn = squared_norms(y) if y.shape[0] else np.zeros(0)
        # every block folded, in order, with its squared norms (the exact rescoring replays them)
        self.folds: list = []
        self.fold_norms: list = []
        self.r_x = 0.0  # the largest centred norm folded so far
        self.y_norms = np.sqrt(self.yn)
        self.n_prune = int(n_prune)
        self.h = math.sqrt(1.0 / (2.0 * inv2h2))
        self.recomputed_structures = 0

    def _fold(self, rows):
        self.be.fold(self.st, rows, self.inv, self.prune_d2)
        self.folded_any = True
        if len(rows):
            from ..kernels.cpu import squared_norms

            rows = np.ascontiguousarray(rows, dtype=np.float64)
            self.folds.append(rows)
            self.fold_norms.append(squared_norms(rows))
            self.r_x = max(self.r_x, math.sqrt(float(self.fold_norms[-1].max())))

    def fold_reference(self, ref_c):
        self._fold(ref_c)

    def floor_bid(self, step):
        return None

    def propose(self, step, floor=-math.inf):  # (the floor is the two-round step's: not used here)
        if not self.folded_any:
            return _best_of(self.ent_local, self.first_index, self.alive)
        L = self.be.finish(self.st, self.inv)[:, 0]
        worst = np.minimum.reduceat(L, self.offsets[:-1]) if self.alive.size else np.zeros(0)
        score = self.ent_local - worst
        if not self.alive.any():
            return _best_of(score, self.first_index, self.alive)
        return self._certified_best(score)

    def _certified_best(self, score):
        """The local argmax with the CPU greedy's exact score: contenders resolved exactly. A
        float64 backend's scores differ from the CPU's in the last bits (GEMM blocking): its band
        is the lazy greedy's TIE_BAND, so exact copies still tie and go to the lowest index."""
        from ..kernels.greedy import TIE_BAND
        from ..kernels.precision import float32_error_bound

        if self.float32:
            env_bound = float32_error_bound([self.h], self.y.shape[1], self.y_norms, self.r_x, self.n_prune)
            bound = np.maximum.reduceat(env_bound, self.offsets[:-1])
        else:
            bound = TIE_BAND * np.maximum(1.0, np.abs(score))
        live = np.where(self.alive, score - bound, -np.inf)
        floor = live.max()  # the leader's float64 score is at least this
        contenders = np.flatnonzero(self.alive & ~(score + bound < floor))
        exact = np.full(score.shape, -np.inf)
        exact[contenders] = self._float64_scores(contenders)
        self.recomputed_structures += contenders.size
        return _best_of(exact, self.first_index, self.alive)

    def _float64_scores(self, structures) -> np.ndarray:
        """The float64 scores of ``structures`` (local indices), as the CPU lazy greedy has them."""
        from ..kernels.greedy import exact_scores

        sel_x = np.concatenate(self.folds)
        sel_off = np.concatenate([[0], np.cumsum([len(b) for b in self.folds])]).astype(np.int64)
        sel_xn = np.concatenate(self.fold_norms)
        return exact_scores(np.asarray(structures, dtype=np.int64), self.offsets, self.y, self.yn, sel_x, sel_xn,
                            sel_off, float(self.inv[0]), float(self.prune_d2), self.ent_local)

    def look_ahead(self) -> bool:
        return False

    def take(self, loc):
        self.alive[loc] = False
        return (np.ascontiguousarray(self.y[self.offsets[loc]:self.offsets[loc + 1]]),)

    def empty(self, n_rows):
        return (np.empty((n_rows, self.y.shape[1])),)

    def add(self, rows):
        self._fold(rows)


def _may_speculate(comm) -> bool:
    """Look ahead while waiting only when every rank has a core of its own (collective): on an
    oversubscribed node a waiting rank's look-ahead takes the core from the rank the step waits
    for."""
    import os

    import numba

    mode = os.environ.get("HPCQUESTS_MSC_LOOKAHEAD", SPECULATE).strip().lower()
    if mode not in ("auto", "on", "off"):
        raise ValueError(f"HPCQUESTS_MSC_LOOKAHEAD must be auto, on or off, got {mode!r}")
    if mode != "auto":
        return mode == "on"
    busy = comm.node_size() * max(1, numba.get_num_threads())
    return comm.every_rank(busy <= (os.cpu_count() or 1))


def _common_centre(comm, x_local, local_offsets, owner0):
    """A centre independent of the rank count: the mean of structure 0's environments (held by
    rank ``owner0``), on every rank."""
    mean = x_local[: local_offsets[1]].mean(axis=0) if comm.rank == owner0 else None
    return comm.broadcast(mean, root=owner0)


def _global_layout(comm, first_index, n_local, width):
    """Every rank's (first index, structure count, width) in rank order, the structure count
    and the common width (collective). ValueError for an empty dataset, different widths, or
    blocks that are not consecutive in rank order."""
    layout = comm.gather_objects((int(first_index), int(n_local), width))
    n_total = sum(c for _, c, _ in layout)
    widths = {w for _, c, w in layout if c > 0}
    if n_total == 0:
        raise ValueError("the dataset is empty (no structures)")
    if len(widths) != 1:
        raise ValueError(f"structures have different descriptor widths across ranks: {sorted(widths)}")
    starts = [f for f, _, _ in layout]
    expected = 0
    for f, c, _ in layout:
        if f != expected:
            raise ValueError("ranks must hold consecutive blocks of structures in rank order "
                             f"(rank block starts {starts})")
        expected += c
    return layout, n_total, widths.pop()


def _checked_reference(reference, d):
    from ..metrics import as_descriptors

    ref = as_descriptors(reference, "reference")
    if ref.shape[1] != d:
        raise ValueError(f"reference has {ref.shape[1]} features, the structures have {d}")
    return ref


def _check_offsets(x_local, offsets, first_index):
    """The local block must be (n_env, d) with offsets 0 = o_0 < o_1 < ... < o_n = n_env."""
    if x_local.ndim != 2:
        raise ValueError(f"x_local must be a 2-D (n_environments, n_features) array, got shape {x_local.shape}")
    if offsets.ndim != 1 or offsets.size < 1 or offsets[0] != 0 or offsets[-1] != x_local.shape[0]:
        raise ValueError(f"local_offsets must run from 0 to the number of local environments "
                         f"({x_local.shape[0]}), got {offsets[:3].tolist()}...{offsets[-2:].tolist()}")
    steps = np.diff(offsets)
    if (steps <= 0).any():
        bad = int(np.argmin(steps > 0))
        raise ValueError(f"structure {first_index + bad} has no environments (offsets must increase)")
    row = _first_nonfinite_row(x_local)
    if row >= 0:
        s = int(np.searchsorted(offsets, row, side="right") - 1)
        raise ValueError(f"structure {first_index + s} environment {row - offsets[s]} is not finite")


def _centred(x, centre):
    """x − centre (a new array). The rows keep their width: padding them to whole SIMD vectors
    measured no faster, and an in-place centred block (``overwrite_x``) could not be padded."""
    return np.subtract(x, centre)


def _centre_in_place(x, centre, block: int = 1 << 16):
    """x − centre in x itself, a block of rows at a time (no full-size temporary)."""
    for lo in range(0, x.shape[0], block):
        np.subtract(x[lo:lo + block], centre, out=x[lo:lo + block])
    return x


def _first_nonfinite_row(x, block: int = 1 << 16) -> int:
    """The first row of x holding a NaN or an infinity, or -1 (checked a block at a time: no
    full-size boolean temporary)."""
    for lo in range(0, x.shape[0], block):
        ok = np.isfinite(x[lo:lo + block]).all(axis=1)
        if not ok.all():
            return lo + int(np.argmin(ok))
    return -1


def _best_of(values, first_index, alive):
    """Local (value, −global index) of the best live structure (ties → lowest index)."""
    if not alive.any():
        return (-math.inf, -(2**62))
    v = np.where(alive, values, -np.inf)
    c = int(np.argmax(v))  # first occurrence: the lowest index among equal values
    return (float(v[c]), -(first_index + c))


def _eager_pair_count(order, counts, n_ref, conditional) -> int:
    """Kernel pairs the eager greedy evaluates: every live candidate against every new pick."""
    remaining = int(counts.sum())
    total = 0
    if conditional:
        total += remaining * n_ref
    for t, g in enumerate(order):
        remaining -= int(counts[g])
        if t + 1 < len(order):
            total += remaining * int(counts[g])
    return total


#: Look-ahead while waiting for the other ranks' proposals (multi-rank runs): "auto" (when every
#: rank has a core of its own), "on" or "off"; the environment variable HPCQUESTS_MSC_LOOKAHEAD
#: overrides it.
SPECULATE = "auto"
#: Exact candidates the look-ahead sets aside: it searches for this rank's best candidates after
#: them (its runner-ups in case its best ones are picked); 4, 32 and 128 measured alike.
LOOK_AHEAD_DEPTH = 32
#: Target duration of one look-ahead call (between tests of the vote), seconds. Fixed step counts
#: measured: 16 steps per call best on 16-atom cells (100k set: 2-8 steps 10-15 % slower, the
#: calls' overhead), 2-8 on 54-atom cells (600-structure *mixed*: 16-64 steps 15-30 % slower,
#: ranks answering a completed vote late); the adaptive count matches both.
LOOK_AHEAD_CALL_S = 2e-4
#: Kernel pairs one look-ahead call may start (an exact pair counting as 6 cheap ones; 10^6 take
#: ~1.6 ms): bounds a call whose structure steps are long.
LOOK_AHEAD_MAX_PAIRS = 1_000_000
#: |y|² (about the common centre) or 1/(2h²) at or beyond which the float32 bounds are not used.
BOUND_LIMIT = 1e30
#: Slack per kept component, times |x|², added to every float32 bound distance (covers
#: float32 rounding of the inputs, the dot products and the sums: ≤ (r + 2)·6e-8·2|x|²).
BOUND_SLACK_PER_DIM = 1e-6


def principal_axes(comm, y):
    """(d, d) orthonormal axes of the environments' second moment about the common centre,
    strongest first (columns), from every rank's ``y`` (collective). They only steer the lazy
    greedy's cheap bounds; the scores never depend on them."""
    cov = y.T @ y if y.shape[0] else np.zeros((y.shape[1], y.shape[1]))
    cov = comm.sum_array(cov)
    w, v = np.linalg.eigh(cov)
    return np.ascontiguousarray(v[:, ::-1]), w[::-1].clip(min=0.0)


def bound_rank(eigenvalues, n_env, h, d):
    """How many leading principal components the cheap bound keeps: the fewest (a multiple of
    8) whose trailing mean square is at most 5 % of 2h², at most half the width (the bound
    distance exceeds the true one by up to 2|y_t||x_t|, about twice the trailing mean square,
    so typical terms lose up to ~10 % and the bound stays close). Narrow descriptors (< 16)
    keep every component."""
    if d < 16:
        return d
    tail = np.concatenate([np.cumsum(eigenvalues[::-1])[::-1], [0.0]]) / max(n_env, 1)
    for r in range(8, d // 2 + 1, 8):
        if tail[r] <= 0.05 * 2.0 * h * h:
            return r
    return d // 2 // 8 * 8


def bound_fields(x, xn, axes, r, block: int = 16384):
    """(rows, r + 2) float32 fields of the cheap bound: the r leading principal components,
    their squared norm plus the rounding slack, and the norm of the trailing components.
    Rotated in blocks through one reused buffer (no n×d temporaries)."""
    n, d = x.shape
    out = np.empty((n, r + 2), dtype=np.float32)
    rot = np.empty((min(block, n), d))
    for lo in range(0, n, block):
        hi = min(lo + block, n)
        rb = rot[: hi - lo]
        np.matmul(x[lo:hi], axes, out=rb)
        out[lo:hi, :r] = rb[:, :r]
        out[lo:hi, r] = np.einsum("ij,ij->i", rb[:, :r], rb[:, :r]) + BOUND_SLACK_PER_DIM * (r + 8) * xn[lo:hi]
        out[lo:hi, r + 1] = np.sqrt(np.einsum("ij,ij->i", rb[:, r:], rb[:, r:]))
    return out


class _LazyState:
    """This rank's candidates (per-environment states, a heap of scores) and the selected set C."""

    def __init__(self, y, yn, offsets, entropies, first_index, *, lazy, axes, rank, use_bounds=True):
        from ..kernels.greedy import new_state

        self.off = offsets
        self.axes, self.r = axes, int(rank)
        self.env = (y, yn, bound_fields(y, yn, axes, self.r))
        self.ent = np.ascontiguousarray(entropies, dtype=np.float64)
        self.first = int(first_index)
        n = offsets.size - 1
        n_env = y.shape[0]
        # exact log-sum-exp state, lower-bound state and δH bound per environment (kernels.greedy)
        self.st = new_state(n_env)
        self.st_folded = np.zeros(n, dtype=np.int64)
        self.st_bound = np.full(n, np.inf)
        self.alive = np.ones(n, dtype=bool)
        self.heap = np.arange(n, dtype=np.int64)  # equal bounds, increasing index: already a heap
        self.n_heap = n
        self.lazy = lazy
        self.use_bounds = bool(use_bounds)
        # selected rows: x (rows, d), |x|², bound fields transposed (r + 2, rows + LANES) float32
        self.sel_x, self.sel_xn, self.sel_bt = np.empty((1024, y.shape[1])), np.empty(1024), self._bound_rows(1024)
        self.sel_off = np.zeros(1, dtype=np.int64)
        self.n_sel = 0
        self.pairs = 0
        self.bound_pairs = 0
        self.scratch = np.empty(2 * max(n, 1), dtype=np.int64)  # heap-band positions and DFS stack
        self.aside = np.empty(LOOK_AHEAD_DEPTH, dtype=np.int64)
        self.ahead_steps = 8  # structure steps per look-ahead call (adapted: ``look_ahead``)

    def _bound_rows(self, cap):
        from ..kernels.greedy import LANES  # spare columns: the row stride stays off a power of two

        return np.zeros((self.r + 2, cap + LANES), dtype=np.float32)

    @property
    def structs(self):
        return (self.ent, self.st_bound, self.st_folded)

    @property
    def sel(self):
        return (self.sel_x, self.sel_xn, self.sel_bt, self.sel_off)

    def rows_of(self, c):
        """Local structure c's centred environments (n, d) float64 and bound fields (n, r + 2)
        float32, packed in one byte buffer (one broadcast per pick; ``unpack_rows``)."""
        a, b = self.off[c], self.off[c + 1]
        buf = self.empty_rows(int(b - a))
        rows, brows = self.unpack_rows(buf)
        rows[...] = self.env[0][a:b]
        brows[...] = self.env[2][a:b]
        return buf

    def empty_rows(self, n):
        """A receive buffer for another rank's structure of n environments."""
        return np.empty(n * (8 * self.env[0].shape[1] + 4 * (self.r + 2)), dtype=np.uint8)

    def unpack_rows(self, buf):
        """(rows (n, d) float64, bound fields (n, r + 2) float32): views of a packed buffer (the
        float64 part first, so both stay aligned)."""
        d, w = self.env[0].shape[1], self.r + 2
        n = buf.size // (8 * d + 4 * w)
        return buf[: 8 * n * d].view(np.float64).reshape(n, d), buf[8 * n * d:].view(np.float32).reshape(n, w)

    def append_selected(self, rows, brows=None):
        """Add one selected structure's (centred) environments to C; ``brows`` are their bound
        fields when known (from ``rows_of``), else computed."""
        from ..kernels.cpu import squared_norms

        rows = np.ascontiguousarray(rows, dtype=np.float64)
        xn = squared_norms(rows)
        if brows is None:
            brows = bound_fields(rows, xn, self.axes, self.r)
        end = int(self.sel_off[-1])
        need = end + rows.shape[0]
        if need > self.sel_xn.shape[0]:
            cap = max(need, 2 * self.sel_xn.shape[0])
            x, x2, bt = np.empty((cap, self.sel_x.shape[1])), np.empty(cap), self._bound_rows(cap)
            x[:end], x2[:end], bt[:, :end] = self.sel_x[:end], self.sel_xn[:end], self.sel_bt[:, :end]
            self.sel_x, self.sel_xn, self.sel_bt = x, x2, bt
        self.sel_x[end:need] = rows
        self.sel_xn[end:need] = xn
        self.sel_bt[:, end:need] = brows.T
        self.sel_off = np.append(self.sel_off, need)
        self.n_sel += 1

    def remove(self, c):
        """Take structure c out of the candidates."""
        from ..kernels.greedy import heap_build, heap_pop

        self.alive[c] = False
        if self.n_heap and self.heap[0] == c:
            self.n_heap = heap_pop(self.heap, self.n_heap, self.st_bound)
        else:  # only the unconditional first pick (chosen by entropy) is not the heap top
            live = self.heap[: self.n_heap]
            live = live[live != c]
            self.n_heap = live.size
            self.heap[: self.n_heap] = live
            heap_build(self.heap, self.n_heap, self.st_bound)

    def look_ahead(self, inv2h2, prune_d2) -> bool:
        """A few structure steps of the search for this rank's next best candidates (see
        ``kernels.greedy.look_ahead``); False when none is left. Only with the cheap bounds.

        The steps per call adapt to the structures' size: doubled while a call takes under
        ``LOOK_AHEAD_CALL_S`` / 4, halved above it; a call is then long enough that its Python
        overhead (~5 µs) stays small, and short enough that a completed vote waits little."""
        import time

        from ..kernels.greedy import look_ahead

        t0 = time.perf_counter()
        steps, exact, bound = look_ahead(self.heap, self.n_heap, self.off, self.env, self.st, self.sel, self.n_sel,
                                         (inv2h2, prune_d2), self.structs, self.aside,
                                         (self.ahead_steps, LOOK_AHEAD_MAX_PAIRS))
        dt = time.perf_counter() - t0
        if dt > LOOK_AHEAD_CALL_S:
            self.ahead_steps = max(1, self.ahead_steps // 2)
        elif dt < LOOK_AHEAD_CALL_S / 4 and steps == self.ahead_steps:
            self.ahead_steps = min(256, 2 * self.ahead_steps)
        self.pairs += int(exact)
        self.bound_pairs += int(bound)
        return steps > 0

    def settle_top(self, inv2h2, prune_d2):
        """(exact score, −global index) of this rank's top candidate where that is cheap (its
        state at most one pick behind), else (−inf, ...): ``kernels.greedy.settle_top``."""
        from ..kernels.greedy import settle_top

        c = int(self.heap[0]) if self.n_heap else -1
        value, exact, bound = settle_top(self.heap, self.n_heap, self.off, self.env, self.st, self.sel, self.n_sel,
                                         (inv2h2, prune_d2), self.structs, self.use_bounds, 1)
        self.pairs += int(exact)
        self.bound_pairs += int(bound)
        if value == -math.inf:
            return (-math.inf, -(2**62))
        return (float(value), -(self.first + c))

    def local_best(self, inv2h2, prune_d2, floor=-math.inf):
        """(score, −global index) of this rank's best live candidate, with an exact score, or
        (−inf, ...) when none is left or none can reach ``floor`` less the tie band (another
        rank holds a candidate scoring ``floor``: ``kernels.greedy.lazy_best``).
        Call inside the caller's ``threads`` context (entering one per step costs ~1 ms)."""
        from ..kernels.greedy import heap_build, lazy_best, refresh_all

        if not self.lazy and self.n_heap:
            # eager: every live structure, every environment, every step (the test oracle)
            self.pairs += int(refresh_all(self.heap[: self.n_heap].copy(), self.off, self.env, self.st, self.sel,
                                          self.n_sel, inv2h2, prune_d2, self.structs))
            heap_build(self.heap, self.n_heap, self.st_bound)
        c, exact, bound = lazy_best(self.heap, self.n_heap, self.off, self.env, self.st, self.sel, self.n_sel,
                                    (inv2h2, prune_d2), self.structs, self.scratch, self.use_bounds, floor)
        self.pairs += int(exact)
        self.bound_pairs += int(bound)
        if c < 0:
            return (-math.inf, -(2**62))
        return (float(self.st_bound[c]), -(self.first + int(c)))


def _eager_backend(comm, backend, y, offsets, entropies, plan: _PickPlan, centre, ref, sizes, threads, progress,
                   kernel):
    """The greedy through the kernel-backend protocol (``_EagerPicker``), in the one pick loop."""
    from ..metrics import backend_on
    from ..runtime import threads as thread_context

    be = backend_on(backend, comm)
    inv2h2, prune_d2 = kernel  # 1/(2h²) and the pruning distance²
    n_local = offsets.size - 1
    ent_local = entropies[plan.first_index:plan.first_index + n_local]
    n_prune = int(plan.all_counts.sum()) + (0 if ref is None else ref.shape[0])
    with thread_context(threads):
        picker = _EagerPicker(be, y, offsets, ent_local, plan.first_index, inv2h2, prune_d2, n_prune)
        if ref is not None:
            picker.fold_reference(_centred(ref, centre))
        order, scores = _pick_loop(comm, picker, plan, False, progress)
    eager = _eager_pair_count(order, plan.all_counts, None if ref is None else ref.shape[0], ref is not None)
    extra = {"sizes": sizes, "n_env_total": int(plan.all_counts.sum()), "backend": be.name,
             "precision": getattr(be, "precision", "float64"),
             "exact_rescored_structures": int(comm.reduce_sum(picker.recomputed_structures))}
    return GreedyResult(order, np.asarray(scores), entropies, eager, eager, extra=extra)
