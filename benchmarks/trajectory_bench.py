"""Trajectory analysis (issue 19): hpcquests.trajectory on 1 and 2 ranks against quests doing the
same work, each run in its own process, in one invocation.

    python benchmarks/trajectory_bench.py                  # full sizes (about 8 min on 2 cores)
    python benchmarks/trajectory_bench.py --scale 0.1      # a smoke run at 1/10 of the atoms

Tasks (bcc Ta, k = 32, rc = 5 Å, h = 0.015; dumps written once by ``hpcquests.testing`` into
``--workdir``):

- ``H exact 100k``: the entropy of a 101,306-atom frame, every pair (``--entropy``).
- ``H sampled 1M``: the entropy of a 1,024,000-atom frame from 20,000 query atoms against all of it.
- ``dH vs first 100k``: δH of every atom of a 101,306-atom frame against the first frame
  (``--vs-first``, frame 0 against itself and frame 1 against frame 0). δH of a 1M-atom frame
  against a 1M-atom first frame is 10^12 pairs (about an hour per core at the measured rate):
  not run here, the rate below is what it would see.
- quests: ``entropy`` of a 50,000-atom frame (exact) and ``delta_entropy`` of a 10 % sample of
  the 100k frame against the first one, each after its own descriptors (timed separately).

hpcquests' time is the analysis' own ``wall_s`` (reading, exchange, descriptors, kernels,
outputs; the interpreter and imports excluded, as for quests). Rates are kernel pairs per second
of the whole task; efficiency = t(1 rank) / (2 · t(2 ranks)).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import textwrap

from _proc import run  # benchmarks/ is on sys.path when a benchmark runs

HERE = os.path.dirname(os.path.abspath(__file__))

MAKE = textwrap.dedent("""
    import sys
    from hpcquests import testing
    path, n, noises = sys.argv[1], int(sys.argv[2]), [float(v) for v in sys.argv[3].split(",")]
    frames = [testing.perturbed_crystal("bcc", "Ta", size=(n, n, n), noise=s, seed=i) for i, s in enumerate(noises)]
    testing.write_lammps_dump(path + ".tmp", frames, ("id", "type", "x", "y", "z"), seed=1)
    import os; os.replace(path + ".tmp", path)
""")

QUESTS = textwrap.dedent("""
    import json, sys, time
    import numpy as np
    from hpcquests.io import lammps
    from quests.descriptor import get_descriptors
    from quests.entropy import delta_entropy, entropy
    task, path, n_atoms = sys.argv[1], sys.argv[2], int(sys.argv[3])
    frames = lammps.read_dump_frames(path, type_map={1: "Ta"})
    out = {}
    if task == "entropy":
        a = frames[0][:n_atoms] if n_atoms < len(frames[0]) else frames[0]
        t = time.perf_counter(); x = get_descriptors([a], k=32, cutoff=5.0); out["descriptors_s"] = time.perf_counter() - t
        t = time.perf_counter(); H = entropy(x, h=0.015); out["kernel_s"] = time.perf_counter() - t
        out.update(value=float(H), pairs=float(len(x)) ** 2)
    else:
        t = time.perf_counter()
        x0 = get_descriptors([frames[0]], k=32, cutoff=5.0); x1 = get_descriptors([frames[1]], k=32, cutoff=5.0)
        out["descriptors_s"] = time.perf_counter() - t
        y = x1[np.random.default_rng(0).permutation(len(x1))[: len(x1) // 10]]
        t = time.perf_counter(); dh = delta_entropy(y, x0, h=0.015); out["kernel_s"] = time.perf_counter() - t
        out.update(value=float(np.mean(dh)), pairs=float(len(y)) * len(x0))
    print(json.dumps(out))
""")




def ours(ranks, path, out, args):
    mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    launch = [mpiexec, "-n", str(ranks)] if ranks > 1 else []
    run(launch + [sys.executable, "-m", "hpcquests.trajectory", path, "--out", out, "--types", "1=Ta", "-q",
                  "--threads", "1", *args], env={"MPIR_CVAR_ENABLE_HEAVY_YIELD": "1"} if ranks > 2 else None)
    with open(os.path.join(out, "trajectory.json")) as fh:
        return json.load(fh)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of the atoms (default 1)")
    ap.add_argument("--workdir", default="/tmp/hpcquests-trajectory-bench")
    ap.add_argument("--no-quests", action="store_true")
    args = ap.parse_args()
    os.makedirs(args.workdir, exist_ok=True)
    n_small = max(4, round(37 * args.scale ** (1 / 3)))
    n_big = max(6, round(80 * args.scale ** (1 / 3)))
    small = os.path.join(args.workdir, f"frames-{n_small}.lammpstrj")
    big = os.path.join(args.workdir, f"frame-{n_big}.lammpstrj")
    for path, n, noises in ((small, n_small, "0.05,0.08"), (big, n_big, "0.05")):
        if not os.path.exists(path):
            run([sys.executable, "-c", MAKE, path, str(n), noises])
    n1, nb = 2 * n_small ** 3, 2 * n_big ** 3
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, python "
          f"{platform.python_version()}; frames of {n1:,} and {nb:,} atoms")
    tasks = {
        f"H exact {n1 // 1000}k": (small, ["--entropy", "--frames", "0:1"], lambda s: float(n1) ** 2),
        f"H sampled {nb / 1e6:.2g}M": (big, ["--entropy", "--sample-atoms", "20000"], lambda s: 20000.0 * nb),
        f"dH vs first {n1 // 1000}k": (small, ["--vs-first"], lambda s: 2.0 * float(n1) ** 2),
    }
    results = {"machine": platform.platform(), "cpus": os.cpu_count(), "tasks": {}}
    print(f"{'task':22s} {'ranks':>5s} {'wall s':>8s} {'pairs/s':>10s} {'efficiency':>10s}  value")
    for name, (path, targs, pairs) in tasks.items():
        times = {}
        for ranks in (1, 2):
            s = ours(ranks, path, os.path.join(args.workdir, f"out-{name.replace(' ', '_')}-{ranks}"), targs)
            times[ranks] = s["wall_s"]
            f0 = s["frames"][-1]
            value = (f"H = {f0['entropy']:.6f} ± {f0['entropy_stderr']:.2g}" if "entropy" in f0
                     else f"mean dH = {f0['dH_vs_first_mean']:.4f}")
            eff = f"{times[1] / (2 * times[2]):.2f}" if ranks == 2 else ""
            print(f"{name:22s} {ranks:5d} {s['wall_s']:8.2f} {pairs(s) / s['wall_s']:10.3g} {eff:>10s}  {value}",
                  flush=True)
            results["tasks"].setdefault(name, {})[ranks] = {"wall_s": s["wall_s"], "pairs_per_s": pairs(s) / s["wall_s"],
                                                            "frame": f0}
    if not args.no_quests:
        n_q = min(50_000, n1)
        for task, label, extra in (("entropy", f"quests H exact {n_q // 1000}k", str(n_q)),
                                   ("dh", f"quests dH 10% of {n1 // 1000}k", "0")):
            q = json.loads(run([sys.executable, "-c", QUESTS, task, small, extra]).strip().splitlines()[-1])
            total = q["descriptors_s"] + q["kernel_s"]
            print(f"{label:22s} {1:5d} {total:8.2f} {q['pairs'] / total:10.3g} {'':>10s}  value {q['value']:.6f} "
                  f"(descriptors {q['descriptors_s']:.1f} s, kernel {q['kernel_s']:.1f} s, "
                  f"{q['pairs'] / q['kernel_s']:.3g} pairs/s in the kernel)", flush=True)
            results["tasks"][label] = q
    print(json.dumps(results, default=str))


if __name__ == "__main__":
    main()
