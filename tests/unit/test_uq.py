"""The UQ scan in one process: parity with the API and quests, outputs, resume, bad inputs."""

import json
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

import hpcquests as hq
from hpcquests import testing
from hpcquests.io import lammps
from hpcquests.io.store import write_store
from hpcquests.cli.uq import main as uq_main


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("uq")
    train = [testing.perturbed_crystal("bcc", "Ta", size=(4, 4, 4), noise=0.05, seed=s) for s in range(3)]
    x = hq.get_descriptors(train)
    write_store(d / "ref.h5", x, np.concatenate([[0], np.cumsum([len(a) for a in train])]), k=32, cutoff=5.0,
                species=["Ta"])
    traj = [testing.defective_crystal(size=(5, 5, 5), seed=1),
            testing.perturbed_crystal("bcc", "Ta", size=(5, 5, 5), noise=0.07, seed=2)]
    testing.write_lammps_dump(d / "orth.lammpstrj", traj, ("id", "type", "x", "y", "z"), seed=5)
    tri = [testing.triclinic_crystal("Ta", size=(4, 4, 4), noise=0.06, shear=(0.2, 0.1, 0.15), seed=3)]
    testing.write_lammps_dump(d / "tri.lammpstrj", tri, ("id", "element", "xs", "ys", "zs"), seed=6)
    return d, x


def expected(path, x, type_map={1: "Ta"}):
    """(frame, id) → δH from the serial API on the frames as our reader parses them."""
    out = {}
    for f, atoms in enumerate(lammps.read_dump_frames(path, type_map=type_map)):
        dh = hq.delta_entropy(hq.get_descriptors(atoms), x)
        for i, v in zip(atoms.arrays["id"], dh):
            out[(f, int(i))] = v
    return out


def result(out_dir):
    with h5py.File(os.path.join(out_dir, "dH.h5")) as f:
        return {(int(a), int(b)): v for a, b, v in zip(f["frame"][...], f["atom_id"][...], f["dH"][...])}


def run(*args):
    return uq_main([str(a) for a in args])


@pytest.mark.parametrize("dump,types", [("orth.lammpstrj", "1=Ta"), ("tri.lammpstrj", None)])
def test_scan_matches_api_and_quests(data, tmp_path, dump, types, capsys):
    from quests.descriptor import get_descriptors as q_desc
    from quests.entropy import delta_entropy as q_dh

    d, x = data
    args = [d / dump, d / "ref.h5", "--out", tmp_path / "out", "--chunk-atoms", 150, "-q"]
    if types:
        args += ["--types", types]
    assert run(*args) == 0
    got = result(tmp_path / "out")
    exp = expected(d / dump, x)
    assert got.keys() == exp.keys()
    err = max(abs(got[key] - exp[key]) / max(1.0, abs(exp[key])) for key in exp)
    assert err <= 1e-12
    # quests on the same atoms, where its δH < 700
    for f, atoms in enumerate(lammps.read_dump_frames(d / dump, type_map={1: "Ta"})):
        ref = q_dh(q_desc([atoms]), x)
        mine = np.array([got[(f, int(i))] for i in atoms.arrays["id"]])
        ok = ref < 700
        assert ok.sum() > 10
        assert np.abs(mine[ok] - ref[ok]).max() <= 1e-10 * max(1.0, np.abs(ref[ok]).max())
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["atoms"] == len(exp)
    fr0 = summary["frames"][0]
    vals = np.array([v for (f, _), v in got.items() if f == 0])
    assert fr0["mean"] == pytest.approx(vals.mean(), rel=1e-12)
    assert fr0["max"] == pytest.approx(vals.max(), rel=1e-12)
    assert fr0["fraction_above"]["0"] == pytest.approx((vals > 0).mean())
    q50 = np.quantile(vals, 0.5, method="inverted_cdf")  # the definition documented in uq.stats
    assert abs(fr0["quantiles"]["p50"] - q50) <= fr0["quantile_resolution"]
    assert (tmp_path / "out" / "dH_hist.png").stat().st_size > 1000


def test_annotated_dump_keeps_columns_and_order(data, tmp_path):
    d, x = data
    assert run(d / "orth.lammpstrj", d / "ref.h5", "--out", tmp_path / "o", "--types", "1=Ta", "-q") == 0
    ann = tmp_path / "o" / "orth_dH.lammpstrj"
    infos, _ = lammps.index_dump(ann)
    src, _ = lammps.index_dump(d / "orth.lammpstrj")
    assert len(infos) == len(src) and infos[0].columns == src[0].columns + ["dh"]
    got = result(tmp_path / "o")
    for f, info in enumerate(infos):
        part = lammps.read_atom_bytes(ann, info)
        orig = lammps.read_atom_bytes(d / "orth.lammpstrj", src[f])
        assert np.array_equal(part["ids"], orig["ids"])  # file order kept
        assert np.array_equal(part["positions"], orig["positions"])
        dh = part["columns"]["dh"]
        assert np.allclose(dh, [got[(f, int(i))] for i in part["ids"]], rtol=1e-9, atol=1e-9)
    import ase.io

    frames = ase.io.read(ann, index=":", format="lammps-dump-text", parallel=False)  # what OVITO-like readers see
    assert len(frames) == 2


@pytest.mark.parametrize("columns", [("id", "type", "x", "y", "z"), ("type", "xu", "yu", "zu")])
def test_read_block_size_does_not_change_results(data, tmp_path, columns):
    """The read + exchange streamed in blocks of a few lines gives the same store, annotated dump
    and statistics as one block; without an id column the rows number the atoms."""
    d, x = data
    traj = [testing.defective_crystal(size=(4, 4, 4), seed=11),
            testing.perturbed_crystal("bcc", "Ta", size=(4, 5, 4), noise=0.06, seed=12)]
    dump = tmp_path / "t.lammpstrj"
    testing.write_lammps_dump(dump, traj, columns, seed=13)
    common = [dump, d / "ref.h5", "--types", "1=Ta", "--chunk-atoms", 70, "-q"]
    assert run(*common, "--out", tmp_path / "one", "--read-block", "1G") == 0
    assert run(*common, "--out", tmp_path / "many", "--read-block", "300") == 0
    with h5py.File(tmp_path / "one" / "dH.h5") as a, h5py.File(tmp_path / "many" / "dH.h5") as b:
        for name in ("dH", "atom_id", "row", "frame", "timestep"):
            assert np.array_equal(a[name][...], b[name][...]), name
    assert (tmp_path / "one" / "t_dH.lammpstrj").read_bytes() == (tmp_path / "many" / "t_dH.lammpstrj").read_bytes()
    sa = json.loads((tmp_path / "one" / "summary.json").read_text())
    sb = json.loads((tmp_path / "many" / "summary.json").read_text())
    assert sa["frames"] == sb["frames"]
    got, exp = result(tmp_path / "many"), expected(dump, x)
    assert got.keys() == exp.keys()
    assert max(abs(got[k] - exp[k]) / max(1.0, abs(exp[k])) for k in exp) <= 1e-12


def test_memtrace_reports_phases(data, tmp_path, monkeypatch, capsys):
    from hpcquests.uq.scan import _vm_status

    if _vm_status() is None:
        pytest.skip("no /proc/self/status")
    d, _ = data
    monkeypatch.setenv("HPCQUESTS_UQ_MEMTRACE", "1")
    assert run(d / "orth.lammpstrj", d / "ref.h5", "--out", tmp_path / "o", "--types", "1=Ta", "-q") == 0
    err = capsys.readouterr().err
    for phase in ("read + exchange: counts pass", "read + exchange: data pass", "binning", "annotated dump"):
        assert f"] rank 0 {phase}: peak " in err, err
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["peak_rss_mib_per_rank"][0] > 50


def test_interrupted_scan_resumes_identically(data, tmp_path, monkeypatch):
    d, x = data
    common = [d / "orth.lammpstrj", d / "ref.h5", "--types", "1=Ta", "--chunk-atoms", 100, "-q"]
    assert run(*common, "--out", tmp_path / "full") == 0
    monkeypatch.setenv("HPCQUESTS_TEST_SIGNAL_AFTER", "3")
    assert run(*common, "--out", tmp_path / "cut") == 75
    assert not (tmp_path / "cut" / "summary.json").exists()  # never looks complete
    log = tmp_path / "cut" / "checkpoint" / "computed-r00000.log"
    first = log.read_text().split("\n")[:-1]
    assert len(first) == 3
    monkeypatch.delenv("HPCQUESTS_TEST_SIGNAL_AFTER")
    assert run(*common, "--out", tmp_path / "cut") == 0
    computed = log.read_text().split("\n")[:-1]
    full_log = (tmp_path / "full" / "checkpoint" / "computed-r00000.log").read_text().split("\n")[:-1]
    assert sorted(computed) == sorted(full_log)  # every chunk computed exactly once overall
    assert computed[:3] == first and len(set(computed)) == len(computed)
    assert result(tmp_path / "cut") == result(tmp_path / "full")
    a = json.loads((tmp_path / "cut" / "summary.json").read_text())
    b = json.loads((tmp_path / "full" / "summary.json").read_text())
    assert a["frames"] == b["frames"]


def test_bad_inputs(data, tmp_path, capsys):
    d, x = data

    def fails(*args, match):
        rc = run(*args)
        err = capsys.readouterr().err
        assert rc == 2, err
        assert match in err, err
        assert err.count("error:") == 1

    fails(tmp_path / "missing.lammpstrj", d / "ref.h5", "--out", tmp_path / "a", match="missing.lammpstrj: no such file")
    (tmp_path / "empty.lammpstrj").write_text("")
    fails(tmp_path / "empty.lammpstrj", d / "ref.h5", "--out", tmp_path / "b", match="file is empty")
    text = (d / "orth.lammpstrj").read_text().splitlines()
    (tmp_path / "trunc.lammpstrj").write_text("\n".join(text[:-40]) + "\n")
    fails(tmp_path / "trunc.lammpstrj", d / "ref.h5", "--out", tmp_path / "c", "--types", "1=Ta",
          match="frame 1: truncated")
    fails(d / "orth.lammpstrj", d / "ref.h5", "--out", tmp_path / "d", match="type 1 has no element")
    write_store(tmp_path / "ref4.h5", x, [0, len(x)], k=32, cutoff=4.0, species=["Ta"])
    fails(d / "orth.lammpstrj", tmp_path / "ref4.h5", "--out", tmp_path / "e", "--types", "1=Ta",
          match="cutoff=4.0")
    fails(d / "orth.lammpstrj", d / "ref.h5", "--out", tmp_path / "no" / "dir" / "out", "--types", "1=Ta",
          match="does not exist")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    if not os.access(ro, os.W_OK):  # root can write anywhere
        fails(d / "orth.lammpstrj", d / "ref.h5", "--out", ro / "out", "--types", "1=Ta", match="not writable")
    fails(d / "orth.lammpstrj", d / "ref.h5", "--out", tmp_path / "f", "--types", "1=Xx", match="not a chemical element")
    for sub in "abcdef":
        assert not (tmp_path / sub / "summary.json").exists()


def test_module_entry_point(data, tmp_path):
    d, _ = data
    out = subprocess.run([sys.executable, "-m", "hpcquests.uq", str(d / "orth.lammpstrj"), str(d / "ref.h5"),
                          "--out", str(tmp_path / "m"), "--types", "1=Ta", "--frames", "1:"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "1 frame(s)" in out.stdout
    summary = json.loads((tmp_path / "m" / "summary.json").read_text())
    assert [f["frame"] for f in summary["frames"]] == [1]


def test_scan_pipeline_api_with_an_injected_hook(data, tmp_path):
    """``scan(ScanConfig, comm)``: the configuration is validated and frozen, the per-chunk hook is
    called after every computed chunk, result-neutral options leave the checkpoint signature alone,
    and the result equals the command line's."""
    import dataclasses

    from hpcquests.parallel import SerialComm
    from hpcquests.uq.config import ScanConfig
    from hpcquests.uq.scan import scan, scan_signature

    d, x = data
    seen = []
    cfg = ScanConfig(str(d / "orth.lammpstrj"), str(d / "ref.h5"), out=str(tmp_path / "api"), types="1=Ta",
                     chunk_atoms=100, quiet=True, on_chunk=seen.append)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.k = 8
    with pytest.raises(ValueError, match="--chunk-atoms must be >= 1"):
        dataclasses.replace(cfg, chunk_atoms=0)
    with pytest.raises(TypeError, match="ScanConfig"):
        scan(vars(cfg), SerialComm())
    summary = scan(cfg, SerialComm())
    n_atoms = summary["atoms"]
    assert seen == [0] * sum(-(-s["atoms"] // 100) for s in summary["frames"]) and n_atoms > 0
    assert run(d / "orth.lammpstrj", d / "ref.h5", "--types", "1=Ta", "--chunk-atoms", 100, "-q",
               "--out", tmp_path / "cli") == 0
    assert result(tmp_path / "api") == result(tmp_path / "cli")
    neutral = dataclasses.replace(cfg, out=str(tmp_path / "elsewhere"), threads=1, read_block=4096, quiet=False,
                                  on_chunk=None)
    sig = [scan_signature(c, 1, "m", str(d / "ref.h5"), [0, 1]) for c in (cfg, neutral)]
    assert sig[0] == sig[1]
    assert scan_signature(dataclasses.replace(cfg, k=16), 1, "m", str(d / "ref.h5"), [0, 1]) != sig[0]
