"""Solid-like clusters in the trajectory analysis (--clusters REF): δH against the reference, the
clusters of the atoms below --cluster-eps equal to hpcquests.clusters on the frame, the sizes in
trajectory.json and cluster_sizes.csv, the annotated dump (read by OVITO), the classical
nucleation fit, and bad input."""

import json
import math

import numpy as np
import pytest

import hpcquests as hq
from hpcquests import testing
from hpcquests.io import lammps
from hpcquests.trajectory import trajectory_entropy
from hpcquests.trajectory.analysis import cnt_fit
from hpcquests.trajectory.config import TrajectoryConfig

H = 0.015


@pytest.fixture(scope="module")
def melt(tmp_path_factory):
    """Crystals with molten cores of growing radius (the solid shrinks), and a cold crystal as
    the solid reference."""
    d = tmp_path_factory.mktemp("clusters")
    frames = [testing.defective_crystal(size=(6, 6, 6), radius=r, noise=0.04, seed=i)
              for i, r in enumerate((3.0, 6.0, 8.0))]
    testing.write_lammps_dump(d / "melt.lammpstrj", frames, ("id", "type", "x", "y", "z"), seed=4)
    import ase.io

    ref = [testing.perturbed_crystal("bcc", "Ta", size=(4, 4, 4), noise=0.04, seed=50 + s) for s in range(2)]
    ase.io.write(d / "solid.extxyz", ref, parallel=False)
    ref = ase.io.read(d / "solid.extxyz", ":", parallel=False)  # as the analysis reads it
    return d, lammps.read_dump_frames(d / "melt.lammpstrj", type_map={1: "Ta"}), hq.get_descriptors(ref)


def annotated(path):
    """(ids, dh, cluster) per frame of an annotated dump, in file order."""
    out = []
    for a in lammps.read_dump_frames(path, type_map={1: "Ta"}):
        out.append((a.arrays["id"], a.arrays["dh"], a.arrays["cluster"].astype(np.int64)))
    return out


def test_clusters_equal_the_serial_api_on_each_frame(melt, tmp_path):
    d, frames, x_ref = melt
    res = trajectory_entropy(d / "melt.lammpstrj", tmp_path / "o", entropy=False, types="1=Ta",
                             clusters=str(d / "solid.extxyz"))
    ann = annotated(res["annotated_dump"])
    assert len(res["frames"]) == 3 == len(ann)
    largest = []
    for st, atoms, (ids, dh, lab) in zip(res["frames"], frames, ann):
        assert np.array_equal(ids, atoms.arrays["id"])
        want_dh = hq.delta_entropy(hq.get_descriptors(atoms), x_ref, H)
        assert np.allclose(dh, want_dh, rtol=1e-9, atol=1e-9)  # (10 digits written)
        mask = want_dh < 1e-5
        assert np.array_equal(lab, hq.clusters(atoms.positions, atoms.cell[:], atoms.pbc, mask, 3.0, ids=ids))
        sizes = np.bincount(lab)[1:]
        assert st["n_clusters"] == lab.max() and st["largest_cluster"] == sizes.max()
        assert st["clustered_atoms"] == mask.sum()
        assert st["cluster_sizes"] == [[int(s), int(c)] for s, c in zip(*np.unique(sizes, return_counts=True))]
        largest.append(st["largest_cluster"])
    assert largest[0] > largest[1] > largest[2] > 0  # the solid shrinks as the molten core grows
    csv = (tmp_path / "o" / "cluster_sizes.csv").read_text().splitlines()
    assert csv[0] == "frame,size,count" and len(csv) == 1 + sum(len(st["cluster_sizes"]) for st in res["frames"])
    assert res["cluster_cutoff"] == 3.0 and res["cluster_eps"] == 1e-5


def test_ovito_reads_the_cluster_columns(melt, tmp_path):
    ovito_io = pytest.importorskip("ovito.io", reason="the ovito package (pip) is not installed")
    d, frames, _ = melt
    res = trajectory_entropy(d / "melt.lammpstrj", tmp_path / "o", entropy=False, types="1=Ta",
                             clusters=str(d / "solid.extxyz"), frames="0:2")
    ann = annotated(res["annotated_dump"])
    pipeline = ovito_io.import_file(res["annotated_dump"])
    assert pipeline.source.num_frames == 2
    for f in range(2):
        p = pipeline.compute(f).particles
        # OVITO maps the column to its standard "Cluster" property (what its own cluster analysis writes)
        assert "dh" in p.keys() and "Cluster" in p.keys()
        got = dict(zip(p["Particle Identifier"][...].tolist(), p["Cluster"][...].tolist()))
        assert got == dict(zip(ann[f][0].tolist(), ann[f][2].tolist()))


def test_cnt_fit_recovers_the_model():
    """Cluster counts drawn exactly from log N_r = log N0 − 4πr³Δg/(3kT) − 4πr²γ/(kT)."""
    v, T, kb = 11.8, 1100.0, 8.617333262e-5
    gamma, dg, n0 = 0.012, -0.004, 5000.0
    frames = []
    for f in range(3):
        sizes = []
        for s in range(1, 40):
            r = (3 * s * v / (4 * math.pi)) ** (1 / 3)
            n = n0 * math.exp(-4 * math.pi * r ** 3 * dg / (3 * kb * T) - 4 * math.pi * r ** 2 * gamma / (kb * T))
            sizes.append([s, n])
        frames.append({"frame": f, "cluster_sizes": sizes})
    cfg = TrajectoryConfig("t", clusters="ref", cnt_volume=v, cnt_temperature=T, cnt_frames="1:")
    fit = cnt_fit(frames, cfg)
    assert fit["frames"] == [1, 2] and len(fit["sizes"]) == 39
    assert fit["gamma"] == pytest.approx(gamma, rel=1e-9) and fit["delta_g"] == pytest.approx(dg, rel=1e-9)
    assert math.exp(fit["log_n0"]) == pytest.approx(n0, rel=1e-9) and fit["gamma_err"] < 1e-9


def test_cnt_fit_through_the_command_line(melt, tmp_path, capsys):
    from hpcquests.cli import main

    d, _, _ = melt
    args = ["trajectory", str(d / "melt.lammpstrj"), "--types", "1=Ta", "-q", "--clusters", str(d / "solid.extxyz"),
            "--cnt-volume", "18.0", "--cnt-temperature", "2500", "--no-annotated-dump"]
    assert main([*args, "--out", str(tmp_path / "o"), "--cluster-eps", "2"]) == 0, capsys.readouterr().err
    summary = json.loads((tmp_path / "o" / "trajectory.json").read_text())
    fit = summary["cnt_fit"]
    assert {"gamma", "gamma_err", "delta_g", "delta_g_err"} <= set(fit) and fit["frames"] == [0, 1, 2]
    assert np.allclose(fit["fitted_log_n_r"], np.log(fit["n_r"]), atol=1e-6)  # 4 sizes, 3 parameters
    assert (tmp_path / "o" / "cnt_fit.png").stat().st_size > 1000 and "annotated_dump" not in summary
    capsys.readouterr()
    # the default threshold leaves 3 sizes here: one line naming the fit, exit 2
    assert main([*args, "--out", str(tmp_path / "p")]) == 2
    assert "the nucleation fit needs clusters of at least 4 different sizes in the frames analysed (3 found" in \
        capsys.readouterr().err


@pytest.mark.parametrize("options, message", [
    ({"clusters": "x", "cluster_cutoff": 6.0}, "--cluster-cutoff must be > 0 and at most --cutoff"),
    ({"cnt_volume": 10.0, "cnt_temperature": 300.0}, "the nucleation fit needs --clusters REF"),
    ({"clusters": "x", "cnt_volume": 10.0}, "the nucleation fit needs --clusters REF, --cnt-volume and"),
    ({"clusters": "x", "cnt_volume": 10.0, "cnt_temperature": -1.0}, "--cnt-temperature must be a positive"),
    ({"clusters": "x", "cnt_volume": 10.0, "cnt_temperature": 9.0, "cnt_frames": "3"}, "--cnt-frames must be"),
])
def test_bad_cluster_options(options, message):
    with pytest.raises(ValueError, match=message):
        TrajectoryConfig("t.lammpstrj", entropy=True, **options)


def test_missing_reference_is_one_clear_error(melt, tmp_path):
    d, _, _ = melt
    with pytest.raises(ValueError, match="--clusters .*nope.extxyz: no such file"):
        trajectory_entropy(d / "melt.lammpstrj", tmp_path / "o", types="1=Ta", clusters=str(d / "nope.extxyz"))
