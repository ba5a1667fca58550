"""Trajectory analysis: entropy per frame and δH against the first frame of MD trajectories.

    python -m hpcquests.trajectory TRAJ --out DIR --entropy --vs-first [options]
    hpcquests trajectory TRAJ --out DIR --entropy --vs-first [options]
    srun python -m hpcquests.trajectory TRAJ ...

From Python: ``hpcquests.trajectory_entropy(traj, out=..., entropy=True, vs_first=True)`` or
``analysis.analyse_trajectory(TrajectoryConfig(...), comm)``. See ``docs/trajectory.md``.
"""


def trajectory_entropy(traj, out: str = "trajectory-out", *, entropy: bool = True, vs_first: bool = False,
                       comm=None, **options) -> dict:
    """Entropy of every frame (and, with ``vs_first``, δH against the first frame) of the LAMMPS
    dump ``traj``; results also in ``out``. ``options``: the fields of ``TrajectoryConfig``
    (bandwidth, frames, types, k, cutoff, exact_atoms, sample_atoms, seed, eps, ...).
    ``comm``: a communicator (``hpcquests.parallel.get_comm()``; default: this process alone).
    Returns the summary (``trajectory.json``'s content) on rank 0, {} on the others."""
    from ..parallel import SerialComm
    from .analysis import analyse_trajectory
    from .config import TrajectoryConfig

    config = TrajectoryConfig(str(traj), out=str(out), entropy=entropy, vs_first=vs_first, quiet=True, **options)
    return analyse_trajectory(config, SerialComm() if comm is None else comm)
