"""slurm/uq-cpu.sbatch on the real single-node Slurm: a scan that is stopped by a signal
(USR2, as --signal=USR2@90 sends) checkpoints, exits 75, requeues itself, and the rerun
completes with results equal to an uninterrupted serial scan."""

import json
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

import hpcquests as hq
from hpcquests import testing
from hpcquests.io.store import write_store

pytestmark = pytest.mark.slurm
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def scan_inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("slurmuq")
    train = [testing.perturbed_crystal("bcc", "Ta", size=(4, 4, 4), seed=s) for s in range(2)]
    x = hq.get_descriptors(train)
    write_store(d / "ref.h5", x, [0, len(x)], k=32, cutoff=5.0, species=["Ta"])
    testing.write_lammps_dump(d / "traj.lammpstrj", [testing.defective_crystal(size=(5, 5, 5), seed=1),
                                                     testing.perturbed_crystal("bcc", "Ta", size=(5, 5, 5), seed=2)],
                              ("id", "type", "x", "y", "z"), seed=3)
    serial = subprocess.run([sys.executable, "-m", "hpcquests.uq", str(d / "traj.lammpstrj"), str(d / "ref.h5"),
                             "--out", str(d / "serial"), "--types", "1=Ta", "-q"], capture_output=True, text=True)
    assert serial.returncode == 0, serial.stderr
    return d


def results(out_dir):
    with h5py.File(os.path.join(out_dir, "dH.h5")) as f:
        o = np.lexsort((f["atom_id"][...], f["frame"][...]))
        return f["frame"][...][o], f["atom_id"][...][o], f["dH"][...][o]


def submit(cluster, d, out, extra_env, template="uq-cpu.sbatch", sbatch_args=()):
    env = {"TRAJ": str(d / "traj.lammpstrj"), "REF": str(d / "ref.h5"), "OUT": str(out), "PYTHON": sys.executable,
           "UQ_ARGS": "--types 1=Ta --chunk-atoms 60 -q", **extra_env}
    # the whole environment travels with --export=ALL (values with spaces included)
    return cluster.sbatch("-n", 2, "--export", "ALL", "--output", d / f"{out.name}.log", *sbatch_args,
                          os.path.join(ROOT, "slurm", template), cwd=d, env=env)


def test_uq_cpu_template_completes(slurm_cluster, scan_inputs):
    d = scan_inputs
    job = submit(slurm_cluster, d, d / "plain", {})
    info = slurm_cluster.wait(job, timeout=300)
    log = (d / "plain.log").read_text()
    assert info["JobState"] == "COMPLETED", log + slurm_cluster.logs()
    summary = json.loads((d / "plain" / "summary.json").read_text())
    assert summary["ranks"] == 2
    a, b = results(d / "plain"), results(d / "serial")
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert np.abs(a[2] - b[2]).max() <= 1e-12 * max(1.0, np.abs(b[2]).max())


def test_uq_cpu_template_requeues_on_signal(slurm_cluster, scan_inputs):
    d = scan_inputs
    # rank 0 raises USR2 in itself after 5 chunks of every run: each run checkpoints and exits 75
    # until fewer than 5 chunks are left; the template requeues the job each time
    job = submit(slurm_cluster, d, d / "requeued", {"HPCQUESTS_TEST_SIGNAL_AFTER": "5"})
    info = slurm_cluster.wait_requeued(job, timeout=600)
    log = (d / "requeued.log").read_text()
    assert int(info.get("Restarts", "0")) >= 1, log
    assert "requeueing job" in log and "checkpointed" in log
    a, b = results(d / "requeued"), results(d / "serial")
    assert np.array_equal(a[1], b[1]) and np.abs(a[2] - b[2]).max() <= 1e-12 * max(1.0, np.abs(b[2]).max())
    # every chunk computed exactly once over all the runs
    for p in (d / "requeued" / "checkpoint").glob("computed-r*.log"):
        lines = p.read_text().split("\n")[:-1]
        assert len(lines) == len(set(lines))


def test_uq_gpu_template_runs_the_same_scan(slurm_cluster, scan_inputs):
    """The GPU template on a node without GPUs: its GPU request is overridden on the command line
    and BACKEND=auto falls back to the CPU; everything else (srun, ranks, outputs) is the template's."""
    d = scan_inputs
    job = submit(slurm_cluster, d, d / "gpu", {"BACKEND": "auto"}, template="uq-gpu.sbatch",
                 sbatch_args=("--gpus-per-task=0", "--cpus-per-task=1"))
    info = slurm_cluster.wait(job, timeout=300)
    log = (d / "gpu.log").read_text()
    assert info["JobState"] == "COMPLETED", log + slurm_cluster.logs()
    a, b = results(d / "gpu"), results(d / "serial")
    assert np.array_equal(a[1], b[1]) and np.abs(a[2] - b[2]).max() <= 1e-12 * max(1.0, np.abs(b[2]).max())
