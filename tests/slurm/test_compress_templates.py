"""slurm/compress-array.sbatch + aggregate.sbatch on the real single-node Slurm: a collection in
ColabFit's Parquet layout (one dataset broken), one array task per dataset (2 ranks each,
srun --mpi=pmi2), the aggregate after the array (afterany), and a resubmission that skips the
datasets already done."""

import json
import os
import subprocess
import sys

import pytest

import hpcquests as hq
from hpcquests import testing
from hpcquests.compress.msc import msc

pytestmark = pytest.mark.slurm
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ARGS = "--method msc random --size 0.25 0.5 -k 12 --cutoff 4.0"


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    d = tmp_path_factory.mktemp("collection")
    datasets = {}
    for i, name in enumerate(("alpha", "beta")):
        frames = testing.make_compression_dataset(n_ordinary=10, seed=i)
        testing.write_colabfit_parquet(d / name, frames)
        datasets[name] = frames
    gamma = testing.make_compression_dataset(n_ordinary=8, seed=7)
    import ase.io

    ase.io.write(d / "gamma.extxyz", gamma, parallel=False)
    datasets["gamma"] = gamma
    broken = d / "broken.parquet"
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"atomic_numbers": [[73, 73]], "energy": [1.0]}), broken)  # no positions
    manifest = d / "manifest.txt"
    manifest.write_text(f"# a generated collection\n{d / 'alpha'}\n\n{d / 'beta'}\n{d / 'gamma.extxyz'}\n{broken}\n")
    return d, manifest, datasets


def submit(cluster, manifest, out_root):
    env = {**cluster.env, "PYTHON": sys.executable, "COMPRESS_ARGS": ARGS}
    out = subprocess.run([os.path.join(ROOT, "slurm", "submit-compress.sh"), str(manifest), str(out_root), "-n", "2"],
                         env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    words = out.stdout.split()
    return int(words[1]), int(words[-1])


def array_states(cluster, array_id):
    out = subprocess.run(["scontrol", "show", "job", "-o", str(array_id)], env=cluster.env, capture_output=True,
                         text=True).stdout
    states = {}
    for line in out.splitlines():
        f = dict(tok.split("=", 1) for tok in line.split() if "=" in tok)
        if "ArrayTaskId" in f:
            states[f["ArrayTaskId"]] = (f["JobState"], f["ExitCode"])
    return states


def test_array_compresses_each_dataset_and_aggregates(slurm_cluster, collection):
    d, manifest, datasets = collection
    out_root = d / "results"
    array_id, agg_id = submit(slurm_cluster, manifest, out_root)
    info = slurm_cluster.wait(agg_id, timeout=600)
    logs = "".join(p.read_text() for p in sorted(out_root.glob("hpcquests-*.out")))
    assert info["JobState"] == "COMPLETED", logs + slurm_cluster.logs()
    states = array_states(slurm_cluster, array_id)
    assert states == {"0": ("COMPLETED", "0:0"), "1": ("COMPLETED", "0:0"), "2": ("COMPLETED", "0:0"),
                      "3": ("FAILED", "2:0")}, logs
    assert sorted(p.name for p in out_root.glob("hpcquests-compress-*.out")) == [
        f"hpcquests-compress-{array_id}_{i}.out" for i in range(4)]
    # every good dataset: report + selections; MSC equals the serial selection
    for name, frames in datasets.items():
        rep = json.loads((out_root / name / "report.json").read_text())
        assert rep["ranks"] == 2 and rep["n_structures"] == len(frames)
        descs = [hq.get_descriptors([a], k=12, cutoff=4.0) for a in frames]
        size = rep["sizes"][-1]
        got = [int(v) for v in (out_root / name / "selections" / "msc" / f"size_{size}" / "indices.txt").read_text().split()]
        assert got == msc(descs, size)
    failed = (out_root / "broken" / "FAILED").read_text()
    assert "positions" in failed and not (out_root / "broken" / "report.json").exists()
    import csv

    with open(out_root / "_collection" / "collection.csv", newline="") as fh:
        table = list(csv.DictReader(fh))
    assert sum(r["dataset"] == "alpha" and r["status"] == "ok" for r in table) == 4
    broken = [r["status"] for r in table if r["dataset"] == "broken"]
    assert len(broken) == 1 and broken[0].startswith("failed: hpcquests compress: error:") and "positions" in broken[0]
    assert "positions" in (out_root / "_collection" / "collection.md").read_text()

    # resubmission: the three finished datasets are skipped, the broken one fails again
    before = {name: (out_root / name / "report.json").stat().st_mtime_ns for name in datasets}
    array2, agg2 = submit(slurm_cluster, manifest, out_root)
    assert slurm_cluster.wait(agg2, timeout=600)["JobState"] == "COMPLETED"
    for i in range(3):
        assert "already done" in (out_root / f"hpcquests-compress-{array2}_{i}.out").read_text()
    assert {name: (out_root / name / "report.json").stat().st_mtime_ns for name in datasets} == before
    assert array_states(slurm_cluster, array2)["3"][0] == "FAILED"
