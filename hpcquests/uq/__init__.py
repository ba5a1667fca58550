"""Uncertainty scans of MD trajectories: per-atom δH against a training set.

    python -m hpcquests.uq TRAJ REF [--out DIR] ...
    srun --mpi=pmi2 python -m hpcquests.uq TRAJ REF ...

From Python: ``hpcquests.uq.scan.scan(ScanConfig(traj, ref, ...), comm)``. See
``hpcquests.uq.scan`` for the pipeline, ``hpcquests.cli.uq`` for the command line and
``docs/uq.md`` for the outputs.
"""
