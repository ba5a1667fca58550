"""Checked HDF5 datasets: chunked along the first axis, each chunk with HDF5's fletcher32
checksum, written directly (``write_direct_chunk``) with the checksum computed here. Used by the
store's shards and masters and by every other HDF5 file hpcquests writes (``durable.hdf5_image``).
"""

from __future__ import annotations

import numpy as np

CHUNK_BYTES = 1 << 20  # rows per chunk: about 1 MiB (checksummed and read as a unit)
# attribute of a little-endian float64 dataset: per chunk (HDF5's fletcher32, the flipped
# fletcher32, 1 if every value was finite) as written (int64 (n_chunks, 3))
CHUNK_RECORDS = "chunk_records"


def fill_value(dtype):
    """The fill value a row no source provides reads as: NaN (floats), -1 (signed integers),
    the largest value (unsigned), else None (HDF5's default)."""
    dtype = np.dtype(dtype)
    if dtype.kind in "fc":
        return np.nan
    if dtype.kind == "i":
        return -1
    if dtype.kind == "u":
        return np.iinfo(dtype).max
    return None


def _native(data) -> np.ndarray:
    """``data`` as a C-contiguous array in native byte order (the chunks are written raw)."""
    a = np.asarray(data)
    if a.dtype.kind in "biufc" and not a.dtype.isnative:
        a = a.astype(a.dtype.newbyteorder("="))
    return np.ascontiguousarray(a)


def _chunk_rows(shape, itemsize) -> int:
    row_bytes = itemsize * int(np.prod(shape[1:], dtype=np.int64)) if len(shape) > 1 else itemsize
    return max(1, min(CHUNK_BYTES // max(row_bytes, 1), max(int(shape[0]), 1)))


def create_checked_dataset(group, name: str, data) -> None:
    """Create ``group[name]`` holding ``data``, chunked along its first axis with HDF5's
    fletcher32 checksum and the dtype's fill value (``fill_value``).

    Numeric arrays: the chunks are formed here (the last one padded with the fill value, as
    HDF5 stores edge chunks whole) and written with ``write_direct_chunk``, their checksum from
    ``kernels.checksum.hdf5_fletcher32`` (bit-exact with HDF5's filter): one pass, no
    filter pipeline. Little-endian float64 data also gets the ``CHUNK_RECORDS`` attribute
    (``kernels.checksum.float64_chunk_record`` per chunk), which lets a reader skip the NaN scan
    of a chunk that is still as written. Anything else (strings, 0-d, empty) goes through HDF5's writer
    (checksummed where HDF5 can chunk it)."""
    from ..kernels.checksum import float64_chunk_record, hdf5_fletcher32

    a = _native(data)
    if a.ndim == 0 or a.dtype.kind not in "biufc" or any(n == 0 for n in a.shape):
        if a.ndim == 0 or any(n == 0 for n in a.shape):  # nothing to checksum
            group.create_dataset(name, data=a)
        else:
            group.create_dataset(name, data=a, chunks=True, fletcher32=True)
        return
    rows = _chunk_rows(a.shape, a.itemsize)
    fill = fill_value(a.dtype)
    kwargs = {} if fill is None else {"fillvalue": fill}
    ds = group.create_dataset(name, shape=a.shape, dtype=a.dtype, chunks=(rows, *a.shape[1:]),
                              fletcher32=True, **kwargs)
    nbytes = rows * (a.nbytes // a.shape[0] if a.shape[0] else a.itemsize)
    buf = np.empty(nbytes + 4, dtype=np.uint8)
    body = buf[:nbytes]
    tail = (0,) * (a.ndim - 1)
    records = [] if a.dtype.str == "<f8" else None
    for r0 in range(0, a.shape[0], rows):
        block = a[r0:r0 + rows]
        real = block.nbytes
        if block.shape[0] < rows:  # the edge chunk: stored whole, padded with the fill value
            full = np.full((rows, *a.shape[1:]), fill if fill is not None else 0, dtype=a.dtype)
            full[:block.shape[0]] = block
            block = full
        body[:] = block.reshape(-1).view(np.uint8)
        if records is None:
            checksum = hdf5_fletcher32(body)  # any byte count (uint8 columns can be odd)
        else:
            checksum, flipped, finite = float64_chunk_record(body, real)
            records.append((checksum, flipped, int(finite)))
        buf[nbytes:] = np.frombuffer(int(checksum).to_bytes(4, "little"), dtype=np.uint8)
        ds.id.write_direct_chunk((r0, *tail), buf)
    if records is not None:
        # read back by DescriptorStore.read: a chunk that still matches its record needs no
        # second pass for NaN; in the shard's metadata, which the master's checksum covers
        ds.attrs[CHUNK_RECORDS] = np.asarray(records, dtype=np.int64)
