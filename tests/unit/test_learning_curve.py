"""hpcquests learning-curve (issue 21): the fit recovers a, b, c from synthetic curves; H of the
subsets and the information gap equal a brute-force calculation on small data; sizes, subsets
and bad input."""

import json

import ase.io
import numpy as np
import pytest
from scipy.optimize import least_squares

import hpcquests as hq
from hpcquests import testing
from hpcquests.cli import main
from hpcquests.datasets.learning_curve import analyse_learning_curve, asymptote_curve, fit_asymptote, \
    learning_curve_entropies, learning_curve_sizes, subset_order
from hpcquests.parallel import SerialComm

from .bruteforce import brute_entropy


@pytest.mark.parametrize("a, b, c", [(5.0, 5.0, 0.05), (8.2, 7.9, 0.02), (3.0, 2.5, 0.2), (6.5, 4.0, 0.01)])
def test_the_fit_recovers_a_b_c(a, b, c):
    sizes = learning_curve_sizes(100_000, 14)
    exact = fit_asymptote(sizes, asymptote_curve(sizes, a, b, c))
    assert exact["a"] == pytest.approx(a, rel=1e-6) and exact["b"] == pytest.approx(b, rel=1e-6)
    assert exact["c"] == pytest.approx(c, rel=1e-6)
    noisy = asymptote_curve(sizes, a, b, c)[:, None] + np.random.default_rng(7).normal(0, 0.002, (14, 6))
    res = analyse_learning_curve(sizes, noisy)
    fit = res["fit"]
    assert abs(fit["a"] - a) < max(4 * fit["a_stderr"], 0.02) and fit["b"] == pytest.approx(b, rel=0.02)
    assert fit["c"] == pytest.approx(c, rel=0.05) and res["fit_per_repeat"]["failed"] == 0
    assert 0 < res["asymptote_std"] < 0.1 and len(res["gap"]) == 14 and fit["determined"]
    assert res["asymptote_std"] == fit["a_stderr"] and res["gap_std"][5] > res["asymptote_std"]


def test_a_flat_curve_is_reported_as_undetermined():
    sizes = learning_curve_sizes(1000, 10)
    flat = 2.5 + np.random.default_rng(3).normal(0, 0.05, sizes.size)
    assert not fit_asymptote(sizes, flat)["determined"]


def test_the_fit_leaves_out_three_sizes_at_each_end():
    sizes = learning_curve_sizes(10_000, 10)
    y = asymptote_curve(sizes, 4.0, 3.0, 0.08)
    y[:3] += [5.0, -3.0, 2.0]
    y[-3:] -= 7.0
    assert fit_asymptote(sizes, y)["a"] == pytest.approx(4.0, rel=1e-6)


def test_sizes():
    assert learning_curve_sizes(1000, 12, 5).tolist() == [5, 8, 13, 21, 34, 56, 90, 146, 236, 382, 618, 1000]
    s = learning_curve_sizes(12, 10)
    assert s[0] == 1 and s[-1] == 12 and np.all(np.diff(s) > 0) and len(s) == 10
    for bad in ((9, 10), (1000, 9), (100, 10, 0)):
        with pytest.raises(ValueError):
            learning_curve_sizes(*bad)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """40 hot structures of 16 atoms: H keeps growing over the sizes."""
    frames = [testing.perturbed_crystal("bcc", "Ta", size=(2, 2, 2), noise=0.1, seed=s) for s in range(40)]
    path = tmp_path_factory.mktemp("lc") / "set.extxyz"
    ase.io.write(path, frames, parallel=False)
    xs = [hq.get_descriptors([a]) for a in ase.io.read(path, ":", parallel=False)]  # as written (8 decimals)
    return path, xs


def _brute_curve(xs, sizes, repeats, seed, unit):
    x = np.concatenate(xs)
    counts = [len(v) for v in xs]
    unit_of_row = np.repeat(np.arange(len(xs)), counts) if unit == "structures" else np.arange(len(x))
    n_units = len(xs) if unit == "structures" else len(x)
    H = np.empty((len(sizes), repeats))
    for r in range(repeats):
        perm = np.random.default_rng((seed, r)).permutation(n_units)  # the documented subset rule
        for k, n in enumerate(sizes):
            H[k, r] = brute_entropy(x[np.isin(unit_of_row, perm[:n])], 0.015)
    return H


def _brute_fit(sizes, H):
    """Weighted least squares on the mean curve (weights: the repeats' standard error, floored at
    a tenth of its median) and the standard error of a from the Jacobian: (a, b, c), σ_a."""
    n, y = np.asarray(sizes[3:-3], float), H.mean(axis=1)[3:-3]
    sem = H.std(axis=1, ddof=1)[3:-3] / np.sqrt(H.shape[1])
    w = np.maximum(sem, 0.1 * np.median(sem))
    fits = [least_squares(lambda p: (p[0] - p[1] * np.exp(-p[2] * np.log(n) ** 2) - y) / w, x0=(y.max(), 1.0, c0),
                          bounds=((-np.inf, 0, 0), (np.inf, np.inf, np.inf)), xtol=1e-15, ftol=1e-15, gtol=1e-15)
            for c0 in (0.01, 0.1, 1.0)]
    best = min(fits, key=lambda r: r.cost)
    return best.x, np.sqrt(np.linalg.inv(best.jac.T @ best.jac)[0, 0])


@pytest.mark.parametrize("unit", ["structures", "environments"])
def test_entropies_and_gap_equal_brute_force(small, unit, tmp_path, capsys):
    path, xs = small
    n_units = len(xs) if unit == "structures" else sum(map(len, xs))
    sizes = learning_curve_sizes(n_units, 14 if unit == "environments" else 12)
    want = _brute_curve(xs, sizes, 3, 4, unit)
    offsets = np.r_[0, np.cumsum([len(v) for v in xs])]
    got = learning_curve_entropies(SerialComm(), np.concatenate(xs), 0, offsets, sizes, repeats=3, seed=4, unit=unit)
    np.testing.assert_allclose(got["entropy"], want, rtol=1e-10, atol=1e-12)
    assert got["environments"][-1].tolist() == [offsets[-1]] * 3
    assert main(["learning-curve", str(path), "--unit", unit, "--sizes", str(len(sizes)), "--repeats", "3", "--seed", "4",
                 "-o", str(tmp_path), "--json", "-q"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert json.loads((tmp_path / "learning_curve.json").read_text())["gap"] == out["gap"]
    assert (tmp_path / "learning_curve.png").stat().st_size > 1000
    np.testing.assert_allclose(out["entropy"], want, rtol=1e-10, atol=1e-12)
    (a, b, c), sigma_a = _brute_fit(sizes, want)
    assert out["fit"]["a"] == pytest.approx(a, rel=1e-5) and out["fit"]["c"] == pytest.approx(c, rel=1e-4)
    np.testing.assert_allclose(out["gap"], a - want.mean(axis=1), rtol=1e-4, atol=1e-5)
    sem = want.std(axis=1, ddof=1) / np.sqrt(3)
    np.testing.assert_allclose(out["gap_std"], np.sqrt(sigma_a ** 2 + sem ** 2), rtol=1e-3)
    assert out["sizes"] == sizes.tolist() and out["fit_points"] == [3, len(sizes) - 3] and out["units"] == n_units


def test_subsets_are_nested_and_seeded():
    place = subset_order(50, 3, 1)
    assert sorted(place.tolist()) == list(range(50)) and np.array_equal(place, subset_order(50, 3, 1))
    assert not np.array_equal(place, subset_order(50, 3, 2))
    assert set(np.flatnonzero(place < 10)) < set(np.flatnonzero(place < 20))


@pytest.mark.parametrize("args, message", [
    (["--sizes", "9"], "DATA .*at least 10 sizes"),
    (["--sizes", "41"], "DATA .*40 units give fewer than 41 sizes .*try --unit environments"),
    (["--sizes", "10", "--repeats", "0"], "--repeats must be at least 1"),
    (["--min-size", "0"], "smallest size must be at least 1 \\(got 0\\)$"),
])
def test_bad_input_is_one_line(small, capsys, args, message):
    import re

    path, _ = small
    assert main(["learning-curve", str(path), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.search(message, err[0]), err


def test_copies_are_a_saturated_curve(tmp_path, capsys):
    """A dataset of copies of one structure: H is the same at every size, the asymptote is that H
    and the gap zero (not a fit through rounding noise)."""
    a = testing.perturbed_crystal("bcc", "Ta", size=(2, 2, 2), noise=0.05, seed=1)
    ase.io.write(tmp_path / "copies.extxyz", [a] * 12, parallel=False)
    assert main(["learning-curve", str(tmp_path / "copies.extxyz"), "--sizes", "10", "--json", "-q"]) == 0
    out = json.loads(capsys.readouterr().out)
    h = hq.entropy(hq.get_descriptors(ase.io.read(tmp_path / "copies.extxyz", 0, parallel=False)), 0.015)
    np.testing.assert_allclose(out["entropy"], h, rtol=1e-12)
    assert out["fit"]["determined"] and out["asymptote"] == pytest.approx(h, rel=1e-12)
    assert out["gap"] == pytest.approx([0.0] * 10, abs=1e-12)
