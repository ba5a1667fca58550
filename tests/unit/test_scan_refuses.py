"""The UQ scan is right or refuses (issue: perfect lattices, NaN, duplicate ids, resume identity).

Each test here failed on 1b2157d: a perfect lattice aborted the scan, NaN/inf gave wrong δH with
exit 0, coincident atoms and an extra value gave internal errors, duplicate ids were accepted,
--skip-bad-frames renumbered frames, a changed option or a rebuilt reference resumed a foreign
checkpoint, two scans shared one --out, summary.json was written before the annotated dump,
and an unwritable -o failed only after the work."""

import json
import os
import re
import socket
import subprocess
import sys
import time

import h5py
import pytest

import hpcquests as hq
from hpcquests import testing
from hpcquests.cli import main as cli_main
from hpcquests.io import lammps
from hpcquests.io.store import write_store
from hpcquests.cli.uq import main as uq_main

K, RC = 8, 4.0
COMMON = ["--types", "1=Ta", "-k", str(K), "--cutoff", str(RC), "-q"]


@pytest.fixture(scope="module")
def ref(tmp_path_factory):
    d = tmp_path_factory.mktemp("refuse")
    train = [testing.perturbed_crystal("bcc", "Ta", size=(3, 3, 3), noise=0.05, seed=s) for s in range(2)]
    x = hq.get_descriptors(train, k=K, cutoff=RC)
    write_store(d / "ref.h5", x, [0, len(train[0]), len(x)], k=K, cutoff=RC, species=["Ta"])
    return d, x


def scan(*args):
    return uq_main([str(a) for a in args])


def results(out):
    with h5py.File(os.path.join(out, "dH.h5")) as f:
        return {(int(a), int(b)): float(v) for a, b, v in zip(f["frame"][...], f["atom_id"][...], f["dH"][...])}


def brute(path, x, frames=None):
    """(file frame, id) → δH of the API on the frames as our reader parses them."""
    from ase import Atoms

    out = {}
    infos, _ = lammps.index_dump(path, skip_bad_frames=True)
    for info in infos:
        if frames is not None and info.index not in frames:
            continue
        part = lammps.read_frame(path, info)
        atoms = Atoms(["Ta"] * part["n"], positions=part["positions"], cell=info.cell, pbc=info.pbc)
        for i, v in zip(part["ids"], hq.delta_entropy(hq.get_descriptors(atoms, k=K, cutoff=RC), x)):
            out[(info.index, int(i))] = float(v)
    return out


def edit_line(src, dst, frame, row, fn):
    """Copy a dump, replacing atom line ``row`` of ``frame`` by ``fn(columns)`` (a string);
    returns the 1-based line number."""
    lines = src.read_text().splitlines(keepends=True)
    starts = [i for i, ln in enumerate(lines) if ln.startswith("ITEM: ATOMS")]
    no = starts[frame] + 2 + row
    lines[no - 1] = fn(lines[no - 1].split()) + "\n"
    dst.write_text("".join(lines))
    return no


def only_error(capsys):
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1, err
    return err[0]


@pytest.fixture(scope="module")
def dump(tmp_path_factory):
    d = tmp_path_factory.mktemp("dumps")
    frames = [testing.perturbed_crystal("bcc", "Ta", size=(3, 3, 3), noise=0.04 + 0.02 * f, seed=f) for f in range(3)]
    testing.write_lammps_dump(d / "md.lammpstrj", frames, ("id", "type", "x", "y", "z"), seed=1)
    return d / "md.lammpstrj"


# --------------------------------------------------------------------------- 1. degenerate frames

def test_perfect_lattice_and_tiny_cell_scan_normally(ref, tmp_path):
    d, x = ref
    perfect = testing.perturbed_crystal("bcc", "Ta", size=(3, 3, 3), noise=0.0)
    tiny = testing.perturbed_crystal("bcc", "Ta", size=(1, 1, 1), noise=0.0)  # 2 atoms, 3.3 Å < cutoff
    hot = testing.perturbed_crystal("bcc", "Ta", size=(3, 3, 3), noise=0.08, seed=4)
    path = tmp_path / "lattice.lammpstrj"
    testing.write_lammps_dump(path, [perfect, tiny, hot], ("id", "type", "x", "y", "z"))
    assert scan(path, d / "ref.h5", "--out", tmp_path / "o", *COMMON) == 0
    got, want = results(tmp_path / "o"), brute(path, x)
    assert got.keys() == want.keys()
    assert max(abs(got[k] - want[k]) / max(1.0, abs(want[k])) for k in got) <= 1e-12
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    f0 = summary["frames"][0]
    assert f0["min"] == pytest.approx(f0["max"], rel=1e-9) and f0["quantiles"]["p50"] == pytest.approx(f0["min"])
    assert summary["frames"][1]["atoms"] == 2


# --------------------------------------------------------------------------- 2. NaN, inf, huge tokens

@pytest.mark.parametrize("value", ["nan", "inf", "-Infinity", "1e999", "9" * 2_000_000])
def test_non_finite_coordinate_is_an_error_naming_atom_and_line(ref, dump, tmp_path, capsys, value):
    d, _ = ref
    bad = tmp_path / "bad.lammpstrj"
    no = edit_line(dump, bad, 1, 5, lambda c: " ".join([c[0], c[1], value, c[3], c[4]]))
    atom_id = bad.read_text().splitlines()[no - 1].split()[0]
    assert scan(bad, d / "ref.h5", "--out", tmp_path / "o", *COMMON) == 2
    msg = only_error(capsys)
    assert re.match(rf"hpcquests\.uq: error: {re.escape(str(bad))} frame 1: atom id {atom_id}: position is not "
                    rf"finite \((nan|inf|-inf), .*\(line {no}\)$", msg), msg
    assert not (tmp_path / "o" / "summary.json").exists()


@pytest.mark.slow
@pytest.mark.timeout(120, method="signal")
def test_fifty_megabyte_token(ref, dump, tmp_path, capsys):
    """A 50 MB digit string (it parses to inf): on 1b2157d ~35 s per pass in a per-byte loop."""
    d, _ = ref
    bad = tmp_path / "big.lammpstrj"
    no = edit_line(dump, bad, 0, 3, lambda c: " ".join([c[0], c[1], "7" * 50_000_000, c[3], c[4]]))
    assert scan(bad, d / "ref.h5", "--out", tmp_path / "o", *COMMON) == 2
    assert f"(line {no})" in only_error(capsys)


# --------------------------------------------------------------------------- 3. malformed frames

def test_coincident_atoms_give_the_overlap_message(ref, tmp_path, capsys):
    d, _ = ref
    a = testing.perturbed_crystal("bcc", "Ta", size=(3, 3, 3), noise=0.05, seed=9)
    a.positions[7] = a.positions[8]
    path = tmp_path / "coincident.lammpstrj"
    testing.write_lammps_dump(path, [a], ("id", "type", "x", "y", "z"))
    assert scan(path, d / "ref.h5", "--out", tmp_path / "o", *COMMON) == 2
    msg = only_error(capsys)
    assert re.match(r"hpcquests\.uq: error: TRAJ .* frame 0: atom id (8|9) has a neighbour 0 Å away .*overlapping "
                    r"atoms$", msg), msg


def test_extra_value_names_the_line(ref, dump, tmp_path, capsys):
    d, _ = ref
    bad = tmp_path / "extra.lammpstrj"
    no = edit_line(dump, bad, 2, 10, lambda c: " ".join(c + ["1.0"]))
    assert scan(bad, d / "ref.h5", "--out", tmp_path / "o", *COMMON) == 2
    assert re.match(rf"hpcquests\.uq: error: .* frame 2: more than 5 values: '.*' \(line {no}; columns: id type x y z\)$",
                    only_error(capsys))


def test_duplicate_atom_ids_are_refused(ref, dump, tmp_path, capsys):
    d, _ = ref
    bad = tmp_path / "dup.lammpstrj"
    lines = dump.read_text().splitlines()
    first = [i for i, ln in enumerate(lines) if ln.startswith("ITEM: ATOMS")][1] + 2
    dup_id = lines[first - 1].split()[0]
    no = edit_line(dump, bad, 1, 20, lambda c: " ".join([dup_id] + c[1:]))
    assert scan(bad, d / "ref.h5", "--out", tmp_path / "o", *COMMON) == 2
    assert only_error(capsys) == (f"hpcquests.uq: error: {bad} frame 1: atom id {dup_id} appears twice (lines {first} "
                                  f"and {no}): duplicate atom ids")


def test_skip_bad_frames_keeps_file_numbers_and_skips_malformed_lines(ref, tmp_path):
    d, x = ref
    frames = [testing.perturbed_crystal("bcc", "Ta", size=(3, 3, 3), noise=0.05, seed=f) for f in range(5)]
    path = tmp_path / "md.lammpstrj"
    testing.write_lammps_dump(path, frames, ("id", "type", "x", "y", "z"))
    text = path.read_text().split("ITEM: TIMESTEP\n")
    text[2] = text[2].replace("ITEM: NUMBER OF ATOMS", "ITEM: NUMBER OF ATOMZ")  # frame 1: bad header
    path.write_text("ITEM: TIMESTEP\n".join(text))
    bad = tmp_path / "bad.lammpstrj"
    line = edit_line(path, bad, 3, 4, lambda c: " ".join([c[0], c[1], "nan", c[3], c[4]]))  # frame 3: NaN
    assert scan(bad, d / "ref.h5", "--out", tmp_path / "o", "--skip-bad-frames", *COMMON) == 0
    got = results(tmp_path / "o")
    assert sorted({f for f, _ in got}) == [0, 2, 4]
    want = brute(bad, x, frames={0, 2, 4})
    assert max(abs(got[k] - want[k]) / max(1.0, abs(want[k])) for k in want) <= 1e-12 and got.keys() == want.keys()
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert [f["frame"] for f in summary["frames"]] == [0, 2, 4]
    # each skipped frame: the line of its ITEM: TIMESTEP, and the error naming the line at fault
    heads = [i + 1 for i, ln in enumerate(bad.read_text().splitlines()) if ln == "ITEM: TIMESTEP"]
    assert [(s["frame"], s["line"]) for s in summary["skipped_frames"]] == [(1, heads[1]), (3, heads[3])]
    assert "(line 66)" in summary["skipped_frames"][0]["error"]
    assert f"(line {line})" in summary["skipped_frames"][1]["error"]
    dumped = (tmp_path / "o" / "bad_dH.lammpstrj").read_text()
    assert dumped.count("ITEM: TIMESTEP") == 3


# --------------------------------------------------------------------------- 4. resume identity

def interrupted(ref_path, dump, out, monkeypatch, *extra):
    monkeypatch.setenv("HPCQUESTS_TEST_SIGNAL_AFTER", "1")
    assert scan(dump, ref_path, "--out", out, "--chunk-atoms", 20, *COMMON, *extra) == 75
    monkeypatch.delenv("HPCQUESTS_TEST_SIGNAL_AFTER")


@pytest.mark.parametrize("change,option", [
    (["--threshold", "0", "3"], "--threshold"),
    (["--no-annotated-dump"], "--no-annotated-dump"),
    (["--ref-memory", "0"], "--ref-memory"),
    (["--frame-parallel-atoms", "10"], "--frame-parallel-atoms"),
    (["--bandwidth", "0.02"], "--bandwidth"),
])
def test_resume_with_another_option_is_refused(ref, dump, tmp_path, monkeypatch, capsys, change, option):
    d, _ = ref
    interrupted(d / "ref.h5", dump, tmp_path / "o", monkeypatch)
    capsys.readouterr()
    assert scan(dump, d / "ref.h5", "--out", tmp_path / "o", "--chunk-atoms", 20, *COMMON, *change) == 2
    msg = only_error(capsys)
    assert f"holds the checkpoint of a different scan: {option} differs" in msg, msg
    assert not (tmp_path / "o" / "summary.json").exists()


def test_rebuilt_reference_is_refused(ref, dump, tmp_path, monkeypatch, capsys):
    """Same layout, same file size, other content: refused (1b2157d merged both, max |ΔδH| 18.7)."""
    d, x = ref
    mine = tmp_path / "ref.h5"
    write_store(mine, x, [0, 54, len(x)], k=K, cutoff=RC, species=["Ta"])
    interrupted(mine, dump, tmp_path / "o", monkeypatch)
    size = os.path.getsize(mine)
    write_store(mine, x[::-1].copy(), [0, 54, len(x)], k=K, cutoff=RC, species=["Ta"])
    assert os.path.getsize(mine) == size
    capsys.readouterr()
    assert scan(dump, mine, "--out", tmp_path / "o", "--chunk-atoms", 20, *COMMON) == 2
    assert "different scan: REF differs" in only_error(capsys)


def test_result_neutral_options_resume(ref, dump, tmp_path, monkeypatch):
    d, _ = ref
    assert scan(dump, d / "ref.h5", "--out", tmp_path / "full", "--chunk-atoms", 20, *COMMON) == 0
    interrupted(d / "ref.h5", dump, tmp_path / "o", monkeypatch)
    assert scan(dump, d / "ref.h5", "--out", tmp_path / "o", "--chunk-atoms", 20, *COMMON, "--read-block", "300",
                "--threads", "1", "--json") == 0
    assert results(tmp_path / "o") == results(tmp_path / "full")


# --------------------------------------------------------------------------- 5. one scan per --out

def test_live_lock_refuses_and_stale_locks_are_taken_over(ref, dump, tmp_path, monkeypatch, capsys):
    d, _ = ref
    out = tmp_path / "o"
    out.mkdir()
    lock = out / "scan.lock"
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": os.getppid(), "slurm_job_id": None}))
    assert scan(dump, d / "ref.h5", "--out", out, *COMMON) == 2
    assert f"is in use by another scan (pid {os.getppid()} on {socket.gethostname()}" in only_error(capsys)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": int(dead.stdout), "slurm_job_id": None}))
    assert scan(dump, d / "ref.h5", "--out", out, *COMMON) == 0  # a dead process's lock
    assert not lock.exists()
    # a requeued Slurm job finds its own lock (another pid, maybe another node) and takes it over
    lock.write_text(json.dumps({"host": "node17", "pid": 1, "slurm_job_id": "4242"}))
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    (out / "summary.json").unlink()
    assert scan(dump, d / "ref.h5", "--out", out, *COMMON) == 0
    monkeypatch.setenv("SLURM_JOB_ID", "4243")
    lock.write_text(json.dumps({"host": "node17", "pid": 1, "slurm_job_id": "4242"}))
    assert scan(dump, d / "ref.h5", "--out", out, *COMMON) == 2
    assert "Slurm job 4242" in only_error(capsys)


def test_two_scans_into_one_out(ref, dump, tmp_path):
    """On 1b2157d the second crashed on a shared .part file; now it is refused at once."""
    d, _ = ref
    args = [sys.executable, "-m", "hpcquests.uq", dump, d / "ref.h5", "--out", tmp_path / "o", *COMMON]
    env = dict(os.environ, HPCQUESTS_FAULT="uq.chunk=sleep:0.5")
    first = subprocess.Popen(list(map(str, args)), env=env, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(200):
            if (tmp_path / "o" / "scan.lock").exists():
                break
            time.sleep(0.05)
        second = subprocess.run(list(map(str, args)), capture_output=True, text=True, timeout=60)
        assert second.returncode == 2 and "is in use by another scan" in second.stderr
    finally:
        assert first.wait(timeout=120) == 0, first.stderr.read()
    assert (tmp_path / "o" / "summary.json").exists()


# --------------------------------------------------------------------------- 6, 7. outputs

def test_summary_is_written_last(ref, dump, tmp_path, capsys):
    d, _ = ref
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "md_dH.lammpstrj").mkdir()  # the annotated dump cannot be put in place
    assert scan(dump, d / "ref.h5", "--out", tmp_path / "o", *COMMON) == 2
    capsys.readouterr()
    assert not (tmp_path / "o" / "summary.json").exists()


def test_unwritable_outputs_fail_before_any_work(ref, tmp_path, capsys, monkeypatch):
    d, _ = ref
    frames = tmp_path / "s.extxyz"
    from ase.io import write

    write(frames, [testing.perturbed_crystal("bcc", "Ta", size=(2, 2, 2), seed=1)], parallel=False)
    (tmp_path / "file").write_text("x")
    cases = [(["dh", frames, d / "ref.h5", "-o", tmp_path / "no" / "dh.npy"], "-o .*dh.npy: directory .* does not exist"),
             (["dh", frames, d / "ref.h5", "-o", tmp_path], "-o .*: is a directory"),
             (["descriptors", frames, "-o", tmp_path / "file" / "x.h5"], "-o .*x.h5: directory .* does not exist"),
             (["compress", frames, "-o", tmp_path / "file"], "-o .*file: exists and is not a directory")]
    # any descriptor or δH work would hit an injected error first: the output is checked before
    monkeypatch.setenv("HPCQUESTS_FAULT", "descriptors=runtime,logsum=runtime")
    for args, pattern in cases:
        assert cli_main([str(a) for a in args] + ["-k", str(K), "--cutoff", str(RC), "-q"]) == 2
        msg = only_error(capsys)
        assert re.search(pattern, msg), msg
