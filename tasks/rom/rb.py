"""Certified reduced basis for affinely parametrised, coercive, linear elliptic problems.

For ``A(mu) u(mu) = f`` with ``A(mu) = sum_q mu_q A_q`` (each ``A_q`` symmetric positive
semi-definite, ``mu_q > 0``), the reduced basis method (Maday, Patera & Turinici 2002; Prud'homme
et al. 2002, J. Fluids Eng. 124; Rozza, Huynh & Patera 2008, Arch. Comput. Methods Eng. 15)
approximates ``u(mu)`` by the Galerkin projection ``u_N(mu) = V c(mu)`` onto the span of truth
solutions at greedily chosen parameters, and certifies it with the residual-based bound

    ||u(mu) - u_N(mu)||_X <= Delta(mu) = ||r(mu)||_X' / alpha_LB(mu),

where ``||v||_X = sqrt(v^T X v)``, ``X = A(mu_ref)``, ``r(mu) = f - A(mu) u_N(mu)`` and
``alpha_LB`` is the min-theta lower bound of the coercivity constant. The weak greedy
(Veroy, Prud'homme, Rovas & Patera 2003, AIAA 2003-3847; Binev et al. 2011, SIAM J. Math. Anal.
43) adds the truth solution at the training parameter with the largest relative bound.

Offline costs depend on the truth size ``n_dofs``; online, a parameter costs O(Q N^2 + N^3)
for the RB solve and O(Q^2 N^2) for ``||r||_X'``, whatever ``n_dofs``. The dual norm comes
from an X-orthonormal basis of the residual's Riesz representers, never from the full
residual and never as the cancelling quadratic form ``theta^T G theta`` (Buhr, Engwer,
Ohlberger & Rave 2014; see ``rb_affine``), so the bound stays meaningful down to ~1e-14 of
``||f||_X'`` instead of ~1e-8.

Parameters are physical (``mu``, e.g. in [0.1, 1]^Q), not mapped to the unit cube; the
reduce stage converts.
"""

from __future__ import annotations

import numbers
import time
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError

from pdeflow.tasks.rom.rb_affine import (
    OfflineState,
    coercivity_lower_bound,
    residual_dual_norms,
    solve_reduced,
)

__all__ = ["ReducedBasis"]

# Arrays of the fitted state (to_arrays); all but "basis" are of the reduced size only.
ONLINE_ARRAYS = ("reduced_matrices", "reduced_rhs", "basis_gram", "residual_factor", "mu_ref")
FIT_ARRAYS = ("greedy_errors", "basis_parameters")


def _check_int(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


class ReducedBasis(BaseEstimator):
    """Certified reduced basis with a weak greedy and a residual-based error bound.

    Args:
        n_basis: Largest basis size ``N`` the greedy builds, >= 1. Defaults to 30.
        tol: The greedy stops once the largest relative bound ``Delta / ||u_N||_X`` over the
            training set is at most ``tol``, in (0, 1). Defaults to 1e-6.
        training_size: Random parameters added to the ``fit`` parameters to make the greedy's
            training set, each component uniform on ``operator.mu_range``, >= 0. Defaults
            to 1000.
        seed: Seed of the training set's ``numpy.random.Generator``, >= 0. Defaults to 0.

    Attributes:
        basis_: X-orthonormal basis ``V``, float64 (n_dofs, N), every unknown.
        n_outputs_: The first ``n_outputs_`` unknowns are the predicted field (the operator's
            ``n_outputs``; the rest, e.g. interface values, are auxiliary).
        reduced_matrices_: ``V^T A_q V``, (Q, N, N); ``reduced_rhs_``: ``V^T f``, (N,).
        basis_gram_: ``V^T X V`` (N, N), the identity to round-off.
        residual_factor_: ``C`` (M, 1 + Q N), ``||r(mu)||_X' = ||C theta(mu)||_2``.
        mu_ref_: Reference parameter (Q,) of the energy norm.
        n_basis_: Basis size ``N`` reached.
        greedy_errors_: Largest relative bound over the training set with 1 .. N basis
            vectors, (N,), non-increasing in practice (not in theory).
        basis_parameters_: The greedy's parameters, (N, Q), in the order chosen.
        training_size_: Size of the training set used.
        offline_seconds_: Wall time of ``fit``, s.
        operator_: The operator ``fit`` was given (for ``energy_errors``; never used online,
            and None after ``from_arrays``).
    """

    uses_initial_state = False

    def __init__(
        self, n_basis: int = 30, tol: float = 1e-6, training_size: int = 1000, seed: int = 0
    ) -> None:
        self.n_basis = n_basis
        self.tol = tol
        self.training_size = training_size
        self.seed = seed

    # --- offline ----------------------------------------------------------------------------

    def _check_settings(self) -> None:
        _check_int("n_basis", self.n_basis, 1)
        _check_int("training_size", self.training_size, 0)
        _check_int("seed", self.seed, 0)
        tol = self.tol
        if isinstance(tol, bool) or not isinstance(tol, numbers.Real) or not 0 < tol < 1:
            raise ValueError(f"tol must be a number in (0, 1), got {tol!r}")

    def fit(
        self,
        params: np.ndarray,
        trajectories: np.ndarray | None = None,
        *,
        operator: Any = None,
        **context: Any,
    ) -> ReducedBasis:
        """Build the basis by the weak greedy over ``params`` plus random training parameters.

        Args:
            params: Physical parameters ``mu`` (n, Q), finite and > 0 (n may be 0).
            trajectories: The truth solutions at ``params`` (n, 1, n_outputs), or None;
                only their shape is checked (the greedy solves the truth where it needs it).
            operator: The affine operator (``matrices``, ``rhs``, ``mu_ref``, ``mu_range``,
                ``n_outputs``, ``assemble``, ``solve``, ``lift``), e.g.
                ``pdeflow.tasks.pdes.thermal_block.affine_operator(blocks, n)``.
            **context: Other context of the reduce stage, ignored.

        Returns:
            self.

        Raises:
            ValueError: Invalid settings, parameters, trajectories or operator.
        """
        t0 = time.perf_counter()
        self._check_settings()
        if operator is None or not hasattr(operator, "matrices"):
            raise ValueError("operator: fit needs the affine operator (matrices, rhs, mu_ref)")
        q = len(operator.matrices)
        mu = self._check_params(params, q, allow_empty=True)
        n_outputs = getattr(operator, "n_outputs", None) or operator.rhs.shape[0]
        shape = np.shape(trajectories) if trajectories is not None else None
        if shape is not None and (len(shape) != 3 or shape[:3:2] != (len(mu), n_outputs)):
            raise ValueError(
                f"trajectories must have shape ({len(mu)}, n_time, {n_outputs}) to match "
                f"params and the operator's outputs, got {shape}"
            )
        low, high = operator.mu_range
        rng = np.random.default_rng(self.seed)
        train = np.vstack([mu, rng.uniform(low, high, (self.training_size, q))])
        if len(train) == 0:
            raise ValueError("params: no training parameters (params empty, training_size 0)")
        state = OfflineState(operator, self.n_basis)
        errors, chosen = self._greedy(state, train, np.asarray(operator.mu_ref, float))
        self._set_state(
            {**state.reduced(), "basis": state.basis.vectors[: state.size].T.copy()},
            np.asarray(operator.mu_ref, dtype=np.float64),
        )
        self.greedy_errors_ = np.asarray(errors)
        self.basis_parameters_ = np.asarray(chosen).reshape(-1, q)
        self.training_size_ = len(train)
        self.n_outputs_ = int(n_outputs)
        self.operator_ = operator
        self.offline_seconds_ = time.perf_counter() - t0
        return self

    def _greedy(
        self, state: OfflineState, train: np.ndarray, mu_ref: np.ndarray
    ) -> tuple[list[float], list[np.ndarray]]:
        """The weak greedy; returns the max relative bound after each N and the parameters."""
        # With no basis every bound is ||f||_X' / alpha_LB: start where coercivity is weakest.
        pick = int(np.argmin(coercivity_lower_bound(train, mu_ref)))
        errors: list[float] = []
        chosen: list[np.ndarray] = []
        while state.size < self.n_basis:
            if not state.add_snapshot(state.truth(train[pick])):
                break  # the truth is in the span already: the bounds are at round-off
            chosen.append(train[pick].copy())
            reduced = state.reduced()
            c = solve_reduced(train, reduced["reduced_matrices"], reduced["reduced_rhs"])
            bound = residual_dual_norms(train, c, reduced["residual_factor"])
            norm = np.sqrt(np.einsum("pi,ij,pj->p", c, reduced["basis_gram"], c))
            relative = bound / coercivity_lower_bound(train, mu_ref) / norm
            errors.append(float(relative.max()))
            if errors[-1] <= self.tol:
                break
            pick = int(np.argmax(relative))
        return errors, chosen

    def _set_state(self, arrays: dict[str, np.ndarray], mu_ref: np.ndarray) -> None:
        self.basis_ = arrays["basis"]
        self.reduced_matrices_ = arrays["reduced_matrices"]
        self.reduced_rhs_ = arrays["reduced_rhs"]
        self.basis_gram_ = arrays["basis_gram"]
        self.residual_factor_ = arrays["residual_factor"]
        self.mu_ref_ = mu_ref
        self.n_basis_ = int(self.reduced_rhs_.size)

    # --- online -----------------------------------------------------------------------------

    def _check_fitted(self) -> None:
        if not hasattr(self, "reduced_rhs_"):
            raise NotFittedError("ReducedBasis is not fitted; call fit or from_arrays first")

    @staticmethod
    def _check_params(params: Any, q: int, allow_empty: bool = False) -> np.ndarray:
        mu = np.asarray(params, dtype=np.float64)
        if mu.ndim != 2 or mu.shape[1] != q or (mu.shape[0] == 0 and not allow_empty):
            raise ValueError(f"params must have shape (n_samples, {q}), got {mu.shape}")
        if not np.all(np.isfinite(mu) & (mu > 0)):
            raise ValueError("params must be finite and > 0 (physical mu, not the unit cube)")
        return mu

    def _size(self, n_basis: int | None) -> int:
        if n_basis is None:
            return self.n_basis_
        if (
            isinstance(n_basis, bool)
            or not isinstance(n_basis, numbers.Integral)
            or not 1 <= n_basis <= self.n_basis_
        ):
            raise ValueError(f"n_basis must be an integer in [1, {self.n_basis_}], got {n_basis!r}")
        return int(n_basis)

    def solve_reduced(self, params: np.ndarray, *, n_basis: int | None = None) -> np.ndarray:
        """RB coefficients ``c(mu)`` (n, N) on the first ``n_basis`` basis vectors (default:
        all ``n_basis_``); O(Q N^2 + N^3) per parameter, never touching a full-size array."""
        self._check_fitted()
        mu = self._check_params(params, self.mu_ref_.size)
        n = self._size(n_basis)
        return solve_reduced(mu, self.reduced_matrices_[:, :n, :n], self.reduced_rhs_[:n])

    def _bounds(self, mu: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """``Delta(mu)`` and ``||u_N(mu)||_X``, each (n_params,), from reduced arrays only."""
        c = solve_reduced(mu, self.reduced_matrices_[:, :n, :n], self.reduced_rhs_[:n])
        dual = residual_dual_norms(mu, c, self.residual_factor_)
        norm = np.sqrt(np.einsum("pi,ij,pj->p", c, self.basis_gram_[:n, :n], c))
        return dual / coercivity_lower_bound(mu, self.mu_ref_), norm

    def error_bound(self, params: np.ndarray, *, n_basis: int | None = None) -> np.ndarray:
        """``Delta(mu) = ||r(mu)||_X' / alpha_LB(mu)`` (n,): an upper bound on the energy-norm
        error ``||u(mu) - u_N(mu)||_X`` (rigorous up to round-off), O(Q^2 N^2) per parameter."""
        self._check_fitted()
        mu = self._check_params(params, self.mu_ref_.size)
        return self._bounds(mu, self._size(n_basis))[0]

    def error_estimate(self, params: np.ndarray, *, n_basis: int | None = None) -> np.ndarray:
        """Relative error bound ``Delta(mu) / ||u_N(mu)||_X`` (n,), from reduced arrays only.

        It bounds ``||u - u_N||_X / ||u_N||_X`` rigorously. The true relative error
        ``||u - u_N||_X / ||u||_X`` is bounded by ``eta / (1 - eta)`` where this value ``eta``
        is below 1 (as ``||u||_X >= ||u_N||_X - Delta``), so for small ``eta`` the value itself
        bounds it to first order: the two differ by a factor ``1 + O(eta)``.
        """
        self._check_fitted()
        mu = self._check_params(params, self.mu_ref_.size)
        bound, norm = self._bounds(mu, self._size(n_basis))
        return bound / norm

    def predict(
        self,
        params: np.ndarray,
        initial_states: np.ndarray | None = None,
        *,
        n_basis: int | None = None,
    ) -> np.ndarray:
        """The RB approximations ``u_N(mu) = V c(mu)``, one frame: (n, 1, n_outputs_) float64
        (the output unknowns; O(n_outputs_ N) per parameter for this lift to the grid).

        Args:
            params: Physical parameters (n, Q), finite and > 0.
            initial_states: Unused (the problem has no initial state).
            n_basis: Use the first ``n_basis`` basis vectors (default: all).
        """
        c = self.solve_reduced(params, n_basis=n_basis)
        return (c @ self.basis_[: self.n_outputs_, : c.shape[1]].T)[:, None, :]

    def energy_errors(
        self,
        params: np.ndarray,
        truth: np.ndarray,
        *,
        n_basis: int | None = None,
        operator: Any = None,
        relative: bool = True,
    ) -> np.ndarray:
        """True energy-norm errors ``||u - u_N||_X`` (over ``||u||_X`` if ``relative``), (n,).

        An offline check: it needs the truth and ``X = A(mu_ref)`` (from ``operator``, default
        the one given to ``fit``).

        Args:
            params: Physical parameters (n, Q).
            truth: Truth solutions (n, n_dofs), or their outputs (n, n_outputs_) (the
                stored field; the auxiliary unknowns are then solved from their own rows,
                ``operator.lift``), either with or without a time axis of 1.
            n_basis: Basis size (default: all).
            operator: The affine operator; needed after ``from_arrays``.
            relative: Divide by ``||u||_X``. Defaults to True.
        """
        operator = getattr(self, "operator_", None) if operator is None else operator
        if operator is None:
            raise ValueError("operator: energy_errors needs the affine operator for X")
        mu = self._check_params(params, self.mu_ref_.size)
        c = self.solve_reduced(mu, n_basis=n_basis)
        u_n = c @ self.basis_[:, : c.shape[1]].T
        truth = np.asarray(truth, dtype=np.float64).reshape(len(mu), -1)
        if truth.shape[1] == self.n_outputs_ < u_n.shape[1]:
            truth = operator.lift(mu, truth)
        if truth.shape != u_n.shape:
            raise ValueError(
                f"truth must have shape ({len(mu)}, {u_n.shape[1]}) or ({len(mu)}, "
                f"{self.n_outputs_}), with or without a time axis of 1; got {truth.shape}"
            )
        x = operator.assemble(self.mu_ref_)
        err = truth - u_n
        out = np.sqrt(np.einsum("pi,pi->p", err, (x @ err.T).T))
        if relative:
            out /= np.sqrt(np.einsum("pi,pi->p", truth, (x @ truth.T).T))
        return out

    # --- persistence ------------------------------------------------------------------------

    def to_arrays(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """The fitted state: the basis and the reduced arrays, plus JSON-able attrs.

        Returns:
            ``arrays``: ``basis`` (n_dofs, N), ``reduced_matrices`` (Q, N, N), ``reduced_rhs``
            (N,), ``basis_gram`` (N, N), ``residual_factor`` (M, 1 + Q N), ``mu_ref`` (Q,),
            ``greedy_errors`` (N,), ``basis_parameters`` (N, Q); ``attrs``: the settings,
            ``n_basis_``, ``training_size_`` and ``offline_seconds_``.
        """
        self._check_fitted()
        arrays = {
            "basis": self.basis_,
            "reduced_matrices": self.reduced_matrices_,
            "reduced_rhs": self.reduced_rhs_,
            "basis_gram": self.basis_gram_,
            "residual_factor": self.residual_factor_,
            "mu_ref": self.mu_ref_,
            "greedy_errors": self.greedy_errors_,
            "basis_parameters": self.basis_parameters_,
        }
        attrs = {
            "params": self.get_params(),
            "n_basis_": self.n_basis_,
            "n_outputs_": self.n_outputs_,
            "training_size_": int(self.training_size_),
            "offline_seconds_": float(self.offline_seconds_),
        }
        return {k: np.array(v, dtype=np.float64) for k, v in arrays.items()}, attrs

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], attrs: dict[str, Any]) -> ReducedBasis:
        """A fitted instance from ``to_arrays`` output, without the operator."""
        missing = sorted({"basis", *ONLINE_ARRAYS, *FIT_ARRAYS} - set(arrays))
        if missing:
            raise ValueError(f"arrays: missing {missing}")
        model = cls(**attrs["params"])
        arrays = {k: np.asarray(v, dtype=np.float64) for k, v in arrays.items()}
        model._set_state(arrays, arrays["mu_ref"])
        model.greedy_errors_ = arrays["greedy_errors"]
        model.basis_parameters_ = arrays["basis_parameters"]
        model.training_size_ = int(attrs["training_size_"])
        model.n_outputs_ = int(attrs["n_outputs_"])
        model.offline_seconds_ = float(attrs["offline_seconds_"])
        model.operator_ = None
        return model
