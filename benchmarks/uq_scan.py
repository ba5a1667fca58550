"""UQ scan benchmark: a generated bcc Ta snapshot (thermal noise + a defective region) scanned
against a 4,224-environment reference, with per-step timings and peak RSS per rank; plus, per
core, hpcquests end to end on a 1M-atom slice against quests' descriptors + δH of the same atoms
already in memory.

    python benchmarks/uq_scan.py --atoms 32000000 --ranks 2 --workdir /tmp/uqb --memtrace
                                     # the issue's scan: ~5 GB of files, per-phase peak RSS per rank
    python benchmarks/uq_scan.py --atoms 4000000 --ranks 2      # a smaller run
    python benchmarks/uq_scan.py --slice-only                   # only the 1M-atom per-core comparison
    python benchmarks/uq_scan.py --atoms 4000000 --ranks 2 --precisions float64 float32
                                     # the same scans in both kernel precisions, side by side
"""

from __future__ import annotations

import argparse
import itertools
import json
import os

import shutil
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "out")


def snapshot_dump(path, n_atoms, seed=7):
    """bcc Ta, 0.06 Å thermal noise, a sphere (radius 0.2 L) of 0.35 Å noise as the defective region."""
    if os.path.exists(path):
        return
    from hpcquests import testing

    atoms = testing.large_snapshot(n_atoms, noise=0.06, seed=seed)
    pos = atoms.positions
    L = float(atoms.cell.array[0, 0])
    r = np.linalg.norm(pos - L / 2, axis=1)
    rng = np.random.default_rng(seed + 1)
    hot = r < 0.2 * L
    pos[hot] += rng.normal(0.0, 0.35, (int(hot.sum()), 3))
    n = len(pos)
    ids = rng.permutation(n) + 1  # unsorted ids, as LAMMPS writes without dump_modify sort
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        fh.write(f"ITEM: TIMESTEP\n0\nITEM: NUMBER OF ATOMS\n{n}\nITEM: BOX BOUNDS pp pp pp\n")
        fh.write(f"0.0 {L!r}\n0.0 {L!r}\n0.0 {L!r}\nITEM: ATOMS id type x y z\n")
        block = 1 << 20
        for a in range(0, n, block):
            b = min(a + block, n)
            rows = np.empty((b - a, 4))
            rows[:, 0] = ids[a:b]
            rows[:, 1:] = pos[a:b]
            fh.write("".join("%d 1 %.6f %.6f %.6f\n" % tuple(r) for r in rows.tolist()))
    os.replace(tmp, path)


def reference_store(path):
    if os.path.exists(path):
        return
    import hpcquests as hq
    from hpcquests import testing
    from hpcquests.io.store import write_store

    frames = [testing.perturbed_crystal("bcc", "Ta", size=(8, 8, 8), noise=n, seed=90 + i)
              for i, n in enumerate((0.03, 0.05, 0.07, 0.09, 0.11))]
    x = hq.get_descriptors(frames)
    x = x[np.random.default_rng(1).choice(len(x), 4224, replace=False)]
    write_store(path, x, [0, len(x)], k=32, cutoff=5.0, species=["Ta"])


def run_scan(dump, ref, ranks, threads, out_dir, memtrace=False, precision="float64"):
    shutil.rmtree(out_dir, ignore_errors=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), NUMBA_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS="1")
    if memtrace:
        env["HPCQUESTS_UQ_MEMTRACE"] = "1"  # per-phase peak RSS of every rank on stderr
    mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    cmd = [sys.executable, "-m", "hpcquests.uq", dump, ref, "--out", out_dir, "--types", "1=Ta", "-q",
           "--threads", str(threads), "--chunk-atoms", "262144", "--precision", precision]
    if ranks > 1:
        cmd = [mpiexec, "-n", str(ranks), *cmd]
    t = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-2000:])
    with open(os.path.join(out_dir, "summary.json")) as fh:
        s = json.load(fh)
    s["wall_total_s"] = wall
    s["memtrace"] = [ln.strip() for ln in proc.stderr.splitlines() if ln.startswith("[mem]")]
    return s


def blas_rates() -> dict:
    """DGEMM and SGEMM GF/s of this machine, 1 thread, at the kernels' shape (own process)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, os.path.join(HERE, "worker.py"), "blas", "blas", "1"], env=env,
                          capture_output=True, text=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def quests_slice(dump, ref_path):
    """quests descriptors + δH of the slice's atoms already in memory, 1 thread (own process)."""
    code = f"""
import time, json, numba, numpy as np, h5py
numba.set_num_threads(1)
from threadpoolctl import threadpool_limits
from quests.descriptor import get_descriptors
from quests.entropy import delta_entropy
from hpcquests.io.lammps import read_dump_frames
atoms = read_dump_frames({dump!r}, type_map={{1: 'Ta'}})[0]
with h5py.File({ref_path!r}) as f: x = f['descriptors'][...]
get_descriptors([atoms[:100]]); delta_entropy(x[:10], x)
with threadpool_limits(1):
    t = time.perf_counter(); y = get_descriptors([atoms]); td = time.perf_counter() - t
    n = len(y) // 10
    t = time.perf_counter(); delta_entropy(y[:n], x); th = (time.perf_counter() - t) * len(y) / n
print(json.dumps({{"atoms": len(atoms), "descriptors_s": td, "dH_s_extrapolated": th}}))
"""
    env = dict(os.environ, OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-2000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--atoms", type=int, default=32_000_000)
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--slice-only", action="store_true")
    ap.add_argument("--memtrace", action="store_true",
                    help="print every rank's peak RSS per phase (HPCQUESTS_UQ_MEMTRACE)")
    ap.add_argument("--precisions", nargs="+", default=["float64"], choices=("float64", "float32"),
                    help="kernel precision(s) of the scans (each scan and slice is run in each)")
    ap.add_argument("--repeats", type=int, default=1,
                    help="run the scans this many times, the precisions interleaved; medians reported")
    ap.add_argument("--no-slice", action="store_true", help="skip the 1M-atom per-core comparison with quests")
    ap.add_argument("--workdir", default=OUT,
                    help="where dumps, the reference and scan outputs go (default benchmarks/out; "
                         "the 32M-atom run needs ~6 GB)")
    args = ap.parse_args()
    work = args.workdir
    os.makedirs(work, exist_ok=True)
    ref = os.path.join(work, "uq_ref4224.h5")
    reference_store(ref)
    results = {"blas": blas_rates()}
    print(f"BLAS, 1 thread, (2048 x 64) @ (64 x 2048): DGEMM {results['blas']['dgemm_gflops']:.1f} GF/s, "
          f"SGEMM {results['blas']['sgemm_gflops']:.1f} GF/s")
    if not args.slice_only:
        dump = os.path.join(work, f"ta_{args.atoms}.lammpstrj")
        t = time.perf_counter()
        snapshot_dump(dump, args.atoms)
        print(f"snapshot dump: {os.path.getsize(dump) / 2**30:.2f} GiB ({time.perf_counter() - t:.0f} s to make)")
        walls = {p: [] for p in args.precisions}
        for rep, precision in itertools.product(range(args.repeats), args.precisions):
            s = run_scan(dump, ref, args.ranks, 1, os.path.join(work, "uq_big"), memtrace=args.memtrace,
                         precision=precision)
            n = s["atoms"]
            walls[precision].append(s["wall_total_s"])
            print(f"scan [{precision}] (run {rep + 1}/{args.repeats}): {n:,} atoms on {args.ranks} ranks x 1 thread: "
                  f"{s['wall_total_s']:.1f} s wall ({n / s['wall_total_s'] / args.ranks:,.0f} atoms/s per core)")
            print("  step times (max over ranks): " + ", ".join(f"{k} {v:.1f} s" for k, v in s["timings_s"].items()))
            print("  peak RSS per rank (MiB): " + ", ".join(f"{v:.0f}" for v in s["peak_rss_mib_per_rank"]))
            for line in s["memtrace"]:
                print("   ", line)
            fr = s["frames"][0]
            prec = s.get("precision", {})
            recomputed = (f"; {prec['float32_recomputed_rows']:,} atoms recomputed in float64"
                          if prec.get("precision") == "float32" else "")
            print(f"  dH: mean {fr['mean']:.2f}, max {fr['max']:.1f}, {100 * fr['fraction_above']['0']:.2f}% > 0"
                  f"{recomputed}")
            results.setdefault(f"scan_{precision}", []).append(s)
        if len(args.precisions) > 1:
            a, b = (float(np.median(walls[p])) for p in ("float64", "float32"))
            print(f"scan float32 / float64 wall time (medians of {args.repeats}): {b:.1f} / {a:.1f} s = {b / a:.2f}")
    if args.no_slice:
        with open(os.path.join(work, "uq_scan.json"), "w") as fh:
            json.dump(results, fh, indent=1, default=str)
        return
    slice_dump = os.path.join(work, "ta_1000000.lammpstrj")
    snapshot_dump(slice_dump, 1_000_000)
    qs = quests_slice(slice_dump, ref)
    q_total = qs["descriptors_s"] + qs["dH_s_extrapolated"]
    results["slice"] = {"quests": qs}
    for precision in args.precisions:
        hs = run_scan(slice_dump, ref, 1, 1, os.path.join(work, "uq_slice"), precision=precision)
        print(f"1M-atom slice, 1 core [{precision}]: hpcquests end to end (read, descriptors, dH, write) "
              f"{hs['wall_total_s']:.1f} s [{', '.join(f'{k} {v:.1f}' for k, v in hs['timings_s'].items())}]; quests "
              f"descriptors {qs['descriptors_s']:.1f} s + dH {qs['dH_s_extrapolated']:.1f} s (from 10% of the atoms) = "
              f"{q_total:.1f} s in memory -> {q_total / hs['wall_total_s']:.2f}x")
        results["slice"][precision] = {"hpcquests": hs, "speedup": q_total / hs["wall_total_s"]}
    with open(os.path.join(work, "uq_scan.json"), "w") as fh:
        json.dump(results, fh, indent=1, default=str)



if __name__ == "__main__":
    main()
