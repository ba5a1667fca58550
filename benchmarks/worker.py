"""One benchmark measurement in its own process (so peak RSS belongs to one tool).

    python benchmarks/worker.py TASK TOOL THREADS [--scale S] [--precision float64|float32]

Prints one JSON line: {"task", "tool", "threads", "precision", "seconds", "items", "rate", "unit",
"peak_rss_mib", ...}. ``--precision`` is hpcquests' kernel precision (quests has float64 only). Inputs are generated from fixed seeds by ``hpcquests.testing`` and cached
as .npy under benchmarks/out/ so both tools see identical arrays.
"""

from __future__ import annotations

import json
import os
import resource
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


def run(task: str, tool: str, threads: int, scale: float, precision: str = "float64") -> dict:
    import numba

    from hpcquests.runtime import threads as thread_context

    res = {"task": task, "tool": tool, "threads": threads, "precision": precision if tool == "hpcquests" else "float64"}
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
        elif task in ("dH-1Mx4096", "dH-100kx4096"):
            # 100k x 4096: the first ~10% of the 1M queries (quests' own size in dH-1Mx4096 too)
            x = realistic_reference(scale)
            q_scale = scale * (0.1 if task == "dH-100kx4096" else 1.0)
            y = realistic_queries(q_scale if tool == "hpcquests" else min(q_scale, 0.1))
            fn = _dh_fn(tool, precision)
            fn(y[:100], x)
            t = time.perf_counter()
            dh = fn(y, x)
            res.update(seconds=time.perf_counter() - t, items=len(y) * len(x), unit="pairs/s", queries=len(y),
                       reference=len(x), dH_median=float(np.median(dh)))
            res.update(_precision_stats(tool, precision, y, x))
        elif task == "entropy-50k":
            x = entropy_set(scale)
            fn = _entropy_fn(tool, precision)
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


def _dh_fn(tool, precision="float64"):
    if tool == "hpcquests":
        import hpcquests as hq

        return lambda y, x: hq.delta_entropy(y, x, precision=precision)
    from quests.entropy import delta_entropy

    return delta_entropy


def _entropy_fn(tool, precision="float64"):
    if tool == "hpcquests":
        import hpcquests as hq

        return lambda x: hq.entropy(x, precision=precision)
    from quests.entropy import entropy

    return entropy


def _precision_stats(tool, precision, y, x) -> dict:
    """float32: the rows recomputed in float64 and the largest bound kept (outside the timing)."""
    if tool != "hpcquests" or precision != "float32":
        return {}
    import hpcquests as hq

    stats = {}
    hq.delta_entropy(y[:20000], x, precision="float32", stats=stats)
    return {"float32_recomputed_of_20000": stats["float32_recomputed_rows"],
            "float32_max_bound": stats["float32_max_bound"]}


def dgemm_gflops(k: int = 64, dtype=np.float64) -> float:
    """GF/s of this process's BLAS on (2048 x k) @ (k x 2048) products (the kernels' shape)."""
    rng = np.random.default_rng(0)
    a, b = rng.random((2048, k)).astype(dtype), rng.random((k, 2048)).astype(dtype)
    out = np.empty((2048, 2048), dtype=dtype)
    np.dot(a, b, out)
    reps, t = 0, time.perf_counter()
    while time.perf_counter() - t < 1.0:
        np.dot(a, b, out)
        reps += 1
    return 2.0 * 2048 * 2048 * k * reps / (time.perf_counter() - t) / 1e9


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("task")
    ap.add_argument("tool", choices=("hpcquests", "quests", "blas"))
    ap.add_argument("threads", type=int)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--precision", choices=("float64", "float32"), default="float64")
    a = ap.parse_args()
    if a.tool == "blas":  # the machine's GEMM rates at the kernels' shape
        print(json.dumps({"dgemm_gflops": dgemm_gflops(), "sgemm_gflops": dgemm_gflops(dtype=np.float32)}))
    else:
        print(json.dumps(run(a.task, a.tool, a.threads, a.scale, a.precision)))
