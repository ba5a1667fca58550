"""One benchmark measurement in its own process (so peak RSS belongs to one tool).

    python benchmarks/worker.py TASK TOOL THREADS [--scale S]

Prints one JSON line: {"task", "tool", "threads", "seconds", "items", "rate", "unit",
"peak_rss_mib", ...}. Inputs are generated from fixed seeds by ``hpcquests.testing`` and cached
as .npy under benchmarks/out/ so both tools see identical arrays.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
CACHE = os.path.join(HERE, "out")


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def snapshot(scale: float):
    from hpcquests import testing

    return testing.large_snapshot(n_atoms=int(1_000_000 * scale), structure="bcc", symbol="Ta", noise=0.06, seed=7)


def small_structures(scale: float):
    from hpcquests import testing

    return testing.mixed_dataset(n_structures=max(10, int(600 * scale)), seed=11)


def _cached(name, build):
    os.makedirs(CACHE, exist_ok=True)
    path = os.path.join(CACHE, name + ".npy")
    if os.path.exists(path):
        return np.load(path)
    arr = build()
    np.save(path, arr)
    return arr


def realistic_reference(scale: float):
    """4096 environments of bcc Ta snapshots at four temperatures (the paper's ~4k reference)."""
    def build():
        import hpcquests as hq
        from hpcquests import testing

        frames = [testing.perturbed_crystal("bcc", "Ta", size=(8, 8, 8), noise=n, seed=20 + i)
                  for i, n in enumerate((0.03, 0.05, 0.07, 0.09))]
        x = hq.get_descriptors(frames)
        rng = np.random.default_rng(3)
        return x[rng.choice(len(x), 4096, replace=False)]
    return _cached("ref4096", build)


def realistic_queries(scale: float):
    """Descriptors of the 1M-atom snapshot (thermal bcc Ta): the UQ scan's queries."""
    def build():
        import hpcquests as hq

        return hq.get_descriptors(snapshot(1.0))
    x = _cached("snapshot_1M_desc", build)
    return x[: int(len(x) * scale)]


def entropy_set(scale: float):
    def build():
        import hpcquests as hq
        from hpcquests import testing

        frames = [testing.perturbed_crystal("bcc", "Ta", size=(10, 10, 10), noise=n, seed=40 + i)
                  for i, n in enumerate(np.linspace(0.02, 0.25, 25))]
        return hq.get_descriptors(frames)[:50_000]
    x = _cached("entropy50k", build)
    return x[: int(len(x) * scale)]


def run(task: str, tool: str, threads: int, scale: float) -> dict:
    import numba

    from hpcquests.runtime import threads as thread_context

    res = {"task": task, "tool": tool, "threads": threads}
    with thread_context(threads):
        if tool == "quests":
            numba.set_num_threads(threads)
        if task == "descriptors-1M":
            frames = [snapshot(scale)]
            n = len(frames[0])
            fn = _desc_fn(tool)
            fn(frames[0][:64] if tool == "hpcquests" else [frames[0][:64]])  # compile/load outside timing
            t = time.perf_counter()
            fn(frames[0] if tool == "hpcquests" else frames)
            res.update(seconds=time.perf_counter() - t, items=n, unit="atoms/s")
        elif task == "descriptors-600":
            frames = small_structures(scale)
            n = sum(len(a) for a in frames)
            fn = _desc_fn(tool)
            fn(frames[:2])
            t = time.perf_counter()
            fn(frames)
            res.update(seconds=time.perf_counter() - t, items=n, unit="atoms/s", structures=len(frames))
        elif task == "dH-1Mx4096":
            x = realistic_reference(scale)
            y = realistic_queries(scale if tool == "hpcquests" else min(scale, 0.1))
            fn = _dh_fn(tool)
            fn(y[:100], x)
            t = time.perf_counter()
            dh = fn(y, x)
            res.update(seconds=time.perf_counter() - t, items=len(y) * len(x), unit="pairs/s", queries=len(y),
                       reference=len(x), dH_median=float(np.median(dh)))
        elif task == "entropy-50k":
            x = entropy_set(scale)
            fn = _entropy_fn(tool)
            fn(x[:100])
            t = time.perf_counter()
            H = fn(x)
            res.update(seconds=time.perf_counter() - t, items=len(x) * len(x), unit="pairs/s", n=len(x),
                       entropy=float(H))
        else:
            raise SystemExit(f"unknown task {task}")
    res["rate"] = res["items"] / res["seconds"]
    res["peak_rss_mib"] = peak_rss_mib()
    return res


def _desc_fn(tool):
    if tool == "hpcquests":
        import hpcquests as hq

        return hq.get_descriptors
    from quests.descriptor import get_descriptors

    return get_descriptors


def _dh_fn(tool):
    if tool == "hpcquests":
        import hpcquests as hq

        return hq.delta_entropy
    from quests.entropy import delta_entropy

    return delta_entropy


def _entropy_fn(tool):
    if tool == "hpcquests":
        import hpcquests as hq

        return hq.entropy
    from quests.entropy import entropy

    return entropy


if __name__ == "__main__":
    task, tool, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
    scale = float(sys.argv[5]) if len(sys.argv) > 5 and sys.argv[4] == "--scale" else 1.0
    print(json.dumps(run(task, tool, threads, scale)))
