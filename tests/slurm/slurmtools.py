"""A throwaway single-node Slurm (slurmctld + slurmd) for the template tests.

Configured as DEVELOPERS.md asks: auth/none, cred/none, proctrack/linuxproc, task/none,
SlurmUser=root, state and spool in a temporary directory, NodeAddr=127.0.0.1, MpiDefault=pmi2.
Needs root and Debian's slurmctld/slurmd/slurm-client; otherwise the tests skip.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time

DAEMONS = ("slurmctld", "slurmd")
CLIENTS = ("sbatch", "srun", "scontrol", "sinfo", "squeue", "scancel")


def available() -> str | None:
    """None when a test cluster can be started, else the reason it cannot."""
    missing = [b for b in DAEMONS + CLIENTS if shutil.which(b) is None]
    if missing:
        return f"Slurm not installed ({', '.join(missing)} missing: apt-get install slurmctld slurmd slurm-client)"
    if os.geteuid() != 0:
        return "the test Slurm runs its daemons as root"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    def __init__(self, root: str):
        self.root = root
        self.conf = os.path.join(root, "slurm.conf")
        self.node = socket.gethostname().split(".")[0]
        self.env = dict(os.environ, SLURM_CONF=self.conf)
        self.procs = []

    def write_conf(self):
        for sub in ("state", "spool", "log"):
            os.makedirs(os.path.join(self.root, sub), exist_ok=True)
        cpus = os.cpu_count() or 1
        r = self.root
        text = f"""ClusterName=hpcq
SlurmctldHost={self.node}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/none
CredType=cred/none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=pmi2
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
ReturnToService=2
JobRequeue=1
MailProg=/bin/true
KillWait=5
MinJobAge=600
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool
SlurmctldPidFile={r}/slurmctld.pid
SlurmdPidFile={r}/slurmd.pid
SlurmctldLogFile={r}/log/slurmctld.log
SlurmdLogFile={r}/log/slurmd.log
NodeName={self.node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=1024 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
"""
        with open(self.conf, "w") as fh:
            fh.write(text)

    def start(self, timeout: float = 60):
        self.write_conf()
        self.procs.append(subprocess.Popen(["slurmctld", "-D", "-i", "-f", self.conf], env=self.env,
                                           stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT))
        time.sleep(1.0)
        self.procs.append(subprocess.Popen(["slurmd", "-D", "-f", self.conf, "-N", self.node], env=self.env,
                                           stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT))
        deadline = time.time() + timeout
        while time.time() < deadline:
            out = subprocess.run(["sinfo", "-h", "-o", "%t"], env=self.env, capture_output=True, text=True)
            if out.returncode == 0 and out.stdout.strip() in ("idle", "mix", "alloc"):
                return self
            if any(p.poll() is not None for p in self.procs):
                break
            time.sleep(0.5)
        self.stop()
        raise RuntimeError("test Slurm did not come up:\n" + self.logs())

    def logs(self) -> str:
        out = []
        for name in ("slurmctld.log", "slurmd.log"):
            path = os.path.join(self.root, "log", name)
            if os.path.exists(path):
                with open(path) as fh:
                    out.append(f"--- {name}\n" + "".join(fh.readlines()[-30:]))
        return "\n".join(out)

    def stop(self):
        subprocess.run(["scancel", "--user", "root"], env=self.env, capture_output=True)
        for p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        self.procs = []

    # --- jobs
    def sbatch(self, *args, cwd=None, env=None) -> int:
        out = subprocess.run(["sbatch", "--parsable", *map(str, args)], env={**self.env, **(env or {})}, cwd=cwd,
                             capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(f"sbatch failed: {out.stderr}")
        return int(out.stdout.strip().split(";")[0])

    def job(self, job_id: int) -> dict:
        out = subprocess.run(["scontrol", "show", "job", "-o", str(job_id)], env=self.env, capture_output=True,
                             text=True)
        fields = {}
        for tok in out.stdout.split():
            if "=" in tok:
                k, v = tok.split("=", 1)
                fields[k] = v
        return fields

    def wait_requeued(self, job_id: int, timeout: float = 600) -> dict:
        """Wait until a job that requeues itself has COMPLETED (another final state is returned
        too). slurmctld holds a requeued job back for a while (Reason=BeginTime); that wait only
        costs test time, so the job is made eligible at once."""
        return self.wait(job_id, timeout, states=("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL",
                                                  "OUT_OF_MEMORY"), release_held=True)

    def wait(self, job_id: int, timeout: float = 300, states=("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT",
                                                              "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED"),
             release_held: bool = False) -> dict:
        deadline = time.time() + timeout
        last = {}
        while time.time() < deadline:
            info = self.job(job_id)
            if info:
                last = info
                if info.get("JobState") in states:
                    return info
                if release_held and info.get("JobState") == "PENDING" and info.get("Reason") == "BeginTime":
                    subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], env=self.env,
                                   capture_output=True)
            time.sleep(0.5)
        raise TimeoutError(f"job {job_id} still {last.get('JobState')} after {timeout} s\n" + self.logs())
