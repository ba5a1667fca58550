"""Store write and read time: this tree against another checkout (e.g. the commit before the
crash-safe store), interleaved, each measurement in its own process.

    python benchmarks/store_io.py --other /tmp/base            # 10^6 x 63 in 4 shards, 5 rounds
    python benchmarks/store_io.py --other /tmp/base --rows 100000 --rounds 3

``--other`` is the root of another hpcquests checkout (``git worktree add /tmp/base 1b2157d``).
Write: ``write_store`` of the whole array (this tree includes fsync of every file and the
directory; the page cache is not dropped, so the figure is what a user waits for). Read:
``open_store`` (all source checks) + ``read("descriptors")`` of every row, verified; "read again"
is the same a second time in the same process (a fresh result array, no one-time costs). Imports and
numba's one-time start-up (about 0.2 s, paid by every hpcquests command whatever it reads) are
before the clock in both trees. Thread settings are the defaults (this tree verifies chunks in
up to ``numba.get_num_threads()`` threads, at most 8). Prints the median of the rounds and the
ratio this/other.
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

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

WORKER = r"""
import json, os, sys, time
import numba
import numpy as np
from hpcquests.io.store import open_store, write_store

@numba.njit
def _start_numba(x):
    return x + 1

_start_numba(1)  # numba's one-time start-up, which every hpcquests command pays anyway
mode, path, rows, cols, shards = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
if mode == "write":
    x = np.random.default_rng(3).random((rows, cols))
    offsets = np.arange(0, rows + 1, 100, dtype=np.int64)
    if offsets[-1] != rows:
        offsets = np.append(offsets, rows)
    t = time.perf_counter()
    write_store(path, x, offsets, k=32, cutoff=5.0, rows_per_shard=-(-rows // shards))
    dt = time.perf_counter() - t
else:
    dts = []
    for _ in range(2):  # the first read pays one-time costs (h5py import, kernel cache loads); the second not
        t = time.perf_counter()
        with open_store(path) as s:
            y = s.read("descriptors")
        dts.append(time.perf_counter() - t)
        assert y.shape == (rows, cols) and np.isfinite(y).all()
        del y
    dt = dts[0]
print(json.dumps({"seconds": dt, "again": dts[-1] if mode == "read" else dt}))
"""


def one(tree, mode, path, args):
    env = dict(os.environ, PYTHONPATH=tree)
    out = subprocess.run([sys.executable, "-c", WORKER, mode, path, str(args.rows), str(args.cols),
                          str(args.shards)], env=env, capture_output=True, text=True, cwd=tree)
    if out.returncode != 0:
        raise SystemExit(f"{tree} {mode} failed:\n{out.stderr}")
    got = json.loads(out.stdout.strip().splitlines()[-1])
    return got["seconds"], got["again"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--other", required=True, help="root of the other hpcquests checkout")
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--cols", type=int, default=63)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--dir", default=None, help="where the stores go (default: a temporary folder)")
    args = ap.parse_args()
    trees = {"this": ROOT, "other": os.path.abspath(args.other)}
    for tree in trees.values():
        # byte-compiled as an installed package is (pip compiles on install); without it a
        # PYTHONDONTWRITEBYTECODE environment recompiles every module inside the timed open
        subprocess.run([sys.executable, "-m", "compileall", "-q", os.path.join(tree, "hpcquests")], check=True)
    work = tempfile.mkdtemp(prefix="store-io-", dir=args.dir)
    times = {(t, m): [] for t in trees for m in ("write", "read", "read again")}
    try:
        for r in range(args.rounds):
            order = list(trees) if r % 2 == 0 else list(trees)[::-1]  # interleaved, alternating first
            for name in order:
                path = os.path.join(work, f"{name}.h5")
                times[(name, "write")].append(one(trees[name], "write", path, args)[0])
                first, again = one(trees[name], "read", path, args)
                times[(name, "read")].append(first)
                times[(name, "read again")].append(again)
            print(f"round {r + 1}: " + ", ".join(f"{t} {m} {v[-1]:.3f} s" for (t, m), v in times.items()), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    mb = args.rows * args.cols * 8 / 1e6
    print(f"\n{args.rows} x {args.cols} float64 ({mb:.0f} MB) in {args.shards} shards, median of {args.rounds}")
    result = {}
    for m in ("write", "read", "read again"):
        a, b = statistics.median(times[("this", m)]), statistics.median(times[("other", m)])
        result[m] = {"this_s": a, "other_s": b, "ratio": a / b}
        print(f"{m:10s}  this {a:.3f} s ({mb / a:.0f} MB/s)   other {b:.3f} s ({mb / b:.0f} MB/s)   ratio {a / b:.2f}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
