"""Morris elementary-effects screening of model parameters, via SALib.

A Morris design is ``n_trajectories`` one-at-a-time paths through a ``num_levels``-point grid of
the unit cube; each path has ``n_params + 1`` points and moves one parameter at a time by
``delta = num_levels / (2 (num_levels - 1))`` (Morris 1991). The elementary effect of parameter
``i`` on a path is ``EE_i = (f(x + delta e_i) - f(x)) / delta`` with ``x`` in unit-cube
coordinates, so for a parameter with physical range ``hi_i - lo_i`` it is the change of ``f`` per
unit of *normalised* parameter: a linear ``f = sum_i c_i x_i`` has ``EE_i = c_i (hi_i - lo_i)``
on every path. Over the paths, ``mu_star_i = mean |EE_i|`` ranks the parameters by importance
(Campolongo, Cariboni & Saltelli 2007), ``mu_i = mean EE_i`` shows the sign, and
``sigma_i = std EE_i`` (ddof=1) flags non-linearity or interactions (zero for an additive,
linear-in-``x_i`` model). It costs ``n_trajectories (n_params + 1)`` model runs: a cheap screen
before a variance-based (Sobol') analysis.

References:
    Morris, M. D. (1991). Factorial sampling plans for preliminary computational experiments.
    Technometrics 33, 161-174.
    Campolongo, F., Cariboni, J. & Saltelli, A. (2007). An effective screening design for
    sensitivity analysis of large models. Environmental Modelling & Software 22, 1509-1518.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from SALib.analyze import morris as salib_analyze
from SALib.sample import morris as salib_sample


class MorrisScreening:
    """Morris elementary-effects screening (Morris 1991; Campolongo et al. 2007).

    Usage: ``X = MorrisScreening(20, seed=1).design(bounds)``; run the model on every row, in
    order; ``fit(X, Y)``.

    Args:
        n_trajectories: Number of one-at-a-time paths, >= 2 (``sigma_`` needs two).
        num_levels: Grid levels per parameter; even, >= 2 (odd grids bias the design).
        seed: Non-negative seed of the design and of the bootstrap of ``mu_star_conf_``.
        n_bootstrap: Bootstrap resamples of the elementary effects for ``mu_star_conf_``.
        conf_level: Confidence level of ``mu_star_conf_``, in (0, 1).

    Attributes:
        mu_star_: ``mean |EE|`` per parameter, shape ``(n_params,)`` for scalar outputs or
            ``(n_params, *out_shape)`` for outputs of shape ``(n, *out_shape)``.
        mu_: ``mean EE``, same shape.
        sigma_: ``std EE`` (ddof=1), same shape.
        mu_star_conf_: Half-width of the bootstrap interval of ``mu_star_`` (normal
            approximation, ``z * std`` of the resampled ``mu_star``), same shape.
        n_params_: Number of parameters.
        n_trajectories_: Number of paths found in the fitted design.
    """

    def __init__(
        self,
        n_trajectories: int = 20,
        num_levels: int = 4,
        seed: int = 0,
        n_bootstrap: int = 200,
        conf_level: float = 0.95,
    ) -> None:
        self.n_trajectories = n_trajectories
        self.num_levels = num_levels
        self.seed = seed
        self.n_bootstrap = n_bootstrap
        self.conf_level = conf_level

    def design(self, bounds: int | ArrayLike) -> np.ndarray:
        """The Morris trajectories, in the unit cube or in physical bounds.

        Args:
            bounds: Either the number of parameters (points in the unit cube ``[0, 1]^d``), or
                the bounds of each parameter, shape ``(n_params, 2)`` as ``(low, high)`` rows.

        Returns:
            Points of shape ``(n_trajectories * (n_params + 1), n_params)``; rows
            ``t * (n_params + 1)`` to ``(t + 1) * (n_params + 1) - 1`` are path ``t``.
        """
        self._check_settings()
        box = np.array([[0.0, 1.0]] * bounds) if _is_count(bounds) else as_bounds(bounds)
        problem = {
            "num_vars": len(box),
            "names": [f"x{i}" for i in range(len(box))],
            "bounds": box.tolist(),
        }
        rng = np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(0,)))
        return salib_sample.sample(problem, self.n_trajectories, self.num_levels, seed=rng)

    def fit(self, X: ArrayLike, Y: ArrayLike) -> MorrisScreening:
        """Compute the elementary-effect statistics from the model outputs on a design.

        SALib analyses one output at a time; a vector output is analysed column by column
        (cheap: the cost is in the model runs, ``n_trajectories (n_params + 1)`` of them).

        Args:
            X: The design of :meth:`design` (unit-cube or physical), shape ``(n_eval, n_params)``.
            Y: Outputs in the order of the rows of ``X``, shape ``(n_eval,)`` or
                ``(n_eval, *out_shape)``.

        Returns:
            self.

        Raises:
            ValueError: If the shapes disagree, ``X`` is not a set of one-at-a-time paths, or
                ``Y`` is not finite.
        """
        self._check_settings()
        X, Y = np.asarray(X, dtype=float), np.asarray(Y, dtype=float)
        n_traj = _check_trajectories(X)
        if Y.ndim == 0 or Y.shape[0] != X.shape[0]:
            raise ValueError(f"Y must have shape ({X.shape[0]}, ...), got {Y.shape}")
        if not np.all(np.isfinite(Y)):
            raise ValueError("Y has non-finite values")
        n_params, out_shape = X.shape[1], Y.shape[1:]
        columns = Y.reshape(len(Y), -1)
        stats = {key: np.empty((n_params, columns.shape[1])) for key in _KEYS}
        problem = {"num_vars": n_params, "names": [f"x{i}" for i in range(n_params)]}
        problem["bounds"] = [[0.0, 1.0]] * n_params  # unused by the analysis
        for k in range(columns.shape[1]):
            rng = np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(1, k)))
            result = salib_analyze.analyze(
                problem,
                X,
                np.ascontiguousarray(columns[:, k]),
                num_resamples=self.n_bootstrap,
                conf_level=self.conf_level,
                num_levels=self.num_levels,
                seed=rng,
            )
            for key in _KEYS:
                stats[key][:, k] = np.asarray(result[key], dtype=float)
        for key, value in stats.items():
            setattr(self, key + "_", value.reshape((n_params, *out_shape)))
        self.n_params_, self.n_trajectories_ = n_params, n_traj
        return self

    def _check_settings(self) -> None:
        if self.n_trajectories < 2:
            raise ValueError(f"n_trajectories must be >= 2, got {self.n_trajectories}")
        if self.num_levels < 2 or self.num_levels % 2:
            raise ValueError(f"num_levels must be even and >= 2, got {self.num_levels}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if self.n_bootstrap < 2:
            raise ValueError(f"n_bootstrap must be >= 2, got {self.n_bootstrap}")
        if not 0 < self.conf_level < 1:
            raise ValueError(f"conf_level must be in (0, 1), got {self.conf_level}")


_KEYS = ("mu_star", "mu", "sigma", "mu_star_conf")


def as_bounds(bounds: ArrayLike) -> np.ndarray:
    """Parameter bounds as a float array of ``(low, high)`` rows.

    Args:
        bounds: Shape ``(n_params, 2)``, ``low < high`` on every row, finite.

    Returns:
        Float array of shape ``(n_params, 2)``.

    Raises:
        ValueError: On a wrong shape, a non-finite entry or an empty range.
    """
    box = np.asarray(bounds, dtype=float)
    if box.ndim != 2 or box.shape[1] != 2 or box.shape[0] < 1:
        raise ValueError(f"bounds must have shape (n_params, 2), got {box.shape}")
    if not np.all(np.isfinite(box)) or np.any(box[:, 1] <= box[:, 0]):
        raise ValueError(f"bounds need finite rows with low < high, got {box.tolist()}")
    return box


def _is_count(bounds: int | ArrayLike) -> bool:
    if isinstance(bounds, int | np.integer):
        if bounds < 1:
            raise ValueError(f"the number of parameters must be >= 1, got {bounds}")
        return True
    return False


def _check_trajectories(X: np.ndarray) -> int:
    if X.ndim != 2 or X.shape[1] < 1:
        raise ValueError(f"X must have shape (n_eval, n_params), got {X.shape}")
    n_traj, rest = divmod(X.shape[0], X.shape[1] + 1)
    if rest or n_traj < 2:
        raise ValueError(
            f"X has {X.shape[0]} rows: a Morris design has n_trajectories * (n_params + 1) "
            f"rows with n_trajectories >= 2 and n_params={X.shape[1]}"
        )
    steps = np.diff(X.reshape(n_traj, X.shape[1] + 1, X.shape[1]), axis=1)
    moved = np.sort(np.argmax(steps != 0, axis=2), axis=1)
    if np.any(np.count_nonzero(steps, axis=2) != 1) or np.any(moved != np.arange(X.shape[1])):
        raise ValueError(
            "X is not a Morris design: each path must move every parameter once, one at a time"
        )
    return n_traj
