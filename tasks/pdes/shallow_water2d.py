"""Two-dimensional shallow-water equations: a radial dam break in a box with reflective walls."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

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
    as_grid,
    coefficient_tensor,
    largest,
    smallest,
)

# Depths inside and outside the dam at t = 0 (PDEBench's radial dam break), length units.
DEPTH_INSIDE = 2.0
DEPTH_OUTSIDE = 1.0

# Speed bound of the dam break as a multiple of sqrt(g h_max) of the initial state. 1D Riemann
# theory gives max(|u| + c) < 2 sqrt(g h_in) - sqrt(g h_out), 1.29 sqrt(g h_in) for depths 2 and
# 1 (max_stable_dt); measured (n = 128, t <= 1): 1.16 for the planar dam break, 1.12 and 1.15
# for radial ones of radius 0.3 and 0.7, 1.22 for radius 2 after reflection off the walls.
# 1.5 leaves 23% over the largest.
SPEED_FACTOR = 1.5

# Cells per dam radius that resolution_warning asks for.
CELLS_PER_RADIUS = 5.0


def _minmod(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The smaller of ``a`` and ``b`` in magnitude where they share a sign, else 0."""
    return (torch.sign(a) + torch.sign(b)).mul_(torch.minimum(a.abs(), b.abs())).div_(2)


class ShallowWater2D(PDE):
    r"""Shallow-water equations on a square with reflective walls, batched over samples.

    .. math::

        \partial_t h + \partial_x (h u) + \partial_y (h v) &= 0, \\
        \partial_t (h u) + \partial_x (h u^2 + \tfrac12 g h^2) + \partial_y (h u v) &= 0, \\
        \partial_t (h v) + \partial_x (h u v) + \partial_y (h v^2 + \tfrac12 g h^2) &= 0,

    on :math:`(x, y) \in [-\ell/2, \ell/2]^2` with a flat bottom and slip walls (zero normal
    velocity). Symbols: the channels of the state, shape (batch, 3, n, n), are the conserved
    variables ``h`` (depth, length), ``hu`` and ``hv`` (discharges along ``x`` and ``y``,
    length^2/time); ``g`` is gravity (length/time^2, one value per run, default 1); :math:`\ell` is
    ``length`` (default 5, the square :math:`[-2.5, 2.5]^2` centred on the origin). The default
    setting is PDEBench's radial dam break (Takamoto et al. 2022, NeurIPS Datasets and
    Benchmarks): ``h = 2`` inside a circle of radius ``r`` about the origin, 1 outside, at rest,
    ``t`` in [0, 1], 128^2 cells. The per-sample coefficient is ``radius``: the equations do not
    contain it, so the solver only validates and records it, and ``initial_condition`` builds the
    dam from it (or, given none, draws it from each sample's seed). ``coordinates`` are the cell
    centres, centred on the origin for any ``length``.

    Space: ``n`` x ``n`` cells of side :math:`\Delta x = \ell/n`, centres
    ``x_i = (i + 1/2 - n/2) dx`` (axis -2 of the state is ``x``, axis -1 is ``y``), finite volumes
    with the HLL flux (Harten, Lax & van Leer 1983, SIAM Rev. 25, 35-61) and the wave speeds of
    Davis (1988), :math:`s_L = \min(u_L - c_L, u_R - c_R)`, :math:`s_R = \max(u_L + c_L,
    u_R + c_R)`, :math:`c = \sqrt{g h}`, applied to face values reconstructed from the conserved
    variables with minmod-limited slopes (van Leer's MUSCL; the limited face values of ``h`` lie
    between neighbouring cell values, so they stay positive). The walls are two ghost cells per
    side mirroring the cells inside, normal discharge negated: the wall flux of ``h`` is exactly
    zero, so the total water volume is conserved to rounding. Time: SSP-RK2 (Heun's method;
    Shu & Osher 1988, J. Comput. Phys. 77, 439-471). A lake at rest stays exactly at rest (the
    bottom is flat, so no well-balancing is needed).

    Stability limit: with the Courant number

    .. math::

        C = \frac{\Delta t}{\Delta x} \max_{\text{cells}} \left(\max(|u|, |v|) + \sqrt{g h}\right),

    the forward-Euler step of the unsplit scheme is the average of an ``x``-only and a
    ``y``-only update, each with :math:`2\Delta t`. The first-order HLL update is
    positivity-preserving and stable for a 1D Courant number up to 1 (Einfeldt, Munz, Roe &
    Sjogreen 1991, J. Comput. Phys. 92, 273-295), which the average meets for :math:`C \le 1/2`,
    and SSP-RK2 inherits a forward-Euler bound with SSP coefficient 1 (Gottlieb, Shu & Tadmor
    2001, SIAM Rev. 43, 89-112): hence ``CFL_MAX = 0.5``. With the limited reconstruction the
    provable positivity bound halves (Perthame & Shu 1996, Numer. Math. 73, 119-130); it matters
    near dry states, which the dam break (depths in [1, 2]) never approaches, and a negative or
    zero depth raises ``BlowUpError``. A rollout checks ``C`` on every frame and raises
    ``CFLViolation`` above ``cfl_max``.

    Construction is ``PDE``'s: ``ShallowWater2D(n, dt=..., radius=...)`` with ``n >= 4`` cells
    per side (odd counts too), the side ``length`` (default 5) and ``g`` (default 1).

    Attributes (besides ``PDE``'s):
        x, y: Cell-centre coordinates, shape (n,), solver dtype.
    """

    # max_stable_dt = 0.0092 on the default grid; 0.005 gives 5 steps per frame, 41 frames
    # over PDEBench's t in [0, 1].
    # For the default length; coordinates() centres the square for any length.
    info = PDEInfo(
        name="shallow_water_2d",
        dim=2,
        description="Shallow-water radial dam break (PDEBench 2D SWE), HLL volumes + SSP-RK2",
        fields={
            "h": "length (water depth)",
            "hu": "length^2/time (x discharge, depth times x velocity)",
            "hv": "length^2/time (y discharge, depth times y velocity)",
        },
        coefficients={
            "radius": Coefficient((0.05, 2.0), "length", ("uniform", 0.3, 0.7)),
            "g": Coefficient((1e-3, 1e3), "length/time^2", value=1.0, per_run=True),
        },
        defaults=Defaults(n=128, length=5.0, t_end=1.0, dt=0.005, n_frames=41),
        boundary="reflective walls",
        coordinate_offset=0.5,
        origin=-2.5,
    )
    # The bound of the first-order positivity argument of the class docstring.
    CFL_MAX = 0.5
    # Two cells for each limited slope; finite volumes need no even count.
    even_grid = False
    min_points = 4

    @classmethod
    def coordinates(cls, grid: Grid) -> list[np.ndarray]:
        """Cell centres ``(i + 1/2 - n/2) dx`` per axis: exactly antisymmetric about 0."""
        return [
            (np.arange(n) + 0.5 - n / 2) * (length / n)
            for n, length in zip(grid.shape, grid.lengths, strict=True)
        ]

    def _setup(self, params: dict[str, torch.Tensor]) -> dict[str, Any]:
        x, y = (torch.from_numpy(c) for c in self.coordinates(self.grid))
        # Ghost cells mirror the cells inside with the normal discharge negated: x walls, y walls.
        mirror = torch.tensor([[1.0, -1.0, 1.0], [1.0, 1.0, -1.0]], dtype=torch.float64)
        # A Python float: multiplying by it is cheaper than by a one-element tensor.
        return {"x": x, "y": y, "_mirror": mirror[:, None, :, None, None], "_g": float(params["g"])}

    @classmethod
    def max_stable_dt(
        cls, grid: Grid, coefficients: Mapping[str, Bound], u_max: float | None = None
    ) -> float:
        """Largest ``dt`` with Courant number ``C <= CFL_MAX``: ``CFL_MAX * dx / a_max``.

        ``a_max`` bounds ``max(|u|, |v|) + sqrt(g h)`` over the rollout. For the dam break,
        which starts at rest with depths 1 and 2, it is ``SPEED_FACTOR * sqrt(g h_max)``: in
        the 1D Riemann problem the fastest state is the one behind the shock, with
        :math:`u_* + c_* = 2 c_{in} - c_* \\le 2 c_{in} - c_{out}` (the rarefaction's Riemann
        invariant :math:`u + 2c = 2 c_{in}`, and :math:`c_* \\ge c_{out}`), 1.83 for depths 2
        and 1 with ``g = 1``, i.e. 1.29 ``sqrt(g h_max)``; the radial dam breaks measured at
        most 1.22 (``SPEED_FACTOR`` = 1.5 leaves a margin over both).

        Args:
            grid: The square grid.
            coefficients: ``g`` (value or range; the largest counts) and ``radius`` (unused).
            u_max: Bound on the depth ``h_max`` of a dam break at rest; ``None``:
                ``DEPTH_INSIDE`` of ``initial_condition``.

        Returns:
            The step size bound, in time units.
        """
        depth = DEPTH_INSIDE if u_max is None else u_max
        speed = SPEED_FACTOR * math.sqrt(largest(coefficients["g"]) * depth)
        return cls.CFL_MAX * grid.spacing[0] / speed

    @classmethod
    def resolution_warning(
        cls, grid: Grid, coefficients: Mapping[str, Bound], u_max: float | None = None
    ) -> str | None:
        """A message if the smallest dam spans fewer than ``CELLS_PER_RADIUS`` cells, else None.

        The equations have no smallest physical scale (shocks stay sharp, spread over a few
        cells whatever the grid), so the initial dam is what must be resolved.

        Args:
            grid: The square grid.
            coefficients: ``radius`` as a value or (low, high) range; the smallest counts.
            u_max: Unused.

        Returns:
            The warning, with the estimated ``n`` needed, or ``None``.
        """
        r_min = smallest(coefficients["radius"])
        n, length = grid.n, grid.length
        n_needed = math.ceil(CELLS_PER_RADIUS * length / r_min)
        if n >= n_needed:
            return None
        return (
            f"{cls.info.name}: n={n} gives {n * r_min / length:.2g} cells per dam radius "
            f"{r_min:g}; use n >= {n_needed}"
        )

    @classmethod
    def initial_condition(
        cls,
        grid: Grid,
        seeds: Iterable[int],
        *,
        dtype: torch.dtype = torch.float64,
        device: str | torch.device = "cpu",
        radius: CoefficientValue | None = None,
    ) -> torch.Tensor:
        """Radial dam break at rest: depth 2 inside a centred circle of radius ``r``, 1 outside.

        A cell is inside when its centre is (``x^2 + y^2 < r^2``), as in PDEBench. Each
        sample's radius is drawn from its own seed and its state built by itself, so it is
        bitwise the same alone as at any position of any batch: batch-invariant by construction.

        Args:
            grid: The square grid (a ``Grid``; an integer means the default side).
            seeds: One integer per sample. Without ``radius``, sample ``i`` draws
                ``r ~ U(0.3, 0.7)`` (the default distribution of ``radius``) from
                ``numpy.random.default_rng(int(seeds[i]))``; with it, the seeds only set the
                batch size (the state has no other randomness).
            dtype: Torch dtype of the result.
            device: Torch device of the result.
            radius: Dam radii in the range of ``radius``, one value or one per seed, or
                ``None`` to draw them from the seeds.

        Returns:
            The state ``(h, hu, hv)``, shape (batch, 3, n, n).
        """
        grid = as_grid(grid, None, cls.info.dim, cls.info.defaults.length)
        seeds = [int(seed) for seed in seeds]
        if not seeds:
            raise ValueError("seeds must hold at least one seed")
        spec = cls.info.coefficients["radius"]
        if radius is None:
            _, low, high = spec.sample
            radii = seeded_samples(seeds, (), lambda rng: rng.uniform(low, high))
        else:
            radii = coefficient_tensor("radius", radius, spec).numpy()
            if radii.size not in (1, len(seeds)):
                raise ValueError(f"radius has {radii.size} values for {len(seeds)} seeds")
            radii = np.broadcast_to(radii, (len(seeds),))
        x, y = cls.coordinates(grid)
        r2 = x[:, None] ** 2 + y[None, :] ** 2
        state = np.zeros((len(seeds), 3, *grid.shape))
        for sample, r in zip(state, radii, strict=True):
            sample[0] = np.where(r2 < r**2, DEPTH_INSIDE, DEPTH_OUTSIDE)
        return torch.as_tensor(state, dtype=dtype, device=device)

    # --- time stepping ----------------------------------------------------------------------

    def _hll(self, a: torch.Tensor, b: torch.Tensor, normal: int) -> torch.Tensor:
        """HLL flux between left states ``a`` and right states ``b``, each (B, 3, ...).

        ``normal`` is the channel of the discharge normal to the faces (1 for ``x``, 2 for
        ``y``). The speeds are clipped at zero, so one formula covers the supersonic cases
        too: ``s_L >= 0`` gives the left flux and ``s_R <= 0`` the right one.
        """
        g, tangent = self._g, 3 - normal
        ua, ub = a[:, normal] / a[:, 0], b[:, normal] / b[:, 0]
        ca, cb = torch.sqrt(g * a[:, 0]), torch.sqrt(g * b[:, 0])
        sl = torch.minimum(ua - ca, ub - cb).clamp_(max=0).unsqueeze(1)
        sr = torch.maximum(ua + ca, ub + cb).clamp_(min=0).unsqueeze(1)

        def flux(w: torch.Tensor, un: torch.Tensor) -> torch.Tensor:
            parts = [w[:, normal], None, None]
            parts[normal] = w[:, normal] * un + (g / 2) * w[:, 0].square()
            parts[tangent] = w[:, tangent] * un
            return torch.stack(parts, dim=1)

        out = sr * flux(a, ua) - sl * flux(b, ub) + sl * sr * (b - a)
        return out.div_(sr - sl)

    def _flux_difference(self, s: torch.Tensor, dim: int) -> torch.Tensor:
        """Flux difference ``F_{i+1/2} - F_{i-1/2}`` along ``dim`` (2: ``x``, 3: ``y``).

        Args:
            s: State of shape (B, 3, n, n).
            dim: Axis of the state along which the faces lie.

        Returns:
            The difference, shape (B, 3, n, n).
        """
        normal = dim - 1
        mirror = self._mirror[normal - 1]
        lo = s.narrow(dim, 0, 2).flip(dim) * mirror
        hi = s.narrow(dim, self.n - 2, 2).flip(dim) * mirror
        padded = torch.cat([lo, s, hi], dim=dim)
        jumps = padded.diff(dim=dim)
        half_slope = _minmod(jumps.narrow(dim, 0, self.n + 2), jumps.narrow(dim, 1, self.n + 2))
        half_slope /= 2
        # Faces 0..n: the left state is the right edge of padded cell j + 1, the right state
        # the left edge of padded cell j + 2 (padded cells 2..n+1 are the real ones).
        left = padded.narrow(dim, 1, self.n + 1) + half_slope.narrow(dim, 0, self.n + 1)
        right = padded.narrow(dim, 2, self.n + 1) - half_slope.narrow(dim, 1, self.n + 1)
        flux = self._hll(left, right, normal)
        return flux.diff(dim=dim)

    def _rhs(self, s: torch.Tensor) -> torch.Tensor:
        """Semi-discrete right-hand side ``-(div F) / dx``, (B, 3, n, n)."""
        return (self._flux_difference(s, 2) + self._flux_difference(s, 3)).mul_(-1 / self.dx)

    def _step(self, s: torch.Tensor) -> torch.Tensor:
        """One SSP-RK2 step: the average of ``s`` and two forward-Euler steps from it."""
        first = s + self.dt * self._rhs(s)
        return (s + first + self.dt * self._rhs(first)) / 2

    def _start(self, u: torch.Tensor) -> torch.Tensor:
        return u

    def _advance(self, s: torch.Tensor, n_steps: int) -> torch.Tensor:
        for _ in range(n_steps):
            s = self._step(s)
        return s

    def _frame(self, s: torch.Tensor) -> torch.Tensor:
        return s

    def _courant(self, u: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """Courant number ``C`` of each sample of a (batch, 3, n, n) state, shape (batch,)."""
        h = u[:, 0]
        speed = torch.maximum(u[:, 1].abs(), u[:, 2].abs()) / h + torch.sqrt(self._g * h)
        return speed.flatten(1).amax(dim=1) * (self.dt / self.dx)

    def _invalid(self, u: torch.Tensor) -> tuple[torch.Tensor, str]:
        return ~(u[:, 0].flatten(1) > 0).all(dim=1), "depth h <= 0"
