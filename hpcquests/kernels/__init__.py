"""Numerical kernels: small pure functions on arrays, CPU (numba) and optional GPU (CuPy) twins
chosen through ``hpcquests.kernels.registry``. Nothing here imports mpi4py."""
