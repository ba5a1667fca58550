"""δH, H, D, overlap: parity with a log-sum-exp brute force everywhere and with quests where its
δH < 700 (beyond that quests loses precision, then returns +inf)."""

import numpy as np
import pytest

import hpcquests as hq
from hpcquests import testing

from .bruteforce import brute_delta_entropy, brute_diversity, brute_entropy

TOL = 1e-10


def close(a, b, tol=TOL):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    assert a.shape == b.shape
    err = np.abs(a - b) / np.maximum(1.0, np.abs(b))
    assert err.max() <= tol, f"max scaled error {err.max():.3g}"


@pytest.fixture(scope="module")
def sets():
    ref = hq.get_descriptors([testing.perturbed_crystal("bcc", "Ta", size=(3, 3, 3), noise=n, seed=i)
                              for i, n in enumerate((0.03, 0.06))])
    test = hq.get_descriptors([testing.perturbed_crystal("bcc", "Ta", size=(3, 3, 3), noise=0.09, seed=9),
                               testing.with_vacancies(testing.perturbed_crystal("bcc", "Ta", size=(3, 3, 3), seed=8)),
                               testing.amorphous(n_atoms=40, seed=7)])
    return ref, test


def test_delta_entropy_vs_brute_and_quests(sets):
    from quests.entropy import delta_entropy as q_dh

    x, y = sets
    got = hq.delta_entropy(y, x, 0.015)
    close(got, brute_delta_entropy(y, x, 0.015))
    ref = q_dh(y, x, 0.015)
    ok = ref < 700
    assert ok.sum() > len(y) // 2
    close(got[ok], ref[ok])
    assert np.isfinite(got).all()


def test_multi_bandwidth_one_pass(sets):
    from quests.entropy import delta_entropy as q_dh

    x, y = sets
    hs = np.array([0.01, 0.015, 0.05, 0.1])
    got = hq.delta_entropy(y, x, hs)
    assert got.shape == (len(y), 4)
    close(got, brute_delta_entropy(y, x, hs))
    for j, h in enumerate(hs):
        close(got[:, j], hq.delta_entropy(y, x, float(h)), tol=1e-12)
    ref = q_dh(y, x, hs)  # quests returns (M, n_h) as well
    ref = ref if ref.shape == got.shape else ref.T
    ok = ref < 700
    close(got[ok], ref[ok])


def test_entropy_diversity(sets):
    from quests.entropy import diversity as q_div
    from quests.entropy import entropy as q_H

    x, y = sets
    both = np.concatenate([x, y])
    for data in (x, both):
        close(hq.entropy(data, 0.015), brute_entropy(data, 0.015))
        close(hq.entropy(data, 0.015), q_H(data, 0.015))
        close(hq.diversity(data, 0.015), brute_diversity(data, 0.015))
        close(hq.diversity(data, 0.015), q_div(data, 0.015))
    hs = np.array([0.015, 0.03])
    close(hq.entropy(both, hs), brute_entropy(both, hs))
    close(hq.diversity(both, hs), brute_diversity(both, hs))
    assert hq.efficiency(x) == pytest.approx(hq.entropy(x) / np.log(len(x)), rel=1e-14)


def test_overlap(sets):
    x, y = sets
    dh = brute_delta_entropy(y, x, 0.015)
    assert hq.overlap(y, x) == pytest.approx((dh < 1e-5).mean(), abs=0)
    assert hq.overlap(x, x) == 1.0
    assert hq.novelty(y, x) == pytest.approx(1 - (dh < 1e-5).mean())
    assert hq.overlap(y, x, eps=5.0) == pytest.approx((dh < 5.0).mean())


@pytest.mark.filterwarnings("ignore:divide by zero:RuntimeWarning")  # quests' log(0)
def test_far_environments_finite_and_ordered(sets):
    from quests.entropy import delta_entropy as q_dh

    x, _ = sets
    y = np.stack([x[0] + s for s in (0.2, 0.6, 1.0, 3.0, 30.0)])
    got = hq.delta_entropy(y, x, 0.015)
    assert np.isfinite(got).all()
    assert (np.diff(got) > 0).all()
    close(got, brute_delta_entropy(y, x, 0.015))
    assert np.isinf(q_dh(y, x, 0.015)[-3:]).all()  # where the reference gives up


def test_get_bandwidth():
    v = np.array([5.0, 10.896, 18.0, 40.0])
    expect = 0.0897141 * np.exp(-0.5 * (v / 10.896) ** 2) + 0.0119417
    assert np.allclose(hq.get_bandwidth(v), expect, rtol=1e-15, atol=0)
    assert hq.get_bandwidth(10.896) == pytest.approx(0.0897141 * np.exp(-0.5) + 0.0119417, rel=1e-15)


def test_metrics_thread_invariant(sets):
    x, y = sets
    a = hq.delta_entropy(y, x, threads=1)
    b = hq.delta_entropy(y, x, threads=2)
    assert np.array_equal(a, b)


def test_large_reference_blocks(sets):
    # more rows than one reference block and one query block
    x = testing.random_descriptors(5000, d=20, seed=1, scale=0.02)
    y = testing.random_descriptors(300, d=20, seed=2, scale=0.02)
    close(hq.delta_entropy(y, x, 0.02), brute_delta_entropy(y, x, 0.02))


@pytest.mark.filterwarnings("ignore:divide by zero:RuntimeWarning")  # quests' log(0)
def test_heterogeneous_sets_and_other_widths():
    # a varied reference (crystals, vacancies, amorphous, slabs) and very different queries
    # (a molecule: many of its environments are far from everything); also k = 8 (width 15)
    from quests.entropy import delta_entropy as q_dh
    from quests.entropy import entropy as q_H

    for k in (32, 8):
        x = hq.get_descriptors(testing.mixed_dataset(n_structures=6, seed=3), k=k)
        y = hq.get_descriptors([testing.molecule(n_atoms=30, seed=4), testing.amorphous(n_atoms=50, seed=5),
                                testing.perturbed_crystal("bcc", "Ta", size=(2, 2, 2), noise=0.1, seed=6)], k=k)
        assert x.shape[1] == y.shape[1] == 2 * k - 1
        hs = np.array([0.015, 0.04])
        got = hq.delta_entropy(y, x, hs)
        close(got, brute_delta_entropy(y, x, hs))
        assert np.isfinite(got).all()
        ref = q_dh(y, x, 0.015)
        ok = ref < 700
        assert ok.any() and (~ok).any()  # both regimes present
        close(got[ok, 0], ref[ok])
        close(hq.entropy(x, hs), brute_entropy(x, hs))
        close(hq.entropy(x, 0.015), q_H(x, 0.015))
        close(hq.diversity(np.concatenate([x, y]), hs), brute_diversity(np.concatenate([x, y]), hs))
        assert hq.efficiency(x, 0.015) == pytest.approx(brute_entropy(x, 0.015) / np.log(len(x)), rel=1e-10)
        for eps in (1e-5, 0.5, 3.0):
            assert hq.overlap(y, x, 0.015, eps=eps) == (brute_delta_entropy(y, x, 0.015) < eps).mean()


@pytest.mark.filterwarnings("ignore:divide by zero:RuntimeWarning")  # quests' log(0)
def test_far_shift_by_one_in_every_coordinate(sets):
    # the brief's far case: y = x + 1.0 everywhere is 1.0·sqrt(63) ≈ 7.9 from its source, so
    # quests' plain exp underflows to 0 (δH = inf); ours is the exact log-sum-exp value
    from quests.entropy import delta_entropy as q_dh

    x, y = sets
    far = np.concatenate([y[:20] + 1.0, y[:20] + 2.0])
    got = hq.delta_entropy(far, x, 0.015)
    assert np.isfinite(got).all()
    close(got, brute_delta_entropy(far, x, 0.015))
    assert np.isinf(q_dh(far, x, 0.015)).all()
    assert (got[20:] > got[:20]).all()  # farther → larger
    assert hq.overlap(far, x) == 0.0
    # δH ≈ d_min² / (2h²): magnitudes around 1e5 for these shifts
    d2 = ((far[:, None, :] - x[None, :, :]) ** 2).sum(-1).min(axis=1)
    assert np.all(got <= d2 / (2 * 0.015 ** 2) + 1e-9 * got)
