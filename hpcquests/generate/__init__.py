"""Entropy-maximising dataset generation (Rev-EM: Subramanyam and Perez): bispectrum features
from LAMMPS (``snap``), the log-det entropy of a feature set with rank-k updates (``entropy``),
and the objective F = K·S(S ∪ C) − V_core(C) with its analytic gradient (``objective``).
See ``docs/generate.md``."""
