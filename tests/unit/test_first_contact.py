"""Real datasets and first contact: species checks, LAMMPS types in every command, ColabFit
property rows (an export built to the exporter's schema), OVITO reading the annotated dump,
compile time reported apart, and docs/help that stand alone. Each failed on 1b2157d."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from ase.io import write

import hpcquests as hq
from hpcquests import testing
from hpcquests.cli import main as cli
from hpcquests.io.store import open_store, write_store
from hpcquests.cli.uq import main as uq_main

K, RC = 8, 4.0
ROOT = Path(__file__).resolve().parents[2]
OPTS = ["-k", str(K), "--cutoff", str(RC), "-q"]


def run(*args):
    return cli([str(a) for a in args])


def error_line(capsys):
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1, err
    return err[0]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("first")
    ta = [testing.perturbed_crystal("bcc", "Ta", size=(3, 3, 3), noise=0.05, seed=s) for s in range(3)]
    cu = [testing.perturbed_crystal("fcc", "Cu", size=(2, 2, 2), noise=0.05, seed=s) for s in range(2)]
    write(d / "ta.extxyz", ta, format="extxyz", parallel=False)
    write(d / "cu.extxyz", cu, format="extxyz", parallel=False)
    testing.write_lammps_dump(d / "ta.lammpstrj", ta, ("id", "type", "x", "y", "z"), seed=2)
    x = hq.get_descriptors(ta[:2], k=K, cutoff=RC)
    write_store(d / "ta.h5", x, [0, 54, 108], k=K, cutoff=RC, species=["Ta"])
    return d


# --------------------------------------------------------------------------- 1. species

def test_reference_of_other_species_is_refused_in_the_scan(data, tmp_path, capsys):
    """A Cu structure file scored a Ta trajectory (δH ≈ 265, no warning) on 1b2157d."""
    code = uq_main([str(data / "ta.lammpstrj"), str(data / "cu.extxyz"), "--out", str(tmp_path / "o"), "--types",
                    "1=Ta", *OPTS])
    assert code == 2
    msg = error_line(capsys)
    assert f"REF {data / 'cu.extxyz'} has species ['Cu'] but TRAJ {data / 'ta.lammpstrj'} has ['Ta']" in msg, msg


def test_dh_across_species_is_refused(data, capsys):
    assert run("dh", data / "ta.extxyz", data / "cu.extxyz", *OPTS) == 2
    assert "REF" in (msg := error_line(capsys)) and "['Cu']" in msg and "['Ta']" in msg
    assert run("overlap", data / "cu.extxyz", data / "ta.h5", *OPTS) == 2
    assert "['Ta']" in (msg := error_line(capsys)) and "['Cu']" in msg


# --------------------------------------------------------------------------- 2. LAMMPS types

def test_every_command_reads_dumps_with_types(data, tmp_path, capsys):
    """descriptors on a dump labelled type 1 as H on 1b2157d (and had no --types)."""
    assert run("descriptors", data / "ta.lammpstrj", "-o", tmp_path / "dump.h5", *OPTS) == 2
    assert "LAMMPS type 1 has no element" in error_line(capsys)
    assert run("descriptors", data / "ta.lammpstrj", "--types", "1=Ta", "-o", tmp_path / "dump.h5", *OPTS) == 0
    with open_store(tmp_path / "dump.h5") as s:
        assert s.species == ["Ta"] and s.n_env == 3 * 54
    # the scan accepts that store as its reference
    assert uq_main([str(data / "ta.lammpstrj"), str(tmp_path / "dump.h5"), "--out", str(tmp_path / "o"), "--types",
                    "1=Ta", *OPTS]) == 0
    with h5py.File(tmp_path / "o" / "dH.h5") as f:
        assert f["dH"].shape == (3 * 54,)
    capsys.readouterr()
    assert run("entropy", data / "ta.lammpstrj", "--types", "1=Ta", "--json", *OPTS) == 0
    got = json.loads(capsys.readouterr().out)
    want = hq.entropy(hq.get_descriptors(hq_frames(data), k=K, cutoff=RC), 0.015)
    assert got["entropy"] == pytest.approx(want, rel=1e-12)


def hq_frames(data):
    from hpcquests.io.lammps import read_dump_frames

    return read_dump_frames(data / "ta.lammpstrj", type_map={1: "Ta"})


# --------------------------------------------------------------------------- 3. ColabFit rows

@pytest.fixture(scope="module")
def export(tmp_path_factory):
    d = tmp_path_factory.mktemp("export")
    frames = testing.make_compression_dataset(n_ordinary=6, seed=4)
    testing.write_colabfit_export(d / "ds", frames)
    return d / "ds", frames


def test_export_without_labels_lists_the_methods(export, tmp_path, capsys):
    path, frames = export
    assert run("compress", path, "-o", tmp_path / "o", "--method", "fps", "--size", "3", *OPTS) == 2
    msg = error_line(capsys)
    assert re.search(r"configuration CO_0+: 2 rows with 2 distinct labels \(method=PBE, software=VASP; "
                     r"method=r2SCAN, software=VASP\): choose one with --labels", msg), msg


@pytest.mark.parametrize("method,shift", [("PBE", 0.0), ("r2SCAN", 1.0)])
def test_export_compresses_configurations_with_chosen_labels(export, tmp_path, method, shift):
    path, frames = export
    n = len(frames)
    assert run("compress", path, "-o", tmp_path / "o", "--method", "fps", "msc", "--size", n, "--labels",
               f"method={method}", *OPTS) == 0
    for m in ("fps", "msc"):
        d = tmp_path / "o" / "selections" / m / f"size_{n}"
        idx = [int(v) for v in (d / "indices.txt").read_text().split()]
        assert sorted(idx) == list(range(n))  # configurations, each once (FPS picked one twice on 1b2157d)
        ids = (d / "ids.txt").read_text().split()
        assert ids == [f"CO_{i:020d}" for i in idx]
        rows = [ln.split("\t") for ln in (d / "labels.tsv").read_text().splitlines()]
        assert rows[0] == ["configuration_id", "property_id", "method"]
        assert [r[0] for r in rows[1:]] == ids and {r[2] for r in rows[1:]} == {method}
        from ase.io import read

        sel = read(d / "selected.extxyz", ":", parallel=False)
        for i, a in zip(idx, sel):
            assert a.get_potential_energy() == pytest.approx(frames[i].get_potential_energy() + 100.0 * shift)
            # forces from the split chunks (one of them JSON text), concatenated in order
            assert np.allclose(a.get_forces(), frames[i].get_forces() + shift)


def test_other_commands_read_the_export(export, tmp_path, capsys):
    path, frames = export
    x = hq.get_descriptors(frames, k=K, cutoff=RC)
    capsys.readouterr()
    assert run("entropy", path, "--labels", "method=PBE", "--json", *OPTS) == 0
    assert json.loads(capsys.readouterr().out)["entropy"] == pytest.approx(hq.entropy(x, 0.015), rel=1e-12)
    assert run("descriptors", path, "--labels", "method=PBE", "-o", tmp_path / "s.h5", *OPTS) == 0
    with open_store(tmp_path / "s.h5") as s:
        assert np.array_equal(s.read("descriptors"), x)
    assert run("dh", path, tmp_path / "s.h5", "--labels", "method=PBE", "--json", *OPTS) == 0


def test_unreadable_export_layout_is_an_error(export, tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path, _ = export
    table = pq.read_table(path / "co" / "co_0.parquet")
    table = table.append_column("atomic_forces_extra", pa.array(["?"] * table.num_rows, pa.string()))
    (tmp_path / "bad" / "co").mkdir(parents=True)
    pq.write_table(table, tmp_path / "bad" / "co" / "co_0.parquet")
    assert run("compress", tmp_path / "bad", "-o", tmp_path / "o", "--labels", "method=PBE", *OPTS) == 2
    assert "cannot read the layout of column(s) atomic_forces_extra" in error_line(capsys)


# --------------------------------------------------------------------------- 4. OVITO

def test_ovito_reads_the_dh_column(data, tmp_path):
    ovito_io = pytest.importorskip("ovito.io", reason="the ovito package (pip) is not installed")
    assert uq_main([str(data / "ta.lammpstrj"), str(data / "ta.h5"), "--out", str(tmp_path / "o"), "--types", "1=Ta",
                    *OPTS]) == 0
    with h5py.File(tmp_path / "o" / "dH.h5") as f:
        want = {(int(fr), int(i)): float(v) for fr, i, v in zip(f["frame"][...], f["atom_id"][...], f["dH"][...])}
    pipeline = ovito_io.import_file(str(tmp_path / "o" / "ta_dH.lammpstrj"))
    assert pipeline.source.num_frames == 3
    for frame in range(3):
        particles = pipeline.compute(frame).particles
        assert "dh" in particles.keys()  # the name users type in OVITO, as the file writes it
        got = dict(zip(particles["Particle Identifier"][...].tolist(), particles["dh"][...].tolist()))
        assert all(abs(got[i] - want[(frame, i)]) <= 1e-9 * max(1.0, abs(want[(frame, i)])) for i in got)
        assert len(got) == 54


# --------------------------------------------------------------------------- 5. timing

def test_compile_time_is_reported_apart(data, tmp_path):
    assert run("compress", data / "ta.extxyz", "-o", tmp_path / "o", "--size", "2", *OPTS) == 0
    rep = json.loads((tmp_path / "o" / "report.json").read_text())
    assert set(rep["compile_s"]) == {"msc"} and rep["compile_s"]["msc"] >= 0.0
    assert "Kernel compilation" in (tmp_path / "o" / "report.md").read_text()


# --------------------------------------------------------------------------- 6. docs and help

def test_docs_stand_alone():
    texts = {p: p.read_text() for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]}
    texts.update({p: p.read_text() for p in (ROOT / "hpcquests").rglob("*.py")})
    for p, text in texts.items():
        assert "../shared" not in text and "DESIGN §" not in text and "papers/" not in text, p
    science = (ROOT / "docs" / "science.md").read_text()
    assert "10.1038/s41467-025-59232-0" in science and "arXiv:2511.10561" in science


def test_help_texts(capsys):
    with pytest.raises(SystemExit):
        cli(["--help"])
    out = capsys.readouterr().out
    assert "information-theoretic analysis of atomistic data" in out and "console script" not in out
    with pytest.raises(SystemExit):
        cli(["dh", "--help"])
    out = capsys.readouterr().out
    assert "the environments to score" in out and "the reference (training set)" in out and "--types" in out


def test_uq_json_and_quiet_results(data, tmp_path):
    env = dict(os.environ)
    args = [sys.executable, "-m", "hpcquests.uq", str(data / "ta.lammpstrj"), str(data / "ta.h5"), "--types", "1=Ta",
            "-k", str(K), "--cutoff", str(RC)]
    out = subprocess.run(args + ["--out", str(tmp_path / "a"), "--json", "-q"], capture_output=True, text=True,
                         env=env, timeout=120)
    assert out.returncode == 0 and json.loads(out.stdout)["atoms"] == 3 * 54 and out.stderr == ""
    out = subprocess.run(args + ["--out", str(tmp_path / "b"), "-q"], capture_output=True, text=True, env=env,
                         timeout=120)
    assert out.returncode == 0 and "162 atoms in 3 frame(s)" in out.stdout and out.stderr == ""


def test_aggregate_twice_ignores_its_own_output(data, tmp_path, capsys):
    res = tmp_path / "results"
    assert run("compress", data / "ta.extxyz", "-o", res / "ta", "--size", "2", *OPTS) == 0
    capsys.readouterr()
    for _ in range(2):
        dirs = sorted(str(p) for p in res.iterdir())
        assert run("aggregate", *dirs, "-o", res / "_collection", "--json", "-q") == 0
        got = json.loads(capsys.readouterr().out)
        assert got["datasets"] == 1 and got["failed"] == []


def test_bandwidth_says_which_to_use(capsys):
    assert run("bandwidth", "--volume", "18.0", "--json") == 0
    got = json.loads(capsys.readouterr().out)
    assert got["bandwidth"] == pytest.approx(0.0348639, rel=1e-5) and got["default_bandwidth"] == 0.015
    assert "keep the default h = 0.015 for dH" in got["advice"]


def test_index_past_the_end(data, capsys):
    assert run("entropy", data / "ta.extxyz", "--index", "5", *OPTS) == 2
    assert error_line(capsys).endswith(f"--index 5: {data / 'ta.extxyz'} has 3 frame(s) (0..2, or -3..-1)")


def test_readme_api_snippet_runs():
    text = (ROOT / "README.md").read_text()
    code = re.search(r"## Python API\n\n```python\n(.*?)```", text, re.S).group(1)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr


def test_demo_says_its_folder_is_temporary(tmp_path, monkeypatch, capsys):
    import tempfile

    from hpcquests.demo import DemoConfig, run_demo

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    run_demo(DemoConfig(out=None, small=True, threads=1))
    out = capsys.readouterr().out
    assert f"files in {tmp_path}/hpcquests-demo-" in out and "(a new temporary folder, not removed" in out


def test_read_structures_takes_the_types_text_of_the_command_line(tmp_path):
    from hpcquests.io.structures import read_structures

    path = tmp_path / "d.lammpstrj"
    testing.write_lammps_dump(path, [testing.perturbed_crystal("bcc", "Ta", size=(2, 2, 2), seed=1)])
    a, = read_structures(path, types="1=Ta")
    b, = read_structures(path, types={1: "Ta"})
    assert a.get_chemical_symbols() == b.get_chemical_symbols() == ["Ta"] * 16
    with pytest.raises(ValueError, match=r"--types: expected TYPE=ELEMENT, got '1:Ta'"):
        read_structures(path, types="1:Ta")
