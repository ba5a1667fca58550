"""`hpcquests compress` and `hpcquests aggregate` end to end on small generated datasets."""

import json
import os
import subprocess
import sys

import ase.io
import numpy as np
import pytest
from ase.calculators.singlepoint import SinglePointCalculator

import hpcquests as hq
from hpcquests import testing
from hpcquests.cli import main
from hpcquests.compress.msc import msc


def small_dataset(n=16, seed=0, forces=True):
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n):
        a = testing.perturbed_crystal("bcc", "Ta", size=(2, 2, 2), noise=rng.uniform(0.02, 0.2), seed=seed * 100 + i)
        if forces:
            a.calc = SinglePointCalculator(a, energy=float(rng.normal()), forces=rng.normal(size=(len(a), 3)))
        frames.append(a)
    return frames


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("compress")
    frames = small_dataset()
    ase.io.write(d / "data.extxyz", frames, parallel=False)
    return d, ase.io.read(d / "data.extxyz", ":", parallel=False)


def run_cli(*args):
    return main([str(a) for a in args])


def test_compress_writes_report_selections_and_plots(data, capsys):
    d, frames = data
    out = d / "out"
    assert run_cli("compress", d / "data.extxyz", "-o", out, "--method", "msc", "random", "fps",
                   "--size", "4", "0.5", "-k", 12, "--cutoff", 4.0, "--json", "-q") == 0
    rep = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rep["sizes"] == [4, 8] and rep["n_structures"] == 16
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk["selections"] == rep["selections"]
    descs = [hq.get_descriptors([a], k=12, cutoff=4.0) for a in frames]
    order = msc(descs, 8)
    for size in (4, 8):
        sel_dir = out / "selections" / "msc" / f"size_{size}"
        assert [int(v) for v in (sel_dir / "indices.txt").read_text().split()] == order[:size]
        sel = ase.io.read(sel_dir / "selected.extxyz", ":", parallel=False)
        assert len(sel) == size
        np.testing.assert_allclose(sel[0].positions, frames[order[0]].positions)
        np.testing.assert_allclose(sel[0].get_forces(), frames[order[0]].get_forces())
    rows = {(r["method"], r["size"]): r for r in rep["selections"]}
    assert set(rows) == {(m, s) for m in ("msc", "random", "fps") for s in (4, 8)}
    x_sel = np.concatenate([descs[i] for i in order[:8]])
    x_all = np.concatenate(descs)
    r = rows[("msc", 8)]
    assert r["n_envs"] == len(x_sel)
    assert r["entropy"] == pytest.approx(hq.entropy(x_sel), abs=1e-10)
    assert r["diversity"] == pytest.approx(hq.diversity(x_sel), abs=1e-10)
    assert r["overlap"] == pytest.approx(hq.overlap(x_all, x_sel), abs=1e-12)
    assert r["efficiency"] == pytest.approx(r["entropy"] / np.log(len(x_sel)))
    tail = r["force_tail"]
    assert len(tail["thresholds"]) == 4 and tail["full"][0] == pytest.approx(0.5, abs=0.02)
    assert rep["full"]["entropy"] == pytest.approx(hq.entropy(x_all), abs=1e-10)
    for name in ("report.md", "compress_curves.png", "structure_entropies.txt"):
        assert (out / name).stat().st_size > 0
    assert "| msc | 8 |" in (out / "report.md").read_text()
    assert not [p for p in os.listdir(out) if p.startswith(".")]


def test_structure_entropies_file_is_the_same_with_or_without_msc(data, tmp_path, capsys):
    """One H(S) routine: the report's per-structure entropies do not depend on the methods run."""
    d, frames = data
    for methods in (["msc"], ["fps"]):
        assert run_cli("compress", d / "data.extxyz", "-o", tmp_path / methods[0], "--method", *methods,
                       "--size", "4", "-k", 12, "--cutoff", 4.0, "-q", "--no-structures") == 0
    text = (tmp_path / "msc" / "structure_entropies.txt").read_text()
    assert text == (tmp_path / "fps" / "structure_entropies.txt").read_text()
    x, off = hq.get_descriptors(frames, k=12, cutoff=4.0), np.cumsum([0] + [len(a) for a in frames])
    values = np.loadtxt(tmp_path / "msc" / "structure_entropies.txt", ndmin=2)[:, -1]  # (index, kept, H)
    np.testing.assert_allclose(values, hq.structure_entropies(x, off), rtol=1e-10, atol=0)  # 12 digits written


@pytest.mark.parametrize("args, message", [
    (["--method", "magic"], "unknown method 'magic'"),
    (["--size", "0"], "size = 0 is out of range"),
    (["--size", "17"], "size = 17 is out of range"),
    (["--size", "1.5"], "a fraction must lie in (0, 1]"),
    (["--size", "ten"], "neither a count"),
])
def test_bad_arguments_name_the_cause(data, capsys, args, message):
    d, _ = data
    assert run_cli("compress", d / "data.extxyz", "-o", d / "bad", "-q", *args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (d / "bad" / "report.json").exists()


def test_missing_and_empty_datasets(tmp_path, capsys):
    assert run_cli("compress", tmp_path / "nope.extxyz", "-o", tmp_path / "o", "-q") == 2
    assert "nope.extxyz" in capsys.readouterr().err
    (tmp_path / "empty.extxyz").write_text("")
    assert run_cli("compress", tmp_path / "empty.extxyz", "-o", tmp_path / "o", "-q") == 2
    assert "empty" in capsys.readouterr().err


def test_aggregate_reports_failed_and_missing(data, tmp_path, capsys):
    d, _ = data
    good = []
    for i, seed in enumerate((1, 2)):
        ds = tmp_path / f"ds{i}.extxyz"
        ase.io.write(ds, small_dataset(10, seed=seed, forces=False), parallel=False)
        out = tmp_path / "res" / f"ds{i}"
        assert run_cli("compress", ds, "-o", out, "--size", "0.3", "-k", 8, "--cutoff", 4.0, "-q") == 0
        good.append(out)
    failed = tmp_path / "res" / "broken"
    failed.mkdir()
    (failed / "FAILED").write_text("task 7_2 exit 2: broken.parquet\nhpcquests compress: error: no positions column\n")
    missing = tmp_path / "res" / "never-ran"
    capsys.readouterr()
    assert run_cli("aggregate", *good, failed, missing, "-o", tmp_path / "agg", "--json") == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["datasets"] == 4 and res["rows"] == 2
    assert {f["dataset"]: f["status"] for f in res["failed"]} == {
        "broken": "failed: hpcquests compress: error: no positions column",
        "never-ran": "missing (no such directory)"}
    csv = (tmp_path / "agg" / "collection.csv").read_text().splitlines()
    assert csv[0].startswith("dataset,status") and len(csv) == 1 + 2 + 2
    assert "broken" in (tmp_path / "agg" / "collection.md").read_text()
    assert (tmp_path / "agg" / "collection.png").stat().st_size > 0
    assert run_cli("aggregate", *good, failed, "-o", tmp_path / "agg2", "--strict", "-q") == 2


def test_console_script_help():
    out = subprocess.run([sys.executable, "-m", "hpcquests", "compress", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "--method" in out.stdout and "--size" in out.stdout


def test_compress_config_is_validated_and_frozen(tmp_path):
    import dataclasses

    from hpcquests.compress.run import CompressConfig

    cfg = CompressConfig("data.extxyz", str(tmp_path), methods=["MSC", "fps", "msc"], sizes=[0.1, 5])
    assert cfg.methods == ("msc", "fps") and cfg.sizes == (0.1, 5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.h = 0.03
    with pytest.raises(ValueError, match="unknown method 'pca'"):
        CompressConfig("data.extxyz", str(tmp_path), methods=["pca"])
    with pytest.raises(TypeError):
        CompressConfig("data.extxyz", str(tmp_path), metods=["msc"])
