"""Adapters between PyDMD's protocols and the project's conventions, for ``pdeflow.tasks.rom.dmd``.

- ``SeededBOPDMD``: PyDMD's BOP-DMD (Sashidhar & Kutz 2022) with its bagging drawn from a
  passed-in ``numpy.random.Generator`` and forecasts on ``dmd_time``;
- ``PODSpace``: ParametricDMD's ``spatial_pod`` over the project's fitted POD;
- ``RealRegressor`` and ``SharedKernelGPR``: ParametricDMD's ``approximation`` over the
  project's RBF and GPR regressors (Andreuzzi, Demo & Rozza 2023 call it once per time).

PyDMD's time inside these objects is counted in steps (``t_j = j``), so its time dictionaries
hold exact integers.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
from pydmd import BOPDMD, DMD
from sklearn.gaussian_process import GaussianProcessRegressor

from pdeflow.tasks.rom.approximation import GPR
from pdeflow.tasks.rom.pod import POD

__all__ = [
    "VARPRO_OPTS",
    "PODSpace",
    "RealRegressor",
    "SeededBOPDMD",
    "SharedKernelGPR",
    "bag",
    "make_dmd",
    "quiet_pydmd_warnings",
]

# Variable projection stops once ||X - Phi(alpha) B||_F / ||X||_F < tol. PyDMD's default 1e-6
# left continuous eigenvalues 3.6e-6 off on exact advection data; 1e-12 reaches rounding
# (5e-17 per step). On data no DMD fits exactly the stall test (error reduced by less than
# 1e-12 of itself) or maxiter ends the iteration instead.
VARPRO_OPTS = {"tol": 1e-12, "maxiter": 60}


@contextlib.contextmanager
def quiet_pydmd_warnings() -> Iterator[None]:
    """Silence two PyDMD warnings inside the block that flag expected conditions, not faults.

    "Input data condition number": PyDMD warns whenever the snapshot matrix is
    ill-conditioned, which every trajectory of a few modes sampled at many times is (condition
    1e17-1e18 measured on heat and advection); that rank deficiency is what the truncation
    ``svd_rank`` is for. "failed to converge": variable projection runs to ``VARPRO_OPTS``'
    residual of 1e-12, which only exact data reach; on other data it ends at the stall test or
    ``maxiter``, as intended, and BOP-DMD's bagging spread reports the remaining uncertainty.
    """
    with warnings.catch_warnings():
        for message in ("Input data condition number", "Initial trial of Optimized DMD"):
            warnings.filterwarnings("ignore", message=message, category=UserWarning)
        yield


def bag(
    rng: np.random.Generator, H: np.ndarray, trial_size: float
) -> tuple[np.ndarray, np.ndarray]:
    """A random, time-ordered subset of the snapshots: PyDMD's ``BOPDMDOperator._bag`` draw.

    Args:
        rng: Source of the draw (PyDMD's own uses NumPy's global state).
        H: Snapshots as rows, shape (n_time, n_features).
        trial_size: Fraction of the rows to keep, in (0, 1).

    Returns:
        The kept rows, shape (n_kept, n_features), and their indices in order, (n_kept,).
    """
    size = int(trial_size * H.shape[0])
    if size < 1:
        raise ValueError(f"trial_size={trial_size} keeps no snapshot of {H.shape[0]}")
    rows = np.sort(rng.choice(H.shape[0], size=size, replace=False))
    return H[rows], rows


class SeededBOPDMD(BOPDMD):
    """PyDMD's BOPDMD with bagging drawn from ``rng`` and forecasts on ``dmd_time``.

    PyDMD draws the bags from NumPy's global random state; the project passes randomness in.
    ``BOPDMD.fit`` builds its operator and reads it back through the ``operator`` property
    before bagging, so that property gives the new operator an instance-level ``_bag`` drawing
    from ``rng``. PyDMD's BOPDMD reconstructs only at its fit times; here the reconstruction
    follows ``dmd_time`` as exact DMD's does, so ``ParametricDMD`` can forecast with it. The
    forecast uses the mean eigenvalues, modes and amplitudes of the bags.
    """

    def __init__(self, rng: np.random.Generator, **kwargs: Any):
        super().__init__(**kwargs)
        self._rng = rng

    @property
    def operator(self):
        op = self._Atilde
        if op is not None and "_bag" not in vars(op):
            op._bag = functools.partial(bag, self._rng)
        return op

    def fit(self, X: np.ndarray, t: np.ndarray) -> SeededBOPDMD:
        """Fit snapshots ``X`` (n_features, n_time) at equally spaced times ``t`` (n_time,)."""
        super().fit(X, t)
        self._set_initial_time_dictionary({"t0": t[0], "tend": t[-1], "dt": t[1] - t[0]})
        return self

    @property
    def reconstructed_data(self) -> np.ndarray:
        dynamics = np.exp(np.outer(self.eigs, self.dmd_timesteps))
        return self.modes @ (self.amplitudes[:, None] * dynamics)


def make_dmd(method: str, svd_rank: Any, num_trials: int, trial_size: float, seed: Any):
    """An unfitted PyDMD estimator.

    Args:
        method: ``"exact"`` (``pydmd.DMD(exact=True)``, Tu et al. 2014) or ``"bop"``
            (``SeededBOPDMD``, fitted with ``VARPRO_OPTS``).
        svd_rank: PyDMD's truncation (-1, 0, a rank >= 1, or an energy in (0, 1)).
        num_trials, trial_size: BOP-DMD bagging; 0 trials is optimized DMD, unbagged.
        seed: Seed of the bagging draws: an integer or a ``numpy.random.SeedSequence``.
    """
    if method == "exact":
        return DMD(svd_rank=svd_rank, exact=True)
    return SeededBOPDMD(
        np.random.default_rng(seed),
        svd_rank=svd_rank,
        num_trials=int(num_trials),
        trial_size=float(trial_size),
        varpro_opts_dict=dict(VARPRO_OPTS),
    )


class PODSpace:
    """ParametricDMD's ``spatial_pod`` for snapshots already projected onto a fitted POD.

    ParametricDMD calls ``fit(X).reduce(X)`` on the training snapshots, ``(n_features,
    n_snapshots)``, and ``expand(c)`` on each forecast coefficient vector. The project's POD is
    fitted beforehand instead (its rank rule and sign convention, and a restored model holds
    the basis and the training coefficients but not the snapshots), so ParametricDMD is given
    the coefficients: ``fit`` and ``reduce`` pass them through and ``expand`` maps back.
    """

    def __init__(self, pod: POD):
        self.pod = pod

    def fit(self, X: np.ndarray) -> PODSpace:
        return self

    def reduce(self, X: np.ndarray) -> np.ndarray:
        return X

    def expand(self, c: np.ndarray) -> np.ndarray:
        return self.pod.inverse_transform(np.real(c)[None])[0]


class RealRegressor:
    """ParametricDMD's ``approximation``: a project regressor fitted to real forecasts.

    ParametricDMD fits it once per forecast time, ``fit(params (n, d), values (n, r))``. DMD
    forecasts of real data are real up to rounding (eigenvalues in conjugate pairs), and the
    regressors take real outputs, so the real part is fitted.
    """

    def __init__(self, regressor: Any):
        self.regressor = regressor

    def fit(self, P: np.ndarray, Y: np.ndarray) -> RealRegressor:
        self.regressor.fit(P, np.real(Y))
        return self

    def predict(self, P: np.ndarray) -> np.ndarray:
        return self.regressor.predict(P)


class SharedKernelGPR:
    """ParametricDMD's ``approximation`` for ``"gpr"``: one Gaussian-process prior for all times.

    ParametricDMD refits the regressor at every forecast time, and maximising the marginal
    likelihood each time cost ~0.9 s a time on 7 samples (90 s for 101 times, on the shared
    2-core machine). Here the kernel
    of ``GPR`` (Guo & Hesthaven 2018) is fitted once, to the training coefficients at all
    times, and each forecast time conditions that prior on its values, without the optimiser.
    """

    def __init__(self, gpr: GPR):
        self.gpr = gpr

    def fit(self, P: np.ndarray, Y: np.ndarray) -> SharedKernelGPR:
        kernel = None if self.gpr.gp_ is None else self.gpr.gp_.kernel_
        gp = GaussianProcessRegressor(kernel, optimizer=None, normalize_y=True)
        self.gp_ = gp.fit(self.gpr.scaler_(P), np.real(Y))
        return self

    def predict(self, P: np.ndarray) -> np.ndarray:
        return self.gp_.predict(self.gpr.scaler_(P)).reshape(len(P), -1)
