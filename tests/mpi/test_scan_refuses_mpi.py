"""The scan is right or refuses on 2 ranks too: a fixed sample of the defective dumps of
tests/unit/test_dump_fuzz.py, with the defect read by rank 1 (frames over ranks) or split over
both ranks' byte ranges (domains); one error line, exit 2, or the serial result."""

import os
import re

import h5py
import pytest

from tests.unit.test_dump_fuzz import ERROR_LINE, K, RC, WHERE, brute, make_dump, ref  # noqa: F401 (fixture)

from .util import run_mpi

pytestmark = pytest.mark.mpi


SAMPLE = [("perfect", 1, 0), ("nan", 2, 12), ("inf", 3, 3), ("dup_id", 4, 14), ("extra_value", 5, 9),
          ("coincident", 6, 7), ("truncate", 7, 73)]


@pytest.mark.parametrize("mode", ["frames", "domains"])
@pytest.mark.parametrize("defect,seed,where", SAMPLE, ids=[s[0] for s in SAMPLE])
def test_defective_dump_on_two_ranks(ref, tmp_path, mode, defect, seed, where):
    ref_path, x = ref
    path = str(tmp_path / "t.lammpstrj")
    make_dump(path, defect, seed, where)
    extra = [] if mode == "frames" else ["--frame-parallel-atoms", "0"]
    proc = run_mpi(2, ["-m", "hpcquests.uq", path, ref_path, "--out", tmp_path / "o", "--types", "1=Ta", "-k", K,
                       "--cutoff", RC, "--chunk-atoms", 5, "-q", *extra], timeout=90)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    if defect == "perfect" or (defect == "truncate" and proc.returncode == 0):
        assert proc.returncode == 0, proc.stderr
        with h5py.File(tmp_path / "o" / "dH.h5") as f:
            got = {(int(a), int(b)): float(v) for a, b, v in zip(f["frame"][...], f["atom_id"][...], f["dH"][...])}
        want = brute(path, x)
        assert got.keys() == want.keys()
        assert max(abs(got[k] - want[k]) / max(1.0, abs(want[k])) for k in want) <= 1e-12
        return
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1, proc.stderr
    msg = re.sub(r"^hpcquests\.uq: error: rank \d+: ", "hpcquests.uq: error: ", lines[0])
    m = ERROR_LINE.match(msg)
    assert m and m.group("path") == path, lines[0]
    assert WHERE.search(msg) or "overlapping atoms" in msg, msg
    assert not os.path.exists(tmp_path / "o" / "summary.json")


def test_duplicate_ids_across_ranks(ref, tmp_path):
    """The two lines with one id are read by different ranks (domain mode): still refused."""
    ref_path, _ = ref
    path = tmp_path / "t.lammpstrj"
    make_dump(str(path), "none", 1, 0)
    lines = path.read_text().splitlines(keepends=True)
    start = [i for i, ln in enumerate(lines) if ln.startswith("ITEM: ATOMS")][0] + 1
    first_id = lines[start].split()[0]
    cols = lines[start + 15].split()
    cols[0] = first_id
    lines[start + 15] = " ".join(cols) + "\n"
    path.write_text("".join(lines))
    proc = run_mpi(2, ["-m", "hpcquests.uq", path, ref_path, "--out", tmp_path / "o", "--types", "1=Ta", "-k", K,
                       "--cutoff", RC, "-q", "--frame-parallel-atoms", "0"], timeout=90)
    assert proc.returncode == 2
    assert proc.stderr.strip().endswith(f"frame 0: atom id {first_id} appears twice (lines {start + 1} and "
                                        f"{start + 16}): duplicate atom ids"), proc.stderr
