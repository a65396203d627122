"""Two-dimensional shallow-water equations: a radial dam break in a box with reflective walls."""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import ClassVar

import numpy as np
import torch

from pdeflow.tasks.fields import seeded_samples
from pdeflow.tasks.pdes.errors import (
    BlowUpError,
    CFLViolation,
    check_field_state,
    check_rollout_counts,
)
from pdeflow.tasks.pdes.immutable import Immutable
from pdeflow.tasks.pdes.spectral1d import Coefficient, per_sample, validate_positive

# Depths inside and outside the dam at t = 0 (PDEBench's radial dam break), length units.
DEPTH_INSIDE = 2.0
DEPTH_OUTSIDE = 1.0

# Largest Courant number C (class docstring) a rollout accepts: the bound of the first-order
# positivity argument; see the class docstring.
CFL_MAX = 0.5

# Speed bound of the dam break as a multiple of sqrt(g h_max) of the initial state. 1D Riemann
# theory gives max(|u| + c) < 2 sqrt(g h_in) - sqrt(g h_out), 1.29 sqrt(g h_in) for depths 2 and
# 1 (max_stable_dt); measured (n = 128, t <= 1): 1.16 for the planar dam break, 1.12 and 1.15
# for radial ones of radius 0.3 and 0.7, 1.22 for radius 2 after reflection off the walls.
# 1.5 leaves 23% over the largest.
SPEED_FACTOR = 1.5

# Cells per dam radius that resolution_warning asks for.
CELLS_PER_RADIUS = 5.0


def _validate_n(n: int) -> None:
    """Raise ValueError unless ``n`` is an integer >= 4 (two cells for each limited slope)."""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 4:
        raise ValueError(f"n must be an integer >= 4, got {n!r}")


def _radius(value: Coefficient, bounds: tuple[float, float]) -> torch.Tensor:
    """Validate dam radii given once or per sample; float64 CPU tensor of shape (m,)."""
    values = per_sample("radius", value, positive=True)
    low, high = bounds
    if not bool(((values >= low) & (values <= high)).all()):
        raise ValueError(f"radius must lie in [{low:g}, {high:g}], got {value!r}")
    return values


def _minmod(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The smaller of ``a`` and ``b`` in magnitude where they share a sign, else 0."""
    return (torch.sign(a) + torch.sign(b)).mul_(torch.minimum(a.abs(), b.abs())).div_(2)


class ShallowWater2D(Immutable):
    r"""Shallow-water equations on a square with reflective walls, batched over samples.

    .. math::

        \partial_t h + \partial_x (h u) + \partial_y (h v) &= 0, \\
        \partial_t (h u) + \partial_x (h u^2 + \tfrac12 g h^2) + \partial_y (h u v) &= 0, \\
        \partial_t (h v) + \partial_x (h u v) + \partial_y (h v^2 + \tfrac12 g h^2) &= 0,

    on :math:`(x, y) \in [-\ell/2, \ell/2]^2` with a flat bottom and slip walls (zero normal
    velocity). Symbols: the channels of the state, shape (batch, 3, n, n), are the conserved
    variables ``h`` (depth, length), ``hu`` and ``hv`` (discharges along ``x`` and ``y``,
    length^2/time); ``g`` is gravity (length/time^2, one value, default 1); :math:`\ell` is
    ``length`` (default 5, the square :math:`[-2.5, 2.5]^2` centred on the origin). The default
    setting is PDEBench's radial dam break (Takamoto et al. 2022, NeurIPS Datasets and
    Benchmarks): ``h = 2`` inside a circle of radius ``r`` about the origin, 1 outside, at rest,
    ``t`` in [0, 1], 128^2 cells. The per-sample coefficient is ``radius``: the equations do not
    contain it, so the solver only validates and records it, and ``initial_condition`` builds the
    dam from it (or, given none, draws it from each sample's seed).

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
    2001, SIAM Rev. 43, 89-112): hence ``cfl_max = 0.5``. With the limited reconstruction the
    provable positivity bound halves (Perthame & Shu 1996, Numer. Math. 73, 119-130); it matters
    near dry states, which the dam break (depths in [1, 2]) never approaches, and a negative or
    zero depth raises ``BlowUpError``. A rollout checks ``C`` on every frame and raises
    ``CFLViolation`` above ``cfl_max``.

    Args:
        n: Cells per side, >= 4.
        dt: Time step > 0, in time units.
        length: Side :math:`\ell > 0` of the square. Defaults to 5.0.
        device: Torch device of all tensors. Defaults to ``"cpu"``.
        dtype: ``torch.float32`` or ``torch.float64`` (default) for the state.
        radius: Dam radius in ``parameter_ranges["radius"]``, a scalar or a sequence/tensor of
            shape (batch,), recorded only; ``None`` (default) when the radius comes from the
            seeds.
        g: Gravity > 0. Defaults to 1.0.
        cfl_max: Largest Courant number ``C`` a rollout accepts; ``math.inf`` disables the
            check. Defaults to ``CFL_MAX`` = 0.5.

    Attributes:
        n, dt, length, device, dtype, g, cfl_max: The constructor arguments.
        radius: The radii, shape (1,) or (batch,), solver dtype, or ``None``.
        dx: Cell size ``length / n``.
        x, y: Cell-centre coordinates, shape (n,), solver dtype.

    Raises:
        ValueError: If an argument is outside its valid range; the message names it.
    """

    name: ClassVar[str] = "shallow_water_2d"
    dim: ClassVar[int] = 2
    fields: ClassVar[tuple[str, ...]] = ("h", "hu", "hv")
    field_units: ClassVar[dict[str, str]] = {
        "h": "length (water depth)",
        "hu": "length^2/time (x discharge, depth times x velocity)",
        "hv": "length^2/time (y discharge, depth times y velocity)",
    }
    boundary: ClassVar[str] = "reflective walls"
    description: ClassVar[str] = (
        "Shallow-water radial dam break (PDEBench 2D SWE), HLL finite volumes + SSP-RK2"
    )
    parameter_names: ClassVar[tuple[str, ...]] = ("radius",)
    parameter_ranges: ClassVar[dict[str, tuple[float, float]]] = {"radius": (0.05, 2.0)}
    default_parameters: ClassVar[dict[str, tuple[str, float, float]]] = {
        "radius": ("uniform", 0.3, 0.7),
    }
    default_length: ClassVar[float] = 5.0
    default_n: ClassVar[int] = 128
    default_t_end: ClassVar[float] = 1.0
    # max_stable_dt(128, 5.0) = 0.0092; 0.005 gives 2 steps per PDEBench frame (101 over [0, 1]).
    default_dt: ClassVar[float] = 0.005
    stationary: ClassVar[bool] = False

    def __init__(
        self,
        n: int,
        *,
        dt: float,
        length: float = 5.0,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float64,
        radius: Coefficient | None = None,
        g: float = 1.0,
        cfl_max: float = CFL_MAX,
    ) -> None:
        _validate_n(n)
        validate_positive("length", length)
        validate_positive("dt", dt)
        validate_positive("g", g)
        validate_positive("cfl_max", cfl_max, allow_inf=True)
        radii = None if radius is None else _radius(radius, self.parameter_ranges["radius"])
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
        device = torch.device(device)
        dx = float(length) / n
        centres = ((torch.arange(n, dtype=torch.float64) + 0.5 - n / 2) * dx).to(device, dtype)
        # Ghost cells mirror the cells inside with the normal discharge negated: x walls, y walls.
        signs = [[1.0, -1.0, 1.0], [1.0, 1.0, -1.0]]
        mirror = torch.tensor(signs, dtype=dtype, device=device)[:, None, :, None, None]
        state: dict[str, object] = {
            "radius": None if radii is None else radii.to(device=device, dtype=dtype),
            "x": centres,
            "y": centres,
            "_mirror": mirror,
            "_n_batch": 1 if radii is None else radii.numel(),
        }
        state.update(n=int(n), dt=float(dt), length=float(length), dx=dx, g=float(g))
        state.update(cfl_max=float(cfl_max), device=device, dtype=dtype)
        for name, value in state.items():
            object.__setattr__(self, name, value)

    def __repr__(self) -> str:
        radius = None if self.radius is None else self.radius.tolist()
        if radius is not None:
            radius = radius[0] if len(radius) == 1 else f"<{len(radius)} values>"
        return (
            f"{type(self).__name__}(n={self.n}, radius={radius}, dt={self.dt}, "
            f"length={self.length}, g={self.g}, device='{self.device}', dtype={self.dtype}, "
            f"cfl_max={self.cfl_max})"
        )

    @classmethod
    def max_stable_dt(
        cls,
        n: int,
        length: float,
        u_max: float | None = None,
        *,
        g: float = 1.0,
        cfl_max: float = CFL_MAX,
        **coefficient_maxima: float,
    ) -> float:
        """Largest ``dt`` with Courant number ``C <= cfl_max``: ``cfl_max * dx / a_max``.

        ``a_max`` bounds ``max(|u|, |v|) + sqrt(g h)`` over the rollout. For the dam break,
        which starts at rest with depths 1 and 2, it is ``SPEED_FACTOR * sqrt(g h_max)``: in
        the 1D Riemann problem the fastest state is the one behind the shock, with
        :math:`u_* + c_* = 2 c_{in} - c_* \\le 2 c_{in} - c_{out}` (the rarefaction's Riemann
        invariant :math:`u + 2c = 2 c_{in}`, and :math:`c_* \\ge c_{out}`), 1.83 for depths 2
        and 1 with ``g = 1``, i.e. 1.29 ``sqrt(g h_max)``; the radial dam breaks measured at
        most 1.22 (``SPEED_FACTOR`` = 1.5 leaves a margin over both).

        Args:
            n: Cells per side, >= 4.
            length: Side of the square > 0.
            u_max: Bound on ``max(|u|, |v|) + sqrt(g h)`` over the rollout (> 0). Defaults to
                ``SPEED_FACTOR * sqrt(g * DEPTH_INSIDE)``, the dam-break bound above.
            g: Gravity > 0. Defaults to 1.0.
            cfl_max: Courant limit (> 0). Defaults to ``CFL_MAX`` = 0.5.
            coefficient_maxima: Accepted for the common signature; ``radius`` does not enter.

        Returns:
            The step size bound, in time units.
        """
        _validate_n(n)
        validate_positive("length", length)
        validate_positive("g", g)
        validate_positive("cfl_max", cfl_max)
        unknown = set(coefficient_maxima) - set(cls.parameter_names)
        if unknown:
            raise ValueError(
                f"unknown coefficients {sorted(unknown)}; valid: {cls.parameter_names}"
            )
        speed = SPEED_FACTOR * math.sqrt(g * DEPTH_INSIDE) if u_max is None else u_max
        validate_positive("u_max", speed)
        return cfl_max * (length / n) / speed

    @classmethod
    def resolution_warning(
        cls, n: int, length: float, **coefficient_ranges: float | tuple[float, float]
    ) -> str | None:
        """A message if the smallest dam spans fewer than ``CELLS_PER_RADIUS`` cells, else None.

        The equations have no smallest physical scale (shocks stay sharp, spread over a few
        cells whatever the grid), so the initial dam is what must be resolved.

        Args:
            n: Cells per side, >= 4.
            length: Side of the square > 0.
            coefficient_ranges: ``radius`` as a number or a (low, high) pair; defaults to
                ``default_parameters``.

        Returns:
            The warning, with the estimated ``n`` needed, or ``None``.
        """
        _validate_n(n)
        validate_positive("length", length)
        radius = coefficient_ranges.get("radius", cls.default_parameters["radius"][1])
        r_min = float(per_sample("radius", radius, positive=True).min())
        n_needed = math.ceil(CELLS_PER_RADIUS * length / r_min)
        if n >= n_needed:
            return None
        return (
            f"{cls.name}: n={n} gives {n * r_min / length:.2g} cells per dam radius "
            f"{r_min:g}; use n >= {n_needed}"
        )

    @classmethod
    def initial_condition(
        cls,
        n: int,
        length: float,
        seeds: Iterable[int],
        *,
        dtype: torch.dtype = torch.float64,
        device: str | torch.device = "cpu",
        radius: Coefficient | None = None,
    ) -> torch.Tensor:
        """Radial dam break at rest: depth 2 inside a centred circle of radius ``r``, 1 outside.

        A cell is inside when its centre is (``x^2 + y^2 < r^2``), as in PDEBench. Each
        sample's radius is drawn from its own seed and its state built by itself, so it is
        bitwise the same alone as at any position of any batch: batch-invariant by construction.

        Args:
            n: Cells per side, >= 4.
            length: Side of the square > 0.
            seeds: One integer per sample. Without ``radius``, sample ``i`` draws
                ``r ~ U(0.3, 0.7)`` (``default_parameters``) from
                ``numpy.random.default_rng(int(seeds[i]))``; with it, the seeds only set the
                batch size (the state has no other randomness).
            dtype: Torch dtype of the result.
            device: Torch device of the result.
            radius: Dam radii in ``parameter_ranges["radius"]``, one value or one per seed, or
                ``None`` to draw them from the seeds.

        Returns:
            The state ``(h, hu, hv)``, shape (batch, 3, n, n).
        """
        _validate_n(n)
        validate_positive("length", length)
        seeds = [int(seed) for seed in seeds]
        if not seeds:
            raise ValueError("seeds must hold at least one seed")
        if radius is None:
            _, low, high = cls.default_parameters["radius"]
            radii = seeded_samples(seeds, (), lambda rng: rng.uniform(low, high))
        else:
            radii = _radius(radius, cls.parameter_ranges["radius"]).numpy()
            if radii.size not in (1, len(seeds)):
                raise ValueError(f"radius has {radii.size} values for {len(seeds)} seeds")
            radii = np.broadcast_to(radii, (len(seeds),))
        dx = length / n
        centres = (np.arange(n) + 0.5 - n / 2) * dx
        r2 = centres[:, None] ** 2 + centres[None, :] ** 2
        state = np.zeros((len(seeds), 3, n, n))
        for sample, r in zip(state, radii, strict=True):
            sample[0] = np.where(r2 < r**2, DEPTH_INSIDE, DEPTH_OUTSIDE)
        return torch.as_tensor(state, dtype=dtype, device=device)

    def _hll(self, a: torch.Tensor, b: torch.Tensor, normal: int) -> torch.Tensor:
        """HLL flux between left states ``a`` and right states ``b``, each (B, 3, ...).

        ``normal`` is the channel of the discharge normal to the faces (1 for ``x``, 2 for
        ``y``). The speeds are clipped at zero, so one formula covers the supersonic cases
        too: ``s_L >= 0`` gives the left flux and ``s_R <= 0`` the right one.
        """
        tangent = 3 - normal
        ua, ub = a[:, normal] / a[:, 0], b[:, normal] / b[:, 0]
        ca, cb = torch.sqrt(self.g * a[:, 0]), torch.sqrt(self.g * b[:, 0])
        sl = torch.minimum(ua - ca, ub - cb).clamp_(max=0).unsqueeze(1)
        sr = torch.maximum(ua + ca, ub + cb).clamp_(min=0).unsqueeze(1)

        def flux(w: torch.Tensor, un: torch.Tensor) -> torch.Tensor:
            parts = [w[:, normal], None, None]
            parts[normal] = w[:, normal] * un + (self.g / 2) * w[:, 0].square()
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

    def courant(self, s: torch.Tensor) -> torch.Tensor:
        """Courant number ``C`` of each sample of a (batch, 3, n, n) state, shape (batch,)."""
        h = s[:, 0]
        speed = torch.maximum(s[:, 1].abs(), s[:, 2].abs()) / h + torch.sqrt(self.g * h)
        return speed.flatten(1).amax(dim=1) * (self.dt / self.dx)

    def _check_frame(self, s: torch.Tensor, time: float) -> None:
        """Raise if a sample of a (batch, 3, n, n) frame is non-finite, dry or above cfl_max."""
        finite = torch.isfinite(s.flatten(1)).all(dim=1)
        if not bool(finite.all()):
            raise BlowUpError(torch.nonzero(~finite).flatten().tolist(), time)
        wet = (s[:, 0].flatten(1) > 0).all(dim=1)
        if not bool(wet.all()):
            raise BlowUpError(torch.nonzero(~wet).flatten().tolist(), time, "depth h <= 0")
        cfl = self.courant(s)
        over = cfl > self.cfl_max
        if bool(over.any()):
            raise CFLViolation(
                torch.nonzero(over).flatten().tolist(), time, cfl[over].tolist(), self.cfl_max
            )

    def _check_state(self, s: torch.Tensor, name: str) -> torch.Tensor:
        """Validate a (batch, 3, n, n) state and cast it to the solver's dtype and device."""
        return check_field_state(self, s, name, "radius")

    def step(self, u: torch.Tensor) -> torch.Tensor:
        """Advance the batch by one time step ``dt`` (no checks on the result).

        Args:
            u: State ``(h, hu, hv)`` of shape (batch, 3, n, n).

        Returns:
            The state at ``t + dt``, shape (batch, 3, n, n), solver dtype.
        """
        return self._step(self._check_state(u, "u"))

    def rollout(self, u0: torch.Tensor, n_frames: int, steps_per_frame: int) -> torch.Tensor:
        """Integrate a batch and record ``n_frames`` frames, ``steps_per_frame`` steps apart.

        Every frame, ``u0`` included, is checked: values finite, depth > 0, and each sample's
        Courant number at most ``cfl_max``.

        Args:
            u0: Initial state ``(h, hu, hv)`` of shape (batch, 3, n, n).
            n_frames: Number of frames to return (>= 1), frame 0 being ``u0``.
            steps_per_frame: Time steps between frames (>= 1); frame ``f`` is at time
                ``f * steps_per_frame * dt``.

        Returns:
            Trajectory of shape (batch, n_frames, 3, n, n), solver dtype and device.

        Raises:
            BlowUpError: If a frame has non-finite values or a depth <= 0; ``samples`` lists
                the batch indices.
            CFLViolation: If a frame exceeds ``cfl_max``; ``samples`` lists the batch indices.
        """
        s = self._check_state(u0, "u0")
        check_rollout_counts(n_frames, steps_per_frame)
        frames = torch.empty(
            (s.shape[0], n_frames, *s.shape[1:]), dtype=self.dtype, device=s.device
        )
        frames[:, 0] = s
        self._check_frame(s, 0.0)
        for frame in range(1, n_frames):
            for _ in range(steps_per_frame):
                s = self._step(s)
            frames[:, frame] = s
            self._check_frame(s, frame * steps_per_frame * self.dt)
        return frames
