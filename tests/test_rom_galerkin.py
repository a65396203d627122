"""POD-Galerkin with DEIM: the semi-discrete form, DEIM, the reduced integrator, the estimator."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from pdeflow.tasks.pdes import Advection, AllenCahn, BlowUpError, Burgers, FisherKPP, Heat, KdV
from pdeflow.tasks.rom.deim import deim_error_factor, deim_indices, deim_interpolate
from pdeflow.tasks.rom.exponential import phi_functions
from pdeflow.tasks.rom.galerkin import PODGalerkin


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny arrays: torch's intra-op threads on the shared cores only wait for each other.
    n_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n_threads)


def _modes_ic(rng, n_s: int, n: int, length: float, amp: float, cosines: bool) -> np.ndarray:
    """States sum_k a_k sin(k x) (+ b_k cos(k x)), k = 1..3, amplitudes uniform in +-amp."""
    x = np.arange(n) * length / n
    u0 = np.zeros((n_s, n))
    for k in (1, 2, 3):
        wave = 2 * np.pi * k * x / length
        u0 += rng.uniform(-amp, amp, (n_s, 1)) * np.sin(wave)
        if cosines:
            u0 += rng.uniform(-amp, amp, (n_s, 1)) * np.cos(wave)
    return u0


def _solve(cls, n, name, values, u0, t_end, dt, n_frames, **kw):
    """Trajectories (n_s, n_frames, n) of the solver, and the frame times."""
    steps = round(t_end / (n_frames - 1) / dt)
    pde = cls(n, dt=dt, **{name: values}, **kw)
    u = pde.rollout(torch.from_numpy(u0)[:, None], n_frames, steps)[:, :, 0].numpy()
    return u, np.linspace(0.0, t_end, n_frames)


def _dataset(cls, name, bounds, n, n_s, t_end, amp, seed, cosines=False):
    rng = np.random.default_rng(seed)
    values = np.exp(rng.uniform(*np.log(bounds), n_s))
    length = cls.info.defaults.length
    u0 = _modes_ic(rng, n_s, n, length, amp, cosines)
    u, times = _solve(cls, n, name, values, u0, t_end, 0.01, 21)
    return values[:, None], u, times


@pytest.fixture(scope="module")
def burgers():
    """12 training and 4 held-out Burgers trajectories, n = 64, nu in [0.1, 0.5], t in [0, 1]."""
    p, u, t = _dataset(Burgers, "nu", (0.1, 0.5), 64, 16, 1.0, 0.5, seed=3)
    return p[:12], u[:12], p[12:], u[12:], t


@pytest.fixture(scope="module")
def allen_cahn():
    """12 training and 4 held-out Allen-Cahn trajectories, n = 128, eps in [0.1, 0.2], t <= 2."""
    p, u, t = _dataset(AllenCahn, "eps", (0.1, 0.2), 128, 16, 2.0, 1.0, seed=4)
    return p[:12], u[:12], p[12:], u[12:], t


def _fit(data, pde, name, **settings) -> PODGalerkin:
    p, u, _, _, t = data
    return PODGalerkin(**settings).fit(
        p, u, pde=pde, grid=u.shape[2], dt=0.01, times=t, coefficient_names=[name]
    )


def _error(rom: PODGalerkin, data) -> float:
    _, _, p, u, _ = data
    pred = rom.predict(p, u[:, 0])
    return float(np.linalg.norm(pred - u) / np.linalg.norm(u))


# --- the semi-discrete form -------------------------------------------------------------------


def test_semi_discrete_right_hand_sides_are_the_analytic_ones():
    x = np.arange(32) * (2 * np.pi / 32)
    u = 0.7 * np.sin(x) + 0.2 * np.cos(2 * x)
    u_x = 0.7 * np.cos(x) - 0.4 * np.sin(2 * x)
    u_xx = -0.7 * np.sin(x) - 0.8 * np.cos(2 * x)
    # Every product here has modes <= 6, inside the kept span (2/3 rule: 10; 1/2 rule: 7), so
    # the spectral form is exact and only rounding (~1e-15 of the largest term) remains.
    burgers = Burgers(32, nu=0.3, dt=0.01).semi_discrete()
    np.testing.assert_allclose(burgers.rhs(u), 0.3 * u_xx - u * u_x, atol=1e-12)
    allen = AllenCahn(32, eps=0.2, dt=0.01).semi_discrete()
    np.testing.assert_allclose(allen.rhs(u), 0.04 * u_xx + u - u**3, atol=1e-12)
    fisher = FisherKPP(32, nu=0.5, rho=2.0, dt=0.01, length=2 * np.pi).semi_discrete()
    np.testing.assert_allclose(fisher.rhs(u), 0.5 * u_xx + 2 * u * (1 - u), atol=1e-12)
    # A new parameter goes through the affine terms: rho = 3 adds one more u (1 - u).
    np.testing.assert_allclose(
        fisher.rhs(u, {"rho": 3.0}), 0.5 * u_xx + 3 * u * (1 - u), atol=1e-12
    )
    assert [t.powers for t in allen.linear] == [{"eps": 2.0}]


def test_semi_discrete_is_the_solvers_derivative_with_its_dealiasing():
    # Random states on all kept modes of 32 points: u^2 aliases, so this fails unless the
    # form applies the solver's own 2/3-rule truncation.
    rng = np.random.default_rng(0)
    semi = Burgers(32, nu=0.2, dt=0.01).semi_discrete()
    u = semi.dealias(rng.standard_normal((3, 32)))
    errors = []
    for dt in (2e-3, 1e-3):
        step = Burgers(32, nu=0.2, dt=dt).step(torch.from_numpy(u)[:, None])[:, 0].numpy()
        errors.append(np.abs((step - u) / dt - semi.rhs(u)).max())
    # A forward difference is first order: halving dt halves the error (slope 1 +- 0.3);
    # measured 0.23 and 0.11 against |rhs| <= 18.5. Without the truncation the form differs
    # by 7.9 here, and the errors would level off instead of halving.
    assert abs(math.log2(errors[0] / errors[1]) - 1) < 0.3, errors


def test_semi_discrete_refuses_what_it_cannot_describe():
    class Undeclared(KdV):
        _polynomial = None  # a nonlinearity with no declared polynomial form

    with pytest.raises(ValueError, match="_polynomial"):
        Undeclared(32, beta=1.0, dt=0.01).semi_discrete()
    # KdV's own form: g = u^2, B = -3 i k (6 u u_x = 3 (u^2)_x).
    assert not KdV(32, beta=1.0, dt=0.01).semi_discrete().is_linear

    class WrongPower(AllenCahn):
        _affine_powers = {}  # L is eps^2 (-k^2), not affine in eps

    with pytest.raises(ValueError, match="_affine_powers"):
        WrongPower(32, eps=0.1, dt=0.01).semi_discrete()


def test_transpose_of_a_multiplier_is_the_matrix_transpose():
    semi = Burgers(16, nu=0.1, dt=0.01).semi_discrete()
    gain = semi.multiplier(semi.gain)[0]
    matrix = semi.apply(gain, np.eye(16)).T  # column j: B e_j
    v = np.random.default_rng(1).standard_normal((3, 16))
    np.testing.assert_allclose(semi.apply_transpose(gain, v), v @ matrix, atol=1e-14)


# --- DEIM and the exponential integrator ------------------------------------------------------


def test_deim_is_exact_on_its_span_and_obeys_its_error_bound():
    rng = np.random.default_rng(2)
    modes = np.linalg.qr(rng.standard_normal((60, 7)))[0].T  # orthonormal rows (7, 60)
    points = deim_indices(modes)
    assert len(set(points.tolist())) == 7
    factor = deim_error_factor(modes, points)
    # ||(P^T U)^{-1}|| >= 1: P^T U holds rows of a matrix with orthonormal columns.
    assert 1.0 <= factor < 1e3
    inside = rng.standard_normal((5, 7)) @ modes
    np.testing.assert_allclose(
        deim_interpolate(modes, points, inside[:, points]), inside, atol=1e-12
    )
    # Chaturantabut & Sorensen (2010), Lemma 3.2, for 200 arbitrary vectors; 1e-12 of slack
    # for rounding in the solve.
    f = rng.standard_normal((200, 60))
    error = np.linalg.norm(f - deim_interpolate(modes, points, f[:, points]), axis=1)
    best = np.linalg.norm(f - (f @ modes.T) @ modes, axis=1)
    assert np.all(error <= factor * best * (1 + 1e-12))


def test_deim_rejects_dependent_modes_and_bad_points():
    modes = np.zeros((2, 10))
    modes[0, 3] = modes[1, 3] = 1.0
    with pytest.raises(ValueError, match="linearly dependent"):
        deim_indices(modes)
    with pytest.raises(ValueError, match="points"):
        deim_error_factor(np.eye(2, 10), np.array([1, 1]))
    with pytest.raises(ValueError, match="modes"):
        deim_indices(np.ones((3, 2)))


def test_phi_functions_match_their_closed_forms():
    z = np.array([-40.0, -3.7, -0.5, 0.2, 1.5])
    e, p1, p2, p3 = (np.diag(p) for p in phi_functions(np.diag(z), 3))
    # Away from z = 0 the closed forms lose nothing; scaling and squaring is accurate to
    # ~1e-15 relative there.
    np.testing.assert_allclose(e, np.exp(z), rtol=1e-13)
    np.testing.assert_allclose(p1, np.expm1(z) / z, rtol=1e-13)
    np.testing.assert_allclose(p2, (np.expm1(z) - z) / z**2, rtol=1e-12)
    np.testing.assert_allclose(p3, (np.expm1(z) - z - z**2 / 2) / z**3, rtol=1e-11)


# --- the reduced model ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "name", "bounds"), [(Heat, "nu", (0.05, 0.5)), (Advection, "c", (0.1, 4.0))]
)
def test_linear_galerkin_equals_the_projection_of_the_exact_solution(cls, name, bounds):
    # Sines and cosines of modes 1-3 span an invariant subspace of a Fourier multiplier, so the
    # rank-6 POD basis holds every solution, the Galerkin system is the exact one restricted to
    # it, and the held-out parameters go through the affine terms.
    p, u, t = _dataset(cls, name, bounds, 32, 10, 1.0, 1.0, seed=1, cosines=True)
    data = (p[:6], u[:6], p[6:], u[6:], t)
    rom = _fit(data, cls.info.name, name, rank=6)
    pred = rom.predict(p[6:], u[6:, 0])
    projected = rom.lift(rom.project(u[6:].reshape(-1, 32))).reshape(pred.shape)
    # Both propagators are exact exponentials: rounding only, measured 1.3e-14 (|u| <= 3).
    np.testing.assert_allclose(pred, projected, atol=1e-12)
    np.testing.assert_allclose(pred, u[6:], atol=1e-12)
    assert np.all(rom.projection_errors(u[6:]) < 1e-13)
    # The adaptive BDF integrates the same system to its tolerance (rtol 1e-10, global error
    # measured 2.5e-9, and 1.9e-7 for advection after up to 4 crossings of the domain).
    bdf = _fit(data, cls.info.name, name, rank=6, integrator="bdf")
    np.testing.assert_allclose(bdf.predict(p[6:], u[6:, 0]), projected, atol=1e-6)


def test_complete_basis_reproduces_the_burgers_solver():
    # n = 16 keeps modes 0-5 (11 real dimensions). With a basis of all of them the Galerkin
    # system is the solver's own, stepped by the same ETDRK4 at the same dt: only the phi
    # functions' evaluation (expm against contour integrals) and rounding differ.
    rng = np.random.default_rng(5)
    semi = Burgers(16, nu=0.1, dt=0.01).semi_discrete()
    u0 = semi.dealias(0.3 * rng.standard_normal((14, 16)) + 0.2)
    nu = np.exp(rng.uniform(np.log(0.1), np.log(0.5), 14))
    u, t = _solve(Burgers, 16, "nu", nu, u0, 1.0, 0.01, 21)
    rom = PODGalerkin(rank=11, deim_points=None).fit(
        nu[:10, None], u[:10], pde="burgers", grid=16, dt=0.01, times=t, coefficient_names=["nu"]
    )
    # Measured 2.8e-15 over 100 steps; 1e-11 is the contour coefficients' accuracy.
    np.testing.assert_allclose(rom.predict(nu[10:, None], u[10:, 0]), u[10:], atol=1e-11)
    with pytest.raises(ValueError, match="numerical rank 11"):
        clone(rom).set_params(rank=12).fit(
            nu[:10, None],
            u[:10],
            pde="burgers",
            grid=16,
            dt=0.01,
            times=t,
            coefficient_names=["nu"],
        )


@pytest.mark.parametrize(
    ("case", "pde", "name"), [("burgers", "burgers", "nu"), ("allen_cahn", "allen_cahn", "eps")]
)
def test_errors_decrease_with_rank_and_stay_near_the_projection_floor(request, case, pde, name):
    data = request.getfixturevalue(case)
    errors = []
    for rank in (4, 8, 12):
        rom = _fit(data, pde, name, rank=rank, deim_points=2 * rank)
        errors.append(_error(rom, data))
        u = data[3]
        floor = np.linalg.norm(
            rom.lift(rom.project(u.reshape(-1, u.shape[2]))).reshape(u.shape) - u
        ) / np.linalg.norm(u)
        # The ROM's states lie in the basis' span, so no frame beats its projection; and
        # Galerkin is quasi-optimal here (measured 1.01-1.12x the floor): 1.5x flags a
        # projection that adds its own error, while rounding cannot come near it.
        assert floor <= errors[-1] <= 1.5 * floor, (rank, errors[-1], floor)
    # Measured 0.024, 6.4e-4, 3.6e-5 (Burgers) and 0.13, 0.024, 0.012 (Allen-Cahn).
    assert errors[0] > 1.5 * errors[1] and errors[1] > 1.5 * errors[2], errors


def test_deim_with_m_equal_rank_is_close_to_the_full_nonlinear_term(burgers, allen_cahn):
    full = _error(_fit(burgers, "burgers", "nu", rank=8, deim_points=None), burgers)
    same = _error(_fit(burgers, "burgers", "nu", rank=8, deim_points=8), burgers)
    double = _error(_fit(burgers, "burgers", "nu", rank=8, deim_points=16), burgers)
    # Measured +7.5% at m = rank and 2e-5 relative at m = 2 rank: DEIM's own error is
    # ||(P^T U)^{-1}|| (~5) times the nonlinear snapshots' tail, small against the state's.
    assert abs(same - full) <= 0.2 * full
    assert abs(double - full) <= 0.01 * full
    # Allen-Cahn's cubic needs more points (measured 2.1x at m = rank, +6% at m = 2 rank).
    full = _error(_fit(allen_cahn, "allen_cahn", "eps", rank=8, deim_points=None), allen_cahn)
    double = _error(_fit(allen_cahn, "allen_cahn", "eps", rank=8, deim_points=16), allen_cahn)
    assert abs(double - full) <= 0.2 * full


def test_integrators_agree(burgers):
    rom = _fit(burgers, "burgers", "nu", rank=8, deim_points=16)
    bdf = clone(rom).set_params(integrator="bdf")
    bdf.fit(
        burgers[0],
        burgers[1],
        pde="burgers",
        grid=64,
        dt=0.01,
        times=burgers[4],
        coefficient_names=["nu"],
    )
    _, _, p, u, _ = burgers
    # ETDRK4's time error at dt = 0.01 (fourth order, measured 9e-10 against BDF at rtol
    # 1e-10); a wrong phi function or weight gives >= 1e-4.
    np.testing.assert_allclose(rom.predict(p, u[:, 0]), bdf.predict(p, u[:, 0]), atol=1e-7)


def test_online_step_touches_no_full_size_array(burgers):
    rom = _fit(burgers, "burgers", "nu", rank=8, deim_points=16)
    arrays, attrs = rom.to_arrays()
    for name, array in arrays.items():
        if name != "basis":
            assert 64 not in array.shape, (name, array.shape)
    restored = PODGalerkin.from_arrays(arrays, attrs)
    restored.basis_ = None  # lifting is all the basis is for
    _, _, p, u, _ = burgers
    a0 = rom.project(u[:, 0])
    np.testing.assert_array_equal(restored.integrate(p, a0), rom.integrate(p, a0))


@pytest.mark.parametrize("deim_points", [None, 12])
def test_round_trip_through_arrays(burgers, deim_points):
    rom = _fit(burgers, "burgers", "nu", rank=6, deim_points=deim_points)
    arrays, attrs = rom.to_arrays()
    attrs = json.loads(json.dumps(attrs))  # what a store keeps
    restored = PODGalerkin.from_arrays({k: v.copy() for k, v in arrays.items()}, attrs)
    _, _, p, u, _ = burgers
    np.testing.assert_allclose(
        restored.predict(p, u[:, 0]), rom.predict(p, u[:, 0]), rtol=0, atol=1e-12
    )
    assert restored.get_params() == rom.get_params()


def test_blow_up_raises_instead_of_returning(allen_cahn):
    rom = _fit(allen_cahn, "allen_cahn", "eps", rank=8, deim_points=16)
    _, _, p, u, _ = allen_cahn
    # |u| ~ 30 puts the cubic's rate 3 u^2 dt = 27 far past RK4's real-axis limit 2.79.
    with pytest.raises(BlowUpError, match="reduced state"):
        rom.predict(p, 30 * u[:, 0])


def test_estimator_contract(burgers):
    rom = PODGalerkin(rank=5, deim_points=10)
    assert clone(rom).get_params() == {"rank": 5, "deim_points": 10, "integrator": "etdrk4"}
    with pytest.raises(NotFittedError):
        rom.predict(burgers[2], burgers[3][:, 0])
    p, u, _, _, t = burgers
    assert rom.fit(p, u, pde=Burgers, grid=64, dt=0.01, times=t, coefficient_names=["nu"]) is rom
    again = clone(rom).fit(p, u, pde=Burgers, grid=64, dt=0.01, times=t, coefficient_names=["nu"])
    np.testing.assert_array_equal(again.basis_, rom.basis_)
    # Columns that are not coefficients (the initial state's amplitudes) are ignored.
    wide = clone(rom).fit(
        np.hstack([p, p]),
        u,
        pde="burgers",
        grid=64,
        dt=0.01,
        times=t,
        coefficient_names=["nu", "a1"],
    )
    np.testing.assert_allclose(
        wide.predict(np.hstack([p, 0 * p]), u[:, 0]), rom.predict(p, u[:, 0]), atol=1e-14
    )


@pytest.mark.parametrize(
    ("settings", "fit_kw", "match"),
    [
        ({"rank": 0}, {}, "rank"),
        ({"rank": 2.5}, {}, "rank"),
        ({"deim_points": 0}, {}, "deim_points"),
        ({"integrator": "euler"}, {}, "integrator"),
        ({"rank": 300}, {}, "rank"),
        ({}, {"pde": "no_such_pde"}, "unknown pde"),
        ({}, {"pde": "kdv"}, "constants"),
        ({}, {"pde": "navier_stokes_2d"}, "1D spectral"),
        ({}, {"coefficient_names": ["nu", "rho"]}, "coefficient_names"),
        ({}, {"times": np.linspace(0, 1, 20)}, "times"),
        ({}, {"times": np.r_[0, np.linspace(0.1, 1, 20)] ** 2}, "equally spaced"),
        ({}, {"dt": -0.01}, "dt"),
        ({}, {"grid": 32}, "features"),
    ],
)
def test_bad_fit_input_names_the_argument(burgers, settings, fit_kw, match):
    p, u, _, _, t = burgers
    kw = {"pde": "burgers", "grid": 64, "dt": 0.01, "times": t, "coefficient_names": ["nu"]}
    with pytest.raises(ValueError, match=match):
        PODGalerkin(**settings).fit(p, u, **{**kw, **fit_kw})


def test_bad_predict_input_names_the_argument(burgers):
    rom = _fit(burgers, "burgers", "nu", rank=4, deim_points=8)
    _, _, p, u, _ = burgers
    with pytest.raises(ValueError, match="initial_states"):
        rom.predict(p)
    with pytest.raises(ValueError, match="initial_states"):
        rom.predict(p, u[:, 0, :32])
    with pytest.raises(ValueError, match="params"):
        rom.predict(p[:, 0], u[:, 0])
    with pytest.raises(ValueError, match=r"'nu' must lie in \[1e-05, 100\]"):
        rom.predict(-p, u[:, 0])
    with pytest.raises(ValueError, match="n_frames"):
        rom.integrate(p, rom.project(u[:, 0]), n_frames=0)
