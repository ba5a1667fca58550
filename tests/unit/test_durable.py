"""Durable writes (io.durable) and a full disk during a scan: an injected ENOSPC/EIO at each
step of a checkpoint write is an error (exit 74) before the chunk counts; a process killed at
each step leaves nothing that counts; the rerun completes bitwise equal to an uninterrupted run.
(On 1b2157d a full disk segfaulted the scan after renaming a failed chunk into the checkpoint.)"""

import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

import hpcquests as hq
from hpcquests import testing
from hpcquests.io import durable
from hpcquests.io.store import write_store
from hpcquests.cli.uq import main as uq_main

K, RC = 8, 4.0
COMMON = ["--types", "1=Ta", "-k", str(K), "--cutoff", str(RC), "--chunk-atoms", "20", "-q"]


@pytest.mark.parametrize("op", ["write", "fsync", "close", "rename"])
@pytest.mark.parametrize("err", ["ENOSPC", "EIO"])
def test_failed_step_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch, op, err):
    target = tmp_path / "f.bin"
    target.write_bytes(b"old")
    monkeypatch.setenv(durable.ENV, f"{op}={err}")
    durable._COUNTS.clear()
    with pytest.raises(OSError) as info:
        durable.write_durably(target, b"new" * 1000)
    assert info.value.errno == getattr(__import__("errno"), err)
    assert target.read_bytes() == b"old" and sorted(os.listdir(tmp_path)) == ["f.bin"]
    monkeypatch.delenv(durable.ENV)
    durable.write_durably(target, b"new")
    assert target.read_bytes() == b"new"


def test_hdf5_image_round_trip(tmp_path):
    a = np.arange(12.0).reshape(4, 3)
    durable.write_hdf5_durably(tmp_path / "c.h5", {"dH": a, "frame": np.arange(4)}, {"k": 8})
    with h5py.File(tmp_path / "c.h5") as f:
        assert np.array_equal(f["dH"][...], a) and f.attrs["k"] == 8 and list(f["frame"][...]) == [0, 1, 2, 3]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("durable")
    train = [testing.perturbed_crystal("bcc", "Ta", size=(3, 3, 3), noise=0.05, seed=s) for s in range(2)]
    x = hq.get_descriptors(train, k=K, cutoff=RC)
    write_store(d / "ref.h5", x, [0, 54, 108], k=K, cutoff=RC, species=["Ta"])
    frames = [testing.perturbed_crystal("bcc", "Ta", size=(3, 3, 3), noise=0.05 + 0.01 * f, seed=f) for f in range(2)]
    testing.write_lammps_dump(d / "md.lammpstrj", frames, ("id", "type", "x", "y", "z"), seed=4)
    out = d / "full"
    assert uq_main([str(d / "md.lammpstrj"), str(d / "ref.h5"), "--out", str(out), *COMMON]) == 0
    return d, out


def arrays(out):
    with h5py.File(os.path.join(out, "dH.h5")) as f:
        return {k: f[k][...] for k in ("dH", "frame", "atom_id", "timestep", "row")}


def assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert np.array_equal(a[k], b[k]), k


@pytest.mark.parametrize("fault", ["write#3=ENOSPC", "fsync#4=EIO", "close#5=ENOSPC", "rename#3=ENOSPC"])
def test_full_disk_during_a_scan(data, tmp_path, monkeypatch, capsys, fault):
    d, full = data
    monkeypatch.setenv(durable.ENV, fault)
    durable._COUNTS.clear()
    args = [str(d / "md.lammpstrj"), str(d / "ref.h5"), "--out", str(tmp_path / "o"), *COMMON]
    assert uq_main(args) == 74
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and "hpcquests.uq: error: [Errno" in err[0] and "(injected at" in err[0], err
    logged = (tmp_path / "o" / "checkpoint" / "computed-r00000.log").read_text().split("\n")[:-1] \
        if (tmp_path / "o" / "checkpoint" / "computed-r00000.log").exists() else []
    shards = sorted(p.name for p in (tmp_path / "o" / "dH.h5.shards").iterdir())
    assert len(shards) == len(logged)  # nothing counts that was not written completely
    assert not [n for n in os.listdir(tmp_path / "o" / "dH.h5.shards") if ".tmp-" in n]
    monkeypatch.delenv(durable.ENV)
    assert uq_main(args) == 0
    assert_same(arrays(tmp_path / "o"), arrays(full))


@pytest.mark.parametrize("step", ["write#3", "fsync#3", "rename#3", "rename#5"])
def test_killed_at_each_step_then_rerun(data, tmp_path, step):
    d, full = data
    args = [sys.executable, "-m", "hpcquests.uq", str(d / "md.lammpstrj"), str(d / "ref.h5"), "--out",
            str(tmp_path / "o"), *COMMON]
    env = dict(os.environ, **{durable.ENV: f"{step}=kill"})
    killed = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    assert killed.returncode == -9, killed.stderr
    assert not (tmp_path / "o" / "summary.json").exists()
    rerun = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    assert_same(arrays(tmp_path / "o"), arrays(full))
    leftovers = [n for d_ in ("dH.h5.shards", "checkpoint") for n in os.listdir(tmp_path / "o" / d_) if ".tmp-" in n]
    assert not leftovers  # removed by the rerun
