"""Regressors from PDE parameters to reduced coefficients.

In a non-intrusive reduced-order model the map from parameters to POD coefficients is learned from
data by regression (Hesthaven & Ubbiali 2018, "Non-intrusive reduced order modeling of nonlinear
problems using neural networks", J. Comput. Phys. 363; Guo & Hesthaven 2018, "Reduced order
modeling for nonlinear structural analysis using Gaussian process regression", CMAME 341).

Both regressors map parameters ``(n_samples, n_params)`` to outputs ``(n_samples, n_outputs)`` and
rescale each parameter to ``[0, 1]`` from the min/max of the fit data, so that parameters with very
different ranges (a viscosity in ``[0.01, 0.1]``, an amplitude in ``[0, 1]``) weigh alike in the
radial distance and share sensible length-scale bounds.
"""

from __future__ import annotations

import numpy as np
from scipy.interpolate import RBFInterpolator
from sklearn.exceptions import NotFittedError
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel

__all__ = ["GPR", "RBF"]


def _check_inputs(P: np.ndarray, Y: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    P = np.asarray(P, dtype=float)
    if P.ndim != 2 or P.shape[0] < 1:
        raise ValueError(f"parameters must have shape (n_samples, n_params), got {P.shape}")
    if not np.all(np.isfinite(P)):
        raise ValueError("parameters contain NaN or inf")
    if Y is None:
        return P, None
    Y = np.asarray(Y, dtype=float)
    if Y.ndim != 2 or Y.shape[0] != P.shape[0]:
        raise ValueError(
            f"outputs must have shape ({P.shape[0]}, n_outputs) to match the parameters, "
            f"got {Y.shape}"
        )
    if not np.all(np.isfinite(Y)):
        raise ValueError("outputs contain NaN or inf")
    return P, Y


class _UnitCube:
    """Affine map of each parameter to [0, 1] using the fit data's min and max."""

    def __init__(self, P: np.ndarray):
        self.low = P.min(axis=0)
        span = P.max(axis=0) - self.low
        # A parameter held constant in the design carries no information; mapping it to 0 instead
        # of dividing by zero keeps the other parameters usable.
        self.span = np.where(span > 0, span, 1.0)

    def __call__(self, P: np.ndarray) -> np.ndarray:
        return (P - self.low) / self.span


def _check_predict(model: RBF | GPR, P: np.ndarray) -> np.ndarray:
    if not hasattr(model, "scaler_"):
        raise NotFittedError(
            f"This {type(model).__name__} instance is not fitted yet; call 'fit' first."
        )
    P, _ = _check_inputs(P)
    if P.shape[1] != model.n_params_:
        raise ValueError(f"expected {model.n_params_} parameters per sample, got {P.shape[1]}")
    return P


class RBF:
    """Radial basis function interpolation (wraps ``scipy.interpolate.RBFInterpolator``).

    Used as the coefficient map of POD-RBF reduced-order models (see, e.g., Hesthaven & Ubbiali
    2018 for the POD-regression setting). Inputs are scaled to the unit cube first.

    Args:
        kernel: RBF kernel name accepted by scipy, e.g. ``"thin_plate_spline"``, ``"cubic"``,
            ``"gaussian"``.
        smoothing: Smoothing parameter; 0 interpolates the data exactly.
        degree: Degree of the added polynomial; None uses scipy's minimum for the kernel.
        neighbors: Use only this many nearest data points per evaluation; None uses all.
        epsilon: Shape parameter, in unit-cube units; needed only by scale-dependent kernels
            (``"gaussian"``, ``"multiquadric"``, ...). None uses scipy's default.

    Attributes:
        interpolator_: The fitted ``RBFInterpolator``.
        scaler_: Unit-cube scaling of the parameters.
        n_params_: Number of parameters.
        n_outputs_: Number of outputs.
    """

    def __init__(
        self,
        kernel: str = "thin_plate_spline",
        smoothing: float = 0.0,
        degree: int | None = None,
        neighbors: int | None = None,
        epsilon: float | None = None,
    ):
        self.kernel = kernel
        self.smoothing = smoothing
        self.degree = degree
        self.neighbors = neighbors
        self.epsilon = epsilon

    def fit(self, P: np.ndarray, Y: np.ndarray) -> RBF:
        """Fit the interpolant.

        Args:
            P: Parameters, shape ``(n_samples, n_params)``.
            Y: Outputs, shape ``(n_samples, n_outputs)``.

        Returns:
            self, fitted.
        """
        P, Y = _check_inputs(P, Y)
        scaler = _UnitCube(P)
        self.interpolator_ = RBFInterpolator(
            scaler(P),
            Y,
            kernel=self.kernel,
            smoothing=self.smoothing,
            degree=self.degree,
            neighbors=self.neighbors,
            epsilon=self.epsilon,
        )
        self.scaler_ = scaler
        self.n_params_ = P.shape[1]
        self.n_outputs_ = Y.shape[1]
        return self

    def predict(self, P: np.ndarray) -> np.ndarray:
        """Evaluate the interpolant.

        Args:
            P: Parameters, shape ``(n, n_params)``.

        Returns:
            Outputs, shape ``(n, n_outputs)``.
        """
        P = _check_predict(self, P)
        return self.interpolator_(self.scaler_(P))


class GPR:
    """Gaussian process regression with an anisotropic Matern kernel (Guo & Hesthaven 2018).

    The kernel is ``C * Matern(length_scale per parameter, nu) + White``; hyperparameters are
    fitted by maximising the log marginal likelihood with ``n_restarts`` random restarts. All
    outputs share one kernel and each output is standardised (``normalize_y=True``), the usual
    multi-output treatment for POD coefficients.

    Args:
        nu: Smoothness of the Matern kernel (0.5, 1.5, 2.5 or inf are the cheap ones).
        n_restarts: Extra optimiser restarts from random hyperparameters.
        random_state: Seed of the restarts, so that a fit repeats.

    Attributes:
        gp_: The fitted ``GaussianProcessRegressor`` on the varying outputs.
        varying_: Boolean mask of outputs that vary across samples, shape ``(n_outputs,)``.
        constant_: Mean of every output over the fit data, shape ``(n_outputs,)``, the prediction
            for outputs that do not vary.
        scaler_: Unit-cube scaling of the parameters.
        n_params_: Number of parameters.
        n_outputs_: Number of outputs.
    """

    def __init__(self, nu: float = 2.5, n_restarts: int = 2, random_state: int = 0):
        self.nu = nu
        self.n_restarts = n_restarts
        self.random_state = random_state

    def _kernel(self, n_params: int):
        # Inputs live in [0, 1]: length scales below 1e-2 cannot be resolved by any realistic
        # design, and above 1e3 the output is flat in that parameter.
        matern = Matern(
            length_scale=np.full(n_params, 0.5), length_scale_bounds=(1e-2, 1e3), nu=self.nu
        )
        # Outputs are standardised, yet smooth simulator outputs drive the fit towards the flat
        # limit (long length scales with a large amplitude), so the amplitude bound is generous;
        # an upper bound of 1e2 made the regression error 7-20x larger on the ROM test family.
        # Simulations are deterministic, so the noise is left free to go to round-off level.
        return ConstantKernel(1.0, (1e-2, 1e5)) * matern + WhiteKernel(1e-6, (1e-12, 1e-1))

    def fit(self, P: np.ndarray, Y: np.ndarray) -> GPR:
        """Fit the Gaussian process.

        Args:
            P: Parameters, shape ``(n_samples, n_params)``.
            Y: Outputs, shape ``(n_samples, n_outputs)``.

        Returns:
            self, fitted.
        """
        P, Y = _check_inputs(P, Y)
        scaler = _UnitCube(P)
        self.constant_ = Y.mean(axis=0)
        spread = Y.std(axis=0)
        # Standardising an output whose spread is round-off would turn it into pure noise that,
        # through the shared kernel, drags the fitted noise level up for every other output.
        self.varying_ = spread > 1e-10 * max(spread.max(), np.finfo(float).tiny)
        self.gp_ = None
        if self.varying_.any():
            self.gp_ = GaussianProcessRegressor(
                kernel=self._kernel(P.shape[1]),
                normalize_y=True,
                n_restarts_optimizer=self.n_restarts,
                random_state=self.random_state,
            ).fit(scaler(P), Y[:, self.varying_])
        self.scaler_ = scaler
        self.n_params_ = P.shape[1]
        self.n_outputs_ = Y.shape[1]
        return self

    def predict(self, P: np.ndarray) -> np.ndarray:
        """Posterior mean of the Gaussian process.

        Args:
            P: Parameters, shape ``(n, n_params)``.

        Returns:
            Outputs, shape ``(n, n_outputs)``.
        """
        P = _check_predict(self, P)
        out = np.tile(self.constant_, (P.shape[0], 1))
        if self.gp_ is not None:
            out[:, self.varying_] = self.gp_.predict(self.scaler_(P)).reshape(P.shape[0], -1)
        return out
