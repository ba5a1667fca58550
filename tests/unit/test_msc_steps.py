"""The pieces of the distributed greedy's step (compress.msc, kernels.greedy), each against the
plain lazy search on an identical state: the floor of the two-round step, the settled top
candidate of its first round, the look-ahead while waiting, and the in-place centring.
Their use on 1-4 ranks is tested in tests/mpi/test_msc_mpi.py."""

import copy
import importlib
import math

import numpy as np
import pytest

import hpcquests as hq
from hpcquests import testing
from hpcquests.kernels import greedy as G
from hpcquests.kernels.cpu import prune_exponent, squared_norms
from hpcquests.metrics import structure_entropies
from hpcquests.parallel.comm import SerialComm

M = importlib.import_module("hpcquests.compress.msc")  # the module (the package exports the function)

H = 0.015
INV2H2 = 1.0 / (2 * H * H)


@pytest.fixture(scope="module")
def dataset():
    frames = [testing.perturbed_crystal("bcc", "Ta", size=(2, 2, 2), noise=0.03 + 0.004 * i, seed=i) for i in range(40)]
    descs = [hq.get_descriptors([a]) for a in frames]
    x, off = M.stack_structures(descs)
    return x, off


def state_after(dataset, picks):
    """A one-rank lazy state (as ``distributed_msc`` builds it) with ``picks`` selected, and the
    pruning distance²."""
    x, off = dataset
    y = x - x[: off[1]].mean(axis=0)
    yn = squared_norms(y)
    axes, spectrum = M.principal_axes(SerialComm(), y)
    r = M.bound_rank(spectrum, y.shape[0], H, y.shape[1])
    ent = structure_entropies(x, off, H, checked=False)
    st = M._LazyState(y, yn, off, ent, 0, lazy=True, axes=axes, rank=r)
    for p in picks:
        st.append_selected(y[off[p]:off[p + 1]])
        st.remove(p)
    return st, 2 * H * H * prune_exponent(y.shape[0])


def best(st, prune_d2, floor=-math.inf):
    return st.local_best(INV2H2, prune_d2, floor)


def assert_heap(st):
    heap, n, b = st.heap, st.n_heap, st.st_bound
    for i in range(1, n):
        p = (i - 1) // 2
        assert b[heap[p]] > b[heap[i]] or (b[heap[p]] == b[heap[i]] and heap[p] < heap[i])
    assert sorted(heap[:n].tolist()) == np.flatnonzero(st.alive).tolist()


def test_floor_stops_the_search_only_below_the_step_best(dataset):
    st, prune = state_after(dataset, [0, 5, 9])
    free = copy.deepcopy(st)
    value, neg = best(free, prune)
    assert math.isfinite(value)
    # a floor at the best score itself: the same candidate, bitwise the same score
    floored = copy.deepcopy(st)
    assert best(floored, prune, value) == (value, neg)
    assert floored.pairs <= free.pairs
    # a floor above every candidate: nothing proposed, the heap still in order
    high = copy.deepcopy(st)
    assert best(high, prune, value + 1.0)[0] == -math.inf
    assert_heap(high)
    # ... and the next search from that state still finds the same best
    assert best(high, prune) == (value, neg)


def pick(st, p):
    st.remove(p)
    st.append_selected(st.env[0][st.off[p]:st.off[p + 1]])


def test_settled_top_is_the_exact_score_one_pick_behind(dataset):
    st, prune = state_after(dataset, [0, 5])
    value, neg = best(st, prune)
    c = -neg
    pick(st, 39 if c != 39 else 38)  # another structure joins C: c's exact state lags one pick
    assert st.heap[0] == c and st.st_folded[c] == st.n_sel - 1
    bid = st.settle_top(INV2H2, prune)
    assert bid[1] == -c and bid[0] <= value
    n_rows = st.sel_off[-1]
    exact = G.exact_scores(np.array([c]), st.off, st.env[0], st.env[1], st.sel_x[:n_rows], st.sel_xn[:n_rows],
                           st.sel_off, INV2H2, prune, st.ent)
    assert bid[0] == exact[0]  # bitwise: the same folds, in the same order
    assert st.st_folded[c] == st.n_sel
    assert_heap(st)
    # two picks behind: not cheap, no bid (and nothing done)
    top = int(st.heap[0])
    others = [i for i in np.flatnonzero(st.alive) if i != top][-2:]
    for p in others:
        pick(st, int(p))
    assert st.heap[0] == top
    pairs = st.pairs + st.bound_pairs
    if st.st_folded[top] < st.n_sel - 1:
        assert st.settle_top(INV2H2, prune)[0] == -math.inf
        assert st.pairs + st.bound_pairs == pairs


def test_look_ahead_changes_no_value_and_saves_the_next_search(dataset):
    st, prune = state_after(dataset, [0, 5, 9])
    best(st, prune)
    ahead = copy.deepcopy(st)
    calls = 0
    while ahead.look_ahead(INV2H2, prune):
        calls += 1
        assert_heap(ahead)
        assert calls < 10_000
    assert calls > 0
    # both pick the same next structure after the current best is taken
    assert st.heap[0] == ahead.heap[0]
    for s in (st, ahead):
        pick(s, int(s.heap[0]))
    before = (st.pairs + st.bound_pairs, ahead.pairs + ahead.bound_pairs)
    assert best(st, prune) == best(ahead, prune)
    assert ahead.pairs + ahead.bound_pairs - before[1] < st.pairs + st.bound_pairs - before[0]


def test_overwrite_x_centres_in_place_with_the_same_picks(dataset):
    x, off = dataset
    kept = M.distributed_msc(SerialComm(), x.copy(), off, 0, 12)
    donated = x.copy()
    res = M.distributed_msc(SerialComm(), donated, off, 0, 12, overwrite_x=True)
    assert res.order == kept.order and np.array_equal(res.scores, kept.scores)
    assert np.array_equal(donated, x - x[: off[1]].mean(axis=0))  # centred, in place
    frozen = x.copy()
    frozen.flags.writeable = False  # read-only: centred into a copy instead
    res = M.distributed_msc(SerialComm(), frozen, off, 0, 12, overwrite_x=True)
    assert res.order == kept.order and np.array_equal(frozen, x)
    # the serial entry point: the same scores, bit for bit
    listed = M.msc(np.split(x, off[1:-1]), 12, details=True)
    assert listed.order == kept.order and np.array_equal(listed.scores, kept.scores)


def test_non_finite_rows_are_found_across_blocks():
    x = np.zeros((50, 3))
    assert M._first_nonfinite_row(x, block=7) == -1
    x[23, 2] = np.nan
    x[40, 0] = np.inf
    assert M._first_nonfinite_row(x, block=7) == 23
    off = np.array([0, 20, 30, 50])
    with pytest.raises(ValueError, match="structure 1 environment 3 is not finite"):
        M.distributed_msc(SerialComm(), x, off, 0, 1, overwrite_x=True)
