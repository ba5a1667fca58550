"""python -m hpcquests.trajectory under mpiexec -n 1..4: per-frame entropy (exact and sampled) and
δH against the first frame equal to the serial run within 1e-12, whole frames over ranks and
domain decomposition; the first frame's reference on the ring."""

import json

import pytest

from hpcquests import testing
from hpcquests.trajectory import trajectory_entropy

from .util import RANK_COUNTS, mpi_env, run_mpi

pytestmark = pytest.mark.mpi
OPTIONS = {"types": "1=Ta", "exact_atoms": 200, "sample_atoms": 60, "chunk_atoms": 40}
ARGS = ["--entropy", "--vs-first", "--types", "1=Ta", "--exact-atoms", "200", "--sample-atoms", "60",
        "--chunk-atoms", "40", "-q"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("trajmpi")
    frames = [testing.perturbed_crystal("bcc", "Ta", size=(3, 3, 3 + f % 2), noise=0.03 + 0.015 * f, seed=f)
              for f in range(5)]
    frames.insert(2, testing.defective_crystal(size=(5, 5, 5), seed=4))  # 250 atoms: sampled H
    testing.write_lammps_dump(d / "traj.lammpstrj", frames, ("id", "type", "x", "y", "z"), seed=9)
    serial = trajectory_entropy(d / "traj.lammpstrj", d / "serial", vs_first=True, **OPTIONS)
    return d, serial["frames"]


def check_same(got, want):
    assert [f["frame"] for f in got] == [f["frame"] for f in want]
    for a, b in zip(got, want):
        assert a["atoms"] == b["atoms"] and a["entropy_exact"] == b["entropy_exact"]
        assert a["entropy_sample"] == b["entropy_sample"]  # the same sample on any number of ranks
        for key in ("entropy", "entropy_stderr", "dH_vs_first_mean", "dH_vs_first_min", "dH_vs_first_max"):
            assert a[key] == pytest.approx(b[key], rel=1e-12, abs=1e-12), key
        assert a["novelty"] == b["novelty"]


@pytest.mark.parametrize("n", RANK_COUNTS)
@pytest.mark.parametrize("mode", ["frames", "domains", "ring"])
def test_ranks_and_modes_agree_with_serial(data, n, mode, tmp_path):
    d, want = data
    extra = {"frames": [], "domains": ["--frame-parallel-atoms", "0"], "ring": ["--ref-memory", "0"]}[mode]
    out = tmp_path / "out"
    res = run_mpi(n, ["-m", "hpcquests.trajectory", str(d / "traj.lammpstrj"), "--out", str(out), *ARGS, *extra],
                  timeout=240, env=mpi_env(n))
    assert res.returncode == 0, res.stdout + res.stderr
    summary = json.loads((out / "trajectory.json").read_text())
    assert summary["ranks"] == n
    expected_mode = "frames over ranks" if (mode == "frames" and n > 1 and n <= 5) else "domain decomposition per frame"
    assert summary["mode"] == expected_mode
    check_same(summary["frames"], want)


@pytest.fixture(scope="module")
def melt(tmp_path_factory):
    import ase.io

    d = tmp_path_factory.mktemp("trajclusters")
    frames = [testing.defective_crystal(size=(6, 6, 6), radius=r, noise=0.04, seed=i) for i, r in enumerate((4, 7))]
    frames += [testing.perturbed_crystal("bcc", "Ta", size=(5, 5, 5), noise=0.05 + 0.02 * i, seed=9 + i) for i in range(3)]
    testing.write_lammps_dump(d / "melt.lammpstrj", frames, ("id", "type", "x", "y", "z"), seed=4)
    ase.io.write(d / "solid.extxyz", [testing.perturbed_crystal("bcc", "Ta", size=(4, 4, 4), noise=0.05, seed=50)],
                 parallel=False)
    serial = trajectory_entropy(d / "melt.lammpstrj", d / "serial", entropy=False, types="1=Ta",
                                clusters=str(d / "solid.extxyz"))
    return d, serial


def _labels(path):
    from hpcquests.io import lammps

    return [(a.arrays["id"].tolist(), a.arrays["cluster"].astype(int).tolist(), a.arrays["dh"])
            for a in lammps.read_dump_frames(path, type_map={1: "Ta"})]


@pytest.mark.parametrize("n", RANK_COUNTS)
@pytest.mark.parametrize("mode", ["frames", "domains", "ring"])
def test_cluster_labels_are_the_same_on_any_rank_count(melt, n, mode, tmp_path):
    d, serial = melt
    extra = {"frames": [], "domains": ["--frame-parallel-atoms", "0"], "ring": ["--ref-memory", "0"]}[mode]
    out = tmp_path / "out"
    res = run_mpi(n, ["-m", "hpcquests.trajectory", str(d / "melt.lammpstrj"), "--out", str(out), "--types", "1=Ta",
                      "--clusters", str(d / "solid.extxyz"), "--chunk-atoms", "100", "-q", *extra],
                  timeout=240, env=mpi_env(n))
    assert res.returncode == 0, res.stdout + res.stderr
    summary = json.loads((out / "trajectory.json").read_text())
    for a, b in zip(summary["frames"], serial["frames"]):
        assert (a["n_clusters"], a["largest_cluster"], a["cluster_sizes"]) == \
            (b["n_clusters"], b["largest_cluster"], b["cluster_sizes"])
    got, want = _labels(summary["annotated_dump"]), _labels(serial["annotated_dump"])
    for (ids_a, lab_a, dh_a), (ids_b, lab_b, dh_b) in zip(got, want):
        assert ids_a == ids_b and lab_a == lab_b  # bitwise the same labels, lines in file order
        assert (abs(dh_a - dh_b) <= 1e-9 * (1 + abs(dh_b))).all()
    assert (out / "cluster_sizes.csv").read_text() == (d / "serial" / "cluster_sizes.csv").read_text()


def test_an_error_on_one_rank_is_one_line(data, tmp_path):
    """A frame with overlapping atoms: one error naming frame and atom id, every rank exits 2."""
    d, _ = data
    bad = testing.perturbed_crystal("bcc", "Ta", size=(3, 3, 3), seed=1)
    bad.positions[5] = bad.positions[4]
    testing.write_lammps_dump(d / "bad.lammpstrj", [testing.perturbed_crystal("bcc", "Ta", size=(3, 3, 3), seed=0),
                                                    bad], ("id", "type", "x", "y", "z"))
    res = run_mpi(2, ["-m", "hpcquests.trajectory", str(d / "bad.lammpstrj"), "--out", str(tmp_path / "o"),
                      "--entropy", "--types", "1=Ta", "-q", "--frame-parallel-atoms", "0"], timeout=120,
                  env=mpi_env(2))
    assert res.returncode == 2, res.stdout + res.stderr
    lines = [ln for ln in res.stderr.splitlines() if "error" in ln]
    assert len(lines) == 1 and "frame 1" in lines[0] and "overlapping atoms" in lines[0], res.stderr
