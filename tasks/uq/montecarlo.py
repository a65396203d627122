"""Monte Carlo statistics of fields that arrive in batches.

A campaign's outputs are larger than memory and come block by block from different workers, so
the moments are accumulated in one pass and merged across workers (Chan, Golub & LeVeque 1979;
Welford 1962) instead of being computed on the stacked array.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class RunningMoments:
    """Streaming mean and sample variance of fields, mergeable across workers.

    Each batch's mean and centred sum of squares are combined with the running ones by Chan et
    al.'s pairwise update, which avoids the cancellation of the textbook ``E[x^2] - E[x]^2``
    formula for fields with a large mean and a small spread. Accumulation is in float64 whatever
    the input dtype, since float32 sums over 10^6 samples keep only a few digits.

    Attributes:
        n_: Number of samples seen.
        mean_: Mean field, shape ``(...)`` (the shape of one sample).
        m2_: Sum of squared deviations from the mean, shape ``(...)``.
        std_: Sample standard deviation (ddof=1), shape ``(...)``; NaN while ``n_ < 2``, as numpy.

    References:
        Chan, T. F., Golub, G. H. & LeVeque, R. J. (1979). Updating formulae and a pairwise
        algorithm for computing sample variances. Stanford CS report STAN-CS-79-773.
    """

    def update(self, batch: np.ndarray) -> RunningMoments:
        """Add a batch of samples.

        Args:
            batch: Samples, shape ``(n, ...)``; ``n`` may be 0.

        Returns:
            self.

        Raises:
            ValueError: If the sample shape differs from the earlier batches'.
        """
        batch = np.asarray(batch, dtype=np.float64)
        if batch.ndim == 0:
            raise ValueError("batch must have shape (n, ...), got a scalar")
        if batch.shape[0] == 0:
            return self
        mean = batch.mean(axis=0)
        m2 = ((batch - mean) ** 2).sum(axis=0)
        return self._combine(batch.shape[0], mean, m2)

    def merge(self, other: RunningMoments) -> RunningMoments:
        """Add the samples summarised by another accumulator (e.g. another worker's).

        Args:
            other: An accumulator over samples of the same shape; it is not modified.

        Returns:
            self.
        """
        if getattr(other, "n_", 0) == 0:
            return self
        return self._combine(other.n_, other.mean_, other.m2_)

    def _combine(self, n_b: int, mean_b: np.ndarray, m2_b: np.ndarray) -> RunningMoments:
        if getattr(self, "n_", 0) == 0:
            self.n_, self.mean_, self.m2_ = n_b, np.array(mean_b), np.array(m2_b)
            return self
        if mean_b.shape != self.mean_.shape:
            raise ValueError(
                f"sample shape {mean_b.shape} differs from the earlier {self.mean_.shape}"
            )
        n = self.n_ + n_b
        delta = mean_b - self.mean_
        self.mean_ = self.mean_ + delta * (n_b / n)
        self.m2_ = self.m2_ + m2_b + delta**2 * (self.n_ * n_b / n)
        self.n_ = n
        return self

    @property
    def std_(self) -> np.ndarray:
        if self.n_ < 2:
            return np.full_like(self.mean_, np.nan)
        return np.sqrt(self.m2_ / (self.n_ - 1))


def quantiles(values: np.ndarray, q: Sequence[float]) -> np.ndarray:
    """Empirical quantiles along the sample axis (numpy's default linear interpolation).

    Args:
        values: Samples, shape ``(n,)`` or ``(n, ...)`` for quantile fields.
        q: Probabilities in [0, 1], length ``k``.

    Returns:
        Quantiles, shape ``(k,)`` or ``(k, ...)``.

    Raises:
        ValueError: If ``values`` is empty or a probability is outside [0, 1].
    """
    values = np.asarray(values, dtype=float)
    q = np.asarray(q, dtype=float)
    if values.ndim == 0 or values.shape[0] == 0:
        raise ValueError("values must have shape (n, ...) with n >= 1")
    if q.ndim != 1 or np.any((q < 0) | (q > 1)):
        raise ValueError(f"q must be a sequence of probabilities in [0, 1], got {q}")
    return np.quantile(values, q, axis=0)


def compare_fields(a: np.ndarray, b: np.ndarray) -> float:
    """Relative L2 difference ``||a - b|| / ||b||`` over all entries.

    Args:
        a: Field, any shape (e.g. an estimated mean field).
        b: Reference field, same shape as ``a``, not all zero.

    Returns:
        The relative difference, >= 0.

    Raises:
        ValueError: If the shapes differ or ``b`` is zero.
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    norm_b = np.linalg.norm(b.ravel())
    if norm_b == 0:
        raise ValueError("reference field b is zero: the relative difference is undefined")
    return float(np.linalg.norm((a - b).ravel()) / norm_b)
