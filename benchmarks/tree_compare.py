"""This tree against another checkout: the same outputs, and the time of the MPI-heavy commands.

    git worktree add /tmp/pin 8ee10db         # the baseline
    python benchmarks/tree_compare.py --other /tmp/pin              # parity + 5 interleaved rounds
    python benchmarks/tree_compare.py --other /tmp/pin --rounds 0   # parity only

Every command runs in each tree in its own process (``PYTHONPATH`` = that tree), on 1 and 2
ranks (``mpiexec``), on data made by ``hpcquests.testing`` (seeded):

- ``descriptors`` (a store), ``entropy`` (H and D; one bandwidth: the baseline fails on 2 ranks with two), ``dh`` (δH, ``-o .npy``;
  the reference gathered and on the ring), ``overlap``, ``compress`` (MSC and two baselines,
  selections and report) and the UQ scan of a LAMMPS dump (``dH.h5``).
- Parity: descriptors, selections and every integer output bitwise equal; δH, H, D, overlap
  within 1e-12 relative. The script exits 1 on any difference.
- Time: the median of ``--rounds`` interleaved rounds (the order alternates) per command and
  ranks, and the ratio this/other (the budget: at most 1.05).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BIN = os.path.dirname(sys.executable)


def make_data(d):
    from hpcquests import testing

    import ase.io

    # sized so that compute, not start-up (about 0.9 s per process), dominates every command
    train = [testing.perturbed_crystal("bcc", "Ta", size=(8, 8, 8), noise=0.02 + 0.005 * i, seed=i) for i in range(24)]
    train += [testing.amorphous(n_atoms=256, density=0.045, symbol="Ta", seed=100 + i) for i in range(8)]
    test = [testing.perturbed_crystal("bcc", "Ta", size=(8, 8, 8), noise=0.15, seed=200 + i) for i in range(12)]
    ase.io.write(os.path.join(d, "train.extxyz"), train, format="extxyz", parallel=False)
    ase.io.write(os.path.join(d, "test.extxyz"), test, format="extxyz", parallel=False)
    mixed = testing.mixed_dataset(300, seed=3)
    ase.io.write(os.path.join(d, "mixed.extxyz"), mixed, format="extxyz", parallel=False)
    frames = [testing.perturbed_crystal("bcc", "Ta", size=(16, 16, 16), noise=0.05 + 0.05 * i, seed=300 + i)
              for i in range(3)]
    testing.write_lammps_dump(os.path.join(d, "traj.lammpstrj"), frames, type_map={"Ta": 1})


def commands(d, out):
    """name -> (argv after the launcher, files to compare)."""
    j = os.path.join
    return {
        "descriptors": (["-m", "hpcquests", "descriptors", j(d, "train.extxyz"), "-o", j(out, "train.h5"), "-q"],
                        [("store", j(out, "train.h5"))]),
        "entropy": (["-m", "hpcquests", "entropy", j(d, "train.extxyz"), "-H", "0.015", "--json", "-q"],
                    [("stdout", None)]),
        "dh": (["-m", "hpcquests", "dh", j(d, "test.extxyz"), j(d, "train.extxyz"), "-o", j(out, "dh.npy"), "--json",
                "-q"], [("npy", j(out, "dh.npy")), ("stdout", None)]),
        "dh-ring": (["-m", "hpcquests", "dh", j(d, "test.extxyz"), j(d, "train.extxyz"), "-o", j(out, "dhr.npy"),
                     "--ref-memory", "0", "--json", "-q"], [("npy", j(out, "dhr.npy"))]),
        "overlap": (["-m", "hpcquests", "overlap", j(d, "test.extxyz"), j(d, "train.extxyz"), "--json", "-q"],
                    [("stdout", None)]),
        "compress": (["-m", "hpcquests", "compress", j(d, "mixed.extxyz"), "-o", j(out, "cmp"), "-m", "msc", "fps",
                      "random", "-s", "0.1", "0.3", "--no-structures", "--json", "-q"],
                     [("selections", j(out, "cmp"))]),
        "uq": (["-m", "hpcquests.uq", j(d, "traj.lammpstrj"), j(d, "train.extxyz"), "--types", "1=Ta", "--out",
                j(out, "uq"), "-q"], [("uq", j(out, "uq", "dH.h5"))]),
    }


def run(tree, argv, ranks, cwd):
    env = dict(os.environ, PYTHONPATH=tree, OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1" if ranks > 1 else
               os.environ.get("NUMBA_NUM_THREADS", str(os.cpu_count())))
    launcher = [os.path.join(BIN, "mpiexec"), "-n", str(ranks)] if ranks > 1 else []
    t = time.perf_counter()
    out = subprocess.run(launcher + [sys.executable] + argv, env=env, cwd=cwd, capture_output=True, text=True,
                         timeout=900)
    dt = time.perf_counter() - t
    if out.returncode != 0:
        raise SystemExit(f"{tree}: {' '.join(argv)} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return dt, out.stdout


def _numbers(obj, path=""):
    """Flatten a JSON value into {path: number or string}, leaving out times and paths."""
    skip = ("time", "wall", "_s", "seconds", "path", "output", "command", "created", "peak", "rss", "compile",
            "version", "host", "throughput", "rate")
    flat = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            if any(s in str(k).lower() for s in skip):
                continue
            flat.update(_numbers(v, f"{path}.{k}"))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            flat.update(_numbers(v, f"{path}[{i}]"))
    else:
        flat[path] = obj
    return flat


def _close(a, b, what, problems):
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.dtype.kind != b.dtype.kind:
        problems.append(f"{what}: shape/dtype {a.shape} {a.dtype} vs {b.shape} {b.dtype}")
    elif a.dtype.kind in "iub" or a.dtype.kind in "SUO":
        if not np.array_equal(a, b):
            problems.append(f"{what}: integers differ ({int((a != b).sum())} of {a.size})")
    elif not np.allclose(a, b, rtol=1e-12, atol=0.0, equal_nan=True):
        rel = np.nanmax(np.abs(a - b) / np.maximum(np.abs(b), 1e-300))
        problems.append(f"{what}: max relative difference {rel:.3g} > 1e-12")


def compare(kind, a, b, what, problems, stdout_a=None, stdout_b=None):
    import h5py

    if kind == "stdout":
        fa, fb = _numbers(json.loads(stdout_a)), _numbers(json.loads(stdout_b))
        if fa.keys() != fb.keys():
            problems.append(f"{what}: JSON keys differ: {sorted(fa.keys() ^ fb.keys())[:5]}")
        for k in fa.keys() & fb.keys():
            va, vb = fa[k], fb[k]
            if isinstance(va, float) or isinstance(vb, float):
                _close(float(va), float(vb), f"{what} {k}", problems)
            elif va != vb:
                problems.append(f"{what} {k}: {va!r} vs {vb!r}")
    elif kind == "npy":
        _close(np.load(a), np.load(b), what, problems)
    elif kind == "store":
        from hpcquests.io.store import open_store

        with open_store(a) as sa, open_store(b) as sb:
            if not np.array_equal(sa.read("descriptors").view(np.uint64), sb.read("descriptors").view(np.uint64)):
                problems.append(f"{what}: descriptors not bitwise equal")
            for name in ("offsets", "structure_index", "atom_index"):
                _close(sa.read(name), sb.read(name), f"{what} {name}", problems)
    elif kind == "selections":
        seen = 0
        for base, _, files in os.walk(a):
            for name in sorted(files):
                if name.endswith((".txt", ".tsv")):
                    pa = os.path.join(base, name)
                    pb = os.path.join(b, os.path.relpath(pa, a))
                    seen += 1
                    if not os.path.isfile(pb) or open(pa).read() != open(pb).read():
                        problems.append(f"{what}: {os.path.relpath(pa, a)} differs")
        if seen < 3:
            problems.append(f"{what}: only {seen} selection files found")
        ra = json.load(open(os.path.join(a, "report.json")))
        rb = json.load(open(os.path.join(b, "report.json")))
        compare("stdout", None, None, f"{what} report.json", problems, json.dumps(ra), json.dumps(rb))
    elif kind == "uq":
        with h5py.File(a, "r") as ha, h5py.File(b, "r") as hb:
            for name in ha:
                if isinstance(ha[name], h5py.Dataset):
                    _close(ha[name][()], hb[name][()], f"{what} {name}", problems)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--other", required=True, help="root of the other hpcquests checkout")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--only", nargs="*", default=None, help="command names (default all)")
    args = ap.parse_args()
    trees = {"this": ROOT, "other": os.path.abspath(args.other)}
    work = tempfile.mkdtemp(prefix="tree-compare-")
    problems = []
    try:
        data = os.path.join(work, "data")
        os.makedirs(data)
        make_data(data)
        names = args.only or list(commands(data, work))
        # parity (the first round of each tree also warms numba's caches)
        for n in args.ranks:
            outs = {}
            for t, tree in trees.items():
                out = os.path.join(work, f"{t}-{n}")
                os.makedirs(out, exist_ok=True)
                cmds = commands(data, out)
                outs[t] = {name: (cmds[name][1], run(tree, cmds[name][0], n, out)[1]) for name in names}
            for name in names:
                (files_a, sa), (files_b, sb) = outs["this"][name], outs["other"][name]
                for (kind, pa), (_, pb) in zip(files_a, files_b):
                    compare(kind, pa, pb, f"{name} ({n} rank{'s' if n > 1 else ''})", problems, sa, sb)
            print(f"parity on {n} rank(s): {len(names)} commands compared", flush=True)
        times = {(t, name, n): [] for t in trees for name in names for n in args.ranks}
        for r in range(args.rounds):
            order = list(trees) if r % 2 == 0 else list(trees)[::-1]
            for n in args.ranks:
                for name in names:
                    for t in order:
                        out = os.path.join(work, f"time-{t}")
                        shutil.rmtree(out, ignore_errors=True)
                        os.makedirs(out)
                        times[(t, name, n)].append(run(trees[t], commands(data, out)[name][0], n, out)[0])
            print(f"round {r + 1} of {args.rounds} done", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.rounds:
        print(f"\n{'command':12s} ranks  this (s)  other (s)  ratio   (median of {args.rounds} interleaved rounds)")
        worst = 0.0
        for n in args.ranks:
            for name in names:
                a = statistics.median(times[("this", name, n)])
                b = statistics.median(times[("other", name, n)])
                worst = max(worst, a / b)
                print(f"{name:12s} {n:5d}  {a:8.3f}  {b:9.3f}  {a / b:5.2f}")
        print(f"worst ratio {worst:.2f}")
    if problems:
        print("\nPARITY FAILED:\n  " + "\n  ".join(problems))
        sys.exit(1)
    print("\nparity: descriptors, selections and integer outputs bitwise equal; floats within 1e-12 relative")


if __name__ == "__main__":
    main()
