"""Regressors from PDE parameters to reduced coefficients.

In a non-intrusive reduced-order model the map from parameters to POD coefficients is learned from
data by regression (Hesthaven & Ubbiali 2018, "Non-intrusive reduced order modeling of nonlinear
problems using neural networks", J. Comput. Phys. 363; Guo & Hesthaven 2018, "Reduced order
modeling for nonlinear structural analysis using Gaussian process regression", CMAME 341).

The regressors map parameters ``(n_samples, n_params)`` to outputs ``(n_samples, n_outputs)``
(or ``(n_samples,)`` for a single output given as a 1-D array) and rescale each parameter to
``[0, 1]`` from the min/max of the fit data, so that parameters with very different ranges (a
viscosity in ``[0.01, 0.1]``, an amplitude in ``[0, 1]``) weigh alike in the radial distance,
share sensible length-scale bounds, and sit where a network's activations are not saturated.

They are scikit-learn regressors (``BaseEstimator``, ``RegressorMixin``): ``clone``,
``get_params``/``set_params``, ``Pipeline`` and ``GridSearchCV`` work, and the input checks are
scikit-learn's (``validate_data``), so that ``check_estimator`` applies. ``MultiOutputMixin``
says that every output is regressed at once (the coefficients of a whole trajectory).
"""

from __future__ import annotations

import numbers

import numpy as np
from scipy.interpolate import RBFInterpolator
from sklearn.base import BaseEstimator, MultiOutputMixin, RegressorMixin
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel
from sklearn.neural_network import MLPRegressor
from sklearn.utils.validation import check_is_fitted, validate_data

__all__ = ["GPR", "NN", "RBF"]


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


def _validate_fit(model: BaseEstimator, P, Y) -> tuple[np.ndarray, np.ndarray]:
    """Checked float64 ``P`` (n, n_params) and ``Y`` as (n, n_outputs); records the fit shapes.

    Sets ``n_features_in_`` (scikit-learn's name), ``n_params_``, ``n_outputs_`` and
    ``output_1d_`` (whether ``Y`` came as a 1-D array, so that ``predict`` returns one too).
    """
    P, Y = validate_data(model, P, Y, multi_output=True, y_numeric=True, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    model.output_1d_ = Y.ndim == 1
    Y = Y.reshape(len(Y), -1)
    model.n_params_ = P.shape[1]
    model.n_outputs_ = Y.shape[1]
    return P, Y


def _validate_predict(model: BaseEstimator, P) -> np.ndarray:
    check_is_fitted(model, "scaler_")
    return validate_data(model, P, reset=False, dtype=np.float64)


def _shaped(model: BaseEstimator, out: np.ndarray) -> np.ndarray:
    out = out.reshape(out.shape[0], model.n_outputs_)
    return out[:, 0] if model.output_1d_ else out


class RBF(MultiOutputMixin, RegressorMixin, BaseEstimator):
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
        n_params_: Number of parameters (also ``n_features_in_``).
        n_outputs_: Number of outputs.
        output_1d_: Whether the fit outputs were a 1-D array (``predict`` then returns one).
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
            Y: Outputs, shape ``(n_samples, n_outputs)`` or ``(n_samples,)``.

        Returns:
            self, fitted.

        Raises:
            ValueError: If the inputs are invalid, or scipy refuses the settings or the data
                (too few samples for the kernel's polynomial, an unknown kernel, ...).
        """
        P, Y = _validate_fit(self, P, Y)
        scaler = _UnitCube(P)
        try:
            self.interpolator_ = RBFInterpolator(
                scaler(P),
                Y,
                kernel=self.kernel,
                smoothing=self.smoothing,
                degree=self.degree,
                neighbors=self.neighbors,
                epsilon=self.epsilon,
            )
        except ValueError as error:
            raise ValueError(
                f"RBF(kernel={self.kernel!r}) cannot be fitted on n_samples = {len(P)} samples "
                f"of {P.shape[1]} parameters: {error}"
            ) from error
        self.scaler_ = scaler
        return self

    def predict(self, P: np.ndarray) -> np.ndarray:
        """Evaluate the interpolant.

        Args:
            P: Parameters, shape ``(n, n_params)``.

        Returns:
            Outputs, shape ``(n, n_outputs)`` (``(n,)`` if fitted on a 1-D array).
        """
        P = _validate_predict(self, P)
        return _shaped(self, self.interpolator_(self.scaler_(P)))


class GPR(MultiOutputMixin, RegressorMixin, BaseEstimator):
    """Gaussian process regression with an anisotropic Matern kernel (Guo & Hesthaven 2018).

    The kernel is ``C * Matern(length_scale per parameter, nu) + White``; hyperparameters are
    fitted by maximising the log marginal likelihood with ``n_restarts`` random restarts. All
    outputs share one kernel and each output is standardised (``normalize_y=True``), the usual
    multi-output treatment for POD coefficients.

    Args:
        nu: Smoothness of the Matern kernel, > 0 (0.5, 1.5, 2.5 or inf are the cheap ones).
        n_restarts: Extra optimiser restarts from random hyperparameters, >= 0.
        random_state: Seed of the restarts, so that a fit repeats.

    Attributes:
        gp_: The fitted ``GaussianProcessRegressor`` on the varying outputs.
        varying_: Boolean mask of outputs that vary across samples, shape ``(n_outputs,)``.
        constant_: Mean of every output over the fit data, shape ``(n_outputs,)``, the prediction
            for outputs that do not vary.
        scaler_: Unit-cube scaling of the parameters.
        n_params_: Number of parameters (also ``n_features_in_``).
        n_outputs_: Number of outputs.
        output_1d_: Whether the fit outputs were a 1-D array (``predict`` then returns one).
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
            Y: Outputs, shape ``(n_samples, n_outputs)`` or ``(n_samples,)``.

        Returns:
            self, fitted.
        """
        if not (isinstance(self.nu, numbers.Real) and self.nu > 0):
            raise ValueError(f"nu must be a real number > 0, got {self.nu!r}")
        if not (isinstance(self.n_restarts, numbers.Integral) and self.n_restarts >= 0):
            raise ValueError(f"n_restarts must be an integer >= 0, got {self.n_restarts!r}")
        P, Y = _validate_fit(self, P, Y)
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
        return self

    def predict(self, P: np.ndarray) -> np.ndarray:
        """Posterior mean of the Gaussian process.

        Args:
            P: Parameters, shape ``(n, n_params)``.

        Returns:
            Outputs, shape ``(n, n_outputs)`` (``(n,)`` if fitted on a 1-D array).
        """
        P = _validate_predict(self, P)
        out = np.tile(self.constant_, (P.shape[0], 1))
        if self.gp_ is not None:
            out[:, self.varying_] = self.gp_.predict(self.scaler_(P)).reshape(P.shape[0], -1)
        return _shaped(self, out)


class NN(MultiOutputMixin, RegressorMixin, BaseEstimator):
    """Multilayer perceptron from parameters to POD coefficients (Hesthaven & Ubbiali 2018).

    The POD-NN method: a fully connected network maps the (unit-cube scaled) parameters to the
    standardised reduced coefficients. Each output is standardised to zero mean and unit
    variance over the fit data, so the small trailing POD coefficients are fitted as carefully as
    the leading ones; outputs whose spread is round-off are left unscaled (they are constant).

    The network is scikit-learn's ``MLPRegressor`` trained full-batch by L-BFGS: the data sets are
    small (one row per training sample), where a quasi-Newton method reaches a far lower training
    error than stochastic gradients (Hesthaven & Ubbiali train by Levenberg-Marquardt for the same
    reason), and the fit is deterministic for a fixed ``random_state``.

    Args:
        hidden_layer_sizes: Width of each hidden layer, each >= 1.
        activation: Hidden activation, ``"tanh"``, ``"relu"``, ``"logistic"`` or ``"identity"``.
        alpha: L2 penalty on the weights, >= 0.
        max_iter: Most L-BFGS iterations, >= 1.
        tol: L-BFGS stopping tolerance on the loss improvement, > 0.
        random_state: Seed of the initial weights, so that a fit repeats.

    Attributes:
        network_: The fitted ``MLPRegressor`` (on scaled inputs and standardised outputs).
        output_mean_: Mean of each output over the fit data, shape ``(n_outputs,)``.
        output_scale_: Standard deviation used for each output, shape ``(n_outputs,)``.
        scaler_: Unit-cube scaling of the parameters.
        n_params_: Number of parameters (also ``n_features_in_``).
        n_outputs_: Number of outputs.
        output_1d_: Whether the fit outputs were a 1-D array (``predict`` then returns one).
        n_iter_: L-BFGS iterations run.
    """

    def __init__(
        self,
        hidden_layer_sizes: tuple[int, ...] = (64, 64),
        activation: str = "tanh",
        alpha: float = 1e-8,
        max_iter: int = 5000,
        tol: float = 1e-12,
        random_state: int = 0,
    ):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.alpha = alpha
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state

    def fit(self, P: np.ndarray, Y: np.ndarray) -> NN:
        """Train the network.

        Args:
            P: Parameters, shape ``(n_samples, n_params)``.
            Y: Outputs, shape ``(n_samples, n_outputs)`` or ``(n_samples,)``.

        Returns:
            self, fitted.
        """
        sizes = tuple(np.atleast_1d(self.hidden_layer_sizes).tolist())
        if not sizes or not all(isinstance(n, int) and n >= 1 for n in sizes):
            raise ValueError(
                f"hidden_layer_sizes must be one or more integers >= 1, "
                f"got {self.hidden_layer_sizes!r}"
            )
        P, Y = _validate_fit(self, P, Y)
        scaler = _UnitCube(P)
        spread = Y.std(axis=0)
        largest = max(spread.max(), np.finfo(float).tiny)
        # As in GPR: magnifying round-off spread to unit variance would make the network fit noise.
        self.output_scale_ = np.where(spread > 1e-10 * largest, spread, largest)
        self.output_mean_ = Y.mean(axis=0)
        target = (Y - self.output_mean_) / self.output_scale_
        self.network_ = MLPRegressor(
            hidden_layer_sizes=sizes,
            activation=self.activation,
            solver="lbfgs",
            alpha=self.alpha,
            max_iter=self.max_iter,
            # The default 15000 function evaluations would stop L-BFGS before max_iter.
            max_fun=4 * self.max_iter,
            tol=self.tol,
            random_state=self.random_state,
        )
        # A single-column target is passed as 1-D: MLPRegressor warns on a column vector.
        self.network_.fit(scaler(P), target[:, 0] if target.shape[1] == 1 else target)
        self.n_iter_ = self.network_.n_iter_
        self.scaler_ = scaler
        return self

    def predict(self, P: np.ndarray) -> np.ndarray:
        """Evaluate the network.

        Args:
            P: Parameters, shape ``(n, n_params)``.

        Returns:
            Outputs, shape ``(n, n_outputs)`` (``(n,)`` if fitted on a 1-D array).
        """
        P = _validate_predict(self, P)
        scaled = self.network_.predict(self.scaler_(P)).reshape(P.shape[0], self.n_outputs_)
        return _shaped(self, scaled * self.output_scale_ + self.output_mean_)
