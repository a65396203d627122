"""What every PDE solver shares: its grid, its facts, and the batched rollout with its checks.

A PDE file keeps only what is its own: the equation (docstring), the coefficients and defaults
(one ``PDEInfo``), the operators or right-hand side, the stability limit, and its own initial
state where it has one. This module owns the rest:

- ``Grid`` and ``PDEInfo`` (from ``pdeflow.tasks.pdes.facts``, re-exported here): the grid
  spec and the facts a data campaign needs (fields and units, boundaries, coefficient ranges
  and default distributions, the PDE's own defaults for grid, step, horizon and initial state);
- ``PDE``: construction from a grid, ``dt``, dtype, device and coefficients (validated against
  their ranges), the state check, and ``step`` / ``rollout`` over a subclass's internal state,
  with a finite check and a Courant check on every saved frame that name the bad samples.

States are ``(batch, channel, *grid)`` for every PDE; trajectories
``(batch, time, channel, *grid)``.
"""

from __future__ import annotations

import math
import numbers
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import torch

from pdeflow.tasks.pdes.errors import BlowUpError, CFLViolation, check_rollout_counts
from pdeflow.tasks.pdes.facts import (
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
from pdeflow.tasks.pdes.immutable import Immutable

__all__ = [
    "PDE",
    "Bound",
    "Coefficient",
    "CoefficientValue",
    "Defaults",
    "Grid",
    "PDEInfo",
    "as_grid",
    "coefficient_tensor",
    "largest",
    "smallest",
]


class PDE(Immutable, ABC):
    """Base class of every PDE solver: immutable, batched, ``(batch, channel, *grid)`` states.

    A subclass sets ``info`` and implements ``_setup`` (operators from the validated
    coefficients), ``_start`` (state -> internal representation, e.g. a spectrum), ``_advance``
    (``n`` steps of ``dt`` on the internal state) and ``_frame`` (internal -> state). It may
    define ``_courant`` (the Courant number of each sample) and ``max_stable_dt``.

    Args:
        grid: A ``Grid``, or the points per axis with ``length`` the side of each axis.
        dt: Time step > 0 (ignored by stationary PDEs, which may pass ``None``).
        length: Side of each axis when ``grid`` is an integer; default: the PDE's own.
        device: Torch device of all tensors. Defaults to ``"cpu"``.
        dtype: ``torch.float32`` or ``torch.float64`` (default) for the state.
        cfl_max: Largest Courant number a rollout accepts (``math.inf`` disables the check);
            default: the class's ``CFL_MAX`` (``None`` for PDEs without explicit advection).
        **coefficients: Each coefficient of ``info`` by name, one value or one per sample;
            those not given take their default value (``Coefficient.value``).

    Attributes:
        grid, dt, device, dtype, cfl_max: The constructor arguments.
        n, length, dx: Points per axis, side and spacing (uniform grids).
        <coefficient>: Each coefficient as a float64 tensor of shape (1,) or (batch,).
    """

    info: ClassVar[PDEInfo]
    CFL_MAX: ClassVar[float | None] = None
    # Require an even number of points per axis (real FFTs), and at least this many.
    even_grid: ClassVar[bool] = True
    min_points: ClassVar[int] = 8

    def __init__(
        self,
        grid: Grid | int,
        *,
        dt: float | None = None,
        length: float | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float64,
        cfl_max: float | None = None,
        **coefficients: CoefficientValue,
    ) -> None:
        info = self.info
        grid = as_grid(grid, length, info.dim, info.defaults.length)
        for n in grid.shape:
            if n < self.min_points or (self.even_grid and n % 2):
                parity = "an even integer" if self.even_grid else "an integer"
                raise ValueError(f"n must be {parity} >= {self.min_points}, got {n!r}")
        if len(set(grid.shape)) != 1 or len(set(grid.lengths)) != 1:
            raise ValueError(f"{info.name} needs the same points and side on every axis")
        if info.stationary:
            dt = 1.0 if dt is None else dt
        if isinstance(dt, bool) or not isinstance(dt, numbers.Real) or not 0 < dt < math.inf:
            raise ValueError(f"dt must be a finite number > 0, got {dt!r}")
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
        unknown = sorted(set(coefficients) - set(info.coefficients))
        if unknown:
            raise TypeError(
                f"{type(self).__name__} has no coefficient {unknown}; valid: "
                f"{list(info.coefficients)}"
            )
        params = {}
        for name, spec in info.coefficients.items():
            if name not in coefficients and spec.value is None:
                raise TypeError(f"{type(self).__name__} needs the coefficient {name!r}")
            params[name] = coefficient_tensor(name, coefficients.get(name, spec.value), spec)
        sizes = {name: p.numel() for name, p in params.items() if p.numel() > 1}
        if len(set(sizes.values())) > 1:
            raise ValueError(f"per-sample coefficients differ in length: {sizes}")
        cfl = self.CFL_MAX if cfl_max is None else cfl_max
        if cfl is not None and (
            isinstance(cfl, bool) or not isinstance(cfl, numbers.Real) or cfl <= 0
        ):
            raise ValueError(f"cfl_max must be a number > 0, got {cfl_max!r}")
        device = torch.device(device)
        base = dict(
            grid=grid,
            n=grid.n,
            length=grid.length,
            dx=grid.spacing[0],
            dt=float(dt),
            device=device,
            dtype=dtype,
            cfl_max=None if cfl is None else float(cfl),
            _n_batch=next(iter(sizes.values()), 1),
        )
        for key, value in {**base, **params}.items():
            object.__setattr__(self, key, value)
        for key, value in self._setup(params).items():
            if isinstance(value, torch.Tensor):
                cdtype = torch.complex64 if dtype == torch.float32 else torch.complex128
                value = value.to(device=device, dtype=cdtype if value.is_complex() else dtype)
            object.__setattr__(self, key, value)

    # --- what a subclass supplies -----------------------------------------------------------

    @abstractmethod
    def _setup(self, params: dict[str, torch.Tensor]) -> dict[str, Any]:
        """Operators and constants from the float64 coefficients; tensors are cast to the
        solver's device and (complex) dtype, everything becomes an attribute."""

    @abstractmethod
    def _start(self, u: torch.Tensor) -> Any:
        """The internal state of a checked state ``u`` (batch, channel, *grid)."""

    @abstractmethod
    def _advance(self, s: Any, n_steps: int) -> Any:
        """``n_steps`` steps of ``dt`` on an internal state; may work in place."""

    @abstractmethod
    def _frame(self, s: Any) -> torch.Tensor:
        """The state (batch, channel, *grid) of an internal state."""

    def _courant(self, u: torch.Tensor, s: Any) -> torch.Tensor | None:
        """Each sample's Courant number (batch,) of a frame, or None where none applies."""
        return None

    def _invalid(self, u: torch.Tensor) -> tuple[torch.Tensor, str] | None:
        """Samples (batch,) bool whose frame breaks a physical bound, and the reason."""
        return None

    @classmethod
    def max_stable_dt(
        cls, grid: Grid, coefficients: Mapping[str, Bound], u_max: float | None = None
    ) -> float:
        """Largest stable ``dt`` on ``grid`` for coefficients in their bounds (default: none).

        Args:
            grid: The grid.
            coefficients: Each coefficient's value or (low, high) range over the samples.
            u_max: Bound on the state's magnitude where the PDE's limit depends on it; None:
                the bound of the PDE's own initial state.
        """
        return math.inf

    @classmethod
    def resolution_warning(
        cls, grid: Grid, coefficients: Mapping[str, Bound], u_max: float | None = None
    ) -> str | None:
        """A warning when ``grid`` under-resolves the coefficients' smallest scale, or None."""
        return None

    @classmethod
    def coordinates(cls, grid: Grid) -> list[np.ndarray]:
        """Coordinates of the stored grid points per axis, float64."""
        return grid.coords(cls.info.coordinate_offset, cls.info.origin)

    # --- the shared machinery ---------------------------------------------------------------

    def __repr__(self) -> str:
        parts = [f"grid={list(self.grid.shape)}", f"length={self.length:g}"]
        for name in self.info.coefficients:
            values = getattr(self, name).tolist()
            parts.append(f"{name}={values[0] if len(values) == 1 else f'<{len(values)} values>'}")
        parts += [f"dt={self.dt}", f"device='{self.device}'", f"dtype={self.dtype}"]
        if self.cfl_max is not None:
            parts.append(f"cfl_max={self.cfl_max}")
        return f"{type(self).__name__}({', '.join(parts)})"

    @property
    def state_shape(self) -> tuple[int, ...]:
        """Shape of one sample's state: (channel, *grid)."""
        return (len(self.info.fields), *self.grid.shape)

    def check_state(self, u: torch.Tensor, name: str = "u") -> torch.Tensor:
        """Validate a (batch, channel, *grid) state; cast it to the solver's dtype and device."""
        shape = self.state_shape
        if (
            not isinstance(u, torch.Tensor)
            or u.ndim != len(shape) + 1
            or tuple(u.shape[1:]) != shape
        ):
            got = tuple(u.shape) if isinstance(u, torch.Tensor) else type(u).__name__
            raise ValueError(f"{name} must be a tensor of shape (batch, *{shape}), got {got}")
        if u.is_complex() or not u.is_floating_point():
            raise ValueError(f"{name} must be real floating point, got {u.dtype}")
        if self._n_batch > 1 and u.shape[0] != self._n_batch:
            raise ValueError(
                f"{name} has batch {u.shape[0]} but the coefficients have {self._n_batch} "
                "per-sample values"
            )
        return u.to(device=self.device, dtype=self.dtype)

    def check_frame(self, u: torch.Tensor, s: Any, time: float) -> None:
        """Raise if a frame (batch, channel, *grid) is non-finite, unphysical or over the CFL."""
        finite = torch.isfinite(u.flatten(1)).all(dim=1)
        if not bool(finite.all()):
            raise BlowUpError(torch.nonzero(~finite).flatten().tolist(), time)
        invalid = self._invalid(u)
        if invalid is not None and bool(invalid[0].any()):
            raise BlowUpError(torch.nonzero(invalid[0]).flatten().tolist(), time, invalid[1])
        if self.cfl_max is None:
            return
        cfl = self._courant(u, s)
        if cfl is None:
            return
        over = cfl > self.cfl_max
        if bool(over.any()):
            raise CFLViolation(
                torch.nonzero(over).flatten().tolist(), time, cfl[over].tolist(), self.cfl_max
            )

    def step(self, u: torch.Tensor) -> torch.Tensor:
        """Advance a state (batch, channel, *grid) by one step ``dt`` (a stationary PDE: solve)."""
        return self._frame(self._advance(self._start(self.check_state(u, "u")), 1))

    def rollout(
        self, u0: torch.Tensor, n_frames: int = 1, steps_per_frame: int = 1
    ) -> torch.Tensor:
        """Integrate a batch and record ``n_frames`` frames, ``steps_per_frame`` steps apart.

        Every frame, ``u0`` included, is checked: all values finite, within the PDE's physical
        bounds, and each sample's Courant number at most ``cfl_max`` where one applies. A
        stationary PDE returns its one solved frame.

        Args:
            u0: Initial state of shape (batch, channel, *grid), real.
            n_frames: Number of frames to return (>= 1), frame 0 being ``u0``.
            steps_per_frame: Time steps between frames (>= 1); frame ``f`` is at time
                ``f * steps_per_frame * dt``.

        Returns:
            Trajectory of shape (batch, n_frames, channel, *grid), solver dtype and device.

        Raises:
            BlowUpError: A frame has non-finite or unphysical values; ``samples`` lists the
                batch indices.
            CFLViolation: A frame exceeds ``cfl_max``; ``samples`` lists the batch indices.
        """
        u0 = self.check_state(u0, "u0")
        check_rollout_counts(n_frames, steps_per_frame)
        if self.info.stationary:
            if n_frames != 1 or steps_per_frame != 1:
                raise ValueError(
                    f"{self.info.name} is stationary: n_frames and steps_per_frame must be 1, "
                    f"got {n_frames!r} and {steps_per_frame!r}"
                )
            s = self._advance(self._start(u0), 1)
            out = self._frame(s)
            self.check_frame(out, s, 0.0)
            return out[:, None]
        frames = torch.empty(
            (u0.shape[0], n_frames, *u0.shape[1:]), dtype=self.dtype, device=self.device
        )
        s = self._start(u0)
        frames[:, 0] = u0
        self.check_frame(u0, s, 0.0)
        for frame in range(1, n_frames):
            s = self._advance(s, steps_per_frame)
            frames[:, frame] = self._frame(s)
            self.check_frame(frames[:, frame], s, frame * steps_per_frame * self.dt)
        return frames
