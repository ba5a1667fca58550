"""Uncertainty scans of MD trajectories: per-atom δH against a training set.

    python -m hpcquests.uq TRAJ REF [--out DIR] ...
    srun --mpi=pmi2 python -m hpcquests.uq TRAJ REF ...

See ``hpcquests.uq.scan`` for the pipeline and ``docs/uq.md`` for the outputs.
"""


def main(argv=None) -> int:
    from .scan import main as _main

    return _main(argv)
