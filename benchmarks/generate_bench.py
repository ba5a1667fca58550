"""Rev-EM generation (issue 23): ``hpcquests generate`` of W on 1 and 2 ranks, each in its own
process, in one run: candidates per second per core, the share of the time spent in LAMMPS, the
parallel efficiency, the accepted sets compared (they must be equal), and the 2-rank run's
``--compare`` table (the generated set against rattled and strained crystals).

    python benchmarks/generate_bench.py                       # 170 configurations per run (~10 min on 2 cores)
    python benchmarks/generate_bench.py --accepted 34 --atoms 2:8    # a smoke run

quests has no generator: nothing of it to set beside these figures. Options are the command's
defaults (17 windows, 2-25 atoms, 40 L-BFGS-B iterations) unless given.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys

from _proc import run  # benchmarks/ is on sys.path when a benchmark runs




def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--accepted", type=int, default=170)
    ap.add_argument("--atoms", default="2:25")
    ap.add_argument("--max-iterations", type=int, default=40)
    ap.add_argument("--workdir", default="/tmp/hpcquests-generate-bench")
    args = ap.parse_args()
    os.makedirs(args.workdir, exist_ok=True)
    mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, python "
          f"{platform.python_version()}; W, {args.accepted} configurations, atoms {args.atoms}, "
          f"{args.max_iterations} iterations")
    print(f"{'ranks':>5s} {'wall s':>8s} {'candidates':>10s} {'cand/s':>8s} {'cand/s/core':>11s} {'LAMMPS':>7s} "
          f"{'accepted':>8s} {'efficiency':>10s}")
    res, sets = {}, {}
    for ranks in (1, 2):
        out = os.path.join(args.workdir, f"r{ranks}")
        subprocess.run(["rm", "-rf", out])
        launch = [mpiexec, "-n", str(ranks)] if ranks > 1 else []
        run(launch + [sys.executable, "-m", "hpcquests", "generate", "--element", "W", "--out", out, "--accepted",
                      str(args.accepted), "--atoms", args.atoms, "--max-iterations", str(args.max_iterations), "-q"]
            + (["--compare"] if ranks == 2 else []))
        with open(os.path.join(out, "generate.json")) as fh:
            s = json.load(fh)
        with open(os.path.join(out, "generated.extxyz"), "rb") as fh:
            sets[ranks] = fh.read()
        res[ranks] = s
        eff = f"{res[1]['wall_s'] / (2 * s['wall_s']):.2f}" if ranks == 2 else ""
        print(f"{ranks:5d} {s['wall_s']:8.1f} {s['candidates']:10d} {s['candidates_per_s']:8.2f} "
              f"{s['candidates_per_s'] / ranks:11.2f} {100 * s['lammps_share']:6.0f}% {s['accepted']:8d} {eff:>10s}",
              flush=True)
    print("accepted sets equal on 1 and 2 ranks:", sets[1] == sets[2])
    for line in res[2].get("compare", {}).get("lines", []):
        print(line)
    print(json.dumps({"machine": platform.platform(), "cpus": os.cpu_count(),
                      "runs": {r: {k: s[k] for k in ("wall_s", "candidates", "candidates_per_s", "lammps_share",
                                                     "accepted", "acceptance_rate", "gain_before_median",
                                                     "gain_median")} for r, s in res.items()},
                      "compare": {k: v for k, v in res[2].get("compare", {}).items() if k != "lines"}}, default=str))


if __name__ == "__main__":
    main()
