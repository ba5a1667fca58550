"""Overlap matrix (issue 21): ``hpcquests overlap-matrix`` of 8 datasets of 50,000 environments
on 1 and 2 ranks, and quests computing one entry of it, each in its own process, in one run.

    python benchmarks/overlap_matrix_bench.py                # full size (about 15 min on 2 cores)
    python benchmarks/overlap_matrix_bench.py --scale 0.1    # a smoke run, 5,000 environments each

The datasets (written once into ``--workdir`` as stores by ``hpcquests descriptors``): dataset i
is 200 bcc Ta cells of 250 atoms, rattled by σ = 0.02 + 0.015 i Å (k = 32, rc = 5 Å, h = 0.015,
ε = 1e-5). The 56 off-diagonal entries are 56 · 50,000² = 1.4e11 kernel pairs (the diagonal is 1
without computing it, docs/datasets.md). quests has no overlap matrix: it is timed on one entry
(``quests.entropy.delta_entropy`` of dataset 1 against dataset 0, from the same descriptors),
and its rate set beside ours. Times are whole processes (interpreter and imports included: a
second at most); one thread per rank.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import textwrap
import time

from _proc import run  # benchmarks/ is on sys.path when a benchmark runs

N_SETS = 8

MAKE = textwrap.dedent("""
    import sys, ase.io
    from hpcquests import testing
    path, n_cells, sigma = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    frames = [testing.perturbed_crystal("bcc", "Ta", size=(5, 5, 5), noise=sigma, seed=s) for s in range(n_cells)]
    ase.io.write(path, frames, parallel=False)
""")

QUESTS = textwrap.dedent("""
    import json, sys, time
    import numpy as np
    from hpcquests.io.store import open_store
    from quests.entropy import delta_entropy
    with open_store(sys.argv[1]) as a, open_store(sys.argv[2]) as b:
        y, x = a.read("descriptors"), b.read("descriptors")
    t = time.perf_counter(); dh = delta_entropy(y, x, h=0.015); dt = time.perf_counter() - t
    print(json.dumps({"kernel_s": dt, "pairs": float(len(y)) * len(x), "overlap": float(np.mean(dh < 1e-5))}))
""")




def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of the environments (default 1)")
    ap.add_argument("--workdir", default="/tmp/hpcquests-overlap-matrix-bench")
    ap.add_argument("--no-quests", action="store_true")
    args = ap.parse_args()
    os.makedirs(args.workdir, exist_ok=True)
    n_cells = max(4, round(200 * args.scale))
    stores = []
    for i in range(N_SETS):
        stores.append(os.path.join(args.workdir, f"set{i}-{n_cells}.h5"))
        if not os.path.exists(stores[-1]):
            xyz = stores[-1][:-3] + ".extxyz"
            run([sys.executable, "-c", MAKE, xyz, str(n_cells), str(0.02 + 0.015 * i)])
            run([sys.executable, "-m", "hpcquests", "descriptors", xyz, "-o", stores[-1], "-q"])
    n = 250 * n_cells
    pairs = N_SETS * (N_SETS - 1) * float(n) ** 2
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, python "
          f"{platform.python_version()}; {N_SETS} datasets of {n:,} environments, {pairs:.3g} kernel pairs")
    mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    results = {"machine": platform.platform(), "cpus": os.cpu_count(), "environments": n, "pairs": pairs}
    print(f"{'tool':10s} {'ranks':>5s} {'wall s':>9s} {'pairs/s':>10s} {'per core':>10s} {'efficiency':>10s}")
    for ranks in (1, 2):
        launch = [mpiexec, "-n", str(ranks)] if ranks > 1 else []
        t = time.perf_counter()
        out = run(launch + [sys.executable, "-m", "hpcquests", "overlap-matrix", *stores, "--json", "-q",
                            "--threads", "1"])
        wall = time.perf_counter() - t
        m = json.loads(out)["overlap"]
        results[f"hpcquests_{ranks}"] = {"wall_s": wall, "pairs_per_s": pairs / wall, "overlap": m}
        eff = f"{results['hpcquests_1']['wall_s'] / (2 * wall):.2f}" if ranks == 2 else ""
        print(f"{'hpcquests':10s} {ranks:5d} {wall:9.1f} {pairs / wall:10.3g} {pairs / wall / ranks:10.3g} "
              f"{eff:>10s}", flush=True)
    if results["hpcquests_1"]["overlap"] != results["hpcquests_2"]["overlap"]:
        raise SystemExit("the matrices differ between 1 and 2 ranks")
    if not args.no_quests:
        q = json.loads(run([sys.executable, "-c", QUESTS, stores[1], stores[0]]).strip().splitlines()[-1])
        ok = q["overlap"] == results["hpcquests_1"]["overlap"][1][0]
        print(f"{'quests':10s} {1:5d} {q['kernel_s']:9.1f} {q['pairs'] / q['kernel_s']:10.3g} "
              f"{q['pairs'] / q['kernel_s']:10.3g} {'':>10s}  one entry ({q['pairs']:.3g} pairs, kernel only); "
              f"overlap {q['overlap']:.6f} {'= ours' if ok else '!= ours'}", flush=True)
        results["quests_one_entry"] = q
    print("overlap matrix (1 rank):")
    for row in results["hpcquests_1"]["overlap"]:
        print("  " + " ".join(f"{v:.4f}" for v in row))
    print(json.dumps(results, default=str))


if __name__ == "__main__":
    main()
