"""Burgers solver: exact solutions, convergence order, batching, dtypes, stability and errors."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import torch

from pdeflow.tasks.pdes import PDES, BlowUpError, Burgers, CFLViolation, get_pde
from pdeflow.tasks.pdes.base import Grid
from pdeflow.tasks.pdes.burgers import CFL_MAX
from pdeflow.tasks.pdes.etdrk4 import etdrk4_coefficients
from pdeflow.tasks.pdes.exact import cole_hopf_burgers

# Linear stability limit of RK4-type advection on the 2/3-dealiased grid (Burgers docstring):
# C = u dt / dx <= 2 sqrt(2) / (2 pi / 3).
CFL_RK4 = 3 * math.sqrt(2) / math.pi


@pytest.fixture(autouse=True)
def _one_thread():
    # These arrays are tiny; on the 2 shared cores of a parallel test run, torch's intra-op
    # threads waiting for each other measured 10-100x slowdowns.
    n_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n_threads)


def _exact(solver: Burgers, t: float, nu: float, a0: float, b: dict[int, float]) -> torch.Tensor:
    """Cole-Hopf solution on the solver grid, shape (1, 1, n_x), float64."""
    u = cole_hopf_burgers(solver.x.double().cpu().numpy(), t, nu, a0, b)
    return torch.from_numpy(u)[None, None]


def _smooth_batch(n_batch: int, n_x: int, seed: int) -> torch.Tensor:
    """Random band-limited initial states (modes 1..4), shape (n_batch, 1, n_x), float64."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.arange(n_x, dtype=torch.float64) * (2 * math.pi / n_x)
    k = torch.arange(1, 5, dtype=torch.float64)
    amp = torch.randn(n_batch, 4, 2, generator=gen, dtype=torch.float64) / k[:, None]
    phase = k[:, None] * x[None, :]
    return 0.5 * (amp[..., 0] @ torch.cos(phase) + amp[..., 1] @ torch.sin(phase))[:, None]


def test_cole_hopf_exact_solution():
    nu, a0, b = 0.1, 2.0, {1: 0.8, 2: 0.3}
    solver = Burgers(128, nu=nu, dt=0.01)
    frames = solver.rollout(_exact(solver, 0.0, nu, a0, b), n_frames=5, steps_per_frame=25)
    errors = [
        (frames[:, i] - _exact(solver, 0.25 * i, nu, a0, b)).abs().max().item() for i in range(5)
    ]
    # Measured max error 1.3e-13. Temporal error ~7.5e-6 dt^4 ~ 1e-13 at dt = 0.01 (constant
    # from the convergence runs); phi is entire and its spectrum falls below 1e-14 well inside
    # the 42 kept modes (n_x = 64 gives the same error). 1e-11 leaves 100x for roundoff and
    # platform FFTs while any wrong coefficient or sign gives errors >= 1e-6.
    assert max(errors) < 1e-11, errors


def test_etdrk4_order_four_in_time():
    # Steep enough for the nonlinearity to matter (|u| ~ 0.4 ~ 2 nu k): a0 close to sum|b_k|.
    nu, a0, b, t_end = 0.2, 1.0, {1: 0.8, 2: 0.15}, 1.0
    dts = [0.1 / 2**j for j in range(5)]
    errors = []
    for dt in dts:
        solver = Burgers(64, nu=nu, dt=dt)
        n_steps = round(t_end / dt)
        final = solver.rollout(_exact(solver, 0.0, nu, a0, b), 2, n_steps)[:, -1]
        errors.append((final - _exact(solver, t_end, nu, a0, b)).abs().max().item())
    slope = np.polyfit(np.log(dts), np.log(errors), 1)[0]
    # Measured errors 4.7e-8 .. 7.6e-13, slope 3.98. The finest error is ~50x above the
    # float64 roundoff floor (~1e-14) and n_x = 128 changes it by < 1%, so time error dominates.
    assert errors[-1] > 1e-13, errors
    assert abs(slope - 4.0) < 0.3, (slope, errors)


def test_per_sample_viscosity_matches_single_runs():
    nus = [0.02, 0.05, 0.1, 0.3]
    u0 = _smooth_batch(len(nus), 64, seed=1)
    batched = Burgers(64, nu=nus, dt=0.01).rollout(u0, 6, 10)
    singles = torch.cat(
        [Burgers(64, nu=nu, dt=0.01).rollout(u0[i : i + 1], 6, 10) for i, nu in enumerate(nus)]
    )
    # Each sample sees the same arithmetic alone or in a batch; 1e-12 allows for FFT kernels
    # that block the batch differently (measured difference: exactly 0).
    assert (batched - singles).abs().max().item() < 1e-12
    # Guard against a test that cannot fail: the viscosities must actually change the result.
    alone_same_nu = Burgers(64, nu=nus[0], dt=0.01).rollout(u0, 6, 10)
    assert (alone_same_nu[3] - batched[3]).abs().max().item() > 1e-3


def test_float32_matches_float64():
    u0 = _smooth_batch(3, 128, seed=2)
    kwargs = {"nu": [0.02, 0.05, 0.1], "dt": 0.01}
    out64 = Burgers(128, dtype=torch.float64, **kwargs).rollout(u0, 5, 50)
    out32 = Burgers(128, dtype=torch.float32, **kwargs).rollout(u0.float(), 5, 50)
    assert out32.dtype == torch.float32
    scale = out64.abs().max().item()
    # Each step adds float32 rounding (eps = 6e-8) through 8 FFTs of length 128, at most
    # ~eps log2(128) = 4e-7 relative; the viscous flow does not amplify it, so after 200 steps
    # linear accumulation bounds it by 8e-5. Measured: 3.3e-6, growing linearly (1.7e-8/step).
    # 3e-5 is 10x the measurement and still below the worst case.
    assert (out32.double() - out64).abs().max().item() < 3e-5 * scale


def test_step_matches_rollout():
    solver = Burgers(32, nu=0.1, dt=0.05)
    u0 = _smooth_batch(2, 32, seed=3)
    assert torch.allclose(solver.step(u0), solver.rollout(u0, 2, 1)[:, 1], rtol=0, atol=1e-15)


def test_nan_input_names_the_sample():
    u0 = _smooth_batch(4, 64, seed=4)
    u0[2, 0, 7] = float("nan")
    with pytest.raises(BlowUpError) as info:
        Burgers(64, nu=0.05, dt=0.01).rollout(u0, 3, 5)
    assert info.value.samples == [2]
    assert info.value.time == 0.0
    assert not isinstance(info.value, CFLViolation)


def _uniform_flow(speeds: list[float], n_x: int, seed: int) -> torch.Tensor:
    """Constant states plus 1e-3 noise: advection is exactly linear, eigenvalues -i u k."""
    gen = torch.Generator().manual_seed(seed)
    noise = 1e-3 * torch.randn(len(speeds), n_x, generator=gen, dtype=torch.float64)
    return (torch.tensor(speeds, dtype=torch.float64)[:, None] + noise)[:, None]


def test_stability_limit_is_sharp():
    # With a uniform flow and nu ~ 0 the frozen-coefficient analysis is exact: the scheme
    # must survive 2000 steps at 0.95x the derived limit and blow up at 1.1x. On 64 points
    # the kept m <= 21 < 64/3 puts the exact limit at 1.372 (measured: stable at 1.35,
    # blow-up at 1.377), so both sides sit clearly on their side of it.
    n_x, dx = 64, 2 * math.pi / 64
    stable = Burgers(n_x, nu=1e-4, dt=0.95 * CFL_RK4 * dx, cfl_max=math.inf)
    frames = stable.rollout(_uniform_flow([1.0], n_x, seed=5), 41, 50)
    assert bool(torch.isfinite(frames).all())
    assert (frames[:, -1] - 1.0).abs().max().item() < 1e-2
    # Sample 1 runs at 1.1x the limit, sample 0 and 2 at half of that: only 1 may be named.
    unstable = Burgers(n_x, nu=1e-4, dt=1.1 * CFL_RK4 * dx, cfl_max=math.inf)
    with pytest.raises(BlowUpError) as info:
        unstable.rollout(_uniform_flow([0.5, 1.0, 0.5], n_x, seed=6), 41, 50)
    assert info.value.samples == [1]
    assert info.value.time > 0


def test_large_dt_raises_instead_of_returning():
    n_x, u_max = 128, 1.0
    dt = 8 * Burgers.max_stable_dt(Grid.uniform(n_x, 2 * math.pi, 1), {"nu": 1e-3}, u_max)
    x = torch.arange(n_x, dtype=torch.float64) * (2 * math.pi / n_x)
    u0 = torch.stack([u_max * torch.sin(x), 0.05 * u_max * torch.sin(x)])[:, None]
    with pytest.raises(CFLViolation) as info:
        Burgers(n_x, nu=1e-3, dt=dt).rollout(u0, 101, 20)
    assert info.value.samples == [0]
    assert info.value.cfl == pytest.approx([8.0 * u_max * torch.sin(x).max().item()])
    # With the guard switched off the instability is real: NaN/inf, still never a return.
    with pytest.raises(BlowUpError):
        Burgers(n_x, nu=1e-3, dt=dt, cfl_max=math.inf).rollout(u0[:1], 101, 20)


def test_below_max_stable_dt_runs_long():
    # nu = 0.01 gives Re = u L / nu ~ 600 (a shock forms at t = 1) yet a resolved front: the
    # Gibbs overshoot measured 2%, inside the 11% between 0.9 and cfl_max.
    n_x, u_max = 128, 1.0
    dt = 0.9 * Burgers.max_stable_dt(Grid.uniform(n_x, 2 * math.pi, 1), {"nu": 0.01}, u_max)
    solver = Burgers(n_x, nu=0.01, dt=dt)
    frames = solver.rollout(u_max * torch.sin(solver.x)[None, None], 101, 20)
    assert bool(torch.isfinite(frames).all())
    assert frames.abs().max().item() < 1.05 * u_max


def test_max_stable_dt_formula():
    assert CFL_MAX < CFL_RK4 and Burgers.CFL_MAX == CFL_MAX
    grid = Grid.uniform(256, 4.0, 1)
    # Viscosity sets no limit: any value or range gives CFL_MAX dx / u_max.
    for nu in (0.1, (1e-5, 100.0)):
        limit = Burgers.max_stable_dt(grid, {"nu": nu}, 2.0)
        assert limit == pytest.approx(CFL_MAX * (4.0 / 256) / 2.0)
    # Without a bound on |u0| (a Gaussian random field) |u| <= 1 is assumed.
    assert Burgers.max_stable_dt(Grid.uniform(64, 1.0, 1), {"nu": 0.1}) == pytest.approx(1 / 64)


def test_resolution_warning_names_the_needed_grid():
    # Shock width 2 nu / u_max = 2 * 0.02 / 3: 2 pi / (0.04 / 3) = 471.2 points needed.
    ranges = {"nu": (0.02, 0.2)}
    warning = Burgers.resolution_warning(Grid.uniform(128, 2 * math.pi, 1), ranges, 3.0)
    assert warning is not None and "n_x >= 472" in warning and "nu=0.02" in warning
    assert Burgers.resolution_warning(Grid.uniform(472, 2 * math.pi, 1), ranges, 3.0) is None
    assert Burgers.resolution_warning(Grid.uniform(128, 2 * math.pi, 1), ranges) is None


def test_etdrk4_coefficients_limits():
    h = 0.3
    z = torch.tensor([0.0, -5.0], dtype=torch.float64)
    coef = etdrk4_coefficients(z / h, h)
    # At z = 0 the phi functions reduce to Taylor values 1/2 and 1/6 (RK4 weights).
    assert coef.q[0].item() == pytest.approx(h / 2, rel=1e-13)
    for f in (coef.f1, coef.f2, coef.f3):
        assert f[0].item() == pytest.approx(h / 6, rel=1e-13)
    # At z = -5 the closed forms have no cancellation to speak of and serve as reference.
    zz = -5.0
    ez = math.exp(zz)
    direct = [
        h * (math.exp(zz / 2) - 1) / zz,
        h * (-4 - zz + ez * (4 - 3 * zz + zz**2)) / zz**3,
        h * (2 + zz + ez * (zz - 2)) / zz**3,
        h * (-4 - 3 * zz - zz**2 + ez * (4 - zz)) / zz**3,
    ]
    got = [coef.q[1], coef.f1[1], coef.f2[1], coef.f3[1]]
    assert [g.item() for g in got] == pytest.approx(direct, rel=1e-12)


def test_errors_survive_pickling():
    # Dask moves exceptions between processes by pickling them.
    err = pickle.loads(pickle.dumps(CFLViolation([1, 3], 0.5, [1.2, 1.4], 1.0)))
    assert (err.samples, err.time, err.cfl, err.cfl_max) == ([1, 3], 0.5, [1.2, 1.4], 1.0)
    blow = pickle.loads(pickle.dumps(BlowUpError([2], 1.5)))
    assert (blow.samples, blow.time) == ([2], 1.5)
    assert "[2]" in str(blow)


def test_registry():
    assert get_pde("burgers") is Burgers
    assert PDES["burgers"] is Burgers and all(isinstance(c, type) for c in PDES.values())
    with pytest.raises(ValueError, match="burgers"):
        get_pde("foo")


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"n_x": 64, "nu": 0.0, "dt": 0.1}, "nu"),
        ({"n_x": 64, "nu": -1.0, "dt": 0.1}, "nu"),
        ({"n_x": 64, "nu": [0.1, -0.1], "dt": 0.1}, "nu"),
        ({"n_x": 64, "nu": float("nan"), "dt": 0.1}, "nu"),
        ({"n_x": 64, "nu": 0.1, "dt": 0.0}, "dt"),
        ({"n_x": 64, "nu": 0.1, "dt": -0.1}, "dt"),
        ({"n_x": 63, "nu": 0.1, "dt": 0.1}, "n"),
        ({"n_x": 6, "nu": 0.1, "dt": 0.1}, "n"),
        ({"n_x": 64, "nu": 0.1, "dt": 0.1, "length": 0.0}, "grid: lengths"),
        ({"n_x": 64, "nu": 0.1, "dt": 0.1, "cfl_max": 0.0}, "cfl_max"),
        ({"n_x": 64, "nu": 0.1, "dt": 0.1, "dtype": torch.float16}, "dtype"),
    ],
)
def test_invalid_arguments_name_the_field(kwargs, field):
    n_x = kwargs.pop("n_x")
    with pytest.raises(ValueError, match=rf"^{field} "):
        Burgers(n_x, **kwargs)


def test_state_shape_and_immutability():
    solver = Burgers(16, nu=[0.1, 0.2], dt=0.01)
    with pytest.raises(ValueError, match="^u0 "):
        solver.rollout(torch.zeros(3, 1, 16), 2, 1)
    with pytest.raises(ValueError, match="^u "):
        solver.step(torch.zeros(2, 1, 15))
    # The old (batch, n_x) layout is refused, not broadcast.
    with pytest.raises(ValueError, match="^u0 "):
        solver.rollout(torch.zeros(2, 16), 2, 1)
    with pytest.raises(AttributeError):
        solver.dt = 1.0
    assert solver.x.shape == (16,)
    assert solver.dx == pytest.approx(2 * math.pi / 16)


def _standalone_rollout(
    u0: torch.Tensor, nu: list[float], dt: float, n_frames: int, steps: int, dtype: torch.dtype
) -> torch.Tensor:
    """The scheme of the standalone Burgers solver this class replaced, written out plainly.

    Real ETDRK4 coefficients of -nu k^2, with -(i k / 2) and the 2/3 rule folded into the
    weights, a Galerkin projection of u0, and the four-stage update of Cox & Matthews; ``u0``
    is (batch, n_x), the result (batch, n_frames, n_x).
    """
    n_x = u0.shape[-1]
    cdtype = torch.complex64 if dtype == torch.float32 else torch.complex128
    k = torch.arange(n_x // 2 + 1, dtype=torch.float64)
    coef = etdrk4_coefficients(-torch.tensor(nu, dtype=torch.float64)[:, None] * k**2, dt)
    keep = (3 * torch.arange(n_x // 2 + 1) < n_x).to(torch.complex128)
    grad = -0.5j * k * keep
    e, e2 = coef.e.to(cdtype), coef.e2.to(cdtype)
    gq, gf1, gf2, gf3 = (
        (scale * grad * c).to(cdtype)
        for scale, c in ((1, coef.q), (1, coef.f1), (2, coef.f2), (1, coef.f3))
    )

    def n_hat(v: torch.Tensor) -> torch.Tensor:
        return torch.fft.rfft(torch.fft.irfft(v, n=n_x).square_())

    v = torch.fft.rfft(u0.to(dtype)).mul_(keep.to(cdtype)[None])
    frames = [u0.to(dtype)]
    for _ in range(n_frames - 1):
        for _ in range(steps):
            nv = n_hat(v)
            a = torch.addcmul(e2 * v, gq, nv)
            na = n_hat(a)
            nb = n_hat(torch.addcmul(e2 * v, gq, na))
            nc = n_hat(torch.addcmul(e2 * a, 2 * gq, nb) - gq * nv)
            v = e * v + gf1 * nv + gf2 * (na + nb) + gf3 * nc
        frames.append(torch.fft.irfft(v, n=n_x))
    return torch.stack(frames, dim=1)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_numerics_of_the_standalone_solver_are_kept(dtype):
    # Burgers now runs on the shared spectral base; its weights, dealiasing and update must be
    # those of the standalone solver it replaced. The reference above groups the same products
    # differently (no in-place fused multiply-adds), so the two agree to rounding: ~eps per
    # operation over 100 steps of O(1) values; measured 2.8e-16 (float64) and exactly 0
    # (float32) against max|u| = 1.7. A viscosity off by 1% already gives 3e-3.
    nus = [0.01, 0.05, 0.2]
    u0 = _smooth_batch(3, 128, seed=7)
    ours = Burgers(128, nu=nus, dt=0.01, dtype=dtype).rollout(u0, 6, 20)[:, :, 0]
    theirs = _standalone_rollout(u0[:, 0], nus, 0.01, 6, 20, dtype)
    tol = 1e-13 if dtype == torch.float64 else 2e-6
    assert (ours.double() - theirs.double()).abs().max().item() < tol
