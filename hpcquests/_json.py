"""JSON output of numpy values (used by the CLI, the UQ summary and checkpoints)."""

import numpy as np


def json_default(o):
    """``json.dump(..., default=json_default)``: arrays as lists, numpy scalars as Python ones."""
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(type(o).__name__)
