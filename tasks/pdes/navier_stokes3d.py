"""Three-dimensional incompressible Navier-Stokes equations, velocity form, pseudo-spectral."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from pdeflow.tasks.fields import seeded_samples
from pdeflow.tasks.pdes.base import PDE, Bound, Coefficient, Defaults, Grid, PDEInfo, smallest

# Classical RK4 is stable on the imaginary axis for |y| <= 2 sqrt(2). With the 2/3 rule and the
# worst direction the cube diagonal, C = max|u| dt / dx <= 2 sqrt(2) * 3 / (2 pi sqrt(3))
# = sqrt(6) / pi ~= 0.780 (class docstring). 0.55 keeps the ~30% margin of the 2D solver.
CFL_LIMIT = 2 * math.sqrt(2) * 3 / (2 * math.pi * math.sqrt(3))
CFL_MAX = 0.55

# Default initial state: energy spectrum k^4 exp(-2 (k / k_peak)^2), k in units of 2 pi / length,
# kinetic energy 0.5 <|u|^2> = IC_ENERGY (length^2/time^2). IC_SPEED_BOUND bounds its max|u|:
# over 400 seeds at n = 16 and 32 and 100 at n = 64 the largest was 3.52 (mean 2.54-2.68);
# unforced, the energy only decays (max|u| fell monotonically in every run checked, nu = 0.01
# to 0.04); 5.0 leaves ~40% for local speed-ups. max_stable_dt uses it when no u_max is given.
IC_K_PEAK = 3.0
IC_ENERGY = 0.5
IC_SPEED_BOUND = 5.0

_AXES = (-3, -2, -1)


def _mode_numbers(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Integer wavenumbers of an ``rfftn`` spectrum (n, n, n // 2 + 1), broadcastable, float64."""
    m = np.fft.fftfreq(n, 1.0 / n)
    return m[:, None, None], m[None, :, None], np.arange(n // 2 + 1.0)[None, None, :]


def _kept(mx: np.ndarray, my: np.ndarray, mz: np.ndarray, n: int) -> np.ndarray:
    """Orszag's 2/3 rule, cube truncation ``3 |m_i| < n``: boolean (n, n, n // 2 + 1)."""
    return (3 * np.abs(mx) < n) & (3 * np.abs(my) < n) & (3 * mz < n)


class NavierStokes3D(PDE):
    r"""Incompressible Navier-Stokes equations in 3D, velocity form, periodic cube, batched.

    .. math::

        \partial_t \mathbf u = P\,(\mathbf u \times \boldsymbol\omega) + \nu \Delta \mathbf u,
        \qquad \boldsymbol\omega = \nabla \times \mathbf u, \qquad \nabla \cdot \mathbf u = 0,

    on :math:`[0, \ell)^3`, periodic. This is :math:`\partial_t \mathbf u + (\mathbf u \cdot
    \nabla)\mathbf u = -\nabla p + \nu \Delta \mathbf u` with the pressure eliminated: since
    :math:`(\mathbf u \cdot \nabla)\mathbf u = \boldsymbol\omega \times \mathbf u + \nabla
    |\mathbf u|^2 / 2`, the Leray projection :math:`P` (onto divergence-free fields,
    :math:`\hat f - \mathbf k (\mathbf k \cdot \hat f)/|\mathbf k|^2`) removes every gradient.
    Symbols: the state is :math:`\mathbf u`, shape (batch, 3, n, n, n), channels ``"u_x"``,
    ``"u_y"``, ``"u_z"`` (length/time), axes -3, -2, -1 are ``x``, ``y``, ``z``, grid points
    ``i * length / n``; :math:`\nu` is ``nu`` (kinematic viscosity, length^2/time), one value or
    one per sample. The mean velocity is conserved exactly (Galilean invariance).

    Space is Fourier pseudo-spectral (``torch.fft.rfftn`` over the last three axes). The
    nonlinear term is taken in rotational form :math:`\mathbf u \times \boldsymbol\omega`: six
    inverse and three forward transforms, as many as the divergence form
    :math:`\nabla \cdot (\mathbf u \otimes \mathbf u)` (three inverse, six forward), but three
    spectral products to store instead of six, and :math:`\mathbf u \cdot (\mathbf u \times
    \boldsymbol\omega) = 0` pointwise. Orszag's 2/3 rule (cube truncation :math:`3|m_i| < n`)
    makes the quadratic product alias-free, so the scheme is a Galerkin method: the
    semi-discrete kinetic energy obeys :math:`dE/dt = -2\nu Z` exactly (:math:`E = \tfrac12
    \langle|\mathbf u|^2\rangle`, :math:`Z = \tfrac12 \langle|\boldsymbol\omega|^2\rangle`). The
    state is projected onto the kept, divergence-free modes before the first step and stays in
    their span. In time, the viscous term is integrated exactly by the integrating factor
    :math:`e^{-\nu k^2 t}` and the rest by classical RK4 (IF-RK4, fourth order): it needs only
    :math:`e^{-\nu k^2 \Delta t / 2}` per viscosity, a seventh of ETDRK4's weights, which
    matters for per-sample viscosities on a 3D grid.

    Each sample is advanced by itself (its transforms and elementwise kernels see one sample of
    a fixed shape), so a trajectory is bitwise the same alone as in any batch; a 3D sample is
    large enough that the loop costs nothing measurable.

    Stability limit: viscosity is exact, so only the explicit advection limits ``dt``. Frozen
    about a uniform velocity :math:`\mathbf U`, mode ``k`` has the eigenvalue
    :math:`-i \mathbf U \cdot \mathbf k`, and the integrating factor only multiplies the RK4
    amplification by :math:`e^{-\nu k^2 \Delta t} \le 1`. Over the kept cube :math:`|k_i| \le
    k_{max} = 2\pi / (3 \Delta x)`, :math:`\max |\mathbf U \cdot \mathbf k| = |\mathbf U|
    \sqrt 3 k_{max}` (velocity along a cube diagonal). RK4 is stable on the imaginary axis for
    :math:`|y| \le 2\sqrt 2`, hence :math:`C = \max|\mathbf u| \Delta t / \Delta x \le
    2\sqrt 2 \cdot 3 / (2\pi\sqrt 3) = \sqrt 6/\pi \approx 0.780` (``CFL_LIMIT``). The default
    ``cfl_max`` = 0.55 (``CFL_MAX``) keeps ~30% margin for the nonlinearity and for the check
    running once per frame; a violation raises ``CFLViolation``.

    Constructed like every ``PDE``: ``NavierStokes3D(n, dt=..., nu=..., length=2 * pi)``.
    """

    # C <= IC_SPEED_BOUND * 0.0125 / (2 pi / 32) = 0.32, 58% of CFL_MAX (measured C <= 0.22);
    # t_end about three large-eddy turnovers l / u' ~ (1 / 3) / 0.58. n = 32 resolves the
    # sampled nu >= 0.04 (resolution_warning); 160 steps of 16 samples: ~20 s on one core.
    info = PDEInfo(
        name="navier_stokes_3d",
        dim=3,
        description="3D incompressible Navier-Stokes, velocity form, periodic, decaying flow",
        fields={"u_x": "length/time", "u_y": "length/time", "u_z": "length/time"},
        coefficients={"nu": Coefficient((1e-5, 10.0), "length^2/time", ("loguniform", 0.04, 0.4))},
        defaults=Defaults(
            n=32,
            length=2 * math.pi,
            t_end=2.0,
            dt=0.0125,
            n_frames=21,
            initial_condition={"kind": "pde"},
        ),
    )
    CFL_MAX = CFL_MAX

    def _setup(self, params: dict[str, torch.Tensor]) -> dict[str, Any]:
        n, scale = self.n, 2 * math.pi / self.length
        mxyz = mx, my, mz = _mode_numbers(n)
        keep = _kept(mx, my, mz, n)
        k2 = scale**2 * (mx**2 + my**2 + mz**2)
        # The k = 0 mode of the nonlinear term is zero for a periodic solenoidal field; dropping
        # it keeps the mean velocity exactly constant rather than drifting by round-off.
        inv_k2 = np.where(keep & (k2 > 0), 1 / np.where(k2 > 0, k2, 1.0), 0.0)
        nl_keep = keep & (k2 > 0)
        nu = params["nu"].reshape(-1, 1, 1, 1, 1)
        cplx = torch.complex128
        return {
            **{
                f"_k{a}": torch.from_numpy(scale * m).to(cplx)
                for a, m in zip("xyz", mxyz, strict=True)
            },
            **{
                f"_ik{a}": torch.from_numpy(1j * scale * m)
                for a, m in zip("xyz", mxyz, strict=True)
            },
            "_inv_k2": torch.from_numpy(inv_k2).to(cplx),
            "_keep": torch.from_numpy(keep).to(cplx),
            "_nl_keep": torch.from_numpy(nl_keep).to(cplx),
            # Shape (n_nu, 1, n, n, n // 2 + 1): one factor per viscosity, broadcast over u_i.
            "_e2": torch.exp(-0.5 * self.dt * nu * torch.from_numpy(k2)).to(cplx),
        }

    # --- class-level facts ----------------------------------------------------------------------

    @classmethod
    def max_stable_dt(
        cls, grid: Grid, coefficients: Mapping[str, Bound], u_max: float | None = None
    ) -> float:
        """Largest ``dt`` the explicit advection accepts: ``CFL_MAX * dx / u_max``.

        Viscosity is integrated exactly and does not limit ``dt`` (class docstring).

        Args:
            grid: The grid.
            coefficients: ``nu``'s value or range; unused.
            u_max: Bound on the speed over the rollout, length/time; None: ``IC_SPEED_BOUND``,
                that of ``initial_condition`` with the default energy (unforced, the kinetic
                energy only decays).
        """
        del coefficients
        u_max = IC_SPEED_BOUND if u_max is None else float(u_max)
        if not u_max > 0 or not math.isfinite(u_max):
            raise ValueError(f"u_max must be a finite number > 0, got {u_max!r}")
        return CFL_MAX * min(grid.spacing) / u_max

    @classmethod
    def resolution_warning(
        cls, grid: Grid, coefficients: Mapping[str, Bound], u_max: float | None = None
    ) -> str | None:
        """Warn when the grid cannot resolve the Kolmogorov scale of the default initial state.

        Estimate: :math:`\\eta = (\\nu^3 / \\varepsilon)^{1/4}` with the dissipation rate
        :math:`\\varepsilon \\approx u'^3 / l`, :math:`u' = \\sqrt{2E/3}` the rms velocity
        component and :math:`l = \\ell / (2\\pi k_{peak})` the energy-containing scale; the
        usual DNS criterion :math:`k_{max} \\eta \\ge 1` (Pope, Turbulent Flows, 2000, sec. 9.1)
        with the 2/3-rule :math:`k_{max} = 2\\pi n / (3\\ell)`. For the defaults
        (:math:`\\ell = 2\\pi`, E = 0.5, k_peak = 3): n = 32 resolves nu >= 0.031, n = 64 nu >=
        0.012. Checked against n = 64 (two samples, t = 2, large scales compared): n = 32 errs by
        at most 1.6% at nu = 0.04, 6.6% at 0.02 (warned), 22% at 0.01 (warned).

        Args:
            grid: The grid.
            coefficients: ``nu``'s value or (low, high) range; the smallest counts.
            u_max: Speed bound of a generic initial family; its rms is taken as u_max / 3.
        """
        nu = smallest(coefficients["nu"])
        u_rms = math.sqrt(2 * IC_ENERGY / 3) if u_max is None else float(u_max) / 3
        length = grid.length
        eps = u_rms**3 * 2 * math.pi * IC_K_PEAK / length
        eta = (nu**3 / eps) ** 0.25
        k_max = 2 * math.pi * grid.n / (3 * length)
        if k_max * eta >= 1:
            return None
        needed = math.ceil(3 * length / (2 * math.pi * eta))
        return (
            f"{cls.info.name}: n={grid.n} under-resolves the Kolmogorov scale eta ~ {eta:.3g} "
            f"at nu={nu:g}; about n >= {needed} is needed (k_max eta >= 1)"
        )

    @classmethod
    def initial_condition(
        cls,
        grid: Grid,
        seeds: Sequence[int] | np.ndarray,
        *,
        dtype: torch.dtype = torch.float64,
        device: str | torch.device = "cpu",
        k_peak: float = IC_K_PEAK,
        energy: float = IC_ENERGY,
    ) -> torch.Tensor:
        """Random solenoidal velocity with the spectrum :math:`E(k) \\propto k^4
        e^{-2 (k / k_{peak})^2}`, zero mean, band-limited to the 2/3-rule modes.

        Per sample, from ``numpy.random.default_rng(seed)``: white noise per component, its
        spectrum multiplied by :math:`|m| e^{-(|m|/k_{peak})^2}` (``m`` the integer wavevector,
        so the shell energy goes as :math:`|m|^2 \\cdot |m|^2 e^{-2(|m|/k_{peak})^2}`), Leray
        projected, truncated to :math:`3|m_i| < n`, transformed back and scaled to the kinetic
        energy :math:`\\tfrac12\\langle|\\mathbf u|^2\\rangle` = ``energy``. numpy FFTs of the one
        sample: bitwise the same alone as in any batch.

        Args:
            grid: The cube (points per axis even, >= 8).
            seeds: Integer seeds >= 0, shape (batch,); sample ``i`` depends on ``seeds[i]`` only.
            dtype: Returned dtype.
            device: Returned device.
            k_peak: Peak of the spectrum in units of the fundamental ``2 pi / length``, > 0.
            energy: Kinetic energy per unit mass of each sample, length^2/time^2, > 0.

        Returns:
            Velocity of shape (batch, 3, n, n, n), divergence-free to round-off.
        """
        n = grid.n
        for name, value in (("k_peak", k_peak), ("energy", energy)):
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        if np.any(np.asarray(seeds) < 0):
            raise ValueError(f"seeds must be integers >= 0, got {seeds!r}")
        mx, my, mz = _mode_numbers(n)
        m2 = mx**2 + my**2 + mz**2
        m = np.sqrt(m2)
        filt = m * np.exp(-((m / k_peak) ** 2)) * _kept(mx, my, mz, n)
        inv_m2 = 1 / np.where(m2 > 0, m2, 1.0)

        def draw(rng: np.random.Generator) -> np.ndarray:
            spec = np.fft.rfftn(rng.standard_normal((3, n, n, n)), axes=_AXES) * filt
            div = (mx * spec[0] + my * spec[1] + mz * spec[2]) * inv_m2
            spec -= np.stack([mx * div, my * div, mz * div])
            u = np.fft.irfftn(spec, s=(n, n, n), axes=_AXES)
            return u * math.sqrt(energy / (0.5 * np.mean(np.sum(u**2, axis=0))))

        u = seeded_samples(seeds, (3, n, n, n), draw)
        return torch.from_numpy(u).to(device=device, dtype=dtype)

    # --- time stepping ----------------------------------------------------------------------

    def _start(self, u: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Spectra (batch, 3, n, n, n // 2 + 1) of ``u`` on the kept solenoidal modes, and the
        one sample's work buffers every step reuses."""
        v = torch.stack([self._project(torch.fft.rfftn(ui, dim=_AXES)) for ui in u])
        spec, phys = v.shape[1:], u.shape[1:]
        names = ("k1", "k2", "k3", "k4", "a", "b", "c", "e2v", "w_hat", "c_hat")
        ws = {k: torch.empty(spec, dtype=v.dtype, device=v.device) for k in names}
        ws["kc"] = torch.empty(spec[1:], dtype=v.dtype, device=v.device)
        for k in ("u", "w", "cross"):
            ws[k] = torch.empty(phys, dtype=u.dtype, device=u.device)
        return v, ws

    def _project(self, v: torch.Tensor) -> torch.Tensor:
        """Leray projection and 2/3 truncation of one spectrum (3, n, n, n // 2 + 1), in place."""
        kx, ky, kz = self._kx, self._ky, self._kz
        div = (v[0] * kx).addcmul_(v[1], ky).addcmul_(v[2], kz).mul_(self._inv_k2)
        v.mul_(self._keep)
        for i, k in enumerate((kx, ky, kz)):
            v[i].addcmul_(div, k, value=-1)
        return v

    def _advance(self, s: tuple, n_steps: int) -> tuple:
        v, ws = s
        for i in range(v.shape[0]):
            e2 = self._e2[i if self._e2.shape[0] > 1 else 0]
            for _ in range(n_steps):
                self._step_one(v[i], e2, ws)
        return s

    def _frame(self, s: tuple) -> torch.Tensor:
        v, ws = s
        return torch.stack([torch.fft.irfftn(vi, s=ws["u"].shape[1:], dim=_AXES) for vi in v])

    def _courant(self, u: torch.Tensor, s: Any) -> torch.Tensor:
        return u.square().sum(dim=1).amax(dim=(1, 2, 3)).sqrt() * (self.dt / self.dx)

    def _nonlinear(
        self, v: torch.Tensor, out: torch.Tensor, ws: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        """``P(u x omega)`` of one spectrum (3, n, n, n // 2 + 1), truncated, into ``out``."""
        ikx, iky, ikz = self._ikx, self._iky, self._ikz
        w_hat = ws["w_hat"]
        torch.mul(v[2], iky, out=w_hat[0]).addcmul_(v[1], ikz, value=-1)
        torch.mul(v[0], ikz, out=w_hat[1]).addcmul_(v[2], ikx, value=-1)
        torch.mul(v[1], ikx, out=w_hat[2]).addcmul_(v[0], iky, value=-1)
        shape = ws["u"].shape[1:]
        u = torch.fft.irfftn(v, s=shape, dim=_AXES, out=ws["u"])
        w = torch.fft.irfftn(w_hat, s=shape, dim=_AXES, out=ws["w"])
        c = ws["cross"]
        torch.mul(u[1], w[2], out=c[0]).addcmul_(u[2], w[1], value=-1)
        torch.mul(u[2], w[0], out=c[1]).addcmul_(u[0], w[2], value=-1)
        torch.mul(u[0], w[1], out=c[2]).addcmul_(u[1], w[0], value=-1)
        c_hat = torch.fft.rfftn(c, dim=_AXES, out=ws["c_hat"])
        kx, ky, kz = self._kx, self._ky, self._kz
        kc = torch.mul(c_hat[0], kx, out=ws["kc"]).addcmul_(c_hat[1], ky).addcmul_(c_hat[2], kz)
        kc.mul_(self._inv_k2)
        torch.mul(c_hat, self._nl_keep, out=out)
        for i, k in enumerate((kx, ky, kz)):
            out[i].addcmul_(kc, k, value=-1)
        return out

    def _step_one(self, v: torch.Tensor, e2: torch.Tensor, ws: dict[str, torch.Tensor]) -> None:
        """One IF-RK4 step of one spectrum ``v`` in place; ``e2`` = exp(-nu k^2 dt / 2).

        With :math:`E_2 = e^{L h/2}`: :math:`a = E_2 (v + \\tfrac h2 k_1)`, :math:`b = E_2 v +
        \\tfrac h2 k_2`, :math:`c = E_2 (E_2 v + h k_3)`, and :math:`v' = E_2 (E_2 (v +
        \\tfrac h6 k_1) + \\tfrac h3 (k_2 + k_3)) + \\tfrac h6 k_4` (``k_i`` the nonlinear term
        at the stages), i.e. classical RK4 on :math:`e^{-Lt} v`.
        """
        h = self.dt
        k1 = self._nonlinear(v, ws["k1"], ws)
        a = torch.add(v, k1, alpha=h / 2, out=ws["a"]).mul_(e2)
        k2 = self._nonlinear(a, ws["k2"], ws)
        e2v = torch.mul(v, e2, out=ws["e2v"])
        b = torch.add(e2v, k2, alpha=h / 2, out=ws["b"])
        k3 = self._nonlinear(b, ws["k3"], ws)
        c = torch.add(e2v, k3, alpha=h, out=ws["c"]).mul_(e2)
        k4 = self._nonlinear(c, ws["k4"], ws)
        v.add_(k1, alpha=h / 6).mul_(e2).add_(k2.add_(k3), alpha=h / 3).mul_(e2)
        v.add_(k4, alpha=h / 6)
