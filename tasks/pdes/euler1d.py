"""One-dimensional compressible Navier-Stokes / Euler equations (PDEBench's 1D CFD family)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

import numpy as np
import torch

from pdeflow.tasks.fields import seeded_samples
from pdeflow.tasks.pdes.base import (
    PDE,
    Bound,
    Coefficient,
    CoefficientValue,
    Defaults,
    Grid,
    PDEInfo,
    largest,
)

# Default options of the PDE's own random initial states (``initial_condition``).
N_WAVES, K_MAX = 4, 4
DELTA = 0.5  # largest relative perturbation of density and pressure about 1
MACH = 1.0  # largest velocity amplitude, in units of the reference sound speed sqrt(gamma)
RIEMANN_LEVELS = (0.2, 1.0)  # range of density and pressure of random Riemann states
RIEMANN_MACH = 0.5  # largest |u| of a random Riemann state, in units of sqrt(gamma)

# At the default options every initial state above has max(|u| + c) <= 2.74 sqrt(gamma): the
# smooth states (1 + sqrt(3)) sqrt(gamma) (c <= sqrt(gamma 1.5 / 0.5)), the Riemann states
# (0.5 + sqrt(5)) sqrt(gamma), Sod's tube 1.18 sqrt(gamma / 1.4). Shocks raise a state's own
# speed (measured over 64 seeds of each random kind, n = 256, t <= 0.4, gamma 1.4, inviscid: up
# to 1.23 times the initial max(|u| + c) for smooth states, 1.43 for Riemann ones), but the
# largest stayed 0.85 times the bound 2.74 sqrt(gamma). max_stable_dt uses 1.5 times the bound.
SPEED_BOUND = 1.5 * 2.74
# Floor of the density max_stable_dt assumes in the viscous limit nu = mu / rho. Initial minima
# are 0.5 (smooth), 0.2 (Riemann), 0.125 (Sod); rarefactions thin the gas, measured (same runs)
# down to 0.33 (smooth) and 0.137 (Riemann). A frame's own densities are checked on the fly.
DENSITY_FLOOR = 0.1

LIMITERS = ("minmod", "van_leer")
FLUXES = ("hllc", "rusanov")
BOUNDARIES = ("periodic", "outflow")
KINDS = ("random", "riemann", "sod")


def _minmod(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (torch.sign(a) + torch.sign(b)) * torch.minimum(a.abs(), b.abs()) / 2


def _van_leer(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    # 2ab / (a + b) where ab > 0: the harmonic mean of the one-sided slopes, 0 at extrema.
    ab = a * b
    return torch.where(ab > 0, 2 * ab / torch.where(ab > 0, a + b, 1.0), 0.0)


class CompressibleEuler1D(PDE):
    r"""1D compressible Navier-Stokes equations of an ideal gas (Euler for zero viscosity).

    .. math::

        \partial_t \rho + \partial_x (\rho u) &= 0, \\
        \partial_t (\rho u) + \partial_x \left(\rho u^2 + p - \mu\, \partial_x u\right) &= 0, \\
        \partial_t E + \partial_x \left((E + p)\, u - \mu\, u\, \partial_x u\right) &= 0, \\
        p = (\gamma - 1)\left(E - \tfrac12 \rho u^2\right), &\quad
        \mu = \tfrac43 \eta + \zeta,

    PDEBench's CFD equations (Takamoto et al. 2022) in 1D, where the viscous stress
    :math:`\eta\, \partial_{xx} u + (\zeta + \eta/3)\, \partial_x \partial_x u` is
    :math:`\partial_x(\mu\, \partial_x u)`; no heat conduction. Domain :math:`x \in [0, \ell]`,
    ``boundary="periodic"`` or ``"outflow"`` (zero-gradient ghost cells). Symbols: the state
    (batch, 3, n) holds the conserved ``density`` :math:`\rho`, ``momentum`` :math:`\rho u` and
    total ``energy`` :math:`E` per volume; :math:`\gamma` is ``gamma`` (ratio of specific heats,
    one per run), :math:`\eta` ``eta`` (shear) and :math:`\zeta` ``zeta`` (bulk viscosity), one
    value or one per sample. Only :math:`\mu` enters in 1D, so ``zeta`` is held at 0 by default
    and ``eta`` sampled log-uniformly over [1e-4, 1e-2] (PDEBench uses eta = zeta in {1e-8,
    1e-2, 1e-1}): sampling both would add a design dimension the data cannot identify, and
    PDEBench's 0.1 sets a diffusive step 30 times below the advective one at n = 256.

    Space: ``n`` cells of side :math:`\Delta x = \ell/n` with centres :math:`(i + 1/2)\Delta x`,
    finite volumes: MUSCL reconstruction of the primitive variables :math:`(\rho, u, p)` with
    the ``minmod`` (default) or ``van_leer`` limiter (face values between neighbouring cell
    values, so face density and pressure stay positive), the HLLC flux (Toro, Spruce & Speares
    1994; Toro 2009, section 10.4) with Davis's wave speeds, or ``flux="rusanov"``; viscous
    fluxes by central differences, :math:`\mu (u_{i+1} - u_i)/\Delta x` and
    :math:`\mu (u_{i+1}^2 - u_i^2) / (2\Delta x)` at face :math:`i + 1/2`. Every update is a
    difference of face fluxes, so with periodic boundaries mass, momentum and energy are
    conserved to rounding. Time: SSP-RK2 (Heun; Shu & Osher 1988).

    Stability limit: for scalar advection the forward-Euler MUSCL step with a limiter
    :math:`0 \le \phi(r) \le 2`, :math:`0 \le \phi(r)/r \le 2` (minmod, van Leer) is TVD when
    :math:`|a| \Delta t / \Delta x \le 1/2` (Harten's lemma on the incremental form), and
    SSP-RK2 keeps that bound (SSP coefficient 1; Gottlieb, Shu & Tadmor 2001); for the Euler
    system the fastest characteristic speed :math:`|u| + c`, :math:`c = \sqrt{\gamma p/\rho}`,
    takes the place of :math:`|a|` (HLLC is positivity-preserving under the first-order CFL 1;
    Batten et al. 1997), hence ``CFL_MAX = 0.5``. The explicit viscous term is stable for
    :math:`2\nu \Delta t / \Delta x^2 \le 1`, :math:`\nu = \mu/\rho`; writing the step as a
    convex combination of an advective and a viscous forward-Euler step gives the combined
    limit, checked on every frame as the Courant number

    .. math::

        C = \Delta t \max_i \left(\frac{|u_i| + c_i}{\Delta x}
            + \frac{2\, C_{max}\, \mu}{\rho_i\, \Delta x^2}\right) \le C_{max} = 0.5,

    which is :math:`\max(|u| + c)\, \Delta t / \Delta x` for inviscid flow. Non-positive
    density or pressure raises ``BlowUpError``.

    Args:
        grid: A 1D ``Grid`` or the number of cells (>= 4) with ``length`` the domain length.
        boundary: ``"periodic"`` (default) or ``"outflow"``.
        limiter: ``"minmod"`` (default) or ``"van_leer"``.
        flux: ``"hllc"`` (default) or ``"rusanov"``.
        **kwargs: ``dt``, ``length``, ``device``, ``dtype``, ``cfl_max`` and the coefficients
            ``gamma``, ``eta``, ``zeta`` (see ``PDE``).
    """

    # max_stable_dt is 5.0e-5 here (gamma 1.4, eta <= 1e-2): dt leaves 20% margin.
    info: ClassVar[PDEInfo] = PDEInfo(
        name="compressible_euler_1d",
        description="1D compressible Navier-Stokes (PDEBench CFD), MUSCL-HLLC + SSP-RK2",
        fields={
            "density": "mass/length (rho)",
            "momentum": "mass/time (rho u)",
            "energy": "mass length/time^2 (total energy per length, E)",
        },
        coefficients={
            "gamma": Coefficient((1.05, 3.0), value=1.4, per_run=True),
            "eta": Coefficient((0.0, 1.0), "mass/time", ("loguniform", 1e-4, 1e-2)),
            "zeta": Coefficient((0.0, 1.0), "mass/time", value=0.0),
        },
        defaults=Defaults(n=256, length=1.0, t_end=0.4, dt=4e-5, n_frames=21),
        boundary="periodic (outflow: generate.solver_options.boundary)",
        coordinate_offset=0.5,
    )
    CFL_MAX: ClassVar[float] = 0.5
    even_grid: ClassVar[bool] = False
    min_points: ClassVar[int] = 4

    def __init__(
        self,
        grid: Grid | int,
        *,
        boundary: Literal["periodic", "outflow"] = "periodic",
        limiter: Literal["minmod", "van_leer"] = "minmod",
        flux: Literal["hllc", "rusanov"] = "hllc",
        **kwargs: Any,
    ) -> None:
        for name, value, allowed in (
            ("boundary", boundary, BOUNDARIES),
            ("limiter", limiter, LIMITERS),
            ("flux", flux, FLUXES),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {list(allowed)}, got {value!r}")
            object.__setattr__(self, name, value)
        super().__init__(grid, **kwargs)

    def _setup(self, params: dict[str, torch.Tensor]) -> dict[str, Any]:
        mu = 4.0 / 3.0 * params["eta"] + params["zeta"]
        return {
            "_gamma": float(params["gamma"][0]),
            "_mu": mu[:, None],
            # Inviscid runs skip the viscous fluxes: their path is the Euler scheme exactly.
            "_viscous": bool((mu > 0).any()),
            "_slope": _minmod if self.limiter == "minmod" else _van_leer,
        }

    def _start(self, u: torch.Tensor) -> torch.Tensor:
        return u.clone()

    def _frame(self, s: torch.Tensor) -> torch.Tensor:
        return s

    def _advance(self, s: torch.Tensor, n_steps: int) -> torch.Tensor:
        for _ in range(n_steps):
            stage = s + self.dt * self._rhs(s)
            s = 0.5 * s + 0.5 * (stage + self.dt * self._rhs(stage))
        return s

    # --- the scheme -----------------------------------------------------------------------

    def primitive(self, u: torch.Tensor) -> torch.Tensor:
        """Primitive variables (rho, u, p), shape (batch, 3, n), of a conserved state."""
        rho, mom, energy = u.unbind(1)
        vel = mom / rho
        return torch.stack((rho, vel, (self._gamma - 1.0) * (energy - 0.5 * mom * vel)), 1)

    def _conserved(self, w: torch.Tensor) -> torch.Tensor:
        rho, vel, p = w.unbind(1)
        mom = rho * vel
        return torch.stack((rho, mom, p / (self._gamma - 1.0) + 0.5 * mom * vel), 1)

    def _pad(self, w: torch.Tensor) -> torch.Tensor:
        """Two ghost cells per side: (batch, 3, n + 4)."""
        if self.boundary == "periodic":
            return torch.cat((w[..., -2:], w, w[..., :2]), -1)
        return torch.cat((w[..., :1], w[..., :1], w, w[..., -1:], w[..., -1:]), -1)

    def _rhs(self, u: torch.Tensor) -> torch.Tensor:
        """-(F_{i+1/2} - F_{i-1/2}) / dx of each cell, shape (batch, 3, n)."""
        w = self._pad(self.primitive(u))
        diff = w[..., 1:] - w[..., :-1]
        slope = self._slope(diff[..., :-1], diff[..., 1:])  # cells 1 .. n + 2 of the padding
        left = w[..., 1:-2] + 0.5 * slope[..., :-1]  # faces i + 1/2, i = 1 .. n + 1
        right = w[..., 2:-1] - 0.5 * slope[..., 1:]
        riemann = self._hllc if self.flux == "hllc" else self._rusanov
        flux = riemann(left, right)
        if self._viscous:
            flux = flux - self._viscous_flux(w[..., 1:-1])
        return (flux[..., :-1] - flux[..., 1:]) / self.dx

    def _viscous_flux(self, w: torch.Tensor) -> torch.Tensor:
        """(0, mu u_x, mu u u_x) at the n + 1 faces between the cells ``w`` (batch, 3, n + 2)."""
        vel = w[:, 1]
        grad = (vel[..., 1:] - vel[..., :-1]) * (self._mu / self.dx)
        work = (vel[..., 1:] + vel[..., :-1]) * grad / 2
        return torch.stack((torch.zeros_like(grad), grad, work), 1)

    def _euler_flux(self, w: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        vel, p = w[:, 1:2], w[:, 2]
        flux = u * vel
        return flux + torch.stack((torch.zeros_like(p), p, p * w[:, 1]), 1)

    def _sound(self, w: torch.Tensor) -> torch.Tensor:
        return torch.sqrt(self._gamma * w[:, 2] / w[:, 0])

    def _rusanov(self, wl: torch.Tensor, wr: torch.Tensor) -> torch.Tensor:
        ul, ur = self._conserved(wl), self._conserved(wr)
        speed = torch.maximum(wl[:, 1].abs() + self._sound(wl), wr[:, 1].abs() + self._sound(wr))
        flux_sum = self._euler_flux(wl, ul) + self._euler_flux(wr, ur)
        return 0.5 * (flux_sum - speed[:, None] * (ur - ul))

    def _hllc(self, wl: torch.Tensor, wr: torch.Tensor) -> torch.Tensor:
        """HLLC flux (Toro 2009, eqs. 10.37-10.39) between face states (batch, 3, faces)."""
        (rl, vl, pl), (rr, vr, pr) = wl.unbind(1), wr.unbind(1)
        cl, cr = self._sound(wl), self._sound(wr)
        sl = torch.minimum(vl - cl, vr - cr)
        sr = torch.maximum(vl + cl, vr + cr)
        # ml < 0 < mr: Davis's speeds lie outside each side's u -/+ c, so no division by 0.
        ml, mr = rl * (sl - vl), rr * (sr - vr)
        s_star = (pr - pl + vl * ml - vr * mr) / (ml - mr)
        ul, ur = self._conserved(wl), self._conserved(wr)
        fl, fr = self._euler_flux(wl, ul), self._euler_flux(wr, ur)
        star_l = self._star(ml, sl, s_star, vl, pl, ul)
        star_r = self._star(mr, sr, s_star, vr, pr, ur)
        fl_star = fl + sl[:, None] * (star_l - ul)
        fr_star = fr + sr[:, None] * (star_r - ur)
        sl, sr, s_star = sl[:, None], sr[:, None], s_star[:, None]
        return torch.where(
            sl >= 0, fl, torch.where(s_star >= 0, fl_star, torch.where(sr > 0, fr_star, fr))
        )

    @staticmethod
    def _star(m, s, s_star, vel, p, u):
        """Conserved star state of one side (Toro 2009, eq. 10.39); ``m = rho (S - u)``."""
        rho_star = m / (s - s_star)
        energy = u[:, 2] / u[:, 0] + (s_star - vel) * (s_star + p / m)
        return torch.stack((rho_star, rho_star * s_star, rho_star * energy), 1)

    # --- checks and bounds ----------------------------------------------------------------

    def _courant(self, u: torch.Tensor, s: Any) -> torch.Tensor:
        w = self.primitive(u)
        rate = (w[:, 1].abs() + self._sound(w)) / self.dx
        if self._viscous:
            rate = rate + (2 * self.CFL_MAX / self.dx**2) * self._mu / w[:, 0]
        return self.dt * rate.amax(-1)

    def _invalid(self, u: torch.Tensor) -> tuple[torch.Tensor, str]:
        w = self.primitive(u)
        bad = (w[:, 0] <= 0).any(-1) | (w[:, 2] <= 0).any(-1)
        return bad, "non-positive density or pressure"

    @classmethod
    def max_stable_dt(
        cls, grid: Grid, coefficients: Mapping[str, Bound], u_max: float | None = None
    ) -> float:
        """Largest ``dt`` with ``C <= CFL_MAX`` (class docstring) for the coefficients' bounds.

        ``u_max`` bounds the signal speed ``max(|u| + c)``; None: the bound of the PDE's own
        initial states, ``SPEED_BOUND * sqrt(gamma)``, with densities above ``DENSITY_FLOOR``.
        """
        dx = grid.spacing[0]
        gamma = largest(coefficients.get("gamma", 1.4))
        speed = SPEED_BOUND * math.sqrt(gamma) if u_max is None else float(u_max)
        mu = 4.0 / 3.0 * largest(coefficients.get("eta", 0.0)) + largest(
            coefficients.get("zeta", 0.0)
        )
        rate = speed / dx + 2 * cls.CFL_MAX * mu / (DENSITY_FLOOR * dx**2)
        return cls.CFL_MAX / rate

    # --- initial states -------------------------------------------------------------------

    @classmethod
    def initial_condition(
        cls,
        grid: Grid | int,
        seeds: Sequence[int] | np.ndarray,
        *,
        dtype: torch.dtype = torch.float64,
        device: str | torch.device = "cpu",
        gamma: CoefficientValue = 1.4,
        eta: CoefficientValue | None = None,
        zeta: CoefficientValue | None = None,
        kind: str = "random",
        length: float | None = None,
        **options: float,
    ) -> torch.Tensor:
        """Conserved initial states (batch, 3, n), one per seed, built per sample with numpy.

        ``kind="random"`` (PDEBench's random initial states): :math:`\\rho = 1 + a_\\rho
        s_\\rho(x)`, :math:`p = 1 + a_p s_p(x)`, :math:`u = M \\sqrt{\\gamma}\\, s_u(x)` with
        :math:`a_\\rho, a_p \\sim U(0, \\delta)`, :math:`M \\sim U(0, \\text{mach})` and each
        :math:`s` a sum of ``n_waves`` sines :math:`A_j \\sin(2\\pi k_j x/\\ell + \\phi_j)`,
        :math:`k_j \\in \\{1..k_{max}\\}`, divided by :math:`\\sum_j A_j` (so
        :math:`|s| \\le 1`). ``kind="riemann"``: constant states left and right of a jump at
        :math:`x_0 \\sim U(\\ell/4, 3\\ell/4)`, with :math:`\\rho, p \\sim U(0.2, 1)` and
        :math:`u \\sim U(-1, 1)\\, \\text{mach} \\sqrt{\\gamma}` (mach 0.5 by default).
        ``kind="sod"``: Sod's tube, (1, 0, 1) left and (0.125, 0, 0.1) right of ``l/2``.

        Args:
            grid: The grid, or the number of cells with ``length`` (default the PDE's).
            seeds: One integer per sample; sample ``i`` uses only
                ``numpy.random.default_rng(seeds[i])``, so it is batch-invariant.
            dtype, device: Of the result.
            gamma: One value or one per seed.
            eta, zeta: Accepted with the other coefficients; the state does not use them.
            kind: ``"random"`` (default), ``"riemann"`` or ``"sod"``.
            length: Domain length when ``grid`` is an integer.
            **options: ``n_waves``, ``k_max``, ``delta``, ``mach`` (random), ``mach``
                (riemann).
        """
        del eta, zeta
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {list(KINDS)}, got {kind!r}")
        if not isinstance(grid, Grid):
            grid = Grid.uniform(
                int(grid), cls.info.defaults.length if length is None else length, 1
            )
        n, ell = grid.n, grid.length
        x = cls.coordinates(grid)[0]
        seeds = [int(s) for s in seeds]
        gammas = np.broadcast_to(np.asarray(gamma, dtype=np.float64).reshape(-1), (len(seeds),))
        draw = {"random": _smooth_draw, "riemann": _riemann_draw, "sod": _sod_draw}[kind]
        out = np.empty((len(seeds), 3, n))
        for i, (seed, g) in enumerate(zip(seeds, gammas, strict=True)):
            out[i] = seeded_samples([seed], (3, n), draw(x, ell, float(g), **options))[0]
        return torch.as_tensor(out, dtype=dtype, device=device)


def _to_conserved(rho: np.ndarray, vel: np.ndarray, p: np.ndarray, gamma: float) -> np.ndarray:
    return np.stack((rho, rho * vel, p / (gamma - 1.0) + 0.5 * rho * vel**2))


def _smooth_draw(x, ell, gamma, n_waves=N_WAVES, k_max=K_MAX, delta=DELTA, mach=MACH):
    if not (0 <= delta < 1 and mach >= 0 and int(n_waves) >= 1 and int(k_max) >= 1):
        raise ValueError(f"need 0 <= delta < 1, mach >= 0, n_waves, k_max >= 1; got {delta}")

    def waves(rng: np.random.Generator) -> np.ndarray:
        total, weight = np.zeros_like(x), 0.0
        for _ in range(int(n_waves)):
            k = rng.integers(1, int(k_max), endpoint=True)
            amp, phase = rng.uniform(0.0, 1.0), rng.uniform(0.0, 2 * math.pi)
            total += amp * np.sin(2 * math.pi * k * x / ell + phase)
            weight += amp
        return total / max(weight, 1e-12)

    def draw(rng: np.random.Generator) -> np.ndarray:
        rho = 1.0 + rng.uniform(0.0, delta) * waves(rng)
        vel = rng.uniform(0.0, mach) * math.sqrt(gamma) * waves(rng)
        p = 1.0 + rng.uniform(0.0, delta) * waves(rng)
        return _to_conserved(rho, vel, p, gamma)

    return draw


def _riemann_draw(x, ell, gamma, mach=RIEMANN_MACH):
    if not mach >= 0:
        raise ValueError(f"mach must be >= 0, got {mach!r}")

    def draw(rng: np.random.Generator) -> np.ndarray:
        rho = rng.uniform(*RIEMANN_LEVELS, size=2)
        vel = rng.uniform(-1.0, 1.0, size=2) * mach * math.sqrt(gamma)
        p = rng.uniform(*RIEMANN_LEVELS, size=2)
        side = (x >= rng.uniform(0.25 * ell, 0.75 * ell)).astype(int)
        return _to_conserved(rho[side], vel[side], p[side], gamma)

    return draw


def _sod_draw(x, ell, gamma):
    def draw(rng: np.random.Generator) -> np.ndarray:
        side = (x >= 0.5 * ell).astype(int)
        rho, p = np.array([1.0, 0.125])[side], np.array([1.0, 0.1])[side]
        return _to_conserved(rho, np.zeros_like(x), p, gamma)

    return draw
