"""The lazy greedy's cheap float32 bound must never fall below the exact δH it stands in for.

The selection is only exact if every rejection is: a structure is set aside when the upper
bound of its best environment's δH falls below the running best, so the bound must be a true
upper bound of the *computed* exact value (the one the eager greedy would use), to within the
last bits (which the greedy's relative tie band of 1e-10 absorbs), whatever the data: far outliers (sums spanning hundreds of orders of magnitude), data far from the common
centre (float32 cancellation), few kept components (large trailing norms), identical rows,
and bounds extended after a partial exact fold.
"""

import math

import numpy as np
import pytest

import importlib
from hpcquests.kernels import greedy as G
from hpcquests.kernels.cpu import prune_exponent, squared_norms
from hpcquests.parallel.comm import SerialComm

msc_mod = importlib.import_module("hpcquests.compress.msc")  # the module, not the function


def _setup(env_x, sel_structs, r, h):
    """Centred/rotated fields as distributed_msc builds them."""
    centre = env_x[:4].mean(axis=0)
    r = min(r, env_x.shape[1])  # (narrow data keeps every component, as bound_rank has it)
    y = msc_mod._centred(env_x, centre)
    sel = [msc_mod._centred(s, centre) for s in sel_structs]
    axes, _ = msc_mod.principal_axes(SerialComm(), np.concatenate([y, *sel]))
    yn = squared_norms(y)
    yb = msc_mod.bound_fields(y, yn, axes, r)
    sel_x = np.ascontiguousarray(np.concatenate(sel))
    sel_xn = squared_norms(sel_x)
    sel_bt = np.zeros((r + 2, sel_x.shape[0] + G.LANES), dtype=np.float32)
    sel_bt[:, : sel_x.shape[0]] = msc_mod.bound_fields(sel_x, sel_xn, axes, r).T
    sel_off = np.concatenate([[0], np.cumsum([len(s) for s in sel])]).astype(np.int64)
    inv2h2 = 1.0 / (2 * h * h)
    prune = 2 * h * h * prune_exponent(sel_x.shape[0] + y.shape[0])
    return y, yn, yb, sel_x, sel_xn, sel_bt, sel_off, inv2h2, prune


def _exact_and_bound(env_x, sel_structs, r, h, exact_first):
    """(exact δH after all selected structures, bound after an exact fold of the first
    ``exact_first`` and cheap bounds over the rest), per environment."""
    y, yn, yb, sel_x, sel_xn, sel_bt, sel_off, inv2h2, prune = _setup(env_x, sel_structs, r, h)
    n, n_sel = y.shape[0], len(sel_structs)
    row, row32 = np.empty(G.COL_BLOCK), np.empty(G.COL_BLOCK + G.LANES, np.float32)
    fst, ist = G.new_state(n)
    fst2, ist2 = G.new_state(n)
    for e in range(n):
        G._exact_env(e, n_sel, y, yn, fst, ist, sel_x, sel_xn, sel_off, inv2h2, prune, row)
        if exact_first:
            G._exact_env(e, exact_first, y, yn, fst2, ist2, sel_x, sel_xn, sel_off, inv2h2, prune, row)
        upto = exact_first
        while upto < n_sel:  # uneven chunks, as the lazy greedy extends them
            upto = min(n_sel, upto + 1 + e % 3)
            G._bound_env(e, upto, yb, fst2, ist2, sel_bt, sel_off, inv2h2, row32)
    return fst[G.UB], fst2[G.UB]


def _brute_dh(env_x, sel_structs, h):
    from scipy.special import logsumexp

    x = np.concatenate(sel_structs)
    d2 = ((env_x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    return -logsumexp(-d2 / (2 * h * h), axis=1)


def _far_near_duplicates(rng):
    near = rng.normal(scale=0.01, size=(4, 8))
    far = 20.0 + rng.normal(scale=0.01, size=(24, 8))
    sel = [far[i:i + 4] + rng.normal(scale=1e-4, size=(4, 8)) for i in range(0, 24, 4)]
    return np.concatenate([near, far]), sel, 8, 0.01


def _exact_duplicates(rng):
    env = rng.normal(scale=0.001, size=(12, 8))
    return env, [env[0:4].copy(), env[4:8].copy(), env[8:12].copy()], 8, 0.1


CASES = {
    # name: (environments, selected structures, kept components r, h)
    "compact": lambda rng: (rng.normal(scale=0.03, size=(40, 24)),
                            [rng.normal(scale=0.03, size=(9, 24)) for _ in range(12)], 8, 0.015),
    "far_outliers": lambda rng: (np.concatenate([rng.normal(scale=0.03, size=(20, 16)),
                                                 rng.normal(loc=3.0, scale=0.03, size=(20, 16))]),
                                 [rng.normal(scale=0.03, size=(7, 16)) for _ in range(6)], 8, 0.015),
    "far_from_centre": lambda rng: (rng.normal(loc=40.0, scale=0.05, size=(30, 24)),
                                    [rng.normal(loc=40.0, scale=0.05, size=(5, 24)) for _ in range(8)], 8, 0.02),
    "wide_tail": lambda rng: (rng.normal(scale=0.05, size=(30, 64)),
                              [rng.normal(scale=0.05, size=(11, 64)) for _ in range(9)], 8, 0.05),
    "identical_rows": lambda rng: (np.tile(rng.normal(scale=0.03, size=(1, 20)), (12, 1)),
                                   [np.tile(rng.normal(scale=0.03, size=(1, 20)), (4, 1)) for _ in range(3)]
                                   + [np.zeros((3, 20))], 8, 0.01),
    # near-duplicates far from the common centre: float32 cancellation in |y|² + |x|² − 2y·x
    # is far larger than the distances, only the slack keeps the bound above
    "far_near_duplicates": lambda rng: _far_near_duplicates(rng),
    # every environment selected verbatim: terms of exactly 1, so the bound is tight to rounding
    "exact_duplicates": lambda rng: _exact_duplicates(rng),
    "full_rank": lambda rng: (rng.normal(scale=0.02, size=(25, 6)),
                              [rng.normal(scale=0.02, size=(5, 6)) for _ in range(7)], 8, 0.015),
}


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("exact_first", [0, 2])
def test_bound_never_below_exact(name, exact_first):
    rng = np.random.default_rng(abs(hash(name)) % 2**32)
    env_x, sel_structs, r, h = CASES[name](rng)
    d = -(-env_x.shape[1] // 4) * 4
    r = min(r, d)
    exact, bound = _exact_and_bound(env_x, sel_structs, r, h, exact_first)
    # the exact values are right (so the comparison means something; far from the common centre
    # the float64 |y|² + |x|² − 2y·x loses ~ε|y|²/(2h²) ≈ 1e-8 here) ...
    np.testing.assert_allclose(exact, _brute_dh(env_x, sel_structs, h), rtol=1e-12, atol=1e-7)
    # ... and no bound lies below them beyond the last bits: ub = m/(2h²) − log s is rounded like
    # the exact value (1 ulp ≈ 6e-11 at δH ≈ 3e5); the greedy's relative tie band (1e-10)
    # refreshes every candidate that close to the winner, so only this much is allowed
    slack = 1e-13 * np.maximum(1.0, np.abs(exact))
    assert np.all(bound >= exact - slack), (name, float((exact - bound).max()))
    assert np.isfinite(bound).all()


def test_bound_is_tight_on_compact_data():
    """A bound far above the exact value is still correct but makes the lazy greedy fold
    exactly: on compact data with a short trailing spectrum it stays within a few %."""
    rng = np.random.default_rng(7)
    basis = rng.normal(size=(8, 32))
    env_x = rng.normal(scale=0.02, size=(40, 8)) @ basis + rng.normal(scale=1e-4, size=(40, 32))
    sel = [rng.normal(scale=0.02, size=(9, 8)) @ basis + rng.normal(scale=1e-4, size=(9, 32)) for _ in range(10)]
    exact, bound = _exact_and_bound(env_x, sel, 8, 0.03, 0)
    assert np.all(bound >= exact - 1e-13)
    assert float(np.max(bound - exact)) < 0.1


def test_float32_reference_stays_representable():
    """The bound state's reference distance is kept float32-exact, from below."""
    for v in [0.0, 1e-3, 0.1234567891234, 3.0, 12345.678901]:
        f = G._float32_below(v)
        assert f <= v and float(np.float32(f)) == f and (v - f) <= abs(v) * 1.3e-7
    assert math.isfinite(G._float32_below(1e30))
