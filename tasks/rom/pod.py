"""Proper orthogonal decomposition (POD) of snapshot matrices.

POD finds the orthonormal basis that minimises the mean squared projection error of a set of
snapshots; for a finite snapshot matrix it is given by the right singular vectors of the (centred)
matrix (Sirovich 1987, "Turbulence and the dynamics of coherent structures"; Holmes, Lumley &
Berkooz 1996, "Turbulence, Coherent Structures, Dynamical Systems and Symmetry").

Snapshot matrices are ``(n_snapshots, n_features)`` throughout, so the modes are the rows of
``Vt`` and coefficients are ``(X - mean) @ modes.T``.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_array, check_is_fitted, validate_data

__all__ = ["POD", "energy_fractions", "fix_signs", "select_rank", "thin_svd"]


def _validate_energy(energy: float) -> float:
    energy = float(energy)
    if not (np.isfinite(energy) and 0.0 < energy <= 1.0):
        raise ValueError(f"energy must satisfy 0 < energy <= 1, got {energy!r}")
    return energy


def _validate_singular_values(singular_values: np.ndarray) -> np.ndarray:
    s = np.asarray(singular_values, dtype=float)
    if s.ndim != 1 or s.size == 0:
        raise ValueError(f"singular_values must be a non-empty 1-D array, got shape {s.shape}")
    if not np.all(np.isfinite(s)) or np.any(s < 0):
        raise ValueError("singular_values must be finite and non-negative")
    if np.any(np.diff(s) > 0):
        raise ValueError("singular_values must be sorted in non-increasing order")
    if not np.any(s > 0):
        raise ValueError("singular_values are all zero: the snapshots carry no energy")
    return s


def select_rank(
    singular_values: np.ndarray, energy: float, total_energy: float | None = None
) -> int:
    """Smallest rank whose cumulative energy fraction reaches ``energy``.

    The energy fraction captured by rank ``r`` is ``sum(s[:r]**2) / sum(s**2)``, the usual POD
    criterion (Holmes, Lumley & Berkooz 1996, section 3.1).

    Args:
        singular_values: Shape ``(n_singular,)``, non-negative, non-increasing.
        energy: Target fraction, ``0 < energy <= 1``.
        total_energy: ``sum(s**2)`` over every singular value of the matrix, when only the
            leading ones were computed (randomized SVD); default: those given.

    Returns:
        The rank ``r`` with ``1 <= r <= n_singular``; ``n_singular`` when even all the given
        singular values fall short of ``energy`` (see :func:`energy_fractions`).

    Raises:
        ValueError: If ``energy`` is outside ``(0, 1]`` or the singular values are invalid.
    """
    energy = _validate_energy(energy)
    s = _validate_singular_values(singular_values)
    cumulative = energy_fractions(s, total_energy)
    # The cumulative sum carries rounding of a few ulps per term, so an energy the spectrum meets
    # exactly (energy=1, or a designed spectrum) must not be missed by one rank.
    tol = 4.0 * np.finfo(float).eps * s.size
    rank = int(np.searchsorted(cumulative, energy - tol, side="left")) + 1
    return min(rank, s.size)


def energy_fractions(singular_values: np.ndarray, total_energy: float | None = None) -> np.ndarray:
    """Energy fraction captured by each rank: ``cumsum(s**2) / total``, shape ``(n_singular,)``.

    Args:
        singular_values: Shape ``(n_singular,)``.
        total_energy: ``sum(s**2)`` over every singular value (the squared Frobenius norm of the
            centred snapshots), when only the leading ones are given; default: ``sum(s**2)``.
    """
    squared = np.asarray(singular_values, dtype=float) ** 2
    total = squared.sum() if total_energy is None else max(float(total_energy), squared.sum())
    return np.cumsum(squared) / total


def fix_signs(vt: np.ndarray) -> np.ndarray:
    """Apply a deterministic sign convention to the rows of ``vt``.

    Singular vectors are defined only up to sign, and LAPACK's choice depends on the order of the
    snapshots and on the build. Each row is flipped so that its entry of largest magnitude is
    positive (the first such entry on ties), which makes modes repeat across runs and snapshot
    orderings.

    Args:
        vt: Right singular vectors as rows, shape ``(n_modes, n_features)``.

    Returns:
        A new array of shape ``(n_modes, n_features)`` with the sign convention applied.
    """
    vt = np.array(vt, dtype=float, copy=True)
    if vt.ndim != 2:
        raise ValueError(f"vt must be 2-D (n_modes, n_features), got shape {vt.shape}")
    pivots = vt[np.arange(vt.shape[0]), np.argmax(np.abs(vt), axis=1)]
    vt *= np.where(pivots < 0, -1.0, 1.0)[:, None]
    return vt


def thin_svd(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Singular values and right singular vectors (as rows) of ``x``: LAPACK's gesdd, or
    gesvd where gesdd does not converge."""
    try:
        _, s, vt = scipy.linalg.svd(x, full_matrices=False, lapack_driver="gesdd")
    except np.linalg.LinAlgError:
        # gesdd (divide and conquer) occasionally fails to converge on ill-conditioned matrices
        # where the slower QR-iteration driver succeeds.
        _, s, vt = scipy.linalg.svd(x, full_matrices=False, lapack_driver="gesvd")
    return s, vt


class POD(TransformerMixin, BaseEstimator):
    """Proper orthogonal decomposition by thin SVD (Sirovich 1987; Holmes et al. 1996).

    A scikit-learn transformer (``clone``, ``get_params``/``set_params``, ``Pipeline``): the
    settings are checked when it is fitted (``fit`` or ``from_svd``), not when it is built.

    Args:
        rank: Number of modes to keep, an integer >= 1 (at most the number of singular values).
            If given it overrides ``energy``.
        energy: Fraction of the snapshot energy (sum of squared singular values) the kept modes
            must capture, ``0 < energy <= 1``. Used only when ``rank`` is None.
        center: Subtract the mean snapshot before the SVD (a bool).

    Attributes:
        mean_: Mean snapshot, shape ``(n_features,)``; zeros when ``center`` is False.
        singular_values_: All computed singular values, shape ``(n_singular,)``, non-increasing.
        modes_: Orthonormal POD modes as rows, shape ``(rank_, n_features)``.
        rank_: Number of modes kept.
        energy_: Energy fraction captured by the ``rank_`` modes.
        total_energy_: Squared Frobenius norm of the (centred) snapshots, ``sum(s**2)`` over
            every singular value, computed or not.
        n_features_in_: Number of features seen in ``fit``.

    Example:
        >>> pod = POD(energy=0.9999).fit(X)          # X: (n_snapshots, n_features)
        >>> X_hat = pod.inverse_transform(pod.transform(X))
    """

    def __init__(self, rank: int | None = None, energy: float = 0.9999, center: bool = True):
        self.rank = rank
        self.energy = energy
        self.center = center

    def fit(self, X: np.ndarray, y: None = None) -> POD:
        """Compute the POD modes of a snapshot matrix.

        Args:
            X: Snapshots, shape ``(n_snapshots, n_features)``; at least 2 when ``center``.
            y: Ignored; accepted so that a ``Pipeline`` can pass its targets through.

        Returns:
            self, fitted.
        """
        self._check_settings()
        # scikit-learn's own checks: a 2-D, non-empty, finite, real, dense float64 array.
        X = validate_data(self, X, dtype=np.float64)
        if self.center and X.shape[0] < 2:
            raise ValueError(
                "POD with center=True needs at least 2 snapshots (a single centred snapshot is "
                f"zero), got n_samples = {X.shape[0]}"
            )
        mean = X.mean(axis=0) if self.center else np.zeros(X.shape[1])
        s, vt = thin_svd(X - mean)
        return self._set_svd(s, vt, mean)

    @classmethod
    def from_svd(
        cls,
        singular_values: np.ndarray,
        vt: np.ndarray,
        mean: np.ndarray | None,
        *,
        rank: int | None = None,
        energy: float = 0.9999,
        total_energy: float | None = None,
    ) -> POD:
        """Build a fitted POD from an SVD of the centred snapshots computed elsewhere.

        Used when the snapshot matrix does not fit in memory and its thin SVD comes from, e.g., a
        tall-skinny QR. The rank rule and sign convention are those of :meth:`fit`, so both give
        the same object for the same data.

        Args:
            singular_values: All singular values, shape ``(n_singular,)``, non-increasing.
            vt: Right singular vectors as rows, shape ``(n_vectors, n_features)`` with
                ``rank_ <= n_vectors <= n_singular``; orthonormal rows.
            mean: The mean that was subtracted, shape ``(n_features,)``, or None if the
                snapshots were not centred.
            rank: Number of modes to keep; overrides ``energy``.
            energy: Energy fraction to capture when ``rank`` is None.
            total_energy: Sum of all squared singular values when only the leading ones are
                given (randomized SVD), so that ``energy_`` and the rank rule count the
                energy that was not computed; default: ``sum(singular_values**2)``.

        Returns:
            A fitted POD.
        """
        vt = np.asarray(vt, dtype=float)
        if vt.ndim != 2:
            raise ValueError(f"vt must be 2-D (n_vectors, n_features), got shape {vt.shape}")
        pod = cls(rank=rank, energy=energy, center=mean is not None)
        mean = np.zeros(vt.shape[1]) if mean is None else np.asarray(mean, dtype=float)
        return pod._set_svd(singular_values, vt, mean, total_energy)

    def _check_settings(self) -> None:
        if not isinstance(self.center, bool | np.bool_):
            raise ValueError(f"center must be a bool, got {self.center!r}")
        # rank is checked against the number of singular values in _resolve_rank.
        _validate_energy(self.energy)

    def _set_svd(
        self,
        singular_values: np.ndarray,
        vt: np.ndarray,
        mean: np.ndarray,
        total_energy: float | None = None,
    ) -> POD:
        self._check_settings()
        s = _validate_singular_values(singular_values)
        if vt.shape[0] > s.size:
            raise ValueError(f"vt has {vt.shape[0]} rows but only {s.size} singular values")
        if mean.shape != (vt.shape[1],):
            raise ValueError(f"mean must have shape ({vt.shape[1]},), got {mean.shape}")
        rank = self._resolve_rank(s, total_energy)
        if rank > vt.shape[0]:
            raise ValueError(f"rank {rank} needs {rank} rows of vt, got {vt.shape[0]}")
        modes = fix_signs(vt[:rank])
        gram_error = np.max(np.abs(modes @ modes.T - np.eye(rank)))
        if gram_error > 1e-6:
            raise ValueError(f"rows of vt are not orthonormal (max |V V^T - I| = {gram_error:.2e})")
        self.mean_ = mean
        self.singular_values_ = s
        self.modes_ = modes
        self.rank_ = rank
        self.energy_ = float(energy_fractions(s, total_energy)[rank - 1])
        self.total_energy_ = float(max(total_energy or 0.0, np.sum(s**2)))
        self.n_features_in_ = vt.shape[1]
        return self

    def _resolve_rank(self, s: np.ndarray, total_energy: float | None = None) -> int:
        if self.rank is None:
            return select_rank(s, self.energy, total_energy)
        rank = int(self.rank)
        if rank != self.rank or not 1 <= rank <= s.size:
            raise ValueError(f"rank must be an integer in [1, {s.size}], got {self.rank!r}")
        return rank

    def _check_fitted(self) -> None:
        check_is_fitted(
            self, "modes_", msg="This POD instance is not fitted yet; call 'fit' or 'from_svd'."
        )

    def transform(self, X: np.ndarray) -> np.ndarray:
        """Project snapshots onto the POD modes.

        Args:
            X: Snapshots, shape ``(n, n_features)``.

        Returns:
            Coefficients, shape ``(n, rank_)``.
        """
        self._check_fitted()
        X = validate_data(self, X, reset=False, dtype=np.float64)
        return (X - self.mean_) @ self.modes_.T

    def inverse_transform(self, C: np.ndarray) -> np.ndarray:
        """Reconstruct snapshots from POD coefficients.

        Args:
            C: Coefficients, shape ``(n, rank_)``.

        Returns:
            Snapshots, shape ``(n, n_features)``.
        """
        self._check_fitted()
        # Non-finite coefficients (a regressor gone wrong) pass through, as before, for the
        # caller's finite check to report; snapshots are refused in transform.
        C = check_array(C, dtype=np.float64, input_name="C", ensure_all_finite=False)
        if C.shape[1] != self.rank_:
            raise ValueError(f"C must have shape (n, {self.rank_}), got {C.shape}")
        return C @ self.modes_ + self.mean_

    def projection_error(self, X: np.ndarray) -> float:
        """Relative Frobenius error of the POD projection, ``||X - P(X)||_F / ||X||_F``.

        Args:
            X: Snapshots, shape ``(n, n_features)``, not all zero.

        Returns:
            The relative error, a float >= 0.
        """
        X = np.asarray(X, dtype=float)
        norm = np.linalg.norm(X)
        if norm == 0:
            raise ValueError("X is all zeros; the relative error is undefined")
        return float(np.linalg.norm(X - self.inverse_transform(self.transform(X))) / norm)
