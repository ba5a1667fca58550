"""`hpcquests compress` under mpiexec: 1, 2, 3 and 4 ranks write the same selections (every
method) and the same metrics (|a − b| ≤ 1e-12·max(1, |b|)) for a ColabFit-layout dataset."""

import json

import pytest

from hpcquests import testing

from .util import RANK_COUNTS, run_mpi

pytestmark = pytest.mark.mpi


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    d = tmp_path_factory.mktemp("compress_mpi")
    testing.write_colabfit_parquet(d / "ds", testing.make_compression_dataset(n_ordinary=9, seed=5), row_group_size=4)
    return d


def run(dataset, n):
    out = dataset / f"out{n}"
    proc = run_mpi(n, ["-m", "hpcquests", "compress", dataset / "ds", "-o", out, "--method", "msc", "random", "kmeans",
                       "mean-fps", "fps", "ccs", "logdet", "--size", "3", "0.5", "-k", "8", "--cutoff", "4.0",
                       "--json", "-q"], timeout=240)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1]), out


def close(a, b):
    return abs(a - b) <= 1e-12 * max(1.0, abs(b))


@pytest.fixture(scope="module")
def serial(dataset):
    return run(dataset, 1)


@pytest.mark.parametrize("n", RANK_COUNTS[1:])
def test_rank_count_invariance(dataset, serial, n):
    want, out1 = serial
    got, out = run(dataset, n)
    assert got["ranks"] == n and got["sizes"] == want["sizes"] == [3, 7]
    for a, b in zip(got["selections"], want["selections"]):
        assert (a["method"], a["size"], a["n_envs"]) == (b["method"], b["size"], b["n_envs"])
        for key in ("entropy", "diversity", "overlap", "efficiency"):
            assert close(a[key], b[key]), (a["method"], a["size"], key, a[key], b[key])
        sel = f"selections/{a['method']}/size_{a['size']}/indices.txt"
        assert (out / sel).read_text() == (out1 / sel).read_text()
    assert close(got["full"]["entropy"], want["full"]["entropy"])
    assert (out / "structure_entropies.txt").read_text() == (out1 / "structure_entropies.txt").read_text()


@pytest.fixture(scope="module")
def copies_dataset(tmp_path_factory):
    """A ColabFit-style export with two rows per configuration (two calculations each): on
    1b2157d such an export hung `hpcquests compress` in the lazy greedy."""
    d = tmp_path_factory.mktemp("copies_mpi")
    frames = testing.make_compression_dataset(n_ordinary=5, seed=7)
    testing.write_colabfit_parquet(d / "ds", [a for a in frames for _ in range(2)], row_group_size=3)
    import hpcquests as hq
    from hpcquests.compress.msc import msc

    xs = [hq.get_descriptors([a], k=8, cutoff=4.0) for a in frames for _ in range(2)]
    return d, msc(xs, len(xs), lazy=False)


ALL_METHODS = ["msc", "random", "kmeans", "mean-fps", "fps", "ccs", "logdet"]


@pytest.mark.parametrize("n", RANK_COUNTS)
def test_copies_terminate_on_any_rank_count(copies_dataset, n, tmp_path):
    d, eager = copies_dataset
    proc = run_mpi(n, ["-m", "hpcquests", "compress", d / "ds", "-o", tmp_path / "o", "--method", *ALL_METHODS,
                       "--size", "4", "1.0", "-k", "8", "--cutoff", "4.0", "--json", "-q", "--no-structures"],
                   timeout=240)
    assert proc.returncode == 0, proc.stderr
    rep = json.loads(proc.stdout.strip().splitlines()[-1])
    assert rep["sizes"] == [4, len(eager)]
    for m in ALL_METHODS:
        for size in rep["sizes"]:
            sel = [int(v) for v in (tmp_path / "o" / "selections" / m / f"size_{size}" / "indices.txt")
                   .read_text().split()]
            assert len(sel) == size and len(set(sel)) == size, (m, size)
            if m == "msc":
                assert sel == eager[:size]
