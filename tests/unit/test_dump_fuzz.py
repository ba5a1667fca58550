"""Generated dumps with injected defects: the reader and the scan give the brute-force result or
one error line matching the documented pattern (docs/uq.md, "Errors"), never a traceback.

CI runs a small fixed number of examples; ``-m slow`` runs many more."""

import contextlib
import io
import os
import re
import tempfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hpcquests as hq
from hpcquests import testing
from hpcquests.io import lammps
from hpcquests.io.store import write_store
from hpcquests.cli.uq import main as uq_main

K, RC = 6, 3.5
DEFECTS = ("none", "nan", "inf", "dup_id", "extra_value", "missing_value", "coincident", "truncate", "perfect")

#: every scan error line: the command, the file, usually the frame, and the line or atom at fault
ERROR_LINE = re.compile(r"^hpcquests\.uq: error: (TRAJ )?(?P<path>\S+?)(:| frame (?P<frame>\d+):) (?P<what>.+)$")
WHERE = re.compile(r"\(line \d+|atom id \d+|line \d+\)|no complete frame|file is empty")

FUZZ_SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
N_CI, N_SLOW = 25, 300


@pytest.fixture(scope="module")
def ref(tmp_path_factory):
    d = tmp_path_factory.mktemp("fuzzref")
    train = [testing.perturbed_crystal("bcc", "Ta", size=(2, 2, 2), noise=0.05, seed=s) for s in range(2)]
    x = hq.get_descriptors(train, k=K, cutoff=RC)
    write_store(d / "ref.h5", x, [0, 16, 32], k=K, cutoff=RC, species=["Ta"])
    return str(d / "ref.h5"), x


def make_dump(path, defect, seed, where):
    """A 2-frame dump (16 atoms each) with one defect in frame 1 at atom line ``where``."""
    frames = [testing.perturbed_crystal("bcc", "Ta", size=(2, 2, 2), noise=0.0 if defect == "perfect" else 0.05,
                                        seed=seed + f) for f in range(2)]
    if defect == "coincident":
        frames[1].positions[where % 15] = frames[1].positions[where % 15 + 1]
    testing.write_lammps_dump(path, frames, ("id", "type", "x", "y", "z"), seed=seed)
    text = open(path).read()
    if defect == "truncate":
        with open(path, "w") as fh:
            fh.write(text[: len(text) * where // 100])
        return
    lines = text.splitlines(keepends=True)
    start = [i for i, ln in enumerate(lines) if ln.startswith("ITEM: ATOMS")][1] + 1
    i = start + where % 16
    cols = lines[i].split()
    if defect == "nan":
        cols[2 + where % 3] = "nan"
    elif defect == "inf":
        cols[2 + where % 3] = "-inf" if where % 2 else "1e999"
    elif defect == "dup_id":
        cols[0] = lines[start + (where + 1) % 16].split()[0]
    elif defect == "extra_value":
        cols.append("0.5")
    elif defect == "missing_value":
        cols.pop()
    lines[i] = " ".join(cols) + "\n"
    with open(path, "w") as fh:
        fh.write("".join(lines))


def brute(path, x):
    from ase import Atoms

    out = {}
    infos, _ = lammps.index_dump(path)
    for info in infos:
        part = lammps.read_frame(path, info)
        atoms = Atoms(["Ta"] * part["n"], positions=part["positions"], cell=info.cell, pbc=info.pbc)
        for i, v in zip(part["ids"], hq.delta_entropy(hq.get_descriptors(atoms, k=K, cutoff=RC), x)):
            out[(info.index, int(i))] = float(v)
    return out


def check_scan(ref, defect, seed, where):
    import h5py

    ref_path, x = ref
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "t.lammpstrj")
        make_dump(path, defect, seed, where)
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            code = uq_main([path, ref_path, "--out", os.path.join(d, "o"), "--types", "1=Ta", "-k", str(K),
                            "--cutoff", str(RC), "--chunk-atoms", "7", "-q"])
        lines = [ln for ln in err.getvalue().splitlines() if ln.strip()]
        if code == 0:
            assert defect in ("none", "perfect", "truncate"), (defect, lines)
            with h5py.File(os.path.join(d, "o", "dH.h5")) as f:
                got = {(int(a), int(b)): float(v) for a, b, v in zip(f["frame"][...], f["atom_id"][...], f["dH"][...])}
            want = brute(path, x)
            assert got.keys() == want.keys()
            assert max(abs(got[k] - want[k]) / max(1.0, abs(want[k])) for k in want) <= 1e-12
            assert not lines
            return "ok"
        assert code == 2, (defect, code, lines)
        assert defect != "none" and defect != "perfect", lines
        assert len(lines) == 1, lines
        m = ERROR_LINE.match(lines[0])
        assert m and m.group("path") == path, lines[0]
        assert WHERE.search(lines[0]) or "overlapping atoms" in lines[0], lines[0]
        assert not os.path.exists(os.path.join(d, "o", "summary.json"))
        return "error"


@settings(max_examples=N_CI, **FUZZ_SETTINGS)
@given(defect=st.sampled_from(DEFECTS), seed=st.integers(0, 50), where=st.integers(0, 99))
def test_scan_on_defective_dumps(ref, defect, seed, where):
    check_scan(ref, defect, seed, where)


@pytest.mark.slow
@settings(max_examples=N_SLOW, **FUZZ_SETTINGS)
@given(defect=st.sampled_from(DEFECTS), seed=st.integers(0, 10_000), where=st.integers(0, 99))
def test_scan_on_defective_dumps_many(ref, defect, seed, where):
    check_scan(ref, defect, seed, where)


@pytest.mark.parametrize("defect", DEFECTS)
def test_each_defect_once(ref, defect):
    """Every kind of defect at least once in CI (hypothesis may not draw each)."""
    outcome = check_scan(ref, defect, 3, 41)
    assert outcome == ("ok" if defect in ("none", "perfect") else "error")


def test_reader_truncated_at_every_byte(tmp_path):
    """index + parse of a small frame cut at every byte: a valid (shorter) dump or one ValueError
    naming the file (and the frame and line when a frame is at fault); never another exception."""
    path = tmp_path / "t.lammpstrj"
    testing.write_lammps_dump(path, [testing.perturbed_crystal("bcc", "Ta", size=(1, 1, 2), noise=0.05, seed=1)] * 2,
                              ("id", "type", "x", "y", "z"))
    text = path.read_bytes()
    cut = tmp_path / "cut.lammpstrj"
    outcomes = {"ok": 0, "error": 0}
    for n in range(len(text) + 1):
        cut.write_bytes(text[:n])
        try:
            infos, _ = lammps.index_dump(cut)
            for info in infos:
                part = lammps.read_frame(cut, info)
                assert np.isfinite(part["positions"]).all()
            outcomes["ok"] += 1
        except ValueError as exc:
            msg = str(exc)
            assert msg.startswith(str(cut)), msg
            assert re.search(r"\(line \d+|atom id \d+|file is empty|no complete frame", msg), msg
            outcomes["error"] += 1
    assert outcomes["ok"] >= 2 and outcomes["error"] > len(text) // 2
