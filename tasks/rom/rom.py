"""Non-intrusive reduced-order model: a reduction composed with a regression.

The trajectories are compressed by a reduction (POD), and the map from parameters to the reduced
coefficients of the whole trajectory is learned by regression, without touching the solver
(Hesthaven & Ubbiali 2018, J. Comput. Phys. 363; Guo & Hesthaven 2018, CMAME 341).

When each sample's initial state is drawn at random rather than set by the parameters, the
trajectory is not a function of the parameters alone: an optional second reduction compresses
the initial states, and their leading coefficients join the parameters as regression inputs.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
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


def _check_rank(reduction: Any, rank: int, what: str) -> None:
    fitted = getattr(reduction, "rank_", None)
    if fitted is None:
        raise NotFittedError(
            "fit_coefficients needs fitted reductions (e.g. POD.from_svd(...)); "
            f"{type(reduction).__name__} has no rank_"
        )
    if rank != fitted:
        raise ValueError(
            f"{what} coefficients have rank {rank} but the reduction has rank_={fitted}"
        )


class ReducedOrderModel(BaseEstimator):
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
        initial_reduction: Reduction of the initial states (frame 0 of each trajectory), e.g.
            ``POD(rank=8)``, or None. When given, the regression inputs are the parameters
            followed by the ``initial_reduction.rank_`` coefficients of the initial state, and
            :meth:`predict` needs the initial states.

    Attributes:
        reduction_: The fitted reduction (a copy; the constructor argument is left untouched).
        approximation_: The fitted approximation (a copy).
        initial_reduction_: The fitted reduction of the initial states, or None.
        n_params_: Number of parameters (initial-state coefficients not counted).
        n_time_: Number of time steps per trajectory.
        n_features_: Number of features per snapshot.
        rank_: Number of reduced coefficients per snapshot.

    A scikit-learn estimator: ``clone`` and ``get_params``/``set_params`` reach the parts'
    settings (``approximation__kernel``, ``reduction__rank``), and :meth:`score` lets
    ``GridSearchCV`` choose them by held-out error.

    Example:
        >>> rom = ReducedOrderModel(reduction=POD(energy=0.9999), approximation=RBF())
        >>> rom.fit(params, trajectories)            # (n, n_params), (n, n_time, n_features)
        >>> u = rom.predict(new_params)               # (m, n_time, n_features)
    """

    def __init__(self, reduction: Any, approximation: Any, initial_reduction: Any = None):
        self.reduction = reduction
        self.approximation = approximation
        self.initial_reduction = initial_reduction

    @property
    def uses_initial_state(self) -> bool:
        """Whether predictions need each sample's initial state as well as its parameters."""
        return self.initial_reduction is not None

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
        initial, initial_coefficients = None, None
        if self.initial_reduction is not None:
            initial = copy.deepcopy(self.initial_reduction).fit(trajectories[:, 0])
            initial_coefficients = initial.transform(trajectories[:, 0])
        return self._fit_approximation(
            reduction, params, coefficients, initial, initial_coefficients
        )

    def fit_coefficients(
        self,
        params: np.ndarray,
        coefficients: np.ndarray,
        initial_coefficients: np.ndarray | None = None,
    ) -> ReducedOrderModel:
        """Fit the approximation on coefficients computed elsewhere (e.g. out of core).

        Args:
            params: Parameters, shape ``(n_samples, n_params)``.
            coefficients: Reduced coefficients from the (already fitted) ``reduction``,
                shape ``(n_samples, n_time, rank)``.
            initial_coefficients: The initial states' coefficients from the (already fitted)
                ``initial_reduction``, shape ``(n_samples, initial_reduction.rank_)``; needed
                exactly when ``initial_reduction`` is given.

        Returns:
            self, fitted.

        Raises:
            NotFittedError: If a reduction is not fitted.
            ValueError: If the coefficients' rank differs from ``reduction.rank_``, or the
                initial coefficients do not match ``initial_reduction``.
        """
        params, coefficients = _check_batch(params, coefficients, "coefficients", "rank")
        _check_rank(self.reduction, coefficients.shape[2], "coefficients")
        initial = None
        if self.initial_reduction is not None:
            if initial_coefficients is None:
                raise ValueError("initial_coefficients are needed with an initial_reduction")
            initial_coefficients = np.asarray(initial_coefficients, dtype=float)
            if initial_coefficients.ndim != 2 or len(initial_coefficients) != len(params):
                raise ValueError(
                    f"initial_coefficients must have shape ({len(params)}, rank), "
                    f"got {initial_coefficients.shape}"
                )
            _check_rank(self.initial_reduction, initial_coefficients.shape[1], "initial")
            initial = copy.deepcopy(self.initial_reduction)
        elif initial_coefficients is not None:
            raise ValueError("initial_coefficients given, but the ROM has no initial_reduction")
        return self._fit_approximation(
            copy.deepcopy(self.reduction), params, coefficients, initial, initial_coefficients
        )

    def _fit_approximation(
        self,
        reduction: Any,
        params: np.ndarray,
        coefficients: np.ndarray,
        initial: Any = None,
        initial_coefficients: np.ndarray | None = None,
    ) -> ReducedOrderModel:
        n_samples, n_time, rank = coefficients.shape
        inputs = params if initial is None else np.hstack([params, initial_coefficients])
        approximation = copy.deepcopy(self.approximation)
        approximation.fit(inputs, coefficients.reshape(n_samples, n_time * rank))
        self.reduction_ = reduction
        self.initial_reduction_ = initial
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

    def inputs(self, params: np.ndarray, initial_states: np.ndarray | None = None) -> np.ndarray:
        """The regression inputs: parameters, then the initial states' coefficients if used.

        Args:
            params: Parameters, shape ``(n, n_params)``.
            initial_states: Initial states, shape ``(n, ...)`` with ``n_features`` values per
                sample (flattened in the trajectories' order); needed when
                :attr:`uses_initial_state`, ignored otherwise.

        Returns:
            Inputs, shape ``(n, n_params + initial rank)``.
        """
        self._check_fitted()
        params = _check_params(params)
        if params.shape[1] != self.n_params_:
            raise ValueError(f"expected {self.n_params_} parameters per sample, got {params.shape}")
        if self.initial_reduction_ is None:
            return params
        if initial_states is None:
            raise ValueError(
                "this ROM takes each sample's initial state as input (the initial state is "
                "random, not a parameter): pass initial_states"
            )
        u0 = np.asarray(initial_states, dtype=float).reshape(len(initial_states), -1)
        if u0.shape != (params.shape[0], self.n_features_):
            raise ValueError(
                f"initial_states must hold ({params.shape[0]}, {self.n_features_}) values, "
                f"got {np.shape(initial_states)}"
            )
        return np.hstack([params, self.initial_reduction_.transform(u0)])

    def predict_coefficients(
        self, params: np.ndarray, initial_states: np.ndarray | None = None
    ) -> np.ndarray:
        """Predict the reduced coefficients of whole trajectories.

        Args:
            params: Parameters, shape ``(n, n_params)``.
            initial_states: Initial states (see :meth:`inputs`).

        Returns:
            Coefficients, shape ``(n, n_time, rank)``.
        """
        inputs = self.inputs(params, initial_states)
        flat = self.approximation_.predict(inputs)
        return flat.reshape(inputs.shape[0], self.n_time_, self.rank_)

    def predict(self, params: np.ndarray, initial_states: np.ndarray | None = None) -> np.ndarray:
        """Predict whole trajectories.

        Args:
            params: Parameters, shape ``(n, n_params)``.
            initial_states: Initial states (see :meth:`inputs`); needed when
                :attr:`uses_initial_state`.

        Returns:
            Trajectories, shape ``(n, n_time, n_features)``.
        """
        coefficients = self.predict_coefficients(params, initial_states)
        n = coefficients.shape[0]
        snapshots = self.reduction_.inverse_transform(coefficients.reshape(-1, self.rank_))
        return snapshots.reshape(n, self.n_time_, self.n_features_)

    def relative_errors(self, params: np.ndarray, trajectories: np.ndarray) -> np.ndarray:
        """Per-sample relative error of the ROM, ``||u_rom - u||_F / ||u||_F`` over time and space.

        A ROM that takes initial states gets them from the reference trajectories (frame 0).

        Args:
            params: Parameters, shape ``(n, n_params)``.
            trajectories: Reference solutions, shape ``(n, n_time, n_features)``.

        Returns:
            Relative errors, shape ``(n,)``.
        """
        params, trajectories = _check_batch(params, trajectories, "trajectories", "n_features")
        predicted = self.predict(params, trajectories[:, 0])
        return _relative_norms(predicted - trajectories, trajectories)

    def score(self, params: np.ndarray, trajectories: np.ndarray) -> float:
        """Minus the mean relative error (scikit-learn scores grow with quality).

        Args:
            params: Parameters, shape ``(n, n_params)``.
            trajectories: Reference solutions, shape ``(n, n_time, n_features)``.

        Returns:
            ``-mean(relative_errors(params, trajectories))``, a float <= 0.
        """
        return -float(self.relative_errors(params, trajectories).mean())

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
