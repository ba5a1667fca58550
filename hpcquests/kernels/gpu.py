"""GPU (CuPy) twin of the CPU kernel sums, behind ``--backend gpu`` (see ``docs/gpu.md``).

``GpuBackend`` implements the protocol of ``hpcquests.kernels.cpu_backend.CpuBackend``
(``reference_params``, ``start``, ``fold``, ``finish``, ``prepare_reference``, ``logsum``) on an
*array module* ``xp``: CuPy by default (imported when first needed, never when hpcquests is
imported), or numpy, which runs the very same blocking and bookkeeping on the CPU and is what
the tests without a GPU exercise.

The running log-sum-exp state of ``hpcquests.kernels.cpu`` lives on the device between folds:
``y`` (queries, compute dtype), ``yn`` (their squared norms, float64), ``m`` (smallest d² seen
so far) and ``s[:, h] = Σ exp(−(d² − m)·a_h)``, a_h = 1/(2h²). Only ``finish`` copies back
(``L = −m·a + log s``, an (M, n_h) float64 numpy array).

``fold`` walks (query block × reference tile) pairs. For each pair one GEMM gives the tile
``G = y·xᵀ`` (bounded size: ``query_block × ref_block``; the full M×N matrix never exists), and
one *tile update* turns it into the state:

    d² = max(|y|² + |x|² − 2G, 0)     (the self pair i ↔ i − exclude_offset masked out)
    m' = min(m, min_j d²);  s ← s·exp(−(m − m')·a) + Σ_{d² − m' < prune_d2} exp(−(d² − m')·a)

With ``xp=cupy`` the tile update is the fused raw CUDA kernel ``_FOLD_TILE_SRC`` (one thread
block per query row: a block-wide min, the rescale, and a block-wide masked exp sum per
bandwidth, reading the tile twice and writing nothing but the row's state); otherwise (numpy,
or ``fused=False``) it is ``_tile_arrays``, the same arithmetic as whole-array operations. Both
share everything else (``_fold_tiles``), so the stand-in tests cover the blocking, the tile
offsets, the self-pair index, empty inputs and the running-minimum rescale.

Pruning keeps exactly the terms the CPU keeps (d² − m < 2h²_max·T with the running m), so the
float64 results agree with the CPU backend to rounding (|ΔL| ≲ 1e-13 measured; the CPU's
polynomial exp contributes 3e-14 of it).

**float32** (``precision="float32"``, the switch the CPU backend shares): the GEMM runs in
float32 on float32 copies of y and x; norms, d² = |y|² + |x|² − 2G and t = d² − m are formed in
float64 from that float32 G; the exponent −t·a is rounded to float32 and exponentiated in float32
(CUDA ``expf``, ≤ 2 ulp); m, s and every sum stay float64. Its error is within the one bound of
``hpcquests.kernels.precision.float32_error_bound`` (derived there for the CPU's float32 kernel,
which also forms d² in float32; each step here is at least as accurate), and rows over the
tolerance are recomputed in float64 by the same ``logsum_to_tolerance``. Measured on thermal bcc
Ta (k = 32, d = 63): h = 0.015: max |ΔδH| = 4.5e-5 against float64
(``tests/gpu/test_standin.py::test_float32_within_stated_bound``). Do not set ``CUPY_TF32=1``:
TF32 GEMMs keep 10 mantissa bits and void this bound.
"""

from __future__ import annotations

from contextlib import nullcontext

import numpy as np

from .cpu_backend import QueryState

#: Stands in for +inf where a finite number is needed (as in ``hpcquests.kernels.cpu``).
BIG = 1e300
#: Threads per CUDA block of the tile kernel (one block per query row; a power of two).
THREADS = 256
#: Default tile shapes: the device tile is query_block × ref_block × itemsize bytes
#: (2048 × 4096 × 8 = 64 MiB in float64); the numpy stand-in uses cache-sized tiles.
DEVICE_BLOCKS = (2048, 4096)
HOST_BLOCKS = (256, 2048)

#: The fused tile update (CUDA C++ compiled by NVRTC through ``cupy.RawKernel``). ``real_t`` is
#: the dtype of the GEMM tile (double, or float in float32 mode), ``HQ_EXP`` its exp.
#:
#: One block of HQ_THREADS threads per query row i of the tile (grid = nq):
#:   pass 1  d²_j = max(yn_i + xn_j − 2 g_ij, 0) for the row's j (stride HQ_THREADS), skipping the
#:           self pair j == excl_base + i; block-wide min → rmin; a row with nothing left returns.
#:   update  mm = min(m_i, rmin); shift = m_i − mm (0 while m_i = inf, when s_i = 0).
#:   pass 2  per bandwidth h: Σ_j exp(−(d²_j − mm)·a_h) over the kept d²_j − mm < prune, recomputed
#:           from the tile (no d² is stored), block-wide sum; thread 0 sets
#:           s_ih ← s_ih·exp(−shift·a_h) + sum. Finally thread 0 sets m_i ← mm.
#: Every thread reads m_i before the first barrier of pass 2, and thread 0 writes it after the
#: last one; red[] is reused only after a barrier that follows every read of it.
_FOLD_TILE_SRC = r"""
#define HQ_THREADS __HQ_THREADS__
typedef __HQ_REAL__ real_t;
#define HQ_EXP __HQ_EXP__

__device__ __forceinline__ double hq_d2(const real_t* __restrict__ row, int j, double yi,
                                        const double* __restrict__ xn)
{
    return fmax(yi + xn[j] - 2.0 * (double)row[j], 0.0);
}

extern "C" __global__ void __launch_bounds__(HQ_THREADS)
hq_fold_tile(const real_t* __restrict__ g,   /* (nq, nr) tile of y.x^T, row-major          */
             const double* __restrict__ yn,  /* (nq,) squared norms of the tile's queries  */
             const double* __restrict__ xn,  /* (nr,) squared norms of the tile's refs     */
             const double* __restrict__ a,   /* (n_h,) 1/(2h^2)                            */
             double* __restrict__ m,         /* (nq,) running min d^2 (in/out)             */
             double* __restrict__ s,         /* (nq, n_h) running sums, row-major (in/out) */
             const int nq, const int nr, const int n_h, const double prune,
             const long long excl_base, const int use_excl)
{
    __shared__ double red[HQ_THREADS];
    const int i = blockIdx.x;
    const int tid = threadIdx.x;
    if (i >= nq) return;
    const double inf = __longlong_as_double(0x7ff0000000000000LL);
    const real_t* row = g + (long long)i * nr;
    const double yi = yn[i];
    const long long jskip = use_excl ? excl_base + i : -1LL;

    double lo = inf;
    for (int j = tid; j < nr; j += HQ_THREADS) {
        if ((long long)j == jskip) continue;
        lo = fmin(lo, hq_d2(row, j, yi, xn));
    }
    red[tid] = lo;
    __syncthreads();
    for (int w = HQ_THREADS / 2; w > 0; w >>= 1) {
        if (tid < w) red[tid] = fmin(red[tid], red[tid + w]);
        __syncthreads();
    }
    const double rmin = red[0];
    if (!(rmin < inf)) return;              /* the whole row was the excluded pair */
    const double m_old = m[i];
    const double mm = fmin(m_old, rmin);
    const double shift = (m_old < inf) ? m_old - mm : 0.0;

    for (int h = 0; h < n_h; ++h) {
        const double ah = a[h];
        double acc = 0.0;
        for (int j = tid; j < nr; j += HQ_THREADS) {
            if ((long long)j == jskip) continue;
            const double t = hq_d2(row, j, yi, xn) - mm;
            if (t < prune) acc += (double)HQ_EXP((real_t)(-t * ah));
        }
        __syncthreads();                    /* every read of red[] above is done */
        red[tid] = acc;
        __syncthreads();
        for (int w = HQ_THREADS / 2; w > 0; w >>= 1) {
            if (tid < w) red[tid] += red[tid + w];
            __syncthreads();
        }
        if (tid == 0) {
            const long long k = (long long)i * n_h + h;
            s[k] = s[k] * exp(-shift * ah) + red[0];
        }
    }
    if (tid == 0) m[i] = mm;
}
"""


def kernel_source(dtype="float64", threads: int = THREADS) -> str:
    """The CUDA source of the tile kernel for a tile dtype (``float64`` or ``float32``)."""
    dt = np.dtype(dtype)
    real, exp = {np.dtype(np.float64): ("double", "exp"), np.dtype(np.float32): ("float", "expf")}[dt]
    return (_FOLD_TILE_SRC.replace("__HQ_THREADS__", str(int(threads)))
            .replace("__HQ_REAL__", real).replace("__HQ_EXP__", exp))


def _blocks(n: int, b: int):
    for lo in range(0, n, b):
        yield lo, min(lo + b, n)


class GpuBackend:
    """Kernel sums on an array module (CuPy by default); protocol of ``cpu_backend.CpuBackend``.

    Args:
        xp: array module: None (CuPy, imported on first use) or numpy (the CPU stand-in).
        precision: ``"float64"`` (default) or ``"float32"`` for the GEMM and the exps (sums stay
            float64; error bound: ``kernels.precision.float32_error_bound``).
        device: CUDA device id all work runs on (restored afterwards); None: the current one.
        query_block, ref_block: tile shape (defaults: ``DEVICE_BLOCKS`` on CuPy, ``HOST_BLOCKS``
            on numpy).
        fused: use the raw CUDA tile kernel (default: whenever xp is not numpy); False runs the
            array-operation tile update, on the GPU too (a cross-check of the kernel).
    """

    name = "gpu"

    def __init__(self, xp=None, precision="float64", device=None, query_block: int | None = None,
                 ref_block: int | None = None, fused: bool | None = None):
        from .precision import check_precision

        self.precision = check_precision(precision)
        dt = np.dtype(self.precision)
        for nm, v in (("query_block", query_block), ("ref_block", ref_block)):
            if v is not None and (isinstance(v, bool) or int(v) != v or v < 1):
                raise ValueError(f"{nm} must be a positive integer, got {v!r}")
        self.dtype = dt
        self.device = None if device is None else int(device)
        self._xp = xp
        self._query_block = query_block
        self._ref_block = ref_block
        self._fused = fused
        self._kernels: dict = {}

    def __repr__(self):
        xp = "cupy" if self._xp is None else getattr(self._xp, "__name__", "?")
        return f"GpuBackend(xp={xp}, precision={self.precision}, device={self.device})"

    def with_precision(self, precision: str) -> "GpuBackend":
        """This backend's twin in ``precision`` (same array module, device, tiles, kernel path)."""
        return GpuBackend(xp=self._xp, precision=precision, device=self.device, query_block=self._query_block,
                          ref_block=self._ref_block, fused=self._fused)

    # -- configuration ---------------------------------------------------------------------
    @property
    def xp(self):
        if self._xp is None:
            import cupy

            self._xp = cupy
        return self._xp

    @property
    def on_host(self) -> bool:
        return self.xp is np

    @property
    def fused(self) -> bool:
        return (not self.on_host) if self._fused is None else bool(self._fused)

    @property
    def query_block(self) -> int:
        return int(self._query_block or (HOST_BLOCKS if self.on_host else DEVICE_BLOCKS)[0])

    @property
    def ref_block(self) -> int:
        return int(self._ref_block or (HOST_BLOCKS if self.on_host else DEVICE_BLOCKS)[1])

    def _context(self):
        """Device scope (restores the caller's device) and, on numpy, silence inf arithmetic."""
        if self.on_host:
            return np.errstate(all="ignore")
        if self.device is None:
            return nullcontext()
        from .devices import use_device

        return use_device(self.device)

    # -- protocol ----------------------------------------------------------------------------
    @staticmethod
    def reference_params(hs: np.ndarray, n_ref_total: int):
        from .cpu_backend import CpuBackend

        return CpuBackend.reference_params(hs, n_ref_total)

    def _norms(self, a):
        xp = self.xp
        a64 = a if a.dtype == np.float64 else a.astype(np.float64)
        return xp.einsum("ij,ij->i", a64, a64) if a.shape[0] else xp.zeros(0)

    def _to_device(self, a):
        a = self.xp.asarray(a, dtype=self.dtype)
        if a.ndim != 2:
            raise ValueError(f"expected a 2-D (rows, features) array, got shape {a.shape}")
        return self.xp.ascontiguousarray(a)

    def start(self, yc, n_h: int) -> QueryState:
        """Upload the (centred) queries and an empty state (m = inf, s = 0) to the device."""
        if int(n_h) < 1:
            raise ValueError(f"n_h must be >= 1, got {n_h!r}")
        xp = self.xp
        with self._context():
            st = QueryState(self._to_device(yc), int(n_h))
            st.yn = self._norms(st.y)
            st.m = xp.full(st.y.shape[0], np.inf)
            st.s = xp.zeros((st.y.shape[0], int(n_h)))
        return st

    def fold(self, st: QueryState, xc, inv2h2, prune_d2: float, *, xn=None, exclude_offset: int = -1):
        """Fold a reference block (host or device array, any order) into ``st`` on the device.

        ``xn`` (squared norms of ``xc``) is used in float64 mode; float32 recomputes them from the
        rounded rows. ``exclude_offset >= 0``: query i skips reference row i − exclude_offset.
        """
        if st.y.shape[0] == 0 or len(xc) == 0:
            return
        xp = self.xp
        with self._context():
            x = self._to_device(xc)
            if x.shape[1] != st.y.shape[1]:
                raise ValueError(f"reference has {x.shape[1]} features, the queries {st.y.shape[1]}")
            if xn is None or self.dtype != np.float64:
                xn = self._norms(x)
            else:
                xn = xp.ascontiguousarray(xp.asarray(xn, dtype=np.float64))
            a = xp.ascontiguousarray(xp.asarray(inv2h2, dtype=np.float64).reshape(-1))
            if a.size != st.s.shape[1]:
                raise ValueError(f"{a.size} bandwidths for a state of {st.s.shape[1]}")
            self._fold_tiles(st, x, xn, a, min(float(prune_d2), BIG), int(exclude_offset))

    def _fold_tiles(self, st, x, xn, a, prune: float, exclude_offset: int):
        """The blocking shared by the raw kernel and the array path."""
        xp = self.xp
        M, N = st.y.shape[0], x.shape[0]
        qb, rb = self.query_block, self.ref_block
        buf = xp.empty(min(qb, M) * min(rb, N), dtype=self.dtype)
        tile = self._tile_kernel if self.fused else self._tile_arrays
        for q0, q1 in _blocks(M, qb):
            for r0, r1 in _blocks(N, rb):
                g = buf[: (q1 - q0) * (r1 - r0)].reshape(q1 - q0, r1 - r0)
                xp.matmul(st.y[q0:q1], x[r0:r1].T, out=g)
                # query q0 + ii skips tile column excl_base + ii (outside [0, nr): no pair here)
                excl_base = q0 - exclude_offset - r0 if exclude_offset >= 0 else None
                tile(g, st.yn[q0:q1], xn[r0:r1], a, st.m[q0:q1], st.s[q0:q1], prune, excl_base)

    def _tile_arrays(self, g, yn, xn, a, m, s, prune, excl_base):
        """Tile update with array operations (numpy stand-in, or CuPy with ``fused=False``).

        Same arithmetic as the raw kernel: d² in float64 from the (possibly float32) tile, the
        exponent rounded to the tile dtype before exp, sums in float64. ``m``, ``s``: views of
        the state rows of this query block, updated in place.
        """
        xp = self.xp
        nq, nr = g.shape
        d2 = yn[:, None] + xn[None, :] - 2.0 * g.astype(np.float64, copy=False)
        xp.maximum(d2, 0.0, out=d2)
        if excl_base is not None:
            lo, hi = max(0, -excl_base), min(nq, nr - excl_base)
            if lo < hi:
                ii = xp.arange(lo, hi)
                d2[ii, ii + excl_base] = np.inf
        rmin = d2.min(axis=1)
        mm = xp.minimum(m, rmin)
        shift = xp.where(m < np.inf, m - mm, 0.0)
        t = d2 - mm[:, None]  # inf for the excluded pair; nan on rows with no pair (never kept)
        keep = t < prune
        for h in range(a.shape[0]):
            arg = (-t * a[h]).astype(self.dtype)
            part = xp.where(keep, xp.exp(arg), 0.0).sum(axis=1, dtype=np.float64)
            s[:, h] = s[:, h] * xp.exp(-shift * a[h]) + part
        m[...] = mm

    def _kernel(self):
        """The compiled tile kernel for this dtype (compiled by NVRTC on first launch)."""
        k = self._kernels.get(self.dtype.name)
        if k is None:
            k = self.xp.RawKernel(kernel_source(self.dtype), "hq_fold_tile")
            self._kernels[self.dtype.name] = k
        return k

    def _tile_kernel(self, g, yn, xn, a, m, s, prune, excl_base):
        """Tile update by the raw CUDA kernel: one block of ``THREADS`` per query row."""
        nq, nr = g.shape
        self._kernel()((nq,), (THREADS,),
                       (g, yn, xn, a, m, s, np.int32(nq), np.int32(nr), np.int32(a.shape[0]),
                        np.float64(prune), np.int64(0 if excl_base is None else excl_base),
                        np.int32(excl_base is not None)))

    def finish(self, st: QueryState, inv2h2) -> np.ndarray:
        """L = −m·a + log s as an (M, n_h) float64 numpy array (the state is kept)."""
        xp = self.xp
        with self._context():
            a = xp.asarray(inv2h2, dtype=np.float64).reshape(-1)
            L = -st.m[:, None] * a[None, :] + xp.log(st.s)
            return np.ascontiguousarray(L.get() if hasattr(L, "get") else L, dtype=np.float64)

    # one-shot convenience (serial metrics): the reference stays on the device
    def prepare_reference(self, xc, hs) -> dict:
        hs = np.asarray(hs, dtype=np.float64).reshape(-1)
        inv2h2, prune_d2 = self.reference_params(hs, len(xc))
        with self._context():
            x = self._to_device(xc)
            return {"x": x, "xn": self._norms(x), "inv2h2": inv2h2, "prune_d2": prune_d2}

    def logsum(self, yc, ref: dict) -> np.ndarray:
        st = self.start(yc, ref["inv2h2"].size)
        self.fold(st, ref["x"], ref["inv2h2"], ref["prune_d2"], xn=ref["xn"])
        return self.finish(st, ref["inv2h2"])


__all__ = ["GpuBackend", "kernel_source", "THREADS", "BIG"]
