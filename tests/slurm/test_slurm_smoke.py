"""The real single-node Slurm works: batch jobs, srun --mpi=pmi2 with the mpich wheel, exit codes."""

import sys

import pytest

pytestmark = pytest.mark.slurm


def test_batch_job_completes(slurm_cluster, tmp_path):
    job = slurm_cluster.sbatch("--output", tmp_path / "out.txt", "--wrap", "hostname; echo done-ok", cwd=tmp_path)
    info = slurm_cluster.wait(job, timeout=120)
    assert info["JobState"] == "COMPLETED", slurm_cluster.logs()
    assert "done-ok" in (tmp_path / "out.txt").read_text()


def test_srun_pmi2_ranks(slurm_cluster, tmp_path):
    code = "from hpcquests.parallel import get_comm; c = get_comm(); print('rank', c.rank, c.size)"
    script = tmp_path / "job.sh"
    script.write_text(f"#!/bin/bash\nexport OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1\n"
                      f"srun --mpi=pmi2 -n 2 {sys.executable} -c \"{code}\"\n")
    job = slurm_cluster.sbatch("-n", 2, "--output", tmp_path / "out.txt", script, cwd=tmp_path)
    info = slurm_cluster.wait(job, timeout=180)
    out = (tmp_path / "out.txt").read_text()
    assert info["JobState"] == "COMPLETED", out + slurm_cluster.logs()
    assert sorted(ln for ln in out.splitlines() if ln.startswith("rank")) == ["rank 0 2", "rank 1 2"], out


def test_exit_code_reported(slurm_cluster, tmp_path):
    job = slurm_cluster.sbatch("--output", tmp_path / "o.txt", "--wrap", "exit 3", cwd=tmp_path)
    info = slurm_cluster.wait(job, timeout=120)
    assert info["JobState"] == "FAILED" and info["ExitCode"] == "3:0"
