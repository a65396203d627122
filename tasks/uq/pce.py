"""Polynomial chaos expansion by least-squares regression (point collocation), via chaospy.

The model is expanded in polynomials orthonormal for the joint law of the independent inputs,
``f(X) ~ sum_alpha c_alpha Psi_alpha(X)`` over the multi-indices ``|alpha| <= p`` (total degree;
``binom(p + d, d)`` terms), with ``E[Psi_alpha Psi_beta] = delta_alpha,beta`` (Wiener-Askey:
Legendre for uniform, Hermite for normal inputs; Xiu & Karniadakis 2002). The coefficients are
the least-squares fit to model runs (Berveiller, Sudret & Lemaire 2006), so orthonormality
turns the coefficients into moments and Sobol' indices with no further sampling (Sudret 2008):

    mean = c_0,   Var = sum_{alpha != 0} c_alpha^2,
    S1_i = sum_{alpha in A_i} c_alpha^2 / Var,  A_i = {alpha: alpha_i > 0, alpha_j = 0, j != i},
    ST_i = sum_{alpha: alpha_i > 0} c_alpha^2 / Var.

With ``degree="cv"`` the degree is the one of least K-fold cross-validation error.

References:
    Xiu, D. & Karniadakis, G. E. (2002). The Wiener-Askey polynomial chaos for stochastic
    differential equations. SIAM Journal on Scientific Computing 24, 619-644.
    Berveiller, M., Sudret, B. & Lemaire, M. (2006). Stochastic finite element: a non intrusive
    approach by regression. European Journal of Computational Mechanics 15, 81-92.
    Sudret, B. (2008). Global sensitivity analysis using polynomial chaos expansions.
    Reliability Engineering & System Safety 93, 964-979.
"""

from __future__ import annotations

import logging

import numpy as np
from numpy.typing import ArrayLike
from scipy.stats import qmc

from pdeflow.tasks.uq.morris import as_bounds


def chaospy_module():
    """chaospy, imported on first use and without its side effect on logging.

    chaospy 4.3 calls ``logging.basicConfig(level=DEBUG, filename=os.devnull)`` when imported,
    which gives the root logger a file handler to nowhere if it has none yet. Prefect then sees
    a user handler on the root and leaves its console handler out, so every warning a stage
    logged (a damaged block recomputed, a checkpoint skipped) vanished from the CLI. The root's
    handlers and level are put back as they were.
    """
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    import chaospy

    for handler in [h for h in root.handlers if h not in handlers]:
        root.removeHandler(handler)
        handler.close()
    root.setLevel(level)
    return chaospy


# Squared relative CV errors below this are float64 round-off ((1e-10)^2 leaves a margin above
# the ~1e-16 relative noise of the evaluations): degrees under it tie, and the lowest one wins,
# so an exactly polynomial model gets its own degree.
_CV_FLOOR = 1e-20


class PolynomialChaos:
    """Polynomial chaos expansion fitted by least squares; moments and Sobol' indices from it.

    Args:
        distribution: The joint law of the independent inputs: a chaospy distribution with
            ``len(distribution) == n_params`` (e.g. ``chaospy.J(chaospy.Uniform(0, 1), ...)``),
            or bounds of shape ``(n_params, 2)`` for independent uniform inputs.
        degree: Total polynomial degree, an int >= 0, or ``"cv"`` to pick it in
            ``0..max_degree`` by K-fold cross-validation.
        max_degree: Largest degree tried with ``"cv"``; degrees with more terms than a
            training fold has rows are skipped.
        n_folds: Folds of the cross-validation, >= 2.
        seed: Non-negative seed of :meth:`design` and of the fold split.
        var_rtol: An output counts as constant, with NaN Sobol' indices, where the expansion's
            standard deviation is at most ``var_rtol`` times its root mean square
            ``sqrt(sum_alpha c_alpha^2)``: a least-squares fit of a constant leaves round-off
            (~1e-16 relative) in the other coefficients, whose ratios mean nothing.

    Attributes:
        distribution_: The chaospy distribution used.
        degree_: Degree of the fitted expansion.
        cv_errors_: With ``"cv"``: dict degree -> relative K-fold error
            ``sum ||y - y_hat||^2 / sum ||y - mean y||^2`` (pooled over outputs).
        multi_indices_: Exponents ``alpha`` of the basis, shape ``(n_terms, n_params)``.
        expansion_: The orthonormal basis (chaospy polynomial), shape ``(n_terms,)``.
        coefficients_: Coefficients ``c_alpha``, shape ``(n_terms, *out_shape)``.
        polynomial_: The fitted expansion (chaospy polynomial), shape ``out_shape``.
        mean_: Mean of the output, shape ``out_shape``.
        variance_: Variance of the output, shape ``out_shape``.
        S1_: First-order Sobol' indices, shape ``(n_params, *out_shape)``; NaN where the
            output is constant (see ``var_rtol``).
        ST_: Total Sobol' indices, same shape and convention.
        n_params_: Number of inputs.
    """

    def __init__(
        self,
        distribution,
        degree: int | str = "cv",
        max_degree: int = 10,
        n_folds: int = 5,
        seed: int = 0,
        var_rtol: float = 1e-10,
    ) -> None:
        self.distribution = distribution
        self.degree = degree
        self.max_degree = max_degree
        self.n_folds = n_folds
        self.seed = seed
        self.var_rtol = var_rtol

    def design(self, n_samples: int) -> np.ndarray:
        """Scrambled Sobol' points mapped to the input law by its inverse (Rosenblatt) transform.

        Args:
            n_samples: Number of points, >= 1 (a power of 2 keeps the Sobol' set balanced).

        Returns:
            Inputs of shape ``(n_samples, n_params)``.
        """
        dist = self._distribution()
        rng = np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(0,)))
        unit = qmc.Sobol(len(dist), scramble=True, seed=rng).random(n_samples)
        return np.asarray(dist.inv(unit.T), dtype=float).reshape(len(dist), -1).T

    def fit(self, X: ArrayLike, Y: ArrayLike) -> PolynomialChaos:
        """Fit the expansion to model runs.

        Args:
            X: Inputs, shape ``(n, n_params)``, drawn from the input law (e.g. :meth:`design`).
            Y: Outputs, shape ``(n,)`` or ``(n, *out_shape)`` (e.g. POD coefficients ``(n, r)``).

        Returns:
            self.

        Raises:
            ValueError: On bad settings or shapes, non-finite data, or too few runs for the
                requested degree (or for every degree tried by ``"cv"``).
        """
        self._check_settings()
        dist = self._distribution()
        X, Y = np.asarray(X, dtype=float), np.asarray(Y, dtype=float)
        if X.ndim != 2 or X.shape[1] != len(dist) or Y.ndim == 0 or len(Y) != len(X):
            raise ValueError(
                f"X must be (n, {len(dist)}) and Y (n, ...) with the same n; got X {X.shape}, "
                f"Y {Y.shape}"
            )
        if not (np.all(np.isfinite(X)) and np.all(np.isfinite(Y))):
            raise ValueError("X and Y must be finite")
        top = self.max_degree if self.degree == "cv" else self.degree
        chaospy = chaospy_module()
        expansion = chaospy.generate_expansion(top, dist, normed=True)
        alphas = _multi_indices(expansion)
        if self.degree == "cv":
            self.cv_errors_ = self._cross_validate(expansion(*X.T).T, alphas, Y)
            errors = {d: max(e, _CV_FLOOR) for d, e in self.cv_errors_.items()}
            self.degree_ = min(errors, key=lambda d: (errors[d], d))
        else:
            self.degree_ = self.degree
        keep = alphas.sum(axis=1) <= self.degree_
        if keep.sum() > len(X):
            raise ValueError(
                f"degree {self.degree_} has {keep.sum()} terms, more than the {len(X)} runs"
            )
        self.expansion_, self.multi_indices_ = expansion[keep], alphas[keep]
        chaospy = chaospy_module()
        self.polynomial_, coefficients = chaospy.fit_regression(self.expansion_, X.T, Y, retall=1)
        self.coefficients_ = coefficients.reshape((len(self.multi_indices_), *Y.shape[1:]))
        self.distribution_, self.n_params_ = dist, X.shape[1]
        self._moments()
        return self

    def predict(self, X: ArrayLike) -> np.ndarray:
        """Evaluate the expansion.

        Args:
            X: Inputs, shape ``(n, n_params)``.

        Returns:
            Outputs, shape ``(n, *out_shape)``.
        """
        X = np.asarray(X, dtype=float)
        if X.ndim != 2 or X.shape[1] != self.n_params_:
            raise ValueError(f"X must have shape (n, {self.n_params_}), got {X.shape}")
        basis = np.asarray(self.expansion_(*X.T), dtype=float).reshape(-1, len(X))
        return np.tensordot(basis.T, self.coefficients_, axes=1)

    def _moments(self) -> None:
        coef2 = self.coefficients_.reshape(len(self.multi_indices_), -1) ** 2
        alphas = self.multi_indices_
        constant = ~alphas.any(axis=1)
        out_shape = self.coefficients_.shape[1:]
        self.mean_ = self.coefficients_[constant].sum(axis=0)
        variance = coef2[~constant].sum(axis=0)
        self.variance_ = variance.reshape(out_shape)
        involved = alphas > 0  # (n_terms, n_params)
        alone = involved & (involved.sum(axis=1, keepdims=True) == 1)
        with np.errstate(divide="ignore", invalid="ignore"):
            s1 = (alone.T.astype(float) @ coef2) / variance
            st = (involved.T.astype(float) @ coef2) / variance
        constant_output = np.sqrt(variance) <= self.var_rtol * np.sqrt(coef2.sum(axis=0))
        s1[:, constant_output], st[:, constant_output] = np.nan, np.nan
        self.S1_ = s1.reshape((self.n_params_, *out_shape))
        self.ST_ = st.reshape((self.n_params_, *out_shape))

    def _cross_validate(self, basis: np.ndarray, alphas: np.ndarray, Y: np.ndarray) -> dict:
        targets = Y.reshape(len(Y), -1)
        rng = np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(1,)))
        folds = np.array_split(rng.permutation(len(Y)), self.n_folds)
        n_train = len(Y) - max(len(f) for f in folds)
        spread = ((targets - targets.mean(axis=0)) ** 2).sum()
        errors = {}
        for degree in range(self.max_degree + 1):
            columns = alphas.sum(axis=1) <= degree
            if columns.sum() > n_train:
                break
            squared = 0.0
            for test in folds:
                train = np.setdiff1d(np.arange(len(Y)), test)
                coef, *_ = np.linalg.lstsq(basis[train][:, columns], targets[train], rcond=None)
                squared += ((targets[test] - basis[test][:, columns] @ coef) ** 2).sum()
            errors[degree] = squared / spread if spread > 0 else 0.0
        if not errors:
            raise ValueError(f"too few runs ({len(Y)}) for {self.n_folds}-fold cross-validation")
        return errors

    def _distribution(self):
        chaospy = chaospy_module()
        if isinstance(self.distribution, chaospy.Distribution):
            return self.distribution
        box = as_bounds(self.distribution)
        return chaospy.J(*[chaospy.Uniform(low, high) for low, high in box])

    def _check_settings(self) -> None:
        if self.degree != "cv" and not (isinstance(self.degree, int) and self.degree >= 0):
            raise ValueError(f'degree must be "cv" or an int >= 0, got {self.degree!r}')
        if self.degree == "cv" and self.max_degree < 0:
            raise ValueError(f"max_degree must be >= 0, got {self.max_degree}")
        if self.n_folds < 2:
            raise ValueError(f"n_folds must be >= 2, got {self.n_folds}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if self.var_rtol < 0:
            raise ValueError(f"var_rtol must be >= 0, got {self.var_rtol}")


def _multi_indices(expansion) -> np.ndarray:
    """Exponent ``alpha`` of each basis polynomial: its leading (highest total degree) monomial.

    A product of univariate orthogonal polynomials ``prod_i P_{alpha_i}(x_i)`` has the single
    monomial ``prod_i x_i^{alpha_i}`` of top total degree, which names it.
    """
    exponents = np.asarray(expansion.exponents)
    coefficients = np.array(expansion.coefficients).reshape(len(exponents), -1)
    alphas = []
    for j in range(coefficients.shape[1]):
        present = np.flatnonzero(coefficients[:, j])
        degrees = exponents[present].sum(axis=1)
        top = present[degrees == degrees.max()]
        if len(top) != 1:
            raise ValueError("the expansion is not a product basis: inputs must be independent")
        alphas.append(exponents[top[0]])
    return np.array(alphas, dtype=int)
