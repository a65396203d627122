"""1D periodic ETDRK4 solvers: exact solutions, convergence order, stability and the contract."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pdeflow.tasks import fields
from pdeflow.tasks.pdes import BlowUpError, Burgers, CFLViolation, exact
from pdeflow.tasks.pdes.advection import Advection
from pdeflow.tasks.pdes.allen_cahn import AllenCahn
from pdeflow.tasks.pdes.base import Coefficient, Defaults, Grid, PDEInfo
from pdeflow.tasks.pdes.etdrk4 import etdrk4_coefficients
from pdeflow.tasks.pdes.fisher_kpp import FisherKPP
from pdeflow.tasks.pdes.heat import Heat
from pdeflow.tasks.pdes.kdv import KdV
from pdeflow.tasks.pdes.kuramoto_sivashinsky import (
    ATTRACTOR_U_MAX,
    KuramotoSivashinsky,
    unit_courant_dt,
)
from pdeflow.tasks.pdes.spectral1d import (
    RK4_REAL_LIMIT,
    PeriodicSpectral1D,
    etdrk4_coefficients_complex,
)

SOLVERS = (Advection, Heat, KdV, KuramotoSivashinsky, FisherKPP, AllenCahn)


@pytest.fixture(autouse=True)
def _one_thread():
    # These arrays are tiny; on the 2 shared cores of a parallel test run, torch's intra-op
    # threads waiting for each other measured 10-100x slowdowns.
    n_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n_threads)


def _on_grid(values: np.ndarray) -> torch.Tensor:
    """Rows (batch, n_x) as states (batch, 1, n_x), float64."""
    return torch.from_numpy(np.asarray(values, dtype=np.float64))[:, None]


def _column(values: list[float]) -> torch.Tensor:
    """One value per sample, shape (batch, 1, 1) to broadcast over a state."""
    return torch.tensor(values, dtype=torch.float64)[:, None, None]


def _slope(dts: list[float], errors: list[float]) -> float:
    """Least-squares slope of log(error) against log(dt)."""
    return float(np.polyfit(np.log(dts), np.log(errors), 1)[0])


def _final(solver: PeriodicSpectral1D, u0: torch.Tensor, t_end: float) -> torch.Tensor:
    return solver.rollout(u0, 2, round(t_end / solver.dt))[:, -1]


# --- Advection and heat: linear, so ETDRK4 is the exact propagator -----------------------------


def test_advection_translates_exactly():
    speeds = [1.0, -0.5, 2.3]
    solver = Advection(64, c=speeds, dt=0.05)
    u0 = torch.exp(torch.sin(2 * math.pi * solver.x)).expand(3, 1, -1)
    frames = solver.rollout(u0, 5, 4)
    times = 0.2 * torch.arange(5, dtype=torch.float64)[None, :, None, None]
    shifted = solver.x - _column(speeds)[:, None] * times
    exact_frames = torch.exp(torch.sin(2 * math.pi * shifted))
    # Measured 2.2e-15. The modes of exp(sin) fall as I_m(1) ~ 1 / (2^m m!), below 1e-25 at the
    # Nyquist cut m = 32, and the propagator has modulus 1, so only rounding (~eps per step and
    # FFT) remains; 1e-12 leaves 300x while a speed wrong by 1e-10 would show.
    assert (frames - exact_frames).abs().max().item() < 1e-12


def _translated(x: torch.Tensor, t: float) -> torch.Tensor:
    """Two advected modes at speed 1 on [0, 1)."""
    return torch.sin(2 * math.pi * 5 * (x - t)) + torch.cos(2 * math.pi * 2 * (x - t))


def _diffused(x: torch.Tensor, t: float) -> torch.Tensor:
    """Two heat modes with nu = 0.5 on [0, 2 pi)."""
    return math.exp(-0.5 * 25 * t) * torch.sin(5 * x) + math.exp(-0.5 * 4 * t) * torch.cos(2 * x)


@pytest.mark.parametrize(
    ("cls", "coefficients", "profile"),
    [(Advection, {"c": 1.0}, _translated), (Heat, {"nu": 0.5}, _diffused)],
    ids=["advection", "heat"],
)
def test_linear_solvers_are_exact_in_time(cls, coefficients, profile):
    # A scheme with time error O(dt^p) changes its error by 64^p over these steps; an exact
    # propagator gives errors at rounding level whatever dt. The largest step is far outside
    # accuracy for any explicit method: c k dt = 2 pi * 5 * 0.37, nu k^2 dt = 0.5 * 25 * 0.37.
    t_end = 0.37
    errors = []
    for n_steps in (1, 4, 16, 64):
        solver = cls(32, dt=t_end / n_steps, **coefficients)
        final = _final(solver, profile(solver.x, 0.0)[None, None], t_end)
        errors.append((final - profile(solver.x, t_end)).abs().max().item())
    # Measured <= 4.7e-15 for all four steps (1 to 64 steps): rounding of O(1) values.
    assert max(errors) < 1e-13, errors


def test_heat_mode_decay():
    nus = [0.01, 0.1, 1.0]
    solver = Heat(32, nu=nus, dt=0.1)
    x, nu = solver.x, _column(nus)
    u0 = (torch.sin(x) + 0.5 * torch.cos(3 * x) + 0.2 * torch.sin(7 * x)).expand(3, 1, -1)
    frames = solver.rollout(u0, 3, 10)
    t = 2.0
    expected = (
        torch.exp(-nu * t) * torch.sin(x)
        + 0.5 * torch.exp(-nu * 9 * t) * torch.cos(3 * x)
        + 0.2 * torch.exp(-nu * 49 * t) * torch.sin(7 * x)
    )
    # Measured 1.3e-15: exp(-nu k^2 t) is applied exactly, only rounding remains; 1e-12 still
    # catches a diffusivity off by 1e-10 relative (mode 3 at nu = 0.1 would move by 1.5e-11).
    assert (frames[:, 2] - expected).abs().max().item() < 1e-12


# --- KdV ---------------------------------------------------------------------------------------


def _soliton(solver: KdV, t: float, betas: list[float], c: float = 4.0) -> torch.Tensor:
    """One soliton per sample, crest at length / 2 at t = 0, shape (batch, 1, n_x)."""
    x = solver.x.numpy()
    rows = [exact.kdv_soliton(x, t, c, b, solver.length / 2, solver.length) for b in betas]
    return _on_grid(np.stack(rows))


# c = 4 on [0, 40): width 2 / sqrt(c / beta) <= 1, so at distance 20 the tail is
# 2 c exp(-sqrt(c / beta) 20) <= 4e-17 and periodicity is invisible in float64. Its spectrum
# falls as exp(-pi k / sqrt(c / beta)) (from k / sinh), to ~1e-13 at the 2/3 cut k = 26.8.
KDV_GRID = {"grid": 512, "length": 40.0}


def test_kdv_soliton():
    betas = [1.0, 0.5]
    solver = KdV(dt=2.5e-4, beta=betas, **KDV_GRID)
    frames = solver.rollout(_soliton(solver, 0.0, betas), 3, 1000)
    errors = [(frames[:, i] - _soliton(solver, 0.25 * i, betas)).abs().max().item() for i in (1, 2)]
    # Measured 1.9e-11 / 9.7e-11 at t = 0.25 and 2.7e-11 / 1.3e-10 at t = 0.5 (beta = 1 / 0.5):
    # time error, the beta = 1 value equal to the convergence run below at this dt, 5x more
    # for the narrower beta = 0.5 soliton. Space and periodicity contribute < 1e-13 (grid
    # comment above). 1e-9 leaves 7x; a speed wrong by 1e-6 shifts the crest 5e-7 by
    # t = 0.5, an error ~1e-6 on slopes up to |u_x| = 2.2.
    assert max(errors) < 1e-9, errors


def test_kdv_order_four_in_time():
    dts = [2e-3, 1e-3, 5e-4, 2.5e-4]
    errors = []
    for dt in dts:
        # These steps reach Courant numbers 0.3 > cfl_max = 0.1: the limit bounds the spurious
        # growth for a constant background (KdV docstring), which 500 steps of a soliton
        # on a quiet one do not feel (measured stable for 2e4 steps at 0.6).
        solver = KdV(dt=dt, beta=1.0, cfl_max=math.inf, **KDV_GRID)
        final = _final(solver, _soliton(solver, 0.0, [1.0]), 0.5)
        errors.append((final - _soliton(solver, 0.5, [1.0])).abs().max().item())
    slope = _slope(dts, errors)
    # Measured 1.1e-7 .. 2.7e-11, slope 4.00; the finest error is far above the ~1e-13
    # space/roundoff floor.
    assert errors[-1] > 1e-12, errors
    assert abs(slope - 4.0) < 0.3, (slope, errors)


def test_kdv_courant_limit_raises():
    solver = KdV(dt=0.01, beta=1.0, **KDV_GRID)
    u0 = torch.cat([_soliton(solver, 0.0, [1.0], c=0.1), _soliton(solver, 0.0, [1.0])])
    # Sample 1 (crest 2) has 6 * 2 * 0.01 / (40 / 512) = 1.54 > 0.1, sample 0 (crest 0.05) 0.038.
    with pytest.raises(CFLViolation) as info:
        solver.rollout(u0, 2, 1)
    assert info.value.samples == [1]
    assert info.value.cfl == pytest.approx([6 * 2.0 * 0.01 / (40 / 512)], rel=1e-12)
    limit = KdV.max_stable_dt(Grid.uniform(512, 40.0, 1), {"beta": (0.5, 2.0)}, 2.0)
    assert limit == pytest.approx(0.1 * (40 / 512) / 12)


# --- Kuramoto-Sivashinsky ----------------------------------------------------------------------


def _ks_initial(n_x: int, length: float, amplitude: float) -> torch.Tensor:
    """Kassam & Trefethen's cos(x') (1 + sin(x')), x' = 2 pi x / length, shape (1, 1, n_x)."""
    x = torch.arange(n_x, dtype=torch.float64) * (2 * math.pi / n_x)
    return amplitude * (torch.cos(x) * (1 + torch.sin(x)))[None, None]


def test_ks_linear_regime_follows_mode_rates():
    # At amplitude 1e-9 the nonlinear term is 1e-9 of the linear one, so each mode must evolve
    # as exp((k^2 - nu k^4) t): growing below the cut-off k = 1 / sqrt(nu), damped above it.
    nus = [1.0, 0.5]
    solver = KuramotoSivashinsky(32, nu=nus, dt=0.1)
    gen = torch.Generator().manual_seed(0)
    v0 = torch.zeros(2, 17, dtype=torch.complex128)
    v0[:, 1:11] = 1e-9 * torch.randn(2, 10, dtype=torch.complex128, generator=gen)
    final = _final(solver, torch.fft.irfft(v0, n=32)[:, None], 3.0)
    k = solver.k
    expected = v0 * torch.exp(3.0 * (k**2 - _column(nus)[:, 0] * k**4))
    growing = (k > 0) & (k < 1)
    assert bool(growing.any()) and bool((k[1:11] > 1.5).any())
    # Relative to the largest mode: nonlinear terms ~1e-9 relative, rounding 1e-16.
    # Measured 1.4e-10; mode 10 (k = 2.86) decays by exp(-175) and must come out as ~0.
    scale = expected.abs().max().item()
    assert (torch.fft.rfft(final[:, 0]) - expected).abs().max().item() < 1e-8 * scale


def test_ks_order_four_in_time():
    # Against a 2560-step reference (its error ~ 7e-4 dt^4 ~ 3e-16, fitted from these runs).
    # The asymptotic range needs small steps: k_max^4 = 1296, and at h = 0.05-0.2 the local
    # slopes measured 2.7-3.6 (amplitudes 0.3-1), the stiff order reduction of the Cox-Matthews
    # scheme (Hochbruck & Ostermann 2005, SIAM J. Numer. Anal. 43(3), 1069-1090).
    length, t_end = 22.0, 2.0
    u0 = _ks_initial(64, length, 0.3)
    reference = _final(KuramotoSivashinsky(64, nu=1.0, dt=t_end / 2560), u0, t_end)
    dts = [t_end / n for n in (40, 80, 160, 320)]
    errors = [
        (_final(KuramotoSivashinsky(64, nu=1.0, dt=dt), u0, t_end) - reference).abs().max().item()
        for dt in dts
    ]
    slope = _slope(dts, errors)
    # Measured errors 3.4e-9 .. 1.0e-12, slope 3.91.
    assert errors[-1] > 1e-14, errors
    assert abs(slope - 4.0) < 0.3, (slope, errors)


def test_ks_long_run_is_chaotic_bounded_and_resolved():
    solver = KuramotoSivashinsky(64, nu=1.0, dt=0.25)
    u0 = _ks_initial(64, 22.0, 1.0).expand(2, 1, -1).clone()
    u0[1, 0] += 1e-10 * torch.sin(2 * math.pi * solver.x / 22.0)
    frames = solver.rollout(u0, 201, 20)  # t = 1000
    assert bool(torch.isfinite(frames).all())
    late = frames[:, 100:]
    # On the L = 22 attractor max|u| measured 3.0 over t in [500, 1000], and the Courant
    # number at most 0.46 (< cfl_max = 0.75, or the rollout would have raised); 5 would mean
    # the nonlinearity no longer carries the energy of the growing modes to the damped ones.
    assert late.abs().max().item() < 5.0
    # Not decayed to a fixed point: the energy stays O(1) (measured mean u^2 1.4, lowest
    # frame 0.84).
    assert late.square().mean(dim=-1).min().item() > 0.1
    # Chaos: 1e-10 apart at t = 0, measured 6e-6 at t = 100 and 3.3 at the end.
    assert (frames[0, -1] - frames[1, -1]).abs().max().item() > 0.1
    # Resolved: time-averaged energy falls by > 1e10 from the energetic modes to the last kept
    # ones (measured 1.6e-12), while the cut modes (3 m >= 64) hold only FFT rounding.
    spectrum = torch.fft.rfft(late[:, :, 0]).abs().square().mean(dim=(0, 1))
    assert spectrum[18:22].max() < 1e-10 * spectrum[1:6].max()
    assert spectrum[22:].max() < 1e-26 * spectrum[1:6].max()


def _amplification(lin: torch.Tensor, mu: torch.Tensor, dt: float) -> torch.Tensor:
    """|R| of one ETDRK4 step for v' = lin v + mu v, mu treated as the explicit part."""
    coef = etdrk4_coefficients_complex(lin, dt)
    v = torch.ones_like(coef.e)
    nv = mu * v
    a = coef.e2 * v + coef.q * nv
    b = coef.e2 * v + coef.q * mu * a
    c = coef.e2 * a + coef.q * (2 * mu * b - nv)
    r = coef.e * v + coef.f1 * nv + 2 * coef.f2 * mu * (a + b) + coef.f3 * mu * c
    return r.abs()


@pytest.mark.parametrize(
    ("n_x", "length", "u_max"), [(64, 22.0, 3.0), (256, 22.0, 3.0), (128, 32 * math.pi, 10.0)]
)
def test_ks_stability_limit_from_the_coefficients(n_x, length, u_max):
    # Frozen about u = u_max, mode k has L = k^2 - k^4 and the explicit -i u_max k. At the
    # derived limit no mode may grow faster than the PDE (max(1, e^{hL})); at twice the limit
    # some mode must, or the bound would be needlessly strict.
    m = torch.arange(n_x // 2 + 1)
    k = (2 * math.pi / length) * m[3 * m < n_x].double()
    lin = k**2 - k**4
    grid = Grid.uniform(n_x, length, 1)
    limit = unit_courant_dt(grid, 1.0, u_max)

    def growth(dt: float) -> float:
        exact_growth = torch.exp(dt * lin).clamp(min=1.0)
        return (_amplification(lin, -1j * u_max * k, dt) / exact_growth).max().item()

    # Measured exactly 1 at the limit (the k = 0 mode); 4.0, 4.0 and 2.5 at twice it.
    assert growth(limit) < 1 + 1e-12
    assert growth(2 * limit) > 1.5
    # The limit does not shrink with the grid, unlike an advective CFL condition.
    assert limit == pytest.approx(unit_courant_dt(Grid.uniform(2 * n_x, length, 1), 1.0, u_max))
    # The solver's limit: CFL_MAX of it, |u| raised to the attractor's bound 4 / sqrt(nu).
    bound = max(u_max, ATTRACTOR_U_MAX)
    for nu in (1.0, (1.0, 3.0)):
        assert KuramotoSivashinsky.max_stable_dt(grid, {"nu": nu}, u_max) == pytest.approx(
            KuramotoSivashinsky.CFL_MAX * unit_courant_dt(grid, 1.0, bound)
        )
    assert KuramotoSivashinsky.max_stable_dt(grid, {"nu": 0.25}) == pytest.approx(
        KuramotoSivashinsky.CFL_MAX * unit_courant_dt(grid, 0.25, 2 * ATTRACTOR_U_MAX)
    )


def test_ks_large_dt_raises_instead_of_returning():
    # A uniform flow U plus noise: the frozen-coefficient analysis is exact for the mean flow
    # (Galilean invariance moves it into the advection of the perturbation). At twice the limit
    # for U = 3 the mode k_* grows 4x per step (test above).
    dt = 2 * unit_courant_dt(Grid.uniform(64, 22.0, 1), 1.0, 3.0)
    gen = torch.Generator().manual_seed(4)
    u0 = _column([0.05, 3.0]) + 1e-3 * torch.randn(2, 1, 64, generator=gen, dtype=torch.float64)
    with pytest.raises(CFLViolation) as info:
        KuramotoSivashinsky(64, nu=1.0, dt=dt).rollout(u0, 41, 5)
    # Sample 0 has C ~ 0.02, sample 1 C ~ 2 > cfl_max = 0.75.
    assert info.value.samples == [1]
    assert info.value.cfl[0] == pytest.approx(2.0, rel=0.01)
    # With the guard off the instability is real (measured: inf at t = 16.5), never a return.
    with pytest.raises(BlowUpError):
        KuramotoSivashinsky(64, nu=1.0, dt=dt, cfl_max=math.inf).rollout(u0[1:], 41, 5)


# --- Fisher-KPP --------------------------------------------------------------------------------


def test_fisher_uniform_state_is_logistic_to_fourth_order():
    rhos = [1.0, 2.0, 5.0]
    dts = [0.1, 0.05, 0.025, 0.0125]
    errors = []
    for dt in dts:
        solver = FisherKPP(16, nu=0.5, rho=rhos, dt=dt)
        final = _final(solver, torch.full((3, 1, 16), 0.1, dtype=torch.float64), 1.0)
        expected = _column([exact.logistic(1.0, 0.1, rho) for rho in rhos])
        errors.append((final - expected).abs().max().item())
    # Only k = 0 is excited and there L = 0, so ETDRK4 is RK4 on the logistic ODE: measured
    # 5.0e-5 .. 1.1e-8 (rho dt up to 0.5), slope 4.05. Diffusion must not touch a uniform state.
    assert abs(_slope(dts, errors) - 4.0) < 0.3, errors
    assert errors[-1] < 1e-7


def _fisher_fronts(
    solver: FisherKPP, t: float, nus: list[float], rhos: list[float]
) -> torch.Tensor:
    """A plateau of 1 around length / 2 with two outgoing Ablowitz-Zeppetella fronts."""
    x = solver.x.numpy() - solver.length / 2
    rows = [
        exact.fisher_kpp_wave(x, t, nu, rho, 15.0) * exact.fisher_kpp_wave(-x, t, nu, rho, 15.0)
        for nu, rho in zip(nus, rhos, strict=True)
    ]
    return _on_grid(np.stack(rows))


# nu = rho / 6 gives kappa = sqrt(rho / (6 nu)) = 1 for every sample: the fronts start 30 apart
# and >= 17 - 2 * 5 rho / 6 >= 13.6 from the periodic seam at t = 2. The product ansatz solves
# the PDE up to -2 nu w_R' w_L' + rho w_R w_L (1 - w_R)(1 - w_L) ~ exp(-30) ~ 1e-13, and the
# tails at the seam are exp(-2 * 13.6) ~ 1e-12; the spectrum falls as exp(-pi k / kappa),
# below 1e-16 at the 2/3 cut k = 16.7.
FISHER_NUS, FISHER_RHOS = [1 / 12, 1 / 6, 1 / 3], [0.5, 1.0, 2.0]


def test_fisher_travelling_fronts():
    solver = FisherKPP(512, nu=FISHER_NUS, rho=FISHER_RHOS, dt=0.01, length=64.0)
    frames = solver.rollout(_fisher_fronts(solver, 0.0, FISHER_NUS, FISHER_RHOS), 3, 100)
    expected = _fisher_fronts(solver, 2.0, FISHER_NUS, FISHER_RHOS)
    # Measured 4.6e-13, 1.7e-11, 6.9e-10 for rho = 0.5, 1, 2: time error growing as
    # (rho dt)^4 (rho = 1 matches the run below at dt = 0.01); at dt = 0.0025 all three fall
    # to <= 2.7e-12, the ansatz and seam floor estimated above. The fronts move 0.8-3.3: a speed
    # wrong by 1e-6 gives an error ~1e-7.
    assert (frames[:, 2] - expected).abs().max().item() < 5e-9


def test_fisher_order_four_in_time():
    dts = [0.1, 0.05, 0.025, 0.0125]
    errors = []
    for dt in dts:
        solver = FisherKPP(512, nu=1 / 6, rho=1.0, dt=dt, length=64.0)
        final = _final(solver, _fisher_fronts(solver, 0.0, [1 / 6], [1.0]), 2.0)
        errors.append((final - _fisher_fronts(solver, 2.0, [1 / 6], [1.0])).abs().max().item())
    # Measured 1.6e-7 .. 4.1e-11, slope 3.97; the finest is 40x above the ~1e-12 ansatz floor.
    assert abs(_slope(dts, errors) - 4.0) < 0.3, errors


# --- Allen-Cahn --------------------------------------------------------------------------------


def test_allen_cahn_uniform_states_follow_the_ode():
    u0s = [-2.0, -0.5, 0.01, 0.3, 1.5]
    solver = AllenCahn(16, eps=0.1, dt=0.01)
    final = _final(solver, _column(u0s).expand(-1, 1, 16), 2.0)
    expected = _column([exact.allen_cahn_uniform(2.0, u0) for u0 in u0s])
    # RK4 on u' = u - u^3 (k = 0 only, L = 0 there). Measured 2.5e-10: the error at dt = 0.025
    # was 9.0e-9 and falls by 2.5^4 = 39. 2e-9 leaves 8x; a wrong sign or factor gives O(1).
    assert (final - expected).abs().max().item() < 2e-9


def test_allen_cahn_periodic_fronts_are_stationary():
    epss = [0.2, 0.3, 0.5]
    solver = AllenCahn(512, eps=epss, dt=0.1)
    x = solver.x.numpy()
    u0 = _on_grid(np.stack([exact.allen_cahn_periodic_front(x, e, solver.length) for e in epss]))
    # The exact solution is the tanh front made periodic: for eps = 0.2 they agree near x = 0.
    near = slice(0, 64)
    tanh = np.tanh(x[near] / (math.sqrt(2) * 0.2))
    assert np.abs(u0[0, 0, near].numpy() - tanh).max() < 1e-6
    frames = solver.rollout(u0, 3, 50)
    # ETD schemes keep equilibria of L v + N(v) = 0 (every stage returns v), so the error is
    # the exact solution's (<= 2.3e-13 from scipy's ellipj for eps = 0.2), the spectral tail
    # (exp(-pi eps k / sqrt 2) < 1e-16 at the 1/2-rule cut k = 128) and rounding amplified by
    # the contour coefficients. Measured 1.2e-13 after 100 steps.
    assert (frames - u0[:, None]).abs().max().item() < 1e-11


def test_allen_cahn_order_four_in_time():
    x = torch.arange(128, dtype=torch.float64) * (2 * math.pi / 128)
    u0 = (0.5 * torch.sin(x) + 0.3 * torch.cos(3 * x) + 0.2 * torch.sin(5 * x))[None, None]
    t_end = 2.0
    # Reference error ~ 7e-3 dt^4 ~ 3e-15 (constant fitted from these runs).
    reference = _final(AllenCahn(128, eps=0.1, dt=t_end / 2560), u0, t_end)
    dts = [t_end / n for n in (10, 20, 40, 80)]
    errors = [
        (_final(AllenCahn(128, eps=0.1, dt=dt), u0, t_end) - reference).abs().max().item()
        for dt in dts
    ]
    # Measured 9.8e-6 .. 2.6e-9, slope 3.95.
    assert abs(_slope(dts, errors) - 4.0) < 0.3, errors


@pytest.mark.parametrize("cls", [FisherKPP, AllenCahn])
def test_reaction_stability_limit_is_sharp(cls):
    # Near the stable uniform state 1 the reaction is linear with rate -rho (Fisher) or -2
    # (Allen-Cahn), and k = 0 is stepped by RK4, whose real-axis limit is exact. Below it the
    # state returns to 1; above it 1 loses stability and the scheme settles on spurious steady
    # states (Yee, Sweby & Griffiths 1991), bounded, so no finiteness check can see them.
    gen = torch.Generator().manual_seed(3)
    noise = 1e-3 * torch.randn(2, 1, 32, generator=gen, dtype=torch.float64)
    noise -= noise.mean()
    kwargs = {"nu": 0.01, "rho": (1.0, 3.0)} if cls is FisherKPP else {"eps": 0.05}
    limit = cls.max_stable_dt(Grid.uniform(32, 2 * math.pi, 1), kwargs)
    kwargs = {"nu": 0.01, "rho": 3.0} if cls is FisherKPP else kwargs
    assert limit == pytest.approx(RK4_REAL_LIMIT / (3.0 if cls is FisherKPP else 2.0))
    stable = cls(32, dt=0.95 * limit, **kwargs).rollout(1.0 + noise, 21, 50)
    # Measured 7e-16 after 1000 steps: |R| < 1 on the decaying mode, rounding only.
    assert (stable[:, -1] - 1.0).abs().max().item() < 1e-12
    unstable = cls(32, dt=1.1 * limit, **kwargs).rollout(1.0 + noise, 21, 50)
    assert bool(torch.isfinite(unstable).all())
    # Spatial means at the last frame: measured 1.047, 0.735 (Fisher), 0.866, 0.905 (AC).
    assert (unstable[:, -1].mean(dim=(1, 2)) - 1.0).abs().min().item() > 0.01


# --- Shared machinery --------------------------------------------------------------------------


class _BurgersOnBase(PeriodicSpectral1D):
    """Burgers in a few lines on the base: must reproduce pdeflow.tasks.pdes.burgers."""

    info = PDEInfo(
        name="burgers_on_base",
        dim=1,
        fields=("u",),
        units={"u": "1"},
        boundary="periodic",
        description="test",
        coefficients={"nu": Coefficient(range=(1e-3, 1.0), sample=("uniform", 0.1, 0.2))},
        defaults=Defaults(n=64, length=2 * math.pi, t_end=1.0, dt=0.01),
    )

    @staticmethod
    def _operators(k, params):
        return -params["nu"] * k**2, -0.5j * k[None]

    def _pointwise(self, u):
        return u.square_()


def test_base_class_reproduces_burgers():
    nus = [0.05, 0.2]
    x = torch.arange(64, dtype=torch.float64) * (2 * math.pi / 64)
    u0 = torch.stack([torch.sin(x), 0.5 * torch.cos(2 * x) + 0.3 * torch.sin(3 * x)])[:, None]
    ours = _BurgersOnBase(64, nu=nus, dt=0.01).rollout(u0, 6, 20)
    theirs = Burgers(64, nu=nus, dt=0.01).rollout(u0, 6, 20)
    # Same arithmetic in the same order: measured difference exactly 0; 1e-14 allows a
    # different FFT blocking.
    assert (ours - theirs).abs().max().item() < 1e-14


def test_complex_coefficients_match_closed_forms():
    h = 0.2
    big = torch.tensor([3.0 + 0j, 2.5j, -4.0 + 3.0j, 0.5 + 40.0j], dtype=torch.complex128)
    tiny = torch.tensor([0.0, 1e-9j, 1e-9], dtype=torch.complex128)
    coef = etdrk4_coefficients_complex(torch.cat([big, tiny]) / h, h)
    z, ez = big, torch.exp(big)
    direct = [
        h * (torch.exp(z / 2) - 1) / z,
        h * (-4 - z + ez * (4 - 3 * z + z**2)) / z**3,
        h * (2 + z + ez * (z - 2)) / z**3,
        h * (-4 - 3 * z - z**2 + ez * (4 - z)) / z**3,
    ]
    got = [coef.q, coef.f1, coef.f2, coef.f3]
    for mine, ref in zip(got, direct, strict=True):
        # |z| >= 2.5: the closed forms lose at most ~10 eps to cancellation.
        rel = ((mine[:4] - ref) / ref).abs().max().item()
        assert rel < 1e-12, rel
    # Taylor values at z -> 0 (RK4's weights): Q -> h/2, f_i -> h/6, to O(|z|) ~ 1e-9.
    assert torch.allclose(
        coef.q[4:], torch.full((3,), h / 2 + 0j, dtype=torch.complex128), atol=1e-10
    )
    for f in (coef.f1, coef.f2, coef.f3):
        assert torch.allclose(
            f[4:], torch.full((3,), h / 6 + 0j, dtype=torch.complex128), atol=1e-10
        )
    # Real, non-positive entries take the path of pdeflow.tasks.pdes.etdrk4 unchanged.
    lin = -torch.linspace(0.0, 50.0, 11, dtype=torch.float64)
    ours, theirs = etdrk4_coefficients_complex(lin, h), etdrk4_coefficients(lin, h)
    for mine, ref in zip(ours, theirs, strict=True):
        assert torch.equal(mine.real, ref) and not mine.imag.any()


# --- Contract over every solver ----------------------------------------------------------------

# Per-sample coefficients (3 samples) and a dt that keeps every Courant number < 0.1 on n_x = 32.
CASES = {
    Advection: ({"c": [0.5, -1.0, 2.0]}, 0.01),
    Heat: ({"nu": [0.05, 0.2, 1.0]}, 0.01),
    KdV: ({"beta": [0.5, 1.0, 2.0]}, 1e-3),
    KuramotoSivashinsky: ({"nu": [0.5, 1.0, 2.0]}, 0.05),
    FisherKPP: ({"nu": [0.05, 0.2, 1.0], "rho": [1.0, 3.0, 0.5]}, 0.01),
    AllenCahn: ({"eps": [0.1, 0.3, 0.6]}, 0.01),
}


def _contract_state(solver: PeriodicSpectral1D, seed: int) -> torch.Tensor:
    """Smooth states in [0.1, 0.9] (physical for Fisher-KPP), shape (3, 1, n_x), float64."""
    gen = torch.Generator().manual_seed(seed)
    phase = 2 * math.pi * solver.x.double() / solver.length
    k = torch.arange(1, 4, dtype=torch.float64)
    amp = torch.rand(3, 3, 2, generator=gen, dtype=torch.float64) / k[:, None]
    waves = amp[..., 0] @ torch.cos(k[:, None] * phase) + amp[..., 1] @ torch.sin(
        k[:, None] * phase
    )
    return (0.5 + 0.4 * waves / waves.abs().amax(dim=1, keepdim=True))[:, None]


@pytest.mark.parametrize("cls", SOLVERS, ids=lambda c: c.info.name)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_contract_shapes_dtype_and_determinism(cls, dtype):
    coefficients, dt = CASES[cls]
    solver = cls(32, dt=dt, dtype=dtype, **coefficients)
    u0 = _contract_state(solver, seed=1)
    frames = solver.rollout(u0, 4, 3)
    assert frames.shape == (3, 4, 1, 32) and frames.dtype == dtype
    assert solver.x.shape == (32,) and solver.x.dtype == dtype
    assert solver.dx == pytest.approx(solver.length / 32)
    assert torch.equal(frames[:, 0], u0.to(dtype))
    assert solver.step(u0).shape == (3, 1, 32) and solver.step(u0).dtype == dtype
    assert torch.equal(frames, solver.rollout(u0, 4, 3))
    for name in cls.info.parameter_names:
        # The coefficients as given, float64 (the operators are built from them in float64).
        assert getattr(solver, name).shape == (3,) and getattr(solver, name).dtype == torch.float64
    with pytest.raises(AttributeError):
        solver.dt = 1.0
    assert repr(solver).startswith(f"{cls.__name__}(grid=[32]")
    if dtype == torch.float32:
        reference = cls(32, dt=dt, **coefficients).rollout(u0, 4, 3)
        # float32 rounding: ~eps log2(32) = 3e-7 relative per FFT pair, 4 pairs per step,
        # 9 steps, accumulating at worst linearly: 1e-5. Measured <= 3.4e-7 for every solver.
        scale = reference.abs().max().item()
        assert (frames.double() - reference).abs().max().item() < 1e-5 * scale


@pytest.mark.parametrize("cls", SOLVERS, ids=lambda c: c.info.name)
def test_contract_batch_equals_single_runs(cls):
    coefficients, dt = CASES[cls]
    solver = cls(32, dt=dt, **coefficients)
    u0 = _contract_state(solver, seed=2)
    batched = solver.rollout(u0, 4, 5)
    singles = torch.cat(
        [
            cls(32, dt=dt, **{n: v[i] for n, v in coefficients.items()}).rollout(
                u0[i : i + 1], 4, 5
            )
            for i in range(3)
        ]
    )
    # Each sample sees the same arithmetic alone or in a batch (measured difference 0);
    # 1e-12 allows FFT kernels that block the batch differently.
    assert (batched - singles).abs().max().item() < 1e-12
    # The coefficients must matter, or the comparison could not fail.
    same = cls(32, dt=dt, **{n: v[0] for n, v in coefficients.items()}).rollout(u0, 4, 5)
    assert (same[2] - batched[2]).abs().max().item() > 1e-6
    # The step is the rollout's step.
    assert (solver.step(u0) - solver.rollout(u0, 2, 1)[:, 1]).abs().max().item() < 1e-15


@pytest.mark.parametrize("cls", SOLVERS, ids=lambda c: c.info.name)
def test_contract_nan_names_the_sample(cls):
    coefficients, dt = CASES[cls]
    solver = cls(32, dt=dt, **coefficients)
    u0 = _contract_state(solver, seed=3)
    u0[1, 0, 5] = float("nan")
    with pytest.raises(BlowUpError) as info:
        solver.rollout(u0, 3, 2)
    assert info.value.samples == [1] and info.value.time == 0.0
    assert not isinstance(info.value, CFLViolation)


@pytest.mark.parametrize("cls", SOLVERS, ids=lambda c: c.info.name)
def test_contract_registry_metadata(cls):
    info = cls.info
    assert info.name in {"advection", "heat", "kdv", "ks", "fisher_kpp", "allen_cahn"}
    assert (info.dim, info.fields, info.boundary, info.stationary) == (1, ("u",), "periodic", False)
    assert set(info.units) == {"u"} and info.per_run == ()
    assert set(info.parameter_names) == set(CASES[cls][0])
    assert len({c.info.name for c in SOLVERS}) == len(SOLVERS)
    # A Grid or points per axis with a length build the same solver.
    coefficients, dt = CASES[cls]
    by_grid = cls(Grid.uniform(32, 3.0, 1), dt=dt, **coefficients)
    by_count = cls(32, dt=dt, length=3.0, **coefficients)
    u0 = _contract_state(by_grid, seed=4)
    assert torch.equal(by_grid.rollout(u0, 3, 2), by_count.rollout(u0, 3, 2))


def _invalid_cases():
    for cls in SOLVERS:
        coefficients, dt = CASES[cls]
        scalars = {n: v[0] for n, v in coefficients.items()}
        yield cls, {"n_x": 31}, "n"
        yield cls, {"n_x": 6}, "n"
        yield cls, {"dt": 0.0}, "dt"
        yield cls, {"dt": -dt}, "dt"
        yield cls, {"length": 0.0}, "grid: lengths"
        yield cls, {"dtype": torch.float16}, "dtype"
        yield cls, {"cfl_max": 0.0}, "cfl_max"
        for name, spec in cls.info.coefficients.items():
            yield cls, {name: float("nan")}, name
            yield cls, {name: [scalars[name]] * 2 + [float("inf")]}, name
            yield cls, {name: 2 * spec.range[1]}, name
            if spec.range[0] > 0:  # a positive lower end: strictly positive
                yield cls, {name: 0.0}, name
                yield cls, {name: [scalars[name], -scalars[name]]}, name
        if len(cls.info.parameter_names) > 1:
            first, second = cls.info.parameter_names
            yield cls, {first: [scalars[first]] * 2, second: [scalars[second]] * 3}, "per-sample"


@pytest.mark.parametrize(("cls", "override", "field"), list(_invalid_cases()))
def test_contract_invalid_arguments_name_the_field(cls, override, field):
    coefficients, dt = CASES[cls]
    kwargs = {"n_x": 32, "dt": dt, **{n: v[0] for n, v in coefficients.items()}, **override}
    n_x = kwargs.pop("n_x")
    with pytest.raises(ValueError, match=rf"^{field} "):
        cls(n_x, **kwargs)


@pytest.mark.parametrize("cls", SOLVERS, ids=lambda c: c.info.name)
def test_contract_state_must_match_the_batch(cls):
    coefficients, dt = CASES[cls]
    solver = cls(32, dt=dt, **coefficients)
    with pytest.raises(ValueError, match="^u0 "):
        solver.rollout(torch.zeros(2, 1, 32), 2, 1)
    with pytest.raises(ValueError, match="^u "):
        solver.step(torch.zeros(3, 1, 30))
    with pytest.raises(ValueError, match="^u0 "):
        solver.rollout(torch.zeros(3, 32), 2, 1)
    with pytest.raises(ValueError, match="^n_frames "):
        solver.rollout(torch.zeros(3, 1, 32), 0, 1)


# --- The PDEs' own defaults ----------------------------------------------------------------------


def _default_initial_states(cls: type, seeds: np.ndarray) -> tuple[torch.Tensor, float]:
    """States of the class's default initial family, (batch, 1, n), and their bound max|u0|.

    The families of the generate config (tasks/solve.py): ``modes`` sums a_k sin(2 pi k x / L)
    with a_k uniform in the amplitude range, ``fourier`` is ``fields.fourier_series`` (two
    waves, k <= 4), optionally rescaled onto [0, 1]; the bound is the config's ``u_max``.
    """
    d = cls.info.defaults
    ic = dict(d.initial_condition)
    amp = ic.get("amplitude", {"low": -1.0, "high": 1.0})
    low, high = amp["low"], amp["high"]
    x = Grid.uniform(d.n, d.length, 1).coords()[0]
    if ic["kind"] == "modes":
        modes = ic.get("modes", (1, 2, 3))
        rows = []
        for seed in seeds:
            a = np.random.default_rng(seed).uniform(low, high, len(modes))
            waves = [
                a_k * np.sin(2 * np.pi * k * x / d.length) for a_k, k in zip(a, modes, strict=True)
            ]
            rows.append(sum(waves))
        return _on_grid(np.stack(rows)), max(abs(low), abs(high)) * len(modes)
    assert ic["kind"] == "fourier", ic
    values = fields.fourier_series((d.n,), d.length, seeds, amplitude=(low, high))
    if ic.get("rescale") != "unit":
        return _on_grid(values), max(abs(low), abs(high)) * 2
    low_s, high_s = values.min(axis=1, keepdims=True), values.max(axis=1, keepdims=True)
    return _on_grid((values - low_s) / (high_s - low_s)), 1.0


@pytest.mark.parametrize("cls", (Burgers, *SOLVERS), ids=lambda c: c.info.name)
def test_defaults_are_stable_and_move_the_state(cls):
    # `generate: {pde: NAME, n_samples: 16, design: random}` gets exactly these settings: they
    # must pass the stability check with margin, warn about nothing, and run the whole horizon
    # with every sample changing. Coefficients alternate between the ends of the defaults.
    d, info = cls.info.defaults, cls.info
    grid = Grid.uniform(d.n, d.length, 1)
    ranges = {name: (lo, hi) for name, (_, lo, hi) in info.default_parameters.items()}
    u0, bound = _default_initial_states(cls, np.arange(16))
    assert d.dt <= 0.75 * cls.max_stable_dt(grid, ranges, bound)
    assert cls.resolution_warning(grid, ranges, bound) is None
    coefficients = {
        name: [(lo, hi)[(i // (j + 1)) % 2] for i in range(16)]
        for j, (name, (lo, hi)) in enumerate(ranges.items())
    }
    steps = max(1, math.ceil(d.t_end / (d.n_frames - 1) / d.dt - 1e-9))
    solver = cls(grid, dt=d.t_end / (d.n_frames - 1) / steps, **coefficients)
    frames = solver.rollout(u0, d.n_frames, steps)
    # The largest change of any frame from u0: advection at c = 4 is back at u0 at t = 0.25,
    # 0.5, ... (whole periods). Measured >= 0.047 relative (heat at nu = 0.01).
    change = (frames - frames[:, :1]).flatten(2).norm(dim=2).amax(dim=1)
    assert (change / frames[:, 0].flatten(1).norm(dim=1)).min().item() > 0.02
    # Bounded: no sample grew past the KS attractor or a maximum principle (1.8 max|u0|).
    assert frames.abs().max().item() < max(8.0, 1.8 * u0.abs().max().item())
