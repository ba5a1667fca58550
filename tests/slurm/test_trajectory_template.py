"""slurm/trajectory.sbatch on the real single-node Slurm: it completes on 2 ranks with the serial
results, and a run stopped by USR2 checkpoints, exits 75, requeues itself and completes with the
same results, every frame computed once."""

import json
import os
import subprocess
import sys

import pytest

from hpcquests import testing

pytestmark = pytest.mark.slurm
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ARGS = "--entropy --vs-first --types 1=Ta -q --chunk-atoms 100"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("slurmtraj")
    frames = [testing.perturbed_crystal("bcc", "Ta", size=(4, 4, 4), noise=0.03 + 0.02 * i, seed=i) for i in range(6)]
    testing.write_lammps_dump(d / "traj.lammpstrj", frames, ("id", "type", "x", "y", "z"), seed=3)
    serial = subprocess.run([sys.executable, "-m", "hpcquests.trajectory", str(d / "traj.lammpstrj"), "--out",
                             str(d / "serial"), *ARGS.split()], capture_output=True, text=True)
    assert serial.returncode == 0, serial.stderr
    return d


def frames_of(out):
    return json.loads((out / "trajectory.json").read_text())["frames"]


def same(a, b):
    assert [f["frame"] for f in a] == [f["frame"] for f in b]
    for x, y in zip(a, b):
        for key in ("entropy", "dH_vs_first_mean", "novelty"):
            assert x[key] == pytest.approx(y[key], rel=1e-12, abs=1e-12), key


def submit(cluster, d, out, extra_env):
    env = {"TRAJ": str(d / "traj.lammpstrj"), "OUT": str(out), "PYTHON": sys.executable, "TRAJ_ARGS": ARGS,
           **extra_env}
    return cluster.sbatch("-n", 2, "--export", "ALL", "--output", d / f"{out.name}.log",
                          os.path.join(ROOT, "slurm", "trajectory.sbatch"), cwd=d, env=env)


def test_trajectory_template_completes(slurm_cluster, inputs):
    d = inputs
    job = submit(slurm_cluster, d, d / "plain", {})
    info = slurm_cluster.wait(job, timeout=300)
    log = (d / "plain.log").read_text()
    assert info["JobState"] == "COMPLETED", log + slurm_cluster.logs()
    assert json.loads((d / "plain" / "trajectory.json").read_text())["ranks"] == 2
    same(frames_of(d / "plain"), frames_of(d / "serial"))


def test_trajectory_template_requeues_on_signal(slurm_cluster, inputs):
    d = inputs
    # rank 0 raises USR2 in itself after 3 frames of every run: the first run checkpoints and exits 75
    job = submit(slurm_cluster, d, d / "requeued", {"HPCQUESTS_TEST_SIGNAL_AFTER": "3"})
    info = slurm_cluster.wait_requeued(job, timeout=600)
    log = (d / "requeued.log").read_text()
    assert int(info.get("Restarts", "0")) >= 1, log
    assert "requeueing job" in log and "checkpointed" in log
    same(frames_of(d / "requeued"), frames_of(d / "serial"))
    done = []
    for p in (d / "requeued" / "checkpoint").glob("computed-r*.log"):
        done += p.read_text().split()
    assert sorted(done) == sorted(set(done))  # every frame computed once over all the runs
