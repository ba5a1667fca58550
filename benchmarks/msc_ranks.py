"""Distributed greedy MSC on 1 and 2 ranks: 600, 100k and 1M structures (issue 25).

    python benchmarks/msc_ranks.py --workdir /tmp/msc          # everything (~10 min with the 1M set made)
    python benchmarks/msc_ranks.py --sets thermal mixed 100k   # without the 1M set

Every run is ``distributed_msc`` under ``mpiexec -n R`` (R = 1, 2), one thread per rank, each
rank reading its own block of structures from the dataset's ``.npy`` file and handing it over
(``overwrite_x=True``: the greedy centres the rows in place, no copy). Reported per run: the
median time of ``--repeat`` runs (1, 2, 1, 2, ... interleaved, so the VM's slow phases hit both),
the pick loop and the setup (H(S), centring, principal axes, bound fields) apart, peak RSS per
rank (descriptors included), kernel pairs per pick (exact and cheap float32 bounds, all ranks),
and whether the picks equal the 1-rank run's. quests' msc runs on the 600-structure sets (once
per size, each tool in its own process).

One more 1-rank run of each set but the 1M one records every step's search (seconds, kernel
pairs per structure worked on) for the model of 2, 64 and 1,000 ranks printed at the end
(``model``; docs/compress.md). Times are medians (of an even count: the slower middle one).

Datasets: *thermal* and *mixed* (600 structures, ``compress_bench.py``'s) and 16-atom bcc Ta
cells at 300-2000 K (``hpcquests.testing.perturbed_crystal``), 100k (seed 2, the set of
``compress_bench.py``) and 1M (seed 4: 16M environments, an 8 GB float64 file; ~8 min to make).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import textwrap

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from _proc import run  # noqa: E402

MAKE_CELLS = textwrap.dedent("""
    import os, sys, numpy as np
    from numpy.lib.format import open_memmap
    import hpcquests as hq
    from hpcquests import testing
    n, seed, base = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    rng = np.random.default_rng(seed)
    x = open_memmap(base + ".x.tmp.npy", mode="w+", dtype=np.float64, shape=(16 * n, 63))
    for lo in range(0, n, 20000):
        frames = []
        for i in range(lo, min(n, lo + 20000)):
            T = rng.uniform(300, 2000)
            frames.append(testing.perturbed_crystal("bcc", "Ta", size=(2, 2, 2), noise=0.05 * (T / 300) ** 0.5,
                                                    seed=seed * 1_000_003 + i))
        x[16 * lo:16 * (lo + len(frames))] = hq.get_descriptors(frames)
    x.flush()
    del x
    np.save(base + ".counts.npy", np.full(n, 16, dtype=np.int64))
    os.replace(base + ".x.tmp.npy", base + ".x.npy")
""")

RANKS = textwrap.dedent("""
    import json, resource, sys, time
    import numpy as np
    from hpcquests.parallel import get_comm
    from hpcquests.distributed.drivers import local_structure_range
    import hpcquests.compress.msc as M
    base, record = sys.argv[1], sys.argv[3]
    size = [float(s) for s in sys.argv[2].split(",")]
    counts = np.load(base + ".counts.npy")
    comm = get_comm()
    lo, hi = local_structure_range(comm, counts)
    off = np.concatenate([[0], np.cumsum(counts)])
    loff = off[lo:hi + 1] - off[lo]
    with open(base + ".x.npy", "rb") as fh:          # this rank's rows only, read (not mapped)
        major, _ = np.lib.format.read_magic(fh)
        read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        shape, _, _ = read_header(fh)
        fh.seek(fh.tell() + 8 * shape[1] * int(off[lo]))
        x = np.fromfile(fh, dtype=np.float64, count=shape[1] * int(off[hi] - off[lo])).reshape(-1, shape[1])
    M.distributed_msc(comm, x[:loff[4]].copy(), loff[:5], 4 * comm.rank, 2)   # numba cache warm-up
    steps, loop = [], {}
    work = []
    if record != "-":        # every step's search (1 rank): start, end, pairs per structure worked on
        picker = M._LazyPicker.propose
        def propose(self, step, floor=-np.inf):
            t_in = time.perf_counter()
            ist = self.state.st[1].copy()
            t = time.perf_counter()
            r = picker(self, step, floor)
            t1 = time.perf_counter()
            so, now = self.state.sel_off, self.state.st[1]
            # pairs per environment from its coverage before and after; exact ones cost ~6 bound ones
            per_env = (so[now[1]] - so[ist[1]]) + 6 * (so[now[0]] - so[ist[0]])
            per_struct = np.add.reduceat(per_env, self.state.off[:-1])
            nz = np.flatnonzero(per_struct)
            work.append((nz, per_struct[nz]))
            steps.append((t, t1, nz.size, t_in, time.perf_counter()))
            return r
        M._LazyPicker.propose = propose
    pick_loop = M._pick_loop
    def timed_loop(*a):
        t = time.perf_counter()
        r = pick_loop(*a)
        loop["s"] = time.perf_counter() - t
        return r
    M._pick_loop = timed_loop
    comm.wait_for_all()
    t = time.perf_counter()
    res = M.distributed_msc(comm, x, loff, lo, size, threads=1, overwrite_x=True)
    dt = time.perf_counter() - t
    comm.wait_for_all()
    rss = comm.gather_objects(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    if record != "-" and comm.rank == 0:
        np.savez(record, steps=np.array(steps), structs=np.concatenate([w[0] for w in work]),
                 pairs=np.concatenate([w[1] for w in work]), n=len(counts))
    if comm.rank == 0:
        print(json.dumps({"time_s": dt, "loop_s": loop["s"], "order": res.order, "pairs": res.kernel_pairs,
                          "bound_pairs": res.extra["bound_pairs"], "picks": len(res.order), "rss": rss,
                          "envs": res.extra["n_env_total"]}))
""")


def make_cells(n: int, seed: int, base: str) -> None:
    if not os.path.exists(base + ".x.npy"):
        run([sys.executable, "-c", MAKE_CELLS, n, seed, base], timeout=7200)


def make_600(kind: str, base: str) -> None:
    """compress_bench.py's 600-structure set, stored as .x.npy / .counts.npy."""
    if os.path.exists(base + ".x.npy"):
        return
    import numpy as np

    from compress_bench import make

    make(kind, 600, base + ".npz", 1)
    d = np.load(base + ".npz")
    np.save(base + ".counts.npy", d["counts"].astype(np.int64))
    np.save(base + ".x.npy", d["x"])


def ranks_run(base: str, size: str, n_ranks: int, record: str = "-") -> dict:
    mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    out = run([mpiexec, "-n", str(n_ranks), sys.executable, "-c", RANKS, base, size, record], timeout=7200)
    return json.loads([ln for ln in out.splitlines() if ln.startswith("{")][-1])


def quests_600(base: str, sizes: str) -> float:
    from compress_bench import QUESTS, run_py

    import numpy as np

    npz = base + ".q.npz"
    if not os.path.exists(npz):
        np.savez(npz, x=np.load(base + ".x.npy"), counts=np.load(base + ".counts.npy"))
    q = run_py(QUESTS, npz, sizes)
    return sum(r["time_s"] for r in q["runs"]), q["runs"]


def model(steps_file: str, setup_s: float, collective_s: float) -> list:
    """Time of the measured pick sequence on P ranks, from the 1-rank run's steps: each step's
    search time is shared among the structures worked on in proportion to their kernel pairs
    (an exact pair weighing 6 cheap ones), each structure's share falls on the rank that owns it
    (contiguous blocks, as the greedy splits them) and the step lasts as long as the fullest
    rank's share; plus the per-step cost outside the search (the pick's bookkeeping, on every
    rank whatever P, measured between two searches) and three collectives per step growing as
    log2 P (two votes, one broadcast); the setup divides by P. Look-ahead is left out (it only
    shortens the critical path). Returns (rows, fixed per-step seconds, median structures
    worked on per step)."""
    import math

    import numpy as np

    d = np.load(steps_file)
    s, structs, pairs, n = d["steps"], d["structs"], d["pairs"].astype(float), int(d["n"])
    work, touched = s[:, 1] - s[:, 0], s[:, 2].astype(np.int64)
    bounds = np.concatenate([[0], np.cumsum(touched)])
    fixed = float(np.median(s[1:, 3] - s[:-1, 4]))  # from the end of one search to the next one's start
    rows = []
    for p in (1, 2, 64, 1000):
        owner = structs * p // n
        search = 0.0
        for t in range(len(work)):
            a, b = bounds[t], bounds[t + 1]
            if b > a:
                share = np.bincount(owner[a:b], weights=pairs[a:b], minlength=p)
                search += work[t] * share.max() / share.sum()
            else:
                search += work[t]
        coll = 0.0 if p == 1 else 3 * collective_s * math.ceil(math.log2(p))
        total = setup_s / p + search + len(work) * (fixed + coll)
        rows.append({"ranks": p, "time_s": total, "search_s": search, "collectives_s": len(work) * coll,
                     "fixed_s": len(work) * fixed, "setup_s": setup_s / p})
    return rows, fixed, float(np.median(touched))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", default="/tmp/msc_ranks", help="datasets are made here once and reused")
    ap.add_argument("--sets", nargs="+", default=["thermal", "mixed", "100k", "1m"])
    ap.add_argument("--repeat", type=int, default=3, help="runs per rank count")
    ap.add_argument("--repeat-1m", type=int, default=1, help="runs per rank count on the 1M set (~2 min each)")
    ap.add_argument("--no-quests", action="store_true")
    ap.add_argument("--collective-us", type=float, default=2.0,
                    help="latency per log2(P) level of one small collective on the modelled cluster (µs)")
    args = ap.parse_args()
    os.makedirs(args.workdir, exist_ok=True)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"python {platform.python_version()}; 1 thread per rank")
    spec = {"thermal": ("600", "0.1,0.25,0.5"), "mixed": ("600", "0.1,0.25,0.5"), "100k": (100_000, "0.01"),
            "1m": (1_000_000, "0.001")}
    results = {}
    for name in args.sets:
        n, size = spec[name]
        base = os.path.join(args.workdir, name)
        if n == "600":
            make_600(name, base)
        else:
            make_cells(n, 2 if name == "100k" else 4, base)
        repeat = args.repeat_1m if name == "1m" else args.repeat
        runs = {1: [], 2: []}
        for rep in range(repeat):
            for r in (1, 2):
                runs[r].append(ranks_run(base, size, r))
        if name != "1m":  # one more 1-rank run, recording every step (not timed: the recording costs;
            ranks_run(base, size, 1, base + ".steps.npz")  # on the 1M set it would copy 256 MB a step)
        row = {"set": name}
        for r in (1, 2):
            times = [x["time_s"] for x in runs[r]]
            med = sorted(runs[r], key=lambda x: x["time_s"])[len(times) // 2]
            row[r] = {"time_s": med["time_s"], "times_s": times, "loop_s": med["loop_s"],
                      "rss_gib": [v / 2**30 for v in med["rss"]], "pairs_per_pick": med["pairs"] / med["picks"],
                      "bound_pairs_per_pick": med["bound_pairs"] / med["picks"],
                      "identical": all(x["order"] == runs[1][0]["order"] for x in runs[r])}
        row["envs"], row["picks"] = runs[1][0]["envs"], runs[1][0]["picks"]
        row["speedup"] = row[1]["time_s"] / row[2]["time_s"]
        print(f"{name}: {row['envs']} environments, {row['picks']} picks")
        for r in (1, 2):
            x = row[r]
            print(f"  {r} rank{'s' if r > 1 else ' '}: {x['time_s']:.3f} s (median of "
                  f"{', '.join(f'{t:.3f}' for t in x['times_s'])}; pick loop {x['loop_s']:.3f} s), peak RSS per rank "
                  f"{', '.join(f'{g:.2f}' for g in x['rss_gib'])} GiB, pairs per pick {x['pairs_per_pick']:.3e} exact "
                  f"+ {x['bound_pairs_per_pick']:.3e} bounds, picks identical to 1 rank: {x['identical']}")
        print(f"  2 ranks: {row['speedup']:.2f}x")
        if n == "600" and not args.no_quests:
            q_total, q_runs = quests_600(base, size)
            same = all(runs[1][0]["order"][: q["size"]] == q["order"] for q in q_runs)
            row["quests_s"] = q_total
            per_size = " + ".join(f"{q['time_s']:.2f}" for q in q_runs)
            print(f"  quests msc, once per size: {per_size} = {q_total:.2f} s "
                  f"-> {q_total / row[1]['time_s']:.1f}x (1 rank), {q_total / row[2]['time_s']:.1f}x (2 ranks); "
                  f"identical selections: {same}")
        results[name] = row
    for name in [n for n in args.sets if n != "1m"]:
        r1 = results[name][1]
        rows, fixed, touched = model(os.path.join(args.workdir, f"{name}.steps.npz"), r1["time_s"] - r1["loop_s"],
                                     args.collective_us * 1e-6)
        results[name]["model"] = rows
        print(f"model, {name} ({results[name]['picks']} picks), from a 1-rank run's steps: {touched:.0f} structures "
              f"worked on per step (median), {fixed * 1e3:.3f} ms per step outside the search; collectives "
              f"{args.collective_us:g} µs per log2 P level, 3 per step; measured 2 ranks: {results[name][2]['time_s']:.3f} s")
        for m in rows:
            print(f"  {m['ranks']:5d} ranks: {m['time_s']:.3f} s (search {m['search_s']:.3f}, per-step fixed "
                  f"{m['fixed_s']:.3f}, collectives {m['collectives_s']:.3f}, setup {m['setup_s']:.3f})")
    out = os.path.join(HERE, "out")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "msc_ranks.json.tmp"), "w") as fh:
        json.dump({k: {str(kk): vv for kk, vv in v.items()} if isinstance(v, dict) else v
                   for k, v in results.items()}, fh, indent=1)
    os.replace(os.path.join(out, "msc_ranks.json.tmp"), os.path.join(out, "msc_ranks.json"))


if __name__ == "__main__":
    main()
