"""Two-dimensional Gray-Scott reaction-diffusion, pseudo-spectral in space and ETDRK4 in time."""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping
from typing import ClassVar

import numpy as np
import torch

from pdeflow.tasks.fields import seeded_samples
from pdeflow.tasks.pdes.errors import check_field_state, check_rollout_counts, raise_if_not_finite
from pdeflow.tasks.pdes.etdrk4 import etdrk4_coefficients
from pdeflow.tasks.pdes.immutable import Immutable
from pdeflow.tasks.pdes.spectral1d import RK4_REAL_LIMIT, Coefficient, per_sample, validate_positive

# Bound on v assumed by max_stable_dt when none is given. u stays in [0, 1] (see the class
# docstring); v, the autocatalyst, measured at most 0.52 for F in {0.02, 0.03, 0.04, 0.05} x
# kappa in {0.055, 0.06, 0.065} from initial_condition to t = 2000 (n = 128, length 1).
V_BOUND = 0.75

# Grid points per diffusion length sqrt(Dv / (F + kappa)) that resolution_warning asks for.
# Measured on those runs: with 1.2 points (n = 128, length 1) the spectrum of v falls to 1e-5 of
# its peak at the Nyquist band; with 0.6 (n = 128, length 2) only to 5e-3, and v differed from
# the n = 256 run by 10-70% (relative L2) at t = 200.
POINTS_PER_LENGTH = 1.0


def _validate_n(n: int) -> None:
    """Raise ValueError unless ``n`` is an even integer >= 8 (a real FFT grid)."""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 8 or n % 2:
        raise ValueError(f"n must be an even integer >= 8, got {n!r}")


def _coefficient_in_range(
    name: str, value: Coefficient, bounds: tuple[float, float]
) -> torch.Tensor:
    """Validate a scalar or per-sample coefficient against closed ``bounds``; float64 (m,)."""
    values = per_sample(name, value, positive=False)
    low, high = bounds
    if not bool(((values >= low) & (values <= high)).all()):
        raise ValueError(f"{name} must lie in [{low:g}, {high:g}], got {value!r}")
    return values


def _batch_size(params: Mapping[str, torch.Tensor]) -> int:
    """Common number of per-sample values (1 if every coefficient is a scalar)."""
    sizes = {name: p.numel() for name, p in params.items() if p.numel() > 1}
    if len(set(sizes.values())) > 1:
        raise ValueError(f"per-sample coefficients differ in length: {sizes}")
    return next(iter(sizes.values()), 1)


def _largest(name: str, value: float | tuple[float, float]) -> float:
    """Largest value of a coefficient given as a number or a (low, high) pair."""
    return float(per_sample(name, value, positive=False).max())


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


class GrayScott2D(Immutable):
    r"""Gray-Scott reaction-diffusion system on a periodic square, batched over samples.

    .. math::

        \partial_t u &= D_u \Delta u - u v^2 + F (1 - u), \\
        \partial_t v &= D_v \Delta v + u v^2 - (F + \kappa) v,
        \qquad (x, y) \in [0, \ell)^2, \; t > 0,

    periodic in ``x`` and ``y``. Symbols: ``u`` (substrate) and ``v`` (autocatalyst) are the
    channels of the state, shape (batch, 2, n, n), dimensionless concentrations; :math:`F` is
    ``F`` (feed rate) and :math:`\kappa` is ``kappa`` (kill rate), both 1/time, one value for
    the batch or one per sample; :math:`D_u, D_v` are the constructor constants ``Du``, ``Dv``
    (length^2/time); :math:`\ell` is ``length``. The defaults ``Du = 2e-5``, ``Dv = 1e-5`` are
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

    using :math:`u \le 1`. With :math:`v_{max} = 0.75` (``V_BOUND``) and the default parameter
    box this is 1.28; the default ``dt = 1`` is Pearson's. Past the limit the feed and kill
    terms overshoot and the rollout raises ``BlowUpError`` once values overflow.

    Args:
        n: Grid points per side, even and >= 8.
        dt: Time step > 0, in time units.
        length: Side :math:`\ell > 0` of the square. Defaults to 1.0.
        device: Torch device of all tensors. Defaults to ``"cpu"``.
        dtype: ``torch.float32`` or ``torch.float64`` (default) for the state.
        F: Feed rate in ``parameter_ranges["F"]``: a scalar, or a sequence/tensor of shape
            (batch,). Defaults to 0.04.
        kappa: Kill rate in ``parameter_ranges["kappa"]``, likewise. Defaults to 0.06.
        Du: Diffusivity of ``u`` (>= 0, one value). Defaults to 2e-5.
        Dv: Diffusivity of ``v`` (>= 0, one value). Defaults to 1e-5.

    Attributes:
        n, dt, length, device, dtype, Du, Dv: The constructor arguments.
        F, kappa: The coefficients, each of shape (1,) or (batch,), solver dtype.
        dx: Grid spacing ``length / n``.
        x, y: Grid coordinates ``i * dx``, shape (n,), solver dtype.

    Raises:
        ValueError: If an argument is outside its valid range; the message names it.
    """

    name: ClassVar[str] = "gray_scott_2d"
    dim: ClassVar[int] = 2
    fields: ClassVar[tuple[str, ...]] = ("u", "v")
    field_units: ClassVar[dict[str, str]] = {
        "u": "dimensionless (substrate concentration)",
        "v": "dimensionless (autocatalyst concentration)",
    }
    boundary: ClassVar[str] = "periodic"
    description: ClassVar[str] = "Gray-Scott reaction-diffusion (Pearson 1993), spectral + ETDRK4"
    parameter_names: ClassVar[tuple[str, ...]] = ("F", "kappa")
    parameter_ranges: ClassVar[dict[str, tuple[float, float]]] = {
        "F": (0.0, 0.1),
        "kappa": (0.0, 0.1),
    }
    # Where patterns persisted in the V_BOUND runs (F = 0.04, 0.05 at kappa = 0.06, 0.065, and
    # F = 0.03 at 0.06); a few samples near (0.035, 0.065) may still decay to u = 1, v = 0.
    default_parameters: ClassVar[dict[str, tuple[str, float, float]]] = {
        "F": ("uniform", 0.035, 0.05),
        "kappa": ("uniform", 0.06, 0.065),
    }
    default_length: ClassVar[float] = 1.0
    default_n: ClassVar[int] = 128
    default_t_end: ClassVar[float] = 2000.0
    default_dt: ClassVar[float] = 1.0
    stationary: ClassVar[bool] = False

    def __init__(
        self,
        n: int,
        *,
        dt: float,
        length: float = 1.0,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float64,
        F: Coefficient = 0.04,
        kappa: Coefficient = 0.06,
        Du: float = 2e-5,
        Dv: float = 1e-5,
    ) -> None:
        _validate_n(n)
        validate_positive("length", length)
        validate_positive("dt", dt)
        for name, value in (("Du", Du), ("Dv", Dv)):
            if (
                isinstance(value, bool)
                or not isinstance(value, numbers.Real)
                or not (math.isfinite(value) and value >= 0)
            ):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        params = {
            "F": _coefficient_in_range("F", F, self.parameter_ranges["F"]),
            "kappa": _coefficient_in_range("kappa", kappa, self.parameter_ranges["kappa"]),
        }
        n_batch = _batch_size(params)
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
        device = torch.device(device)
        complex_dtype = torch.complex64 if dtype == torch.float32 else torch.complex128

        kx = torch.fft.fftfreq(n, d=length / n, dtype=torch.float64) * (2 * math.pi)
        ky = torch.fft.rfftfreq(n, d=length / n, dtype=torch.float64) * (2 * math.pi)
        k2 = kx[:, None] ** 2 + ky[None, :] ** 2
        linear = -torch.tensor([float(Du), float(Dv)], dtype=torch.float64)[:, None, None] * k2
        coef = etdrk4_coefficients(linear, float(dt), dtype=torch.float64)
        state: dict[str, object] = {
            f"_{name}": getattr(coef, name).to(device=device, dtype=complex_dtype)
            for name in coef._fields
        }
        for name, p in params.items():
            state[name] = p.to(device=device, dtype=dtype)
            state[f"_{name}"] = p[:, None, None].to(device=device, dtype=dtype)
        grid = torch.arange(n, dtype=torch.float64) * (length / n)
        state.update(x=grid.to(device, dtype), y=grid.to(device, dtype))
        state.update(n=int(n), dt=float(dt), length=float(length), dx=float(length) / n)
        state.update(Du=float(Du), Dv=float(Dv), device=device, dtype=dtype, _n_batch=n_batch)
        for name, value in state.items():
            object.__setattr__(self, name, value)

    def __repr__(self) -> str:
        parts = [f"n={self.n}"]
        for name in self.parameter_names:
            values = getattr(self, name).tolist()
            parts.append(f"{name}={values[0] if len(values) == 1 else f'<{len(values)} values>'}")
        parts += [f"Du={self.Du}", f"Dv={self.Dv}", f"dt={self.dt}", f"length={self.length}"]
        parts += [f"device='{self.device}'", f"dtype={self.dtype}"]
        return f"{type(self).__name__}({', '.join(parts)})"

    @classmethod
    def max_stable_dt(
        cls,
        n: int,
        length: float,
        u_max: float | None = None,
        **coefficient_maxima: float,
    ) -> float:
        """Largest stable step ``2.785 / (v_max (v_max + 2) + F_max + kappa_max)``.

        See the class docstring for the derivation. The grid does not enter: diffusion is
        integrated exactly.

        Args:
            n: Grid points per side, even and >= 8.
            length: Side of the square > 0.
            u_max: Bound on ``v`` over the rollout (> 0; ``u`` <= 1 always). Defaults to
                ``V_BOUND`` = 0.75.
            coefficient_maxima: Largest ``F`` and ``kappa`` of the batch; each defaults to the
                upper end of ``default_parameters``.

        Returns:
            The step size bound, in time units.
        """
        _validate_n(n)
        validate_positive("length", length)
        v_max = V_BOUND if u_max is None else u_max
        validate_positive("u_max", v_max)
        unknown = set(coefficient_maxima) - set(cls.parameter_names)
        if unknown:
            raise ValueError(
                f"unknown coefficients {sorted(unknown)}; valid: {cls.parameter_names}"
            )
        rates = sum(
            _largest(name, coefficient_maxima.get(name, cls.default_parameters[name][2]))
            for name in cls.parameter_names
        )
        return RK4_REAL_LIMIT / (v_max * (v_max + 2) + rates)

    @classmethod
    def resolution_warning(
        cls, n: int, length: float, **coefficient_ranges: float | tuple[float, float]
    ) -> str | None:
        """A message if the grid cannot resolve the edge of a ``v`` spot, else ``None``.

        Away from a spot ``v`` decays over the diffusion length
        :math:`\\ell_v = \\sqrt{D_v / (F + \\kappa)}`, the thinnest scale of the patterns; at
        least ``POINTS_PER_LENGTH`` = 1 grid point per :math:`\\ell_v` is asked for at the
        largest ``F + kappa``.

        Args:
            n: Grid points per side, even and >= 8.
            length: Side of the square > 0.
            coefficient_ranges: ``F`` and ``kappa`` as numbers or (low, high) pairs, each
                defaulting to ``default_parameters``; ``Dv`` (default 1e-5) likewise.

        Returns:
            The warning, with the estimated ``n`` needed, or ``None``.
        """
        _validate_n(n)
        validate_positive("length", length)
        rates = sum(
            _largest(name, coefficient_ranges.get(name, cls.default_parameters[name][2]))
            for name in cls.parameter_names
        )
        dv = float(per_sample("Dv", coefficient_ranges.get("Dv", 1e-5), positive=True).min())
        if rates <= 0:
            return None
        scale = math.sqrt(dv / rates)
        n_needed = 2 * math.ceil(POINTS_PER_LENGTH * length / scale / 2)
        if n >= n_needed:
            return None
        return (
            f"{cls.name}: n={n} gives {n * scale / length:.2g} points per diffusion length "
            f"sqrt(Dv / (F + kappa)) = {scale:.3g}; use n >= {n_needed}"
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
    ) -> torch.Tensor:
        """Pearson's initial state: ``u = 1``, ``v = 0`` with 1 to 4 random square patches.

        Inside a patch ``u = 0.5``, ``v = 0.25``, each with U(-0.01, 0.01) noise; sides are
        U(0.1, 0.2) of ``length`` and centres uniform over the periodic square, so the
        layout in domain units does not depend on ``n``. Each sample is drawn by itself
        (``pdeflow.tasks.fields.seeded_samples``), so it is bitwise the same alone as at any
        position of any batch: batch-invariant by construction.

        Args:
            n: Grid points per side, even and >= 8.
            length: Side of the square > 0 (the layout scales with it).
            seeds: One integer per sample; sample ``i`` uses
                ``numpy.random.default_rng(int(seeds[i]))`` alone.
            dtype: Torch dtype of the result.
            device: Torch device of the result.

        Returns:
            The state, shape (batch, 2, n, n).
        """
        _validate_n(n)
        validate_positive("length", length)
        seeds = [int(seed) for seed in seeds]
        if not seeds:
            raise ValueError("seeds must hold at least one seed")
        states = seeded_samples(seeds, (2, n, n), lambda rng: _patches(rng, n))
        return torch.as_tensor(states, dtype=dtype, device=device)

    def _nonlinear(self, w: torch.Tensor) -> torch.Tensor:
        """Spectrum of the reaction terms of a spectral state, (batch, 2, n, n // 2 + 1)."""
        s = torch.fft.irfft2(w, s=(self.n, self.n))
        u, v = s[:, 0], s[:, 1]
        uvv = u * v * v
        feed = self._F * (1 - u)
        out = torch.stack([feed - uvv, uvv - (self._F + self._kappa) * v], dim=1)
        return torch.fft.rfft2(out)

    def _step_hat(self, w: torch.Tensor) -> torch.Tensor:
        """One ETDRK4 step in Fourier space (Cox & Matthews 2002, eqs. 26-29)."""
        nw = self._nonlinear(w)
        e2w = self._e2 * w
        a = torch.addcmul(e2w, self._q, nw)
        na = self._nonlinear(a)
        nb = self._nonlinear(torch.addcmul(e2w, self._q, na))
        c = (self._e2 * a).addcmul_(self._q, 2 * nb - nw)
        nc = self._nonlinear(c)
        out = self._e * w
        out.addcmul_(self._f1, nw).addcmul_(self._f2, 2 * (na + nb)).addcmul_(self._f3, nc)
        return out

    def _check_state(self, s: torch.Tensor, name: str) -> torch.Tensor:
        """Validate a (batch, 2, n, n) state and cast it to the solver's dtype and device."""
        return check_field_state(self, s, name)

    def step(self, u: torch.Tensor) -> torch.Tensor:
        """Advance the batch by one time step ``dt``.

        Args:
            u: State of shape (batch, 2, n, n), channels ``fields``.

        Returns:
            The state at ``t + dt``, shape (batch, 2, n, n), solver dtype.
        """
        w = torch.fft.rfft2(self._check_state(u, "u"))
        return torch.fft.irfft2(self._step_hat(w), s=(self.n, self.n))

    def rollout(self, u0: torch.Tensor, n_frames: int, steps_per_frame: int) -> torch.Tensor:
        """Integrate a batch and record ``n_frames`` frames, ``steps_per_frame`` steps apart.

        Args:
            u0: Initial state of shape (batch, 2, n, n).
            n_frames: Number of frames to return (>= 1), frame 0 being ``u0``.
            steps_per_frame: Time steps between frames (>= 1); frame ``f`` is at time
                ``f * steps_per_frame * dt``.

        Returns:
            Trajectory of shape (batch, n_frames, 2, n, n), solver dtype and device.

        Raises:
            BlowUpError: If a frame has non-finite values; ``samples`` lists the batch indices.
        """
        s = self._check_state(u0, "u0")
        check_rollout_counts(n_frames, steps_per_frame)
        frames = torch.empty(
            (s.shape[0], n_frames, *s.shape[1:]), dtype=self.dtype, device=s.device
        )
        frames[:, 0] = s
        raise_if_not_finite(s, 0.0)
        w = torch.fft.rfft2(s)
        for frame in range(1, n_frames):
            for _ in range(steps_per_frame):
                w = self._step_hat(w)
            frames[:, frame] = torch.fft.irfft2(w, s=(self.n, self.n))
            raise_if_not_finite(frames[:, frame], frame * steps_per_frame * self.dt)
        return frames
