"""Datasets full of copies: greedy MSC terminates with the eager greedy's picks (Eq. 9: a copy
of a high-entropy structure can win), every baseline terminates with distinct picks, and
``--drop-duplicates`` removes exact copies first and lists them."""

import json
import subprocess
import sys

import numpy as np
import pytest
from ase.build import bulk

import hpcquests as hq
from hpcquests import testing
from hpcquests.compress import baselines
from hpcquests.compress.msc import msc
from hpcquests.compress.run import compress_dataset, exact_copies, structure_digest
from hpcquests.parallel import SerialComm

REPRODUCER = r'''
from ase.build import bulk
import hpcquests as hq
from hpcquests.compress import msc

base = bulk("Ta", "bcc", a=3.30, cubic=True).repeat(3)
frames = []
for seed, sigma in [(0, 0.03), (1, 0.03), (2, 0.03), (3, 0.03), (100, 0.15), (101, 0.15)]:
    a = base.copy()
    a.rattle(sigma, seed=seed)
    frames.append(a)
frames.append(frames[0].copy())
xs = [hq.get_descriptors([a]) for a in frames]
print(msc(xs, 4, lazy=False), msc(xs, 4))
'''


def test_issue_reproducer_terminates_with_the_eager_picks():
    """On 1b2157d the lazy greedy spun forever here (a copy tied its original's stale bound)."""
    out = subprocess.run([sys.executable, "-c", REPRODUCER], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[5, 4, 3, 2] [5, 4, 3, 2]"


def _frames(kind, seed=0):
    base = bulk("Ta", "bcc", a=3.30, cubic=True).repeat(2)
    if kind == "identical":  # every structure the same: every score ties
        return [base.copy() for _ in range(6)]
    rng = np.random.default_rng(seed)
    frames = []
    for s in range(5):
        a = base.copy()
        a.rattle(0.02 + 0.05 * rng.random(), seed=int(rng.integers(1 << 30)))
        frames += [a] * (1 + s % 3)  # one, two or three copies
    order = rng.permutation(len(frames))
    return [frames[i].copy() for i in order]


@pytest.mark.parametrize("kind,seed", [("identical", 0), ("copies", 1), ("copies", 2), ("copies", 3)])
def test_every_method_terminates_on_copies(kind, seed):
    frames = _frames(kind, seed)
    xs = [hq.get_descriptors([a], k=8, cutoff=4.0) for a in frames]
    ent = msc(xs, 1, details=True).entropies
    for size in (1, 3, len(frames)):
        eager = msc(xs, size, lazy=False)
        assert msc(xs, size) == eager
        assert len(set(eager)) == size
        for name, fn in baselines.METHODS.items():
            opts = {"entropies": ent} if name == "fps" else {}
            sel = [int(i) for i in fn(xs, size, **opts)]
            assert len(sel) == size and len(set(sel)) == size, (name, size, sel)


def test_all_identical_picks_in_index_order():
    xs = [hq.get_descriptors([a], k=8, cutoff=4.0) for a in _frames("identical")]
    assert msc(xs, 6) == msc(xs, 6, lazy=False) == [0, 1, 2, 3, 4, 5]


def test_exact_copies_and_digest():
    rng = np.random.default_rng(0)
    a, b = rng.random((5, 7)), rng.random((5, 7))
    assert structure_digest(a) == structure_digest(a[::-1].copy())  # an environment set: order free
    assert structure_digest(a) != structure_digest(b)
    c = a.copy()
    c[2, 3] = np.nextafter(c[2, 3], 1.0)  # one bit: not a copy
    assert structure_digest(a) != structure_digest(c)
    assert structure_digest(np.zeros((2, 3))) == structure_digest(-np.zeros((2, 3)))
    x = np.concatenate([a, b, a[::-1], c, b])
    offsets = np.array([0, 5, 10, 15, 20, 25])
    assert exact_copies(SerialComm(), x, offsets, 5) == {2: 0, 4: 1}


@pytest.fixture(scope="module")
def rows_dataset(tmp_path_factory):
    """A ColabFit-style export with two rows per configuration (two calculations each)."""
    d = tmp_path_factory.mktemp("rows")
    frames = testing.make_compression_dataset(n_ordinary=6, seed=2)
    doubled = [a for a in frames for _ in range(2)]
    testing.write_colabfit_parquet(d / "ds", doubled)
    return d, len(frames)


def test_drop_duplicates_lists_copies_and_selects_originals(rows_dataset, tmp_path):
    d, n = rows_dataset
    rep = compress_dataset(SerialComm(), str(d / "ds"), str(tmp_path / "o"), methods=["msc", "fps", "random"],
                           sizes=[3, 0.5], k=8, cutoff=4.0, drop_duplicates=True)
    assert rep["n_structures"] == 2 * n and rep["duplicates"]["dropped"] == n
    assert [(c["index"], c["copy_of"]) for c in rep["duplicates"]["copies"]] == [(2 * i + 1, 2 * i) for i in range(n)]
    assert rep["sizes"] == [3, int(np.ceil(0.5 * n))]
    for m in ("msc", "fps", "random"):
        for size in rep["sizes"]:
            sel = [int(v) for v in (tmp_path / "o" / "selections" / m / f"size_{size}" / "indices.txt")
                   .read_text().split()]
            assert len(sel) == size and all(i % 2 == 0 for i in sel), (m, sel)
    tsv = (tmp_path / "o" / "duplicates.tsv").read_text().splitlines()
    assert tsv[0] == "index\tid\tcopy_of\tcopy_of_id" and len(tsv) == n + 1
    assert "exact copies dropped" in (tmp_path / "o" / "report.md").read_text()
    assert json.loads((tmp_path / "o" / "report.json").read_text())["duplicates"]["dropped"] == n
    # MSC on the deduplicated set picks the deduplicated structures' eager picks
    xs = [hq.get_descriptors([a], k=8, cutoff=4.0) for a in testing.make_compression_dataset(n_ordinary=6, seed=2)]
    got = (tmp_path / "o" / "selections" / "msc" / f"size_{rep['sizes'][-1]}" / "indices.txt").read_text().split()
    assert [int(v) // 2 for v in got] == msc(xs, rep["sizes"][-1], lazy=False)


def test_without_drop_duplicates_copies_stay_and_msc_is_eager(rows_dataset, tmp_path):
    d, n = rows_dataset
    rep = compress_dataset(SerialComm(), str(d / "ds"), str(tmp_path / "o"), methods=["msc"], sizes=[n],
                           k=8, cutoff=4.0)
    assert rep["duplicates"] is None and not (tmp_path / "o" / "duplicates.tsv").exists()
    frames = testing.make_compression_dataset(n_ordinary=6, seed=2)
    xs = [hq.get_descriptors([a], k=8, cutoff=4.0) for a in frames for _ in range(2)]
    got = [int(v) for v in (tmp_path / "o" / "selections" / "msc" / f"size_{n}" / "indices.txt").read_text().split()]
    assert got == msc(xs, n, lazy=False)
