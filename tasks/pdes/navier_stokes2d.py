"""Two-dimensional incompressible Navier-Stokes equations in vorticity form, ETDRK4 in time."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import ClassVar, Literal

import numpy as np
import torch

from pdeflow.tasks.fields import gaussian_random_field
from pdeflow.tasks.pdes.errors import BlowUpError, CFLViolation, check_rollout_counts
from pdeflow.tasks.pdes.etdrk4 import etdrk4_coefficients
from pdeflow.tasks.pdes.immutable import Immutable
from pdeflow.tasks.pdes.spectral1d import RK4_IMAG_LIMIT, Coefficient, per_sample, validate_positive

# Exact frozen-coefficient limit of the explicit advection, derived in the class docstring:
# C = max|u| dt / dx <= 3 / pi ~= 0.955. 0.7 keeps the ~27% margin of the 1D Burgers solver.
CFL_LIMIT = RK4_IMAG_LIMIT * 3 / (2 * math.pi * math.sqrt(2))
CFL_MAX = 0.7

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


def _validate_n(n: int) -> None:
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 8 or n % 2:
        raise ValueError(f"n must be an even integer >= 8, got {n!r}")


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


def _to_physical(v: torch.Tensor) -> torch.Tensor:
    """Inverse of ``_to_spectral`` for spectra (..., n_ky, n) of real fields: (..., n, n)."""
    n = v.shape[-1]
    return torch.fft.irfft(torch.fft.ifft(v, dim=-1).transpose(-1, -2), n=n, dim=-1)


class NavierStokes2D(Immutable):
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
    conservative. The default ``cfl_max = 0.7`` keeps ~27% margin for the nonlinearity (the
    frozen argument is local) and for the check running once per frame; a violation raises.

    Args:
        n: Grid points per side, even and >= 8.
        dt: Time step > 0, in time units.
        length: Side :math:`\ell > 0`. Defaults to 1.0.
        device: Torch device of all tensors. Defaults to ``"cpu"``.
        dtype: ``torch.float32`` or ``torch.float64`` (default) for the state.
        nu: Viscosity > 0: a scalar, or a sequence/tensor of shape (batch,) with one per sample.
        forcing: ``"none"`` (default) or ``"kolmogorov"``.
        forcing_amplitude: :math:`F`, finite. Defaults to 0.1.
        forcing_wavenumber: Integer :math:`k_f \ell / 2\pi \ge 1` with ``3 * it < n``. Defaults
            to 4.
        drag: :math:`\mu \ge 0`. Defaults to 0.0.
        cfl_max: Largest Courant number a rollout accepts; ``math.inf`` disables the check.
            Defaults to ``CFL_MAX`` = 0.7.

    Attributes:
        n, dt, length, device, dtype, forcing, forcing_amplitude, forcing_wavenumber, drag,
        cfl_max: The constructor arguments.
        nu: Viscosities, shape (1,) or (batch,), solver dtype.
        dx: Grid spacing ``length / n``.
        x, y: Grid coordinates ``i * dx``, shape (n,), solver dtype.

    Raises:
        ValueError: If an argument is outside its valid range; the message names it.
    """

    name: ClassVar[str] = "navier_stokes_2d"
    dim: ClassVar[int] = 2
    fields: ClassVar[tuple[str, ...]] = ("vorticity",)
    field_units: ClassVar[dict[str, str]] = {"vorticity": "1/time"}
    boundary: ClassVar[str] = "periodic"
    description: ClassVar[str] = (
        "2D incompressible Navier-Stokes, vorticity form, periodic, decaying turbulence"
    )
    parameter_names: ClassVar[tuple[str, ...]] = ("nu",)
    parameter_ranges: ClassVar[dict[str, tuple[float, float]]] = {"nu": (1e-6, 10.0)}
    default_parameters: ClassVar[dict[str, tuple[str, float, float]]] = {
        "nu": ("loguniform", 1e-4, 1e-2)
    }
    default_length: ClassVar[float] = 1.0
    default_n: ClassVar[int] = 64
    default_t_end: ClassVar[float] = 10.0
    # C <= 0.5 * 0.01 * 64 = 0.32 < cfl_max for the default initial state (IC_SPEED_BOUND).
    default_dt: ClassVar[float] = 0.01
    stationary: ClassVar[bool] = False

    def __init__(
        self,
        n: int,
        *,
        dt: float,
        length: float = 1.0,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float64,
        nu: Coefficient,
        forcing: Forcing = "none",
        forcing_amplitude: float = 0.1,
        forcing_wavenumber: int = 4,
        drag: float = 0.0,
        cfl_max: float = CFL_MAX,
    ) -> None:
        _validate_n(n)
        validate_positive("length", length)
        validate_positive("dt", dt)
        nu64 = per_sample("nu", nu, positive=True)
        lo, hi = self.parameter_ranges["nu"]
        if not bool(((nu64 >= lo) & (nu64 <= hi)).all()):
            raise ValueError(f"nu must lie in [{lo:g}, {hi:g}], got {nu!r}")
        self._validate_forcing(n, forcing, forcing_amplitude, forcing_wavenumber, drag)
        validate_positive("cfl_max", cfl_max, allow_inf=True)
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
        device = torch.device(device)
        cdtype = torch.complex64 if dtype == torch.float32 else torch.complex128
        tensors = self._operators(n, float(length), nu64, float(drag), float(dt))
        f_hat = 0.0
        if forcing == "kolmogorov":
            # Spectrum of -F k_f cos(k_f y): one coefficient n^2/2 * (-F k_f) at [m_f, 0].
            k_f = 2 * math.pi * forcing_wavenumber / length
            f_hat = -forcing_amplitude * k_f * n * n / 2
        grid = torch.arange(n, dtype=torch.float64) * (length / n)
        state: dict[str, object] = {
            name: t.to(device=device, dtype=cdtype if t.is_complex() else dtype)
            for name, t in tensors.items()
        }
        state.update(nu=nu64.to(device=device, dtype=dtype), x=grid.to(device, dtype))
        state.update(y=grid.to(device, dtype), n=int(n), dt=float(dt), length=float(length))
        state.update(dx=float(length) / n, device=device, dtype=dtype, forcing=forcing)
        state.update(forcing_amplitude=float(forcing_amplitude), drag=float(drag))
        state.update(forcing_wavenumber=int(forcing_wavenumber), cfl_max=float(cfl_max))
        state.update(_f_hat=f_hat, _n_batch=nu64.numel())
        for key, value in state.items():
            object.__setattr__(self, key, value)

    @staticmethod
    def _validate_forcing(
        n: int, forcing: str, amplitude: float, wavenumber: int, drag: float
    ) -> None:
        if forcing not in ("none", "kolmogorov"):
            raise ValueError(f"forcing must be 'none' or 'kolmogorov', got {forcing!r}")
        if not isinstance(amplitude, numbers.Real) or not math.isfinite(amplitude):
            raise ValueError(f"forcing_amplitude must be a finite number, got {amplitude!r}")
        ok = isinstance(wavenumber, numbers.Integral) and not isinstance(wavenumber, bool)
        if not ok or wavenumber < 1 or 3 * wavenumber >= n:
            raise ValueError(
                f"forcing_wavenumber must be an integer in [1, {(n - 1) // 3}] (kept by the "
                f"2/3 rule at n={n}), got {wavenumber!r}"
            )
        if not isinstance(drag, numbers.Real) or not math.isfinite(drag) or drag < 0:
            raise ValueError(f"drag must be a finite number >= 0, got {drag!r}")

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

    def __repr__(self) -> str:
        nu = self.nu.tolist()
        nu_repr = nu[0] if len(nu) == 1 else f"<{len(nu)} values>"
        return (
            f"NavierStokes2D(n={self.n}, nu={nu_repr}, dt={self.dt}, length={self.length}, "
            f"forcing={self.forcing!r}, drag={self.drag}, device='{self.device}', "
            f"dtype={self.dtype}, cfl_max={self.cfl_max})"
        )

    # --- class-level helpers of the 2D contract -------------------------------------------

    @classmethod
    def max_stable_dt(
        cls,
        n: int,
        length: float,
        u_max: float | None = None,
        cfl_max: float = CFL_MAX,
        **coefficient_maxima: float,
    ) -> float:
        """Largest ``dt`` the explicit advection accepts: ``cfl_max * dx / u_max``.

        See the class docstring for the derivation from RK4's imaginary-axis limit and the
        2/3-rule wavenumbers. Viscosity and drag are integrated exactly and do not limit ``dt``,
        so coefficient maxima (``nu=...``) are accepted and only checked by name.

        Args:
            n: Grid points per side, even and >= 8.
            length: Side > 0.
            u_max: Bound on the speed over the rollout (> 0), length/time. ``None``: the bound
                ``IC_SPEED_BOUND * length`` of the unforced default initial state (kinetic
                energy only decays without forcing; a forced flow must pass its own bound).
            cfl_max: Courant limit (> 0). Defaults to ``CFL_MAX`` = 0.7.
            coefficient_maxima: Optional maxima of ``parameter_names``; unused.

        Returns:
            The step size bound, in time units.
        """
        _validate_n(n)
        validate_positive("length", length)
        validate_positive("cfl_max", cfl_max)
        unknown = set(coefficient_maxima) - set(cls.parameter_names)
        if unknown:
            raise ValueError(
                f"unknown coefficients {sorted(unknown)}; valid: {cls.parameter_names}"
            )
        if u_max is None:
            u_max = IC_SPEED_BOUND * length
        validate_positive("u_max", u_max)
        return cfl_max * (length / n) / u_max

    @classmethod
    def resolution_warning(
        cls,
        n: int,
        length: float,
        nu: float | tuple[float, float] | None = None,
        vorticity_rms: float = IC_VORTICITY_RMS,
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
            n: Grid points per side.
            length: Side > 0.
            nu: Viscosity, or its range ``(low, high)``; the smallest value counts. ``None``:
                the low end of ``default_parameters``, 1e-4.
            vorticity_rms: Spatial rms of the initial vorticity, 1/time. Defaults to
                ``IC_VORTICITY_RMS`` = 1.0, that of ``initial_condition``.

        Returns:
            A message with the estimated ``n`` needed, or ``None`` if ``n`` suffices.
        """
        _validate_n(n)
        validate_positive("length", length)
        validate_positive("vorticity_rms", vorticity_rms)
        if nu is None:
            nu = cls.default_parameters["nu"][1]
        nu_min = float(per_sample("nu", nu, positive=True).min())
        delta = math.sqrt(nu_min / vorticity_rms)
        needed = math.ceil(3 * length / (2 * math.pi * delta))
        if n >= needed:
            return None
        return (
            f"{cls.name}: n={n} under-resolves the vorticity filaments of width "
            f"~sqrt(nu/omega_rms) = {delta:.3g} at nu={nu_min:g}; about n >= {needed} is needed"
        )

    @classmethod
    def initial_condition(
        cls,
        n: int,
        length: float,
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
            n: Grid points per side, even and >= 8.
            length: Side > 0.
            seeds: Integer seeds >= 0, shape (batch,); sample ``i`` depends on ``seeds[i]`` only.
            dtype: Returned dtype. Defaults to ``torch.float64``.
            device: Returned device. Defaults to ``"cpu"``.
            vorticity_rms: Spatial rms of every sample, 1/time. Defaults to 1.0.

        Returns:
            Vorticity of shape (batch, 1, n, n).
        """
        _validate_n(n)
        validate_positive("length", length)
        validate_positive("vorticity_rms", vorticity_rms)
        w = gaussian_random_field((n, n), length, seeds, alpha=IC_ALPHA, tau=IC_TAU / length)
        for sample in w:
            sample[...] = _band_limited_unit_rms(sample, vorticity_rms)
        return torch.from_numpy(w[:, None]).to(device=device, dtype=dtype)

    # --- time stepping ----------------------------------------------------------------------

    def _check_state(self, w: torch.Tensor, name: str) -> torch.Tensor:
        shape = (self.n, self.n)
        if not isinstance(w, torch.Tensor) or w.ndim != 4 or tuple(w.shape[1:]) != (1, *shape):
            got = tuple(w.shape) if isinstance(w, torch.Tensor) else type(w).__name__
            raise ValueError(
                f"{name} must be a tensor of shape (batch, 1, {self.n}, {self.n}), got {got}"
            )
        if w.is_complex():
            raise ValueError(f"{name} must be real, got {w.dtype}")
        if self._n_batch > 1 and w.shape[0] != self._n_batch:
            raise ValueError(
                f"{name} has batch {w.shape[0]} but nu has {self._n_batch} per-sample values"
            )
        return w.to(device=self.device, dtype=self.dtype)

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

    def step(self, w: torch.Tensor) -> torch.Tensor:
        """Advance the batch by one time step ``dt``, after projecting onto the kept modes.

        Args:
            w: Vorticity of shape (batch, 1, n, n); cast to the solver's dtype and device.

        Returns:
            The vorticity at ``t + dt``, shape (batch, 1, n, n), solver dtype.
        """
        w = self._check_state(w, "w")
        v = _to_spectral(w[:, 0]).mul_(self._keep)
        return _to_physical(self._step_hat(v, self._workspace(w.shape[0])))[:, None]

    def _check_frame(
        self, w: torch.Tensor, v: torch.Tensor, ws: dict[str, torch.Tensor], time: float
    ) -> None:
        """Raise if a frame (batch, n, n) is non-finite or a sample's Courant number too big."""
        finite = torch.isfinite(w).flatten(1).all(dim=1)
        if not bool(finite.all()):
            raise BlowUpError(torch.nonzero(~finite).flatten().tolist(), time)
        vel = self._velocity(v, ws)
        speed = vel.square().sum(dim=1).amax(dim=(1, 2)).sqrt()
        cfl = speed * (self.dt / self.dx)
        over = cfl > self.cfl_max
        if bool(over.any()):
            raise CFLViolation(
                torch.nonzero(over).flatten().tolist(), time, cfl[over].tolist(), self.cfl_max
            )

    def rollout(self, u0: torch.Tensor, n_frames: int, steps_per_frame: int) -> torch.Tensor:
        """Integrate a batch and record ``n_frames`` frames, ``steps_per_frame`` steps apart.

        Frame 0 is ``u0`` as given; the state is projected onto the kept modes before the first
        step. Every frame is checked: values finite, and each sample's Courant number
        ``max|u| dt / dx`` at most ``cfl_max`` (speed from the projected state).

        Args:
            u0: Initial vorticity of shape (batch, 1, n, n), real.
            n_frames: Number of frames to return (>= 1), frame 0 being ``u0``.
            steps_per_frame: Time steps between frames (>= 1); frame ``f`` is at time
                ``f * steps_per_frame * dt``.

        Returns:
            Trajectory of shape (batch, n_frames, 1, n, n), solver dtype and device.

        Raises:
            BlowUpError: If a frame has non-finite values; ``samples`` lists the batch indices.
            CFLViolation: If a frame exceeds ``cfl_max``; ``samples`` lists the batch indices.
        """
        u0 = self._check_state(u0, "u0")
        check_rollout_counts(n_frames, steps_per_frame)
        n_batch = u0.shape[0]
        frames = torch.empty(
            (n_batch, n_frames, 1, self.n, self.n), dtype=self.dtype, device=self.device
        )
        frames[:, 0] = u0
        ws = self._workspace(n_batch)
        v = _to_spectral(u0[:, 0]).mul_(self._keep)
        self._check_frame(u0[:, 0], v, ws, 0.0)
        for frame in range(1, n_frames):
            for _ in range(steps_per_frame):
                v = self._step_hat(v, ws)
            frames[:, frame, 0] = _to_physical(v)
            self._check_frame(frames[:, frame, 0], v, ws, frame * steps_per_frame * self.dt)
        return frames
