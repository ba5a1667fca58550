"""Option groups shared by the command-line parsers (``hpcquests`` subcommands and
``python -m hpcquests.uq``): one definition, one help text and one default per option."""

from __future__ import annotations

import argparse

DEFAULT_K = 32
DEFAULT_CUTOFF = 5.0
DEFAULT_BANDWIDTH = 0.015


def memory_size(text) -> int:
    """Parse a byte count with an optional K/M/G/T suffix (binary units): "512M", "2G", "0"."""
    t = str(text).strip().upper().rstrip("B")
    mult = 1
    if t and t[-1] in "KMGT":
        mult = 1024 ** ("KMGT".index(t[-1]) + 1)
        t = t[:-1]
    try:
        value = float(t) * mult
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a memory size: {text!r} (e.g. 512M, 2G)") from None
    if value < 0:
        raise argparse.ArgumentTypeError("memory size must be >= 0")
    return int(value)


def add_run_options(p, *, threads_help="numba threads per rank (default: the rank's share of the node's cores)"):
    """--threads, --json, -q."""
    p.add_argument("--threads", type=int, default=None, help=threads_help)
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr (results and errors are "
                                                               "still printed)")


def add_descriptor_options(p):
    """-k and --cutoff: the QUESTS descriptor's parameters."""
    p.add_argument("-k", type=int, default=DEFAULT_K, help=f"nearest neighbours (default {DEFAULT_K})")
    p.add_argument("--cutoff", type=float, default=DEFAULT_CUTOFF,
                   help=f"cutoff radius in Å (default {DEFAULT_CUTOFF})")


def add_types_option(p):
    p.add_argument("--types", default=None, metavar="T=EL,...",
                   help="LAMMPS dumps: element of each type, e.g. 1=Ta,2=W (not needed with an element column)")


def add_structure_options(p):
    """How structure files are read and described: species blocks, frames, LAMMPS types,
    ColabFit labels."""
    p.add_argument("--multicomponent", action="store_true", help="per-species descriptor blocks")
    p.add_argument("--species", nargs="+", default=None, help="species for --multicomponent")
    p.add_argument("--index", default=":", help="frames of each structure file: N, START:STOP:STEP (default ':', all)")
    add_types_option(p)
    p.add_argument("--labels", nargs="+", default=None, metavar="KEY=VALUE",
                   help="ColabFit exports: the calculation rows that label each configuration, e.g. "
                        "method=PBE (needed when a configuration has rows of several methods)")


def add_bandwidth_option(p, *, several: bool):
    """--bandwidth/-H: one value, or (``several``) a list giving one result each."""
    if several:
        p.add_argument("--bandwidth", "-H", type=float, nargs="+", default=None,
                       help=f"kernel bandwidth(s) h (default {DEFAULT_BANDWIDTH}); several give one result each")
    else:
        p.add_argument("--bandwidth", "-H", type=float, default=DEFAULT_BANDWIDTH,
                       help=f"kernel bandwidth h (default {DEFAULT_BANDWIDTH})")


def add_ref_memory_option(p):
    p.add_argument("--ref-memory", type=memory_size, default="2G",
                   help="under MPI, gather the reference on every rank when it needs at most this much memory "
                        "(default 2G), else pass shards around a ring; 0 forces the ring")


def positive_nats(text) -> float:
    """A positive finite number of nats (argparse type)."""
    from ..kernels.precision import check_tolerance

    try:
        return check_tolerance(text, "value")
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_precision_options(p):
    """--precision and --float32-tolerance: the kernels' precision switch (docs/precision.md)."""
    from ..kernels.precision import DEFAULT_FLOAT32_TOLERANCE, PRECISIONS

    p.add_argument("--precision", choices=PRECISIONS, default="float64",
                   help="kernel precision (default float64); float32 is about 1.7x faster on a CPU core and "
                        "recomputes in float64 every row whose error bound exceeds --float32-tolerance")
    p.add_argument("--float32-tolerance", type=positive_nats, default=DEFAULT_FLOAT32_TOLERANCE, metavar="NATS",
                   help=f"largest error bound (nats) a float32 row may keep (default {DEFAULT_FLOAT32_TOLERANCE:g})")
