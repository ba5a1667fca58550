"""Datasets for compression: ColabFit Parquet exports, their extxyz exports, anything ASE reads.

A ColabFit Parquet export is one table per file, one row per configuration, with (among many
others) the columns

    configuration_id   string                     (the id kept in the selection's ids.txt)
    positions          list<list<double>>  (n, 3) Å  (a flat list of 3n values is accepted too)
    atomic_numbers     list<int>           (n,)
    cell               list<list<double>>  (3, 3) Å  (flat 9 accepted; null or missing → no cell)
    pbc                list<bool>          (3,)      (missing → periodic where the cell vector is non-zero)
    energy             double              eV        (optional)
    atomic_forces      list<list<double>>  (n, 3) eV/Å (optional)

A dataset is a ``.parquet`` file or a directory of them (its ``co/`` folder when there is one,
else every ``*.parquet`` below it, in sorted order). Only the columns above are read, one row
group at a time, so wide tables with dozens of extra columns cost nothing; missing optional
columns are tolerated (no energy/forces → no calculator). Errors name the file, the row and
the column.

Everything else is read with ASE (``parallel=False``: ASE's I/O turns collective once mpi4py
is imported).
"""

from __future__ import annotations

import glob
import json
import os
import re

import numpy as np

PARQUET_SUFFIXES = (".parquet", ".pq")
#: Column names tried, in order, for each quantity (ColabFit's names first, then common variants).
ID_COLUMNS = ("configuration_id", "co_id", "id", "configuration_hash", "hash", "name")
ENERGY_COLUMNS = ("energy", "energy_energy", "potential_energy", "total_energy")
FORCE_COLUMNS = ("atomic_forces", "atomic_forces_forces", "forces")
INFO_ID_KEYS = ("configuration_id", "co_id", "id", "name")


# --------------------------------------------------------------------------- discovery

def is_parquet_dataset(path) -> bool:
    """True for a ``.parquet`` file or a directory holding Parquet files."""
    path = os.fspath(path)
    if os.path.isdir(path):
        return bool(parquet_files(path, required=False))
    return path.lower().endswith(PARQUET_SUFFIXES)


def parquet_files(path, *, required: bool = True) -> list[str]:
    """The Parquet files of a dataset: the file itself, or ``<dir>/co/*.parquet`` when that
    folder exists, else every ``*.parquet`` below ``<dir>``, sorted."""
    path = os.fspath(path)
    if os.path.isfile(path):
        return [path]
    files = []
    if os.path.isdir(path):
        co = os.path.join(path, "co")
        root = co if os.path.isdir(co) else path
        for suffix in PARQUET_SUFFIXES:
            files += glob.glob(os.path.join(root, "**", "*" + suffix), recursive=True)
    files = sorted(set(files))
    if required and not files:
        raise ValueError(f"dataset {path}: no Parquet files found")
    return files


def _open(path):
    import pyarrow.parquet as pq

    if os.path.getsize(path) == 0:
        raise ValueError(f"{path}: file is empty")
    try:
        return pq.ParquetFile(path)
    except Exception as exc:
        raise ValueError(f"{path}: not a readable Parquet file ({type(exc).__name__}: {exc})") from None


def _pick(names, candidates):
    for c in candidates:
        if c in names:
            return c
    return None


# --------------------------------------------------------------------------- column decoding

def _rows_of(column, name, file, row0, width, nested_ok=True, optional_rows=False):
    """Split a list column into per-row (n_i, width) float arrays (None for null rows when
    ``optional_rows``). Accepts list<list<x>> with inner length ``width`` or flat list<x> of
    length divisible by ``width``."""
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if not pa.types.is_list(arr.type) and not pa.types.is_large_list(arr.type) \
            and not pa.types.is_fixed_size_list(arr.type):
        raise ValueError(f"{file}: column {name!r} has type {arr.type}, expected a list")
    n_rows = len(arr)
    valid = np.ones(n_rows, dtype=bool) if arr.null_count == 0 else ~np.asarray(arr.is_null())
    if not valid.all() and not optional_rows:
        bad = int(np.flatnonzero(~valid)[0])
        raise ValueError(f"{file}: row {row0 + bad}: column {name!r} is null")
    lengths = np.asarray(pc.fill_null(pc.list_value_length(arr), 0), dtype=np.int64)
    inner = arr.flatten()
    value_type = inner.type
    nested = pa.types.is_list(value_type) or pa.types.is_large_list(value_type) or pa.types.is_fixed_size_list(value_type)
    try:
        if nested:
            inner_len = np.asarray(pc.fill_null(pc.list_value_length(inner), -1), dtype=np.int64)
            if inner_len.size and (inner_len != width).any():
                k = int(np.flatnonzero(inner_len != width)[0])
                row = int(np.searchsorted(np.cumsum(lengths), k, side="right"))
                raise ValueError(f"{file}: row {row0 + row}: column {name!r} has an entry of length "
                                 f"{inner_len[k]}, expected {width}")
            values = np.asarray(inner.flatten().to_numpy(zero_copy_only=False), dtype=np.float64)
            counts = lengths
        else:
            values = np.asarray(inner.to_numpy(zero_copy_only=False), dtype=np.float64)
            if (lengths % width).any():
                row = int(np.flatnonzero(lengths % width)[0])
                raise ValueError(f"{file}: row {row0 + row}: column {name!r} has {lengths[row]} values, "
                                 f"not a multiple of {width}")
            counts = lengths // width
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as exc:
        if isinstance(exc, ValueError) and str(exc).startswith(str(file)):
            raise
        raise ValueError(f"{file}: column {name!r} cannot be read as numbers ({exc})") from None
    if not np.isfinite(values).all():
        k = int(np.flatnonzero(~np.isfinite(values))[0]) // width
        row = int(np.searchsorted(np.cumsum(counts), k, side="right"))
        raise ValueError(f"{file}: row {row0 + row}: column {name!r} holds a non-finite value")
    values = values.reshape(-1, width)
    ends = np.cumsum(counts)
    out = []
    for i in range(n_rows):
        out.append(values[ends[i] - counts[i]:ends[i]] if valid[i] else None)
    return out


def _scalar_rows(column, name, file, row0):
    import pyarrow as pa

    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    try:
        vals = arr.to_pylist()
    except Exception as exc:  # pragma: no cover - pyarrow conversion failure
        raise ValueError(f"{file}: column {name!r} cannot be read ({exc})") from None
    out = []
    for i, v in enumerate(vals):
        if v is None:
            out.append(None)
            continue
        try:
            out.append(float(v))
        except (TypeError, ValueError):
            raise ValueError(f"{file}: row {row0 + i}: column {name!r} is not a number ({v!r})") from None
    return out


# --------------------------------------------------------------------------- reading

#: Columns that name a row's calculation (a ColabFit row is one property object).
LABEL_COLUMNS = ("property_id", "method", "software")
_SPLIT = re.compile(r"^(?P<base>.+)_(?P<n>\d{2,})$")


def _split_columns(names, base):
    """``base_00``, ``base_01``, ... (in numeric order) when ``base`` is split into chunks."""
    found = []
    for n in names:
        m = _SPLIT.match(n)
        if m and m.group("base") == base:
            found.append((int(m.group("n")), n))
    return [n for _, n in sorted(found)]


def _chunked_rows(table, chunks, name, file, row0, width):
    """Per-row (n_i, width) arrays of a quantity split over chunk columns (the exporter splits
    per-atom arrays of large configurations so): each chunk a nested list or its text (JSON),
    null where a configuration has no more atoms; concatenated in chunk order."""
    import pyarrow as pa

    n_rows = table.num_rows
    parts = [[] for _ in range(n_rows)]
    for c in chunks:
        col = table[c]
        arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
        if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
            for i, text in enumerate(arr.to_pylist()):
                if text is None or not str(text).strip():
                    continue
                try:
                    a = np.asarray(json.loads(text), dtype=np.float64).reshape(-1, width)
                except (ValueError, TypeError):
                    raise ValueError(f"{file}: row {row0 + i}: column {c!r} is text that is not a list of "
                                     f"{width}-vectors") from None
                if not np.isfinite(a).all():
                    raise ValueError(f"{file}: row {row0 + i}: column {c!r} holds a non-finite value")
                parts[i].append(a)
        else:
            for i, a in enumerate(_rows_of(col, c, file, row0, width, optional_rows=True)):
                if a is not None and a.shape[0]:
                    parts[i].append(a)
    return [np.concatenate(p) if p else None for p in parts]


def _quantity(table, names, base, chunked, file, row0, width):
    if base in names:
        return _rows_of(table[base], base, file, row0, width, optional_rows=True)
    if chunked:
        return _chunked_rows(table, chunked, base, file, row0, width)
    return [None] * table.num_rows


def _iter_rows(path):
    """Yield one record per Parquet row: (atoms without labels, configuration id, energy,
    forces, {label column: value}, where)."""
    from ase import Atoms

    for file in parquet_files(path):
        pf = _open(file)
        names = set(pf.schema_arrow.names)
        pos_chunks = _split_columns(names, "positions")
        if "positions" not in names and not pos_chunks:
            raise ValueError(f"{file}: no positions column (columns: {', '.join(sorted(names)) or 'none'})")
        if "atomic_numbers" not in names:
            raise ValueError(f"{file}: no atomic_numbers column (columns: {', '.join(sorted(names))})")
        id_col = _pick(names, ID_COLUMNS)
        e_col = _pick(names, ENERGY_COLUMNS)
        f_col = _pick(names, FORCE_COLUMNS)
        f_chunks = [] if f_col else _split_columns(names, "atomic_forces")
        odd = sorted(n for n in names if n.startswith(("atomic_forces", "positions"))
                     and n not in ("positions", "atomic_forces", *FORCE_COLUMNS) and n not in pos_chunks + f_chunks)
        if odd:  # a layout we cannot read is an error, never silently dropped data
            raise ValueError(f"{file}: cannot read the layout of column(s) {', '.join(odd)} (expected "
                             "positions/atomic_forces, or their chunks positions_00, atomic_forces_00, ...)")
        wanted = ["atomic_numbers", *(["positions"] if "positions" in names else pos_chunks),
                  *[c for c in ("cell", "pbc", id_col, e_col, f_col) if c and c in names], *f_chunks]
        label_cols = [c for c in LABEL_COLUMNS if c in names]
        row0 = 0
        for g in range(pf.num_row_groups):
            try:
                table = pf.read_row_group(g, columns=wanted + label_cols)
            except Exception as exc:
                raise ValueError(f"{file}: row group {g} cannot be read ({type(exc).__name__}: {exc})") from None
            n_rows = table.num_rows
            pos = _quantity(table, names, "positions", pos_chunks, file, row0, 3)
            z = _rows_of(table["atomic_numbers"], "atomic_numbers", file, row0, 1)
            cells = _rows_of(table["cell"], "cell", file, row0, 3, optional_rows=True) if "cell" in names else [None] * n_rows
            pbcs = table["pbc"].to_pylist() if "pbc" in names else [None] * n_rows
            ids = table[id_col].to_pylist() if id_col else [None] * n_rows
            energies = _scalar_rows(table[e_col], e_col, file, row0) if e_col else [None] * n_rows
            forces = _quantity(table, names, f_col or "atomic_forces", f_chunks, file, row0, 3)
            label_values = {c: table[c].to_pylist() for c in label_cols}
            for i in range(n_rows):
                r = row0 + i
                where = f"{file}: row {r}" + (f" ({ids[i]})" if ids[i] is not None else "")
                if pos[i] is None:
                    raise ValueError(f"{where}: column 'positions' is null")
                numbers = z[i][:, 0]
                if numbers.size != pos[i].shape[0]:
                    raise ValueError(f"{where}: {pos[i].shape[0]} positions but {numbers.size} atomic_numbers")
                if numbers.size == 0:
                    raise ValueError(f"{where}: configuration has no atoms")
                if (numbers != np.round(numbers)).any() or numbers.min() < 1 or numbers.max() > 118:
                    raise ValueError(f"{where}: atomic_numbers must be integers in 1..118")
                cell = np.zeros((3, 3)) if cells[i] is None else cells[i]
                if cell.shape != (3, 3):
                    raise ValueError(f"{where}: cell must be 3x3, got {cell.shape[0]} rows")
                pbc = pbcs[i]
                if pbc is None:
                    pbc = [bool(np.linalg.norm(v) > 0) for v in cell]
                elif len(pbc) != 3:
                    raise ValueError(f"{where}: pbc must have 3 entries, got {len(pbc)}")
                check_cell(cell, pbc, where)
                atoms = Atoms(numbers=numbers.astype(int), positions=pos[i], cell=cell, pbc=[bool(p) for p in pbc])
                f = forces[i]
                if f is not None and f.shape[0] != numbers.size:
                    raise ValueError(f"{where}: {f.shape[0]} forces for {numbers.size} atoms "
                                     f"(column {f_col or 'atomic_forces_NN'!r})")
                cid = str(ids[i]) if ids[i] is not None else f"{os.path.basename(file)}:{r}"
                yield atoms, cid, energies[i], f, {c: label_values[c][i] for c in label_cols}, where
            row0 += n_rows


def parse_labels(items) -> dict:
    """``["method=PBE", "software=VASP"]`` → {"method": "PBE", "software": "VASP"}."""
    out = {}
    for item in items or ():
        if "=" not in item:
            raise ValueError(f"--labels: expected KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        if key.strip() not in LABEL_COLUMNS:
            raise ValueError(f"--labels: {key.strip()!r} is not a label column (use one of {', '.join(LABEL_COLUMNS)})")
        out[key.strip()] = value.strip()
    return out


def iter_colabfit_parquet(path, *, labels: dict | None = None):
    """Yield ``(atoms, configuration_id)`` for every configuration of a ColabFit Parquet export.

    A row of an export is a property object (one calculation): a configuration computed with two
    methods appears twice under one ``configuration_id``. Rows are grouped into configurations
    (in order of first appearance); ``labels`` ({column: value}, e.g. {"method": "PBE"}) chooses
    the rows whose energy and forces label them. Without ``labels`` a configuration whose rows
    carry two or more distinct labels (method, software) is an error listing them; rows that
    repeat one label are the same calculation (the first is used). A configuration that no row
    labels has no energy or forces. ``atoms.info`` holds ``configuration_id``, ``property_id``
    and ``method`` (the labelling row's, or None).

    Raises ValueError naming the file, row and column on a malformed table.
    """
    from ase.calculators.singlepoint import SinglePointCalculator

    labels = dict(labels or {})
    groups: dict[str, list] = {}
    for rec in _iter_rows(path):
        cid = rec[1]
        first = groups.get(cid)
        if first is not None:
            a0, a1 = first[0][0], rec[0]
            if len(a0) != len(a1) or (a0.numbers != a1.numbers).any() or not np.allclose(a0.positions, a1.positions):
                raise ValueError(f"{rec[5]}: configuration {cid} also appears at {first[0][5].split(': ', 1)[-1]} "
                                 "with other atoms or positions")
            first.append(rec)
        else:
            groups[cid] = [rec]
    for cid, rows in groups.items():
        if labels:
            for key in labels:
                if key not in rows[0][4]:
                    raise ValueError(f"{rows[0][5].split(':')[0]}: --labels {key}=...: the export has no {key!r} column")
            rows_l = [r for r in rows if all(str(r[4].get(k)) == v for k, v in labels.items())]
        else:
            rows_l = rows
        distinct = sorted({(str(r[4].get("software")), str(r[4].get("method"))) for r in rows_l}
                          if any(r[4] for r in rows_l) else set())
        if len(distinct) > 1:
            values = "; ".join(f"method={m}, software={sw}" for sw, m in distinct)
            raise ValueError(f"configuration {cid}: {len(rows_l)} rows with {len(distinct)} distinct labels "
                             f"({values}): choose one with --labels method=... (rows are calculations)")
        atoms = rows[0][0]
        label = rows_l[0] if rows_l else None
        if label is not None and (label[2] is not None or label[3] is not None):
            atoms.calc = SinglePointCalculator(atoms, energy=label[2], forces=label[3])
        atoms.info["configuration_id"] = cid
        atoms.info["property_id"] = None if label is None else label[4].get("property_id")
        atoms.info["method"] = None if label is None else label[4].get("method")
        yield atoms, cid


def read_colabfit_parquet(path, *, labels: dict | None = None) -> tuple[list, list[str]]:
    """All configurations of a ColabFit Parquet dataset: (list of ase.Atoms, list of ids)."""
    structures, ids = [], []
    for atoms, cid in iter_colabfit_parquet(path, labels=labels):
        structures.append(atoms)
        ids.append(cid)
    return structures, ids


def check_cell(cell, pbc, where: str) -> None:
    """A periodic direction needs a non-zero cell vector, and the periodic vectors must be
    linearly independent; else ValueError naming ``where``."""
    cell = np.asarray(cell, dtype=np.float64)
    per = [i for i in range(3) if pbc[i]]
    for i in per:
        if not np.linalg.norm(cell[i]) > 0:
            raise ValueError(f"{where}: pbc is set along cell vector {i} but the structure has no cell there "
                             f"(cell vector {i} is zero)")
    if per:
        sub = cell[per]
        s = np.linalg.svd(sub, compute_uv=False)
        if s[-1] <= 1e-9 * max(s[0], 1.0):
            raise ValueError(f"{where}: the periodic cell vectors are linearly dependent (degenerate cell)")


# --------------------------------------------------------------------------- writing

def write_selection(directory, structures, indices, ids) -> None:
    """``indices.txt`` (dataset indices, one per line), ``ids.txt`` and ``selected.extxyz``
    (the selected structures with their energies/forces, in selection order) in ``directory``,
    each written durably (``io.durable``: whole, fsynced, renamed)."""
    import io

    import ase.io

    from .durable import write_text_durably

    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    indices = [int(i) for i in indices]
    write_text_durably(os.path.join(directory, "indices.txt"), "".join(f"{i}\n" for i in indices))
    write_text_durably(os.path.join(directory, "ids.txt"), "".join(f"{c}\n" for c in ids))
    if any("property_id" in structures[i].info for i in indices):  # from a ColabFit export
        rows = [f"{c}\t{structures[i].info.get('property_id') or ''}\t{structures[i].info.get('method') or ''}\n"
                for i, c in zip(indices, ids)]
        write_text_durably(os.path.join(directory, "labels.tsv"), "configuration_id\tproperty_id\tmethod\n"
                           + "".join(rows))
    text = io.StringIO()
    ase.io.write(text, [structures[i] for i in indices], format="extxyz", parallel=False)
    write_text_durably(os.path.join(directory, "selected.extxyz"), text.getvalue())


def write_colabfit_parquet(path, structures, *, ids=None, row_group_size: int = 64, extra_columns: bool = True):
    """Write structures as a ColabFit-style Parquet file (``path`` ending in .parquet) or
    export directory (``path/co/co_0.parquet``), with ColabFit's column names, nested lists and
    (when ``extra_columns``) a few of its other columns; used by tests, benchmarks and the demo."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from .atomic import atomic_path

    path = os.fspath(path)
    if not path.lower().endswith(PARQUET_SUFFIXES):
        os.makedirs(os.path.join(path, "co"), exist_ok=True)
        path = os.path.join(path, "co", "co_0.parquet")
    n = len(structures)
    ids = [f"CO_{i:08d}" for i in range(n)] if ids is None else [str(c) for c in ids]
    energies, forces = [], []
    for a in structures:
        e = f = None
        if a.calc is not None:
            try:
                e = float(a.get_potential_energy())
            except Exception:
                e = None
            try:
                f = a.get_forces().tolist()
            except Exception:
                f = None
        energies.append(e)
        forces.append(f)
    cols = {
        "configuration_id": pa.array(ids, pa.string()),
        "positions": pa.array([a.positions.tolist() for a in structures], pa.list_(pa.list_(pa.float64()))),
        "atomic_numbers": pa.array([a.numbers.tolist() for a in structures], pa.list_(pa.int32())),
        "cell": pa.array([a.cell.array.tolist() for a in structures], pa.list_(pa.list_(pa.float64()))),
        "pbc": pa.array([[bool(p) for p in a.pbc] for a in structures], pa.list_(pa.bool_())),
    }
    if any(e is not None for e in energies):
        cols["energy"] = pa.array(energies, pa.float64())
    if any(f is not None for f in forces):
        cols["atomic_forces"] = pa.array(forces, pa.list_(pa.list_(pa.float64())))
    if extra_columns:
        cols["nsites"] = pa.array([len(a) for a in structures], pa.int32())
        cols["chemical_formula_hill"] = pa.array([a.get_chemical_formula("hill") for a in structures], pa.string())
        cols["dataset_id"] = pa.array(["DS_generated_0"] * n, pa.string())
    with atomic_path(path) as tmp:
        pq.write_table(pa.table(cols), tmp, row_group_size=row_group_size)
    return path
