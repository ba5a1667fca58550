"""``hpcquests demo``: an end-to-end example on generated data (no download).

A bcc Ta training set (thermal snapshots) is written to disk, its descriptors go into a store,
and several test sets — new thermal snapshots, a hotter crystal, vacancies, a crystal with a
molten core, an amorphous solid — are scored against it: entropy H of each set, and δH of
every test environment against the training store. Environments with δH > 0 are outside the
training data (the QUESTS extrapolation signal); the table shows where that happens.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time

import numpy as np


def _datasets(small: bool):
    from . import testing

    size = (3, 3, 3) if small else (4, 4, 4)
    n_ref = 3 if small else 6
    train = [testing.perturbed_crystal("bcc", "Ta", size=size, noise=0.05, seed=s) for s in range(n_ref)]
    tests = {
        "crystal, same temperature": [testing.perturbed_crystal("bcc", "Ta", size=size, noise=0.05, seed=100 + s)
                                      for s in range(2)],
        "crystal, 4x hotter": [testing.perturbed_crystal("bcc", "Ta", size=size, noise=0.10, seed=200 + s)
                               for s in range(2)],
        "crystal with vacancies": [testing.with_vacancies(
            testing.perturbed_crystal("bcc", "Ta", size=size, noise=0.05, seed=300 + s), fraction=0.05, seed=s)
            for s in range(2)],
        "crystal with molten core": [testing.defective_crystal(size=(5, 5, 5) if small else (6, 6, 6), seed=400)],
        "amorphous": [testing.amorphous(n_atoms=128 if small else 250, symbol="Ta", seed=500)],
    }
    return train, tests


def _uq_scan(out, store_path, small, threads) -> dict:
    """Write a 2-frame LAMMPS dump of a crystal with a growing molten core and scan it."""
    import h5py

    from . import testing
    from .io import lammps
    from .parallel import SerialComm
    from .uq.config import ScanConfig
    from .uq.scan import scan

    size = (5, 5, 5) if small else (7, 7, 7)
    frames = [testing.defective_crystal(size=size, radius=r, seed=10 + i)
              for i, r in enumerate((0.2 * 3.3 * size[0], 0.3 * 3.3 * size[0]))]
    traj = os.path.join(out, "traj.lammpstrj")
    testing.write_lammps_dump(traj, frames, ("id", "type", "x", "y", "z"), seed=1)
    uq_out = os.path.join(out, "uq")
    if os.path.isdir(uq_out):  # a fresh scan each time the demo runs (no stale checkpoint)
        import shutil

        shutil.rmtree(uq_out)
    summary = scan(ScanConfig(traj, store_path, out=uq_out, types="1=Ta", quiet=True, threads=threads or None),
                   SerialComm())
    with h5py.File(os.path.join(uq_out, "dH.h5")) as f:
        fr_all, ids_all, dh_all = f["frame"][...], f["atom_id"][...], f["dH"][...]
    infos, _ = lammps.index_dump(traj)
    result = {"traj": traj, "out": uq_out, "annotated": os.path.join(uq_out, "traj_dH.lammpstrj"), "frames": []}
    for fs in summary["frames"]:
        f = fs["frame"]
        part = lammps.read_atom_bytes(traj, infos[f])
        dh = dict(zip(ids_all[fr_all == f].tolist(), dh_all[fr_all == f].tolist()))
        v = np.array([dh[i] for i in part["ids"].tolist()])
        centre = infos[f].origin + infos[f].cell.sum(axis=0) / 2
        r = np.linalg.norm(part["positions"] - centre, axis=1)
        result["frames"].append({"frame": f, "atoms": fs["atoms"], "fraction_above": fs["fraction_above"],
                                 "r_high": float(r[v > 0].mean()) if (v > 0).any() else float("nan"),
                                 "r_low": float(r[v <= 0].mean()) if (v <= 0).any() else float("nan")})
    return result


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    """out: directory for the demo's files (None: a new temporary one, kept). small: a smaller,
    faster demo. threads: numba threads (None: numba's default). json: print one JSON object
    instead of the table."""

    out: str | None = None
    small: bool = False
    threads: int | None = None
    json: bool = False


def run_demo(config: DemoConfig, comm=None) -> dict:
    """Run the demo (on the calling process; under MPI every rank runs it and rank 0 prints)
    and return its results (also written to ``OUT/demo.json``)."""
    from ._json import emit
    from .descriptors import get_descriptors
    from .io.store import open_store, write_store
    from .metrics import delta_entropy, entropy

    t0 = time.perf_counter()
    small = config.small
    threads = config.threads
    out = config.out or tempfile.mkdtemp(prefix="hpcquests-demo-")
    os.makedirs(out, exist_ok=True)
    train, tests = _datasets(small)

    import ase.io

    train_file = os.path.join(out, "train.extxyz")
    ase.io.write(train_file, train, format="extxyz", parallel=False)
    x_train = get_descriptors(train, threads=threads)
    offsets = np.concatenate([[0], np.cumsum([len(a) for a in train])]).astype(np.int64)
    store_path = os.path.join(out, "train.h5")
    write_store(store_path, x_train, offsets, k=32, cutoff=5.0, species=["Ta"],
                sources=[{"path": train_file, "checksum": ""}], command="hpcquests demo")
    with open_store(store_path) as store:
        ref = store.read("descriptors")

    h = 0.015
    rows = []
    h_train = float(entropy(ref, h, threads=threads))
    rows.append({"dataset": "training set (reference)", "structures": len(train), "environments": int(ref.shape[0]),
                 "entropy": h_train, "dH_mean": None, "dH_max": None, "novel_fraction": None})
    for name, frames in tests.items():
        y = get_descriptors(frames, threads=threads)
        dh = delta_entropy(y, ref, h, threads=threads)
        rows.append({"dataset": name, "structures": len(frames), "environments": int(y.shape[0]),
                     "entropy": float(entropy(y, h, threads=threads)), "dH_mean": float(dh.mean()),
                     "dH_max": float(dh.max()), "novel_fraction": float((dh > 0).mean())})
    elapsed = time.perf_counter() - t0

    kept = (f"files in {out}" if config.out else
            f"files in {out} (a new temporary folder, not removed; --out DIR chooses one)")
    lines = [f"hpcquests demo: bcc Ta, k=32, cutoff=5 Å, h={h}; {kept}",
             "",
             f"{'dataset':28s} {'envs':>6s} {'H (nats)':>9s} {'mean dH':>9s} {'max dH':>9s} {'dH > 0':>7s}"]
    for r in rows:
        def f(v, fmt):
            return format(v, fmt) if v is not None else "-"
        lines.append(f"{r['dataset']:28s} {r['environments']:6d} {r['entropy']:9.3f} "
                     f"{f(r['dH_mean'], '9.2f'):>9s} {f(r['dH_max'], '9.2f'):>9s} "
                     f"{'-' if r['novel_fraction'] is None else format(100 * r['novel_fraction'], '6.1f') + '%':>7s}")
    lines += ["",
              "dH > 0: the environment is outside the training data (an ML potential trained on it",
              "would extrapolate there). Same-temperature snapshots are covered; vacancies, the molten",
              "core and the amorphous solid are not."]
    uq = _uq_scan(out, store_path, small, threads)
    lines += ["", "UQ scan of an MD-like LAMMPS trajectory (crystal with a molten core) against the store:",
              f"  python -m hpcquests.uq {uq['traj']} {store_path} --types 1=Ta --out {uq['out']}"]
    for fr in uq["frames"]:
        lines.append(f"  frame {fr['frame']}: {fr['atoms']} atoms, {100 * fr['fraction_above']['0']:.1f}% with dH > 0; "
                     f"mean distance from the core centre: {fr['r_high']:.1f} Å (dH > 0) vs {fr['r_low']:.1f} Å (others)")
    lines += ["  -> the extrapolating atoms are the molten core and its interface; annotated dump (dh column,",
              f"     opens in OVITO): {uq['annotated']}"]
    elapsed = time.perf_counter() - t0
    lines.append(f"done in {elapsed:.1f} s. Next: hpcquests dh <your.extxyz> {store_path}")
    payload = {"output_dir": out, "bandwidth": h, "rows": rows, "uq": uq, "seconds": elapsed}
    if comm is None or comm.rank == 0:
        emit(payload, lines, as_json=config.json)
    with open(os.path.join(out, "demo.json"), "w") as fh:
        json.dump(payload, fh, indent=2)
    return payload
