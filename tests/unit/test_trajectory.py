"""Trajectory analysis (hpcquests.trajectory): entropy per frame against a brute-force log-sum-exp,
δH against the first frame against the serial API, the sampled estimator against the exact
value, outputs, the command lines, bad input and resume after a signal."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from scipy.special import logsumexp

import hpcquests as hq
from hpcquests import testing
from hpcquests.cli import main as cli_main
from hpcquests.io import lammps
from hpcquests.trajectory import trajectory_entropy
from hpcquests.trajectory.analysis import sample_hashes, sample_mask

H = 0.015


def brute_entropy(x, h=H):
    d2 = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    return math.log(len(x)) - logsumexp(-d2 / (2 * h * h), axis=1).mean()


@pytest.fixture(scope="module")
def dump(tmp_path_factory):
    """Four frames as the trajectory reads them: a heating crystal, then a molten-core frame
    with another atom count (positions as written, so the references use the same numbers)."""
    d = tmp_path_factory.mktemp("traj")
    frames = [testing.perturbed_crystal("bcc", "Ta", size=(3, 3, 3), noise=0.02 + 0.03 * i, seed=i) for i in range(3)]
    frames.append(testing.defective_crystal(size=(4, 4, 4), seed=7))
    path = d / "traj.lammpstrj"
    testing.write_lammps_dump(path, frames, ("id", "type", "x", "y", "z"), seed=2)
    read = lammps.read_dump_frames(path, type_map={1: "Ta"})
    xs = [hq.get_descriptors(a) for a in read]
    return path, read, xs


def test_entropy_and_vs_first_match_brute_force_and_serial_api(dump, tmp_path):
    path, frames, xs = dump
    res = trajectory_entropy(path, tmp_path / "out", entropy=True, vs_first=True, types="1=Ta")
    assert [f["frame"] for f in res["frames"]] == [0, 1, 2, 3]
    for st, x, atoms in zip(res["frames"], xs, frames):
        assert st["atoms"] == len(atoms) and st["entropy_exact"] and st["entropy_stderr"] == 0
        assert st["entropy"] == pytest.approx(brute_entropy(x), rel=1e-9)
        dh = hq.delta_entropy(x, xs[0], H)
        assert st["dH_vs_first_mean"] == pytest.approx(dh.mean(), rel=1e-9, abs=1e-9)
        assert st["dH_vs_first_min"] == pytest.approx(dh.min(), rel=1e-9, abs=1e-9)
        assert st["dH_vs_first_max"] == pytest.approx(dh.max(), rel=1e-9, abs=1e-9)
        assert st["novelty"] == (dh >= 1e-5).mean()
        q = st["dH_vs_first_quantiles"]["p50"]
        assert abs(q - np.quantile(dh, 0.5, method="inverted_cdf")) <= st["dH_vs_first_quantile_resolution"]
    ent = [f["entropy"] for f in res["frames"]]
    assert ent[0] < ent[1] < ent[2]  # hotter crystals: higher entropy
    means = [f["dH_vs_first_mean"] for f in res["frames"]]
    assert means[0] < 0 and res["frames"][0]["novelty"] == 0 and means[3] > means[1]


def test_outputs_and_the_command_line(dump, tmp_path, capsys):
    path, frames, xs = dump
    out = tmp_path / "cli"
    assert cli_main(["trajectory", str(path), "--out", str(out), "--entropy", "--types", "1=Ta", "--json",
                     "-q"]) == 0
    printed = json.loads(capsys.readouterr().out)
    on_disk = json.loads((out / "trajectory.json").read_text())
    assert printed["frames"] == on_disk["frames"] and on_disk["ranks"] == 1 and on_disk["bandwidth"] == H
    assert "dH_vs_first_mean" not in on_disk["frames"][0]
    csv = (out / "trajectory.csv").read_text().splitlines()
    assert csv[0].split(",") == on_disk["columns"] and len(csv) == 5
    row = dict(zip(csv[0].split(","), csv[2].split(",")))
    assert float(row["entropy"]) == on_disk["frames"][1]["entropy"] and row["dH_vs_first_mean"] == ""
    assert (out / "trajectory.png").stat().st_size > 1000
    assert not os.path.exists(out / "trajectory.lock")
    # python -m hpcquests.trajectory: the same results
    mod = subprocess.run([sys.executable, "-m", "hpcquests.trajectory", str(path), "--out", str(tmp_path / "m"),
                          "--entropy", "--types", "1=Ta", "-q"], capture_output=True, text=True, timeout=120)
    assert mod.returncode == 0, mod.stderr
    assert json.loads((tmp_path / "m" / "trajectory.json").read_text())["frames"] == on_disk["frames"]
    assert "frame 3 (step" in mod.stdout


def test_bandwidth_auto_comes_from_the_first_frames_volume(dump, tmp_path):
    path, frames, xs = dump
    res = trajectory_entropy(path, tmp_path / "auto", types="1=Ta", bandwidth="auto", frames="1:3")
    h = hq.get_bandwidth(frames[1].get_volume() / len(frames[1]))
    assert res["bandwidth"] == pytest.approx(h, rel=1e-12) and res["bandwidth_option"] == "auto"
    assert [f["frame"] for f in res["frames"]] == [1, 2]
    assert res["frames"][0]["entropy"] == pytest.approx(brute_entropy(xs[1], h), rel=1e-9)


def test_sampled_entropy_is_within_three_standard_errors(tmp_path):
    """The estimator on 20 fixed seeds: |estimate − exact| ≤ 3 standard errors every time."""
    atoms = testing.defective_crystal(size=(6, 6, 6), seed=3)
    path = tmp_path / "big.lammpstrj"
    testing.write_lammps_dump(path, [atoms], ("id", "type", "x", "y", "z"), seed=1)
    x = hq.get_descriptors(lammps.read_dump_frames(path, type_map={1: "Ta"})[0])
    exact = brute_entropy(x)
    for seed in range(20):
        st = trajectory_entropy(path, tmp_path / f"s{seed}", types="1=Ta", exact_atoms=100, sample_atoms=80,
                                seed=seed)["frames"][0]
        assert not st["entropy_exact"] and st["entropy_sample"] == 80 and st["entropy_stderr"] > 0
        assert abs(st["entropy"] - exact) <= 3 * st["entropy_stderr"], (seed, st["entropy"], exact)


def test_sample_is_the_smallest_keys_whatever_the_split():
    from hpcquests.parallel import SerialComm

    ids = np.random.default_rng(0).permutation(np.arange(1, 5001))
    keys = sample_hashes(7, 3, ids)
    chosen = set(ids[sample_mask(SerialComm(), keys, 123)].tolist())
    assert chosen == set(ids[np.argsort(keys)[:123]].tolist())
    assert np.array_equal(sample_hashes(7, 3, ids[:10]), keys[:10])  # per atom: no dependence on the others
    assert not np.array_equal(sample_hashes(8, 3, ids), keys) and not np.array_equal(sample_hashes(7, 4, ids), keys)


@pytest.mark.parametrize("options, message", [
    ({"entropy": False}, "nothing to compute: give --entropy, --vs-first and/or --clusters REF"),
    ({"bandwidth": "wide"}, "--bandwidth must be a positive number or 'auto'"),
    ({"bandwidth": -1.0}, "--bandwidth must be a positive number or 'auto'"),
    ({"sample_atoms": 1}, "--sample-atoms must be >= 2"),
    ({"frames": "10:20"}, "--frames 10:20: selects no frame of TRAJ"),
    ({"types": "2=Ta"}, "LAMMPS type 1 has no element: pass --types 1=<element>"),
])
def test_bad_input_is_one_clear_error(dump, tmp_path, options, message):
    path = dump[0]
    kw = {"types": "1=Ta", **options}
    with pytest.raises(ValueError, match=message):
        trajectory_entropy(path, tmp_path / "bad", **kw)


def test_cli_bad_input_exits_2_with_one_line(tmp_path, capsys):
    assert cli_main(["trajectory", str(tmp_path / "missing.lammpstrj"), "--out", str(tmp_path / "o"),
                     "--entropy"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"hpcquests trajectory: error: TRAJ {tmp_path / 'missing.lammpstrj'}: no such file"]


def test_bandwidth_auto_needs_a_periodic_frame(tmp_path):
    mol = testing.perturbed_crystal("bcc", "Ta", size=(3, 3, 3), seed=1)
    mol.pbc = (True, True, False)
    path = tmp_path / "slab.lammpstrj"
    testing.write_lammps_dump(path, [mol], ("id", "type", "x", "y", "z"))
    with pytest.raises(ValueError, match="not periodic in every direction"):
        trajectory_entropy(path, tmp_path / "o", types="1=Ta", bandwidth="auto")


def _run_module(path, out, extra_env=None):
    env = dict(os.environ, **(extra_env or {}))
    return subprocess.run([sys.executable, "-m", "hpcquests.trajectory", str(path), "--out", str(out), "--entropy",
                           "--vs-first", "--types", "1=Ta", "-q"], capture_output=True, text=True, timeout=180,
                          env=env)


def test_stop_on_signal_then_resume_gives_the_same_results(dump, tmp_path):
    path = dump[0]
    whole = _run_module(path, tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr
    stopped = _run_module(path, tmp_path / "resumed", {"HPCQUESTS_TEST_SIGNAL_AFTER": "2"})
    assert stopped.returncode == 75, stopped.stderr
    assert "stopped" in stopped.stderr and not (tmp_path / "resumed" / "trajectory.json").exists()
    done = sorted(p.name for p in (tmp_path / "resumed" / "checkpoint").glob("frame-*.json"))
    assert done == ["frame-000000.json", "frame-000001.json"]
    again = _run_module(path, tmp_path / "resumed")
    assert again.returncode == 0, again.stderr
    a = json.loads((tmp_path / "whole" / "trajectory.json").read_text())["frames"]
    b = json.loads((tmp_path / "resumed" / "trajectory.json").read_text())["frames"]
    assert a == b
    computed = (tmp_path / "resumed" / "checkpoint" / "computed-r00000.log").read_text().split()
    assert sorted(computed) == ["0", "1", "2", "3"]
    # other options: refused, naming the difference
    other = subprocess.run([sys.executable, "-m", "hpcquests.trajectory", str(path), "--out",
                            str(tmp_path / "resumed"), "--entropy", "--types", "1=Ta", "-q"],
                           capture_output=True, text=True, timeout=120)
    assert other.returncode == 2 and "--vs-first differs" in other.stderr


@pytest.mark.parametrize("fault", ["write#2=ENOSPC", "fsync#3=EIO", "rename#2=ENOSPC"])
def test_full_disk_is_exit_74_and_a_rerun_completes(dump, tmp_path, monkeypatch, capsys, fault):
    """A full disk (injected in the one I/O layer, io.durable) while frames are checkpointed: one
    line and exit 74, nothing half-written counted; the rerun gives the uninterrupted results."""
    from hpcquests.cli.trajectory import main as traj_main
    from hpcquests.io import durable

    path = dump[0]
    args = [str(path), "--entropy", "--vs-first", "--types", "1=Ta", "-q"]
    assert traj_main([*args, "--out", str(tmp_path / "whole")]) == 0
    monkeypatch.setenv(durable.ENV, fault)
    durable._COUNTS.clear()
    capsys.readouterr()
    assert traj_main([*args, "--out", str(tmp_path / "o")]) == 74
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and "hpcquests.trajectory: error: [Errno" in err[0] and "(injected at" in err[0], err
    assert not (tmp_path / "o" / "trajectory.json").exists()
    for p in (tmp_path / "o" / "checkpoint").glob("frame-*.json"):
        json.loads(p.read_text())  # every checkpointed frame is whole
    monkeypatch.delenv(durable.ENV)
    assert traj_main([*args, "--out", str(tmp_path / "o")]) == 0
    a = json.loads((tmp_path / "whole" / "trajectory.json").read_text())["frames"]
    assert json.loads((tmp_path / "o" / "trajectory.json").read_text())["frames"] == a
    assert not [n for n in os.listdir(tmp_path / "o" / "checkpoint") if ".tmp-" in n]


@pytest.mark.parametrize("step", ["write#2", "rename#3"])
def test_killed_mid_write_then_rerun(dump, tmp_path, step):
    from hpcquests.io import durable

    path = dump[0]
    whole = _run_module(path, tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr
    killed = _run_module(path, tmp_path / "o", {durable.ENV: f"{step}=kill"})
    assert killed.returncode == -9, killed.stderr
    rerun = _run_module(path, tmp_path / "o")
    assert rerun.returncode == 0, rerun.stderr
    a = json.loads((tmp_path / "whole" / "trajectory.json").read_text())["frames"]
    assert json.loads((tmp_path / "o" / "trajectory.json").read_text())["frames"] == a
    assert not [n for n in os.listdir(tmp_path / "o" / "checkpoint") if ".tmp-" in n]  # removed by the rerun


def test_a_frame_with_nan_is_an_error_unless_skipped(dump, tmp_path):
    """A NaN position in frame 2 (found while reading, not while indexing): an error naming the
    file, frame, atom and line; with --skip-bad-frames the frame is listed as skipped. (Before
    this test it was skipped silently without the option.)"""
    path = dump[0]
    lines = path.read_text().split("\n")
    at = [i for i, ln in enumerate(lines) if ln.startswith("ITEM: ATOMS")][2] + 3
    parts = lines[at].split()
    parts[2] = "nan"
    lines[at] = " ".join(parts)
    bad = tmp_path / "nan.lammpstrj"
    bad.write_text("\n".join(lines))
    with pytest.raises(ValueError, match=rf"nan.lammpstrj frame 2: atom id {parts[0]}: position is not finite.*"
                                         rf"\(line {at + 1}\)"):
        trajectory_entropy(bad, tmp_path / "o", types="1=Ta")
    res = trajectory_entropy(bad, tmp_path / "s", types="1=Ta", skip_bad_frames=True)
    assert [f["frame"] for f in res["frames"]] == [0, 1, 3]
    assert [s["frame"] for s in res["skipped_frames"]] == [2] and "not finite" in res["skipped_frames"][0]["error"]


def test_a_reader_that_leaves_early_is_not_an_error(dump):
    """`python -m hpcquests.trajectory … | head -1`: the summary is printed after the agreement;
    a closed pipe there is not a traceback and not a failure (the scan's entry point shares it)."""
    proc = subprocess.run(f"{sys.executable} -m hpcquests.trajectory {dump[0]} --out {dump[0].parent}/pipe "
                          f"--entropy --types 1=Ta -q | head -1; exit ${{PIPESTATUS[0]}}", shell=True,
                          executable="/bin/bash", capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stdout.startswith("hpcquests trajectory: 4 frame(s)")
