"""Shared data and helpers of the GPU-backend tests."""

from __future__ import annotations

import ctypes
import shutil
import subprocess

import numpy as np

from hpcquests.kernels import gpu as gpu_mod
from hpcquests.kernels.registry import CpuBackend

#: |a − b| ≤ RTOL·max(1, |b|) between float64 backends.
RTOL = 1e-10


def assert_close(a, b, rtol=RTOL):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    assert np.array_equal(np.isfinite(a), np.isfinite(b))
    f = np.isfinite(b)
    err = np.abs(a[f] - b[f])
    tol = rtol * np.maximum(1.0, np.abs(b[f]))
    assert (err <= tol).all(), f"max error {err.max():.3g}, worst ratio {(err / tol).max():.3g}"
    assert np.array_equal(a[~f], b[~f])


def clustered(n, d, seed, scale=0.05, spread=0.02):
    """Points around a few centres (neighbours at a few bandwidths, like descriptors)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=scale, size=(5, d))
    return centres[rng.integers(0, 5, n)] + rng.normal(scale=spread, size=(n, d))


def fold_all(be, y, pieces, hs, *, n_ref=None, offsets=None):
    """L of queries ``y`` against reference ``pieces`` folded in the given order."""
    inv2h2, prune_d2 = be.reference_params(hs, n_ref or sum(len(p) for p in pieces))
    st = be.start(y, hs.size)
    for k, p in enumerate(pieces):
        be.fold(st, p, inv2h2, prune_d2, exclude_offset=-1 if offsets is None else offsets[k])
    return be.finish(st, inv2h2)


def cpu_logsum(y, x, hs, **kw):
    return fold_all(CpuBackend(), y, [x], hs, **kw)


# -- the raw CUDA kernel, compiled as C++ -----------------------------------------------------------
#
# CUDA's names mapped onto C++20: one std::thread per CUDA thread, one block at a time (so
# ``__shared__`` becomes a function-local static), ``__syncthreads`` a std::barrier, and a barrier
# between blocks. Every thread's barrier count per block is recorded and compared. (A divergent
# barrier, UB on a GPU, would hang or show as unequal counts; a test timeout catches a hang.)

_SHIM_HEAD = r"""
#include <barrier>
#include <cmath>
#include <cstring>
#include <math.h>
#include <thread>
#include <vector>
struct hq_dim3 { int x, y, z; };
static thread_local hq_dim3 threadIdx, blockIdx;
static thread_local long hq_syncs = 0;
static std::barrier<>* hq_bar = nullptr;
static inline void __syncthreads() { ++hq_syncs; hq_bar->arrive_and_wait(); }
static inline double __longlong_as_double(long long v) { double d; std::memcpy(&d, &v, 8); return d; }
#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(n)
#define __shared__ static
"""

_SHIM_TAIL = r"""
extern "C" int hq_launch(int grid, const real_t* g, const double* yn, const double* xn, const double* a,
                         double* m, double* s, int nq, int nr, int n_h, double prune,
                         long long excl_base, int use_excl)
{
    /* HQ_THREADS threads run the blocks one after another, with a barrier between blocks */
    std::barrier<> bar(HQ_THREADS);
    hq_bar = &bar;
    std::vector<long> syncs((size_t)grid * HQ_THREADS);
    std::vector<std::thread> ts;
    for (int t = 0; t < HQ_THREADS; ++t)
        ts.emplace_back([=, &bar, &syncs] {
            for (int b = 0; b < grid; ++b) {
                threadIdx = {t, 0, 0};
                blockIdx = {b, 0, 0};
                hq_syncs = 0;
                hq_fold_tile(g, yn, xn, a, m, s, nq, nr, n_h, prune, excl_base, use_excl);
                syncs[(size_t)b * HQ_THREADS + t] = hq_syncs;
                bar.arrive_and_wait();
            }
        });
    for (auto& th : ts) th.join();
    int bad = 0;
    for (int b = 0; b < grid; ++b)
        for (int t = 1; t < HQ_THREADS; ++t)
            bad |= syncs[(size_t)b * HQ_THREADS + t] != syncs[(size_t)b * HQ_THREADS];
    return bad;
}
"""


class KernelEmulator:
    """``_FOLD_TILE_SRC`` built as a shared library; ``kernel(dtype)`` returns a stand-in for the
    ``cupy.RawKernel`` that checks the launch configuration and argument types the Python side
    passes, then runs the kernel source on the CPU."""

    THREADS = 8  # small blocks: rows longer than a block, and threads with no column

    def __init__(self, workdir):
        cxx = shutil.which("g++") or shutil.which("clang++")
        if cxx is None:
            raise RuntimeError("no C++ compiler")
        self.libs = {}
        for dt in ("float64", "float32"):
            src = workdir / f"tile_{dt}.cpp"
            so = workdir / f"tile_{dt}.so"
            src.write_text(_SHIM_HEAD + gpu_mod.kernel_source(dt, threads=self.THREADS) + _SHIM_TAIL)
            proc = subprocess.run([cxx, "-std=c++20", "-O1", "-shared", "-fPIC", "-pthread", "-o", str(so), str(src)],
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(f"C++20 build of the kernel failed:\n{proc.stderr[-3000:]}")
            lib = ctypes.CDLL(str(so))
            lib.hq_launch.restype = ctypes.c_int
            lib.hq_launch.argtypes = [ctypes.c_int] + [ctypes.c_void_p] * 6 + [
                ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_double, ctypes.c_longlong, ctypes.c_int]
            self.libs[dt] = lib
        self.launches = 0

    def kernel(self, dtype):
        lib = self.libs[np.dtype(dtype).name]
        real = np.dtype(dtype)

        def launch(grid, block, args):
            assert block == (gpu_mod.THREADS,) and len(grid) == 1
            g, yn, xn, a, m, s, nq, nr, n_h, prune, excl_base, use_excl = args
            assert (type(nq), type(nr), type(n_h), type(prune), type(excl_base), type(use_excl)) == (
                np.int32, np.int32, np.int32, np.float64, np.int64, np.int32)
            assert grid == (int(nq),)
            for arr, dt, shape in ((g, real, (nq, nr)), (yn, np.float64, (nq,)), (xn, np.float64, (nr,)),
                                   (a, np.float64, (n_h,)), (m, np.float64, (nq,)), (s, np.float64, (nq, n_h))):
                assert arr.dtype == dt and arr.shape == tuple(int(v) for v in shape) and arr.flags.c_contiguous
            bad = lib.hq_launch(int(nq), g.ctypes.data, yn.ctypes.data, xn.ctypes.data, a.ctypes.data,
                                m.ctypes.data, s.ctypes.data, int(nq), int(nr), int(n_h), float(prune),
                                int(excl_base), int(use_excl))
            assert bad == 0, "threads of a block passed different numbers of __syncthreads"
            self.launches += 1

        return launch


def emulated_backend(emulator, precision="float64", **kw):
    """A numpy-backed GpuBackend whose tile update is the raw kernel run by ``emulator``."""
    be = gpu_mod.GpuBackend(xp=np, precision=precision, fused=True, **kw)
    be._kernel = lambda: emulator.kernel(be.dtype)
    return be
