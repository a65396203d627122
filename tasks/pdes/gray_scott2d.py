"""Two-dimensional Gray-Scott reaction-diffusion, pseudo-spectral in space and ETDRK4 in time."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch

from pdeflow.tasks.fields import seeded_samples
from pdeflow.tasks.pdes import base
from pdeflow.tasks.pdes.base import PDE, Coefficient, Defaults, Grid, PDEInfo
from pdeflow.tasks.pdes.etdrk4 import etdrk4_coefficients
from pdeflow.tasks.pdes.spectral1d import RK4_REAL_LIMIT

# Bound on v assumed by max_stable_dt when none is given. u stays in [0, 1] (see the class
# docstring); v, the autocatalyst, measured at most 0.52 for F in {0.02, 0.03, 0.04, 0.05} x
# kappa in {0.055, 0.06, 0.065} from initial_condition to t = 2000 (n = 128, length 1), and at
# most 0.60 at the four corners of the default (F, kappa) box (seeds 0-3, the own defaults).
V_BOUND = 0.75

# Grid points per diffusion length sqrt(Dv / (F + kappa)) that resolution_warning asks for.
# Measured on those runs: with 1.2 points (n = 128, length 1) the spectrum of v falls to 1e-5 of
# its peak at the Nyquist band; with 0.6 (n = 128, length 2) only to 5e-3, and v differed from
# the n = 256 run by 10-70% (relative L2) at t = 200.
POINTS_PER_LENGTH = 1.0

RATE = "1/time"
DIFFUSIVITY = "length^2/time"


def _patches(rng: np.random.Generator, n: int) -> np.ndarray:
    """One seeded initial state, shape (2, n, n): u = 1, v = 0 with 1 to 4 noisy square patches.

    Patch sides are U(0.1, 0.2) of the domain, centres uniform, wrapped periodically; inside
    a patch u = 0.5 and v = 0.25, each plus U(-0.01, 0.01) noise.
    """
    state = np.empty((2, n, n))
    state[0], state[1] = 1.0, 0.0
    cells = (np.arange(n) + 0.5) / n
    for _ in range(rng.integers(1, 5, endpoint=True)):
        half = rng.uniform(0.05, 0.1)
        centre = rng.uniform(0.0, 1.0, size=2)
        # Periodic distance of each cell centre to the patch centre, in domain units.
        dist = [np.abs((cells - c + 0.5) % 1.0 - 0.5) for c in centre]
        inside = (dist[0][:, None] <= half) & (dist[1][None, :] <= half)
        state[0][inside] = 0.5
        state[1][inside] = 0.25
    noise = rng.uniform(-0.01, 0.01, size=(2, n, n))
    patched = state[1] > 0
    state[:, patched] += noise[:, patched]
    return state


class GrayScott2D(PDE):
    r"""Gray-Scott reaction-diffusion system on a periodic square, batched over samples.

    .. math::

        \partial_t u &= D_u \Delta u - u v^2 + F (1 - u), \\
        \partial_t v &= D_v \Delta v + u v^2 - (F + \kappa) v,
        \qquad (x, y) \in [0, \ell)^2, \; t > 0,

    periodic in ``x`` and ``y``. Symbols: ``u`` (substrate) and ``v`` (autocatalyst) are the
    channels of the state, shape (batch, 2, n, n), dimensionless concentrations; :math:`F` is
    ``F`` (feed rate) and :math:`\kappa` is ``kappa`` (kill rate), both 1/time, one value for
    the batch or one per sample; :math:`D_u, D_v` are ``Du``, ``Dv`` (length^2/time), one
    value per run; :math:`\ell` is ``length``. The defaults ``Du = 2e-5``, ``Dv = 1e-5`` are
    Pearson's (1993), "Complex patterns in a simple system", Science 261, 189-192, who mapped
    the patterns over :math:`F \in [0, 0.08]`, :math:`\kappa \in [0.03, 0.07]` on a square of
    side 2.5 with 256^2 points (spacing 0.0098); the default side here is 1, so that 128^2
    points (spacing 0.0078) resolve the patterns (see ``resolution_warning``). ``u`` stays in
    [0, 1] and ``v`` >= 0 (at a minimum of ``u`` at 0 the feed :math:`F > 0` pushes it up, at a
    maximum at 1 :math:`-uv^2 \le 0`; at a minimum of ``v`` at 0 the reaction vanishes).

    Space is Fourier pseudo-spectral (``torch.fft.rfft2``) on the grid ``x_i = i h``,
    :math:`h = \ell/n` (axis -2 of the state is ``x``, axis -1 is ``y``), with all modes kept:
    resolved patterns have spectra that fall many decades before the grid cut-off, so the
    aliasing of the cubic :math:`u v^2` stays at that level (``resolution_warning`` flags grids
    too coarse for it). In time, diffusion :math:`-D |\mathbf k|^2` is integrated exactly and
    the reactions explicitly, by the ETDRK4 scheme of Cox & Matthews (2002), J. Comput. Phys.
    176, 430-455, with the contour coefficients of Kassam & Trefethen (2005), SIAM J. Sci.
    Comput. 26(4), 1214-1233 (see ``pdeflow.tasks.pdes.etdrk4``). The linear reaction terms
    :math:`-F u`, :math:`-(F + \kappa) v` stay explicit so the coefficients do not depend on
    the sample: they are computed once, shape (2, n, n // 2 + 1).

    Stability limit: diffusion is exact, so only the reactions limit ``dt``. Their Jacobian is
    :math:`J = \begin{pmatrix} -v^2 - F & -2uv \\ v^2 & 2uv - F - \kappa \end{pmatrix}`, with
    :math:`\|J\|_\infty \le v(v + 2u) + F + \kappa`. ETDRK4 reduces to RK4 on the mean mode
    (``L = 0``), stable down to :math:`-2.785` on the real axis (the damped modes only widen
    the region), hence

    .. math::

        \Delta t \le \frac{2.785}{v_{max}(v_{max} + 2) + F_{max} + \kappa_{max}},

    using :math:`u \le 1` (given a bound ``u_max`` on both fields, :math:`v_{max} = u_{max}`
    and :math:`u \le \max(1, u_{max})`). With :math:`v_{max} = 0.75` (``V_BOUND``) and the
    default parameter box this is 1.28; the default ``dt = 1`` is Pearson's. Past the limit
    the feed and kill terms overshoot and the rollout raises ``BlowUpError`` once values overflow.

    Args:
        grid: A ``Grid`` (square, even and >= 8 points per side) or the points per side.
        **kwargs: ``dt``, ``length`` (default 1.0), ``device``, ``dtype`` and the coefficients:
            ``F`` and ``kappa`` in [0, 0.1], each one value or one per sample, and ``Du``,
            ``Dv`` in [0, 0.01], one value per run (defaults 2e-5 and 1e-5); see
            ``pdeflow.tasks.pdes.base.PDE``.

    Attributes:
        x, y: Grid coordinates ``i * dx``, shape (n,), solver dtype (``coordinates``).
    """

    # F and kappa: where patterns persisted in the V_BOUND runs (F = 0.04, 0.05 at
    # kappa = 0.06, 0.065, and F = 0.03 at 0.06); a few samples near (0.035, 0.065) may
    # still decay to u = 1, v = 0. Du and Dv shape the ETDRK4 coefficients: one per run.
    # Pearson's step and horizon; max_stable_dt = 1.28 for the default box on any grid.
    info = PDEInfo(
        name="gray_scott_2d",
        dim=2,
        description="Gray-Scott reaction-diffusion (Pearson 1993), spectral + ETDRK4",
        fields={
            "u": "dimensionless (substrate concentration)",
            "v": "dimensionless (autocatalyst concentration)",
        },
        coefficients={
            "F": Coefficient((0.0, 0.1), RATE, sample=("uniform", 0.035, 0.05)),
            "kappa": Coefficient((0.0, 0.1), RATE, sample=("uniform", 0.06, 0.065)),
            "Du": Coefficient((0.0, 0.01), DIFFUSIVITY, value=2e-5, per_run=True),
            "Dv": Coefficient((0.0, 0.01), DIFFUSIVITY, value=1e-5, per_run=True),
        },
        defaults=Defaults(n=128, length=1.0, t_end=2000.0, dt=1.0, n_frames=21),
    )

    def _setup(self, params: dict[str, torch.Tensor]) -> dict[str, Any]:
        n, dx = self.n, self.dx
        kx = torch.fft.fftfreq(n, d=dx, dtype=torch.float64) * (2 * math.pi)
        ky = torch.fft.rfftfreq(n, d=dx, dtype=torch.float64) * (2 * math.pi)
        k2 = kx[:, None] ** 2 + ky[None, :] ** 2
        linear = -torch.cat([params["Du"], params["Dv"]])[:, None, None] * k2
        coef = etdrk4_coefficients(linear, self.dt, dtype=torch.float64)
        # Complex, so that the base casts them with the spectra they multiply.
        out: dict[str, Any] = {
            f"_{name}": getattr(coef, name).to(torch.complex128) for name in coef._fields
        }
        x, y = (torch.from_numpy(c) for c in self.coordinates(self.grid))
        out.update(_feed=params["F"][:, None, None], _kill=params["kappa"][:, None, None])
        return {**out, "x": x, "y": y}

    @classmethod
    def max_stable_dt(
        cls, grid: Grid, coefficients: Mapping[str, base.Bound], u_max: float | None = None
    ) -> float:
        """Largest stable step ``2.785 / (v_max (v_max + 2 max(1, u_max)) + F_max + kappa_max)``.

        See the class docstring for the derivation. The grid does not enter: diffusion is
        integrated exactly.

        Args:
            grid: The grid.
            coefficients: Every coefficient's value or (low, high) range.
            u_max: Bound on ``u`` and ``v`` over the rollout; None: ``V_BOUND`` = 0.75 on ``v``
                and 1 on ``u``, the bounds of the initial state's runs.

        Returns:
            The step size bound, in time units.
        """
        v_max = V_BOUND if u_max is None else float(u_max)
        rates = base.largest(coefficients["F"]) + base.largest(coefficients["kappa"])
        return RK4_REAL_LIMIT / (v_max * (v_max + 2 * max(1.0, v_max)) + rates)

    @classmethod
    def resolution_warning(
        cls, grid: Grid, coefficients: Mapping[str, base.Bound], u_max: float | None = None
    ) -> str | None:
        """A message if the grid cannot resolve the edge of a ``v`` spot, else ``None``.

        Away from a spot ``v`` decays over the diffusion length
        :math:`\\ell_v = \\sqrt{D_v / (F + \\kappa)}`, the thinnest scale of the patterns; at
        least ``POINTS_PER_LENGTH`` = 1 grid point per :math:`\\ell_v` is asked for at the
        largest ``F + kappa`` and the smallest ``Dv``.
        """
        rates = base.largest(coefficients["F"]) + base.largest(coefficients["kappa"])
        if rates <= 0:
            return None
        scale = math.sqrt(max(base.smallest(coefficients["Dv"]), 0.0) / rates)
        h = max(grid.spacing)
        if scale >= POINTS_PER_LENGTH * h:
            return None
        if scale == 0:
            return f"{cls.info.name}: Dv = 0 leaves the spot edges sharp on every grid"
        n_needed = 2 * math.ceil(POINTS_PER_LENGTH * max(grid.lengths) / scale / 2)
        return (
            f"{cls.info.name}: grid {grid.describe()} gives {scale / h:.2g} points per diffusion "
            f"length sqrt(Dv / (F + kappa)) = {scale:.3g}; use n >= {n_needed}"
        )

    @classmethod
    def initial_condition(
        cls,
        grid: Grid,
        seeds: Iterable[int],
        *,
        dtype: torch.dtype = torch.float64,
        device: str | torch.device = "cpu",
    ) -> torch.Tensor:
        """Pearson's initial state: ``u = 1``, ``v = 0`` with 1 to 4 random square patches.

        Inside a patch ``u = 0.5``, ``v = 0.25``, each with U(-0.01, 0.01) noise; sides are
        U(0.1, 0.2) of ``length`` and centres uniform over the periodic square, so the
        layout in domain units does not depend on ``n``. Each sample is drawn by itself
        (``pdeflow.tasks.fields.seeded_samples``), so it is bitwise the same alone as at any
        position of any batch: batch-invariant by construction.

        Args:
            grid: The grid (the layout scales with its side).
            seeds: One integer per sample; sample ``i`` uses
                ``numpy.random.default_rng(int(seeds[i]))`` alone.
            dtype: Torch dtype of the result.
            device: Torch device of the result.

        Returns:
            The state, shape (batch, 2, n, n).
        """
        n = base.as_grid(grid, None, cls.info.dim, cls.info.defaults.length).n
        states = seeded_samples(seeds, (2, n, n), lambda rng: _patches(rng, n))
        return torch.as_tensor(states, dtype=dtype, device=device)

    def _nonlinear(self, w: torch.Tensor) -> torch.Tensor:
        """Spectrum of the reaction terms of a spectral state, (batch, 2, n, n // 2 + 1)."""
        s = torch.fft.irfft2(w, s=(self.n, self.n))
        u, v = s[:, 0], s[:, 1]
        uvv = u * v * v
        feed = self._feed * (1 - u)
        out = torch.stack([feed - uvv, uvv - (self._feed + self._kill) * v], dim=1)
        return torch.fft.rfft2(out)

    def _start(self, u: torch.Tensor) -> torch.Tensor:
        return torch.fft.rfft2(u)

    def _advance(self, w: torch.Tensor, n_steps: int) -> torch.Tensor:
        """``n_steps`` ETDRK4 steps in Fourier space (Cox & Matthews 2002, eqs. 26-29)."""
        for _ in range(n_steps):
            nw = self._nonlinear(w)
            e2w = self._e2 * w
            a = torch.addcmul(e2w, self._q, nw)
            na = self._nonlinear(a)
            nb = self._nonlinear(torch.addcmul(e2w, self._q, na))
            c = (self._e2 * a).addcmul_(self._q, 2 * nb - nw)
            nc = self._nonlinear(c)
            w = (self._e * w).addcmul_(self._f1, nw)
            w.addcmul_(self._f2, 2 * (na + nb)).addcmul_(self._f3, nc)
        return w

    def _frame(self, w: torch.Tensor) -> torch.Tensor:
        return torch.fft.irfft2(w, s=(self.n, self.n))
