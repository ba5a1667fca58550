"""The log-det entropy of a set of feature vectors, kept as running sums so that the entropy of
the set with a few more vectors costs a small determinant (the matrix determinant lemma).

For rows x_1 … x_n (d features) with mean μ and centred scatter C = Σ (x − μ)(x − μ)ᵀ,

    S = log det(C / n + (Λ / n) I) = log det(C + Λ I) − d log n.

Λ is fixed when the set is bootstrapped: Λ = λ_rel · tr(C₀) / d, so that at bootstrap S is
log det(Σ₀ + λ I) with Σ₀ = C₀ / n₀ the covariance and λ = λ_rel · tr(Σ₀) / d (docs/design.md's
default λ_rel = 1e-6), and later the ridge on the covariance is λ n₀ / n: a fixed prior weight.
Fixing Λ rather than λ keeps every addition a low-rank change of C + Λ I.

Adding m rows b_j (centred on the old mean: b̃_j = b_j − μ, t̃ = Σ b̃_j, n' = n + m) changes the
centred scatter by the rank-(m + 1) term

    C' = C + Σ b̃_j b̃_jᵀ − t̃ t̃ᵀ / n'  =  C + U W Uᵀ,  U = [b̃_1 … b̃_m, t̃],  W = diag(1, …, 1, −1/n'),

so log det(C' + Λ I) = log det(C + Λ I) + log det(I + W Uᵀ (C + Λ I)⁻¹ U), an (m + 1)-square
determinant. Its gradient with respect to the rows is ∂S'/∂b_j = 2 (C' + Λ I)⁻¹ (b̃_j − t̃ / n').
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import cho_factor, cho_solve, solve_triangular

#: ridge relative to the mean variance at bootstrap (docs/design.md: λ = 1e-6 · tr(Σ) / d)
DEFAULT_RIDGE = 1e-6
#: rows whose rms distance from their mean is below this fraction of their rms norm have no spread
#: but rounding (the mean of identical rows is not always exactly that row): the ridge, and with
#: it S, would be set by rounding noise
NO_SPREAD = 1e-10


class LogDetEntropy:
    """Running sums (n, μ, C) of a feature set with a fixed ridge Λ.

    ``bootstrap`` (n₀, d) float64: the first rows (n₀ ≥ 2); ``ridge``: λ_rel; ``scatter_ridge``:
    Λ itself, to continue a set with a known Λ (then ``ridge`` is not used).
    """

    def __init__(self, bootstrap, ridge: float = DEFAULT_RIDGE, scatter_ridge: float | None = None):
        x = np.asarray(bootstrap, dtype=np.float64)
        if x.ndim != 2 or x.shape[0] < 2:
            raise ValueError("the bootstrap set needs at least two rows of features")
        if not np.all(np.isfinite(x)):
            raise ValueError("the bootstrap features hold non-finite values")
        mean = x.mean(axis=0)
        xc = x - mean
        self._setup(x.shape[0], mean, xc.T @ xc, ridge, scatter_ridge)

    @classmethod
    def from_sums(cls, n: int, mean, scatter, ridge: float = DEFAULT_RIDGE, scatter_ridge: float | None = None):
        """The set from its count, mean (d,) and centred scatter (d, d)."""
        self = cls.__new__(cls)
        self._setup(int(n), np.asarray(mean, dtype=np.float64), np.asarray(scatter, dtype=np.float64), ridge,
                    scatter_ridge)
        return self

    def _setup(self, n, mean, scatter, ridge, scatter_ridge):
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(scatter))):
            raise ValueError("the features hold non-finite values")
        self.n, self.d = n, mean.shape[0]
        self.mean = mean
        self.scatter = 0.5 * (scatter + scatter.T)
        if scatter_ridge is None:
            if not ridge > 0:
                raise ValueError(f"the ridge must be positive (got {ridge})")
            spread = float(np.trace(self.scatter)) / n  # mean squared distance from the mean
            if not spread > NO_SPREAD ** 2 * (float(mean @ mean) + spread):
                raise ValueError(f"the {n} feature rows have no spread beyond rounding (identical rows: copies of "
                                 "one configuration, or a perfect crystal?), so log det(Σ + λI) is -inf")
            scatter_ridge = ridge * float(np.trace(self.scatter)) / self.d
        self.scatter_ridge = float(scatter_ridge)
        self._factor()

    def _factor(self):
        a = self.scatter + self.scatter_ridge * np.eye(self.d)
        self._chol = cho_factor(a, lower=True)
        self._logdet_a = 2.0 * float(np.sum(np.log(np.diag(self._chol[0]))))

    @property
    def entropy(self) -> float:
        """S = log det(C + Λ I) − d log n, nats."""
        return self._logdet_a - self.d * np.log(self.n)

    def _update_terms(self, rows):
        b = np.atleast_2d(np.asarray(rows, dtype=np.float64))
        if b.shape[1] != self.d:
            raise ValueError(f"rows have {b.shape[1]} features, the set {self.d}")
        bt = b - self.mean
        t = bt.sum(axis=0)
        n_new = self.n + b.shape[0]
        u = np.concatenate([bt, t[None, :]]).T  # (d, m + 1)
        w = np.ones(b.shape[0] + 1)
        w[-1] = -1.0 / n_new
        return bt, t, n_new, u, w

    def entropy_with(self, rows) -> float:
        """S of the set with ``rows`` (m, d) added, through the determinant lemma (the set is
        unchanged)."""
        _, _, n_new, u, w = self._update_terms(rows)
        y = solve_triangular(self._chol[0], u, lower=True)
        small = np.eye(u.shape[1]) + w[:, None] * (y.T @ y)
        sign, logdet = np.linalg.slogdet(small)
        if sign <= 0:  # the updated matrix is positive definite: a rounding failure otherwise
            raise FloatingPointError("the determinant lemma lost positivity; the features are ill-conditioned")
        return self._logdet_a + logdet - self.d * np.log(n_new)

    def entropy_and_gradient(self, rows) -> tuple[float, np.ndarray]:
        """(S with ``rows`` added, ∂S/∂rows (m, d)); the set is unchanged."""
        bt, t, n_new, u, w = self._update_terms(rows)
        s = self.entropy_with(rows)
        a_new = self.scatter + self.scatter_ridge * np.eye(self.d) + (u * w) @ u.T
        grad = 2.0 * cho_solve(cho_factor(a_new, lower=True), (bt - t / n_new).T).T
        return s, grad

    def add(self, rows) -> None:
        """Add ``rows`` (m, d) to the set."""
        bt, t, n_new, u, w = self._update_terms(rows)
        self.scatter = self.scatter + (u * w) @ u.T
        self.scatter = 0.5 * (self.scatter + self.scatter.T)
        self.mean = self.mean + t / n_new
        self.n = n_new
        self._factor()

    def entropy_fresh(self) -> float:
        """S recomputed with ``slogdet`` from the running scatter (a check of the factor)."""
        _, logdet = np.linalg.slogdet(self.scatter + self.scatter_ridge * np.eye(self.d))
        return float(logdet) - self.d * np.log(self.n)


def logdet_entropy(x, ridge: float = DEFAULT_RIDGE) -> float:
    """log det(Σ + λ I) of rows ``x`` (n, d), Σ the covariance (1/n), λ = ridge · tr(Σ) / d."""
    return LogDetEntropy(x, ridge).entropy
