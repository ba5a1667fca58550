"""Descriptor store: round trip, shards, relocation, atomicity, errors; structure reader errors."""

import hashlib
import os
import re
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
        assert a["format"] == "hpcquests-store" and a["format_version"] == 2
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
    # a rewrite makes new shard files and removes the old ones once its master is in place
    old = set(os.listdir(tmp_path / "many.h5.shards"))
    write_store(tmp_path / "many.h5", x, offsets, k=32, cutoff=5.0, rows_per_shard=1000)
    new = os.listdir(tmp_path / "many.h5.shards")
    assert len(new) == 1 and new[0].startswith("shard-") and new[0].endswith("-00000.h5") and not old & set(new)


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
    second = sorted(os.listdir(tmp_path / "s.h5.shards"))[1]
    os.remove(tmp_path / "s.h5.shards" / second)
    with pytest.raises(ValueError, match=rf"shard s.h5.shards/{second} is missing"):
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


def test_cwd_holding_another_store_does_not_shadow_shards(tmp_path, monkeypatch):
    # HDF5 resolves relative virtual sources against the master's directory before the cwd.
    for name, value in (("a", 1.0), ("b", 2.0)):
        (tmp_path / name).mkdir()
        write_store(tmp_path / name / "s.h5", np.full((4, 3), value), [0, 4], k=2, cutoff=5.0)
    monkeypatch.chdir(tmp_path / "b")
    with h5py.File(tmp_path / "a" / "s.h5", "r") as f:
        plist = f["descriptors"].id.get_create_plist()
        assert re.fullmatch(r"s\.h5\.shards/shard-[0-9a-f]{16}-00000\.h5", plist.get_virtual_filename(0))  # relative
        assert np.all(f["descriptors"][...] == 1.0)
    with open_store(tmp_path / "a" / "s.h5") as s:
        assert np.all(s.read() == 1.0)


def test_hdf5_vds_prefix_shadowing_is_refused(tmp_path, monkeypatch):
    for name, value in (("a", 1.0), ("b", 2.0)):
        (tmp_path / name).mkdir()
        write_store(tmp_path / name / "s.h5", np.full((4, 3), value), [0, 4], k=2, cutoff=5.0)
    # shard names are unique per write; a file under a's shard name in b's folder is the hazard
    a_name, = os.listdir(tmp_path / "a" / "s.h5.shards")
    b_name, = os.listdir(tmp_path / "b" / "s.h5.shards")
    shutil.copy(tmp_path / "b" / "s.h5.shards" / b_name, tmp_path / "b" / "s.h5.shards" / a_name)
    monkeypatch.setenv("HDF5_VDS_PREFIX", str(tmp_path / "b"))
    with h5py.File(tmp_path / "a" / "s.h5", "r") as f:  # the hazard: plain HDF5 reads b's shard
        assert np.all(f["descriptors"][...] == 2.0)
    with pytest.raises(ValueError, match=r"HDF5_VDS_PREFIX"):
        open_store(tmp_path / "a" / "s.h5")
    monkeypatch.setenv("HDF5_VDS_PREFIX", str(tmp_path / "nowhere"))  # no file there: harmless
    with open_store(tmp_path / "a" / "s.h5") as s:
        assert np.all(s.read() == 1.0)


def test_check_compatible(tmp_path):
    x, offsets = sample()
    write_store(tmp_path / "ref.h5", x, offsets, k=32, cutoff=5.0, species=["W", "Ta"], bandwidth=0.015)
    with open_store(tmp_path / "ref.h5") as s:
        s.check_compatible(k=32, cutoff=5.0, species=["Ta", "W"])  # species order does not matter
        s.check_compatible()
        assert s.attrs["bandwidth"] == 0.015
        with pytest.raises(ValueError, match=r"ref.h5 was built with k=32, cutoff=5.0.* but k=16 was asked for"):
            s.check_compatible(k=16, cutoff=5.0)
        with pytest.raises(ValueError, match=r"ref.h5 .* but cutoff=4.0 was asked for"):
            s.check_compatible(k=32, cutoff=4.0)
        with pytest.raises(ValueError, match=r"ref.h5 .* but species=\['Mo', 'W'\] was asked for"):
            s.check_compatible(species=["W", "Mo"])


def test_write_shard_and_master_api(tmp_path):
    x, offsets = sample(5, seed=7)
    n = len(x)
    path = tmp_path / "s.h5"
    si = np.repeat(np.arange(5), np.diff(offsets))
    ai = np.arange(n) - offsets[si]
    cut = n // 2
    # shards written in reverse order (as ranks may finish), master sorts them by row_start
    infos = [store_mod.write_shard(path, i, lo, {"descriptors": x[lo:hi], "structure_index": si[lo:hi],
                                                  "atom_index": ai[lo:hi]})
             for i, (lo, hi) in reversed(list(enumerate([(0, cut), (cut, n)])))]
    assert infos[0]["file"] == os.path.join("s.h5.shards", "shard-00001.h5")
    assert infos[0]["row_start"] == cut and infos[0]["n_rows"] == n - cut
    assert infos[0]["datasets"]["descriptors"] == {"shape": [n - cut, 63], "dtype": "<f8"}
    attrs = store_mod.store_attrs(k=32, cutoff=5.0)
    with pytest.raises(ValueError, match=r"tile"):
        store_mod.write_master(path, infos[:1], offsets, attrs=attrs, n_cols=63)
    with pytest.raises(ValueError, match=r"rows but offsets say"):
        store_mod.write_master(path, infos, offsets[:-1], attrs=attrs, n_cols=63)
    with pytest.raises(ValueError, match=r"63"):
        store_mod.write_master(path, infos, offsets, attrs=attrs, n_cols=64)
    assert not path.exists()
    store_mod.write_master(path, infos, offsets, attrs=attrs, n_cols=63)
    with open_store(path) as s:
        assert np.array_equal(s.read(), x) and s.attrs["n_shards"] == 2
        assert np.array_equal(s.read(rows=slice(cut - 2, cut + 2)), x[cut - 2:cut + 2])


def test_failed_shard_write_leaves_no_temp_file(tmp_path, monkeypatch):
    x, offsets = sample()
    path = tmp_path / "s.h5"
    real = h5py.File

    class Exploding(real):
        def create_dataset(self, name, *a, **k):
            if name == "descriptors":
                raise RuntimeError("interrupted")
            return super().create_dataset(name, *a, **k)

    monkeypatch.setattr(h5py, "File", Exploding)
    with pytest.raises(RuntimeError):
        write_store(path, x, offsets, k=32, cutoff=5.0)
    monkeypatch.undo()
    assert not path.exists()
    assert os.listdir(tmp_path / "s.h5.shards") == []


def test_empty_store(tmp_path):
    write_store(tmp_path / "e.h5", np.zeros((0, 5)), [0], k=3, cutoff=5.0)
    with open_store(tmp_path / "e.h5") as s:
        assert (s.n_env, s.n_structures, s.dim) == (0, 0, 5)
        assert s.read().shape == (0, 5) and list(s.iter_chunks(4)) == []


def test_read_structures_concatenates_in_file_order(tmp_path):
    from ase import Atoms
    from ase.io import write

    from hpcquests.io.structures import is_hdf5

    a = [Atoms("H", positions=[[0, 0, i]]) for i in range(3)]
    b = [Atoms("He2", positions=[[0, 0, 0], [0, 0, 1.5 + i]]) for i in range(2)]
    write(tmp_path / "a.extxyz", a)
    write(tmp_path / "b.extxyz", b)
    got = read_structures([tmp_path / "b.extxyz", str(tmp_path / "a.extxyz")])
    assert [len(g) for g in got] == [2, 2, 1, 1, 1]
    assert [g.positions[-1, 2] for g in got] == [1.5, 2.5, 0.0, 1.0, 2.0]
    assert len(read_structures(tmp_path / "a.extxyz", index="-1")) == 1
    with pytest.raises(ValueError, match=r"--index 5:: selects no frame of .*a.extxyz \(3 frame\(s\)\)"):
        read_structures(tmp_path / "a.extxyz", index="5:")
    assert not is_hdf5(tmp_path / "a.extxyz") and not is_hdf5(tmp_path / "missing.h5")
    with h5py.File(tmp_path / "x.h5", "w"):
        pass
    assert is_hdf5(tmp_path / "x.h5") and not is_store(tmp_path / "x.h5")


def test_checksum_known_value(tmp_path):
    p = tmp_path / "abc.bin"
    p.write_bytes(b"abc")
    assert file_checksum(p) == "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert file_checksum(p, "md5") == "md5:900150983cd24fb0d6963f7d28e17f72"
    big = tmp_path / "big.bin"
    big.write_bytes(b"x" * (3 * (1 << 20) + 5))  # several 1 MiB chunks
    assert file_checksum(big) == "sha256:" + hashlib.sha256(b"x" * (3 * (1 << 20) + 5)).hexdigest()
