"""JSON output of numpy values (used by the CLI, the UQ summary and checkpoints)."""

import numpy as np


def json_default(o):
    """``json.dump(..., default=json_default)``: arrays as lists, numpy scalars as Python ones."""
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(type(o).__name__)


def emit(payload: dict, lines: list[str], *, as_json: bool):
    """Print a command's result: ``payload`` as one JSON line, or the human-readable ``lines``."""
    import json

    if as_json:
        print(json.dumps(payload, indent=None, default=json_default))
    else:
        print("\n".join(lines))
