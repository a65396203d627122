"""Tests of pdeflow.tasks.rom.dmd: DMD eigenvalues against the exact ones of heat and advection,
BOP-DMD's bagging, and parametric DMD's forecast of heat against its analytic solution.

Heat and advection are linear and diagonal in Fourier space, and their solvers advance each mode
by the exact propagator exp(lambda_k dt) (ETDRK4 without a nonlinear term, see
pdeflow.tasks.pdes.spectral1d), so the data are exact to rounding: the DMD eigenvalues must be
the exact exp(lambda_k dt), not the eigenvalues of an approximate integrator. Each test checks
the trajectory against the analytic solution first, so a solver that stopped being exact in
time fails there rather than as a puzzling eigenvalue error.
"""

import json
import math

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from threadpoolctl import threadpool_limits

from pdeflow.tasks.pdes.advection import Advection
from pdeflow.tasks.pdes.heat import Heat
from pdeflow.tasks.rom import RBF
from pdeflow.tasks.rom.dmd import ParametricDMDRom, TrajectoryDMD

N_X = 64
# Amplitudes (cos, sin) of wavenumbers m = 1, 2, 3: every mode present, none dominant.
AMPLITUDES = np.array([[1.0, 0.5], [0.3, 0.0], [0.2, -0.4]])


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread():
    # Tiny matrices: BLAS thread hand-off on the shared 2-core machine costs more than it saves.
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def _exact(x, k, t, decay, shift):
    """sum_m e^{-decay_m t} (a_m cos(m k (x - shift t)) + b_m sin(...)), shape (len(t), len(x))."""
    out = np.zeros((len(t), len(x)))
    for m, (a, b) in enumerate(AMPLITUDES, start=1):
        phase = m * k * (x[None] - shift * t[:, None])
        out += np.exp(-decay * (m * k) ** 2 * t)[:, None] * (a * np.cos(phase) + b * np.sin(phase))
    return out


def _solve(pde, x, k, n_frames, n_batch=1):
    """The solver's trajectories from the initial state of ``AMPLITUDES``, (n_batch, time, x)."""
    u0 = torch.from_numpy(_exact(x, k, np.zeros(1), 0.0, 0.0))[:, None]
    return pde.rollout(u0.expand(n_batch, 1, -1), n_frames).numpy()[:, :, 0]


def _heat(nu, n_frames, dt):
    length = 2 * math.pi
    pde = Heat(N_X, nu=nu, dt=dt, length=length)
    x = np.arange(N_X) * length / N_X
    return x, _solve(pde, x, 2 * math.pi / length, n_frames)


def _advection(c, n_frames, dt):
    length = 1.0
    pde = Advection(N_X, c=c, dt=dt, length=length)
    x = np.arange(N_X) * length / N_X
    return x, _solve(pde, x, 2 * math.pi / length, n_frames)[0]


def _match(found, expected):
    """Largest distance from each expected value to the nearest found one, and vice versa."""
    d = np.abs(np.asarray(found)[:, None] - np.asarray(expected)[None])
    return max(d.min(axis=0).max(), d.min(axis=1).max())


# --- 1. Exact DMD: eigenvalues of heat and advection -----------------------------------------


def test_heat_dmd_eigenvalues_are_the_exact_decay_factors():
    nu, dt, n_frames = 0.1, 0.01, 101
    x, u = _heat(nu, n_frames, dt)
    t = dt * np.arange(n_frames)
    # The solver is exact in time: the data match the analytic solution to rounding.
    assert np.abs(u[0] - _exact(x, 1.0, t, nu, 0.0)).max() < 1e-13
    # The heat propagator is real, so each wavenumber's cos/sin pair decays as one shape: the
    # snapshots span one direction per wavenumber, rank 3, not 2 per wavenumber.
    dmd = TrajectoryDMD(svd_rank=3).fit(u[0], dt=dt)
    k = np.arange(1, 4.0)
    # 1e-8 is the bound; exact data leave only rounding of the 3x3 eigenproblem
    # (measured 5e-14), so anything near 1e-8 would mean the data or the DMD are not exact.
    assert _match(dmd.eigenvalues_, np.exp(-nu * k**2 * dt)) < 1e-8
    assert _match(dmd.continuous_eigenvalues_, -nu * k**2) < 1e-8 / dt
    assert dmd.modes_.shape == (3, N_X) and dmd.eigenvalues_std_ is None


def test_advection_dmd_eigenvalues_and_forecast_are_exact():
    c, dt, n_frames = 0.7, 0.01, 101
    x, u = _advection(c, 2 * n_frames - 1, dt)
    k = 2 * math.pi
    t = dt * np.arange(2 * n_frames - 1)
    assert np.abs(u - _exact(x, k, t, 0.0, c)).max() < 1e-12
    # Translation keeps cos and sin of each wavenumber apart: 2 directions per wavenumber.
    dmd = TrajectoryDMD(svd_rank=6).fit(u[:n_frames], dt=dt)
    lam = -1j * c * k * np.array([1, -1, 2, -2, 3, -3])
    assert _match(dmd.eigenvalues_, np.exp(lam * dt)) < 1e-8  # measured 2e-15
    # |exp(lambda dt)| = 1 exactly: the forecast to twice the horizon stays exact.
    forecast = dmd.forecast(2 * n_frames - 1)
    assert forecast.shape == u.shape
    assert np.linalg.norm(forecast - u) / np.linalg.norm(u) < 1e-8


# --- 2. BOP-DMD: bagged eigenvalues and their spread -----------------------------------------


def test_bop_dmd_mean_matches_and_its_spread_is_small_on_clean_data():
    c, dt = 0.7, 0.01
    _, u_long = _advection(c, 201, dt)
    u = u_long[:101]
    # The legacy global state is what PyDMD's own bagging would draw from: it must stay put.
    before = np.random.get_state()[1].copy()  # noqa: NPY002
    bop = TrajectoryDMD(svd_rank=6, method="bop", num_trials=20, seed=3).fit(u, dt=dt)
    lam = -1j * c * 2 * math.pi * np.array([1, -1, 2, -2, 3, -3])
    # Variable projection to a 1e-12 residual: the mean over bags is exact to rounding
    # (measured 5e-15 in 1/time); 1e-8 relative is the bound.
    assert _match(bop.continuous_eigenvalues_, lam) < 1e-8 * np.abs(lam).max()
    # Every bag fits exact data exactly, so the spread is only the rounding floor of the std
    # formula, ~sqrt(eps) |lambda| ~ 1e-8 |lambda| (measured 2.4e-8 relative at most).
    assert np.all(bop.eigenvalues_std_ < 1e-6 * np.abs(lam).max())
    # The bags came from the seed, not from NumPy's global state, and they repeat.
    assert np.array_equal(np.random.get_state()[1], before)  # noqa: NPY002
    again = TrajectoryDMD(svd_rank=6, method="bop", num_trials=20, seed=3).fit(u, dt=dt)
    assert np.array_equal(again.eigenvalues_std_, bop.eigenvalues_std_)
    # The mean model forecasts past the fit as exact DMD does (measured 2e-15 at 2x).
    forecast = bop.forecast(201)
    assert np.linalg.norm(forecast - u_long) / np.linalg.norm(u_long) < 1e-8


def test_bop_dmd_spread_grows_with_noise():
    c, dt = 0.7, 0.01
    _, u = _advection(c, 101, dt)
    noise = 1e-3 * np.random.default_rng(0).standard_normal(u.shape)
    clean = TrajectoryDMD(svd_rank=6, method="bop", num_trials=10).fit(u, dt=dt)
    noisy = TrajectoryDMD(svd_rank=6, method="bop", num_trials=10).fit(u + noise, dt=dt)
    # Noise of 1e-3 of the signal spreads the bags' eigenvalues by 1.7e-4 to 1.6e-3 (1/time,
    # measured) against a clean rounding floor of at most 1.6e-7: a factor 1000, of which 100
    # is asked (the data and the bags are seeded, so the factor repeats).
    assert np.all(noisy.eigenvalues_std_ > 100 * clean.eigenvalues_std_.max())


# --- 3. Parametric DMD: forecast of heat at an unseen diffusivity ----------------------------

NU_LOW, NU_HIGH = 0.05, 0.5
DT_HEAT = 0.02
N_TRAIN_TIME = 51  # t in [0, 1]; the forecast runs to t = 2


def _nu(unit):
    """The unit cube to nu, log-uniform as Heat's default distribution."""
    return NU_LOW * (NU_HIGH / NU_LOW) ** np.asarray(unit)[:, 0]


def _heat_family(unit, n_frames):
    nu = _nu(unit)
    pde = Heat(N_X, nu=nu, dt=DT_HEAT, length=2 * math.pi)
    x = np.arange(N_X) * 2 * math.pi / N_X
    return x, _solve(pde, x, 1.0, n_frames, len(nu))


@pytest.fixture(scope="module")
def heat_data():
    train = np.linspace(0, 1, 7)[:, None]
    test = np.array([[0.17], [0.61], [0.9]])
    x, u_train = _heat_family(train, N_TRAIN_TIME)
    t = DT_HEAT * np.arange(2 * N_TRAIN_TIME - 1)
    truth = np.stack([_exact(x, 1.0, t, nu, 0.0) for nu in _nu(test)])
    return train, u_train, test, truth, x, t


def _relative(a, b):
    return np.linalg.norm(a - b, axis=(1, 2)) / np.linalg.norm(b, axis=(1, 2))


@pytest.mark.parametrize(
    "settings",
    [
        {"partitioned": True, "svd_rank": 3},
        {"partitioned": False, "svd_rank": -1},
        {"partitioned": True, "svd_rank": 3, "dmd": "bop"},
    ],
    ids=["partitioned", "monolithic", "bop"],
)
def test_parametric_dmd_forecasts_heat_at_twice_the_horizon(heat_data, settings):
    train, u_train, test, truth, x, t = heat_data
    rom = ParametricDMDRom(pod_rank=3, **settings).fit(train, u_train, dt=DT_HEAT)
    assert rom.predict(test).shape == (3, N_TRAIN_TIME, N_X)
    forecast = rom.predict(test, n_time=len(t))
    # The three mode shapes span every trajectory and each DMD is exact (section 1), so the
    # model is the RBF interpolation in the parameter of the exact fields at each time (RBF
    # interpolation is linear in its data): computed independently here, it must agree to
    # rounding amplified by the DMD (measured 1e-9 monolithic, 1e-13 partitioned).
    fields = np.stack([_exact(x, 1.0, t, nu, 0.0) for nu in _nu(train)])
    interpolated = np.stack(
        [RBF().fit(train, fields[:, j]).predict(test) for j in range(len(t))], axis=1
    )
    assert np.all(_relative(forecast, interpolated) < 1e-7)
    # Against the truth: the error of interpolating exp(-nu k^2 t) from 7 nodes, measured
    # 3.6e-5, 2.4e-4 and 3.0e-3 (largest at the largest nu, whose fields decay fastest); 1e-2
    # bounds it, far below the O(1) error of a forecast that loses the decay rates.
    assert np.all(_relative(forecast, truth) < 1e-2)


def test_parametric_dmd_with_gpr_forecasts_heat(heat_data):
    train, u_train, test, truth, _, t = heat_data
    # Every 5th frame keeps the GP fit small; dt is then 5 steps.
    rom = ParametricDMDRom(pod_rank=3, svd_rank=3, partitioned=True, interpolator="gpr")
    rom.fit(train, u_train[:, ::5], dt=5 * DT_HEAT)
    forecast = rom.predict(test, n_time=21)
    # The GP interpolates smooth exp(-nu k^2 t) about as well as the RBF (measured 3.9e-6,
    # 1.2e-4 and 7.8e-4); the RBF test's bound applies.
    assert np.all(_relative(forecast, truth[:, ::5]) < 1e-2)


def test_round_trip_repeats_predictions(heat_data):
    train, u_train, test, _, _, t = heat_data
    for settings in ({}, {"dmd": "bop", "num_trials": 5, "partitioned": True, "svd_rank": 3}):
        rom = ParametricDMDRom(pod_rank=3, **settings).fit(train, u_train, dt=DT_HEAT)
        arrays, attrs = rom.to_arrays()
        assert all(isinstance(a, np.ndarray) for a in arrays.values())
        restored = ParametricDMDRom.from_arrays(arrays, json.loads(json.dumps(attrs)))
        expected = rom.predict(test, n_time=len(t))
        assert (
            np.abs(restored.predict(test, n_time=len(t)) - expected).max()
            <= 1e-12 * np.abs(expected).max()
        )


def test_projection_floor_and_clone(heat_data):
    train, u_train, *_ = heat_data
    rom = ParametricDMDRom(pod_rank=2, svd_rank=-1).fit(train, u_train, dt=DT_HEAT)
    floor = rom.projection_errors(u_train)
    # Two modes of three: the floor is the third shape's share, positive, and no model on this
    # basis reconstructs the training data better.
    assert floor.shape == (7,) and np.all(floor > 1e-3)
    achieved = _relative(rom.predict(train), u_train)
    assert np.all(achieved >= floor * (1 - 1e-9))
    twin = clone(rom)
    assert twin.get_params() == rom.get_params() and not hasattr(twin, "pod_")


# --- 4. Bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "word"),
    [
        ({"svd_rank": 2.5}, "svd_rank"),
        ({"svd_rank": -2}, "svd_rank"),
        ({"method": "fast"}, "method"),
        ({"method": "bop", "num_trials": -1}, "num_trials"),
        ({"method": "bop", "trial_size": 1.5}, "trial_size"),
    ],
)
def test_trajectory_dmd_rejects_bad_settings(settings, word):
    with pytest.raises(ValueError, match=word):
        TrajectoryDMD(**settings).fit(np.ones((5, 4)))


def test_trajectory_dmd_rejects_bad_data():
    with pytest.raises(ValueError, match="trajectory"):
        TrajectoryDMD().fit(np.ones(5))
    with pytest.raises(ValueError, match="trajectory"):
        TrajectoryDMD().fit(np.full((5, 4), np.nan))
    with pytest.raises(ValueError, match="dt"):
        TrajectoryDMD().fit(np.ones((5, 4)), dt=0.0)
    with pytest.raises(NotFittedError):
        TrajectoryDMD().forecast(3)


def test_parametric_dmd_rejects_bad_input(heat_data):
    train, u_train, test, *_ = heat_data
    with pytest.raises(ValueError, match="interpolator"):
        ParametricDMDRom(interpolator="kriging").fit(train, u_train)
    with pytest.raises(ValueError, match="dmd"):
        ParametricDMDRom(dmd="fast").fit(train, u_train)
    with pytest.raises(ValueError, match="partitioned"):
        ParametricDMDRom(partitioned="yes").fit(train, u_train)
    with pytest.raises(ValueError, match="n_train"):
        ParametricDMDRom().fit(train[:3], u_train)
    with pytest.raises(ValueError, match="trajectories"):
        ParametricDMDRom().fit(train, u_train[0])
    with pytest.raises(NotFittedError):
        ParametricDMDRom().predict(test)
    rom = ParametricDMDRom(pod_rank=3, svd_rank=-1).fit(train, u_train)
    with pytest.raises(ValueError, match="params"):
        rom.predict(np.ones((2, 2)))
    with pytest.raises(ValueError, match="n_time"):
        rom.predict(test, n_time=0)
