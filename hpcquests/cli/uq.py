"""``python -m hpcquests.uq TRAJ REF``: the UQ scan's entry point (``hpcquests.uq.scan``).

The same option groups, context and error -> exit policy as ``hpcquests``; additionally USR2 and
TERM stop the scan after its checkpoint (exit 75; a rerun resumes).
"""

from __future__ import annotations

import argparse
import json
import textwrap

from .options import (add_bandwidth_option, add_descriptor_options, add_precision_options, add_ref_memory_option,
                      add_run_options, add_types_option, memory_size)
from .policy import EXIT_STATUS_HELP, preemptible_main, signal_after_hook

PROG = "python -m hpcquests.uq"


def build_parser() -> argparse.ArgumentParser:
    from ..uq.config import ScanConfig

    p = argparse.ArgumentParser(
        prog=PROG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Per-atom differential entropy dH of a LAMMPS trajectory against a reference "
                    "(descriptor store or structure file). Same code serial, under mpiexec and srun.",
        epilog=textwrap.fill(EXIT_STATUS_HELP + " USR2 or TERM: the scan stops after its checkpoint (exit 75).", 100))
    p.add_argument("traj", metavar="TRAJ", help="LAMMPS text dump (*.lammpstrj)")
    p.add_argument("ref", metavar="REF", help="descriptor store (.h5) or any ASE-readable structure file")
    p.add_argument("--out", help="output directory (default uq-out)")
    add_bandwidth_option(p, several=False)
    p.add_argument("--threshold", type=float, nargs="+",
                   help="report the fraction of atoms with dH above each value (default 0)")
    p.add_argument("--frames", help="frame selection START:STOP:STEP (default all)")
    add_types_option(p)
    p.add_argument("--backend", choices=("auto", "cpu", "gpu"), help="kernel backend")
    add_precision_options(p)
    p.add_argument("--chunk-atoms", type=int,
                   help="atoms per rank per chunk: bounds memory, and the checkpoint granularity")
    p.add_argument("--read-block", type=memory_size,
                   help="bytes of atom lines a rank parses and sends to their domains at a time: bounds "
                        "the memory of reading a huge frame (default 32M; results do not depend on it)")
    add_descriptor_options(p)
    add_ref_memory_option(p)
    p.add_argument("--skip-bad-frames", action="store_true", help="skip truncated/malformed frames")
    p.add_argument("--frame-parallel-atoms", type=int,
                   help="with at least as many frames as ranks, frames of at most this many atoms are "
                        "spread over ranks whole; larger ones are split by domains (default 2,000,000)")
    p.add_argument("--no-annotated-dump", action="store_true", help="do not write the annotated dump")
    add_run_options(p)
    # the defaults are the configuration's (one place; parser-level defaults win over the groups')
    p.set_defaults(**ScanConfig.defaults())
    return p


def main(argv=None) -> int:
    """Entry point of ``python -m hpcquests.uq``: returns the exit status agreed by every rank
    (0; 2 bad input; 74 I/O error; 75 preempted after a checkpoint; 1 internal error)."""
    from ..faults import inject

    def compute(args, comm):
        from ..uq.config import ScanConfig
        from ..uq.scan import scan

        return scan(ScanConfig.from_namespace(args, on_chunk=signal_after_hook()), comm)

    # the handlers cover the whole run (start-up and reference loading included); a signal
    # is acted on at the next poll: a collective, or a chunk or frame boundary
    return preemptible_main("hpcquests.uq", build_parser(), argv, compute,
                            lambda summary, args: _print_summary(summary, args.out, args.json),
                            startup=lambda: inject("uq.startup"))


def _print_summary(summary, out, as_json):
    from .._json import json_default
    from ..uq.scan import RESULT_NAME

    if as_json:  # one JSON object on stdout, nothing else
        print(json.dumps(summary, default=json_default))
        return
    fr = summary["frames"]
    print(f"hpcquests.uq: {summary['atoms']:,} atoms in {len(fr)} frame(s), {summary['wall_s']:.1f} s; "
          f"results in {out}/ (summary.json, {RESULT_NAME}, dH_hist.png)")
    prec = summary.get("precision", {})
    if prec.get("precision") == "float32":
        n = prec["float32_recomputed_rows"]
        print(f"  precision float32: {n:,} atom{'' if n == 1 else 's'} recomputed in float64 (error bound > "
              f"{prec['float32_tolerance']:g} nats; flagged in {RESULT_NAME}:float64_recomputed)")
    for s in fr:
        if s.get("atoms"):
            above = ", ".join(f"{100 * v:.2f}% > {k}" for k, v in s["fraction_above"].items())
            print(f"  frame {s['frame']} (step {s['timestep']}): {s['atoms']:,} atoms, mean dH "
                  f"{s['mean']:.3f}, max {s['max']:.3f}, {above}")
