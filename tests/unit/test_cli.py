"""The console script, in-process (fast) and once as a real subprocess."""

import json
import os
import subprocess
import sys

import ase.io
import h5py
import numpy as np
import pytest

import hpcquests as hq
from hpcquests import testing
from hpcquests.cli import main


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    train = [testing.perturbed_crystal("bcc", "Ta", size=(3, 3, 3), noise=0.05, seed=s) for s in range(3)]
    test = [testing.with_vacancies(testing.perturbed_crystal("bcc", "Ta", size=(3, 3, 3), seed=9)),
            testing.perturbed_crystal("bcc", "Ta", size=(3, 3, 3), noise=0.05, seed=10)]
    ase.io.write(d / "train.extxyz", train, parallel=False)
    ase.io.write(d / "test.extxyz", test, parallel=False)
    # compare with what the files hold (extxyz rounds positions to 1e-8 Å)
    train = ase.io.read(d / "train.extxyz", ":", parallel=False)
    test = ase.io.read(d / "test.extxyz", ":", parallel=False)
    return d, train, test


def run(capsys, *argv):
    rc = main(list(map(str, argv)))
    out, err = capsys.readouterr()
    return rc, out, err


def test_descriptors_store_and_entropy(files, capsys):
    d, train, _ = files
    rc, out, _ = run(capsys, "descriptors", d / "train.extxyz", "-o", d / "train.h5", "--rows-per-shard", 50, "--json")
    assert rc == 0
    info = json.loads(out)
    assert info["n_env"] == sum(len(a) for a in train) and info["width"] == 63
    x = hq.get_descriptors(train)
    with h5py.File(d / "train.h5") as f:  # plain h5py reads the master as one array
        assert np.array_equal(f["descriptors"][...], x)
        assert f.attrs["k"] == 32 and f.attrs["cutoff"] == 5.0
        assert "sha256:" in f.attrs["sources"] and "descriptors" in f.attrs["command"]
        assert f.attrs["n_shards"] == int(np.ceil(len(x) / 50))
    rc, out, _ = run(capsys, "entropy", d / "train.h5", "--json")
    assert rc == 0
    res = json.loads(out)
    assert res["entropy"] == pytest.approx(hq.entropy(x), rel=1e-13)
    assert res["diversity"] == pytest.approx(hq.diversity(x), rel=1e-13)
    rc, out, _ = run(capsys, "entropy", d / "train.extxyz", "-H", 0.01, 0.02, "--json")
    assert np.allclose(json.loads(out)["entropy"], hq.entropy(x, np.array([0.01, 0.02])), rtol=1e-13)


def test_dh_and_overlap(files, capsys, tmp_path):
    d, train, test = files
    x, y = hq.get_descriptors(train), hq.get_descriptors(test)
    expect = hq.delta_entropy(y, x)
    for suffix in ("npy", "h5", "txt"):
        out_path = tmp_path / f"dh.{suffix}"
        rc, out, _ = run(capsys, "dh", d / "test.extxyz", d / "train.extxyz", "-o", out_path, "--json")
        assert rc == 0
        got = (np.load(out_path) if suffix == "npy" else h5py.File(out_path)["dH"][...] if suffix == "h5"
               else np.loadtxt(out_path))
        assert np.allclose(got, expect, rtol=1e-12, atol=1e-12)
    summary = json.loads(out)["summary"]
    assert summary["max"] == pytest.approx(expect.max(), rel=1e-12)
    assert summary["fraction_positive"] == pytest.approx((expect > 0).mean())
    rc, out, _ = run(capsys, "overlap", d / "test.extxyz", d / "train.extxyz", "--json")
    assert json.loads(out)["overlap"] == pytest.approx(hq.overlap(y, x))


def test_bandwidth_info(files, capsys):
    d, train, _ = files
    rc, out, _ = run(capsys, "bandwidth", "--volume", 18.0, "--json")
    assert json.loads(out)["bandwidth"] == pytest.approx(hq.get_bandwidth(18.0))
    rc, out, _ = run(capsys, "bandwidth", d / "train.extxyz", "--json")
    assert json.loads(out)["volume_per_atom"] == pytest.approx(train[0].get_volume() / len(train[0]), rel=1e-2)
    rc, out, _ = run(capsys, "info", "--json")
    info = json.loads(out)
    assert rc == 0 and info["hpcquests"] == hq.__version__ and "cpu" in info["backends"]


def test_errors_are_one_line(files, capsys, tmp_path):
    d, _, _ = files
    rc, _, err = run(capsys, "entropy", tmp_path / "missing.xyz")
    assert rc == 2 and "missing.xyz: no such file" in err and "Traceback" not in err
    garbage = tmp_path / "garbage.xyz"
    garbage.write_text("this is not\na structure file\n")
    rc, _, err = run(capsys, "entropy", garbage)
    assert rc == 2 and "garbage.xyz" in err
    run(capsys, "descriptors", d / "train.extxyz", "-o", tmp_path / "ref.h5")
    rc, _, err = run(capsys, "dh", d / "test.extxyz", tmp_path / "ref.h5", "--cutoff", 4.0)
    assert rc == 2 and "ref.h5 was built with k=32, cutoff=5.0" in err
    rc, _, err = run(capsys, "dh", d / "test.extxyz", d / "train.extxyz", "-o", tmp_path / "nodir" / "x.npy")
    assert rc == 2 and "does not exist" in err
    assert not os.path.exists(tmp_path / "nodir")


def test_console_script_demo(tmp_path):
    exe = os.path.join(os.path.dirname(sys.executable), "hpcquests")
    cmd = [exe] if os.path.exists(exe) else [sys.executable, "-m", "hpcquests"]
    out = subprocess.run([*cmd, "demo", "--small", "--json", "--out", str(tmp_path)], capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    rows = {r["dataset"]: r for r in res["rows"]}
    assert rows["crystal, same temperature"]["novel_fraction"] < 0.05
    assert rows["amorphous"]["novel_fraction"] > 0.9
    assert os.path.exists(tmp_path / "train.h5")
    help_out = subprocess.run([sys.executable, "-m", "hpcquests", "--help"], capture_output=True, text=True)
    for sub in ("descriptors", "entropy", "dh", "overlap", "bandwidth", "info", "demo"):
        assert sub in help_out.stdout
