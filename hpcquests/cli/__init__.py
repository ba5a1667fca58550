"""hpcquests: information-theoretic analysis of atomistic data (QUESTS descriptors, dataset
entropy H, differential entropy dH, diversity, overlap) and entropy-driven dataset compression,
serial or on MPI ranks (mpiexec, srun).

Subcommands: descriptors, entropy, dh, overlap, compress, aggregate, overlap-matrix, novelty,
learning-curve, feature-entropy, generate, trajectory, bandwidth, info, store, demo.
Every input ``IN`` is a descriptor store (``.h5`` written by ``hpcquests descriptors``), a
ColabFit Parquet export, a LAMMPS dump (with ``--types``) or any structure file ASE reads.
``--json`` prints one machine-readable JSON object on stdout; progress goes to stderr. Bad input
exits with status 2 and one ``hpcquests: error: ...`` line, never a traceback.

The package: ``options`` (option groups shared with ``python -m hpcquests.uq``), ``policy``
(the one error -> exit policy), ``context`` (what a command gets besides its options), the
commands by kind (``analysis``, ``datasets``, ``admin``), and ``uq`` (the scan's entry point).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import textwrap

from . import admin, analysis, dataset_analysis, datasets, generate, trajectory
from .policy import EXIT_STATUS_HELP, CliError

__all__ = ["main", "build_parser", "CliError", "SUBCOMMANDS"]

#: the subcommands, in the order ``hpcquests --help`` lists them
SUBCOMMANDS = (analysis.add_descriptors, analysis.add_entropy, analysis.add_dh, analysis.add_overlap,
               analysis.add_bandwidth, admin.add_info, datasets.add_compress, datasets.add_aggregate,
               dataset_analysis.add_overlap_matrix, dataset_analysis.add_novelty,
               dataset_analysis.add_learning_curve, generate.add_feature_entropy, generate.add_generate, trajectory.add_trajectory,
               admin.add_store, admin.add_demo)

#: The output option of each command: (attribute, option as typed, a file or a directory).
OUTPUTS = {"descriptors": ("output", "-o", "file"), "dh": ("output", "-o", "file"),
           "compress": ("output", "-o", "dir"), "aggregate": ("output", "-o", "dir"), "demo": ("out", "--out", "dir")}
# (trajectory checks its --out itself, under its lock: it may be a checkpoint to resume)


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="hpcquests", description=textwrap.fill(" ".join(__doc__.split("\n\n")[0].split()), 96),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="inputs: a descriptor store (.h5), a ColabFit Parquet export (.parquet or its directory), a LAMMPS\n"
               "dump (--types 1=Ta), or any structure file ASE reads (extxyz, POSCAR, CIF, ...).\n"
               "UQ scans of MD trajectories: python -m hpcquests.uq --help. Docs: docs/ in the repository.\n"
               + textwrap.fill(EXIT_STATUS_HELP, 100))
    parser.add_argument("--version", action="version", version=f"hpcquests {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def main(argv=None) -> int:
    """Run one subcommand on every rank; returns the exit status every rank agreed on (0 ok,
    2 bad input, 74 I/O error, 1 internal error), rank 0 printing one line on failure."""
    from ..parallel import get_comm
    from .context import RunContext
    from .policy import preemptible, run_command

    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    # commands that checkpoint and poll (trajectory) stop on USR2/TERM after their checkpoint
    with preemptible() if getattr(args, "preemptible", False) else contextlib.nullcontext():
        comm = get_comm()
        ctx = RunContext.create(args, argv, comm)

        def run():
            if ctx.is_root:
                _check_output(args)  # before any work: an unwritable output fails in seconds, not after hours
            args.func(args, ctx)

        return run_command(f"hpcquests {args.command}", comm, run)


def _check_output(args):
    from ..io.atomic import check_output_dir, check_output_file

    attr, option, kind = OUTPUTS.get(args.command, (None, None, None))
    path = getattr(args, attr, None) if attr else None
    if path:
        (check_output_file if kind == "file" else check_output_dir)(path, option)
