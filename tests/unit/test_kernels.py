"""Kernel-level tests: sorting network, polynomial exp, running log-sum-exp state, pruning bound,
thread context manager."""

import itertools
import math

import numba
import numpy as np
import pytest
from scipy.special import logsumexp

from hpcquests.kernels.descriptors import sorting_network
from hpcquests.kernels import cpu
from hpcquests.runtime import threads


def _apply(net, values):
    v = list(values)
    for a, b in net:
        if v[a] > v[b]:
            v[a], v[b] = v[b], v[a]
    return v


@pytest.mark.parametrize("n", range(2, 15))
def test_sorting_network_sorts_every_01_input(n):
    # 0-1 principle: a comparator network sorts everything iff it sorts all 0-1 inputs.
    net = sorting_network(n)
    assert net.shape[1] == 2 and (net[:, 0] < net[:, 1]).all() and net.max() < n
    for bits in itertools.product((0, 1), repeat=n):
        assert _apply(net, bits) == sorted(bits)


@pytest.mark.parametrize("n", [16, 17, 31, 32, 33, 48, 64])
def test_sorting_network_random_inputs(n):
    rng = np.random.default_rng(n)
    net = sorting_network(n)
    for _ in range(200):
        v = rng.normal(size=n)
        v[rng.random(n) < 0.3] = 0.0  # many equal zeros, as in padded rows
        assert _apply(net, v) == sorted(v)


@numba.njit
def _exp_many(a):
    out = np.empty_like(a)
    for i in range(a.size):
        out[i] = cpu._exp_neg(a[i])
    return out


def test_polynomial_exp_relative_error():
    a = np.concatenate([np.linspace(-64, 0, 200001), -np.logspace(-12, 1.8, 5000), [0.0, -64.0]])
    got = _exp_many(a)
    ref = np.exp(a)
    rel = np.abs(got - ref) / ref
    assert rel.max() < 3e-14, rel.max()  # the bound stated in hpcquests.kernels.cpu
    assert _exp_many(np.array([-1000.0]))[0] == pytest.approx(math.exp(-64.0), rel=1e-13)


def _state_logsum(y, x, hs, prune=True, exclude_offset=-1):
    inv = 1.0 / (2 * hs * hs)
    m = np.full(len(y), np.inf)
    s = np.zeros((len(y), len(hs)))
    prune_d2 = 2 * hs.max() ** 2 * cpu.prune_exponent(len(x)) if prune else np.inf
    cpu.kernel_logsum_update(y, cpu.squared_norms(y), x, cpu.squared_norms(x), inv, prune_d2, m, s, exclude_offset)
    return cpu.logsum_finalize(m, s, inv)


def _brute(y, x, hs):
    d2 = ((y[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    return np.stack([logsumexp(-d2 / (2 * h * h), axis=1) for h in hs], axis=1)


def test_running_state_is_order_and_block_independent():
    rng = np.random.default_rng(0)
    x = rng.normal(scale=0.05, size=(5000, 12))
    y = x[:300] + rng.normal(scale=0.01, size=(300, 12))
    hs = np.array([0.01, 0.015, 0.05])
    ref = _brute(y, x, hs)
    one = _state_logsum(y, x, hs)
    assert np.abs(one - ref).max() < 1e-11
    # fold the reference in three uneven pieces, in reverse order
    inv = 1.0 / (2 * hs * hs)
    m = np.full(len(y), np.inf)
    s = np.zeros((len(y), len(hs)))
    prune_d2 = 2 * hs.max() ** 2 * cpu.prune_exponent(len(x))
    for piece in (x[4100:], x[1234:4100], x[:1234]):
        cpu.kernel_logsum_update(y, cpu.squared_norms(y), piece, cpu.squared_norms(piece), inv, prune_d2, m, s, -1)
    folded = cpu.logsum_finalize(m, s, inv)
    assert np.abs(folded - one).max() < 1e-12


def test_pruning_error_within_stated_bound():
    rng = np.random.default_rng(1)
    x = rng.normal(scale=0.08, size=(6000, 20))
    y = np.concatenate([x[:200] + rng.normal(scale=0.02, size=(200, 20)), x[:50] + 0.3])
    hs = np.array([0.015])
    pruned = _state_logsum(y, x, hs, prune=True)
    exact = _state_logsum(y, x, hs, prune=False)
    assert np.abs(pruned - exact).max() <= math.exp(-cpu.PRUNE_MARGIN)


def test_far_queries_stay_finite_and_ordered():
    rng = np.random.default_rng(2)
    x = rng.normal(scale=0.05, size=(400, 8))
    y = np.stack([x[0] + d for d in (0.5, 1.0, 2.0, 10.0, 100.0)])
    L = _state_logsum(y, x, np.array([0.015]))[:, 0]
    assert np.isfinite(L).all()
    assert (np.diff(-L) > 0).all()
    ref = _brute(y, x, np.array([0.015]))[:, 0]
    assert np.allclose(L, ref, rtol=1e-12, atol=0)


def test_tiny_bandwidth_keeps_the_nearest_term():
    """With 2h²T below the last bit of the smallest distance (h ~ 1e-10 here), m + prune == m;
    the nearest term must still be kept (else every sum is 0 and δH = +inf)."""
    rng = np.random.default_rng(4)
    x = rng.normal(scale=0.05, size=(50, 6))
    y = x[:5] + 0.01
    hs = np.array([1e-10])
    L = _state_logsum(y, x, hs)[:, 0]
    assert np.isfinite(L).all()
    np.testing.assert_allclose(L, _brute(y, x, hs)[:, 0], rtol=1e-9)


def test_exclude_self_term():
    rng = np.random.default_rng(3)
    x = rng.normal(scale=0.05, size=(700, 6))
    hs = np.array([0.02])
    got = _state_logsum(x, x, hs, exclude_offset=0)
    d2 = ((x[:, None] - x[None]) ** 2).sum(-1)
    np.fill_diagonal(d2, np.inf)
    ref = logsumexp(-d2 / (2 * 0.02**2), axis=1)
    assert np.abs(got[:, 0] - ref).max() < 1e-11


def test_threads_context_restores():
    before = numba.get_num_threads()
    with threads(1) as n:
        assert n == 1 and numba.get_num_threads() == 1
    assert numba.get_num_threads() == before
    with pytest.raises(ValueError, match="threads"):
        with threads(-3):
            pass
    assert numba.get_num_threads() == before
