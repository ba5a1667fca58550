"""The descriptor store: sharded HDF5 plus a master file of virtual datasets.

Layout of a store ``out.h5``::

    out.h5                              master: virtual datasets over the shards + small datasets + attrs
    out.h5.shards/shard-<W>-00000.h5    rows [row_start, row_start + n_rows) of every per-row dataset
    out.h5.shards/shard-<W>-00001.h5    ...            (W: the id of the write that made them)

Every write makes new shard files (named by its write id); the master, written and renamed
last, is the commit point: it lists its shards with their sizes, and only once it is in place
are the previous write's shards (and leftovers of killed writes) removed. A write that dies
half way leaves the previous store whole.

Per-row datasets (``descriptors`` (n_env, d) float64, ``structure_index``, ``atom_index``,
optional ``species``, ``forces``, ``dH``, ...) live in the shards; ``offsets`` (n_struct + 1)
and per-structure datasets (``energy``) are small and live in the master as plain datasets.
Any HDF5 tool reads ``out.h5/descriptors`` as one array.

Relative source paths (checked with h5py 3.16 / HDF5 2.0, see tests/unit/test_store.py): the
virtual sources are stored as ``out.h5.shards/shard-<W>-NNNNN.h5``, relative to the master. For a
relative source name HDF5 tries, in order, (1) ``$HDF5_VDS_PREFIX/<name>``, (2) the dataset
access property ``virtual_prefix``, (3) the master file's own directory, (4) the current
working directory. So with no prefix set, plain ``h5py.File(master)["descriptors"][...]``
resolves the shards next to the master, whatever the working directory and after the whole
directory was moved; no ``${ORIGIN}`` prefix or ``virtual_prefix`` is needed (and none is
stored, because a prefix stored in the file is not something readers apply). The one hazard is
``HDF5_VDS_PREFIX``: it is read at every open and wins even over an explicit ``virtual_prefix``,
so a file of the same relative name under it would be read instead of our shard. ``open_store``
therefore refuses a store when that variable points at a different file for any shard.

Each shard is written by one writer (one MPI rank later) with ``write_shard``; the master is
written last by ``write_master`` (rank 0). Every file goes through ``io.durable.durable_hdf5``:
checked writes under a temporary name, fsync, rename, directory fsync, so a reader never sees a
half-written file, and a full disk is an ``OSError`` before anything counts.

Integrity (format version 2): every dataset is chunked (about 1 MiB per chunk) with HDF5's
``fletcher32`` checksum, and its fill value is NaN for floats, -1 for signed integers (the
largest value for unsigned ones), so a damaged byte or a row no source provides is an error,
never data. The writer forms the chunks itself and writes them with ``write_direct_chunk``
(checksum from ``kernels.checksum``, bit-exact with HDF5's); any HDF5 reader verifies them.
``DescriptorStore.read`` reads the chunks of a row range straight from the shard files (their
places from the table the master records, ``_chunk_table``) and verifies each in a few threads
(GIL released), as fast as HDF5 reads unchecked contiguous data: a float64 chunk still matching
its writer's record (``io.chunks.CHUNK_RECORDS``: HDF5's and the flipped fletcher32, all finite)
takes one pass; any other chunk, HDF5's fletcher32 and (descriptors) a scan for NaN in the same
call. Other selections go through HDF5, which verifies the checksums itself. A
checksum mismatch names the store, shard, dataset and rows; a non-finite descriptor or a fill
value names the store, dataset and row. Stores of format version 1 (contiguous, no checksums)
are still read.

HDF5 follows any virtual source path it finds, so ``open_store`` checks, before anything is
read, every virtual source of every dataset: inside this store's own shard folder (a renamed
copy's master still points at the original's shards: ``hpcquests store relink COPY.h5``
points it at its own), listed by the master, present, of the recorded size.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import uuid

import numpy as np

from .chunks import _native, create_checked_dataset, fill_value
from .durable import check_seal, durable_hdf5, remove_stale_temporaries

FORMAT = "hpcquests-store"
FORMAT_VERSION = 2  # 2: chunked datasets with fletcher32 checksums, NaN / -1 fill values
PER_STRUCTURE = ("energy",)
def shard_dir(store_path) -> str:
    return os.fspath(store_path) + ".shards"


def shard_name(shard_id: int, write_id: str | None = None) -> str:
    """``shard-<write id>-NNNNN.h5``: every write of a store makes new shard files, so a write
    that dies half way never touches the shards the current master reads."""
    return f"shard-{write_id}-{shard_id:05d}.h5" if write_id else f"shard-{shard_id:05d}.h5"


def new_write_id() -> str:
    return uuid.uuid4().hex[:16]


def write_shard(store_path, shard_id: int, row_start: int, arrays: dict, write_id: str | None = None) -> dict:
    """Write one shard holding rows [row_start, row_start + n) of the per-row ``arrays``
    (named by ``write_id``, the write it belongs to).

    Returns the shard info that ``write_master`` needs (JSON-able), with the file's size.
    """
    if not arrays:
        raise ValueError("write_shard needs at least one array")
    lengths = {name: np.asarray(a).shape[0] for name, a in arrays.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"per-row arrays have different lengths: {lengths}")
    n_rows = next(iter(lengths.values()))
    parent = os.path.dirname(os.path.abspath(store_path))
    if not os.path.isdir(parent):
        raise ValueError(f"output directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise ValueError(f"output directory {parent} is not writable")
    directory = shard_dir(store_path)
    os.makedirs(directory, exist_ok=True)
    rel = os.path.join(os.path.basename(directory), shard_name(shard_id, write_id))
    path = os.path.join(os.path.dirname(os.path.abspath(store_path)), rel)
    datasets = {}
    with durable_hdf5(path) as f:
        f.attrs["format"] = FORMAT + "-shard"
        f.attrs["row_start"] = int(row_start)
        for name, a in arrays.items():
            a = _native(a)
            create_checked_dataset(f, name, a)
            datasets[name] = {"shape": list(a.shape), "dtype": a.dtype.str}
    return {"file": rel, "shard_id": int(shard_id), "row_start": int(row_start), "n_rows": int(n_rows),
            "datasets": datasets, "size": os.path.getsize(path), "write_id": write_id, **shard_layout(path)}


def shard_layout(path) -> dict:
    """What the master records of a written shard: ``data``, the [offset, length] byte runs its
    chunks occupy (adjacent chunks merged: a handful); ``meta``, the checksum of everything
    else (HDF5's metadata: a few KiB; the chunks carry their own checksums), so damaged
    metadata is found before HDF5 parses it; ``chunks``, each per-row dataset's chunk table
    (``_chunk_table``), so a read finds the chunks without opening the shard with HDF5."""
    import h5py

    runs, tables = [], {}
    with h5py.File(path, "r") as f:
        for name, ds in f.items():
            if ds.chunks is None:
                continue
            stored = _stored_chunks(ds)
            runs.extend((offset, size) for _, offset, size, _ in stored)
            table = _chunk_table(ds, stored)
            if table is not None:
                tables[name] = table
    merged = []
    for offset, length in sorted(runs):
        if merged and merged[-1][0] + merged[-1][1] == offset:
            merged[-1][1] += length
        else:
            merged.append([offset, length])
    return {"data": merged, "meta": _metadata_checksum(path, merged, os.path.getsize(path)), "chunks": tables}


def _chunk_table(ds, stored) -> dict | None:
    """The chunk table of the h5py dataset ``ds`` whose stored chunks are ``stored``
    (``_stored_chunks``), as the master records it: ``rows`` per chunk, stored ``size`` (bytes,
    checksum included), ``runs`` of [first chunk, byte offset, count] (chunk i of a run at
    offset + (i - first) * size) and the writer's ``records`` (``_chunk_records``) or None.
    None when the dataset is not stored as this version writes it (every chunk present, whole
    rows, fletcher32 the only filter)."""
    n_rows = int(ds.shape[0]) if ds.ndim else 0
    if (not n_rows or tuple(ds.chunks[1:]) != tuple(ds.shape[1:]) or ds.id.get_create_plist().get_nfilters() != 1
            or not ds.fletcher32):
        return None
    rows = int(ds.chunks[0])
    by_index = sorted((c[0] // rows, offset, size, mask) for c, offset, size, mask in stored)
    size = by_index[0][2] if by_index else 0
    if ([i for i, *_ in by_index] != list(range(-(-n_rows // rows)))
            or any(s != size or mask for _, _, s, mask in by_index)):
        return None
    runs = []
    for i, offset, _, _ in by_index:
        if runs and runs[-1][1] + runs[-1][2] * size == offset:
            runs[-1][2] += 1
        else:
            runs.append([i, offset, 1])
    records = _chunk_records(ds)
    return {"rows": rows, "size": size, "runs": runs, "records": None if records is None else records.tolist()}


def _stored_chunks(ds) -> list:
    """(chunk offset, byte offset, stored size, filter mask) of every stored chunk of the
    h5py dataset ``ds``: one HDF5 iteration (``H5Dchunk_iter``) where the library has it, else
    chunk by chunk (about 8x slower: a store's first read waits on it)."""
    def entry(info):
        return tuple(int(v) for v in info.chunk_offset), int(info.byte_offset), int(info.size), int(info.filter_mask)

    found = []
    try:
        ds.id.chunk_iter(lambda info: found.append(entry(info)))
    except (AttributeError, NotImplementedError):  # h5py or HDF5 without H5Dchunk_iter
        found = [entry(ds.id.get_chunk_info(i)) for i in range(ds.id.get_num_chunks())]
    return found


def _metadata_checksum(path, data_runs, size) -> int:
    from ..kernels.checksum import hdf5_fletcher32

    parts, pos = [], 0
    with open(path, "rb") as f:
        for offset, length in data_runs + [[size, 0]]:
            if offset < pos or offset > size:
                return -1  # runs that do not fit the file: not this shard
            f.seek(pos)
            parts.append(f.read(offset - pos))
            pos = offset + length
    return hdf5_fletcher32(b"".join(parts))


def write_master(store_path, shard_infos, offsets, *, attrs: dict, n_cols: int | None = None,
                 per_structure: dict | None = None, write_id: str | None = None):
    """Write the master file: virtual datasets spanning the shards in row order.

    Args:
        shard_infos: the dicts ``write_shard`` returned, in any order.
        offsets: (n_struct + 1,) row offsets; stored as a plain dataset.
        attrs: master attributes (``store_attrs``); lists and dicts are stored as JSON, None
            values are skipped.
        n_cols: expected descriptor width; checked against the shards, and used to create an
            empty ``descriptors`` dataset when there are no shards at all.
        per_structure: small per-structure datasets (``energy``) stored in the master.

    Raises ValueError if the shards do not tile [0, offsets[-1]) exactly or disagree on
    dataset names, trailing shapes or dtypes, or on ``n_cols``.
    """
    import h5py

    infos = sorted(shard_infos, key=lambda s: s["row_start"])
    offsets = np.asarray(offsets, dtype=np.int64)
    n_env = int(offsets[-1]) if offsets.size else 0
    pos = 0
    for s in infos:
        if s["row_start"] != pos:
            raise ValueError(f"shards do not tile the rows: expected a shard at row {pos}, got {s['row_start']}")
        pos += s["n_rows"]
    if pos != n_env:
        raise ValueError(f"shards hold {pos} rows but offsets say {n_env}")
    names = infos[0]["datasets"].keys() if infos else {}
    for s in infos:
        for name in names:
            a, b = s["datasets"].get(name), infos[0]["datasets"][name]
            if a is None or a["dtype"] != b["dtype"] or a["shape"][1:] != b["shape"][1:]:
                raise ValueError(f"shard {s['file']} disagrees on dataset {name!r}")
    if n_cols is not None:
        for s in infos:
            d = s["datasets"].get("descriptors")
            if d is None or list(d["shape"][1:]) != [int(n_cols)]:
                raise ValueError(f"shard {s['file']}: descriptors shape {d and d['shape']} does not have "
                                 f"{n_cols} columns")
    parent = os.path.dirname(os.path.abspath(store_path))
    if not os.path.isdir(parent):
        raise ValueError(f"output directory {parent} does not exist")
    remove_stale_temporaries(parent)  # masters of killed writes
    with durable_hdf5(store_path, seal=True) as f:
        for name in names:
            first = infos[0]["datasets"][name]
            dtype = np.dtype(first["dtype"])
            layout = h5py.VirtualLayout(shape=(n_env, *first["shape"][1:]), dtype=dtype)
            for s in infos:
                if s["n_rows"] == 0:
                    continue
                shape = tuple(s["datasets"][name]["shape"])
                layout[s["row_start"]:s["row_start"] + s["n_rows"]] = h5py.VirtualSource(
                    s["file"], name, shape=shape)
            # rows no source provides read as the fill value (NaN / -1), which reading refuses
            fill = fill_value(dtype)
            f.create_virtual_dataset(name, layout, **({} if fill is None else {"fillvalue": fill}))
        if not infos and n_cols is not None:
            create_checked_dataset(f, "descriptors", np.zeros((0, int(n_cols)), dtype=np.float64))
        create_checked_dataset(f, "offsets", offsets)
        for name, a in (per_structure or {}).items():
            create_checked_dataset(f, name, np.asarray(a))
        f.attrs["format"] = FORMAT
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["n_shards"] = len(infos)
        # a new identity on every write: a rebuilt store is never mistaken for the old one
        # (a scan's checkpoint records it), whatever its size or layout
        f.attrs["write_id"] = write_id or new_write_id()
        f.attrs["shards"] = json.dumps([{k: s[k] for k in ("file", "row_start", "n_rows", "size", "data", "meta",
                                                           "chunks") if k in s} for s in infos])
        for key, value in attrs.items():
            if value is None:
                continue
            if isinstance(value, (list, tuple, dict)):
                value = json.dumps(value)
            f.attrs[key] = value


def store_attrs(*, k, cutoff, species=(), descriptor_kind="quests", sources=(), command=None, **extra) -> dict:
    """The master attributes: parameters, species, version, sources and command."""
    from .._version import __version__

    attrs = {"k": int(k), "cutoff": float(cutoff), "species": list(species), "descriptor_kind": descriptor_kind,
             "hpcquests_version": __version__, "sources": list(sources), "command": command or "",
             "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    attrs.update(extra)
    return attrs


def write_store(path, descriptors, offsets, *, k, cutoff, species=(), descriptor_kind="quests",
                extra: dict | None = None, sources=(), command=None, rows_per_shard: int | None = None,
                bandwidth: float | None = None) -> str:
    """Serial convenience writer: split the rows into shards, write them, then the master.

    Args:
        path: master file to create (``.h5``).
        descriptors: (n_env, d) float64, or None for a store without descriptors (e.g. δH only).
        offsets: (n_struct + 1,) int64 row offsets of each structure.
        extra: more datasets; per-row ones (length n_env) go to the shards, per-structure ones
            (``energy``) to the master. ``structure_index`` and ``atom_index`` default to each
            row's structure and its atom in it.
        rows_per_shard: rows per shard file (default: one shard).
        bandwidth: optional kernel bandwidth recorded as an attribute.

    Returns the master path.
    """
    offsets = np.asarray(offsets, dtype=np.int64)
    if offsets.ndim != 1 or offsets.size < 1 or offsets[0] != 0 or np.any(np.diff(offsets) < 0):
        raise ValueError("offsets must start at 0 and be non-decreasing")
    n_env = int(offsets[-1])
    counts = np.diff(offsets)
    extra = dict(extra or {})
    structure_index = extra.pop("structure_index", None)
    atom_index = extra.pop("atom_index", None)
    if structure_index is None:
        structure_index = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
    if atom_index is None:
        atom_index = np.arange(n_env, dtype=np.int64) - np.repeat(offsets[:-1], counts)
    rows = {"structure_index": np.asarray(structure_index, dtype=np.int64),
            "atom_index": np.asarray(atom_index, dtype=np.int64)}
    if descriptors is not None:
        rows["descriptors"] = np.asarray(descriptors, dtype=np.float64)
        if rows["descriptors"].ndim != 2:
            raise ValueError(f"descriptors must be 2-D (n_env, d), got shape {rows['descriptors'].shape}")
    per_structure = {}
    for name, a in extra.items():
        a = np.asarray(a)
        if name in PER_STRUCTURE:
            if a.shape[0] != len(counts):
                raise ValueError(f"{name} has {a.shape[0]} values for {len(counts)} structures")
            per_structure[name] = a
        else:
            rows[name] = a
    for name, a in rows.items():
        if a.shape[0] != n_env:
            raise ValueError(f"{name} has {a.shape[0]} rows, offsets say {n_env}")
    step = n_env if not rows_per_shard else int(rows_per_shard)
    if step <= 0:
        step = max(n_env, 1)
    starts = list(range(0, n_env, step)) or [0]
    remove_orphan_shards(path)
    write_id = new_write_id()
    infos = [write_shard(path, i, s, {name: a[s:s + step] for name, a in rows.items()}, write_id)
             for i, s in enumerate(starts)]
    attrs = store_attrs(k=k, cutoff=cutoff, species=species, descriptor_kind=descriptor_kind, sources=sources,
                        command=command, bandwidth=bandwidth)
    write_master(path, infos, offsets, attrs=attrs, n_cols=None if descriptors is None else rows["descriptors"].shape[1],
                 per_structure=per_structure, write_id=write_id)
    remove_unreferenced_shards(path, infos)
    return os.fspath(path)


def remove_unreferenced_shards(path, infos):
    """After the new master is in place (the commit point): remove every file of the shard
    folder it does not reference — the previous write's shards, and what killed writes left
    (their shards, their ``.tmp-PID`` files whose process is gone). Before it, a reader still
    sees the old store whole."""
    _remove_shards_except(shard_dir(path), {os.path.basename(s["file"]) for s in infos})


def remove_orphan_shards(path) -> None:
    """Before a write: remove the shards that failed or killed writes left (those the current
    master does not list), so a disk that filled up is not still full of them. Nothing is
    removed unless the current master is whole (sealed) or absent; never raises."""
    import h5py

    directory = shard_dir(path)
    if not os.path.isdir(directory):
        return
    keep = set()
    try:
        if os.path.exists(path):
            if check_seal(path) is not True:
                return  # a master we cannot vouch for: leave everything until the new one is in place
            with h5py.File(path, "r") as f:
                keep = {os.path.basename(os.path.normpath(s["file"])) for s in json.loads(f.attrs["shards"])}
        _remove_shards_except(directory, keep)
    except (OSError, KeyError, ValueError, TypeError):
        return


def _remove_shards_except(directory, keep):
    for name in os.listdir(directory):
        if name not in keep and name.startswith("shard-"):
            try:
                os.remove(os.path.join(directory, name))
            except OSError:
                pass
    remove_stale_temporaries(directory)


def is_store(path) -> bool:
    """True if ``path`` is an HDF5 file with the hpcquests store format attribute."""
    from .structures import is_hdf5

    if not is_hdf5(path):
        return False
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return f.attrs.get("format") == FORMAT
    except OSError:
        return False


class DescriptorStore:
    """Read access to a store; use as a context manager or call ``close()``."""

    def __init__(self, path):
        import h5py

        from .structures import is_hdf5

        self.path = os.fspath(path)
        if not os.path.exists(self.path):
            raise ValueError(f"store {self.path}: no such file")
        if not is_hdf5(self.path):
            raise ValueError(f"store {self.path}: not an HDF5 file")
        sealed = check_seal(self.path)
        if sealed is False:  # before HDF5 parses it: HDF5 can crash on damaged metadata
            raise ValueError(f"store {self.path}: the master fails its checksum (damaged); rebuild the store")
        try:
            self._f = h5py.File(self.path, "r")
        except OSError as exc:
            raise ValueError(f"store {self.path}: cannot be opened as HDF5 ({exc}); the file is damaged") from None
        self._plans: dict = {}
        self._sources: dict = {}
        try:
            if self._f.attrs.get("format") != FORMAT:
                raise ValueError(f"store {self.path}: not an hpcquests store (no format={FORMAT!r} attribute)")
            version = int(self._f.attrs.get("format_version", -1))
            if version > FORMAT_VERSION:
                raise ValueError(f"store {self.path}: format version {version} is newer than this hpcquests "
                                 f"understands ({FORMAT_VERSION})")
            if version >= 2 and sealed is None:
                raise ValueError(f"store {self.path}: the master has lost its checksum seal (edited outside "
                                 "hpcquests?); rebuild the store")
            base = os.path.dirname(os.path.abspath(self.path))
            prefix = os.environ.get("HDF5_VDS_PREFIX")
            try:
                shards = json.loads(self._f.attrs.get("shards", "[]"))
            except ValueError:
                raise ValueError(f"store {self.path}: the master's shard list is not valid JSON (damaged)") from None
            self._entries = {os.path.normpath(s["file"]): s for s in shards}
            self._check_sources()
            for s in shards:
                if not s["n_rows"]:
                    continue  # zero-row shards are not referenced by the virtual datasets
                here = os.path.join(base, s["file"])
                if not os.path.exists(here):
                    raise ValueError(f"store {self.path}: shard {s['file']} is missing "
                                     "(was the .shards directory moved without the master?)")
                if "size" in s and os.path.getsize(here) != s["size"]:
                    raise ValueError(f"store {self.path}: shard {s['file']} has {os.path.getsize(here)} bytes, "
                                     f"the master recorded {s['size']} (damaged or replaced)")
                if "meta" in s and _metadata_checksum(here, s["data"], s["size"]) != s["meta"]:
                    raise ValueError(f"store {self.path}: shard {s['file']}: its HDF5 metadata fails its checksum "
                                     "(damaged or replaced); rebuild the store")
                there = os.path.join(prefix, s["file"]) if prefix else None
                if there and os.path.exists(there) and not os.path.samefile(here, there):
                    raise ValueError(f"store {self.path}: HDF5_VDS_PREFIX={prefix} makes HDF5 read shard "
                                     f"{there} instead of {here}; unset HDF5_VDS_PREFIX")
            # everything the properties serve, read now: damaged metadata is refused at open
            self._attrs = self._load_attrs()
            self._offsets = self._f["offsets"][...]
            self._shapes = {}
            for name in self._f:
                ds = self._f.get(name)
                if not hasattr(ds, "shape"):
                    raise ValueError(f"store {self.path}: {name!r} is not a readable dataset (the master is damaged)")
                self._shapes[name] = (ds.shape, ds.dtype)
            for key in ("k", "cutoff"):
                if key not in self._attrs:
                    raise ValueError(f"store {self.path}: the master has no {key!r} attribute (damaged)")
        except ValueError:
            self._f.close()
            raise
        except (OSError, KeyError, RuntimeError, TypeError, AttributeError) as exc:  # h5py: damaged metadata
            self._f.close()
            raise ValueError(f"store {self.path}: the master is damaged ({exc}); rebuild the store") from None
        except BaseException:
            self._f.close()
            raise

    def _check_sources(self):
        """Every virtual source, read from the virtual datasets themselves, must be a shard the
        master lists, inside this store's own shard folder: HDF5 follows any path it finds
        (absolute, ``../``), and a renamed copy's master still points at the original's shards."""
        own = os.path.basename(shard_dir(self.path))
        listed = self._entries
        for name, ds in self._f.items():
            if not getattr(ds, "is_virtual", False):
                continue
            spans = []
            for src in ds.virtual_sources():
                f = src.file_name
                norm = os.path.normpath(f)
                lo, hi = src.vspace.get_select_bounds()
                spans.append((int(lo[0]), int(hi[0]) + 1, norm, src.dset_name))
                if os.path.isabs(f) or norm.startswith("..") or os.path.dirname(norm) != own:
                    other = os.path.dirname(norm)
                    hint = (f" (a renamed copy of the store whose shards are in {other}/? If this store's own "
                            f"{own}/ holds a copy of them, run: hpcquests store relink {self.path})"
                            if other.endswith(".shards") and not os.path.isabs(f) and ".." not in norm else "")
                    raise ValueError(f"store {self.path}: dataset {name!r} reads {f}, outside the store's own "
                                     f"shard folder {own}/{hint}")
                if norm not in listed:
                    raise ValueError(f"store {self.path}: dataset {name!r} reads {f}, which the master's shard "
                                     "list does not hold (a crafted or damaged master)")
            self._sources[name] = sorted(spans)

    # --- metadata
    @property
    def attrs(self) -> dict:
        return dict(self._attrs)

    def _load_attrs(self) -> dict:
        out = {}
        for key, value in self._f.attrs.items():
            if isinstance(value, bytes):
                value = value.decode()
            if isinstance(value, str) and value[:1] in "[{":
                try:
                    value = json.loads(value)
                except ValueError:
                    pass
            elif isinstance(value, np.generic):
                value = value.item()
            out[key] = value
        return out

    @property
    def k(self) -> int:
        return int(self._attrs["k"])

    @property
    def cutoff(self) -> float:
        return float(self._attrs["cutoff"])

    @property
    def species(self) -> list:
        return list(self.attrs.get("species", []))

    @property
    def offsets(self) -> np.ndarray:
        return self._offsets.copy()

    @property
    def n_structures(self) -> int:
        return int(self._offsets.shape[0] - 1)

    @property
    def n_env(self) -> int:
        return int(self._offsets[-1])

    @property
    def dim(self) -> int:
        return int(self._shapes["descriptors"][0][1]) if "descriptors" in self._shapes else 0

    def __contains__(self, name) -> bool:
        return name in self._shapes

    # --- data
    def read(self, name: str = "descriptors", rows=slice(None)) -> np.ndarray:
        """Rows of dataset ``name`` (a slice, or any h5py selection), verified.

        A row range is read chunk by chunk straight from the shard files, each chunk's fletcher32
        checksum verified (``_read_span``); other selections go through HDF5, which verifies the
        checksums itself. Raises ValueError naming the store (and shard, dataset, rows) for a
        chunk that fails its checksum or cannot be read, a non-finite descriptor, or an integer
        holding the fill value -1 (a row no source provides)."""
        if name not in self._shapes:
            raise ValueError(f"store {self.path}: no dataset {name!r}")
        try:
            ds = self._f[name]
        except (OSError, KeyError, RuntimeError) as exc:
            raise ValueError(f"store {self.path}: dataset {name!r} cannot be opened ({exc}); the master is "
                             "damaged: rebuild the store") from None
        if isinstance(rows, slice) and rows.step in (None, 1) and ds.ndim >= 1:
            start, stop, _ = rows.indices(ds.shape[0])
            stop = max(start, stop)
            out, checked = self._read_span(name, ds, start, stop)
            first = start
        else:
            out, checked = self._read_hdf5(name, ds, rows), False
            first = None
        if not checked:
            self._check_values(name, out, first)
        return out

    def _read_hdf5(self, name, ds, rows):
        try:
            return ds[rows]
        except (OSError, KeyError, RuntimeError) as exc:
            raise ValueError(f"store {self.path}: dataset {name!r} cannot be read ({exc}): a shard is damaged "
                             "(a chunk fails its checksum) or missing; rebuild the store") from None

    def _check_values(self, name, out, first):
        """Descriptors must be finite; integers must not hold the fill value -1."""
        bad = -1
        if _must_be_finite(name, out.dtype, out.ndim):
            from ..kernels.checksum import first_nonfinite_row

            bad = first_nonfinite_row(out)
            what = _NONFINITE
        elif out.dtype.kind == "i" and out.size:
            hits = np.flatnonzero((out == -1).reshape(out.shape[0], -1).any(axis=1)) if out.ndim else []
            bad = int(hits[0]) if len(hits) else -1
            what = "the fill value -1 (a row that no shard provides)"
        if bad >= 0:
            where = f"row {first + bad}" if first is not None else f"row {bad} of the selection"
            raise ValueError(_bad_value(self.path, name, where, what))

    def _chunk_plan(self, file: str, dset: str, dtype, trailing):
        """How to read ``dset`` of shard ``file`` chunk by chunk, or None when it is not stored
        as this version writes it (chunked along rows, fletcher32 its only filter)."""
        import h5py

        key = (file, dset)
        if key in self._plans:
            return self._plans[key]
        path = os.path.join(os.path.dirname(os.path.abspath(self.path)), file)
        plan = _plan_from_table(self._entries.get(os.path.normpath(file)), dset, path, dtype, trailing)
        if plan is not None:
            self._plans[key] = plan
            return plan
        try:
            with h5py.File(path, "r") as f:
                ds = f[dset]
                dcpl = ds.id.get_create_plist()
                ok = (ds.chunks is not None and ds.dtype == dtype and tuple(ds.shape[1:]) == tuple(trailing)
                      and tuple(ds.chunks[1:]) == tuple(trailing) and dcpl.get_nfilters() == 1 and ds.fletcher32)
                if ok:
                    chunks = {int(c[0][0]): c[1:] for c in _stored_chunks(ds)}
                    plan = {"path": path, "rows": int(ds.chunks[0]), "n": int(ds.shape[0]), "chunks": chunks,
                            "row_bytes": int(np.prod(trailing, dtype=np.int64)) * ds.dtype.itemsize,
                            "records": _chunk_records(ds)}
        except (OSError, KeyError, RuntimeError, TypeError, ValueError) as exc:
            raise ValueError(f"store {self.path}: shard {file} cannot be read ({exc}); the file is damaged, "
                             "rebuild the store") from None
        self._plans[key] = plan
        return plan

    def _span_tasks(self, name, ds, start, stop, spans):
        """The chunks holding rows [start, stop): (file, plan, chunk row, global row, lo, hi) per
        chunk; None when a source is not chunked as this reader expects (HDF5 reads it then).
        ValueError when no source provides some rows (HDF5 would serve the fill value)."""
        tasks = []
        covered = start
        for v0, v1, file, dset in spans:
            lo, hi = max(start, v0), min(stop, v1)
            if lo >= hi:
                continue
            if lo > covered:
                break  # a gap: no source provides some rows
            covered = max(covered, hi)
            plan = self._chunk_plan(file, dset, ds.dtype, ds.shape[1:])
            if plan is None or plan["n"] != v1 - v0:
                return None
            rows = plan["rows"]
            for c0 in range((lo - v0) // rows * rows, hi - v0, rows):
                tasks.append((file, plan, c0, v0 + c0, lo, hi))
        if covered < stop:
            raise ValueError(_bad_value(self.path, name, f"row {covered}", "no data: no shard provides it (the "
                                        "master's layout has a gap)"))
        return tasks

    def _read_span(self, name, ds, start, stop):
        """Rows [start, stop) of ``name`` and whether their values were checked too: chunks read
        with ``preadv`` into the result, their checksums verified and (descriptors) their values
        checked while in cache, spread over a few threads (all release the GIL)."""
        from ..kernels.checksum import first_nonfinite_row

        spans = self._sources.get(name)
        hdf5 = (lambda: (self._read_hdf5(name, ds, slice(start, stop)), False))
        if not spans or stop <= start or ds.dtype.kind == "i":  # integers: small; HDF5 verifies, -1 checked after
            return hdf5()
        finite = _must_be_finite(name, ds.dtype, ds.ndim)
        tasks = self._span_tasks(name, ds, start, stop, spans)
        if not tasks:
            return hdf5()
        out = np.empty((stop - start, *ds.shape[1:]), dtype=ds.dtype)
        flat = out.reshape(-1).view(np.uint8)
        fds = {}
        try:
            for file, plan, *_ in tasks:
                if file not in fds:
                    try:
                        fds[file] = os.open(plan["path"], os.O_RDONLY)
                    except OSError as exc:
                        raise ValueError(f"store {self.path}: shard {file} cannot be opened ({exc.strerror})") from None

            def one(task):
                file, plan, c0, g0, lo, hi = task
                rows, rb = plan["rows"], plan["row_bytes"]
                entry = plan["chunks"].get(c0)
                r_hi = g0 - c0 + min(c0 + rows, plan["n"])  # end of the rows this chunk holds
                where = f"shard {file} dataset {name!r} rows {g0}-{r_hi - 1}"
                if entry is None:
                    return f"{where}: chunk missing"
                offset, size, mask = entry
                nbytes = rows * rb
                if mask != 0 or size != nbytes + 4:
                    return f"{where}: chunk stored unexpectedly"
                a, b = max(g0, lo), min(g0 + rows, hi)  # the part of this chunk that is wanted
                whole = a == g0 and b == g0 + rows
                body = flat[(a - start) * rb:(b - start) * rb] if whole else np.empty(nbytes, dtype=np.uint8)
                trailer = bytearray(4)
                try:
                    got = os.preadv(fds[file], [body, trailer], offset)
                except OSError as exc:
                    return f"{where}: {exc.strerror}"
                if got != nbytes + 4:
                    return f"{where}: the file ends early (truncated)"
                bad = _verify_chunk(body, int.from_bytes(trailer, "little"), plan["records"], c0 // rows,
                                    finite and whole, rb)
                if bad == _CHECKSUM_FAILS:
                    return f"{where} fail their checksum"
                if not whole:
                    flat[(a - start) * rb:(b - start) * rb] = body[(a - g0) * rb:(b - g0) * rb]
                if finite and bad == _UNKNOWN:  # only the wanted rows: an edge chunk's padding is NaN
                    bad = first_nonfinite_row(out[a - start:b - start])
                return ("value", a + bad) if bad >= 0 else None

            errors = _map_threads(one, tasks)
        finally:
            for fd in fds.values():
                os.close(fd)
        bad = next((e for e in errors if e), None)
        if isinstance(bad, tuple):
            raise ValueError(_bad_value(self.path, name, f"row {bad[1]}", _NONFINITE))
        if bad:
            raise ValueError(f"store {self.path}: {bad}; the shard is damaged: rebuild the store")
        return out, True

    def iter_chunks(self, rows_per_chunk: int, name: str = "descriptors"):
        """Yield (start, array) chunks of at most ``rows_per_chunk`` rows (bounded memory)."""
        if rows_per_chunk <= 0:
            raise ValueError("rows_per_chunk must be positive")
        n = self._shapes[name][0][0]
        for start in range(0, n, rows_per_chunk):
            yield start, self.read(name, slice(start, start + rows_per_chunk))

    def check_compatible(self, k=None, cutoff=None, species=None):
        """ValueError if the store was built with a different k, cutoff or species."""
        asked = []
        if k is not None and int(k) != self.k:
            asked.append(f"k={k}")
        if cutoff is not None and abs(float(cutoff) - self.cutoff) > 1e-12:
            asked.append(f"cutoff={cutoff}")
        if species is not None and sorted(species) != sorted(self.species):
            asked.append(f"species={sorted(species)}")
        if asked:
            raise ValueError(f"store {self.path} was built with k={self.k}, cutoff={self.cutoff}, "
                             f"species={self.species} but {', '.join(asked)} was asked for")

    def close(self):
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


_NONFINITE = "a non-finite value (NaN or inf)"
_CHECKSUM_FAILS = -2  # ``_verify_chunk``: the chunk fails HDF5's checksum
_UNKNOWN = -3  # ``_verify_chunk``: checksum good, values still to be checked (rows wanted: the caller's)


def _plan_from_table(entry, dset, path, dtype, trailing) -> dict | None:
    """A chunk plan (``DescriptorStore._chunk_plan``) from the table the master records for
    shard ``entry`` (``_chunk_table``), or None (none recorded, or not one this reader can
    trust: then the shard's own index is read). The master's seal and the shard's size and
    metadata checksum, checked at open, tie the table to the shard; here it must also fit the
    dataset's shape and the byte runs the metadata checksum left out."""
    table = (entry or {}).get("chunks", {}).get(dset) if isinstance(entry, dict) else None
    try:
        rows, size, runs, n = int(table["rows"]), int(table["size"]), table["runs"], int(entry["n_rows"])
        row_bytes = int(np.prod(trailing, dtype=np.int64)) * np.dtype(dtype).itemsize
        if rows <= 0 or size != rows * row_bytes + 4:
            return None
        chunks, data = {}, sorted((int(o), int(o) + int(n_)) for o, n_ in entry["data"])
        for first, offset, count in runs:
            first, offset, count = int(first), int(offset), int(count)
            if first != len(chunks) or count <= 0 or not any(lo <= offset and offset + count * size <= hi
                                                              for lo, hi in data):
                return None
            for i in range(count):
                chunks[(first + i) * rows] = (offset + i * size, size, 0)
        records = table.get("records")
        records = None if records is None else np.asarray(records, dtype=np.int64)
        if len(chunks) != -(-n // rows) or (records is not None and records.shape != (len(chunks), 3)):
            return None
    except (TypeError, KeyError, ValueError, AttributeError):
        return None
    return {"path": path, "rows": rows, "n": n, "chunks": chunks, "row_bytes": row_bytes, "records": records}


def _chunk_records(ds):
    """The writer's per-chunk records of the h5py dataset ``ds`` ((n_chunks, 3) int64:
    HDF5's fletcher32, the flipped fletcher32, all finite), or None (another writer or an
    older hpcquests; or not as expected, which only costs the full checks)."""
    from .chunks import CHUNK_RECORDS

    if ds.dtype.str != "<f8" or CHUNK_RECORDS not in ds.attrs:
        return None
    records = np.asarray(ds.attrs[CHUNK_RECORDS])
    n_chunks = -(-int(ds.shape[0]) // int(ds.chunks[0]))
    if records.shape != (n_chunks, 3) or records.dtype.kind != "i":
        return None
    return records


def _verify_chunk(body, trailer: int, records, index: int, finite: bool, row_bytes: int) -> int:
    """Check one chunk read from a shard: ``body`` (uint8, the whole chunk) and ``trailer``
    (the fletcher32 stored after it). Returns the chunk row of its first non-finite value
    (``finite``: the caller wants every row checked), -1 if none, ``_UNKNOWN`` if the values
    were not checked, ``_CHECKSUM_FAILS``.

    A chunk still as its writer recorded it (trailer and flipped fletcher32 equal to the record,
    see ``kernels.checksum.flipped_fletcher32``) was all finite if the record says so: one pass.
    Otherwise (no record, or changed since: an in-place HDF5 edit passes HDF5's checksum) HDF5's
    fletcher32 is verified and, for ``finite``, the values scanned in the same call."""
    from ..kernels.checksum import check_float64_chunk, flipped_fletcher32, hdf5_fletcher32

    if records is not None:
        checksum, flipped, all_finite = (int(v) for v in records[index])
        if trailer == checksum and flipped_fletcher32(body) == flipped:
            return -1 if all_finite else _UNKNOWN
    if finite:
        checksum, bad = check_float64_chunk(body)
        bad = bad // (row_bytes // 8) if bad >= 0 else -1
    else:
        checksum, bad = hdf5_fletcher32(body), _UNKNOWN
    return _CHECKSUM_FAILS if checksum != trailer else bad


def _must_be_finite(name, dtype, ndim) -> bool:
    """Descriptors are checked for NaN/inf on every read (a reference or query holding one
    would make every δH inf or NaN)."""
    return name == "descriptors" and dtype == np.float64 and ndim == 2


def _bad_value(path, name, where, what) -> str:
    return (f"store {path}: dataset {name!r} {where} holds {what}; the store is damaged or was written "
            "from bad input: rebuild it")


def _map_threads(fn, tasks):
    """``[fn(t) for t in tasks]`` over a few threads (the numba thread count, at most 8), each
    taking a contiguous run of tasks: the reads and checksums release the GIL, so one chunk is
    verified while another is read."""
    from ..runtime import current_threads

    n = max(1, min(current_threads(), 8, len(tasks)))
    if n == 1:
        return [fn(t) for t in tasks]
    import threading

    results = [None] * len(tasks)
    failures = []
    bounds = np.linspace(0, len(tasks), n + 1).astype(int)

    def run(lo, hi):
        try:
            for i in range(lo, hi):
                results[i] = fn(tasks[i])
        except BaseException as exc:  # re-raised in the calling thread
            failures.append(exc)

    workers = [threading.Thread(target=run, args=(int(bounds[i]), int(bounds[i + 1]))) for i in range(1, n)]
    for w in workers:
        w.start()
    try:
        run(int(bounds[0]), int(bounds[1]))  # the calling thread takes the first run
    finally:
        for w in workers:
            w.join()
    if failures:
        raise failures[0]
    return results


def open_store(path) -> DescriptorStore:
    """Open a store for reading (ValueError naming the file if it is not a valid store)."""
    return DescriptorStore(path)


def verify_store(path, rows_per_block: int = 1 << 17) -> dict:
    """Read every dataset of store ``path`` whole, verifying every chunk's checksum and the
    values (``DescriptorStore.read``); returns {dataset: rows}. ValueError naming the store,
    shard, dataset and rows on the first failure."""
    counts = {}
    with open_store(path) as store:
        for name, ds in store._f.items():
            if ds.ndim == 0:
                store._read_hdf5(name, ds, ())
                counts[name] = 0
                continue
            for _ in store.iter_chunks(rows_per_block, name):
                pass
            counts[name] = int(ds.shape[0])
    return counts


def relink_store(path) -> dict:
    """Point the master of a renamed copy at its own shard folder.

    ``cp train.h5 copy.h5; cp -r train.h5.shards copy.h5.shards`` gives a master whose virtual
    sources still name ``train.h5.shards/`` (HDF5 stores them relative but with the folder
    name). This rewrites ``copy.h5`` (durably, keeping its write id, attributes and small
    datasets) so its sources are the same-named shards in ``copy.h5.shards/``, after checking
    each is there with the recorded size. Returns {"store", "shards", "was"}."""
    import h5py

    path = os.fspath(path)
    own = os.path.basename(shard_dir(path))
    base = os.path.dirname(os.path.abspath(path))
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise ValueError(f"store {path}: cannot be opened as HDF5 ({exc})") from None
    with f:
        if f.attrs.get("format") != FORMAT:
            raise ValueError(f"store {path}: not an hpcquests store")
        listed = json.loads(f.attrs.get("shards", "[]"))
        was = sorted({os.path.dirname(os.path.normpath(s["file"])) for s in listed})
        infos = []
        for s in listed:
            name = os.path.basename(os.path.normpath(s["file"]))
            rel = os.path.join(own, name)
            here = os.path.join(base, rel)
            if not os.path.exists(here):
                raise ValueError(f"store {path}: {rel} is missing; copy the whole shard folder "
                                 f"({', '.join(was)}/) to {own}/ first")
            if "size" in s and os.path.getsize(here) != s["size"]:
                raise ValueError(f"store {path}: {rel} has {os.path.getsize(here)} bytes, the master recorded "
                                 f"{s['size']}: not a copy of the listed shard")
            with h5py.File(here, "r") as sf:
                datasets = {k: {"shape": list(d.shape), "dtype": d.dtype.str} for k, d in sf.items()}
            infos.append({**s, "file": rel, "datasets": datasets})
        virtual = {k for k, d in f.items() if d.is_virtual}
        per_structure = {k: d[...] for k, d in f.items() if k not in virtual and k != "offsets"
                         and not (k == "descriptors" and not infos)}
        n_cols = int(f["descriptors"].shape[1]) if "descriptors" in f else None
        offsets = f["offsets"][...]
        write_id = f.attrs.get("write_id")
        skip = {"format", "format_version", "n_shards", "write_id", "shards"}
        attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items() if k not in skip}
    for info in infos:  # the datasets the virtual layout maps: those the master has virtual
        info["datasets"] = {k: v for k, v in info["datasets"].items() if k in virtual}
    write_master(path, infos, offsets, attrs=attrs, n_cols=n_cols, per_structure=per_structure,
                 write_id=write_id if isinstance(write_id, str) else None)
    return {"store": path, "shards": len(infos), "was": was}
