"""Dynamic mode decomposition (DMD) through PyDMD: one trajectory, and forecasts across parameters.

DMD fits a linear map between successive snapshots, ``x_{j+1} ~ A x_j``, and represents the
trajectory by the eigenvalues and modes of ``A`` (Schmid 2010, "Dynamic mode decomposition of
numerical and experimental data", J. Fluid Mech. 656; exact DMD: Tu, Rowley, Luchtenburg,
Brunton & Kutz 2014, "On dynamic mode decomposition: theory and applications", J. Comput. Dyn.
1(2)). BOP-DMD fits the continuous eigenvalues by variable projection (optimized DMD, Askham &
Kutz 2018, SIAM J. Appl. Dyn. Syst. 17(1)) on random subsets of the snapshots, and the spread
over the subsets estimates the eigenvalues' uncertainty (Sashidhar & Kutz 2022, "Bagging,
optimized dynamic mode decomposition for robust, stable forecasting with spatial and temporal
uncertainty quantification", Phil. Trans. R. Soc. A 380). Parametric DMD compresses the
trajectories of all training parameters onto one POD basis, forecasts each training parameter's
coefficients by DMD, and interpolates the forecasts at new parameters (Andreuzzi, Demo & Rozza
2023, "A dynamic mode decomposition extension for the forecasting of parametric dynamical
systems", SIAM J. Appl. Dyn. Syst. 22(3)).

The algorithms are PyDMD's (``DMD``, ``BOPDMD``, ``ParametricDMD``); this module adapts them to
the project's conventions (through ``pdeflow.tasks.rom.pydmd_adapters``): ``(n_time,
n_features)`` trajectories, seeded bagging, the POD and regressors of ``pdeflow.tasks.rom``, and
the reduce stage's estimator interface. Time inside PyDMD is counted in steps; ``dt`` converts
eigenvalues to physical units.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np
from pydmd import ParametricDMD
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError

from pdeflow.tasks.rom.approximation import GPR, RBF
from pdeflow.tasks.rom.pod import POD
from pdeflow.tasks.rom.pydmd_adapters import (
    PODSpace,
    RealRegressor,
    SharedKernelGPR,
    make_dmd,
    quiet_pydmd_warnings,
)

__all__ = ["DMD_METHODS", "INTERPOLATORS", "ParametricDMDRom", "TrajectoryDMD"]

DMD_METHODS = ("exact", "bop")
INTERPOLATORS: dict[str, type] = {"rbf": RBF, "gpr": GPR}


def _check_svd_rank(svd_rank: Any) -> None:
    ok = isinstance(svd_rank, numbers.Real) and not isinstance(svd_rank, bool)
    if ok and isinstance(svd_rank, numbers.Integral):
        ok = svd_rank >= -1
    elif ok:
        ok = 0 < svd_rank < 1
    if not ok:
        raise ValueError(
            "svd_rank must be -1 (no truncation), 0 (optimal hard threshold), an integer >= 1 "
            f"(the rank) or a float in (0, 1) (the energy to keep), got {svd_rank!r}"
        )


def _check_bagging(method: str, num_trials: Any, trial_size: Any, name: str = "method") -> None:
    if method not in DMD_METHODS:
        raise ValueError(f"{name} must be one of {DMD_METHODS}, got {method!r}")
    if not isinstance(num_trials, numbers.Integral) or num_trials < 0:
        raise ValueError(f"num_trials must be an integer >= 0, got {num_trials!r}")
    if not isinstance(trial_size, numbers.Real) or not 0 < trial_size < 1:
        raise ValueError(f"trial_size must be a float in (0, 1), got {trial_size!r}")


def _check_dt(dt: Any) -> float:
    if isinstance(dt, bool) or not isinstance(dt, numbers.Real) or not 0 < dt < np.inf:
        raise ValueError(f"dt must be a finite number > 0, got {dt!r}")
    return float(dt)


def _check_n_time(n_time: Any) -> int:
    if isinstance(n_time, bool) or not isinstance(n_time, numbers.Integral) or n_time < 1:
        raise ValueError(f"n_time must be an integer >= 1, got {n_time!r}")
    return int(n_time)


def _finite(name: str, x: Any, ndim: int, shape: str) -> np.ndarray:
    x = np.asarray(x, dtype=float)
    if x.ndim != ndim or 0 in x.shape:
        raise ValueError(f"{name} must be a non-empty {shape} array, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contains NaN or inf")
    return x


class TrajectoryDMD(BaseEstimator):
    """DMD of one trajectory: exact DMD (Tu et al. 2014) or BOP-DMD (Sashidhar & Kutz 2022).

    Args:
        svd_rank: Truncation of the snapshot SVD, PyDMD's convention: an integer >= 1 is the
            rank, a float in (0, 1) the energy to keep, 0 the optimal hard threshold (Gavish &
            Donoho 2014), -1 no truncation.
        method: ``"exact"`` (exact DMD) or ``"bop"`` (optimized DMD, bagged when
            ``num_trials > 0``).
        num_trials: BOP-DMD bagging trials; 0 fits optimized DMD once, without uncertainty.
        trial_size: Fraction of the snapshots in each bag, in (0, 1).
        seed: Seed of the bagging draws (``numpy.random.default_rng``).

    Attributes:
        eigenvalues_: Discrete eigenvalues, the growth per step ``dt``, complex, shape (r,).
        continuous_eigenvalues_: ``log(eigenvalues_) / dt`` (BOP-DMD: fitted directly), units
            1/time, complex, shape (r,).
        eigenvalues_std_: BOP-DMD with bagging: standard deviation of the continuous
            eigenvalues over the bags, units 1/time, shape (r,); else None. It is computed
            as ``sqrt(mean|lambda|^2 - |mean lambda|^2)``, so it cannot resolve spreads below
            about ``1e-8 |lambda|`` (rounding in the difference).
        modes_: DMD modes as rows, complex, shape (r, n_features).
        dmd_: The fitted PyDMD estimator.
        dt_: The step between snapshots, in time units.
        n_time_, n_features_: Shape of the fitted trajectory.
    """

    def __init__(
        self,
        svd_rank: int | float = 0,
        method: str = "exact",
        num_trials: int = 0,
        trial_size: float = 0.6,
        seed: int = 0,
    ):
        self.svd_rank = svd_rank
        self.method = method
        self.num_trials = num_trials
        self.trial_size = trial_size
        self.seed = seed

    def fit(self, trajectory: np.ndarray, dt: float = 1.0) -> TrajectoryDMD:
        """Fit DMD to snapshots equally spaced in time.

        Args:
            trajectory: Snapshots, shape (n_time, n_features), n_time >= 3, real.
            dt: Time between snapshots (> 0), in time units.

        Returns:
            self, fitted.
        """
        _check_svd_rank(self.svd_rank)
        _check_bagging(self.method, self.num_trials, self.trial_size)
        X = _finite("trajectory", trajectory, 2, "(n_time, n_features)")
        if X.shape[0] < 3:
            raise ValueError(f"trajectory needs n_time >= 3 snapshots, got {X.shape[0]}")
        dt = _check_dt(dt)
        dmd = make_dmd(self.method, self.svd_rank, self.num_trials, self.trial_size, self.seed)
        if self.method == "exact":
            with quiet_pydmd_warnings():
                dmd.fit(X.T)
            self.eigenvalues_ = np.asarray(dmd.eigs)
            self.continuous_eigenvalues_ = np.log(self.eigenvalues_.astype(complex)) / dt
            self.eigenvalues_std_ = None
        else:
            with quiet_pydmd_warnings():
                dmd.fit(X.T, np.arange(X.shape[0]))
            # Fitted with t in steps: the eigenvalues are per step, exp of them per dt.
            self.continuous_eigenvalues_ = np.asarray(dmd.eigs) / dt
            self.eigenvalues_ = np.exp(np.asarray(dmd.eigs))
            std = dmd.eigenvalues_std
            self.eigenvalues_std_ = None if std is None else np.asarray(std) / dt
        self.modes_ = np.asarray(dmd.modes).T
        self.dmd_ = dmd
        self.dt_ = dt
        self.n_time_, self.n_features_ = X.shape
        return self

    def forecast(self, n_time: int) -> np.ndarray:
        """The DMD reconstruction at ``t_j = j dt``, ``j = 0 .. n_time - 1``, past the fit too.

        Args:
            n_time: Number of snapshots (>= 1), from the first fitted one.

        Returns:
            Snapshots, shape (n_time, n_features), real part of the DMD expansion (real data
            give conjugate pairs, so the imaginary part is rounding).
        """
        if not hasattr(self, "dmd_"):
            raise NotFittedError("This TrajectoryDMD instance is not fitted yet; call 'fit'.")
        n_time = _check_n_time(n_time)
        self.dmd_.dmd_time = {"t0": 0, "tend": n_time - 1, "dt": 1}
        return np.ascontiguousarray(np.real(self.dmd_.reconstructed_data).T)


class ParametricDMDRom(BaseEstimator):
    """Parametric DMD (Andreuzzi, Demo & Rozza 2023) as a reduce-stage reduced-order model.

    All training snapshots are compressed onto one POD basis (uncentred, so that linear
    dynamics stay linear in the coefficients); DMD forecasts each training parameter's
    coefficients (partitioned) or all of them stacked (monolithic), and a regressor fitted per
    forecast time interpolates them at new parameters. The forecast may run past the training
    horizon. The trajectory must be a function of the parameters alone: a random initial state
    per sample is not an input (``uses_initial_state`` is False).

    The defaults (monolithic, optimal hard threshold, POD energy ``1 - 1e-8``) did best of the
    settings in ``benchmarks/rom_dmd.py``: on Burgers at twice the training horizon 0.64% mean
    error, where partitioned DMD gave 4.6% and POD energy ``1 - 1e-5`` 4.5%; without
    truncation (``svd_rank=-1``) Kuramoto-Sivashinsky was off by 20% already inside the
    training horizon (0.22% with the threshold).

    Args:
        svd_rank: DMD truncation, PyDMD's convention (see ``TrajectoryDMD``).
        pod_rank: POD modes kept; None selects the rank by ``energy``.
        energy: Energy fraction the POD keeps when ``pod_rank`` is None, in (0, 1].
        interpolator: ``"rbf"`` (``pdeflow.tasks.rom.RBF``, thin-plate spline) or ``"gpr"``
            (``pdeflow.tasks.rom.GPR``'s kernel, fitted once to all training times).
        dmd: ``"exact"`` (exact DMD) or ``"bop"`` (BOP-DMD's mean forecast).
        partitioned: One DMD per training parameter (True) or one DMD of all training
            parameters' coefficients stacked (False, "monolithic").
        num_trials, trial_size, seed: BOP-DMD bagging, as in ``TrajectoryDMD``.

    Attributes:
        pod_: The fitted POD (rank ``pod_.rank_``).
        pdmd_: The fitted PyDMD ``ParametricDMD``.
        params_: Training parameters, shape (n_train, n_params).
        coefficients_: Training POD coefficients, shape (n_train, n_time, pod rank).
        dt_: Time between snapshots, in time units.
        n_params_, n_time_, n_features_: The training shapes.
    """

    uses_initial_state = False

    def __init__(
        self,
        svd_rank: int | float = 0,
        pod_rank: int | None = None,
        energy: float = 0.99999999,
        interpolator: str = "rbf",
        dmd: str = "exact",
        partitioned: bool = False,
        num_trials: int = 0,
        trial_size: float = 0.6,
        seed: int = 0,
    ):
        self.svd_rank = svd_rank
        self.pod_rank = pod_rank
        self.energy = energy
        self.interpolator = interpolator
        self.dmd = dmd
        self.partitioned = partitioned
        self.num_trials = num_trials
        self.trial_size = trial_size
        self.seed = seed

    def fit(
        self, params: np.ndarray, trajectories: np.ndarray, *, dt: float = 1.0, **context: Any
    ) -> ParametricDMDRom:
        """Fit the POD of all snapshots, then the DMD(s) of the training coefficients.

        Args:
            params: Parameters in the unit cube, shape (n_train, n_params), n_train >= 2.
            trajectories: Solutions, shape (n_train, n_time, n_features), n_time >= 3.
            dt: Time between snapshots (> 0), in time units.
            **context: Further reduce-stage context (the PDE, the store's POD); not used.

        Returns:
            self, fitted.
        """
        params, trajectories = self._check_fit(params, trajectories)
        n_train, n_time, n_features = trajectories.shape
        snapshots = trajectories.reshape(n_train * n_time, n_features)
        pod = POD(rank=self.pod_rank, energy=self.energy, center=False).fit(snapshots)
        coefficients = pod.transform(snapshots).reshape(n_train, n_time, pod.rank_)
        return self._build(pod, params, coefficients, _check_dt(dt))

    def _check_fit(self, params: Any, trajectories: Any) -> tuple[np.ndarray, np.ndarray]:
        _check_svd_rank(self.svd_rank)
        _check_bagging(self.dmd, self.num_trials, self.trial_size, name="dmd")
        if not isinstance(self.partitioned, bool):
            raise ValueError(f"partitioned must be True or False, got {self.partitioned!r}")
        if self.interpolator not in INTERPOLATORS:
            raise ValueError(
                f"interpolator must be one of {sorted(INTERPOLATORS)}, got {self.interpolator!r}"
            )
        params = _finite("params", params, 2, "(n_train, n_params)")
        trajectories = _finite("trajectories", trajectories, 3, "(n_train, n_time, n_features)")
        if len(trajectories) != len(params) or len(params) < 2:
            raise ValueError(
                f"params and trajectories must hold the same n_train >= 2 samples, got "
                f"{len(params)} and {len(trajectories)}"
            )
        if trajectories.shape[1] < 3:
            raise ValueError(f"trajectories need n_time >= 3, got {trajectories.shape[1]}")
        return params, trajectories

    def _build(
        self, pod: POD, params: np.ndarray, coefficients: np.ndarray, dt: float
    ) -> ParametricDMDRom:
        """Fit PyDMD's ParametricDMD on POD coefficients (n_train, n_time, rank)."""
        n_train, n_time, _ = coefficients.shape
        seeds = np.random.SeedSequence(self.seed).spawn(n_train if self.partitioned else 1)
        dmds = [
            make_dmd(self.dmd, self.svd_rank, self.num_trials, self.trial_size, s) for s in seeds
        ]
        pdmd = ParametricDMD(
            dmds if self.partitioned else dmds[0],
            PODSpace(pod),
            self._approximation(params, coefficients),
            dmd_fit_args=(np.arange(n_time),) if self.dmd == "bop" else None,
        )
        with quiet_pydmd_warnings():
            pdmd.fit(np.ascontiguousarray(coefficients.transpose(0, 2, 1)), params)
        self.pod_ = pod
        self.pdmd_ = pdmd
        self.params_ = params
        self.coefficients_ = coefficients
        self.dt_ = dt
        self.n_params_ = params.shape[1]
        self.n_time_ = n_time
        self.n_features_ = pod.n_features_in_
        return self

    def _approximation(self, params: np.ndarray, coefficients: np.ndarray) -> Any:
        if self.interpolator == "rbf":
            return RealRegressor(RBF())
        gpr = GPR().fit(params, coefficients.reshape(len(params), -1))
        return SharedKernelGPR(gpr)

    def _check_fitted(self) -> None:
        if not hasattr(self, "pdmd_"):
            raise NotFittedError("This ParametricDMDRom instance is not fitted yet; call 'fit'.")

    def predict(
        self,
        params: np.ndarray,
        initial_states: np.ndarray | None = None,
        n_time: int | None = None,
    ) -> np.ndarray:
        """Forecast trajectories at new parameters.

        Args:
            params: Parameters in the unit cube, shape (n, n_params).
            initial_states: Ignored (``uses_initial_state`` is False); accepted for the
                reduce stage's common call.
            n_time: Snapshots to forecast, ``t_j = j dt`` for ``j < n_time``; default the
                training length, and it may exceed it (the forecast past the horizon).

        Returns:
            Trajectories, shape (n, n_time, n_features), float64.
        """
        self._check_fitted()
        params = _finite("params", params, 2, "(n, n_params)")
        if params.shape[1] != self.n_params_:
            raise ValueError(f"params must have shape (n, {self.n_params_}), got {params.shape}")
        n_time = self.n_time_ if n_time is None else _check_n_time(n_time)
        self.pdmd_.dmd_time = {"t0": 0, "tend": n_time - 1, "dt": 1}
        self.pdmd_.parameters = params
        out = np.real(self.pdmd_.reconstructed_data)  # (n, n_features, n_time)
        return np.ascontiguousarray(out.transpose(0, 2, 1))

    def projection_errors(self, trajectories: np.ndarray) -> np.ndarray:
        """Per-sample relative error of the POD projection alone, the floor under ``predict``.

        Args:
            trajectories: Solutions, shape (n, n_time, n_features).

        Returns:
            ``||u - P(u)||_F / ||u||_F`` over time and space, shape (n,).
        """
        self._check_fitted()
        u = _finite("trajectories", trajectories, 3, "(n, n_time, n_features)")
        if u.shape[2] != self.n_features_:
            raise ValueError(
                f"trajectories must have shape (n, n_time, {self.n_features_}), got {u.shape}"
            )
        flat = u.reshape(-1, self.n_features_)
        residual = flat - self.pod_.inverse_transform(self.pod_.transform(flat))
        norms = np.linalg.norm(u.reshape(len(u), -1), axis=1)
        if np.any(norms == 0):
            raise ValueError("a trajectory is all zeros; its relative error is undefined")
        return np.linalg.norm(residual.reshape(len(u), -1), axis=1) / norms

    def to_arrays(self) -> tuple[dict[str, np.ndarray], dict]:
        """The fitted state: POD basis, training parameters and coefficients, and the settings.

        PyDMD's objects hold much internal state, so the DMDs are not stored: ``from_arrays``
        refits them on the stored coefficients, the same computation as ``fit`` on the same
        inputs, so predictions repeat exactly. The arrays are small: (n_train, n_time, rank)
        coefficients and a (rank, n_features) basis.

        Returns:
            Arrays ``modes``, ``singular_values``, ``params``, ``coefficients``; attrs
            ``settings`` (``get_params()``) and ``dt``.
        """
        self._check_fitted()
        arrays = {
            "modes": self.pod_.modes_,
            "singular_values": self.pod_.singular_values_,
            "params": self.params_,
            "coefficients": self.coefficients_,
        }
        return arrays, {"settings": self.get_params(), "dt": self.dt_}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], attrs: dict) -> ParametricDMDRom:
        """The fitted model from ``to_arrays``' output (the DMDs refitted, see there)."""
        modes = np.asarray(arrays["modes"], dtype=float)
        pod = POD.from_svd(arrays["singular_values"], modes, None, rank=modes.shape[0])
        rom = cls(**attrs["settings"])
        coefficients = np.asarray(arrays["coefficients"], dtype=float)
        return rom._build(pod, np.asarray(arrays["params"], dtype=float), coefficients,
                          _check_dt(attrs["dt"]))  # fmt: skip
