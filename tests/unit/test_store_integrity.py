"""Stores are verified or refused: HDF5 fletcher32 checksums on every chunk, NaN / -1 fill
values, non-finite descriptors and rows no shard provides named by store, dataset and row, and
renamed copies relinked (issue: crash-safe, verified, confined storage).

On 1b2157d: flipped bytes gave H = inf and D = nan with exit 0; one NaN in a reference made every
δH inf/nan with exit 0; a missing source read as zeros; a truncated shard gave a raw HDF5 message
and exit 1; a renamed copy read the original's shards."""

import os
import shutil

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hpcquests as hq
from hpcquests import testing
from hpcquests.cli import main as cli_main
from hpcquests.io import chunks as chunks_mod
from hpcquests.io.store import open_store, relink_store, verify_store, write_store
from hpcquests.kernels.checksum import first_nonfinite_row, hdf5_fletcher32
from hpcquests.cli.uq import main as uq_main

from .util_store import reseal

K, RC = 8, 4.0


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch):
    """8 KiB chunks: the small test stores span many chunks, edge chunks and shard boundaries."""
    monkeypatch.setattr(chunks_mod, "CHUNK_BYTES", 8192)


def fletcher32_spec(data: bytes) -> int:
    """HDF5's fletcher32 (H5checksum.c) word by word, as the specification reads."""
    s1 = s2 = 0
    words, i = len(data) // 2, 0
    while words:
        t = min(360, words)
        words -= t
        for _ in range(t):
            s1 = (s1 + ((data[i] << 8) | data[i + 1])) & 0xFFFFFFFF
            s2 = (s2 + s1) & 0xFFFFFFFF
            i += 2
        s1, s2 = (s1 & 0xFFFF) + (s1 >> 16), (s2 & 0xFFFF) + (s2 >> 16)
    if len(data) % 2:
        s1 += data[i] << 8
        s2 += s1
        s1, s2 = (s1 & 0xFFFF) + (s1 >> 16), (s2 & 0xFFFF) + (s2 >> 16)
    s1, s2 = (s1 & 0xFFFF) + (s1 >> 16), (s2 & 0xFFFF) + (s2 >> 16)
    return ((s2 << 16) | s1) & 0xFFFFFFFF


@settings(max_examples=150, deadline=None)
@given(st.binary(min_size=1, max_size=3000))
def test_fletcher32_matches_the_specification(data):
    assert hdf5_fletcher32(data) == fletcher32_spec(data)


@pytest.mark.parametrize("n", [720, 721, 1439, 7200])
@pytest.mark.parametrize("byte", [0x00, 0xFF])
def test_fletcher32_extremes(n, byte):
    data = bytes([byte]) * n  # all-ones words drive every fold to its edge
    assert hdf5_fletcher32(data) == fletcher32_spec(data)


@pytest.mark.parametrize("dtype,shape,chunks", [(np.float64, (1000, 7), (64, 7)), (np.int64, (999,), (100,)),
                                                (np.float32, (50, 3), (7, 3))])
def test_fletcher32_equals_what_hdf5_stores(tmp_path, dtype, shape, chunks):
    x = (np.random.default_rng(0).random(shape) * 1e6).astype(dtype)
    with h5py.File(tmp_path / "h.h5", "w") as f:
        f.create_dataset("d", data=x, chunks=chunks, fletcher32=True)
    with h5py.File(tmp_path / "h.h5") as f, open(tmp_path / "h.h5", "rb") as raw:
        ds = f["d"]
        for i in range(ds.id.get_num_chunks()):
            info = ds.id.get_chunk_info(i)
            raw.seek(info.byte_offset)
            chunk = raw.read(info.size)
            assert hdf5_fletcher32(chunk[:-4]) == int.from_bytes(chunk[-4:], "little")


def test_first_nonfinite_row():
    x = np.random.default_rng(1).random((5000, 9))
    assert first_nonfinite_row(x) == -1
    for row, value in [(4999, np.nan), (1234, np.inf), (0, -np.inf)]:
        y = x.copy()
        y[row, 3] = value
        assert first_nonfinite_row(y) == row
    assert first_nonfinite_row(np.zeros((0, 4))) == -1


def sample(tmp_path, name="s.h5", n=6000, d=13, rows_per_shard=2500):
    x = np.random.default_rng(2).random((n, d))
    off = np.linspace(0, n, 101).astype(np.int64)  # 100 structures
    path = tmp_path / name
    write_store(path, x, off, k=2, cutoff=5.0, rows_per_shard=rows_per_shard, extra={"energy": np.arange(100.0)})
    return path, x


def shard_files(path):
    d = f"{path}.shards"
    return [os.path.join(d, n) for n in sorted(os.listdir(d))]


def test_datasets_are_chunked_checksummed_and_filled(tmp_path):
    path, x = sample(tmp_path)
    with h5py.File(shard_files(path)[0]) as f:
        for name, fill in [("descriptors", np.nan), ("structure_index", -1), ("atom_index", -1)]:
            ds = f[name]
            assert ds.fletcher32 and ds.chunks is not None and ds.compression is None
            assert (np.isnan(ds.fillvalue) if np.isnan(fill) else ds.fillvalue == fill)
    with h5py.File(path) as f:  # plain HDF5 verifies the checksums written by write_direct_chunk
        assert f["descriptors"].is_virtual and np.isnan(f["descriptors"].fillvalue)
        assert f["structure_index"].fillvalue == -1 and f["offsets"].fletcher32
        assert np.array_equal(f["descriptors"][...], x)
    with open_store(path) as s:
        assert np.array_equal(s.read(), x)
        assert np.array_equal(s.read(rows=slice(2400, 2600)), x[2400:2600])  # across shards and chunks
        assert np.array_equal(s.read(rows=slice(17, 18)), x[17:18])
        assert np.array_equal(s.read(rows=[3, 2600, 5999]), x[[3, 2600, 5999]])
        assert np.array_equal(np.concatenate([a for _, a in s.iter_chunks(777)]), x)
        assert s.read(rows=slice(10, 10)).shape == (0, 13)
    assert verify_store(path)["descriptors"] == 6000


@pytest.mark.parametrize("n_rows", [1, 7, 1001])
def test_one_byte_columns_of_odd_length(tmp_path, n_rows):
    """A uint8 column (the UQ scan's float64_recomputed flags) whose chunks hold an odd number of
    bytes: written with HDF5's checksum (plain h5py verifies it) and read back through the
    verified reader (1b2157d..this change: 'its size must be a divisor' when viewing as uint16)."""
    x = np.random.default_rng(0).standard_normal((n_rows, 3))
    flags = (np.arange(n_rows) % 3 == 0).astype(np.uint8)
    path = str(tmp_path / "s.h5")
    write_store(path, x, [0, n_rows], k=32, cutoff=5.0, extra={"flags": flags})
    with h5py.File(path) as f:
        assert np.array_equal(f["flags"][...], flags)
    with open_store(path) as s:
        assert np.array_equal(s.read("flags"), flags)
        assert np.array_equal(s.read("flags", slice(0, max(1, n_rows // 2))), flags[:max(1, n_rows // 2)])


def flip(path, offset):
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x10]))


def chunk_offsets(shard, name="descriptors"):
    with h5py.File(shard) as f:
        ds = f[name]
        return [(ds.id.get_chunk_info(i).byte_offset, ds.id.get_chunk_info(i).size,
                 ds.id.get_chunk_info(i).chunk_offset[0]) for i in range(ds.id.get_num_chunks())]


def test_a_flipped_byte_is_an_error_naming_shard_dataset_and_rows(tmp_path, capsys):
    path, x = sample(tmp_path)
    shard = shard_files(path)[1]  # rows 2500..4999
    offset, size, row0 = chunk_offsets(shard)[1]
    flip(shard, offset + 100)
    rows = f"rows {2500 + row0}-"
    with open_store(path) as s:
        with pytest.raises(ValueError, match=rf"store .*s.h5: shard s.h5.shards/{os.path.basename(shard)} dataset "
                                             rf"'descriptors' {rows}\d+ fail their checksum"):
            s.read()
        assert np.array_equal(s.read(rows=slice(0, 2500)), x[:2500])  # the rest still reads
        with pytest.raises(ValueError, match=r"dataset 'descriptors' cannot be read .*checksum"):
            s.read(rows=[2500 + row0 + 1])  # through HDF5, which verifies the checksum itself
    with h5py.File(path) as f, pytest.raises(OSError):
        f["descriptors"][...]  # any HDF5 reader refuses it too
    # the commands: exit 2 and one line naming the shard, never H = inf with exit 0
    assert cli_main(["entropy", str(path), "-k", "2", "--cutoff", "5", "-q"]) == 2
    err = capsys.readouterr().err
    assert "fail their checksum" in err and os.path.basename(shard) in err
    assert cli_main(["store", "verify", str(path)]) == 2
    assert "fail their checksum" in capsys.readouterr().err


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_flipped_data_byte_is_refused(tmp_path, data):
    """A flip anywhere in any dataset's stored chunks is refused, never read as a number."""
    path, x = sample(tmp_path, name=f"h{data.draw(st.integers(0, 10**9))}.h5", n=600, d=5, rows_per_shard=250)
    shard = data.draw(st.sampled_from(shard_files(path)))
    name = data.draw(st.sampled_from(["descriptors", "structure_index", "atom_index"]))
    offset, size, _ = data.draw(st.sampled_from(chunk_offsets(shard, name)))
    flip(shard, offset + data.draw(st.integers(0, size - 1)))
    with pytest.raises(ValueError, match=r"checksum"):
        verify_store(path)


def test_a_nan_in_a_reference_is_refused_naming_store_and_row(tmp_path, capsys):
    train = [testing.perturbed_crystal("bcc", "Ta", size=(3, 3, 3), noise=0.05, seed=s) for s in range(2)]
    x = hq.get_descriptors(train, k=K, cutoff=RC)
    x[40, 2] = np.nan
    write_store(tmp_path / "ref.h5", x, [0, 54, len(x)], k=K, cutoff=RC, species=["Ta"])
    with open_store(tmp_path / "ref.h5") as s, pytest.raises(ValueError, match=r"ref.h5: dataset 'descriptors' "
                                                                                 r"row 40 holds a non-finite"):
        s.read()
    dump = tmp_path / "t.lammpstrj"
    testing.write_lammps_dump(dump, [train[0]])
    code = uq_main([str(dump), str(tmp_path / "ref.h5"), "--out", str(tmp_path / "o"), "--types", "1=Ta",
                    "-k", str(K), "--cutoff", str(RC), "-q"])
    assert code == 2
    err = capsys.readouterr().err
    assert "ref.h5: dataset 'descriptors' row 40 holds a non-finite value" in err
    assert not (tmp_path / "o" / "summary.json").exists()
    assert cli_main(["dh", str(tmp_path / "ref.h5"), str(tmp_path / "ref.h5"), "-k", str(K), "--cutoff",
                     str(RC), "-q"]) == 2
    assert "row 40 holds a non-finite value" in capsys.readouterr().err


def test_rows_no_shard_provides_are_refused(tmp_path):
    """A master whose layout leaves rows uncovered (HDF5 would serve the fill value) is refused."""
    path, x = sample(tmp_path, n=100, d=4, rows_per_shard=50)
    first = os.path.relpath(shard_files(path)[0], tmp_path)
    with h5py.File(path, "a") as f:
        for name, dtype in [("descriptors", np.float64), ("structure_index", np.int64)]:
            shape = f[name].shape
            del f[name]
            layout = h5py.VirtualLayout(shape=shape, dtype=dtype)
            layout[:50] = h5py.VirtualSource(first, name, shape=(50, *shape[1:]))
            f.create_virtual_dataset(name, layout, fillvalue=np.nan if dtype == np.float64 else -1)
    reseal(path)
    with open_store(path) as s:
        with pytest.raises(ValueError, match=r"dataset 'descriptors' row 50 holds no data"):
            s.read()
        with pytest.raises(ValueError, match=r"dataset 'descriptors' row \d+ of the selection holds a non-finite"):
            s.read(rows=[1, 70])
        with pytest.raises(ValueError, match=r"dataset 'structure_index' row 1 of the selection holds the fill "
                                             r"value -1"):
            s.read("structure_index", rows=[3, 70])
        assert np.array_equal(s.read(rows=slice(0, 50)), x[:50])


def test_a_truncated_shard_is_refused_naming_it(tmp_path, capsys):
    path, _ = sample(tmp_path)
    shard = shard_files(path)[2]
    os.truncate(shard, os.path.getsize(shard) - 1000)
    assert cli_main(["entropy", str(path), "-k", "2", "--cutoff", "5", "-q"]) == 2
    err = capsys.readouterr().err
    assert f"shard s.h5.shards/{os.path.basename(shard)} has" in err and "the master recorded" in err


def test_a_damaged_master_is_refused_or_reads_whole(tmp_path):
    """Every 64-byte overwrite of the master (metadata checksummed: HDF5 1.10 format) is refused
    naming the store, or hit unused bytes and the store reads exactly as before."""
    path, x = sample(tmp_path)
    original = path.read_bytes()
    refused = 0
    for offset in range(0, len(original) - 64, 48):
        path.write_bytes(original[:offset] + b"\xff" * 64 + original[offset + 64:])
        try:
            with open_store(path) as s:
                same = (np.array_equal(s.read(), x) and np.array_equal(s.read("energy"), np.arange(100.0))
                        and s.k == 2 and s.n_env == 6000)
        except ValueError as exc:
            assert str(exc).startswith(f"store {path}: "), exc
            refused += 1
        else:
            assert same, offset
    assert refused > 0


def test_a_renamed_copy_is_relinked(tmp_path, capsys):
    path, x = sample(tmp_path, name="train.h5")
    shutil.copy(path, tmp_path / "copy.h5")
    shutil.copytree(f"{path}.shards", tmp_path / "copy.h5.shards")
    with pytest.raises(ValueError, match=r"run: hpcquests store relink .*copy.h5"):
        open_store(tmp_path / "copy.h5")
    assert cli_main(["store", "relink", str(tmp_path / "copy.h5")]) == 0
    assert "now read from its own copy.h5.shards/ (were train.h5.shards)" in capsys.readouterr().out
    shutil.rmtree(f"{path}.shards")  # the copy no longer needs the original's shards
    with open_store(tmp_path / "copy.h5") as s:
        assert np.array_equal(s.read(), x) and np.array_equal(s.read("energy"), np.arange(100.0))
        assert s.k == 2 and s.n_structures == 100
    with h5py.File(tmp_path / "copy.h5") as f:
        assert np.array_equal(f["descriptors"][...], x)


def test_relink_refuses_an_incomplete_copy(tmp_path):
    path, _ = sample(tmp_path, name="train.h5")
    shutil.copy(path, tmp_path / "copy.h5")
    shutil.copytree(f"{path}.shards", tmp_path / "copy.h5.shards")
    os.remove(shard_files(tmp_path / "copy.h5")[1])
    with pytest.raises(ValueError, match=r"copy.h5.shards/shard-.*is missing; copy the whole shard folder"):
        relink_store(tmp_path / "copy.h5")
    with open_store(path) as s:  # the original untouched
        assert s.n_env == 6000


def test_damaged_shard_metadata_is_refused_before_hdf5_reads_it(tmp_path):
    """Bytes of a shard outside its chunks (HDF5's metadata) are summed in the master: every
    64-byte overwrite there is refused naming the shard (HDF5 itself may crash on such bytes)."""
    path, x = sample(tmp_path, n=600, d=5, rows_per_shard=250)
    shard = shard_files(path)[1]
    runs = sorted((o, n) for name in ("descriptors", "structure_index", "atom_index")
                  for o, n, _ in chunk_offsets(shard, name))
    original = open(shard, "rb").read()
    in_chunk = np.zeros(len(original), dtype=bool)
    for o, n in runs:
        in_chunk[o:o + n] = True
    offsets = [o for o in range(0, len(original) - 64, 97) if not in_chunk[o:o + 64].any()]
    assert len(offsets) > 10
    for offset in offsets:
        with open(shard, "wb") as f:
            f.write(original[:offset] + b"\x5a" * 64 + original[offset + 64:])
        with pytest.raises(ValueError, match=rf"shard s.h5.shards/{os.path.basename(shard)}: its HDF5 metadata "
                                             r"fails its checksum"):
            open_store(path)


def test_a_master_without_its_seal_is_refused(tmp_path):
    path, _ = sample(tmp_path)
    with open(path, "r+b") as f:
        f.write(b"\0" * 512)  # the user block HDF5 skips
    with h5py.File(path) as f:  # plain HDF5 still reads it ...
        assert f["descriptors"].shape == (6000, 13)
    with pytest.raises(ValueError, match=r"s.h5: the master has lost its checksum seal"):
        open_store(path)  # ... but it is no longer known to be what hpcquests wrote


# --- the writer's chunk records: one pass per chunk on read, and no fletcher32 blind spot


def shard_entries(path):
    import json

    with h5py.File(path) as f:
        return {os.path.basename(s["file"]): s for s in json.loads(f.attrs["shards"])}


def test_chunk_records_and_tables_describe_the_bytes_written(tmp_path):
    """Per float64 chunk the writer records HDF5's fletcher32 (the trailer), the flipped
    fletcher32 (every big-endian word XOR 0x8000: each even byte XOR 0x80) and whether every
    value was finite (an edge chunk's NaN padding does not count); the master's table gives
    each chunk's offset as the shard's own index does."""
    path, x = sample(tmp_path, n=3000, d=13, rows_per_shard=1300)
    x_nan = x.copy()
    x_nan[1700, 4] = np.nan
    write_store(tmp_path / "n.h5", x_nan, [0, 3000], k=2, cutoff=5.0, rows_per_shard=1300)
    for store, bad_row in ((path, None), (tmp_path / "n.h5", 1700)):
        entries = shard_entries(store)
        for shard in shard_files(store):
            table = entries[os.path.basename(shard)]["chunks"]["descriptors"]
            row_start = entries[os.path.basename(shard)]["row_start"]
            stored = sorted(chunk_offsets(shard), key=lambda c: c[2])
            from_table = [offset + j * table["size"] for _, offset, count in table["runs"] for j in range(count)]
            assert from_table == [o for o, _, _ in stored] and {size for _, size, _ in stored} == {table["size"]}
            data = open(shard, "rb").read()
            records = table["records"]
            assert len(records) == len(stored)
            for i, (offset, size, row0) in enumerate(stored):
                body = bytearray(data[offset:offset + size - 4])
                trailer = int.from_bytes(data[offset + size - 4:offset + size], "little")
                flipped = bytearray(body)
                flipped[0::2] = bytes(b ^ 0x80 for b in body[0::2])
                rows = range(row_start + row0, row_start + min(row0 + table["rows"],
                                                                entries[os.path.basename(shard)]["n_rows"]))
                finite = bad_row is None or bad_row not in rows
                assert records[i] == [trailer, fletcher32_spec(bytes(flipped)), int(finite)]
                assert trailer == fletcher32_spec(bytes(body))
        with h5py.File(shard_files(store)[0]) as f:  # the shard carries them too
            assert f["descriptors"].attrs["chunk_records"].shape == (len(chunk_offsets(shard_files(store)[0])), 3)
    with open_store(path) as s:
        assert np.array_equal(s.read(), x)
    with open_store(tmp_path / "n.h5") as s, pytest.raises(ValueError, match=r"row 1700 holds a non-finite"):
        s.read()


def test_a_zero_turned_nan_that_fletcher32_misses_is_refused(tmp_path):
    """HDF5's fletcher32 cannot tell a 16-bit word 0x0000 from 0xFFFF; in a float64 0.0 the
    word holding sign and exponent becomes NaN that way. Plain HDF5 serves the NaN; the
    store's reader refuses it naming the row (the flipped record differs, and the values are
    then scanned)."""
    x = np.random.default_rng(5).random((3000, 13))
    x[2222, 6] = 0.0
    path = tmp_path / "z.h5"
    write_store(path, x, [0, 3000], k=2, cutoff=5.0, rows_per_shard=1300)
    shard = shard_files(path)[1]  # rows 1300..2599
    rows = next(v["chunks"]["descriptors"]["rows"] for v in shard_entries(path).values())
    local = 2222 - 1300
    offset = next(o for o, _, r0 in chunk_offsets(shard) if r0 <= local < r0 + rows)
    at = offset + ((local % rows) * 13 + 6) * 8 + 6  # bytes 6 and 7 of the little-endian value
    with open(shard, "r+b") as f:
        f.seek(at)
        assert f.read(2) == b"\0\0"
        f.seek(at)
        f.write(b"\xff\xff")
    with h5py.File(path) as f:
        assert np.isnan(f["descriptors"][2222, 6])  # HDF5's checksum still passes
    with open_store(path) as s:
        with pytest.raises(ValueError, match=r"z.h5: dataset 'descriptors' row 2222 holds a non-finite"):
            s.read()
        with pytest.raises(ValueError, match=r"row 2222 holds a non-finite"):
            s.read(rows=slice(2200, 2300))  # a part of the chunk
    assert cli_main(["store", "verify", str(path)]) == 2


def test_an_in_place_hdf5_edit_is_read_with_every_value_checked(tmp_path):
    """An HDF5 writer editing a shard in place updates HDF5's checksum but not the record: the
    chunk is then verified with HDF5's checksum and every value scanned, as without records."""
    path, x = sample(tmp_path)
    shard = shard_files(path)[0]
    with h5py.File(shard, "r+") as f:
        f["descriptors"][5, 3] = 7.0
    with open_store(path) as s:
        y = s.read()
    assert y[5, 3] == 7.0 and np.array_equal(np.delete(y.ravel(), 5 * 13 + 3), np.delete(x.ravel(), 5 * 13 + 3))
    with h5py.File(shard, "r+") as f:
        f["descriptors"][5, 3] = np.inf
    with open_store(path) as s, pytest.raises(ValueError, match=r"row 5 holds a non-finite"):
        s.read()


def test_stores_without_tables_or_records_read_the_same(tmp_path, monkeypatch):
    """A store written before the tables and records (or by another writer): the shard's own
    chunk index is read and every chunk fully checked; a table that does not fit the shard's
    data runs is not used."""
    from hpcquests.io import store as store_mod

    path, x = sample(tmp_path)
    entry = next(iter(shard_entries(path).values()))
    plan = store_mod._plan_from_table(entry, "descriptors", "p", np.float64, (13,))
    assert plan is not None and plan["records"] is not None and len(plan["chunks"]) == -(-2500 // plan["rows"])
    crafted = {**entry, "chunks": {"descriptors": {**entry["chunks"]["descriptors"],
                                                   "runs": [[0, entry["size"], 99]]}}}
    assert store_mod._plan_from_table(crafted, "descriptors", "p", np.float64, (13,)) is None  # outside the data
    assert store_mod._plan_from_table(entry, "descriptors", "p", np.float64, (12,)) is None  # another shape
    for name in ("old.h5", "nan.h5"):
        monkeypatch.setattr(store_mod, "_chunk_table", lambda ds, stored: None)
        monkeypatch.setattr(chunks_mod, "CHUNK_RECORDS", "not_read")
        y = x.copy()
        if name == "nan.h5":
            y[4321, 0] = -np.inf
        write_store(tmp_path / name, y, [0, 6000], k=2, cutoff=5.0, rows_per_shard=2500)
        monkeypatch.undo()
        monkeypatch.setattr(chunks_mod, "CHUNK_BYTES", 8192)
        assert all(not e["chunks"] for e in shard_entries(tmp_path / name).values())
        with open_store(tmp_path / name) as s:
            if name == "old.h5":
                assert np.array_equal(s.read(), x) and np.array_equal(s.read(rows=slice(77, 2600)), x[77:2600])
            else:
                with pytest.raises(ValueError, match=r"row 4321 holds a non-finite"):
                    s.read()
