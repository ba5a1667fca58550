"""The Rev-EM greedy loop (the paper's Fig. 1, Methods Sec. 5) over volume windows and ranks.

A task is one (mode, window): bootstrap with random configurations, then candidates
i = 0, 1, … until the window's quota is accepted (or ``max_candidates`` tried). Candidate i of
window w is drawn from ``numpy.random.default_rng((seed, w, i))`` (bootstrap configuration b from
``(seed, w, b, 1)``); its positions are optimised for F = K·S(S ∪ C) − V_core(C) by L-BFGS-B with
the analytic gradient; it is accepted when it raises the entropy of the window's set and no two
atoms are closer than the window's minimum distance. Tasks are independent of each other and of
the rank that runs them: tasks are handed out dynamically (``comm.task_queue``) and merged in
(mode, window) order, so the accepted set is the same on any number of ranks. Each task saves
its progress after every candidate (``checkpoint/task-*.json``): a resumed run rebuilds the
window's set from the saved configurations and continues with the next candidate, bitwise as if
it had not stopped.
"""

from __future__ import annotations

import time

import numpy as np

from .config import GenerateConfig, window_quotas
from .entropy import LogDetEntropy
from .objective import candidate_rows, objective, periodic_pairs
from .snap import BispectrumEngine


class TimedEngine(BispectrumEngine):
    """A ``BispectrumEngine`` that adds the seconds spent in LAMMPS to ``clock[0]``."""

    def __init__(self, cell, n_atoms, params, clock):
        t = time.perf_counter()
        super().__init__(cell, n_atoms, params)
        self._clock = clock
        clock[0] += time.perf_counter() - t

    def _timed(self, fn, *a):
        t = time.perf_counter()
        try:
            return fn(*a)
        finally:
            self._clock[0] += time.perf_counter() - t

    def features(self, positions):
        return self._timed(super().features, positions)

    def features_and_sum_gradient(self, positions):
        return self._timed(super().features_and_sum_gradient, positions)

    def features_and_pair_gradients(self, positions):
        return self._timed(super().features_and_pair_gradients, positions)


def random_configuration(rng, n_range, v_range, strain: float, min_width: float):
    """(cell (3, 3), positions (n, 3)) Å: n atoms uniform in ``n_range``, a volume per atom
    uniform in ``v_range``, the cell a cube of that volume under a random strain (each entry of
    the strain uniform in [−strain, strain], rescaled to the volume) whose perpendicular widths are
    all at least ``min_width`` · V^{1/3} (redrawn until they are), positions uniform in the cell."""
    n = int(rng.integers(n_range[0], n_range[1] + 1))
    volume = n * float(rng.uniform(*v_range))
    side = volume ** (1 / 3)
    for _ in range(1000):
        cell = np.eye(3) + rng.uniform(-strain, strain, (3, 3))
        det = np.linalg.det(cell)
        if det <= 0:
            continue
        cell = cell * (volume / det) ** (1 / 3)
        widths = volume / np.linalg.norm(np.cross(cell[[1, 2, 0]], cell[[2, 0, 1]]), axis=1)
        if widths.min() >= min_width * side:
            break
    else:  # pragma: no cover - only for extreme --strain
        cell = np.eye(3) * side
    return cell, rng.uniform(0.0, 1.0, (n, 3)) @ cell


def min_pair_distance(positions, cell, limit: float) -> float:
    """Shortest distance between two atoms (periodic images included) below ``limit``, else limit."""
    d = periodic_pairs(positions, cell, limit, "d")
    return float(d.min()) if d.size else float(limit)


class WindowTask:
    """One (mode, window) of a run: its parameters, its set, its progress."""

    def __init__(self, config: GenerateConfig, mode: str, window: int, edges, quota: int, run_dir, clock):
        self.config, self.mode, self.window, self.quota = config, mode, window, quota
        self.v_range = (float(edges[window]), float(edges[window + 1]))
        self.r_core = config.r_core_factor * self.v_range[0] ** (1 / 3)
        self.min_distance = config.min_distance if config.min_distance is not None else 0.9 * self.r_core
        self.name = f"task-{mode}-w{window:02d}"
        self.run_dir, self.clock = run_dir, clock
        self.max_candidates = config.max_candidates or 20 * quota + 20

    # -- configurations
    def candidate(self, i: int, bootstrap: bool = False):
        key = (self.config.seed, self.window, i, 1) if bootstrap else (self.config.seed, self.window, i)
        return random_configuration(np.random.default_rng(key), self.config.atom_range(), self.v_range,
                                    self.config.strain, self.config.min_width)

    def rows(self, cell, positions) -> np.ndarray:
        with TimedEngine(cell, len(positions), self.config.snap, self.clock) as eng:
            return candidate_rows(eng.features(positions), self.mode)

    # -- the loop
    def run(self, between=None) -> dict:
        """The task's result (loaded when a previous run finished it)."""
        done = self.run_dir.load_unit(self.name)
        if done is not None and done.get("finished"):
            return done
        state, st = self._start(done)
        while st["accepted_count"] < self.quota and st["next"] < self.max_candidates:
            self._one_candidate(state, st, between)
            self.run_dir.save_unit(self.name, st)
            if self.config.on_candidate is not None:
                self.config.on_candidate(self)
        st["finished"] = True
        self.run_dir.save_unit(self.name, st)
        return st

    def _start(self, saved):
        """The window's set: bootstrap, then the accepted configurations in order (a resume
        redoes exactly the additions of the first run, so the sums are the same bits)."""
        boot = [self.candidate(b, bootstrap=True) for b in range(self.config.bootstrap)]
        state = LogDetEntropy(np.concatenate([self.rows(c, x) for c, x in boot]), self.config.ridge)
        if saved is None:
            st = {"mode": self.mode, "window": self.window, "v_start": self.v_range[0], "v_end": self.v_range[1],
                  "r_core": self.r_core, "min_distance": self.min_distance, "quota": self.quota,
                  "bootstrap": [{"cell": c.tolist(), "positions": x.tolist()} for c, x in boot],
                  "bootstrap_entropy": state.entropy, "scatter_ridge": state.scatter_ridge, "accepted": [],
                  "accepted_count": 0, "next": 0, "k": self.config.k0, "fails": 0, "rejected_entropy": 0,
                  "rejected_distance": 0, "trace": [], "finished": False}
            return state, st
        for a in saved["accepted"]:
            state.add(self.rows(np.array(a["cell"]), np.array(a["positions"])))
        return state, saved

    def _one_candidate(self, state, st, between):
        cfg, i = self.config, st["next"]
        cell, x0 = self.candidate(i)
        s_before = state.entropy
        with TimedEngine(cell, len(x0), cfg.snap, self.clock) as eng:
            gain0 = state.entropy_with(candidate_rows(eng.features(x0), self.mode)) - s_before
            x = self._optimise(eng, state, x0, st["k"], between)
            rows = candidate_rows(eng.features(x), self.mode)
        gain = state.entropy_with(rows) - s_before
        dmin = min_pair_distance(x, cell, self.min_distance)
        record = {"candidate": i, "atoms": len(x), "gain_before": gain0, "gain": gain, "k": st["k"],
                  "min_distance": dmin}
        if dmin < self.min_distance:
            st["rejected_distance"] += 1
            st["k"] = max(cfg.k_min, st["k"] * cfg.k_down)
            record["outcome"] = "too close"
        elif not gain > 0:
            st["rejected_entropy"] += 1
            st["fails"] += 1
            if st["fails"] >= cfg.k_patience:
                st["k"], st["fails"] = min(cfg.k_max, st["k"] * cfg.k_up), 0
            record["outcome"] = "no gain"
        else:
            state.add(rows)
            st["fails"] = 0
            st["accepted"].append({"cell": cell.tolist(), "positions": x.tolist(), "candidate": i, "gain": gain,
                                   "k": record["k"], "entropy": state.entropy})
            st["accepted_count"] += 1
            record["outcome"] = "accepted"
        record["entropy"] = state.entropy
        st["trace"].append(record)
        st["next"] = i + 1

    def _optimise(self, eng, state, x0, k, between):
        """Positions maximising F (L-BFGS-B on −F with the analytic gradient)."""
        if self.config.max_iterations == 0:
            return x0
        from scipy.optimize import minimize

        def neg(flat):
            if between is not None:
                between()
            f, g, _ = objective(eng, state, flat.reshape(-1, 3), k, self.r_core, self.mode)
            return -f, -g.ravel()

        res = minimize(neg, x0.ravel(), jac=True, method="L-BFGS-B",
                       options={"maxiter": self.config.max_iterations})
        x = res.x.reshape(-1, 3)
        return x if np.all(np.isfinite(x)) else x0


def run_tasks(config: GenerateConfig, comm, edges, run_dir, clock) -> list[dict]:
    """Every (mode, window) task, handed out dynamically over the ranks; the results in (mode,
    window) order on rank 0 (None elsewhere). Collective."""
    quotas = window_quotas(config.accepted, config.windows)
    tasks = [(m, w) for m in config.modes() for w in range(config.windows)]
    queue = comm.task_queue(len(tasks))
    mine = {}

    def between():
        queue.serve()
        comm.poll()

    while (t := queue.next()) is not None:
        mode, w = tasks[t]
        mine[t] = WindowTask(config, mode, w, edges, quotas[w], run_dir, clock).run(between)
        comm.poll()
    queue.close()
    parts = comm.gather_to_root(mine)
    if comm.rank != 0:
        return None
    merged = {}
    for p in parts:
        merged.update(p)
    return [merged[t] for t in range(len(tasks))]

