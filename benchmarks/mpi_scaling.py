"""MPI scaling of the distributed engine on 1 and 2 ranks (1 thread each).

    python benchmarks/mpi_scaling.py           # δH 1M × 16k (broadcast and ring), descriptors of 1M atoms in 1024 structures
    python benchmarks/mpi_scaling.py --quick   # 1/10 of the queries and structures

Each measurement is one ``mpiexec -n N`` run; the worker times the collective step only (data
generation excluded) with barriers around it, rank 0 prints JSON. Parallel efficiency is
T1 / (N · TN).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "out")


def reference_16k():
    path = os.path.join(OUT, "ref16k.npy")
    if not os.path.exists(path):
        import hpcquests as hq
        from hpcquests import testing

        frames = [testing.perturbed_crystal("bcc", "Ta", size=(8, 8, 8), noise=n, seed=60 + i)
                  for i, n in enumerate(np.linspace(0.03, 0.12, 16))]
        x = hq.get_descriptors(frames)
        os.makedirs(OUT, exist_ok=True)
        np.save(path, x[np.random.default_rng(5).choice(len(x), 16384, replace=False)])
    return np.load(path)


def queries_1m():
    path = os.path.join(OUT, "snapshot_1M_desc.npy")
    if not os.path.exists(path):
        import hpcquests as hq
        from hpcquests import testing

        os.makedirs(OUT, exist_ok=True)
        np.save(path, hq.get_descriptors(testing.large_snapshot(1_000_000, noise=0.06, seed=7)))
    return np.load(path, mmap_mode="r")


def worker(task: str, scale: float):
    from hpcquests.parallel import get_comm, partition
    from hpcquests.distributed.drivers import distributed_descriptors, distributed_logsum

    comm = get_comm()
    rank, size = comm.rank, comm.size
    res = {"task": task, "ranks": size}
    if task.startswith("dh"):
        x = reference_16k()
        y = queries_1m()
        n_q = int(len(y) * scale)
        a, b = partition(n_q, size, rank)
        ya = np.ascontiguousarray(y[a:b])
        xa, xb = partition(len(x), size, rank)
        x_local = x[xa:xb]
        distributed_logsum(comm, ya[:64], x_local, 0.015, threads=1)  # warm-up (cache load)
        comm.wait_for_all()
        t = time.perf_counter()
        stats = {}
        distributed_logsum(comm, ya, x_local, 0.015, threads=1, force_ring=task == "dh-ring", stats=stats)
        comm.wait_for_all()
        res.update(seconds=time.perf_counter() - t, pairs=n_q * len(x), path=stats["path"])
        res["rate"] = res["pairs"] / res["seconds"]
    else:
        from hpcquests import testing

        n_struct = max(8, int(1024 * scale))
        frames = [testing.perturbed_crystal("bcc", "Ta", size=(8, 8, 8), noise=0.05 + 0.0001 * (s % 100), seed=s)
                  for s in range(n_struct)]
        distributed_descriptors(comm, frames[:2], 32, 5.0, threads=1)
        comm.wait_for_all()
        t = time.perf_counter()
        distributed_descriptors(comm, frames, 32, 5.0, threads=1)
        comm.wait_for_all()
        atoms = sum(len(a) for a in frames)
        res.update(seconds=time.perf_counter() - t, atoms=atoms, structures=n_struct)
        res["rate"] = atoms / res["seconds"]
    if rank == 0:
        print(json.dumps(res), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--worker", nargs=2, metavar=("TASK", "SCALE"), help=argparse.SUPPRESS)
    ap.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()
    if args.worker:
        worker(args.worker[0], float(args.worker[1]))
        return
    scale = 0.1 if args.quick else 1.0
    reference_16k()
    queries_1m()
    mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    mpiexec = mpiexec if os.path.exists(mpiexec) else shutil.which("mpiexec")
    env = dict(os.environ, OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    results = []
    print(f"{'task':12s} {'ranks':>5s} {'seconds':>9s} {'rate':>12s} {'efficiency':>10s}")
    base = {}
    for task in ("dh-bcast", "dh-ring", "descriptors"):
        for n in args.ranks:
            out = subprocess.run([mpiexec, "-n", str(n), sys.executable, __file__, "--worker", task, str(scale)],
                                 env=env, capture_output=True, text=True)
            if out.returncode != 0:
                print(f"{task:12s} {n:5d} failed: {out.stderr.strip().splitlines()[-1:]}")
                continue
            res = json.loads(out.stdout.strip().splitlines()[-1])
            base.setdefault(task, res["seconds"])
            res["efficiency"] = base[task] / (n * res["seconds"])
            results.append(res)
            unit = "pairs/s" if task.startswith("dh") else "atoms/s"
            print(f"{task:12s} {n:5d} {res['seconds']:9.2f} {res['rate']:12.4g} {res['efficiency']:9.1%}  {unit}",
                  flush=True)
    ring = {r["ranks"]: r["seconds"] for r in results if r["task"] == "dh-ring"}
    bcast = {r["ranks"]: r["seconds"] for r in results if r["task"] == "dh-bcast"}
    for n in sorted(set(ring) & set(bcast)):
        print(f"ring / broadcast time at {n} rank(s): {ring[n] / bcast[n]:.3f}")
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "mpi_scaling.json"), "w") as fh:
        json.dump(results, fh, indent=2)


if __name__ == "__main__":
    main()
