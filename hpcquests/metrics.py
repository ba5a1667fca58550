"""Information-theoretic metrics of descriptor sets (docs/science.md §2).

With the Gaussian kernel K(x, y) = exp(−|x − y|²/(2h²)) and L(y | X) = log Σ_{x∈X} K(y, x):

- ``delta_entropy(y, x, h)``  δH(y|X) = −L(y|X)                        (M,) or (M, n_h)
- ``entropy(x, h)``           H(X) = log n − (1/n) Σ_i L(x_i|X)          float or (n_h,)
- ``diversity(x, h)``         D(X) = log Σ_i exp(−L(x_i|X))              float or (n_h,)
- ``overlap(y, x, h, eps)``   fraction of y with δH(y|X) < eps           float or (n_h,)
- ``efficiency(x, h)``        H / log n
- ``get_bandwidth(volume)``   h from the volume per atom (Å³/atom)

All sums are log-sum-exp (finite δH at any distance), streamed in blocks (memory O(block)),
exactly pruned (error ≤ 1.3e-14 absolute on every L, see ``hpcquests.kernels.cpu``). Passing
an array of h gives one result per h from a single pass over the pairs.
"""

from __future__ import annotations

import math

import numpy as np

from .kernels.precision import DEFAULT_FLOAT32_TOLERANCE

DEFAULT_BANDWIDTH = 0.015
DEFAULT_OVERLAP_EPS = 1e-5
#: Queries are centred and streamed in chunks of this many rows (bounded extra memory).
QUERY_CHUNK = 65536


def as_descriptors(a, name: str) -> np.ndarray:
    """Validate a descriptor matrix: 2-D, non-empty, finite; returns C-contiguous float64."""
    arr = np.asarray(a)
    if arr.ndim == 1:
        arr = arr.reshape(1, -1)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (n_environments, n_features), got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape}): need at least one environment")
    arr = np.ascontiguousarray(arr, dtype=np.float64)
    finite = np.isfinite(arr).all(axis=1)
    if not finite.all():
        raise ValueError(f"{name} row {int(np.argmin(finite))} is not finite")
    return arr


def as_bandwidths(h) -> tuple[np.ndarray, bool]:
    """Return (bandwidths as a 1-D float64 array, whether a scalar was given)."""
    scalar = np.ndim(h) == 0
    arr = np.atleast_1d(np.asarray(h, dtype=np.float64)).ravel()
    if arr.size == 0:
        raise ValueError("bandwidth h is empty")
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise ValueError(f"bandwidth h must be positive and finite, got {h!r}")
    return arr, scalar


def _check_widths(y, x):
    if y.shape[1] != x.shape[1]:
        raise ValueError(f"descriptor widths differ: y has {y.shape[1]} features, x has {x.shape[1]}"
                         " (different k or species?)")


def kernel_logsum(y, x, h=DEFAULT_BANDWIDTH, *, threads: int | None = None, backend: str = "cpu",
                  progress=None, precision: str | None = None, float32_tolerance: float = DEFAULT_FLOAT32_TOLERANCE,
                  stats: dict | None = None, must_recompute=None) -> np.ndarray:
    """L(y_i | X) = log Σ_j K(y_i, x_j) for every query, as an (M, n_h) float64 array.

    Args:
        y: (M, d) queries; x: (N, d) reference; h: bandwidth(s) > 0.
        threads: numba threads (None: all); backend: kernel backend name (see
            ``hpcquests.kernels.registry``); progress: optional callable(done_rows, total_rows).
        precision: ``float64`` (None: the default, or a backend object's own) or ``float32``
            (docs/precision.md): rows whose error bound exceeds ``float32_tolerance`` (nats) are
            recomputed in float64; ``stats`` (a dict) receives how many and the largest bound kept.
        must_recompute: callable(L, bound) -> bool rows that float32 must hand to float64.
    """
    from .kernels.precision import check_tolerance, logsum_to_tolerance, row_norms
    from .runtime import threads as thread_context

    y = as_descriptors(y, "y")
    x = as_descriptors(x, "x")
    _check_widths(y, x)
    hs, _ = as_bandwidths(h)
    tolerance = check_tolerance(float32_tolerance)
    be = backend_on(backend, precision=precision)
    with thread_context(threads):
        center = x.mean(axis=0)
        xc = x - center
        prepared = {}
        own = getattr(be, "precision", "float64")  # a third-party backend object: float64

        def logsum(rows, prec):
            if prec not in prepared:
                b = be if prec == own else be.with_precision(prec)
                prepared[prec] = (b, b.prepare_reference(xc, hs))
            b, state = prepared[prec]
            return b.logsum(rows, state)

        r_x = float(row_norms(xc).max())
        stats = {} if stats is None else stats
        out = np.empty((y.shape[0], hs.size))
        for q0 in range(0, y.shape[0], QUERY_CHUNK):
            q1 = min(q0 + QUERY_CHUNK, y.shape[0])
            out[q0:q1] = logsum_to_tolerance(logsum, y[q0:q1] - center, hs, r_x=r_x, n_ref=x.shape[0],
                                             precision=own, tolerance=tolerance, stats=stats,
                                             must_recompute=must_recompute)
            if progress is not None:
                progress(q1, y.shape[0])
    return out


def _shape(values: np.ndarray, scalar: bool):
    return float(values[0]) if scalar else values


def delta_entropy(y, x, h=DEFAULT_BANDWIDTH, *, threads: int | None = None, backend: str = "cpu", **options):
    """Differential entropy δH(y_i | X) = −log Σ_j K(y_i, x_j), finite for any distance.

    Returns (M,) float64, or (M, n_h) when h is an array (the reference's shapes).
    ``options``: ``precision=``, ``float32_tolerance=``, ``stats=`` (see ``kernel_logsum``).
    """
    hs, scalar = as_bandwidths(h)
    out = -kernel_logsum(y, x, hs, threads=threads, backend=backend, **options)
    return out[:, 0] if scalar else out


def entropy(x, h=DEFAULT_BANDWIDTH, *, threads: int | None = None, backend: str = "cpu", **options):
    """Dataset entropy H(X) = −(1/n) Σ_i log((1/n) Σ_j K(x_i, x_j)) (nats); float or (n_h,).
    ``precision=``, ``float32_tolerance=``, ``stats=``: see ``kernel_logsum`` (in float32, |ΔH| is
    at most the mean of the rows' bounds, ≤ ``stats["float32_max_bound"]``)."""
    x = as_descriptors(x, "x")
    hs, scalar = as_bandwidths(h)
    L = kernel_logsum(x, x, hs, threads=threads, backend=backend, **options)
    return _shape(math.log(x.shape[0]) - L.mean(axis=0), scalar)


def structure_entropies(x, offsets, h=DEFAULT_BANDWIDTH, *, threads: int | None = None,
                        checked: bool = True) -> np.ndarray:
    """H(S) of every structure S on its own (nats), the one routine for MSC's scores, the
    baselines and the compression report: H(S) = log n_S − (1/n_S) Σ_{i∈S} log Σ_{j∈S} K(x_i, x_j).

    Args: x (n_env, d) float64, the structures' environments stacked; offsets (N + 1,) int64
    row offsets (structure s is x[offsets[s]:offsets[s + 1]], at least one row); h the bandwidth
    (a positive float). Returns (N,) float64. Each structure is computed on its own
    (``kernels.greedy.structure_entropies``): its value depends only on its own rows.
    ``checked=False`` skips the checks of x and offsets (callers that made them already: MSC).
    """
    from .kernels.greedy import structure_entropies as kernel
    from .runtime import threads as thread_context

    hs = float(h)
    if not (math.isfinite(hs) and hs > 0):
        raise ValueError(f"bandwidth h must be positive and finite, got {h!r}")
    offsets = np.ascontiguousarray(offsets, dtype=np.int64)
    if offsets.ndim != 1 or offsets.size < 1 or offsets[0] != 0:
        raise ValueError("offsets must be a 1-D array of row offsets starting at 0")
    if offsets.size == 1:
        return np.zeros(0)
    x = as_descriptors(x, "x") if checked else np.ascontiguousarray(x, dtype=np.float64)
    if checked and (offsets[-1] != x.shape[0] or (np.diff(offsets) < 1).any()):
        raise ValueError(f"offsets must rise from 0 to {x.shape[0]} (the rows of x) by at least 1 per structure")
    with thread_context(threads):
        return kernel(x, offsets, 1.0 / (2.0 * hs * hs))


def diversity(x, h=DEFAULT_BANDWIDTH, *, threads: int | None = None, backend: str = "cpu", **options):
    """Diversity D(X) = log Σ_i 1/Σ_j K(x_i, x_j), via log-sum-exp; float or (n_h,)."""
    x = as_descriptors(x, "x")
    hs, scalar = as_bandwidths(h)
    L = kernel_logsum(x, x, hs, threads=threads, backend=backend, **options)
    return _shape(logsumexp_columns(-L), scalar)


def entropy_and_diversity(x, h=DEFAULT_BANDWIDTH, *, threads: int | None = None, backend: str = "cpu", **options):
    """(H, D) from one pass over the pairs."""
    x = as_descriptors(x, "x")
    hs, scalar = as_bandwidths(h)
    L = kernel_logsum(x, x, hs, threads=threads, backend=backend, **options)
    return (_shape(math.log(x.shape[0]) - L.mean(axis=0), scalar),
            _shape(logsumexp_columns(-L), scalar))


def logsumexp_columns(a: np.ndarray) -> np.ndarray:
    """Column-wise log Σ exp of a finite (n, m) array."""
    mx = a.max(axis=0)
    return mx + np.log(np.exp(a - mx).sum(axis=0))


def overlap(y, x, h=DEFAULT_BANDWIDTH, eps: float = DEFAULT_OVERLAP_EPS, *, threads: int | None = None,
            backend: str = "cpu", **options):
    """Fraction of the environments y with δH(y|X) < eps (the reference's ε = 1e-5).

    In float32 (``precision="float32"``) every row whose δH lies within its error bound of eps is
    decided in float64, so the fraction equals float64's exactly."""
    if not np.isfinite(eps):
        raise ValueError(f"eps must be finite, got {eps!r}")
    hs, scalar = as_bandwidths(h)
    dh = delta_entropy(y, x, hs, threads=threads, backend=backend, must_recompute=near_threshold(eps),
                       **options)
    return _shape((dh < eps).mean(axis=0), scalar)


def near_threshold(eps):
    """``must_recompute`` for δH < eps decisions (one threshold or several): rows whose δH is within
    their float32 error bound of a threshold, so that float32 decides every row as float64."""
    thresholds = np.atleast_1d(np.asarray(eps, dtype=np.float64))

    def near(L, bound):
        gap = np.abs(-L[:, :, None] - thresholds[None, None, :]).min(axis=2)  # (m, n_h)
        return (gap <= bound[:, None]).any(axis=1)
    return near


def novelty(y, x, h=DEFAULT_BANDWIDTH, eps: float = DEFAULT_OVERLAP_EPS, **kw):
    """1 − overlap(y, x)."""
    ov = overlap(y, x, h, eps, **kw)
    return 1.0 - ov


def efficiency(x, h=DEFAULT_BANDWIDTH, **kw):
    """Entropy per log-size, H / log n (1 for n maximally distinct points; nan for n = 1)."""
    x = as_descriptors(x, "x")
    H = entropy(x, h, **kw)
    n = x.shape[0]
    return H / math.log(n) if n > 1 else float("nan") * np.ones_like(H) if np.ndim(H) else float("nan")


def get_bandwidth(volume):
    """Bandwidth h from the volume per atom V (Å³/atom): 0.0897141·exp(−½(V/10.896)²) + 0.0119417."""
    v = np.asarray(volume, dtype=np.float64)
    if not np.all(np.isfinite(v)) or np.any(v <= 0):
        raise ValueError(f"volume per atom must be positive and finite (Å³/atom), got {volume!r}")
    out = 0.0897141 * np.exp(-0.5 * (v / 10.896) ** 2) + 0.0119417
    return float(out) if out.ndim == 0 else out


def backend_on(backend, comm=None, precision: str | None = None):
    """The kernel backend ``backend`` (a name or a backend object) for this process, in
    ``precision`` (None: float64, or a backend object's own). A GPU is chosen by the node-local
    rank of ``comm`` (collective then: every rank passes the same name); without a communicator,
    the launcher's (as for any serial run)."""
    from .kernels.registry import get_backend

    return get_backend(backend, local_rank=_node_rank(backend, comm), precision=precision)


def _node_rank(backend, comm=None) -> int:
    """The node-local rank that picks the GPU; 0 when no device is involved."""
    if isinstance(backend, str) and backend in ("gpu", "auto"):
        if comm is None:
            from .parallel import SerialComm

            comm = SerialComm()
        return comm.node_rank()
    return 0
