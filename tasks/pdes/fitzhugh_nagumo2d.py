"""Two-dimensional FitzHugh-Nagumo diffusion-reaction system: cell-centred differences and RK4."""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping
from typing import ClassVar

import torch
import torch.nn.functional as F

from pdeflow.tasks.fields import seeded_samples
from pdeflow.tasks.pdes.errors import check_field_state, check_rollout_counts, raise_if_not_finite
from pdeflow.tasks.pdes.immutable import Immutable
from pdeflow.tasks.pdes.spectral1d import RK4_REAL_LIMIT, Coefficient, per_sample, validate_positive

# Bound on |u| assumed by max_stable_dt when none is given: the initial state is standard
# normal noise, and the largest |u| of 128^2 draws exceeds 5 with probability 0.9% per sample
# (P(|z| > 5) = 5.7e-7 per cell). The cubic term and diffusion pull max |u| below 1.3 by
# t = 0.1 (measured), so the bound only matters for the first steps, and a draw slightly above
# it still sits inside the margin that default_dt leaves (0.005 against 0.0069 at the largest
# default Dv).
NOISE_BOUND = 5.0

# Cells per interface width sqrt(2 Du) that resolution_warning asks for; PDEBench's 128^2 cells
# with Du = 1e-3 on [-1, 1]^2 have 2.9.
CELLS_PER_WIDTH = 2.0


def _validate_n(n: int, minimum: int) -> None:
    """Raise ValueError unless ``n`` is an integer >= ``minimum``."""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < minimum:
        raise ValueError(f"n must be an integer >= {minimum}, got {n!r}")


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


def _range_or_value(name: str, value) -> float:
    """Largest value of a coefficient given as a number or a (low, high) pair."""
    values = per_sample(name, value, positive=False)
    return float(values.abs().max())


class FitzHugh2D(Immutable):
    r"""FitzHugh-Nagumo diffusion-reaction system on a square with no-flux walls, batched.

    .. math::

        \partial_t u &= D_u \Delta u + u - u^3 - k - v, \\
        \partial_t v &= D_v \Delta v + u - v,
        \qquad (x, y) \in [-\ell/2, \ell/2]^2, \; t > 0,

    with homogeneous Neumann conditions :math:`\partial_n u = \partial_n v = 0` on the walls.
    Symbols: ``u`` (activator) and ``v`` (inhibitor) are the channels of the state, shape
    (batch, 2, n, n), dimensionless; :math:`D_u, D_v` are ``Du``, ``Dv`` (diffusivities, units
    length^2/time) and ``k`` the threshold (dimensionless), each one value for the batch or one
    per sample; :math:`\ell` is ``length`` (default 2, the square :math:`[-1, 1]^2` centred on
    the origin). Default setting: PDEBench's 2D diffusion-reaction data (Takamoto et al. 2022,
    NeurIPS Datasets and Benchmarks): ``Du = 1e-3``, ``Dv = 5e-3``, ``k = 5e-3``, standard
    normal noise in every cell at ``t = 0``, ``t`` in [0, 5], 128^2 cells.

    Space: ``n`` x ``n`` cells of side :math:`h = \ell/n`, values at the cell centres
    ``x_i = (i + 1/2 - n/2) h`` (axis -2 of the state is ``x``, axis -1 is ``y``), five-point
    Laplacian with one ghost cell per side that copies its neighbour inside, which makes the face
    flux zero: the finite-volume form of the Neumann condition, conserving :math:`\int u` to
    rounding when reactions are off. Its eigenvectors are
    :math:`\cos(\pi m (i + 1/2)/n) \cos(\pi l (j + 1/2)/n)` with eigenvalues
    :math:`-\tfrac{4}{h^2}[\sin^2\tfrac{\pi m}{2n} + \sin^2\tfrac{\pi l}{2n}]`, all in
    :math:`(-8/h^2, 0]`. Time: the classical fourth-order Runge-Kutta method.

    Stability limit: linearised about a state with :math:`|u| \le u_{max}`, the right-hand side
    is :math:`A = D \otimes \Delta_h + J` with the reaction Jacobian
    :math:`J = \begin{pmatrix} 1 - 3u^2 & -1 \\ 1 & -1 \end{pmatrix}` in each cell. The
    diffusion part has a real spectrum in :math:`[-8 D_{max}/h^2, 0]` (row sum 8/h^2 at most),
    and :math:`\|J\|_\infty = \max(2, |1 - 3u^2| + 1) \le \max(2, 3 u_{max}^2) = \rho_r`, so
    :math:`\|A\|_\infty \le 8 D_{max}/h^2 + \rho_r` bounds every eigenvalue. RK4 is stable on
    the negative real axis down to :math:`-2.785` (``RK4_REAL_LIMIT``), hence

    .. math::

        \Delta t \le \frac{2.785}{8 D_{max}/h^2 + \max(2, 3 u_{max}^2)},

    exact for the dominant (real) diffusion eigenvalues; the reaction budget is a frozen-
    coefficient bound placed on the real axis, where the region is narrowest. Past the limit
    the checkerboard mode grows by :math:`|R(-\Delta t\,8D/h^2)| > 1` per step and the rollout
    raises ``BlowUpError`` once it overflows.

    Args:
        n: Cells per side, >= 4.
        dt: Time step > 0, in time units.
        length: Side :math:`\ell > 0` of the square. Defaults to 2.0.
        device: Torch device of all tensors. Defaults to ``"cpu"``.
        dtype: ``torch.float32`` or ``torch.float64`` (default) for the state.
        Du: Diffusivity of ``u`` in ``parameter_ranges["Du"]``: a scalar, or a sequence/tensor
            of shape (batch,). Defaults to 1e-3.
        Dv: Diffusivity of ``v``, likewise. Defaults to 5e-3.
        k: Threshold in ``parameter_ranges["k"]``, likewise. Defaults to 5e-3.
        reaction: ``False`` drops the reaction terms and solves two heat equations (used to
            verify the discretisation). Defaults to ``True``.

    Attributes:
        n, dt, length, device, dtype, reaction: The constructor arguments.
        Du, Dv, k: The coefficients, each of shape (1,) or (batch,), solver dtype.
        dx: Cell size ``length / n``.
        x, y: Cell-centre coordinates, shape (n,), solver dtype.

    Raises:
        ValueError: If an argument is outside its valid range; the message names it.
    """

    name: ClassVar[str] = "fitzhugh_nagumo_2d"
    dim: ClassVar[int] = 2
    fields: ClassVar[tuple[str, ...]] = ("u", "v")
    field_units: ClassVar[dict[str, str]] = {
        "u": "dimensionless (activator)",
        "v": "dimensionless (inhibitor)",
    }
    boundary: ClassVar[str] = "no-flux (Neumann)"
    description: ClassVar[str] = (
        "FitzHugh-Nagumo diffusion-reaction on [-1, 1]^2 (PDEBench 2D), finite differences + RK4"
    )
    parameter_names: ClassVar[tuple[str, ...]] = ("Du", "Dv", "k")
    parameter_ranges: ClassVar[dict[str, tuple[float, float]]] = {
        "Du": (0.0, 1.0),
        "Dv": (0.0, 1.0),
        "k": (-1.0, 1.0),
    }
    # Around PDEBench's single setting (Du, Dv, k) = (1e-3, 5e-3, 5e-3), a factor 2 either way.
    default_parameters: ClassVar[dict[str, tuple[str, float, float]]] = {
        "Du": ("loguniform", 5e-4, 2e-3),
        "Dv": ("loguniform", 2.5e-3, 1e-2),
        "k": ("uniform", 0.0, 1e-2),
    }
    default_length: ClassVar[float] = 2.0
    default_n: ClassVar[int] = 128
    default_t_end: ClassVar[float] = 5.0
    # max_stable_dt(128, 2.0) = 0.0069 at Dv = 1e-2; 0.005 gives 10 steps per PDEBench frame.
    default_dt: ClassVar[float] = 0.005
    stationary: ClassVar[bool] = False

    def __init__(
        self,
        n: int,
        *,
        dt: float,
        length: float = 2.0,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float64,
        Du: Coefficient = 1e-3,
        Dv: Coefficient = 5e-3,
        k: Coefficient = 5e-3,
        reaction: bool = True,
    ) -> None:
        _validate_n(n, 4)
        validate_positive("length", length)
        validate_positive("dt", dt)
        params = {
            name: _coefficient_in_range(name, value, self.parameter_ranges[name])
            for name, value in (("Du", Du), ("Dv", Dv), ("k", k))
        }
        n_batch = _batch_size(params)
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
        device = torch.device(device)
        dx = float(length) / n
        centres = (torch.arange(n, dtype=torch.float64) + 0.5 - n / 2) * dx
        state: dict[str, object] = {
            name: p.to(device=device, dtype=dtype) for name, p in params.items()
        }
        diffusivity = torch.stack(torch.broadcast_tensors(params["Du"], params["Dv"]), dim=1)
        state["_diffusivity"] = (diffusivity / dx**2)[:, :, None, None].to(device, dtype)
        state["_k"] = params["k"][:, None, None].to(device=device, dtype=dtype)
        state.update(x=centres.to(device, dtype), y=centres.to(device, dtype))
        state.update(n=int(n), dt=float(dt), length=float(length), dx=dx, reaction=bool(reaction))
        state.update(device=device, dtype=dtype, _n_batch=n_batch)
        for name, value in state.items():
            object.__setattr__(self, name, value)

    def __repr__(self) -> str:
        parts = [f"n={self.n}"]
        for name in self.parameter_names:
            values = getattr(self, name).tolist()
            parts.append(f"{name}={values[0] if len(values) == 1 else f'<{len(values)} values>'}")
        parts += [f"dt={self.dt}", f"length={self.length}", f"device='{self.device}'"]
        parts += [f"dtype={self.dtype}", f"reaction={self.reaction}"]
        return f"{type(self).__name__}({', '.join(parts)})"

    @classmethod
    def max_stable_dt(
        cls,
        n: int,
        length: float,
        u_max: float | None = None,
        **coefficient_maxima: float,
    ) -> float:
        """Largest stable RK4 step: ``2.785 / (8 max(Du, Dv) / dx^2 + max(2, 3 u_max^2))``.

        See the class docstring for the derivation.

        Args:
            n: Cells per side, >= 4.
            length: Side of the square > 0.
            u_max: Bound on ``|u|`` over the rollout (> 0). Defaults to ``NOISE_BOUND`` = 5.0,
                a bound on the default standard normal initial state.
            coefficient_maxima: Largest ``Du`` and ``Dv`` of the batch; each defaults to the
                upper end of ``default_parameters``. ``k`` does not enter.

        Returns:
            The step size bound, in time units.
        """
        _validate_n(n, 4)
        validate_positive("length", length)
        u_max = NOISE_BOUND if u_max is None else u_max
        validate_positive("u_max", u_max)
        unknown = set(coefficient_maxima) - set(cls.parameter_names)
        if unknown:
            raise ValueError(
                f"unknown coefficients {sorted(unknown)}; valid: {cls.parameter_names}"
            )
        d_max = max(
            _range_or_value(name, coefficient_maxima.get(name, cls.default_parameters[name][2]))
            for name in ("Du", "Dv")
        )
        rate = 8 * d_max / (length / n) ** 2 + max(2.0, 3.0 * u_max**2)
        return RK4_REAL_LIMIT / rate

    @classmethod
    def resolution_warning(
        cls, n: int, length: float, **coefficient_ranges: float | tuple[float, float]
    ) -> str | None:
        """A message if ``n`` cells cannot resolve the thinnest ``u`` fronts, else ``None``.

        Where :math:`u - u^3` dominates, ``u`` forms Allen-Cahn fronts
        :math:`\\tanh(s / \\sqrt{2 D_u})`, of width :math:`w = \\sqrt{2 D_u}`;
        ``CELLS_PER_WIDTH`` = 2 cells per width are asked for at the smallest ``Du``.

        Args:
            n: Cells per side, >= 4.
            length: Side of the square > 0.
            coefficient_ranges: ``Du`` as a number or a (low, high) pair; defaults to the low
                end of ``default_parameters``. Others are ignored.

        Returns:
            The warning, with the estimated ``n`` needed, or ``None``.
        """
        _validate_n(n, 4)
        validate_positive("length", length)
        du = coefficient_ranges.get("Du", cls.default_parameters["Du"][1])
        du_min = float(per_sample("Du", du, positive=True).min())
        n_needed = math.ceil(CELLS_PER_WIDTH * length / math.sqrt(2 * du_min))
        if n >= n_needed:
            return None
        return (
            f"{cls.name}: n={n} gives {n * math.sqrt(2 * du_min) / length:.2g} cells per front "
            f"width sqrt(2 Du) at Du={du_min:g}; use n >= {n_needed}"
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
        """PDEBench's initial state: independent standard normal ``u`` and ``v`` in each cell.

        Each sample is drawn by itself (``pdeflow.tasks.fields.seeded_samples``), so it is
        bitwise the same alone as at any position of any batch: batch-invariant by construction.

        Args:
            n: Cells per side, >= 4.
            length: Side of the square > 0 (the noise does not depend on it).
            seeds: One integer per sample; sample ``i`` uses
                ``numpy.random.default_rng(int(seeds[i]))`` alone.
            dtype: Torch dtype of the result.
            device: Torch device of the result.

        Returns:
            The state, shape (batch, 2, n, n).
        """
        _validate_n(n, 4)
        validate_positive("length", length)
        seeds = [int(seed) for seed in seeds]
        if not seeds:
            raise ValueError("seeds must hold at least one seed")
        noise = seeded_samples(seeds, (2, n, n), lambda rng: rng.standard_normal((2, n, n)))
        return torch.as_tensor(noise, dtype=dtype, device=device)

    def _laplacian(self, s: torch.Tensor) -> torch.Tensor:
        """Neumann five-point Laplacian times ``D / dx^2``, (batch, 2, n, n) -> same."""
        p = F.pad(s, (1, 1, 1, 1), mode="replicate")
        # Differences first: a uniform state gives exact zeros (the ODE test relies on it).
        lap = (p[..., :-2, 1:-1] - s) + (p[..., 2:, 1:-1] - s)
        lap += (p[..., 1:-1, :-2] - s) + (p[..., 1:-1, 2:] - s)
        return lap.mul_(self._diffusivity)

    def _rhs(self, s: torch.Tensor) -> torch.Tensor:
        """Right-hand side of the semi-discrete system, (batch, 2, n, n)."""
        out = self._laplacian(s)
        if self.reaction:
            u, v = s[:, 0], s[:, 1]
            out[:, 0] += u - u**3 - self._k - v
            out[:, 1] += u - v
        return out

    def _step(self, s: torch.Tensor) -> torch.Tensor:
        """One classical RK4 step of size ``dt``."""
        h = self.dt
        k1 = self._rhs(s)
        k2 = self._rhs(s + (h / 2) * k1)
        k3 = self._rhs(s + (h / 2) * k2)
        k4 = self._rhs(s + h * k3)
        return s + (h / 6) * (k1 + 2 * (k2 + k3) + k4)

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
        return self._step(self._check_state(u, "u"))

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
        for frame in range(1, n_frames):
            for _ in range(steps_per_frame):
                s = self._step(s)
            frames[:, frame] = s
            raise_if_not_finite(s, frame * steps_per_frame * self.dt)
        return frames
