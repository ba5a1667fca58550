"""Integrity kernels for the store's I/O path: HDF5's fletcher32 and a non-finite scan.

``hdf5_fletcher32`` gives exactly the value HDF5's fletcher32 filter stores after each chunk
(so a chunk written with ``write_direct_chunk`` and this checksum is read back and verified by
any HDF5 reader, and a chunk HDF5 wrote is verified here without HDF5's filter pipeline).
HDF5's algorithm (H5checksum.c) reads the bytes as big-endian 16-bit words and, in blocks of
360 words, adds each word to ``sum1`` and ``sum1`` to ``sum2`` (uint32), then folds both with
``s = (s & 0xffff) + (s >> 16)``; a final fold, and the result is ``(sum2 << 16) | sum1``.
Here each block's two sums are formed at once — ``Σ w`` and ``Σ (m - j) w_j`` — in float64
lanes that the compiler vectorises (every partial sum is an integer below 2^53, so exact), and
the block's effect on HDF5's running sums is applied with the same uint32 folds: bit-exact,
about 15 GB/s on one core (a word-by-word loop: 3 GB/s).
"""

from __future__ import annotations

import numba
import numpy as np

BLOCK = 360  # HDF5's block length (words summed between folds)


# ``_check_words`` modes (bits)
CHECKSUM = 1  # HDF5's fletcher32 of the words
FINITE = 2  # the first non-finite float64 they hold
FLIPPED = 4  # the flipped fletcher32 instead of HDF5's (``flipped_fletcher32``)
FLIP = 0x8000  # XORed into every word by the flipped checksum


@numba.njit(cache=True, nogil=True, fastmath=True, boundscheck=False)
def _check_words(words, block, mode):
    # One kernel for both integrity checks, so a process loads one compiled function from
    # numba's cache (each load costs milliseconds, paid by every command's first read).
    # Returns (fletcher32 or 0, index of the first non-finite float64 or -1).
    checksum = np.uint32(0)
    bad = -1
    if mode & 1:
        checksum = _fletcher32(words, block, FLIP if mode & 4 else 0)
    if mode & 2:
        bad = _first_nonfinite(words.view(np.uint64))
    return checksum, bad


@numba.njit(cache=True, nogil=True, fastmath=True, boundscheck=False)
def _fletcher32(words, block, flip) -> np.uint32:
    # ``block`` (360) comes in at run time: as a compile-time constant LLVM unrolls the inner
    # loop completely and no longer vectorises it (5x slower)
    weights = np.empty(block, np.float64)
    for j in range(block):
        weights[j] = block - j
    mask = np.uint64(0xFFFFFFFF)
    low = np.uint64(0xFFFF)
    sixteen = np.uint64(16)
    s1 = np.uint64(0)
    s2 = np.uint64(0)
    n = words.shape[0]
    for b0 in range(0, n, block):
        m = min(block, n - b0)
        if m == block:
            # Σ w_j and Σ (m - j) w_j in float64 lanes: exact (integers below 2^53)
            a1 = 0.0
            a2 = 0.0
            blk = words[b0:b0 + block]
            for j in range(block):
                x = blk[j]
                w = np.float64((((x & 0xFF) << 8) | (x >> 8)) ^ flip)
                a1 += w
                a2 += weights[j] * w
            u1 = np.uint64(a1)
            u2 = np.uint64(a2)
        else:
            u1 = np.uint64(0)
            u2 = np.uint64(0)
            for j in range(m):
                x = np.uint64(words[b0 + j])
                u1 += (((x & np.uint64(0xFF)) << np.uint64(8)) | (x >> np.uint64(8))) ^ np.uint64(flip)
                u2 += u1
        # HDF5 inside a block: sum2 gains m * sum1 (its value at the block start) + Σ (m - j) w_j
        s2 = (s2 + np.uint64(m) * s1 + u2) & mask
        s1 = (s1 + u1) & mask
        s1 = (s1 & low) + (s1 >> sixteen)
        s2 = (s2 & low) + (s2 >> sixteen)
    s1 = (s1 & low) + (s1 >> sixteen)
    s2 = (s2 & low) + (s2 >> sixteen)
    return np.uint32(((s2 << sixteen) | s1) & mask)


def _writable(a):
    # one compiled signature (writable arrays) serves every caller: a read-only view of a few
    # bytes (a master file, HDF5 metadata) is copied rather than loading a second one
    return a if a.flags.writeable else a.copy()


def hdf5_fletcher32_words(words) -> int:
    """HDF5's fletcher32 of the bytes viewed as ``words`` ((n,) uint16, native order).
    Releases the GIL (callers verify chunks from several threads)."""
    return int(_check_words(_writable(words), BLOCK, CHECKSUM)[0])


def check_float64_chunk(body) -> tuple[int, int]:
    """(HDF5's fletcher32, index of the first non-finite value or -1) of ``body``, a writable
    uint8 array holding float64 values (length a multiple of 8), in one call while it is in
    cache. Releases the GIL."""
    checksum, bad = _check_words(body.view(np.uint16), BLOCK, CHECKSUM | FINITE)
    return int(checksum), int(bad)


def flipped_fletcher32(body) -> int:
    """HDF5's fletcher32 of ``body`` (a writable uint8 array of even length) with every
    big-endian 16-bit word XORed with 0x8000 first: the write-time record of a float64 chunk.

    HDF5's own sum misses a word changing between 0x0000 and 0xFFFF (both 0 mod 65535), and in
    a little-endian float64 the word holding the sign and exponent turns a 0.0 into NaN by that
    change. The flipped sum misses only 0x7FFF <-> 0x8000, which leave every float64 finite
    (exponents 0x7F7 and 0x008 in that word). So a chunk whose flipped sum equals the one
    recorded when the writer found it all finite still is. Releases the GIL."""
    return int(_check_words(body.view(np.uint16), BLOCK, CHECKSUM | FLIPPED)[0])


def float64_chunk_record(body, real_bytes: int) -> tuple[int, int, bool]:
    """(HDF5's fletcher32, ``flipped_fletcher32``, whether all finite) of a float64 chunk
    ``body`` (writable uint8) whose first ``real_bytes`` bytes are data (the rest: an edge
    chunk's NaN padding). What the writer records for each chunk (``io.chunks.CHUNK_RECORDS``)."""
    words = body.view(np.uint16)
    bad = _check_words(words[:real_bytes // 2], BLOCK, FINITE)[1]
    return hdf5_fletcher32_words(words), flipped_fletcher32(body), bool(bad < 0)


def hdf5_fletcher32(buf) -> int:
    """HDF5's fletcher32 of a bytes-like ``buf`` (any length)."""
    b = np.frombuffer(memoryview(buf).cast("B"), dtype=np.uint8)
    if b.size % 2 == 0:
        return int(hdf5_fletcher32_words(b.view(np.uint16)))
    # an odd last byte: HDF5 adds it as the high byte of one more word, then folds
    even = int(hdf5_fletcher32_words(b[:-1].view(np.uint16))) if b.size > 1 else 0
    s1, s2 = even & 0xFFFF, even >> 16
    s1 += int(b[-1]) << 8
    s2 += s1
    for _ in range(2):
        s1 = (s1 & 0xFFFF) + (s1 >> 16)
        s2 = (s2 & 0xFFFF) + (s2 >> 16)
    return ((s2 << 16) | s1) & 0xFFFFFFFF


@numba.njit(cache=True, nogil=True, boundscheck=False)
def _first_nonfinite(bits) -> int:
    # a float64 is NaN or ±inf exactly when its 11 exponent bits are all ones; an integer
    # min-reduction (associative, so it vectorises without fastmath) finds whether a block has one
    expo = np.uint64(0x7FF0000000000000)
    n = bits.shape[0]
    for b0 in range(0, n, 4096):
        blk = bits[b0:b0 + 4096]
        least = expo
        for v in blk:
            least = min(least, (v & expo) ^ expo)
        if least == 0:
            for j in range(blk.shape[0]):
                if (blk[j] & expo) == expo:
                    return b0 + j
    return -1


def first_nonfinite_row(x) -> int:
    """Index of the first row of ``x`` ((n, d) float64, C-contiguous) holding NaN or ±inf, or
    -1. One vectorised pass over the bits (about 20 GB/s); releases the GIL."""
    x = np.ascontiguousarray(x, dtype=np.float64)
    if x.size == 0:
        return -1
    i = int(_check_words(x.reshape(-1).view(np.uint16), BLOCK, FINITE)[1])
    return -1 if i < 0 else i // (x.shape[1] if x.ndim == 2 else 1)
