"""Non-intrusive reduced-order model: a reduction composed with a regression.

The trajectories are compressed by a reduction (POD), and the map from parameters to the reduced
coefficients of the whole trajectory is learned by regression, without touching the solver
(Hesthaven & Ubbiali 2018, J. Comput. Phys. 363; Guo & Hesthaven 2018, CMAME 341).
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
from sklearn.exceptions import NotFittedError

__all__ = ["ReducedOrderModel"]


def _check_params(params: np.ndarray) -> np.ndarray:
    params = np.asarray(params, dtype=float)
    if params.ndim != 2:
        raise ValueError(f"params must have shape (n_samples, n_params), got {params.shape}")
    return params


def _check_batch(
    params: np.ndarray, data: np.ndarray, name: str, last: str
) -> tuple[np.ndarray, np.ndarray]:
    params = _check_params(params)
    data = np.asarray(data, dtype=float)
    if data.ndim != 3 or data.shape[0] != params.shape[0]:
        raise ValueError(
            f"{name} must have shape ({params.shape[0]}, n_time, {last}) to match params, "
            f"got {data.shape}"
        )
    return params, data


def _relative_norms(error: np.ndarray, reference: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(reference.reshape(reference.shape[0], -1), axis=1)
    if np.any(norms == 0):
        raise ValueError("a reference trajectory is all zeros; its relative error is undefined")
    return np.linalg.norm(error.reshape(error.shape[0], -1), axis=1) / norms


class ReducedOrderModel:
    """POD-regression reduced-order model (Hesthaven & Ubbiali 2018; Guo & Hesthaven 2018).

    A trajectory ``u(t_j; mu)`` of shape ``(n_time, n_features)`` is represented by its
    coefficients on the reduced basis, ``(n_time, rank)``; the approximation learns
    ``mu -> vec(coefficients)`` with ``n_time * rank`` outputs, so time is resolved on the training
    time grid.

    Args:
        reduction: Reduction with ``fit(X)``, ``transform``, ``inverse_transform`` and, once
            fitted, ``rank_`` and ``n_features_in_`` (e.g. ``POD(energy=0.9999)``); for
            :meth:`fit_coefficients` it must already be fitted.
        approximation: Regressor with ``fit(P, Y)`` and ``predict(P)`` (e.g. ``RBF()``).

    Attributes:
        reduction_: The fitted reduction (a copy; the constructor argument is left untouched).
        approximation_: The fitted approximation (a copy).
        n_params_: Number of parameters.
        n_time_: Number of time steps per trajectory.
        n_features_: Number of features per snapshot.
        rank_: Number of reduced coefficients per snapshot.

    Example:
        >>> rom = ReducedOrderModel(reduction=POD(energy=0.9999), approximation=RBF())
        >>> rom.fit(params, trajectories)            # (n, n_params), (n, n_time, n_features)
        >>> u = rom.predict(new_params)               # (m, n_time, n_features)
    """

    def __init__(self, reduction: Any, approximation: Any):
        self.reduction = reduction
        self.approximation = approximation

    def fit(self, params: np.ndarray, trajectories: np.ndarray) -> ReducedOrderModel:
        """Fit the reduction on all snapshots, then the approximation on the coefficients.

        Args:
            params: Parameters, shape ``(n_samples, n_params)``.
            trajectories: Solutions, shape ``(n_samples, n_time, n_features)``.

        Returns:
            self, fitted.
        """
        params, trajectories = _check_batch(params, trajectories, "trajectories", "n_features")
        n_samples, n_time, n_features = trajectories.shape
        snapshots = trajectories.reshape(n_samples * n_time, n_features)
        reduction = copy.deepcopy(self.reduction).fit(snapshots)
        coefficients = reduction.transform(snapshots).reshape(n_samples, n_time, -1)
        return self._fit_approximation(reduction, params, coefficients)

    def fit_coefficients(self, params: np.ndarray, coefficients: np.ndarray) -> ReducedOrderModel:
        """Fit the approximation on coefficients computed elsewhere (e.g. out of core).

        Args:
            params: Parameters, shape ``(n_samples, n_params)``.
            coefficients: Reduced coefficients from the (already fitted) ``reduction``,
                shape ``(n_samples, n_time, rank)``.

        Returns:
            self, fitted.

        Raises:
            NotFittedError: If ``reduction`` is not fitted.
            ValueError: If the coefficients' rank differs from ``reduction.rank_``.
        """
        params, coefficients = _check_batch(params, coefficients, "coefficients", "rank")
        rank = getattr(self.reduction, "rank_", None)
        if rank is None:
            raise NotFittedError(
                "fit_coefficients needs a fitted reduction (e.g. POD.from_svd(...)); "
                f"{type(self.reduction).__name__} has no rank_"
            )
        if coefficients.shape[2] != rank:
            raise ValueError(
                f"coefficients have rank {coefficients.shape[2]} but the reduction has rank_={rank}"
            )
        return self._fit_approximation(copy.deepcopy(self.reduction), params, coefficients)

    def _fit_approximation(
        self, reduction: Any, params: np.ndarray, coefficients: np.ndarray
    ) -> ReducedOrderModel:
        n_samples, n_time, rank = coefficients.shape
        approximation = copy.deepcopy(self.approximation)
        approximation.fit(params, coefficients.reshape(n_samples, n_time * rank))
        self.reduction_ = reduction
        self.approximation_ = approximation
        self.n_params_ = params.shape[1]
        self.n_time_ = n_time
        self.n_features_ = reduction.n_features_in_
        self.rank_ = rank
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "approximation_"):
            raise NotFittedError(
                "This ReducedOrderModel instance is not fitted yet; call 'fit' or "
                "'fit_coefficients' first."
            )

    def predict_coefficients(self, params: np.ndarray) -> np.ndarray:
        """Predict the reduced coefficients of whole trajectories.

        Args:
            params: Parameters, shape ``(n, n_params)``.

        Returns:
            Coefficients, shape ``(n, n_time, rank)``.
        """
        self._check_fitted()
        params = _check_params(params)
        flat = self.approximation_.predict(params)
        return flat.reshape(params.shape[0], self.n_time_, self.rank_)

    def predict(self, params: np.ndarray) -> np.ndarray:
        """Predict whole trajectories.

        Args:
            params: Parameters, shape ``(n, n_params)``.

        Returns:
            Trajectories, shape ``(n, n_time, n_features)``.
        """
        coefficients = self.predict_coefficients(params)
        n = coefficients.shape[0]
        snapshots = self.reduction_.inverse_transform(coefficients.reshape(-1, self.rank_))
        return snapshots.reshape(n, self.n_time_, self.n_features_)

    def relative_errors(self, params: np.ndarray, trajectories: np.ndarray) -> np.ndarray:
        """Per-sample relative error of the ROM, ``||u_rom - u||_F / ||u||_F`` over time and space.

        Args:
            params: Parameters, shape ``(n, n_params)``.
            trajectories: Reference solutions, shape ``(n, n_time, n_features)``.

        Returns:
            Relative errors, shape ``(n,)``.
        """
        params, trajectories = _check_batch(params, trajectories, "trajectories", "n_features")
        return _relative_norms(self.predict(params) - trajectories, trajectories)

    def projection_errors(self, trajectories: np.ndarray) -> np.ndarray:
        """Per-sample relative error of projecting onto the reduced basis alone.

        This is the best any model built on this basis can do, the floor under
        :meth:`relative_errors`.

        Args:
            trajectories: Solutions, shape ``(n, n_time, n_features)``.

        Returns:
            Relative errors ``||u - P(u)||_F / ||u||_F``, shape ``(n,)``.
        """
        self._check_fitted()
        trajectories = np.asarray(trajectories, dtype=float)
        if trajectories.ndim != 3 or trajectories.shape[2] != self.n_features_:
            raise ValueError(
                f"trajectories must have shape (n, n_time, {self.n_features_}), "
                f"got {trajectories.shape}"
            )
        snapshots = trajectories.reshape(-1, self.n_features_)
        projected = self.reduction_.inverse_transform(self.reduction_.transform(snapshots))
        return _relative_norms(projected.reshape(trajectories.shape) - trajectories, trajectories)
