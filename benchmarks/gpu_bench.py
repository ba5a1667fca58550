"""δH throughput: the CuPy backend against the CPU (numba) backend on the same inputs, and the
time of the 32.5M × 4,224 δH scan of a UQ run (issue 7's target: < 5 s on one H100).

    python benchmarks/gpu_bench.py                  # GPU float64 + float32 vs CPU, projected scan time
    python benchmarks/gpu_bench.py --full           # also run the whole 32.5M × 4,224 scan on the GPU
    python benchmarks/gpu_bench.py --xp numpy       # smoke test: the numpy stand-in instead of CuPy

Inputs: descriptors (k = 32, rc = 5 Å: d = 2k − 1 = 63) of thermal bcc Ta. The reference is
4,224 environments of five 8×8×8 crystals at 0.03–0.11 Å noise (as ``benchmarks/uq_scan.py``);
the queries are bcc Ta at 0.02–0.35 Å noise, tiled with 1e-4 jitter to the requested count.
h = 0.015. Everything is centred on the reference mean (as ``ReferenceSet``).

The CPU figure comes from a separate process (``--cpu-worker``, all cores unless ``--threads``)
running ``CpuBackend`` start/fold/finish on the first ``--cpu-queries`` queries; the GPU runs
the same queries too and the largest |ΔδH| between the two is reported. GPU timings are end to
end per chunk of queries (upload, fold, download of L: what ``ReferenceSet.logsum`` does) and
device-only (queries already resident). The scan projection is pairs / (end-to-end pairs/s).

Writes benchmarks/out/gpu.json. Without CuPy or a GPU the GPU part is skipped (and said so).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "out")
TARGET_QUERIES = 32_500_000
TARGET_REF = 4224
TARGET_S = 5.0
H = 0.015


def make_inputs(n_queries: int, n_ref: int = TARGET_REF, seed: int = 1):
    """(y, x) centred on the reference mean; y has n_queries rows."""
    import hpcquests as hq
    from hpcquests import testing

    frames = [testing.perturbed_crystal("bcc", "Ta", size=(8, 8, 8), noise=n, seed=90 + i)
              for i, n in enumerate((0.03, 0.05, 0.07, 0.09, 0.11))]
    x = hq.get_descriptors(frames)
    rng = np.random.default_rng(seed)
    x = x[rng.choice(len(x), min(n_ref, len(x)), replace=False)]
    base = hq.get_descriptors([testing.perturbed_crystal("bcc", "Ta", size=(6, 6, 6), noise=n, seed=10 + i)
                               for i, n in enumerate((0.02, 0.05, 0.08, 0.12, 0.2, 0.35))])
    idx = rng.integers(0, len(base), n_queries)
    y = base[idx] + rng.normal(0.0, 1e-4, (n_queries, base.shape[1]))
    c = x.mean(axis=0)
    return np.ascontiguousarray(y - c), np.ascontiguousarray(x - c)


def cpu_worker(path: str, out: str):
    """Run in its own process: CpuBackend on the saved inputs; writes L and the timing."""
    import numba

    from hpcquests.kernels.registry import CpuBackend

    z = np.load(path)
    y, x = z["y"], z["x"]
    hs = np.array([H])
    be = CpuBackend()
    inv2h2, prune = be.reference_params(hs, len(x))
    st = be.start(y[:64], 1)  # compile / load the cached kernels
    be.fold(st, x[:256], inv2h2, prune)
    t = time.perf_counter()
    st = be.start(y, 1)
    be.fold(st, x, inv2h2, prune)
    L = be.finish(st, inv2h2)
    dt = time.perf_counter() - t
    np.save(out, L)
    print(json.dumps({"seconds": dt, "threads": numba.get_num_threads(), "queries": len(y), "ref": len(x)}))


def run_cpu(y, x, threads):
    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, "gpu_bench_cpu_inputs.npz")
    lpath = os.path.join(OUT, "gpu_bench_cpu_L.npy")
    np.savez(path, y=y, x=x)
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    if threads:
        env["NUMBA_NUM_THREADS"] = str(threads)
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--cpu-worker", path, lpath],
                          env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"CPU worker failed:\n{proc.stderr[-3000:]}")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    L = np.load(lpath)
    for p in (path, lpath):
        os.remove(p)
    res["pairs_per_s"] = res["queries"] * res["ref"] / res["seconds"]
    return res, L


def _sync(be):
    if not be.on_host:
        be.xp.cuda.Device().synchronize()


def run_backend(be, y, x, chunk: int, repeat: int = 1):
    """End to end (host chunks in, L out) and device-only timings of one backend."""
    hs = np.array([H])
    ref = be.prepare_reference(x, hs)
    be.logsum(y[: min(len(y), 256)], ref)  # compile the kernel, warm the pools
    _sync(be)
    best = np.inf
    L = np.empty((len(y), 1))
    for _ in range(repeat):
        t = time.perf_counter()
        for q0 in range(0, len(y), chunk):
            L[q0:q0 + chunk] = be.logsum(y[q0:q0 + chunk], ref)
        best = min(best, time.perf_counter() - t)
    # device only: one resident chunk, fold + finish on the device (no download)
    yd = be.xp.asarray(y[:chunk])
    _sync(be)
    t = time.perf_counter()
    st = be.start(yd, 1)
    be.fold(st, ref["x"], ref["inv2h2"], ref["prune_d2"], xn=ref["xn"])
    _sync(be)
    dev = time.perf_counter() - t
    n = len(y)
    return {"queries": n, "ref": len(x), "chunk": chunk, "seconds_end_to_end": best,
            "pairs_per_s": n * len(x) / best, "device_only_pairs_per_s": len(yd) * len(x) / dev,
            "query_block": be.query_block, "ref_block": be.ref_block, "fused": be.fused}, L


def run_full(be, y, x, chunk: int):
    """The whole TARGET_QUERIES × n_ref scan: one host chunk uploaded again and again."""
    hs = np.array([H])
    ref = be.prepare_reference(x, hs)
    block = np.ascontiguousarray(y[:chunk])
    be.logsum(block[:256], ref)
    _sync(be)
    t = time.perf_counter()
    done = 0
    while done < TARGET_QUERIES:
        n = min(chunk, TARGET_QUERIES - done)
        be.logsum(block[:n], ref)
        done += n
    return {"queries": done, "ref": len(x), "seconds": time.perf_counter() - t}


def gpu_info(xp_name):
    if xp_name == "numpy":
        return {"device": "numpy stand-in (CPU)"}
    from hpcquests.kernels.registry import gpu_available, gpu_devices

    if not gpu_available():
        return None
    import cupy

    return {"device": gpu_devices()[0], "cupy": cupy.__version__}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--xp", choices=("cupy", "numpy"), default="cupy", help="array module of GpuBackend")
    ap.add_argument("--queries", type=int, default=None, help="GPU queries (default 4M; numpy: 4096)")
    ap.add_argument("--cpu-queries", type=int, default=None, help="CPU queries (default 65536; numpy: 2048)")
    ap.add_argument("--chunk", type=int, default=1 << 21, help="queries per logsum call (default 2M)")
    ap.add_argument("--threads", type=int, default=0, help="CPU worker threads (default: all cores)")
    ap.add_argument("--precision", "--dtype", dest="dtype", choices=("float64", "float32", "both"), default="both",
                    help="kernel precision(s) of the GPU runs (default both)")
    ap.add_argument("--query-block", type=int, default=None)
    ap.add_argument("--ref-block", type=int, default=None)
    ap.add_argument("--full", action="store_true", help="also run the whole 32.5M x 4,224 scan")
    ap.add_argument("--out", default=os.path.join(OUT, "gpu.json"))
    ap.add_argument("--cpu-worker", nargs=2, metavar=("INPUTS", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.cpu_worker:
        return cpu_worker(*args.cpu_worker)

    smoke = args.xp == "numpy"
    n_gpu = args.queries or (4096 if smoke else 1 << 22)
    n_cpu = args.cpu_queries or (2048 if smoke else 65536)
    info = gpu_info(args.xp)
    t = time.perf_counter()
    y, x = make_inputs(max(n_gpu, n_cpu))
    print(f"inputs: {len(y):,} queries x {len(x):,} reference, d = {x.shape[1]}, h = {H} "
          f"({time.perf_counter() - t:.1f} s to make)")
    target_pairs = TARGET_QUERIES * len(x)
    result = {"inputs": {"queries": len(y), "ref": len(x), "d": int(x.shape[1]), "h": H},
              "target": {"queries": TARGET_QUERIES, "ref": TARGET_REF, "pairs": target_pairs, "goal_s": TARGET_S},
              "host": {"machine": platform.machine(), "cpus": os.cpu_count()}}

    cpu, L_cpu = run_cpu(y[:n_cpu], x, args.threads)
    cpu["projected_scan_s"] = target_pairs / cpu["pairs_per_s"]
    result["cpu"] = cpu
    print(f"CPU (numba, {cpu['threads']} threads): {cpu['queries']:,} x {cpu['ref']:,} in {cpu['seconds']:.2f} s "
          f"= {cpu['pairs_per_s']:.3g} pairs/s -> 32.5M x 4,224 scan: {cpu['projected_scan_s']:.0f} s")

    if info is None:
        result["gpu"] = {"skipped": "CuPy or a CUDA device is not available"}
        print("GPU: skipped (CuPy or a CUDA device is not available); run on a GPU node, "
              "or use --xp numpy for a smoke test of the stand-in")
    else:
        from hpcquests.kernels.gpu import GpuBackend

        xp = np if smoke else None
        result["gpu"] = dict(info)
        print(f"GPU: {info['device']}")
        for dtype in (("float64", "float32") if args.dtype == "both" else (args.dtype,)):
            be = GpuBackend(xp=xp, precision=dtype, query_block=args.query_block, ref_block=args.ref_block)
            res, L = run_backend(be, y[:n_gpu], x, args.chunk)
            dH_err = float(np.abs(L[:n_cpu] - L_cpu).max()) if n_gpu >= n_cpu else None
            if dH_err is None:
                be2 = GpuBackend(xp=xp, precision=dtype, query_block=args.query_block, ref_block=args.ref_block)
                L = be2.logsum(y[:n_cpu], be2.prepare_reference(x, np.array([H])))
                dH_err = float(np.abs(L[:n_cpu] - L_cpu).max())
            res["max_abs_dH_vs_cpu"] = dH_err
            if dtype == "float32":  # every row within its own bound (the shared CPU/GPU bound)
                from hpcquests.kernels.precision import float32_error_bound

                bound = float32_error_bound([H], x.shape[1], np.linalg.norm(y[:n_cpu], axis=1),
                                            float(np.linalg.norm(x, axis=1).max()), len(x))
                rows = np.abs(L[:n_cpu] - L_cpu).max(axis=1)
                res["rows_over_bound"] = int((rows > bound).sum())
                res["largest_error_over_bound"] = float((rows / bound).max())
                print(f"  float32: {res['rows_over_bound']} of {n_cpu:,} rows over their bound; largest "
                      f"error / bound {res['largest_error_over_bound']:.3g}")
            res["projected_scan_s"] = target_pairs / res["pairs_per_s"]
            res["speedup_vs_cpu"] = res["pairs_per_s"] / cpu["pairs_per_s"]
            print(f"  {dtype}: {res['pairs_per_s']:.3g} pairs/s end to end ({res['device_only_pairs_per_s']:.3g} "
                  f"device only), {res['speedup_vs_cpu']:.1f}x the CPU; 32.5M x 4,224 projected "
                  f"{res['projected_scan_s']:.2f} s (goal < {TARGET_S:g} s); max |dH - CPU| = {dH_err:.2g}")
            if args.full and not smoke:
                full = run_full(be, y, x, args.chunk)
                res["full_scan"] = full
                print(f"  {dtype}: actual 32.5M x 4,224 scan: {full['seconds']:.2f} s")
            result["gpu"][dtype] = res
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(result, fh, indent=2, default=str)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
