"""The trajectory analysis' configuration: what ``analyse_trajectory(config, comm)`` does,
validated at construction."""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

from .._config import CommandLineConfig

#: Bytes of atom lines per read + exchange block (as the UQ scan).
READ_BLOCK = 32 << 20
#: Options that cannot change any frame's result: a checkpoint written with other values resumes
#: (the nucleation fit is made from the frames' cluster sizes at the end of every run).
RESULT_NEUTRAL = ("read_block", "threads", "quiet", "json", "out", "cnt_volume", "cnt_temperature", "cnt_frames")
#: The novelty threshold on δH (docs/science.md: overlap is the fraction with δH < ε).
DEFAULT_EPS = 1e-5


@dataclasses.dataclass(frozen=True)
class TrajectoryConfig(CommandLineConfig):
    """Entropy per frame and δH against the first frame of a LAMMPS dump.

    traj: the dump. out: output directory. entropy: H of every frame. vs_first: δH of every
    atom against the first selected frame. bandwidth: h, or "auto" (from the first selected
    frame's volume per atom, ``metrics.get_bandwidth``; one h for the whole trajectory).
    frames: selection "START:STOP:STEP" (None: all). types: LAMMPS type to element map.
    k, cutoff: descriptor parameters. exact_atoms: frames with at most this many atoms get the
    exact H (all pairs); larger ones an estimate from ``sample_atoms`` query atoms drawn from
    (seed, frame, atom id). eps: the novelty threshold (fraction of atoms with δH ≥ eps).
    chunk_atoms: query atoms per rank per kernel call (memory bound). read_block: bytes of atom
    lines parsed and sent at a time. ref_memory: gather a frame (or the first frame) on every
    rank up to this many bytes, else pass it around a ring. skip_bad_frames: skip truncated or
    malformed frames. frame_parallel_atoms: with enough frames, frames of at most this many atoms
    go whole to one rank each. clusters: a reference (store or structure file) of the solid: atoms
    with δH < ``cluster_eps`` against it are joined when at most ``cluster_cutoff`` Å apart,
    clusters are the connected components (``hpcquests.clusters``). cnt_volume (Å³ per atom),
    cnt_temperature (K), cnt_frames ("START:STOP", file frame numbers; None: all): the classical
    nucleation theory fit of the cluster sizes. no_annotated_dump: do not write the dump with the
    ``dh`` and ``cluster`` columns. threads: numba threads per rank. json, quiet: output.
    on_frame: a hook called as ``on_frame(world_rank)`` after every frame this process finishes
    and checkpoints (tests use it to send a signal at a known point); not part of the results.
    """

    result_neutral = RESULT_NEUTRAL

    traj: str
    out: str = "trajectory-out"
    entropy: bool = False
    vs_first: bool = False
    bandwidth: object = 0.015
    frames: str | None = None
    types: str | None = None
    k: int = 32
    cutoff: float = 5.0
    exact_atoms: int = 200_000
    sample_atoms: int = 20_000
    seed: int = 0
    eps: float = DEFAULT_EPS
    chunk_atoms: int = 65_536
    read_block: int = READ_BLOCK
    ref_memory: int = 2 << 30
    precision: str = "float64"
    float32_tolerance: float = 1e-3
    skip_bad_frames: bool = False
    frame_parallel_atoms: int = 200_000
    clusters: str | None = None
    cluster_eps: float = DEFAULT_EPS
    cluster_cutoff: float = 3.0
    cnt_volume: float | None = None
    cnt_temperature: float | None = None
    cnt_frames: str | None = None
    no_annotated_dump: bool = False
    threads: int | None = None
    json: bool = False
    quiet: bool = False
    on_frame: Callable | None = dataclasses.field(default=None, compare=False)

    def __post_init__(self):
        if not (self.entropy or self.vs_first or self.clusters):
            raise ValueError("nothing to compute: give --entropy, --vs-first and/or --clusters REF")
        self._check_clusters()
        if isinstance(self.bandwidth, str):
            if self.bandwidth.strip().lower() != "auto":
                try:
                    object.__setattr__(self, "bandwidth", float(self.bandwidth))
                except ValueError:
                    raise ValueError(f"--bandwidth must be a positive number or 'auto', got {self.bandwidth!r}") from None
            else:
                object.__setattr__(self, "bandwidth", "auto")
        if self.bandwidth != "auto":
            h = float(self.bandwidth)
            if not (math.isfinite(h) and h > 0):
                raise ValueError(f"--bandwidth must be a positive number or 'auto', got {self.bandwidth!r}")
            object.__setattr__(self, "bandwidth", h)
        for name, low in (("chunk_atoms", 1), ("sample_atoms", 2), ("exact_atoms", 0), ("k", 1)):
            if int(getattr(self, name)) < low:
                raise ValueError(f"--{name.replace('_', '-')} must be >= {low}, got {getattr(self, name)}")
        if not (math.isfinite(float(self.eps)) and float(self.eps) >= 0):
            raise ValueError(f"--eps must be a finite number >= 0, got {self.eps!r}")
        object.__setattr__(self, "read_block", max(1, int(self.read_block or READ_BLOCK)))
        from ..kernels.precision import check_precision_options

        precision, tolerance = check_precision_options(self.precision, self.float32_tolerance)
        object.__setattr__(self, "precision", precision)
        object.__setattr__(self, "float32_tolerance", tolerance)

    def _check_clusters(self):
        c = float(self.cluster_cutoff)
        if not (math.isfinite(c) and 0 < c <= float(self.cutoff)):
            raise ValueError(f"--cluster-cutoff must be > 0 and at most --cutoff ({self.cutoff} Å: the halo of a "
                             f"domain), got {self.cluster_cutoff!r}")
        if not math.isfinite(float(self.cluster_eps)):
            raise ValueError(f"--cluster-eps must be a finite number, got {self.cluster_eps!r}")
        cnt = (self.cnt_volume, self.cnt_temperature)
        if any(v is not None for v in cnt):
            if not self.clusters or any(v is None for v in cnt):
                raise ValueError("the nucleation fit needs --clusters REF, --cnt-volume and --cnt-temperature")
            for name, v in (("--cnt-volume", self.cnt_volume), ("--cnt-temperature", self.cnt_temperature)):
                if not (math.isfinite(float(v)) and float(v) > 0):
                    raise ValueError(f"{name} must be a positive number, got {v!r}")
        frame_range(self.cnt_frames)


def frame_range(text):
    """(lo, hi) file frame numbers of "START:STOP" (either may be empty); (0, inf) for None."""
    if not text:
        return 0, math.inf
    parts = str(text).split(":")
    try:
        if len(parts) != 2:
            raise ValueError
        lo = int(parts[0]) if parts[0] else 0
        hi = int(parts[1]) if parts[1] else math.inf
    except ValueError:
        raise ValueError(f"--cnt-frames must be START:STOP (file frame numbers), got {text!r}") from None
    return lo, hi
