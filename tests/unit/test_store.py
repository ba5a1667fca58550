"""Descriptor store: round trip, shards, relocation, atomicity, errors; structure reader errors."""

import hashlib
import os
import shutil

import h5py
import numpy as np
import pytest

from hpcquests.io import store as store_mod
from hpcquests.io.store import is_store, open_store, write_store
from hpcquests.io.structures import file_checksum, read_structures


def sample(n_struct=7, seed=0):
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, 20, n_struct)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    x = rng.random((offsets[-1], 63))
    return x, offsets


def test_round_trip(tmp_path):
    x, offsets = sample()
    forces = np.random.default_rng(1).normal(size=(len(x), 3))
    energy = np.arange(len(offsets) - 1, dtype=float)
    path = tmp_path / "s.h5"
    write_store(path, x, offsets, k=32, cutoff=5.0, species=["Ta", "W"], extra={"forces": forces, "energy": energy},
                sources=[{"path": "a.xyz", "checksum": "sha256:00"}], command="hpcquests descriptors a.xyz")
    assert is_store(path)
    with open_store(path) as s:
        assert np.array_equal(s.read(), x)
        assert np.array_equal(s.offsets, offsets)
        assert np.array_equal(s.read("forces"), forces)
        assert np.array_equal(s.read("energy"), energy)
        assert s.k == 32 and s.cutoff == 5.0 and s.species == ["Ta", "W"]
        assert s.n_env == len(x) and s.n_structures == len(offsets) - 1 and s.dim == 63
        si, ai = s.read("structure_index"), s.read("atom_index")
        assert np.array_equal(si, np.repeat(np.arange(len(offsets) - 1), np.diff(offsets)))
        assert np.array_equal(ai, np.arange(len(x)) - offsets[si])
        a = s.attrs
        assert a["format"] == "hpcquests-store" and a["format_version"] == 1
        assert a["sources"] == [{"path": "a.xyz", "checksum": "sha256:00"}]
        assert a["command"] == "hpcquests descriptors a.xyz" and a["hpcquests_version"]
        chunks = list(s.iter_chunks(10))
        assert np.array_equal(np.concatenate([c for _, c in chunks]), x) and chunks[1][0] == 10


def test_sharded_equals_single(tmp_path):
    x, offsets = sample(20, seed=3)
    write_store(tmp_path / "one.h5", x, offsets, k=32, cutoff=5.0)
    write_store(tmp_path / "many.h5", x, offsets, k=32, cutoff=5.0, rows_per_shard=17)
    assert len(os.listdir(tmp_path / "many.h5.shards")) == int(np.ceil(len(x) / 17))
    with open_store(tmp_path / "one.h5") as a, open_store(tmp_path / "many.h5") as b:
        for name in ("descriptors", "structure_index", "atom_index", "offsets"):
            assert np.array_equal(a.read(name), b.read(name))
    # rewriting with fewer shards removes the stale ones
    write_store(tmp_path / "many.h5", x, offsets, k=32, cutoff=5.0, rows_per_shard=1000)
    assert os.listdir(tmp_path / "many.h5.shards") == ["shard-00000.h5"]


def test_moved_directory_readable_by_plain_h5py(tmp_path):
    x, offsets = sample()
    (tmp_path / "a").mkdir()
    write_store(tmp_path / "a" / "s.h5", x, offsets, k=32, cutoff=5.0, rows_per_shard=10)
    shutil.move(str(tmp_path / "a"), str(tmp_path / "b"))
    cwd = os.getcwd()
    os.chdir("/")
    try:
        with h5py.File(tmp_path / "b" / "s.h5", "r") as f:
            assert np.array_equal(f["descriptors"][...], x)
    finally:
        os.chdir(cwd)


def test_atomic_write_leaves_nothing(tmp_path, monkeypatch):
    x, offsets = sample()
    path = tmp_path / "s.h5"

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(store_mod, "write_master", boom)
    with pytest.raises(RuntimeError):
        write_store(path, x, offsets, k=32, cutoff=5.0)
    assert not path.exists()
    leftovers = [p for p in os.listdir(tmp_path) if "tmp" in p]
    assert leftovers == []
    monkeypatch.undo()

    import h5py as real_h5py

    class Exploding(real_h5py.File):
        def create_dataset(self, name, *a, **k):
            if name == "offsets":
                raise RuntimeError("interrupted")
            return super().create_dataset(name, *a, **k)

    monkeypatch.setattr(real_h5py, "File", Exploding)
    with pytest.raises(RuntimeError):
        write_store(path, x, offsets, k=32, cutoff=5.0)
    monkeypatch.undo()
    assert not path.exists() and not [p for p in os.listdir(tmp_path) if ".tmp-" in p]


def test_open_errors(tmp_path):
    with pytest.raises(ValueError, match=r"nope.h5: no such file"):
        open_store(tmp_path / "nope.h5")
    (tmp_path / "text.h5").write_text("hello")
    with pytest.raises(ValueError, match=r"text.h5: not an HDF5 file"):
        open_store(tmp_path / "text.h5")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = 1
    with pytest.raises(ValueError, match=r"other.h5: not an hpcquests store"):
        open_store(tmp_path / "other.h5")
    x, offsets = sample()
    write_store(tmp_path / "s.h5", x, offsets, k=32, cutoff=5.0, rows_per_shard=10)
    os.remove(tmp_path / "s.h5.shards" / "shard-00001.h5")
    with pytest.raises(ValueError, match=r"shard s.h5.shards/shard-00001.h5 is missing"):
        open_store(tmp_path / "s.h5")
    with pytest.raises(ValueError, match=r"offsets"):
        write_store(tmp_path / "bad.h5", x, [0, 5, 3], k=32, cutoff=5.0)


def test_read_structures_errors(tmp_path):
    with pytest.raises(ValueError, match=r"missing.xyz: no such file"):
        read_structures(tmp_path / "missing.xyz")
    (tmp_path / "empty.xyz").write_text("")
    with pytest.raises(ValueError, match=r"empty.xyz: file is empty"):
        read_structures(tmp_path / "empty.xyz")
    (tmp_path / "junk.extxyz").write_text("12\nnot a header\nZz 1 2\n")
    with pytest.raises(ValueError, match=r"junk.extxyz: cannot read structures"):
        read_structures(tmp_path / "junk.extxyz")


def test_checksum(tmp_path):
    p = tmp_path / "f.bin"
    p.write_bytes(b"hpcquests")
    assert file_checksum(p) == "sha256:" + hashlib.sha256(b"hpcquests").hexdigest()
