"""Two-dimensional incompressible Navier-Stokes equations in vorticity form, ETDRK4 in time."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import torch

from pdeflow.tasks.fields import gaussian_random_field
from pdeflow.tasks.pdes.base import (
    PDE,
    Bound,
    Coefficient,
    Defaults,
    Grid,
    PDEInfo,
    as_grid,
    smallest,
)
from pdeflow.tasks.pdes.etdrk4 import etdrk4_coefficients
from pdeflow.tasks.pdes.spectral1d import RK4_IMAG_LIMIT, validate_positive

# Exact frozen-coefficient limit of the explicit advection, derived in the class docstring:
# C = max|u| dt / dx <= 3 / pi ~= 0.955. NavierStokes2D.CFL_MAX = 0.7 keeps the ~27% margin of
# the 1D Burgers solver.
CFL_LIMIT = RK4_IMAG_LIMIT * 3 / (2 * math.pi * math.sqrt(2))

# Default initial state (see initial_condition): the FNO Navier-Stokes spectrum, vorticity rms
# 1/time (one time unit is about one eddy turnover). IC_SPEED_BOUND bounds its speed for
# length = 1 (it scales with length): max|u| over 2000 seeds at n = 64 and 128 (500 at 256)
# was at most 0.31, mean 0.24; unforced, kinetic energy only decays; 0.5 leaves room for local
# speed-ups. max_stable_dt uses it when no u_max is given.
IC_ALPHA = 2.5
IC_TAU = 7.0
IC_VORTICITY_RMS = 1.0
IC_SPEED_BOUND = 0.5

Forcing = Literal["none", "kolmogorov"]
# The internal state: the pruned spectrum (batch, n_ky, n), projected onto the kept modes, and
# the work buffers of its batch size.
State = tuple[torch.Tensor, dict[str, torch.Tensor]]


def _wavenumbers(n: int, length: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``kx`` (1, n), ``ky`` (n_ky, 1) and the 2/3-rule mask (n_ky, n), float64.

    The solver's spectral layout is transposed and pruned: index ``[m_y, m_x]`` with
    ``m_y = 0 .. n_ky - 1`` (the columns ``3 m_y < n`` of an rfft2 spectrum) and ``m_x`` in
    ``fftfreq`` order. The cut ``m_y`` columns are never stored, and the transform along ``x``
    runs on the contiguous last axis: measured 3x faster than ``irfft2``/``rfft2`` on the full
    spectrum (128^2, batch 32, float32, one CPU thread).
    """
    mx = torch.fft.fftfreq(n, 1.0 / n, dtype=torch.float64)[None, :]
    my = torch.arange(_n_ky(n), dtype=torch.float64)[:, None]
    keep = (3 * mx.abs() < n) & (3 * my < n)
    return (2 * math.pi / length) * mx, (2 * math.pi / length) * my, keep


def _n_ky(n: int) -> int:
    """Number of ``m_y >= 0`` kept by the 2/3 rule, ``3 m_y < n``."""
    return (n - 1) // 3 + 1


def _to_spectral(w: torch.Tensor) -> torch.Tensor:
    """Real fields (..., n, n), axes (x, y), to the pruned spectral layout (..., n_ky, n)."""
    n = w.shape[-1]
    return torch.fft.fft(torch.fft.rfft(w, dim=-1)[..., : _n_ky(n)].transpose(-1, -2), dim=-1)


def _to_physical(v: torch.Tensor) -> torch.Tensor:
    """Inverse of ``_to_spectral`` for spectra (..., n_ky, n) of real fields: (..., n, n)."""
    n = v.shape[-1]
    return torch.fft.irfft(torch.fft.ifft(v, dim=-1).transpose(-1, -2), n=n, dim=-1)


def _band_limited_unit_rms(w: np.ndarray, rms: float) -> np.ndarray:
    """One sample (n, n) projected onto the modes the 2/3 rule keeps, scaled to spatial ``rms``.

    The kept modes are those of ``_wavenumbers``, :math:`3|m_x|, 3|m_y| < n`, here in the
    ``rfft2`` layout. numpy's FFT of this one sample: nothing here sees another sample, nor
    depends on torch's FFT backend and thread count.
    """
    n = w.shape[-1]
    mx = np.abs(np.fft.fftfreq(n, 1.0 / n))[:, None]
    my = np.arange(n // 2 + 1)[None, :]
    w = np.fft.irfft2(np.fft.rfft2(w) * ((3 * mx < n) & (3 * my < n)), s=(n, n))
    return w * (rms / np.sqrt(np.mean(w**2)))


def speed_per_vorticity(n: int, length: float) -> float:
    r"""Bound on ``max|u|`` per unit rms vorticity of a field on the kept modes, length units.

    With :math:`\hat u_k = i (k_y, -k_x) \hat\omega_k / |k|^2`, Cauchy-Schwarz and Parseval
    give :math:`|\mathbf u(x)| \le \sum_{k \ne 0} |\hat\omega_k| / |k| \le
    \omega_{rms} \, (\sum_{k \ne 0} |k|^{-2})^{1/2}` over the kept square. The truncated
    nonlinearity conserves enstrophy and viscosity and drag only remove it, so an unforced
    rollout keeps the bound of its initial rms. 0.68, 0.76, 0.82 for ``length`` 1 at n = 32,
    64, 128 (the sum grows like :math:`2\pi \ln n`).
    """
    m = np.fft.fftfreq(n, 1.0 / n)
    m = m[3 * np.abs(m) < n]
    m2 = m[:, None] ** 2 + m[None, :] ** 2
    return length / (2 * math.pi) * math.sqrt(float(np.sum(1.0 / m2[m2 > 0])))


class NavierStokes2D(PDE):
    r"""Incompressible Navier-Stokes equations in 2D, vorticity-streamfunction form, batched.

    .. math::

        \partial_t \omega + \mathbf u \cdot \nabla \omega = \nu \Delta \omega + f - \mu \omega,
        \qquad \mathbf u = (\partial_y \psi, -\partial_x \psi), \qquad -\Delta \psi = \omega,

    on the periodic square :math:`(x, y) \in [0, \ell)^2`. Symbols: :math:`\omega = \partial_x
    u_y - \partial_y u_x` is the state, shape (batch, 1, n, n), channel ``"vorticity"`` (1/time),
    axis -2 is ``x`` and axis -1 is ``y``, grid points ``i * length / n``; :math:`\nu` is ``nu``
    (viscosity, length^2/time), one value or one per sample; :math:`\mu` is ``drag`` (linear
    friction, 1/time); ``f`` the forcing (1/time^2). ``forcing="none"`` is decaying turbulence;
    ``"kolmogorov"`` is the curl of the body force :math:`F \sin(k_f y)\,\hat x`,
    :math:`f = -F k_f \cos(k_f y)` with ``forcing_amplitude`` :math:`F` (length/time^2) and
    :math:`k_f = 2\pi\,` ``forcing_wavenumber`` :math:`/\ell`. Its laminar state
    :math:`\omega = -U k_f \cos(k_f y)`, :math:`U = F / (\nu k_f^2 + \mu)`, is an exact steady
    solution. The mean of :math:`\omega` (zero for a periodic velocity) only decays by drag.

    Space is Fourier pseudo-spectral (real FFTs, ``torch.fft``). The advection is evaluated in the
    form :math:`\mathbf u \cdot \nabla\omega = (\partial_{xx} - \partial_{yy})(u_x u_y) +
    \partial_{xy}(u_y^2 - u_x^2)`, the curl of :math:`\nabla\cdot(\mathbf u \otimes \mathbf u)`
    (Basdevant 1983, J. Comput. Phys. 50, 209-214), which needs 4 FFTs instead of the 5 of the
    advective form and equals it for the divergence-free spectral velocity. Orszag's 2/3 rule
    (square truncation :math:`3|m_x|, 3|m_y| < n`) makes the quadratic products alias-free; the
    state is projected onto the kept modes before the first step and stays in their span. In
    time, :math:`L = -\nu |k|^2 - \mu` is integrated exactly and the advection and forcing by
    the ETDRK4 scheme of Cox & Matthews (2002), J. Comput. Phys. 176, 430-455 (coefficients from
    ``pdeflow.tasks.pdes.etdrk4``); a constant forcing is integrated exactly, so the laminar
    Kolmogorov state stays put to rounding.

    Stability limit: viscosity and drag are exact, so only the explicit advection limits
    ``dt``. Frozen about a uniform velocity :math:`\mathbf U`, mode ``k`` has the eigenvalue
    :math:`-i \mathbf U \cdot \mathbf k`; over the kept square :math:`|k_x|, |k_y| \le
    k_{max} = 2\pi / (3 \Delta x)`, :math:`\max |\mathbf U \cdot \mathbf k| = |\mathbf U|
    \sqrt 2 k_{max}` (velocity along a diagonal). With ``L = 0`` ETDRK4 is classical RK4 on a
    linear problem, stable on the imaginary axis for :math:`|y| \le 2\sqrt 2`. Hence
    :math:`|\mathbf U| \sqrt 2 \,(2\pi / 3 \Delta x)\, \Delta t \le 2\sqrt 2`, i.e.
    :math:`C = \max|\mathbf u| \Delta t / \Delta x \le 3/\pi \approx 0.955` with
    :math:`|\mathbf u|` the speed. Viscous damping only widens the region, so this bound is
    conservative. The default ``cfl_max = CFL_MAX = 0.7`` keeps ~27% margin for the
    nonlinearity (the frozen argument is local) and for the check running once per frame; a
    violation raises ``CFLViolation``.

    Construction is ``PDE``'s (``grid``, ``dt``, ``length``, ``device``, ``dtype``, ``cfl_max``,
    the coefficient ``nu``) plus the forcing options below; frame 0 of a rollout is ``u0`` as
    given, and the state is projected onto the kept modes before the first step.

    Args:
        forcing: ``"none"`` (default) or ``"kolmogorov"``.
        forcing_amplitude: :math:`F`, finite. Defaults to 0.1.
        forcing_wavenumber: Integer :math:`k_f \ell / 2\pi \ge 1` with ``3 * it < n``. Defaults
            to 4.
        drag: :math:`\mu \ge 0`. Defaults to 0.0.
        **kwargs: ``PDE``'s arguments.

    Attributes (besides ``PDE``'s):
        forcing, forcing_amplitude, forcing_wavenumber, drag: The forcing options.
        x, y: Grid coordinates ``i * dx``, shape (n,), solver dtype.

    Raises:
        ValueError: If an argument is outside its valid range; the message names it.
    """

    # C <= 0.5 * 0.01 * 64 = 0.32 < CFL_MAX for the default initial state (IC_SPEED_BOUND);
    # 41 frames, one per 0.25 time units (about a quarter eddy turnover).
    info = PDEInfo(
        name="navier_stokes_2d",
        dim=2,
        description="2D incompressible Navier-Stokes, vorticity form, decaying turbulence",
        fields={"vorticity": "1/time"},
        coefficients={"nu": Coefficient((1e-6, 10.0), "length^2/time", ("loguniform", 1e-4, 1e-2))},
        defaults=Defaults(n=64, length=1.0, t_end=10.0, dt=0.01, n_frames=41),
    )
    CFL_MAX = 0.7

    def __init__(
        self,
        grid: Grid | int,
        *,
        forcing: Forcing = "none",
        forcing_amplitude: float = 0.1,
        forcing_wavenumber: int = 4,
        drag: float = 0.0,
        **kwargs: Any,
    ) -> None:
        if forcing not in ("none", "kolmogorov"):
            raise ValueError(f"forcing must be 'none' or 'kolmogorov', got {forcing!r}")
        amplitude = forcing_amplitude
        if not isinstance(amplitude, numbers.Real) or not math.isfinite(amplitude):
            raise ValueError(f"forcing_amplitude must be a finite number, got {amplitude!r}")
        if not isinstance(drag, numbers.Real) or not math.isfinite(drag) or drag < 0:
            raise ValueError(f"drag must be a finite number >= 0, got {drag!r}")
        options = dict(forcing=forcing, forcing_amplitude=float(amplitude), drag=float(drag))
        for key, value in {**options, "forcing_wavenumber": forcing_wavenumber}.items():
            object.__setattr__(self, key, value)
        super().__init__(grid, **kwargs)

    def _forcing_constants(self, params: dict[str, torch.Tensor]) -> tuple[float, float]:
        """The forcing amplitude ``F`` and the drag ``mu`` of this solver."""
        return self.forcing_amplitude, self.drag

    def _setup(self, params: dict[str, torch.Tensor]) -> dict[str, Any]:
        n, wavenumber = self.n, self.forcing_wavenumber
        ok = isinstance(wavenumber, numbers.Integral) and not isinstance(wavenumber, bool)
        if not ok or wavenumber < 1 or 3 * wavenumber >= n:
            raise ValueError(
                f"forcing_wavenumber must be an integer in [1, {(n - 1) // 3}] (kept by the "
                f"2/3 rule at n={n}), got {wavenumber!r}"
            )
        amplitude, drag = self._forcing_constants(params)
        out: dict[str, Any] = self._operators(n, self.length, params["nu"], drag, self.dt)
        # Spectrum of -F k_f cos(k_f y): one coefficient n^2/2 * (-F k_f) at [m_f, 0].
        k_f = 2 * math.pi * wavenumber / self.length
        out["_f_hat"] = -amplitude * k_f * n * n / 2 if self.forcing == "kolmogorov" else 0.0
        x, y = (torch.from_numpy(c) for c in self.coordinates(self.grid))
        out.update(x=x, y=y, forcing_wavenumber=int(wavenumber))
        return out

    @staticmethod
    def _operators(
        n: int, length: float, nu: torch.Tensor, drag: float, dt: float
    ) -> dict[str, torch.Tensor]:
        """Spectral multipliers and ETDRK4 weights in float64/complex128, pruned layout.

        ``_vel`` (2, n_ky, n) maps the vorticity spectrum to the dealiased velocity spectra,
        ``_nl`` (2, n_ky, n) maps the spectra of ``u_x u_y`` and ``u_y^2 - u_x^2`` to that of
        ``-u . grad omega``; the weights have shape (n_nu, n_ky, n). Complex although the
        weights are real: real * complex promotes elementwise (slower, measured in the 1D
        solvers).
        """
        kx, ky, keep = _wavenumbers(n, length)
        k2 = kx**2 + ky**2
        inv_k2 = torch.where(k2 > 0, 1 / torch.where(k2 > 0, k2, 1.0), 0.0) * keep
        vel = torch.stack([1j * ky * inv_k2, -1j * kx * inv_k2])
        nl = torch.stack([(kx**2 - ky**2) * keep, kx * ky * keep]).to(torch.complex128)
        coef = etdrk4_coefficients(-nu[:, None, None] * k2 - drag, dt)
        # _q2 and _f2 carry the factors 2 of the scheme, saving a multiply per use.
        weights = zip(
            ("_e", "_e2", "_q", "_q2", "_f1", "_f2", "_f3"),
            (coef.e, coef.e2, coef.q, 2 * coef.q, coef.f1, 2 * coef.f2, coef.f3),
            strict=True,
        )
        out = {name: w.to(torch.complex128) for name, w in weights}
        out.update(_vel=vel, _nl=nl, _keep=keep.to(torch.complex128))
        return out

    # --- class-level facts: stability, resolution, initial state ----------------------------

    @classmethod
    def _speed_bound(
        cls, grid: Grid, coefficients: Mapping[str, Bound], u_max: float | None
    ) -> float:
        """Bound on the speed over a rollout, length/time.

        ``u_max`` bounds max|omega_0| of a generic initial family, hence its rms, and
        ``speed_per_vorticity`` turns that into a speed bound for the whole unforced rollout;
        without it, the measured ``IC_SPEED_BOUND * length`` of ``initial_condition``.
        """
        if u_max is None:
            return IC_SPEED_BOUND * grid.length
        return u_max * speed_per_vorticity(grid.n, grid.length)

    @classmethod
    def max_stable_dt(
        cls, grid: Grid, coefficients: Mapping[str, Bound], u_max: float | None = None
    ) -> float:
        """Largest ``dt`` the explicit advection accepts: ``CFL_MAX * dx / max|u|``.

        See the class docstring for the derivation from RK4's imaginary-axis limit and the
        2/3-rule wavenumbers. Viscosity and drag are integrated exactly and do not limit ``dt``.

        Args:
            grid: The square grid.
            coefficients: Each coefficient's value or (low, high) range (``nu`` is unused).
            u_max: Bound on max|omega_0| (1/time) of a generic initial family; ``None``: the
                PDE's own ``initial_condition`` (see ``_speed_bound``).

        Returns:
            The step size bound, in time units (infinite for a state at rest).
        """
        speed = cls._speed_bound(grid, coefficients, u_max)
        return math.inf if speed == 0 else cls.CFL_MAX * grid.spacing[0] / speed

    @classmethod
    def resolution_warning(
        cls, grid: Grid, coefficients: Mapping[str, Bound], u_max: float | None = None
    ) -> str | None:
        """Warn when the grid cannot resolve the thinnest vorticity filaments.

        Estimate: a filament strained at a rate :math:`S` thins until diffusion balances the
        strain, at width :math:`\\delta = \\sqrt{\\nu / S}`; the strain rate of decaying 2D
        turbulence is of the order of the vorticity rms, so :math:`\\delta \\approx
        \\sqrt{\\nu / \\omega_{rms}}` (the enstrophy-dissipation scale
        :math:`(\\nu^3/\\beta)^{1/6}` with the cascade rate :math:`\\beta \\sim \\omega_{rms}^3`).
        Resolving it asks :math:`k_{max} \\delta \\ge 1` with the 2/3-rule
        :math:`k_{max} = 2\\pi n / (3 \\ell)`, so :math:`n \\ge 3\\ell / (2\\pi\\delta)`. For
        :math:`\\ell = 1`, :math:`\\omega_{rms} = 1`: ``nu`` = 1e-4 needs 48 points, 1e-5 needs 151.
        Checked at ``nu`` = 1e-4 (large scales at t = 5 against n = 256): n = 32 errs by 1.4%,
        n = 48 by 0.19%, n = 64 by 1e-4. An order-of-magnitude estimate; forcing may need more.

        Args:
            grid: The square grid.
            coefficients: ``nu`` as a value or range; the smallest counts.
            u_max: Bound on max|omega_0| (1/time), which bounds its rms; ``None``: the rms
                ``IC_VORTICITY_RMS`` = 1.0 of ``initial_condition``.

        Returns:
            A message with the estimated ``n`` needed, or ``None`` if ``n`` suffices.
        """
        nu_min = smallest(coefficients["nu"])
        vorticity_rms = IC_VORTICITY_RMS if u_max is None else u_max
        if vorticity_rms == 0:
            return None
        delta = math.sqrt(nu_min / vorticity_rms)
        needed = math.ceil(3 * grid.length / (2 * math.pi * delta))
        if grid.n >= needed:
            return None
        return (
            f"{cls.info.name}: n={grid.n} under-resolves the vorticity filaments of width "
            f"~sqrt(nu/omega_rms) = {delta:.3g} at nu={nu_min:g}; about n >= {needed} is needed"
        )

    @classmethod
    def initial_condition(
        cls,
        grid: Grid,
        seeds: Sequence[int] | np.ndarray,
        *,
        dtype: torch.dtype = torch.float64,
        device: str | torch.device = "cpu",
        vorticity_rms: float = IC_VORTICITY_RMS,
    ) -> torch.Tensor:
        """Random vorticity: a zero-mean Gaussian random field, band-limited and rescaled.

        ``pdeflow.tasks.fields.gaussian_random_field`` with :math:`\\alpha` = ``IC_ALPHA`` = 2.5 and
        :math:`\\tau` = ``IC_TAU / length`` (7 on the unit square, the FNO Navier-Stokes
        spectrum), projected onto the modes the 2/3 rule keeps (so frame 0 lies in the span of
        the later frames), then scaled so each sample's spatial rms is ``vorticity_rms``. Each
        sample is drawn, transformed (numpy FFTs of that sample alone) and scaled by itself, so
        it is bitwise the same alone as at any position of any batch, in either dtype:
        batch-invariant by construction.

        Args:
            grid: The square grid (a ``Grid``; an integer means the default side).
            seeds: Integer seeds >= 0, shape (batch,); sample ``i`` depends on ``seeds[i]`` only.
            dtype: Returned dtype. Defaults to ``torch.float64``.
            device: Returned device. Defaults to ``"cpu"``.
            vorticity_rms: Spatial rms of every sample, 1/time. Defaults to 1.0.

        Returns:
            Vorticity of shape (batch, 1, n, n).
        """
        grid = as_grid(grid, None, cls.info.dim, cls.info.defaults.length)
        validate_positive("vorticity_rms", vorticity_rms)
        n, length = grid.n, grid.length
        w = gaussian_random_field((n, n), length, seeds, alpha=IC_ALPHA, tau=IC_TAU / length)
        for sample in w:
            sample[...] = _band_limited_unit_rms(sample, vorticity_rms)
        return torch.from_numpy(w[:, None]).to(device=device, dtype=dtype)

    # --- time stepping ----------------------------------------------------------------------

    def _workspace(self, n_batch: int) -> dict[str, torch.Tensor]:
        """Buffers reused by every step: fresh large allocations each step cost page faults."""
        shape = (n_batch, _n_ky(self.n), self.n)
        names = ("nv", "na", "nb", "nc", "e2v", "a", "b", "c")
        out = {k: torch.empty(shape, dtype=self._e.dtype, device=self.device) for k in names}
        out["pair_hat"] = torch.empty(
            (n_batch, 2, *shape[1:]), dtype=self._e.dtype, device=self.device
        )
        out["prod"] = torch.empty(
            (n_batch, 2, self.n, self.n), dtype=self.dtype, device=self.device
        )
        return out

    def _velocity(self, v: torch.Tensor, ws: dict[str, torch.Tensor]) -> torch.Tensor:
        """Velocity ``(u_x, u_y)`` of a vorticity spectrum (batch, n_ky, n): (batch, 2, n, n)."""
        return _to_physical(torch.mul(v[:, None], self._vel, out=ws["pair_hat"]))

    def _nonlinear(
        self, v: torch.Tensor, out: torch.Tensor, ws: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        """Spectrum of ``-u . grad omega + f`` into ``out`` (batch, n_ky, n), dealiased."""
        vel = self._velocity(v, ws)
        ux, uy = vel[:, 0], vel[:, 1]
        prod = ws["prod"]
        torch.mul(ux, uy, out=prod[:, 0])
        torch.sub(uy, ux, out=prod[:, 1])
        prod[:, 1].mul_(ux.add_(uy))
        spec = _to_spectral(prod)
        torch.mul(spec[:, 0], self._nl[0], out=out).addcmul_(spec[:, 1], self._nl[1])
        if self._f_hat:
            out[:, self.forcing_wavenumber, 0] += self._f_hat
        return out

    def _step_hat(self, v: torch.Tensor, ws: dict[str, torch.Tensor]) -> torch.Tensor:
        """One ETDRK4 step of a spectrum ``v`` (batch, n_ky, n), in place; returns ``v``."""
        nv = self._nonlinear(v, ws["nv"], ws)
        e2v = torch.mul(self._e2, v, out=ws["e2v"])
        a = torch.addcmul(e2v, self._q, nv, out=ws["a"])
        na = self._nonlinear(a, ws["na"], ws)
        b = torch.addcmul(e2v, self._q, na, out=ws["b"])
        nb = self._nonlinear(b, ws["nb"], ws)
        c = torch.mul(self._e2, a, out=ws["c"]).addcmul_(self._q2, nb)
        nc = self._nonlinear(c.addcmul_(self._q, nv, value=-1), ws["nc"], ws)
        v.mul_(self._e).addcmul_(self._f1, nv).addcmul_(self._f2, na.add_(nb))
        return v.addcmul_(self._f3, nc)

    def _start(self, u: torch.Tensor) -> State:
        return _to_spectral(u[:, 0]).mul_(self._keep), self._workspace(u.shape[0])

    def _advance(self, s: State, n_steps: int) -> State:
        v, ws = s
        for _ in range(n_steps):
            v = self._step_hat(v, ws)
        return v, ws

    def _frame(self, s: State) -> torch.Tensor:
        return _to_physical(s[0])[:, None]

    def _courant(self, u: torch.Tensor, s: State) -> torch.Tensor:
        """``max|u| dt / dx`` of each sample, the speed from the projected spectrum."""
        speed = self._velocity(*s).square().sum(dim=1).amax(dim=(1, 2)).sqrt()
        return speed * (self.dt / self.dx)
