"""Dataset readers: ColabFit Parquet exports (layout variants, several files, lazy row groups),
extxyz and ASE formats, errors naming file/row/column, atomic selection output."""

import os

import ase.io
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hpcquests import testing
from hpcquests.io import colabfit, structures


@pytest.fixture(scope="module")
def frames():
    return testing.make_compression_dataset(n_ordinary=6, seed=1)


def same(a, b, atol=0.0):
    """Parquet keeps every bit; extxyz writes 8 decimals (atol 1e-8)."""
    np.testing.assert_array_equal(a.numbers, b.numbers)
    np.testing.assert_allclose(a.positions, b.positions, rtol=0, atol=atol)
    np.testing.assert_allclose(a.cell.array, b.cell.array, rtol=0, atol=atol)
    assert list(a.pbc) == list(b.pbc)
    assert a.get_potential_energy() == pytest.approx(b.get_potential_energy(), abs=atol)
    np.testing.assert_allclose(a.get_forces(), b.get_forces(), rtol=0, atol=atol)


def test_round_trip_directory_layout(frames, tmp_path):
    path = testing.write_colabfit_parquet(tmp_path / "ds", frames, row_group_size=3)
    assert path == str(tmp_path / "ds" / "co" / "co_0.parquet")
    assert pq.ParquetFile(path).num_row_groups == 4
    got, ids = structures.read_dataset(tmp_path / "ds")
    assert ids == [f"CO_{i:08d}" for i in range(len(frames))]
    assert len(got) == len(frames)
    for a, b in zip(got, frames):
        same(a, b)
    assert structures.count_structures(tmp_path / "ds") == len(frames)
    assert structures.read_dataset(path)[1] == ids  # the file itself


def test_several_files_sorted_and_read_lazily(frames, tmp_path, monkeypatch):
    d = tmp_path / "coll" / "co"
    d.mkdir(parents=True)
    colabfit.write_colabfit_parquet(d / "co_1.parquet", frames[5:], ids=[f"b{i}" for i in range(len(frames) - 5)])
    colabfit.write_colabfit_parquet(d / "co_0.parquet", frames[:5], ids=[f"a{i}" for i in range(5)], row_group_size=2)
    (tmp_path / "coll" / "ds.parquet").write_bytes(b"not read: outside co/")
    calls = []
    original = pq.ParquetFile.read_row_group

    def spy(self, i, columns=None, **kw):
        calls.append((i, tuple(columns)))
        return original(self, i, columns=columns, **kw)

    monkeypatch.setattr(pq.ParquetFile, "read_row_group", spy)
    got = list(colabfit.iter_colabfit_parquet(tmp_path / "coll"))
    # rows are grouped into configurations (a configuration's rows may be anywhere), so every row
    # group is read, once each, one at a time, and only the columns used
    assert all(set(cols) == {"positions", "atomic_numbers", "cell", "pbc", "configuration_id", "energy",
                             "atomic_forces"} for _, cols in calls)  # not the extra columns
    ids = [c for _, c in got]
    assert ids == [f"a{i}" for i in range(5)] + [f"b{i}" for i in range(len(frames) - 5)]
    assert len(calls) == 3 + 1


def test_variants_flat_lists_missing_optional_columns(tmp_path):
    mol = testing.molecule(n_atoms=5, seed=0)
    slab = testing.surface_slab(size=(2, 2, 2), seed=0)
    table = pa.table({
        "positions": pa.array([mol.positions.ravel().tolist(), slab.positions.ravel().tolist()],
                              pa.list_(pa.float64())),
        "atomic_numbers": pa.array([mol.numbers.tolist(), slab.numbers.tolist()], pa.list_(pa.int64())),
        "cell": pa.array([None, slab.cell.array.ravel().tolist()], pa.list_(pa.float64())),
        "names": pa.array([["x"], ["y"]]),
    })
    pq.write_table(table, tmp_path / "v.parquet")
    got, ids = structures.read_dataset(tmp_path / "v.parquet")
    assert ids == ["v.parquet:0", "v.parquet:1"]
    np.testing.assert_array_equal(got[0].positions, mol.positions)
    assert list(got[0].pbc) == [False] * 3 and got[0].calc is None
    assert list(got[1].pbc) == [True, True, True]  # no pbc column: periodic where the cell is non-zero
    np.testing.assert_array_equal(got[1].cell.array, slab.cell.array)


def write(tmp_path, name, **cols):
    path = tmp_path / name
    pq.write_table(pa.table(cols), path)
    return path


@pytest.mark.parametrize("cols, message", [
    (dict(atomic_numbers=pa.array([[73]]), energy=pa.array([1.0])), "no positions column"),
    (dict(positions=pa.array([[[0.0, 0, 0]]])), "no atomic_numbers column"),
    (dict(positions=pa.array([[[0.0, 0, 0]], None]), atomic_numbers=pa.array([[73], [73]])),
     "row 1: column 'positions' is null"),
    (dict(positions=pa.array([[[0.0, 0, 0], [1.0, 1, 1]]]), atomic_numbers=pa.array([[73]]),
          configuration_id=pa.array(["CO_x"])), "row 0 (CO_x): 2 positions but 1 atomic_numbers"),
    (dict(positions=pa.array([[[0.0, 0]]]), atomic_numbers=pa.array([[73]])),
     "column 'positions' has an entry of length 2, expected 3"),
    (dict(positions=pa.array([[[0.0, float("nan"), 0]]]), atomic_numbers=pa.array([[73]])),
     "row 0: column 'positions' holds a non-finite value"),
    (dict(positions=pa.array([[[0.0, 0, 0]]]), atomic_numbers=pa.array([[0]])), "atomic_numbers must be integers"),
    (dict(positions=pa.array([[[0.0, 0, 0]]]), atomic_numbers=pa.array([[73]]), pbc=pa.array([[True, True, True]])),
     "pbc is set along cell vector 0 but the structure has no cell"),
    (dict(positions=pa.array([[[0.0, 0, 0]]]), atomic_numbers=pa.array([[73]]),
          cell=pa.array([[[3.0, 0, 0], [3.0, 0, 0], [0, 0, 3.0]]])), "linearly dependent"),
    (dict(positions=pa.array([[[0.0, 0, 0]]]), atomic_numbers=pa.array([[73]]),
          atomic_forces=pa.array([[[0.0, 0, 0], [0.0, 0, 0]]])), "2 forces for 1 atoms"),
    (dict(positions=pa.array([[[0.0, 0, 0]]]), atomic_numbers=pa.array([[73]]), energy=pa.array(["high"])),
     "column 'energy' is not a number"),
])
def test_malformed_tables_name_file_row_column(tmp_path, cols, message):
    path = write(tmp_path, "bad.parquet", **cols)
    with pytest.raises(ValueError) as err:
        structures.read_dataset(path)
    assert message in str(err.value) and "bad.parquet" in str(err.value)


def test_missing_empty_and_garbage(tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        structures.read_dataset(tmp_path / "nope")
    (tmp_path / "emptydir").mkdir()
    with pytest.raises(ValueError, match="a directory without Parquet files"):
        structures.read_dataset(tmp_path / "emptydir")
    (tmp_path / "junk.parquet").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="junk.parquet: not a readable Parquet file"):
        structures.read_dataset(tmp_path / "junk.parquet")
    (tmp_path / "empty.extxyz").write_text("")
    with pytest.raises(ValueError, match="empty"):
        structures.read_dataset(tmp_path / "empty.extxyz")


def test_extxyz_ids_and_pbc_without_cell(frames, tmp_path):
    a = [f.copy() for f in frames[:3]]
    a[1].info["configuration_id"] = "CO_named"
    ase.io.write(tmp_path / "d.extxyz", a, parallel=False)
    _, ids = structures.read_dataset(tmp_path / "d.extxyz")
    assert ids == ["0", "CO_named", "2"]
    bad = frames[0].copy()
    bad.cell = np.zeros((3, 3))
    bad.pbc = True
    ase.io.write(tmp_path / "bad.extxyz", [frames[1], bad], parallel=False, format="extxyz")
    text = (tmp_path / "bad.extxyz").read_text()
    assert 'pbc="T T T"' in text
    with pytest.raises(ValueError, match=r"bad.extxyz: frame 1: pbc is set"):
        structures.read_dataset(tmp_path / "bad.extxyz")


def test_write_selection(frames, tmp_path):
    colabfit.write_selection(tmp_path / "sel", frames, [3, 0], ["c", "a"])
    assert (tmp_path / "sel" / "indices.txt").read_text() == "3\n0\n"
    assert (tmp_path / "sel" / "ids.txt").read_text() == "c\na\n"
    got = ase.io.read(tmp_path / "sel" / "selected.extxyz", ":", parallel=False)
    same(got[0], frames[3], atol=1e-8)
    same(got[1], frames[0], atol=1e-8)
    assert not [p for p in os.listdir(tmp_path / "sel") if p.startswith(".")]
