"""The UQ scan's configuration: what ``scan(config, comm)`` does, validated at construction."""

from __future__ import annotations

import dataclasses
from typing import Callable

from .._config import CommandLineConfig

#: Bytes of atom lines per read + exchange block (~750k lines of x y z dumps).
READ_BLOCK = 32 << 20
#: Options that cannot change any result: a checkpoint written with other values resumes.
RESULT_NEUTRAL = ("read_block", "threads", "quiet", "json", "out")
BACKENDS = ("auto", "cpu", "gpu")


@dataclasses.dataclass(frozen=True)
class ScanConfig(CommandLineConfig):
    """Per-atom δH of a LAMMPS dump against a reference.

    traj: the dump. ref: a descriptor store or a structure file. out: output directory.
    bandwidth: h. threshold: report the fraction of atoms with δH above each value. frames:
    selection "START:STOP:STEP" (None: all). types: LAMMPS type to element map ("1=Ta,2=W").
    backend: kernel backend. precision: float64 | float32 (docs/precision.md); float32_tolerance:
    the largest error bound (nats) a float32 row keeps, others are recomputed in float64 (each
    atom's flag is in the result store). chunk_atoms: atoms per rank per chunk (memory bound and checkpoint
    granularity). read_block: bytes of atom lines parsed and sent at a time (no effect on
    results). k, cutoff: descriptor parameters. ref_memory: gather the reference up to this many
    bytes, else the ring. skip_bad_frames: skip truncated or malformed frames.
    frame_parallel_atoms: with at least as many frames as ranks, frames of at most this many atoms
    are scanned whole, one rank each. no_annotated_dump: do not write the annotated dump.
    threads: numba threads per rank. json, quiet: output of the entry point.
    on_chunk: a hook called as ``on_chunk(world_rank)`` after every chunk this process computes
    and checkpoints (tests use it to send a signal at a known point); not part of the results.
    """

    result_neutral = RESULT_NEUTRAL

    traj: str
    ref: str
    out: str = "uq-out"
    bandwidth: float = 0.015
    threshold: tuple = (0.0,)
    frames: str | None = None
    types: str | None = None
    backend: str = "cpu"
    precision: str = "float64"
    float32_tolerance: float = 1e-3
    chunk_atoms: int = 262_144
    read_block: int = READ_BLOCK
    k: int = 32
    cutoff: float = 5.0
    ref_memory: int = 2 << 30
    skip_bad_frames: bool = False
    frame_parallel_atoms: int = 2_000_000
    no_annotated_dump: bool = False
    threads: int | None = None
    json: bool = False
    quiet: bool = False
    on_chunk: Callable | None = dataclasses.field(default=None, compare=False)

    def __post_init__(self):
        if int(self.chunk_atoms) < 1:
            raise ValueError(f"--chunk-atoms must be >= 1, got {self.chunk_atoms}")
        if self.backend not in BACKENDS:
            raise ValueError(f"--backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        from ..kernels.precision import check_precision_options

        precision, tolerance = check_precision_options(self.precision, self.float32_tolerance)
        object.__setattr__(self, "precision", precision)
        object.__setattr__(self, "float32_tolerance", tolerance)
        object.__setattr__(self, "threshold", tuple(float(t) for t in self.threshold))
        object.__setattr__(self, "read_block", max(1, int(self.read_block or READ_BLOCK)))
