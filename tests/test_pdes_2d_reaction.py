"""2D reaction-diffusion (FitzHugh-Nagumo, Gray-Scott): ODE limits, modes, order, the contract."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

from pdeflow.tasks.pdes.base import Grid
from pdeflow.tasks.pdes.errors import BlowUpError
from pdeflow.tasks.pdes.fitzhugh_nagumo2d import FitzHugh2D
from pdeflow.tasks.pdes.gray_scott2d import GrayScott2D
from pdeflow.tasks.pdes.spectral1d import RK4_REAL_LIMIT

SOLVERS = (FitzHugh2D, GrayScott2D)
# PDEBench's FitzHugh-Nagumo setting (the centre of the default box).
PDEBENCH = {"Du": 1e-3, "Dv": 5e-3, "k": 5e-3}


@pytest.fixture(autouse=True)
def _one_thread():
    # Small arrays: on 2 shared cores, torch's intra-op threads waiting for each other cost more
    # than they save.
    n_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n_threads)


def _uniform(values: list[tuple[float, float]], n: int) -> torch.Tensor:
    """Spatially uniform states, one (u, v) pair per sample: shape (batch, 2, n, n)."""
    return torch.tensor(values, dtype=torch.float64)[:, :, None, None].expand(-1, -1, n, n)


def _grid(cls, n: int) -> Grid:
    """n x n points on the PDE's own square."""
    return Grid.uniform(n, cls.info.defaults.length, 2)


def _default_bounds(cls) -> dict[str, float | tuple[float, float]]:
    """Every coefficient's default: its sampled (low, high) or its held value."""
    info = cls.info
    return {k: v[1:] for k, v in info.default_parameters.items()} | info.default_constants


def _mid_coefficients(cls) -> dict[str, float]:
    """One value per sampled coefficient: the middle of its default range."""
    return {k: (lo + hi) / 2 for k, (_, lo, hi) in cls.info.default_parameters.items()}


def _slope(dts: list[float], errors: list[float]) -> float:
    """Least-squares slope of log(error) against log(dt)."""
    return float(np.polyfit(np.log(dts), np.log(errors), 1)[0])


def _final(solver, u0: torch.Tensor, t_end: float) -> torch.Tensor:
    return solver.rollout(u0, 2, round(t_end / solver.dt))[:, -1]


def _ode(rhs, y0: list[float], t_end: float) -> np.ndarray:
    sol = solve_ivp(rhs, (0.0, t_end), y0, method="DOP853", rtol=1e-10, atol=1e-12)
    return sol.y[:, -1]


# --- FitzHugh-Nagumo ------------------------------------------------------------------------


def test_fitzhugh_uniform_state_follows_the_ode():
    states, ks, t_end = [(0.8, -0.3), (-1.5, 0.4), (0.1, 0.0)], [5e-3, -0.2, 0.3], 2.0
    solver = FitzHugh2D(6, dt=2e-3, **(PDEBENCH | {"k": ks}))
    final = _final(solver, _uniform(states, 6), t_end)
    # A uniform state has an exactly zero discrete Laplacian (differences taken first).
    assert torch.equal(final, final[..., :1, :1].expand_as(final))
    for (u0, v0), k, got in zip(states, ks, final[:, :, 0, 0], strict=True):
        exact = _ode(lambda t, y, k=k: [y[0] - y[0] ** 3 - k - y[1], y[0] - y[1]], [u0, v0], t_end)
        # Measured <= 6e-12: RK4's error C dt^4 t at dt = 2e-3 plus solve_ivp's own (rtol
        # 1e-10); 1e-9 leaves 170x, while a wrong sign or coefficient gives O(1e-2).
        assert np.abs(got.numpy() - exact).max() < 1e-9


def _neumann_mode(solver: FitzHugh2D, m: int, l_: int) -> tuple[torch.Tensor, float]:
    """Discrete eigenvector cos(pi m (i + 1/2) / n) cos(pi l (j + 1/2) / n) and its eigenvalue."""
    n = solver.n
    phase = (solver.x + solver.length / 2) / solver.length  # (i + 1/2) / n
    mode = torch.cos(math.pi * m * phase)[:, None] * torch.cos(math.pi * l_ * phase)[None, :]
    rate = -4 / solver.dx**2 * (math.sin(math.pi * m / (2 * n)) ** 2)
    rate -= 4 / solver.dx**2 * (math.sin(math.pi * l_ * 1 / (2 * n)) ** 2)
    return mode, rate


def test_fitzhugh_neumann_mode_decays_at_the_discrete_rate():
    du, dv, dt, n_steps = 0.02, 0.05, 0.01, 50
    solver = FitzHugh2D(16, dt=dt, Du=du, Dv=dv, k=0.0, reaction=False)
    mode, rate = _neumann_mode(solver, 3, 5)
    u0 = torch.stack([mode, 0.5 * mode])[None]
    final = solver.rollout(u0, 2, n_steps)[0, -1]
    for channel, d, amp in ((0, du, 1.0), (1, dv, 0.5)):
        z = d * rate * dt
        rk4 = 1 + z + z**2 / 2 + z**3 / 6 + z**4 / 24
        # The mode is an eigenvector of the scheme: it must scale by RK4's polynomial exactly.
        # Measured 2e-15 (rounding of 50 steps at amplitude <= 1); 1e-13 leaves 50x, while
        # a Laplacian wrong at the walls mixes in other modes at O(1e-2).
        assert (final[channel] - amp * rk4**n_steps * mode).abs().max().item() < 1e-13
        # And the continuous-in-time decay e^{D lambda t} to RK4's accuracy: measured 3e-9
        # (the amplitudes fell to 0.46 and 0.14).
        exact = amp * math.exp(d * rate * dt * n_steps) * mode
        assert (final[channel] - exact).abs().max().item() < 1e-7


def test_fitzhugh_neumann_diffusion_conserves_the_mean():
    n = 12
    u0 = FitzHugh2D.initial_condition(_grid(FitzHugh2D, n), [0, 1])
    solver = FitzHugh2D(n, dt=0.01, Du=0.01, Dv=0.03, k=0.0, reaction=False)
    frames = solver.rollout(u0, 4, 25)
    means = frames.mean(dim=(-1, -2))
    # Measured 6e-17: the no-flux faces telescope, so only rounding of the 144-cell sums
    # remains; the means are O(0.1), and a leaking wall would change them at O(1e-2).
    assert (means - means[:, :1]).abs().max().item() < 1e-13
    assert (frames[:, -1].std(dim=(-1, -2)) < 0.5 * frames[:, 0].std(dim=(-1, -2))).all()


def _smooth_fhn(n: int, length: float = 2.0) -> torch.Tensor:
    x = (torch.arange(n, dtype=torch.float64) + 0.5 - n / 2) * (length / n)
    u = 0.8 * torch.cos(math.pi * x)[:, None] * torch.cos(0.5 * math.pi * x)[None, :] + 0.3
    v = 0.4 * torch.sin(0.5 * math.pi * x)[:, None] + 0 * x[None, :]
    return torch.stack([u, v])[None]


def test_fitzhugh_rk4_order_four_in_time():
    u0, t_end = _smooth_fhn(12), 1.6
    params = {"Du": 0.02, "Dv": 0.04, "k": 0.05}
    reference = _final(FitzHugh2D(12, dt=0.0025, **params), u0, t_end)
    dts = [0.08, 0.04, 0.02, 0.01]
    errors = [
        (_final(FitzHugh2D(12, dt=dt, **params), u0, t_end) - reference).abs().max().item()
        for dt in dts
    ]
    # RK4 has order 4: measured slope 4.04 (errors 4.5e-7 -> 9.9e-11). +-0.3 as for every
    # order test.
    assert abs(_slope(dts, errors) - 4) < 0.3


def test_fitzhugh_max_stable_dt_is_the_diffusion_limit():
    n, d = 16, 0.05
    # Without reactions only diffusion limits dt: the checkerboard mode has the eigenvalue
    # closest to -8 d / dx^2, so RK4 is stable just below 2.785 dx^2 / (8 d) and unstable above.
    limit = RK4_REAL_LIMIT * (2.0 / n) ** 2 / (8 * d)
    for factor, grows in ((0.99, False), (1.05, True)):
        solver = FitzHugh2D(n, dt=factor * limit, Du=d, Dv=d, k=0.0, reaction=False)
        mode, _ = _neumann_mode(solver, n - 1, n - 1)
        final = solver.rollout(torch.stack([mode, mode])[None], 2, 40)[0, -1]
        shrink = final.abs().max().item() / mode.abs().max().item()
        assert (shrink > 1) == grows
    bound = FitzHugh2D.max_stable_dt(_grid(FitzHugh2D, n), {"Du": d, "Dv": d, "k": 0.0}, 0.5)
    assert bound == pytest.approx(RK4_REAL_LIMIT / (8 * d / (2.0 / n) ** 2 + 2.0))


def test_fitzhugh_blow_up_names_the_samples():
    n = 16
    u0 = FitzHugh2D.initial_condition(_grid(FitzHugh2D, n), [1, 2, 3])
    # dt * 8 Du / dx^2 = 0.05 * 512 * Du: 0.26 and 2.6 are stable, 26 is not.
    solver = FitzHugh2D(n, dt=0.05, Du=[1e-2, 0.1, 1.0], Dv=1e-3, k=5e-3)
    with pytest.raises(BlowUpError) as info:
        solver.rollout(u0, 5, 100)
    assert info.value.samples == [2]


# --- Gray-Scott -----------------------------------------------------------------------------


def test_gray_scott_uniform_state_follows_the_ode():
    states, t_end = [(0.9, 0.2), (0.4, 0.5), (1.0, 0.0)], 50.0
    fs, kappas = [0.04, 0.02, 0.1], [0.06, 0.0, 0.05]
    solver = GrayScott2D(8, dt=0.1, F=fs, kappa=kappas)
    final = _final(solver, _uniform(states, 8), t_end)
    for (u0, v0), f, k, got in zip(states, fs, kappas, final, strict=True):

        def rhs(t, y, f=f, k=k):
            return [-y[0] * y[1] ** 2 + f * (1 - y[0]), y[0] * y[1] ** 2 - (f + k) * y[1]]

        exact = _ode(rhs, [u0, v0], t_end)
        # Measured <= 2e-10: the mean mode is stepped by RK4 (L = 0) with error C dt^4 t
        # (8e-9 at dt = 0.25); 1e-8 leaves 50x, while a wrong rate gives O(1e-2). The other
        # modes of a constant are FFT rounding: measured exactly 0.
        assert np.abs(got.mean(dim=(-1, -2)).numpy() - exact).max() < 1e-8
        assert (got - got.mean(dim=(-1, -2), keepdim=True)).abs().max().item() < 1e-13


def test_gray_scott_fourier_modes_decay_at_the_continuous_rate():
    n, length, du, dv, t_end = 16, 1.0, 1e-3, 4e-4, 3.0
    solver = GrayScott2D(n, dt=0.5, length=length, F=0.0, kappa=0.0, Du=du, Dv=dv)
    x = solver.x
    mode = torch.cos(2 * math.pi * (2 * x[:, None] + 3 * x[None, :]) / length)
    k2 = (2 * math.pi / length) ** 2 * 13
    # With v = 0 and F = 0 the u equation is the heat equation, and with u = 0 and
    # F = kappa = 0 so is the v equation: ETDRK4 propagates each mode by e^{-D k^2 t} exactly.
    u_only = torch.stack([1 + 0.1 * mode, torch.zeros_like(mode)])
    v_only = torch.stack([torch.zeros_like(mode), 0.2 * mode])
    final = _final(solver, torch.stack([u_only, v_only]), t_end)
    exact_u = 1 + 0.1 * math.exp(-du * k2 * t_end) * mode
    exact_v = 0.2 * math.exp(-dv * k2 * t_end) * mode
    # Measured 1e-16 (the u mode fell to 0.21 of its amplitude); 1e-13 leaves 500x over
    # rounding, and a wrong k^2 shows at O(1e-3).
    assert (final[0, 0] - exact_u).abs().max().item() < 1e-13
    assert (final[1, 1] - exact_v).abs().max().item() < 1e-13
    assert final[0, 1].abs().max().item() == 0 and final[1, 0].abs().max().item() < 1e-15


def test_gray_scott_without_feed_and_kill_conserves_u_plus_v():
    n = 16
    u0 = GrayScott2D.initial_condition(_grid(GrayScott2D, n), [0, 1])
    solver = GrayScott2D(n, dt=1.0, F=0.0, kappa=0.0, Du=2e-4, Dv=1e-4)
    frames = solver.rollout(u0, 3, 50)
    total = (frames[:, :, 0] + frames[:, :, 1]).mean(dim=(-1, -2))
    # The reaction moves u v^2 from u to v, so the mean of u + v is invariant: measured 4e-16,
    # while v changed by up to 1.06 (asserted below).
    assert (total - total[:, :1]).abs().max().item() < 1e-13
    assert (frames[:, -1, 1] - frames[:, 0, 1]).abs().max().item() > 1e-2


def _smooth_gray_scott(n: int) -> torch.Tensor:
    x = torch.arange(n, dtype=torch.float64) / n
    bump = torch.cos(2 * math.pi * x)[:, None] * torch.cos(4 * math.pi * x)[None, :]
    return torch.stack([0.6 - 0.2 * bump, 0.3 + 0.2 * bump])[None]


def test_gray_scott_etdrk4_order_four_in_time():
    n, t_end = 16, 64.0
    params = {"length": 1.0, "F": 0.06, "kappa": 0.04, "Du": 1e-3, "Dv": 5e-4}
    u0 = _smooth_gray_scott(n)
    reference = _final(GrayScott2D(n, dt=0.03125, **params), u0, t_end)
    dts = [2.0, 1.0, 0.5, 0.25]
    errors = [
        (_final(GrayScott2D(n, dt=dt, **params), u0, t_end) - reference).abs().max().item()
        for dt in dts
    ]
    # ETDRK4 has order 4 (Cox & Matthews 2002): measured slope 4.09 (errors 3.6e-7 -> 7.2e-11,
    # while the state changes by 0.59). +-0.3 as for every order test.
    assert abs(_slope(dts, errors) - 4) < 0.3


def test_gray_scott_blow_up_names_the_samples():
    n = 8
    u0 = _uniform([(1.0, 0.0)] * 3, n).clone()
    u0[:, 0] += 1e-3 * torch.randn(3, n, n, generator=torch.Generator().manual_seed(0))
    # v = 0 stays 0, so u relaxes to 1 at rate F: F dt = 2 and 2.4 are inside RK4's interval
    # [-2.785, 0], F dt = 200 amplifies by ~7e7 per step.
    solver = GrayScott2D(n, dt=2000.0, F=[0.001, 0.1, 0.0012], kappa=0.0)
    with pytest.raises(BlowUpError) as info:
        solver.rollout(u0, 3, 30)
    assert info.value.samples == [1]


# --- Both: the 2D PDE contract ---------------------------------------------------------------


@pytest.mark.parametrize("cls", SOLVERS)
def test_contract_info_and_defaults(cls):
    info, d = cls.info, cls.info.defaults
    assert info.dim == 2 and len(info.fields) == 2 and set(info.units) == set(info.fields)
    assert not info.stationary and dict(d.initial_condition) == {"kind": "pde"}
    for name, (dist, low, high) in info.default_parameters.items():
        lo, hi = info.parameter_ranges[name]
        assert dist in ("uniform", "loguniform") and lo <= low < high <= hi
    for name, value in info.default_constants.items():
        lo, hi = info.parameter_ranges[name]
        assert lo <= value <= hi
    grid = _grid(cls, d.n)
    assert d.dt <= cls.max_stable_dt(grid, _default_bounds(cls))
    assert cls.resolution_warning(grid, _default_bounds(cls)) is None
    assert "n >=" in cls.resolution_warning(_grid(cls, 16), _default_bounds(cls))
    # The stored coordinates are the solver's own points.
    solver = cls(grid, dt=d.dt, **_mid_coefficients(cls))
    for axis, own in zip(cls.coordinates(grid), (solver.x, solver.y), strict=True):
        assert np.array_equal(axis, own.numpy())


@pytest.mark.parametrize("cls", SOLVERS)
def test_own_defaults_run_on_a_coarse_grid(cls):
    # A config naming only the PDE gets these settings; the same dt and horizon must also run
    # on the coarse grids of quick checks (16^2 here, 3 frames), the low and the high
    # end of every default range included.
    d, n = cls.info.defaults, 16
    grid = _grid(cls, n)
    assert d.dt <= cls.max_stable_dt(grid, _default_bounds(cls))
    steps = round(d.t_end / d.dt / 2)
    corners = {k: [low, high] for k, (_, low, high) in cls.info.default_parameters.items()}
    frames = cls(grid, dt=d.dt, **corners).rollout(cls.initial_condition(grid, [0, 1]), 3, steps)
    assert frames.shape == (2, 3, 2, n, n) and bool(torch.isfinite(frames).all())


@pytest.mark.parametrize("cls", SOLVERS)
def test_shapes_dtypes_seeds_and_per_sample_batches(cls):
    n, seeds = 16, [3, 4, 5]
    grid = _grid(cls, n)
    u0 = cls.initial_condition(grid, seeds)
    assert u0.shape == (3, 2, n, n) and u0.dtype == torch.float64
    assert torch.equal(u0[1:2], cls.initial_condition(grid, [4]))
    assert not torch.equal(u0[0], u0[1])
    dt = 0.5 * cls.max_stable_dt(grid, _default_bounds(cls))
    params = {
        name: [lo + (hi - lo) * f for f in (0.1, 0.5, 0.9)]
        for name, (_, lo, hi) in cls.info.default_parameters.items()
    }
    batch = cls(n, dt=dt, **params).rollout(u0, 4, 3)
    assert batch.shape == (3, 4, 2, n, n) and torch.equal(batch[:, 0], u0)
    for i in range(3):
        alone = cls(n, dt=dt, **{k: v[i] for k, v in params.items()}).rollout(u0[i : i + 1], 4, 3)
        # Same arithmetic per sample: measured bit-for-bit; batched FFTs may round
        # differently on other builds (~1e-16).
        assert (batch[i : i + 1] - alone).abs().max().item() < 1e-13
    single = cls(n, dt=dt, dtype=torch.float32, **params).rollout(u0.float(), 4, 3)
    assert single.dtype == torch.float32
    # float32 rounding over 9 steps of O(1) states: measured 4e-7; 1e-4 leaves margin.
    assert (single.double() - batch).abs().max().item() < 1e-4
    assert cls(n, dt=dt, **_mid_coefficients(cls)).step(u0).shape == u0.shape


@pytest.mark.parametrize("cls", SOLVERS)
def test_invalid_arguments_raise_before_compute(cls):
    mid = _mid_coefficients(cls)
    name = cls.info.parameter_names[0]
    low, high = cls.info.parameter_ranges[name]
    with pytest.raises(ValueError, match="n must"):
        cls(3, dt=0.1, **mid)
    with pytest.raises(ValueError, match="dt"):
        cls(16, dt=0.0, **mid)
    with pytest.raises(ValueError, match=name):
        cls(16, dt=0.1, **(mid | {name: high + 1.0}))
    first, second = cls.info.parameter_names[:2]
    with pytest.raises(ValueError, match="per-sample"):
        cls(16, dt=0.1, **(mid | {first: [low] * 3, second: [low] * 2}))
    with pytest.raises(ValueError, match="u0"):
        cls(16, dt=0.1, **mid).rollout(torch.ones(1, 3, 16, 16), 2, 1)
    with pytest.raises(ValueError, match="n_frames"):
        cls(16, dt=0.1, **mid).rollout(torch.ones(1, 2, 16, 16), 0, 1)
    with pytest.raises(AttributeError, match="immutable"):
        cls(16, dt=0.1, **mid).dt = 1.0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("cls", SOLVERS)
def test_cuda_matches_cpu(cls):
    n = 16
    grid = _grid(cls, n)
    u0 = cls.initial_condition(grid, [0, 1])
    dt = 0.5 * cls.max_stable_dt(grid, _default_bounds(cls))
    mid = _mid_coefficients(cls)
    cpu = cls(n, dt=dt, **mid).rollout(u0, 3, 4)
    gpu = cls(n, dt=dt, device="cuda", **mid).rollout(u0.cuda(), 3, 4)
    assert gpu.device.type == "cuda"
    # Same float64 arithmetic; cuFFT and fused kernels round differently (~1e-15).
    assert (gpu.cpu() - cpu).abs().max().item() < 1e-10
