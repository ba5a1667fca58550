"""Baselines (random, k-means, mean-FPS, FPS, CCS, log-det): brute force, quests parity,
seeding, exact sizes, prefixes, bad input."""

import numpy as np
import pytest
from scipy.special import logsumexp

from hpcquests.compress import baselines
from hpcquests.compress.msc import msc

from .test_msc import H, dataset


@pytest.fixture(scope="module")
def descs():
    return dataset(n=20, seed=4)


def cdist(a, b):
    return np.sqrt(np.maximum(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1), 0.0))


@pytest.mark.parametrize("name", sorted(baselines.METHODS))
def test_exact_size_distinct_seeded(descs, name):
    fn = baselines.METHODS[name]
    for size in (1, 5, 0.5, len(descs)):
        sel = fn(descs, size, seed=3)
        want = size if isinstance(size, int) else round(size * len(descs))
        assert len(sel) == want and len(set(sel)) == want
        assert all(isinstance(i, int) and 0 <= i < len(descs) for i in sel)
        assert fn(descs, size, seed=3) == sel


@pytest.mark.parametrize("name", sorted(baselines.PREFIX_METHODS))
def test_prefix_methods_are_prefixes(descs, name):
    fn = baselines.METHODS[name]
    full = fn(descs, 12, seed=1)
    for s in (1, 4, 7):
        assert fn(descs, s, seed=1) == full[:s]


def test_random_depends_on_seed(descs):
    assert baselines.random_selection(descs, 8, seed=0) != baselines.random_selection(descs, 8, seed=1)


def test_mean_fps_brute_force_and_quests_parity(descs, monkeypatch):
    means = np.array([x.mean(0) for x in descs])
    for criterion in ("maxmin", "mean"):
        sel = baselines.mean_fps_selection(descs, 10, seed=5, criterion=criterion)
        chosen = [sel[0]]
        while len(chosen) < 10:
            d = cdist(means, means[chosen])
            score = d.min(1) if criterion == "maxmin" else d.mean(1)
            score[chosen] = -np.inf
            chosen.append(int(np.argmax(score)))
        assert sel == chosen
    q = pytest.importorskip("quests.compression.baseline")
    sel = baselines.mean_fps_selection(descs, 10, seed=5)
    monkeypatch.setattr(np.random, "randint", lambda lo, hi: sel[0])
    assert [int(i) for i in q.mean_fps(descs, None, 10)] == sel


def test_fps_matches_quests(descs):
    q = pytest.importorskip("quests.compression.fps")
    res = msc(descs, 1, details=True)
    for size in (3, 10, len(descs)):
        ours = baselines.fps_selection(descs, size, entropies=res.entropies)
        theirs = [int(i) for i in q.fps(descs, res.entropies.copy(), size)]
        assert ours == theirs
    # brute force: max-min of mean pairwise distances
    chosen = [int(np.argmax(res.entropies))]
    while len(chosen) < 8:
        score = np.array([min(cdist(descs[c], descs[j]).mean() for c in chosen) for j in range(len(descs))])
        score[chosen] = -np.inf
        chosen.append(int(np.argmax(score)))
    assert baselines.fps_selection(descs, 8, entropies=res.entropies) == chosen
    # entropies computed when not given: the same H(S) MSC uses
    assert baselines.fps_selection(descs, 8, h=H) == chosen


def test_kmeans_one_per_cluster_and_duplicates():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 6)) * 10
    descs = [c + rng.normal(scale=0.01, size=(3, 6)) for c in centres for _ in range(5)]
    sel = baselines.kmeans_selection(descs, 4, seed=2)
    assert sorted(i // 5 for i in sel) == [0, 1, 2, 3]  # one structure from each true cluster
    same = [np.ones((2, 3))] * 6 + [np.zeros((2, 3))] * 2  # 2 distinct means, size 5
    sel = baselines.kmeans_selection(same, 5, seed=0)
    assert len(set(sel)) == 5
    labels, _ = baselines.kmeans_labels(np.arange(10.0)[:, None], 3, seed=0)
    assert sorted(np.bincount(labels)) and np.bincount(labels, minlength=3).min() > 0


def brute_loo(descs, h=H):
    out = []
    for i, y in enumerate(descs):
        rest = np.concatenate([x for j, x in enumerate(descs) if j != i])
        d2 = ((y[:, None, :] - rest[None, :, :]) ** 2).sum(-1)
        out.append(float(np.mean(-logsumexp(-d2 / (2 * h * h), axis=1))))
    return np.array(out)


def test_ccs_default_score_is_leave_one_out_delta_entropy(descs, monkeypatch):
    from hpcquests.compress.msc import stack_structures

    x, off = stack_structures(descs)
    want = brute_loo(descs)
    got = baselines.leave_one_out_delta_entropy(x, off, H)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)
    monkeypatch.setattr(baselines, "_GROUP_ENVS", 1)  # every structure its own group
    np.testing.assert_allclose(baselines.leave_one_out_delta_entropy(x, off, H), want, rtol=1e-10, atol=1e-10)
    far = [np.zeros((2, 3)), np.full((3, 3), 5.0)]  # far apart: finite, ~ d²/2h²
    x, off = stack_structures(far)
    v = baselines.leave_one_out_delta_entropy(x, off, H)
    assert np.isfinite(v).all() and v[0] == pytest.approx(75 / (2 * H * H) - np.log(3), rel=1e-12)


def test_ccs_prunes_hardest_and_spreads_budget_over_strata():
    descs = [np.full((1, 2), float(i)) for i in range(20)]
    scores = np.array([0.0] * 10 + [5.0, 5.1, 5.2] + [9.0] * 7)  # strata (k=2): [0, 4.5), [4.5, 9]
    sel = baselines.ccs_selection(descs, 6, scores=scores, beta=0.1, strata=2, seed=0)
    assert 18 not in sel and 19 not in sel  # the two hardest; among equal scores the lowest indices stay
    low = [i for i in sel if scores[i] < 4.5]
    assert len(sel) == 6 and len(low) == 3
    # a small stratum takes all it has, the rest goes to the others
    scores = np.array([0.0] * 18 + [10.0, 10.0])
    sel = baselines.ccs_selection(descs, 8, scores=scores, beta=0.0, strata=4, seed=1)
    assert {18, 19} <= set(sel) and len(sel) == 8
    # beta lowered so that size structures remain
    sel = baselines.ccs_selection(descs, 20, scores=np.arange(20.0), beta=0.5, seed=0)
    assert sorted(sel) == list(range(20))


def test_logdet_greedy_brute_force(descs):
    x_all = np.concatenate(descs)
    d = x_all.shape[1]
    lam = 1e-6 * np.trace(np.cov(x_all.T, bias=True)) / d
    chosen = []
    for _ in range(6):
        best, best_v = None, -np.inf
        for j in range(len(descs)):
            if j in chosen:
                continue
            x = np.concatenate([descs[i] for i in chosen + [j]])
            sign, v = np.linalg.slogdet(np.cov(x.T, bias=True) + lam * np.eye(d))
            if sign > 0 and v > best_v + 1e-9 * abs(v):
                best, best_v = j, v
        chosen.append(best)
    assert baselines.logdet_selection(descs, 6) == chosen


@pytest.mark.parametrize("call, message", [
    (lambda d: baselines.random_selection(d, 0), "size = 0 is out of range"),
    (lambda d: baselines.kmeans_selection(d, 99), "size = 99 is out of range"),
    (lambda d: baselines.fps_selection([], 2), "empty"),
    (lambda d: baselines.ccs_selection(d, 2, beta=1.0), "beta must lie in [0, 1)"),
    (lambda d: baselines.ccs_selection(d, 2, scores=np.ones(3)), "scores must have shape (20,)"),
    (lambda d: baselines.fps_selection(d, 2, entropies=np.ones(2)), "entropies must have shape (20,)"),
    (lambda d: baselines.mean_fps_selection(d, 2, criterion="max"), "criterion must be"),
])
def test_bad_input(descs, call, message):
    with pytest.raises(ValueError) as err:
        call(descs)
    assert message in str(err.value)


def test_baselines_refuse_options_they_do_not_take():
    """An option a method does not take is an error (a misspelt option must not be ignored)."""
    from hpcquests.compress.baselines import METHODS

    descs = [np.random.default_rng(i).random((4, 5)) for i in range(6)]
    for name, fn in METHODS.items():
        with pytest.raises(TypeError):
            fn(descs, 2, seeed=1)
