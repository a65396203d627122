"""Sobol' index maps of a field-valued model: first-order and total indices at every location.

For a model ``f(X) -> (n, *field_shape)`` every output location ``x`` has its own variance
decomposition, ``S_i(x) = Var(E[f(X)(x) | X_i]) / Var(f(X)(x))``. The design is Saltelli's
(the one of :class:`~pdeflow.tasks.uq.sobol.SobolAnalysis`, drawn with SALib's sampler): base
matrices A and B of ``n_base`` rows and, per parameter ``i``, A_B^(i) = A with column ``i`` from
B. With ``f`` centred per location by its mean over all runs (as SALib does for one output),

    S1_i(x) = mean_j( f(B_j) (f(A_B^i_j) - f(A_j)) ) / V(x)        (Saltelli et al. 2010)
    ST_i(x) = mean_j( (f(A_j) - f(A_B^i_j))^2 ) / (2 V(x))          (Jansen 1999)

with ``V(x)`` the variance of the ``2 n_base`` runs on A and B. SALib's ``sobol.analyze`` handles
one output at a time, so it would be a Python loop over the locations of a field; the estimators
here are written once on arrays of shape ``(n_base, n_locations)`` and agree with SALib's to
round-off at each location.

The generalised (variance-weighted) indices of the whole field, ``sum_x V_i(x) / sum_x V(x)``
(Lamboni, Monod & Makowski 2011; Gamboa, Janon, Klein & Lagnoux 2014), summarise a map by one
number per parameter.

References:
    Jansen, M. J. W. (1999). Analysis of variance designs for model output. Computer Physics
    Communications 117, 35-43.
    Saltelli, A., Annoni, P., Azzini, I., Campolongo, F., Ratto, M. & Tarantola, S. (2010).
    Variance based sensitivity analysis of model output. Design and estimator for the total
    sensitivity index. Computer Physics Communications 181, 259-270.
    Lamboni, M., Monod, H. & Makowski, D. (2011). Multivariate sensitivity analysis to measure
    global contribution of input factors in dynamic models. Reliability Engineering & System
    Safety 96, 450-459.
    Gamboa, F., Janon, A., Klein, T. & Lagnoux, A. (2014). Sensitivity analysis for
    multidimensional and functional outputs. Electronic Journal of Statistics 8, 575-603.
    Owen, A. B. (1997). Scrambled net variance for integrals of smooth functions. Annals of
    Statistics 25, 1541-1562.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.typing import ArrayLike
from SALib.sample import sobol as salib_sample
from scipy import stats

from pdeflow.tasks.uq.morris import as_bounds


class FieldSobol:
    """First-order and total Sobol' indices at every location of a field-valued output.

    Usage: ``X = FieldSobol(1024).design(bounds)``; run the model on every row, in order, giving
    ``Y`` of shape ``(n_eval, *field_shape)``; ``fit(X, Y)``. Or :func:`field_sobol` for both.

    A location whose output does not vary (``std <= var_rtol * max |f|`` there, which covers the
    exactly constant case ``0 <= 0``) has no variance to decompose: its indices and their
    intervals are NaN and it is flagged in ``constant_``.

    Args:
        n_base: Rows of each base matrix; a power of 2 (balance of the Sobol' point set).
        seed: Non-negative seed of the Sobol' scrambling and of the bootstrap.
        n_bootstrap: Bootstrap resamples of the base rows for ``S1_conf_`` and ``ST_conf_``.
        conf_level: Confidence level of the intervals, in (0, 1).
        var_rtol: Relative spread below which a location counts as constant (float64 outputs
            carry ~1e-16 relative noise, so 1e-10 leaves a wide margin above it).

    Attributes:
        S1_: First-order indices, shape ``(n_params, *field_shape)``; NaN where constant.
        ST_: Total indices, same shape.
        S1_conf_: Half-width of the bootstrap interval of ``S1_`` (``z * std`` over resamples of
            the base rows, as SALib), same shape.
        ST_conf_: Same for ``ST_``.
        S1_agg_: Generalised first-order indices of the whole field, shape ``(n_params,)``.
        ST_agg_: Generalised total indices, shape ``(n_params,)``.
        mean_: Mean field over the ``2 n_base`` runs on A and B, shape ``field_shape``.
        mean_conf_: Half-width of the normal (CLT) interval of ``mean_``,
            ``z * std / sqrt(2 n_base)``; treats the runs as i.i.d., which is conservative for
            scrambled Sobol' points in the usual case (Owen 1997), shape ``field_shape``.
        variance_: Output variance ``V(x)``, shape ``field_shape``.
        constant_: Boolean mask of the constant locations, shape ``field_shape``.
        n_params_: Number of parameters.
    """

    def __init__(
        self,
        n_base: int,
        seed: int = 0,
        n_bootstrap: int = 100,
        conf_level: float = 0.95,
        var_rtol: float = 1e-10,
    ) -> None:
        self.n_base = n_base
        self.seed = seed
        self.n_bootstrap = n_bootstrap
        self.conf_level = conf_level
        self.var_rtol = var_rtol

    def n_eval(self, n_params: int) -> int:
        """Number of model runs of the design: ``n_base * (n_params + 2)``."""
        return self.n_base * (n_params + 2)

    def design(self, bounds: int | ArrayLike) -> np.ndarray:
        """The Saltelli design, in the unit cube or in physical bounds.

        Args:
            bounds: The number of parameters (points in ``[0, 1)^d``), or bounds of shape
                ``(n_params, 2)`` as ``(low, high)`` rows (independent uniform parameters).

        Returns:
            Points of shape ``(n_eval, n_params)``; row ``j (n_params + 2)`` is ``A_j``, the next
            ``n_params`` rows are ``A_B^(i)_j`` and the last of the block is ``B_j``.
        """
        self._check_settings()
        if isinstance(bounds, int | np.integer):
            if bounds < 1:
                raise ValueError(f"the number of parameters must be >= 1, got {bounds}")
            box = np.array([[0.0, 1.0]] * int(bounds))
        else:
            box = as_bounds(bounds)
        problem = {"num_vars": len(box), "names": [f"x{i}" for i in range(len(box))]}
        problem["bounds"] = [[0.0, 1.0]] * len(box)
        unit = salib_sample.sample(
            problem, self.n_base, calc_second_order=False, scramble=True, seed=self.seed
        )
        return box[:, 0] + unit * (box[:, 1] - box[:, 0])

    def fit(self, X: ArrayLike, Y: ArrayLike) -> FieldSobol:
        """Estimate the index maps from the outputs on the rows of :meth:`design`.

        Args:
            X: The design, shape ``(n_eval, n_params)`` (checked to be a Saltelli design).
            Y: Outputs in the order of the rows, shape ``(n_eval, *field_shape)``; a scalar
                output ``(n_eval,)`` is a field of shape ``()``.

        Returns:
            self.

        Raises:
            ValueError: If ``n_base`` is not a power of 2, ``X`` is not the design's layout,
                ``Y`` does not match it, or ``Y`` is not finite.
        """
        self._check_settings()
        X, Y = np.asarray(X, dtype=float), np.asarray(Y, dtype=float)
        n_params = self._check_design(X)
        if Y.ndim == 0 or Y.shape[0] != X.shape[0]:
            raise ValueError(f"Y must have shape ({X.shape[0]}, ...), got {Y.shape}")
        if not np.all(np.isfinite(Y)):
            raise ValueError("Y has non-finite values")
        field_shape = Y.shape[1:]
        blocks = Y.reshape(self.n_base, n_params + 2, -1)
        a, ab, b = blocks[:, 0], blocks[:, 1:-1].transpose(1, 0, 2), blocks[:, -1]
        scale = np.abs(blocks).max(axis=(0, 1))
        runs = np.concatenate([a, b])
        self.mean_ = runs.mean(axis=0).reshape(field_shape)
        z = stats.norm.ppf(0.5 + self.conf_level / 2)
        self.mean_conf_ = (z * runs.std(axis=0, ddof=1) / np.sqrt(len(runs))).reshape(field_shape)
        # Centring per location, as SALib does: the first-order estimator is not shift-invariant
        # at finite n, and a large mean would inflate its variance.
        centre = blocks.mean(axis=(0, 1))
        a, ab, b = a - centre, ab - centre, b - centre
        variance = np.concatenate([a, b]).var(axis=0)
        constant = np.sqrt(variance) <= self.var_rtol * scale
        v1, vt = _partial_variances(a, ab, b)
        self._store_indices(v1, vt, variance, constant, field_shape)
        self._bootstrap(a, ab, b, constant, z, field_shape)
        self.n_params_ = n_params
        return self

    def _store_indices(self, v1, vt, variance, constant, field_shape) -> None:
        with np.errstate(divide="ignore", invalid="ignore"):
            s1, st = v1 / variance, vt / variance
        s1[:, constant], st[:, constant] = np.nan, np.nan
        self.S1_ = s1.reshape((-1, *field_shape))
        self.ST_ = st.reshape((-1, *field_shape))
        varying = ~constant
        total = variance[varying].sum()
        if total > 0:
            self.S1_agg_ = v1[:, varying].sum(axis=1) / total
            self.ST_agg_ = vt[:, varying].sum(axis=1) / total
        else:
            self.S1_agg_ = self.ST_agg_ = np.full(len(v1), np.nan)
        self.variance_ = variance.reshape(field_shape)
        self.constant_ = constant.reshape(field_shape)

    def _bootstrap(self, a, ab, b, constant, z, field_shape) -> None:
        rng = np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(1,)))
        n = len(a)
        s1 = np.empty((self.n_bootstrap, *ab.shape[::2]))
        st = np.empty_like(s1)
        # One resample at a time, each vectorised over parameters and locations: memory stays
        # at one copy of the A_B blocks.
        for r in range(self.n_bootstrap):
            rows = rng.integers(n, size=n)
            ar, abr, br = a[rows], ab[:, rows], b[rows]
            variance = np.concatenate([ar, br]).var(axis=0)
            v1, vt = _partial_variances(ar, abr, br)
            with np.errstate(divide="ignore", invalid="ignore"):
                s1[r], st[r] = v1 / variance, vt / variance
        for name, draws in (("S1_conf_", s1), ("ST_conf_", st)):
            draws[:, :, constant] = 0.0
            conf = z * draws.std(axis=0, ddof=1)
            conf[:, constant] = np.nan
            setattr(self, name, conf.reshape((-1, *field_shape)))

    def _check_design(self, X: np.ndarray) -> int:
        if X.ndim != 2 or X.shape[1] < 1:
            raise ValueError(f"X must have shape (n_eval, n_params), got {X.shape}")
        n_params = X.shape[1]
        if X.shape[0] != self.n_eval(n_params):
            raise ValueError(
                f"X has {X.shape[0]} rows, the design has n_base * (n_params + 2) = "
                f"{self.n_eval(n_params)}"
            )
        blocks = X.reshape(self.n_base, n_params + 2, n_params)
        for i in range(n_params):
            expected = blocks[:, 0].copy()
            expected[:, i] = blocks[:, -1, i]
            if not np.array_equal(blocks[:, 1 + i], expected):
                raise ValueError(f"X is not a Saltelli design: rows A_B^({i}) are not A with B's")
        return n_params

    def _check_settings(self) -> None:
        n = self.n_base
        if not isinstance(n, int | np.integer) or n < 2 or n & (n - 1):
            raise ValueError(f"n_base must be a power of 2 (>= 2), got {n}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if self.n_bootstrap < 2:
            raise ValueError(f"n_bootstrap must be >= 2, got {self.n_bootstrap}")
        if not 0 < self.conf_level < 1:
            raise ValueError(f"conf_level must be in (0, 1), got {self.conf_level}")
        if self.var_rtol < 0:
            raise ValueError(f"var_rtol must be >= 0, got {self.var_rtol}")


def field_sobol(
    model: Callable[[np.ndarray], np.ndarray],
    bounds: ArrayLike,
    n_base: int,
    seed: int = 0,
    n_bootstrap: int = 100,
) -> FieldSobol:
    """Design, run and analyse in one call.

    Args:
        model: Maps parameters of shape ``(n, n_params)`` to outputs ``(n, *field_shape)``; it is
            called once on the whole design.
        bounds: Bounds of the independent uniform parameters, shape ``(n_params, 2)``.
        n_base: Rows of each base matrix, a power of 2; the model runs
            ``n_base * (n_params + 2)`` times.
        seed: Non-negative seed of the design and the bootstrap.
        n_bootstrap: Bootstrap resamples for the intervals.

    Returns:
        The fitted :class:`FieldSobol`.
    """
    analysis = FieldSobol(n_base, seed=seed, n_bootstrap=n_bootstrap)
    X = analysis.design(bounds)
    return analysis.fit(X, np.asarray(model(X)))


def _partial_variances(a, ab, b):
    """Numerators of S1 and ST: shapes ``(n_params, n_locations)`` from ``a``, ``b`` of shape
    ``(n_base, n_locations)`` and ``ab`` of shape ``(n_params, n_base, n_locations)``."""
    v1 = np.mean(b * (ab - a), axis=1)
    vt = 0.5 * np.mean((a - ab) ** 2, axis=1)
    return v1, vt
