"""The facts of a PDE as plain data: its grid, coefficients, own defaults and description.

``Grid`` is one grid spec for 1D, 2D and 3D (points and side per axis); ``Coefficient`` a
coefficient's valid range, unit and default; ``Defaults`` the run settings a config naming only
the PDE gets; ``PDEInfo`` all of them with the fields and boundary conditions. ``largest`` and
``smallest`` read a coefficient given as a value or as its (low, high) range over the samples,
as every ``max_stable_dt`` receives them.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

CoefficientValue = float | Sequence[float] | torch.Tensor | np.ndarray
# A coefficient's value for a bound: one number, or its (low, high) range over the samples.
Bound = float | tuple[float, float]


@dataclass(frozen=True)
class Grid:
    """A uniform grid: points per axis and the domain's side per axis.

    Coordinates along axis ``a`` are ``origin[a] + (i + offset) * lengths[a] / shape[a]``,
    ``i = 0 .. shape[a] - 1``; ``offset`` is 0 for periodic nodes and 0.5 for cell centres.
    """

    shape: tuple[int, ...]
    lengths: tuple[float, ...]

    def __post_init__(self) -> None:
        shape = tuple(self.shape)
        lengths = tuple(float(v) for v in self.lengths)
        if not 1 <= len(shape) <= 3 or len(lengths) != len(shape):
            raise ValueError(
                f"grid: shape {list(shape)} and lengths {list(lengths)} must have one entry per "
                "axis, 1 to 3 axes"
            )
        for n in shape:
            if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
                raise ValueError(f"grid: points per axis must be integers >= 1, got {list(shape)}")
        if not all(math.isfinite(v) and v > 0 for v in lengths):
            raise ValueError(f"grid: lengths must be finite and > 0, got {list(lengths)}")
        object.__setattr__(self, "shape", tuple(int(n) for n in shape))
        object.__setattr__(self, "lengths", lengths)

    @classmethod
    def uniform(cls, n: int, length: float, dim: int) -> Grid:
        """``n`` points and side ``length`` on each of ``dim`` axes."""
        return cls((n,) * dim, (length,) * dim)

    @property
    def dim(self) -> int:
        return len(self.shape)

    @property
    def n(self) -> int:
        """Points per axis of a grid with the same count on every axis."""
        if len(set(self.shape)) != 1:
            raise ValueError(f"grid {list(self.shape)} has different counts per axis")
        return self.shape[0]

    @property
    def length(self) -> float:
        """Side of a grid with the same length on every axis."""
        if len(set(self.lengths)) != 1:
            raise ValueError(f"grid lengths {list(self.lengths)} differ per axis")
        return self.lengths[0]

    @property
    def spacing(self) -> tuple[float, ...]:
        return tuple(length / n for n, length in zip(self.shape, self.lengths, strict=True))

    def coords(self, offset: float = 0.0, origin: float = 0.0) -> list[np.ndarray]:
        """Float64 coordinates of each axis (see the class docstring)."""
        return [
            origin + (np.arange(n) + offset) * (length / n)
            for n, length in zip(self.shape, self.lengths, strict=True)
        ]

    def describe(self) -> str:
        return " x ".join(str(n) for n in self.shape)


@dataclass(frozen=True)
class Coefficient:
    """One coefficient of a PDE: its valid range, unit and default.

    ``sample`` is the default distribution ``(kind, low, high)`` of a sampled coefficient;
    ``value`` the default of one that is held fixed unless a config samples it. ``per_run``
    coefficients take one value for the whole run (they shape the operators, not a sample).
    A range with a positive lower end makes the coefficient strictly positive.
    """

    range: tuple[float, float]
    unit: str = "1"
    sample: tuple[str, float, float] | None = None
    value: float | None = None
    per_run: bool = False

    def __post_init__(self) -> None:
        if (self.sample is None) == (self.value is None):
            raise ValueError("a Coefficient has either a default distribution or a value")


@dataclass(frozen=True)
class Defaults:
    """A PDE's own run settings: a config naming only the PDE gets these."""

    n: int
    length: float
    t_end: float
    dt: float
    n_frames: int = 21
    # Fields of the config's initial_condition section (kind, options, ...).
    initial_condition: Mapping[str, Any] = field(default_factory=lambda: {"kind": "pde"})


@dataclass(frozen=True)
class PDEInfo:
    """The facts about a PDE that generation, export and the dataset card need.

    ``fields`` maps each field, in channel order, to its unit; afterwards ``fields`` is the
    tuple of names and ``units`` the mapping.
    """

    name: str
    description: str
    fields: Mapping[str, str] | tuple[str, ...]
    coefficients: Mapping[str, Coefficient]
    defaults: Defaults
    dim: int = 1
    boundary: str = "periodic"
    stationary: bool = False
    # Offset of the stored coordinates in cells (0: nodes from the origin, 0.5: cell centres).
    coordinate_offset: float = 0.0
    origin: float = 0.0
    units: Mapping[str, str] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.fields, Mapping):
            object.__setattr__(self, "units", dict(self.fields))
            object.__setattr__(self, "fields", tuple(self.fields))
        elif self.units is None or set(self.units) != set(self.fields):
            raise ValueError(f"{self.name}: every field needs a unit")

    @property
    def parameter_names(self) -> tuple[str, ...]:
        return tuple(self.coefficients)

    @property
    def parameter_ranges(self) -> dict[str, tuple[float, float]]:
        return {k: c.range for k, c in self.coefficients.items()}

    @property
    def default_parameters(self) -> dict[str, tuple[str, float, float]]:
        """Coefficients sampled by default, with their distributions."""
        return {k: c.sample for k, c in self.coefficients.items() if c.sample is not None}

    @property
    def default_constants(self) -> dict[str, float]:
        """Coefficients held fixed by default, with their values."""
        return {k: c.value for k, c in self.coefficients.items() if c.value is not None}

    @property
    def per_run(self) -> tuple[str, ...]:
        return tuple(k for k, c in self.coefficients.items() if c.per_run)


def as_grid(grid: Grid | int, length: float | None, dim: int, default_length: float) -> Grid:
    """A ``Grid`` from a grid or from points per axis and a side (the PDE's own by default)."""
    if isinstance(grid, Grid):
        if length is not None and grid.length != length:
            raise ValueError(f"length={length} disagrees with the grid's {list(grid.lengths)}")
        if grid.dim != dim:
            raise ValueError(f"grid has {grid.dim} axes; this PDE is {dim}D")
        return grid
    if isinstance(grid, bool) or not isinstance(grid, numbers.Integral):
        raise ValueError(f"grid must be a Grid or points per axis (an integer), got {grid!r}")
    length = default_length if length is None else length
    if isinstance(length, bool) or not isinstance(length, numbers.Real):
        raise ValueError(f"length must be a finite number > 0, got {length!r}")
    return Grid.uniform(int(grid), float(length), dim)


def coefficient_tensor(name: str, value: CoefficientValue, spec: Coefficient) -> torch.Tensor:
    """A coefficient given once or per sample as float64 (m,), checked against its range."""
    try:
        values = torch.as_tensor(np.asarray(value, dtype=np.float64)).reshape(-1)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"{name} must be a number or a sequence of numbers, got {value!r}"
        ) from err
    low, high = spec.range
    ok = torch.isfinite(values) & (values >= low) & (values <= high)
    if values.numel() == 0 or not bool(ok.all()):
        raise ValueError(
            f"{name} must lie in [{low:g}, {high:g}] (one value, or one per sample), got {value!r}"
        )
    if spec.per_run and values.numel() > 1 and not bool((values == values[0]).all()):
        raise ValueError(f"{name} takes one value per run, got {values.numel()} different values")
    return values[:1] if spec.per_run else values


def largest(bound: Bound) -> float:
    """The largest magnitude of a coefficient bound (a number or a (low, high) range)."""
    if isinstance(bound, tuple | list):
        return max(abs(float(v)) for v in bound)
    return abs(float(bound))


def smallest(bound: Bound) -> float:
    """The smallest value of a coefficient bound (a number or a (low, high) range)."""
    if isinstance(bound, tuple | list):
        return min(float(v) for v in bound)
    return float(bound)
