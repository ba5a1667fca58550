"""Store writes commit at the master: new shard files on every write, the old ones removed only
after the new master is in place; opening checks every virtual source against the master's own
shard list and folder and the recorded sizes (part of the crash-safe storage work)."""

import os
import shutil

import h5py
import numpy as np
import pytest

from hpcquests.io import store as store_mod
from hpcquests.io.store import open_store, write_store

from .util_store import reseal


def sample(n=30, d=5, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, d)), [0, n // 3, n]


def test_a_write_that_dies_before_its_master_leaves_the_old_store_whole(tmp_path):
    x, off = sample()
    path = tmp_path / "s.h5"
    write_store(path, x, off, k=2, cutoff=5.0, rows_per_shard=10)
    old = sorted(os.listdir(tmp_path / "s.h5.shards"))
    # a second write whose process died after its shards, before its master
    wid = store_mod.new_write_id()
    for i in range(3):
        store_mod.write_shard(path, i, 10 * i, {"descriptors": np.zeros((10, 5))}, wid)
    with open_store(path) as s:  # 1b2157d replaced shards in place: half old, half new
        assert np.array_equal(s.read(), x)
    assert len(os.listdir(tmp_path / "s.h5.shards")) == 6
    x2 = x + 1.0
    write_store(path, x2, off, k=2, cutoff=5.0, rows_per_shard=10)
    left = sorted(os.listdir(tmp_path / "s.h5.shards"))
    assert len(left) == 3 and not set(left) & set(old) and not any(wid in n for n in left)
    with open_store(path) as s:
        assert np.array_equal(s.read(), x2)


def test_renamed_copy_is_refused_naming_the_original(tmp_path):
    x, off = sample()
    write_store(tmp_path / "train.h5", x, off, k=2, cutoff=5.0)
    shutil.copy(tmp_path / "train.h5", tmp_path / "backup.h5")
    shutil.copytree(tmp_path / "train.h5.shards", tmp_path / "backup.h5.shards")
    with pytest.raises(ValueError, match=r"store .*backup.h5: dataset '.*' reads train.h5.shards/.* outside the "
                                         r"store's own shard folder backup.h5.shards/ \(a renamed copy"):
        open_store(tmp_path / "backup.h5")
    with open_store(tmp_path / "train.h5") as s:  # the original is fine, and plain h5py reads it in place
        assert np.array_equal(s.read(), x)
    with h5py.File(tmp_path / "train.h5") as f:
        assert np.array_equal(f["descriptors"][...], x)


def test_sources_outside_the_store_or_not_listed_are_refused(tmp_path):
    x, off = sample()
    (tmp_path / "a").mkdir()
    write_store(tmp_path / "a" / "s.h5", x, off, k=2, cutoff=5.0)
    shard, = os.listdir(tmp_path / "a" / "s.h5.shards")
    shutil.copy(tmp_path / "a" / "s.h5.shards" / shard, tmp_path / "outside.h5")
    for source in ("../outside.h5", str(tmp_path / "outside.h5")):
        with h5py.File(tmp_path / "a" / "s.h5", "a") as f:
            layout = h5py.VirtualLayout(shape=x.shape, dtype=np.float64)
            layout[:] = h5py.VirtualSource(source, "descriptors", shape=x.shape)
            del f["descriptors"]
            f.create_virtual_dataset("descriptors", layout)
        with pytest.raises(ValueError, match=r"s.h5: the master fails its checksum"):
            open_store(tmp_path / "a" / "s.h5")
        reseal(tmp_path / "a" / "s.h5")  # a crafter can re-seal: the source checks still refuse it
        with pytest.raises(ValueError, match=r"reads .*outside.h5, outside the store's own shard folder"):
            open_store(tmp_path / "a" / "s.h5")


def test_shard_of_another_size_is_refused(tmp_path):
    x, off = sample()
    write_store(tmp_path / "s.h5", x, off, k=2, cutoff=5.0)
    shard, = os.listdir(tmp_path / "s.h5.shards")
    with open(tmp_path / "s.h5.shards" / shard, "ab") as fh:
        fh.write(b"\0" * 100)
    with pytest.raises(ValueError, match=rf"shard s.h5.shards/{shard} has \d+ bytes, the master recorded \d+"):
        open_store(tmp_path / "s.h5")


def test_shards_of_a_failed_write_are_freed_before_the_next_write(tmp_path):
    """A write that failed (disk full) left complete shards of its own; the next write removes
    them before writing, so the space they hold is free for it. Only with a whole master."""
    x, off = sample()
    path = tmp_path / "s.h5"
    write_store(path, x, off, k=2, cutoff=5.0, rows_per_shard=10)
    kept = sorted(os.listdir(tmp_path / "s.h5.shards"))
    store_mod.write_shard(path, 0, 0, {"descriptors": np.zeros((10, 5))}, store_mod.new_write_id())
    assert len(os.listdir(tmp_path / "s.h5.shards")) == 4
    store_mod.remove_orphan_shards(path)
    assert sorted(os.listdir(tmp_path / "s.h5.shards")) == kept
    with open_store(path) as s:
        assert np.array_equal(s.read(), x)
    store_mod.write_shard(path, 0, 0, {"descriptors": np.zeros((10, 5))}, store_mod.new_write_id())
    with open(path, "r+b") as f:  # a master that is not whole: nothing is removed before the write
        f.seek(600)
        f.write(b"\xff" * 8)
    store_mod.remove_orphan_shards(path)
    assert len(os.listdir(tmp_path / "s.h5.shards")) == 4
