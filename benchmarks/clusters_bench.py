"""Solid-like clusters of a 1M-atom frame (issue 20): ``hpcquests trajectory --clusters`` on 1 and
2 ranks, each run in its own process.

    python benchmarks/clusters_bench.py                 # 1,024,000 atoms (about 3 min on 2 cores)
    python benchmarks/clusters_bench.py --scale 0.1     # a smoke run

The frame is a bcc Ta crystal with Gaussian noise of 0.12 Å and the reference a cold one (0.04 Å),
so that about a third of the atoms fall below ε = 1e-5 and form clusters of many sizes, up to one
spanning the box. Reported: the whole analysis' ``wall_s`` and its phases (the slowest rank's),
the clusters phase alone (marks of the halo, local components, the merge), and the parallel
efficiency t(1) / (2 · t(2)). quests has no cluster analysis, so there is no side-by-side figure;
``hpcquests.clusters`` (serial, scipy's KD-tree and connected components) on the same frame is
timed as the reference point.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import textwrap

from _proc import run  # benchmarks/ is on sys.path when a benchmark runs


MAKE = textwrap.dedent("""
    import sys, os
    import ase.io
    from hpcquests import testing
    path, ref, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    a = testing.perturbed_crystal("bcc", "Ta", size=(n, n, n), noise=0.12, seed=1)
    testing.write_lammps_dump(path + ".tmp", [a], ("id", "type", "x", "y", "z"), seed=1)
    os.replace(path + ".tmp", path)
    ase.io.write(ref, [testing.perturbed_crystal("bcc", "Ta", size=(4, 4, 4), noise=0.04, seed=s) for s in range(2)],
                 parallel=False)
""")

SERIAL = textwrap.dedent("""
    import json, sys, time
    import numpy as np
    import hpcquests as hq
    from hpcquests.io import lammps
    a = lammps.read_dump_frames(sys.argv[1], type_map={1: "Ta"})[0]
    ann = lammps.read_dump_frames(sys.argv[2], type_map={1: "Ta"})[0]
    mask = ann.arrays["dh"] < 1e-5
    t = time.perf_counter()
    lab = hq.clusters(ann.positions, ann.cell[:], ann.pbc, mask, 3.0, ids=ann.arrays["id"])
    dt = time.perf_counter() - t
    same = bool(np.array_equal(lab, ann.arrays["cluster"].astype(np.int64)))
    print(json.dumps({"seconds": dt, "same_labels": same, "n_clusters": int(lab.max())}))
""")




def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--workdir", default="/tmp/hpcquests-clusters-bench")
    args = ap.parse_args()
    os.makedirs(args.workdir, exist_ok=True)
    n = max(6, round(80 * args.scale ** (1 / 3)))
    dump, ref = os.path.join(args.workdir, f"frame-{n}.lammpstrj"), os.path.join(args.workdir, "ref.extxyz")
    if not os.path.exists(dump):
        run([sys.executable, "-c", MAKE, dump, ref, str(n)])
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; a frame of {2 * n ** 3:,} "
          f"atoms")
    mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    times = {}
    for ranks in (1, 2):
        out = os.path.join(args.workdir, f"out-{ranks}")
        launch = [mpiexec, "-n", str(ranks)] if ranks > 1 else []
        run(launch + [sys.executable, "-m", "hpcquests.trajectory", dump, "--out", out, "--types", "1=Ta", "-q",
                      "--threads", "1", "--clusters", ref, "--frame-parallel-atoms", "0"])
        with open(os.path.join(out, "trajectory.json")) as fh:
            s = json.load(fh)
        times[ranks] = s
        f = s["frames"][0]
        ph = s["timings_s"]
        eff = "" if ranks == 1 else (f"  efficiency {times[1]['wall_s'] / (2 * s['wall_s']):.2f} (whole), "
                                     f"{times[1]['timings_s']['clusters'] / (2 * ph['clusters']):.2f} (clusters)")
        print(f"{ranks} rank(s): wall {s['wall_s']:.2f} s; clusters {ph['clusters']:.2f} s, descriptors "
              f"{ph['descriptors']:.2f} s, dH {ph['dH']:.2f} s, read+exchange {ph['read'] + ph['exchange']:.2f} s, "
              f"annotated dump {ph['write']:.2f} s; {f['clustered_atoms']:,} atoms in {f['n_clusters']:,} clusters, "
              f"largest {f['largest_cluster']:,}{eff}", flush=True)
    serial = json.loads(run([sys.executable, "-c", SERIAL, dump, times[1]["annotated_dump"]]).strip().splitlines()[-1])
    print(f"hpcquests.clusters (serial API) on the same marks: {serial['seconds']:.2f} s, labels "
          f"{'equal' if serial['same_labels'] else 'DIFFERENT'} ({serial['n_clusters']:,} clusters)")
    print(json.dumps({"machine": platform.platform(), "runs": {r: {"wall_s": s["wall_s"], "timings_s": s["timings_s"],
                                                                    "frame": s["frames"][0]} for r, s in times.items()},
                      "serial_api": serial}, default=str))


if __name__ == "__main__":
    main()
