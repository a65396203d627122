r"""POD-Galerkin reduced model of a 1D spectral PDE, with DEIM for its nonlinear term.

An intrusive ROM: the PDE's own semi-discrete form :math:`u' = L(\mu) u + B(\mu) g(u)`
(``pdeflow.tasks.pdes.semidiscrete``, the solver's multipliers and dealiasing) is projected
onto a POD basis ``V`` of the training trajectories, :math:`u \approx V^T a`:

.. math::

    a' = V L V^T a + V B\, g(V^T a)  \quad\text{(POD-Galerkin)},

    a' = V L V^T a + V B U^T (P^T U^T)^{-1} g(P^T V^T a) \quad\text{(with DEIM)},

with ``U`` the POD basis of the nonlinear snapshots :math:`g(u)` and ``P`` its ``m`` DEIM points
(Chaturantabut & Sorensen 2010, SIAM J. Sci. Comput. 32(5), 2737-2764). Without DEIM a step
still costs O(n r) (``g`` on the whole grid); with it, O(r^2 + r m), whatever the grid. ``L`` and
``B`` are sums of terms times monomials of the coefficients; each term is reduced once, so a new
parameter costs only a weighted sum of small matrices.

Time stepping is ETDRK4 (Cox & Matthews 2002) with the reduced linear part exact
(``pdeflow.tasks.rom.exponential``), on the solver's own step: the projected diffusion is as stiff
as the modes the basis holds (``nu k^2 dt`` ~ 8 for Burgers' 40th mode), beyond explicit RK4's
limit of 2.79, while the exponential treats it exactly; the same scheme and step as the data
leave the projection and DEIM as the only errors. ``integrator="bdf"`` (``scipy``'s variable
order BDF with the exact Jacobian) integrates the same reduced system adaptively
(``pdeflow.tasks.rom.reduced``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError

from pdeflow.tasks.pdes import get_pde
from pdeflow.tasks.pdes.semidiscrete import SemiDiscrete, Term
from pdeflow.tasks.pdes.spectral1d import PeriodicSpectral1D
from pdeflow.tasks.rom.deim import deim_error_factor, deim_indices
from pdeflow.tasks.rom.pod import POD
from pdeflow.tasks.rom.reduced import INTEGRATORS, ReducedSystem, integrate

__all__ = ["INTEGRATORS", "PODGalerkin"]

# Singular values below this fraction of the largest are rounding: such POD or DEIM modes carry
# no information, and DEIM on them would pick points by noise.
_RANK_TOL = 1e-12
_ARRAYS = ("basis", "linear_ops", "gain_ops", "point_basis", "points", "polynomial", "times")
# The fitted attributes kept as JSON, and how each is read back.
_ATTRS = {
    "dt": float,
    "steps_per_frame": int,
    "coefficient_names": list,
    "sampled": list,
    "ranges": lambda ranges: {c: list(r) for c, r in ranges.items()},
    "linear_powers": lambda powers: [dict(p) for p in powers],
    "gain_powers": lambda powers: [dict(p) for p in powers],
    "pde": str,
    "n_features": int,
    "scale": float,
    "deim_factor": lambda f: math.nan if f is None else float(f),
}


def _check_int(name: str, value: Any, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        extra = "None or " if allow_none else ""
        raise ValueError(f"{name} must be {extra}an integer >= 1, got {value!r}")


def _modes(snapshots: np.ndarray, rank: int, name: str) -> np.ndarray:
    """The leading ``rank`` POD modes (uncentred), (rank, n); ``name`` for the error."""
    limit = min(snapshots.shape)
    if rank > limit:
        raise ValueError(f"{name} must be <= {limit} (snapshots x grid points), got {rank}")
    pod = POD(rank=rank, center=False).fit(snapshots)
    s = pod.singular_values_
    if s[rank - 1] <= _RANK_TOL * s[0]:
        numerical = int(np.sum(s > _RANK_TOL * s[0]))
        raise ValueError(f"{name}={rank} exceeds the snapshots' numerical rank {numerical}")
    return pod.modes_


def _solver(pde, grid, dt, columns: dict[str, float], constants) -> PeriodicSpectral1D:
    """The PDE instance whose semi-discrete form is reduced (see ``PODGalerkin.fit``)."""
    if isinstance(pde, PeriodicSpectral1D):
        return pde
    cls = get_pde(pde) if isinstance(pde, str) else pde
    if not (isinstance(cls, type) and issubclass(cls, PeriodicSpectral1D)):
        raise ValueError(f"pde must be a 1D spectral PDE (name, class or instance), got {pde!r}")
    sampled = {c: v for c, v in columns.items() if c in cls.info.coefficients}
    try:
        return cls(grid, dt=dt, cfl_max=math.inf, **{**(constants or {}), **sampled})
    except TypeError as err:
        raise ValueError(f"pde {cls.info.name}: {err}; pass its value in constants") from err


def _time_grid(times: np.ndarray, dt: float, n_time: int) -> tuple[np.ndarray, float, int]:
    """Frame times (n_time,), the step ``h`` <= dt and the steps per frame."""
    times = np.asarray(times, dtype=np.float64)
    if times.shape != (n_time,) or n_time < 2 or not np.all(np.isfinite(times)):
        raise ValueError(f"times must be {n_time} >= 2 finite frame times, got {times.shape}")
    gaps = np.diff(times)
    if gaps[0] <= 0 or np.abs(gaps - gaps[0]).max() > 1e-9 * gaps[0]:
        raise ValueError("times must be increasing and equally spaced")
    if not (isinstance(dt, float | int) and 0 < dt < math.inf):
        raise ValueError(f"dt must be a finite number > 0, got {dt!r}")
    # The generate stage's rule: the frame interval split into equal steps of at most dt.
    steps = max(1, math.ceil(gaps[0] / dt - 1e-9))
    return times, float(gaps[0] / steps), steps


def _reduce_terms(terms, fixed: Mapping[str, np.ndarray], reduce) -> tuple[list, np.ndarray]:
    """Reduced matrices per distinct monomial of the sampled coefficients.

    Factors of coefficients not sampled (``fixed``) are folded into the matrices.

    Returns:
        The monomials (list of {name: power}) and the matrices stacked, (n_terms, ...).
    """
    merged: dict[tuple, np.ndarray] = {}
    for term in terms:
        constant = Term({c: p for c, p in term.powers.items() if c in fixed}, term.multiplier)
        key = tuple(sorted((c, p) for c, p in term.powers.items() if c not in fixed))
        matrix = float(constant.factor(fixed)[0]) * reduce(term.multiplier)
        merged[key] = merged[key] + matrix if key in merged else matrix
    powers = [dict(key) for key in merged]
    return powers, np.stack(list(merged.values())) if merged else np.zeros((0, 0, 0))


class PODGalerkin(BaseEstimator):
    """POD-Galerkin ROM of a 1D spectral PDE, optionally with DEIM (module docstring).

    Args:
        rank: POD modes of the state, ``r >= 1``.
        deim_points: DEIM points and nonlinear modes ``m >= 1``, or None for the full
            nonlinear term (O(n) per step). Ignored for a linear PDE.
        integrator: ``"etdrk4"`` (fixed step, the solver's) or ``"bdf"`` (adaptive).

    Attributes (after ``fit``):
        basis_: POD modes as rows, (rank, n_features); only for projecting and lifting.
        linear_ops_: Reduced ``L`` per monomial, (n_linear, rank, rank), 1/time.
        gain_ops_: Reduced ``B`` (times ``(P^T U^T)^{-1}`` with DEIM) per monomial,
            (n_gain, rank, m), or (n_gain, rank, n_features) without DEIM.
        point_basis_: The basis at the points where ``g`` is evaluated, (m, rank).
        points_: DEIM points (m,), int; all grid points without DEIM.
        deim_factor_: ``||(P^T U)^{-1}||_2`` of the DEIM error bound (nan without DEIM).
        times_, dt_, steps_per_frame_: Frame times (n_time,), the step and steps per frame.

    Example:
        >>> rom = PODGalerkin(rank=12, deim_points=24).fit(
        ...     nu[:, None], u, pde="burgers", grid=128, dt=0.01, times=t,
        ...     coefficient_names=["nu"])
        >>> u_hat = rom.predict(nu_new[:, None], u_new[:, 0])   # (n, n_time, 128)
    """

    uses_initial_state = True

    def __init__(self, rank: int = 12, deim_points: int | None = 24, integrator: str = "etdrk4"):
        self.rank = rank
        self.deim_points = deim_points
        self.integrator = integrator

    # --- fitting ------------------------------------------------------------------------------

    def _check_settings(self) -> None:
        _check_int("rank", self.rank)
        _check_int("deim_points", self.deim_points, allow_none=True)
        if self.integrator not in INTEGRATORS:
            raise ValueError(f"integrator must be one of {INTEGRATORS}, got {self.integrator!r}")

    def fit(
        self,
        params: np.ndarray,
        trajectories: np.ndarray,
        *,
        pde: str | type | PeriodicSpectral1D,
        grid: Any,
        dt: float,
        times: np.ndarray,
        coefficient_names: Sequence[str],
        constants: Mapping[str, float] | None = None,
    ) -> PODGalerkin:
        """Build the basis, the DEIM points and the reduced operators.

        Args:
            params: PHYSICAL parameter values, (n_samples, n_params); columns named by
                ``coefficient_names``. Columns that are not coefficients of the PDE (e.g. the
                initial state's mode amplitudes ``a1``) are ignored: the initial state is an
                input of :meth:`predict`.
            trajectories: (n_samples, n_time, n_features), one field on ``n_features`` points.
            pde: Registry name, class or instance of a 1D spectral PDE; an instance's values
                are used for the coefficients not sampled.
            grid: Points (int) or ``Grid`` of the data (ignored with an instance).
            dt: The solver's step (time units); the ROM steps the frame interval in equal
                steps of at most ``dt``, as the generate stage does.
            times: Frame times, (n_time,), equally spaced.
            coefficient_names: Name of each column of ``params``.
            constants: Values of coefficients neither sampled nor defaulted by the PDE.

        Returns:
            self, fitted.
        """
        self._check_settings()
        params, trajectories = _check_data(params, trajectories)
        names = [str(c) for c in coefficient_names]
        if len(names) != params.shape[1]:
            raise ValueError(
                f"coefficient_names must name each of the {params.shape[1]} params columns, "
                f"got {names}"
            )
        solver = _solver(pde, grid, dt, dict(zip(names, params[0], strict=True)), constants)
        info = solver.info
        sampled = [c for c in names if c in info.coefficients]
        semi = solver.semi_discrete()
        if trajectories.shape[2] != semi.n:
            raise ValueError(
                f"trajectories have {trajectories.shape[2]} features but the grid has {semi.n}"
            )
        self.times_, self.dt_, self.steps_per_frame_ = _time_grid(times, dt, trajectories.shape[1])
        snapshots = semi.dealias(trajectories.reshape(-1, semi.n))
        self._fit_operators(semi, snapshots, sampled)
        self.coefficient_names_ = names
        self.sampled_ = sampled
        self.ranges_ = {c: list(info.coefficients[c].range) for c in sampled}
        self.pde_ = semi.name
        self.n_features_ = semi.n
        coefficients = snapshots @ self.basis_.T
        self.scale_ = float(np.sqrt(np.mean(np.sum(coefficients**2, axis=1))))
        return self

    def _fit_operators(self, semi: SemiDiscrete, snapshots: np.ndarray, sampled: list) -> None:
        fixed = {c: v for c, v in semi.coefficients.items() if c not in sampled}
        if any(v.size != 1 for v in fixed.values()):
            raise ValueError("pde: coefficients not sampled must have one value, not per sample")
        basis = _modes(snapshots, int(self.rank), "rank")
        self.basis_ = basis
        self.linear_powers_, self.linear_ops_ = _reduce_terms(
            semi.linear, fixed, lambda mult: basis @ semi.apply(mult, basis).T
        )
        self.polynomial_ = np.asarray(semi.polynomial, dtype=np.float64)
        self.deim_factor_ = math.nan
        if semi.is_linear:
            self.gain_powers_, self.gain_ops_ = [], np.zeros((0, basis.shape[0], 0))
            self.points_, self.point_basis_ = np.zeros(0, np.int64), np.zeros((0, basis.shape[0]))
        elif self.deim_points is None:
            self.gain_powers_, self.gain_ops_ = _reduce_terms(
                semi.gain, fixed, lambda mult: semi.apply_transpose(mult, basis)
            )
            self.points_, self.point_basis_ = np.arange(semi.n), basis.T.copy()
        else:
            nonlinear = _modes(semi.pointwise(snapshots), int(self.deim_points), "deim_points")
            points = deim_indices(nonlinear)
            at_points = nonlinear[:, points].T

            def reduce(mult: np.ndarray) -> np.ndarray:
                return np.linalg.solve(at_points.T, (basis @ semi.apply(mult, nonlinear).T).T).T

            self.gain_powers_, self.gain_ops_ = _reduce_terms(semi.gain, fixed, reduce)
            self.points_, self.point_basis_ = points, basis[:, points].T.copy()
            self.deim_factor_ = deim_error_factor(nonlinear, points)

    # --- prediction ---------------------------------------------------------------------------

    def _check_fitted(self) -> None:
        if not hasattr(self, "linear_ops_"):
            raise NotFittedError("This PODGalerkin instance is not fitted yet; call 'fit' first.")

    def _factors(self, params: np.ndarray, powers: list[dict]) -> np.ndarray:
        """Each monomial per sample, (n_terms, n)."""
        values = {c: params[:, self.coefficient_names_.index(c)] for c in self.sampled_}
        return np.array(
            [Term(p, np.zeros(1)).factor(values) * np.ones(len(params)) for p in powers]
        ).reshape(len(powers), len(params))

    def _check_params(self, params: np.ndarray) -> np.ndarray:
        params = np.asarray(params, dtype=np.float64)
        width = len(self.coefficient_names_)
        if params.ndim != 2 or params.shape[1] != width or not np.all(np.isfinite(params)):
            raise ValueError(f"params must be finite, shape (n, {width}), got {params.shape}")
        for c, (low, high) in self.ranges_.items():
            column = params[:, self.coefficient_names_.index(c)]
            if np.any(column < low) or np.any(column > high):
                raise ValueError(f"params column {c!r} must lie in [{low:g}, {high:g}]")
        return params

    def project(self, states: np.ndarray) -> np.ndarray:
        """Reduced coefficients ``V u`` of states (n, n_features); (n, rank)."""
        self._check_fitted()
        states = np.asarray(states, dtype=np.float64)
        if states.ndim != 2 or states.shape[1] != self.n_features_:
            raise ValueError(
                f"initial_states must have shape (n, {self.n_features_}), got {states.shape}"
            )
        return states @ self.basis_.T

    def lift(self, coefficients: np.ndarray) -> np.ndarray:
        """States ``V^T a`` of coefficients (..., rank); (..., n_features)."""
        self._check_fitted()
        return np.asarray(coefficients) @ self.basis_

    def predict(self, params: np.ndarray, initial_states: np.ndarray | None = None) -> np.ndarray:
        """Trajectories from physical parameters and initial states, on the training times.

        Args:
            params: (n, n_params), physical values, columns as in ``fit``.
            initial_states: (n, n_features), projected onto the basis.

        Returns:
            (n, n_time, n_features) float64.

        Raises:
            BlowUpError: The reduced state became non-finite or grew by > 1e3 (samples named).
        """
        if initial_states is None:
            raise ValueError("initial_states are required: the Galerkin ROM integrates from them")
        return self.lift(self.integrate(params, self.project(initial_states)))

    def integrate(
        self, params: np.ndarray, initial: np.ndarray, n_frames: int | None = None
    ) -> np.ndarray:
        """Integrate the reduced system from reduced initial states; no full-size work with DEIM.

        Args:
            params: (n, n_params), physical values.
            initial: Reduced initial states, (n, rank).
            n_frames: Frames on the training frame spacing (default: the training count; more
                extend the horizon).

        Returns:
            Reduced trajectories, (n, n_frames, rank).
        """
        self._check_fitted()
        params = self._check_params(params)
        initial = np.asarray(initial, dtype=np.float64)
        rank = self.point_basis_.shape[1]
        if initial.shape != (len(params), rank) or not np.all(np.isfinite(initial)):
            raise ValueError(f"initial must be finite, shape ({len(params)}, {rank})")
        n_frames = len(self.times_) if n_frames is None else n_frames
        _check_int("n_frames", n_frames)
        linear = np.einsum(
            "qs,qij->sij",
            self._factors(params, self.linear_powers_),
            self.linear_ops_.reshape(-1, rank, rank),
        )
        gain = None
        if len(self.gain_ops_):
            gain = np.einsum(
                "qs,qij->sij", self._factors(params, self.gain_powers_), self.gain_ops_
            )
        system = ReducedSystem(linear, gain, self.point_basis_, self.polynomial_)
        # A zero start has no scale of its own: 1e-6 of the training data's RMS norm.
        return integrate(
            system,
            initial,
            method=self.integrator,
            h=self.dt_,
            steps_per_frame=self.steps_per_frame_,
            n_frames=n_frames,
            floor=1e-6 * self.scale_,
            label=f"rank {self.rank}, deim_points {self.deim_points}",
        )

    def projection_errors(self, trajectories: np.ndarray) -> np.ndarray:
        """Per-sample ``||u - V^T V u||_F / ||u||_F`` over time and space: the floor, (n,)."""
        self._check_fitted()
        u = np.asarray(trajectories, dtype=np.float64)
        if u.ndim != 3 or u.shape[2] != self.n_features_:
            raise ValueError(f"trajectories must have shape (n, n_time, {self.n_features_})")
        residual = u - (u @ self.basis_.T) @ self.basis_
        norms = np.linalg.norm(u.reshape(len(u), -1), axis=1)
        return np.linalg.norm(residual.reshape(len(u), -1), axis=1) / norms

    # --- storage ------------------------------------------------------------------------------

    def to_arrays(self) -> tuple[dict[str, np.ndarray], dict]:
        """The fitted state: reduced operators, the basis for lifting, and JSON-able attrs."""
        self._check_fitted()
        arrays = {name: np.asarray(getattr(self, f"{name}_")) for name in _ARRAYS}
        attrs = {name: getattr(self, f"{name}_") for name in _ATTRS}
        if math.isnan(attrs["deim_factor"]):
            attrs["deim_factor"] = None  # JSON has no NaN
        return arrays, {**self.get_params(), **attrs}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], attrs: Mapping) -> PODGalerkin:
        """A fitted instance from :meth:`to_arrays`' output, without refitting."""
        rom = cls(**{key: attrs[key] for key in ("rank", "deim_points", "integrator")})
        rom._check_settings()
        for name in _ARRAYS:
            setattr(rom, f"{name}_", np.asarray(arrays[name]))
        for name, convert in _ATTRS.items():
            setattr(rom, f"{name}_", convert(attrs[name]))
        rom.points_ = rom.points_.astype(np.int64)
        return rom


def _check_data(params: np.ndarray, trajectories: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    params = np.asarray(params, dtype=np.float64)
    trajectories = np.asarray(trajectories, dtype=np.float64)
    if params.ndim != 2 or not np.all(np.isfinite(params)):
        raise ValueError(f"params must be finite, shape (n_samples, n_params), got {params.shape}")
    if trajectories.ndim != 3 or len(trajectories) != len(params):
        raise ValueError(
            f"trajectories must have shape ({len(params)}, n_time, n_features), "
            f"got {trajectories.shape}"
        )
    if not np.all(np.isfinite(trajectories)):
        raise ValueError("trajectories contain NaN or inf")
    return params, trajectories
