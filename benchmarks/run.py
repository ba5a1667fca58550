"""Run the benchmark suite: hpcquests and quests side by side, each measurement in its own process.

    python benchmarks/run.py            # full sizes (about 25 min on 2 cores)
    python benchmarks/run.py --quick    # 1/20 sizes, for a smoke run

Prints the machine's DGEMM/SGEMM GF/s at the kernels' shape, then a table (throughput per tool,
the speed-up, peak RSS) and writes benchmarks/out/results.json. quests' δH on 1M × 4096 is
measured on the first 100k queries (its rate is flat in M; the full run would take ~5 min per
core) and reported as a rate; hpcquests runs the full 1M. The δH and entropy tasks also run
hpcquests with ``--precision float32`` (rows "[float32]"): its speed-up over quests, and over
hpcquests' own float64 row in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


#: tasks whose hpcquests kernel also runs in float32
PRECISION_TASKS = ("dH-1Mx4096", "dH-100kx4096", "entropy-50k")


def measure(task, tool, threads, scale, precision="float64"):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads),
               MKL_NUM_THREADS=str(threads))
    cmd = [sys.executable, os.path.join(HERE, "worker.py"), task, tool, str(threads), "--scale", str(scale),
           "--precision", precision]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        return {"task": task, "tool": tool, "threads": threads, "error": out.stderr.strip().splitlines()[-1:]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def cold_start():
    code = ("import time; t=time.perf_counter(); import hpcquests as hq; from hpcquests import testing; "
            "a=testing.perturbed_crystal('bcc','Ta',size=(3,3,3),seed=1); x=hq.get_descriptors(a); "
            "hq.delta_entropy(x,x); print(time.perf_counter()-t)")
    subprocess.run([sys.executable, "-c", code], capture_output=True)  # warms the numba cache
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    return float(out.stdout.strip()) if out.returncode == 0 else float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="run at 1/20 of the sizes")
    ap.add_argument("--tasks", nargs="+",
                    default=["descriptors-1M", "descriptors-600", "dH-1Mx4096", "dH-100kx4096", "entropy-50k"])
    args = ap.parse_args()
    scale = 0.05 if args.quick else 1.0
    cores = os.cpu_count() or 1
    print(f"machine: {platform.processor() or platform.machine()}, {cores} cores, python {platform.python_version()}")
    t_cold = cold_start()
    print(f"cold import + first descriptors + dH call (warm numba cache): {t_cold:.2f} s")
    blas = measure("blas", "blas", 1, 1.0)
    print(f"BLAS, 1 thread, (2048 x 64) @ (64 x 2048): DGEMM {blas.get('dgemm_gflops', float('nan')):.1f} GF/s, "
          f"SGEMM {blas.get('sgemm_gflops', float('nan')):.1f} GF/s")
    results = {"machine": {"cpu_count": cores, "platform": platform.platform(), **blas}, "scale": scale,
               "cold_start_s": t_cold, "runs": []}
    header = f"{'task':22s} {'threads':>7s} {'hpcquests':>14s} {'quests':>14s} {'speed-up':>8s} {'RSS hq/quests MiB':>18s}"
    print(header)
    print("-" * len(header))
    for task in args.tasks:
        for threads in sorted({1, cores}):
            hq = measure(task, "hpcquests", threads, scale)
            qs = measure(task, "quests", threads, scale)
            results["runs"] += [hq, qs]
            if "error" in hq or "error" in qs:
                print(f"{task:22s} {threads:7d} error: {hq.get('error') or qs.get('error')}")
                continue
            unit = hq["unit"]
            print(f"{task:22s} {threads:7d} {hq['rate']:14.4g} {qs['rate']:14.4g} {hq['rate'] / qs['rate']:7.2f}x "
                  f"{hq['peak_rss_mib']:8.0f}/{qs['peak_rss_mib']:<8.0f}  ({unit}; hq {hq['seconds']:.2f} s, quests {qs['seconds']:.2f} s)",
                  flush=True)
            if task in PRECISION_TASKS:
                f32 = measure(task, "hpcquests", threads, scale, "float32")
                results["runs"].append(f32)
                if "error" in f32:
                    print(f"{task + ' [float32]':22s} {threads:7d} error: {f32['error']}")
                    continue
                extra = (f"; {f32['float32_recomputed_of_20000']}/20000 rows recomputed, bound <= "
                         f"{f32['float32_max_bound']:.1g}" if "float32_max_bound" in f32 else "")
                print(f"{task + ' [float32]':22s} {threads:7d} {f32['rate']:14.4g} {qs['rate']:14.4g} "
                      f"{f32['rate'] / qs['rate']:7.2f}x {f32['peak_rss_mib']:8.0f}/{qs['peak_rss_mib']:<8.0f}  "
                      f"({f32['rate'] / hq['rate']:.2f}x hpcquests float64; {f32['seconds']:.2f} s{extra})", flush=True)
    os.makedirs(os.path.join(HERE, "out"), exist_ok=True)
    with open(os.path.join(HERE, "out", "results.json"), "w") as fh:
        json.dump(results, fh, indent=2)


if __name__ == "__main__":
    main()
