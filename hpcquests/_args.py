"""Argument types shared by the command-line parsers (``hpcquests`` and ``python -m hpcquests.uq``)."""

from __future__ import annotations

import argparse


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
