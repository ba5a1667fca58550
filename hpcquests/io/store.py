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
written last by ``write_master`` (rank 0). Every file is written under a temporary name in its
own directory (``.<name>.tmp-<pid>``) and ``os.replace``d into place when complete and closed
(removed on error), so a reader never sees a half-written file or a master whose shards are not
all in place. HDF5 fills missing virtual sources with the fill value (zeros) silently and
follows any source path it finds, so ``open_store`` checks, before anything is read, every
virtual source of every dataset: inside this store's own shard folder (a renamed copy's master
still points at the original's shards), listed by the master, present, of the recorded size.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import uuid

import numpy as np

from .atomic import atomic_path

FORMAT = "hpcquests-store"
FORMAT_VERSION = 1
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
    import h5py

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
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = FORMAT + "-shard"
            f.attrs["row_start"] = int(row_start)
            for name, a in arrays.items():
                a = np.ascontiguousarray(a)
                f.create_dataset(name, data=a)
                datasets[name] = {"shape": list(a.shape), "dtype": a.dtype.str}
    return {"file": rel, "shard_id": int(shard_id), "row_start": int(row_start), "n_rows": int(n_rows),
            "datasets": datasets, "size": os.path.getsize(path), "write_id": write_id}


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
    with atomic_path(store_path) as tmp:
        with h5py.File(tmp, "w") as f:
            for name in names:
                first = infos[0]["datasets"][name]
                layout = h5py.VirtualLayout(shape=(n_env, *first["shape"][1:]), dtype=np.dtype(first["dtype"]))
                for s in infos:
                    if s["n_rows"] == 0:
                        continue
                    shape = tuple(s["datasets"][name]["shape"])
                    layout[s["row_start"]:s["row_start"] + s["n_rows"]] = h5py.VirtualSource(
                        s["file"], name, shape=shape)
                f.create_virtual_dataset(name, layout)
            if not infos and n_cols is not None:
                f.create_dataset("descriptors", shape=(0, int(n_cols)), dtype=np.float64)
            f.create_dataset("offsets", data=offsets)
            for name, a in (per_structure or {}).items():
                f.create_dataset(name, data=np.asarray(a))
            f.attrs["format"] = FORMAT
            f.attrs["format_version"] = FORMAT_VERSION
            f.attrs["n_shards"] = len(infos)
            # a new identity on every write: a rebuilt store is never mistaken for the old one
            # (a scan's checkpoint records it), whatever its size or layout
            f.attrs["write_id"] = write_id or new_write_id()
            f.attrs["shards"] = json.dumps([{k: s[k] for k in ("file", "row_start", "n_rows", "size") if k in s}
                                            for s in infos])
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
                structure_index=None, atom_index=None, extra: dict | None = None, sources=(), command=None,
                rows_per_shard: int | None = None, bandwidth: float | None = None) -> str:
    """Serial convenience writer: split the rows into shards, write them, then the master.

    Args:
        path: master file to create (``.h5``).
        descriptors: (n_env, d) float64, or None for a store without descriptors (e.g. δH only).
        offsets: (n_struct + 1,) int64 row offsets of each structure.
        extra: more datasets; per-row ones (length n_env) go to the shards, per-structure ones
            (``energy``) to the master.
        rows_per_shard: rows per shard file (default: one shard).
        bandwidth: optional kernel bandwidth recorded as an attribute.

    Returns the master path.
    """
    offsets = np.asarray(offsets, dtype=np.int64)
    if offsets.ndim != 1 or offsets.size < 1 or offsets[0] != 0 or np.any(np.diff(offsets) < 0):
        raise ValueError("offsets must start at 0 and be non-decreasing")
    n_env = int(offsets[-1])
    counts = np.diff(offsets)
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
    for name, a in (extra or {}).items():
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
    (their shards, their ``.tmp-PID`` files). Before it, a reader still sees the old store whole."""
    directory = shard_dir(path)
    keep = {os.path.basename(s["file"]) for s in infos}
    for name in os.listdir(directory):
        if name not in keep and (name.startswith("shard-") or (name.startswith(".shard-") and ".tmp-" in name)):
            try:
                os.remove(os.path.join(directory, name))
            except OSError:
                pass


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
        self._f = h5py.File(self.path, "r")
        try:
            if self._f.attrs.get("format") != FORMAT:
                raise ValueError(f"store {self.path}: not an hpcquests store (no format={FORMAT!r} attribute)")
            version = int(self._f.attrs.get("format_version", -1))
            if version > FORMAT_VERSION:
                raise ValueError(f"store {self.path}: format version {version} is newer than this hpcquests "
                                 f"understands ({FORMAT_VERSION})")
            base = os.path.dirname(os.path.abspath(self.path))
            prefix = os.environ.get("HDF5_VDS_PREFIX")
            shards = json.loads(self._f.attrs.get("shards", "[]"))
            self._check_sources(shards)
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
                there = os.path.join(prefix, s["file"]) if prefix else None
                if there and os.path.exists(there) and not os.path.samefile(here, there):
                    raise ValueError(f"store {self.path}: HDF5_VDS_PREFIX={prefix} makes HDF5 read shard "
                                     f"{there} instead of {here}; unset HDF5_VDS_PREFIX")
        except Exception:
            self._f.close()
            raise

    def _check_sources(self, shards):
        """Every virtual source, read from the virtual datasets themselves, must be a shard the
        master lists, inside this store's own shard folder: HDF5 follows any path it finds
        (absolute, ``../``), and a renamed copy's master still points at the original's shards."""
        own = os.path.basename(shard_dir(self.path))
        listed = {os.path.normpath(s["file"]) for s in shards}
        for name, ds in self._f.items():
            if not getattr(ds, "is_virtual", False):
                continue
            for src in ds.virtual_sources():
                f = src.file_name
                norm = os.path.normpath(f)
                if os.path.isabs(f) or norm.startswith("..") or os.path.dirname(norm) != own:
                    other = os.path.dirname(norm)
                    hint = (f" (a renamed copy of the store whose shards are in {other}/? copy it back under "
                            f"its own name, or rebuild it with hpcquests descriptors)"
                            if other.endswith(".shards") and not os.path.isabs(f) and ".." not in norm else "")
                    raise ValueError(f"store {self.path}: dataset {name!r} reads {f}, outside the store's own "
                                     f"shard folder {own}/{hint}")
                if norm not in listed:
                    raise ValueError(f"store {self.path}: dataset {name!r} reads {f}, which the master's shard "
                                     "list does not hold (a crafted or damaged master)")

    # --- metadata
    @property
    def attrs(self) -> dict:
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
        return int(self._f.attrs["k"])

    @property
    def cutoff(self) -> float:
        return float(self._f.attrs["cutoff"])

    @property
    def species(self) -> list:
        return list(self.attrs.get("species", []))

    @property
    def offsets(self) -> np.ndarray:
        return self._f["offsets"][...]

    @property
    def n_structures(self) -> int:
        return int(self._f["offsets"].shape[0] - 1)

    @property
    def n_env(self) -> int:
        return int(self._f["offsets"][-1])

    @property
    def dim(self) -> int:
        return int(self._f["descriptors"].shape[1]) if "descriptors" in self._f else 0

    def __contains__(self, name) -> bool:
        return name in self._f

    # --- data
    def read(self, name: str = "descriptors", rows=slice(None)) -> np.ndarray:
        if name not in self._f:
            raise ValueError(f"store {self.path}: no dataset {name!r}")
        return self._f[name][rows]

    def iter_chunks(self, rows_per_chunk: int, name: str = "descriptors"):
        """Yield (start, array) chunks of at most ``rows_per_chunk`` rows (bounded memory)."""
        if rows_per_chunk <= 0:
            raise ValueError("rows_per_chunk must be positive")
        ds = self._f[name]
        for start in range(0, ds.shape[0], rows_per_chunk):
            yield start, ds[start:start + rows_per_chunk]

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


def open_store(path) -> DescriptorStore:
    """Open a store for reading (ValueError naming the file if it is not a valid store)."""
    return DescriptorStore(path)
