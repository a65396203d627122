"""One contract for everything that produces trajectories: registered PDEs and user simulators.

A ``Problem`` answers all that generation, export and the dataset card ask: its fields and
units, dimension and grid, boundary conditions, the parameter space and valid ranges, the
initial-state families it accepts, ``check(gen)`` (ranges, stability, resolution warnings),
``solve(gen, params, seeds)`` and its card. ``problem_for(gen)`` builds it from the config
with no imports of user code and no side effects: a Python simulator's module is imported
where it first solves, on the worker. The problem is small and picklable; Dask tasks receive
the validated config object itself (pickled, never revalidated) and ask it for its problem.

Trajectories leave ``solve`` as ``(sample, time, channel, *space)``.
"""

from __future__ import annotations

import inspect
import math
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from pdeflow.tasks.pdes import PDES, get_pde
from pdeflow.tasks.pdes.base import Grid, PDEInfo

GENERIC_INITIAL_KINDS = ("modes", "fourier", "grf", "steps")


class Problem(Protocol):
    """What the generate stage needs of a source of trajectories."""

    name: str
    dim: int
    fields: tuple[str, ...]
    # What each field is, in words or in the problem's own units ("velocity", "length/time").
    units: dict[str, str]
    # Each field's CF units (a UDUNITS string; "1" for a pure number), None where unknown.
    cf_units: dict[str, str | None]
    # CF units of the time and space coordinates and of the parameters; None where unknown.
    coordinate_units: str | None
    boundary: str
    description: str
    stationary: bool
    # Whether initial states can be drawn without solving (the surrogate starts from them).
    draws_initial_states: bool
    # Whether failed samples' working directories are kept (executable simulators).
    keep_failed: bool

    def check(self, gen) -> None: ...

    def resolution_warnings(self, gen) -> list[str]: ...

    def coordinates(self, gen) -> list[np.ndarray]: ...

    def solve(self, gen, params, seeds, sample_ids=None, workdir=None) -> np.ndarray: ...

    def card(self, gen) -> dict[str, str]: ...


@dataclass(frozen=True)
class PdeProblem:
    """A registered PDE as a problem: its facts come from the class's ``info``."""

    pde: str

    @property
    def cls(self) -> type:
        return get_pde(self.pde)

    @property
    def info(self) -> PDEInfo:
        return self.cls.info

    name = property(lambda self: self.info.name)
    dim = property(lambda self: self.info.dim)
    fields = property(lambda self: tuple(self.info.fields))
    units = property(lambda self: dict(self.info.units))
    # The registered PDEs are written in non-dimensional variables: their "length", "time" and
    # "mass" are the equations' own units, with no physical scale attached, so every stored
    # number (field, coordinate, coefficient) is a pure number, CF units "1". What each field
    # is stays in ``units`` (the dataset card, ``pdeflow list pdes``, the fields' long_name).
    cf_units = property(lambda self: dict.fromkeys(self.info.fields, "1"))
    coordinate_units = "1"
    boundary = property(lambda self: self.info.boundary)
    description = property(lambda self: self.info.description)
    stationary = property(lambda self: self.info.stationary)
    draws_initial_states = True
    keep_failed = False

    def initial_kinds(self) -> tuple[str, ...]:
        """Initial-state families this PDE accepts (generic ones need one field, in time)."""
        own = ("pde",) if hasattr(self.cls, "initial_condition") else ()
        if len(self.fields) > 1 or self.stationary:
            return own
        return (*GENERIC_INITIAL_KINDS, *own)

    def initial_options(self) -> list[str]:
        """Keyword options of the PDE's own ``initial_condition``, coefficients aside."""
        if not hasattr(self.cls, "initial_condition"):
            return []
        params = inspect.signature(self.cls.initial_condition).parameters
        skip = {"grid", "seeds", "dtype", "device", *self.info.parameter_names}
        return [k for k, p in params.items() if p.kind is p.KEYWORD_ONLY and k not in skip]

    def solver_options(self) -> dict[str, Any]:
        """Keyword options of the solver's constructor (not coefficients) and their defaults."""
        params = inspect.signature(self.cls.__init__).parameters
        skip = {"self", "grid", "dt", "length", "device", "dtype", "cfl_max"}
        return {
            k: p.default
            for k, p in params.items()
            if p.kind is p.KEYWORD_ONLY and k not in skip and k not in self.info.coefficients
        }

    def _check_solver_options(self, gen) -> None:
        valid = self.solver_options()
        unknown = sorted(set(gen.solver_options) - set(valid))
        if unknown:
            raise ValueError(
                f"solver_options: {self.name} has no option {unknown}; valid: {sorted(valid)}"
            )
        hints = typing.get_type_hints(self.cls.__init__)
        for name, value in gen.solver_options.items():
            choices = typing.get_args(hints.get(name))
            if typing.get_origin(hints.get(name)) is typing.Literal and value not in choices:
                raise ValueError(f"solver_options.{name}: {value!r} is not one of {list(choices)}")

    def defaults(self) -> dict[str, Any]:
        """The generate settings a config naming only this PDE gets."""
        d = self.info.defaults
        return {
            "grid": (d.n,) * self.dim,
            "length": d.length,
            "t_end": d.t_end,
            "n_frames": 1 if self.stationary else d.n_frames,
            "dt": d.dt,
            "initial_condition": dict(d.initial_condition),
        }

    def bounds(self, gen) -> dict[str, tuple[float, float]]:
        """Every coefficient's (low, high) over the run: sampled ranges, constants, defaults."""
        out = {k: (v, v) for k, v in self.info.default_constants.items()}
        out.update({k: (s.low, s.high) for k, s in gen.coefficient_specs.items()})
        out.update({k: (v, v) for k, v in gen.constants.items()})
        return out

    def check(self, gen) -> None:
        """Cross-field checks of a generate config; ValueError naming the field."""
        if gen.simulator is not None:
            raise ValueError("simulator is only used with pde: custom")
        if len(gen.grid) != self.dim:
            raise ValueError(f"grid: {self.name} is {self.dim}D; got {len(gen.grid)} axes")
        if len(set(gen.grid)) != 1:
            raise ValueError(f"grid: {self.name} needs the same points on every axis")
        cls, n = self.cls, gen.grid[0]
        if n < cls.min_points or (cls.even_grid and n % 2):
            parity = "even and " if cls.even_grid else ""
            raise ValueError(
                f"grid: {self.name} needs {parity}>= {cls.min_points} points per axis (got {n})"
            )
        multiple = getattr(cls, "grid_multiple", 1)
        if n % multiple:
            raise ValueError(
                f"grid: {self.name} needs a multiple of {multiple} points per axis (got {n}; "
                f"{n - n % multiple} or {n - n % multiple + multiple} would do)"
            )
        _check_coefficients(gen, self.info)
        self._check_initial_condition(gen)
        self._check_solver_options(gen)
        if self.stationary:
            return
        limit = self.cls.max_stable_dt(gen.grid_spec, self.bounds(gen), gen.u_max)
        if gen.dt > limit:
            bound = "" if gen.u_max is None else f" and max|u0|={gen.u_max:g}"
            passing = _round_down(limit)
            raise ValueError(
                f"dt={gen.dt:g} exceeds the stability limit {limit:.4g} of the {self.name} "
                f"solver for grid {list(gen.grid)}, length={gen.domain_length:g}{bound}; set "
                f"generate.dt <= {passing:g} (or coarsen generate.grid)"
            )

    def _check_initial_condition(self, gen) -> None:
        ic, kinds = gen.initial_condition, self.initial_kinds()
        if ic is None or ic.kind not in kinds:
            got = "none" if ic is None else repr(ic.kind)
            raise ValueError(
                f"initial_condition.kind: {got} does not apply to {self.name}; valid: {list(kinds)}"
            )
        if ic.options and ic.kind != "pde":
            raise ValueError("initial_condition.options apply to kind 'pde' only")
        unknown = sorted(set(ic.options) - set(self.initial_options()))
        if unknown:
            raise ValueError(
                f"initial_condition.options: {self.name} has no option {unknown}; valid: "
                f"{self.initial_options()}"
            )
        if ic.kind == "modes" and max(ic.modes) > min(gen.grid) // 3:
            raise ValueError(
                f"initial_condition.modes must be <= grid/3 = {min(gen.grid) // 3} to be resolved"
            )

    def resolution_warnings(self, gen) -> list[str]:
        msg = self.cls.resolution_warning(gen.grid_spec, self.bounds(gen), gen.u_max)
        return [f"generate.grid: {msg}"] if msg else []

    def coordinates(self, gen) -> list[np.ndarray]:
        return [np.asarray(c, dtype=np.float64) for c in self.cls.coordinates(gen.grid_spec)]

    def initial_state(self, gen, params, seeds, device, dtype):
        """Initial states (n, channel, *space) of a batch; see ``pdeflow.tasks.solve``."""
        from pdeflow.tasks.solve import initial_state

        return initial_state(gen, params, seeds, device, dtype)

    def own_initial_state(self, gen, seeds, coefficients: Mapping[str, np.ndarray], device, dtype):
        """The PDE's own initial states (kind ``pde``), shape (n, channel, *space).

        Coefficients the initial state depends on (the shallow-water dam radius) are passed
        on, so a sample's state matches its recorded coefficients; options come from
        ``initial_condition.options``. Every ``initial_condition`` builds sample ``i`` from
        ``seeds[i]`` (and its own coefficients) alone, so a sample is bitwise the same in any
        batch.
        """
        params = inspect.signature(self.cls.initial_condition).parameters
        used = {k: np.asarray(v) for k, v in coefficients.items() if k in params}
        options = dict(gen.initial_condition.options)
        return self.cls.initial_condition(
            gen.grid_spec, seeds, dtype=dtype, device=device, **used, **options
        )

    def solve(self, gen, params, seeds, sample_ids=None, workdir=None) -> np.ndarray:
        """Solve one batch: (n, n_frames, channel, *space) in ``gen.dtype``.

        Raises:
            BlowUpError: non-finite values or a CFL violation, naming the batch rows.
        """
        import torch

        from pdeflow.tasks.solve import coefficients

        dtype, device = getattr(torch, gen.dtype), torch.device(gen.device)
        u0 = self.initial_state(gen, params, seeds, device, dtype)
        coefs = {k: np.asarray(v, dtype=np.float64) for k, v in coefficients(gen, params).items()}
        for name in self.info.per_run:
            if name in coefs:
                coefs[name] = coefs[name][:1]
        pde = self.cls(
            gen.grid_spec,
            dt=gen.internal_dt,
            device=device,
            dtype=dtype,
            **dict(gen.solver_options),
            **coefs,
        )
        frames, steps = (1, 1) if self.stationary else (gen.n_frames, gen.steps_per_frame)
        return pde.rollout(u0, frames, steps).cpu().numpy()

    def card(self, gen) -> dict[str, str]:
        cls = self.cls
        return {
            "title": self.name,
            "equation": self.description,
            "boundary": self.boundary,
            "solver": f"{cls.__name__} ({cls.__module__}), {gen.dtype} on {gen.device}",
        }

    def describe(self) -> dict:
        """A JSON-ready summary, as ``pdeflow list pdes --json`` prints it."""
        info = self.info
        coefs = {}
        for name, c in info.coefficients.items():
            row: dict[str, Any] = {"range": list(c.range), "unit": c.unit}
            if c.sample is not None:
                row["default"] = {
                    "distribution": c.sample[0],
                    "low": c.sample[1],
                    "high": c.sample[2],
                }
            else:
                row["default"] = {"constant": c.value}
            if c.per_run:
                row["one_value_per_run"] = True
            coefs[name] = row
        d = self.defaults()
        return {
            "name": self.name,
            "dim": self.dim,
            "fields": list(self.fields),
            "units": self.units,
            "boundary": self.boundary,
            "stationary": self.stationary,
            "coefficients": coefs,
            "defaults": {
                "grid": list(d["grid"]),
                "length": d["length"],
                "t_end": d["t_end"],
                "dt": d["dt"],
                "n_frames": d["n_frames"],
                "initial_condition": d["initial_condition"]["kind"],
            },
            "initial_conditions": list(self.initial_kinds()),
            "solver_options": {k: _jsonable(v) for k, v in self.solver_options().items()},
            "description": self.description,
        }


@dataclass(frozen=True)
class SimulatorProblem:
    """A user simulator (``pde: custom``): Python callable or external executable.

    Its module or program is looked up but never imported or run while the config is
    validated; the first ``solve`` (on a Dask worker) imports it.
    """

    sim: Any  # SimulatorConfig

    name = property(lambda self: f"custom ({self.sim.kind})")
    dim = property(lambda self: len(self.sim.grid))
    fields = property(lambda self: tuple(self.sim.fields))
    boundary = "set by the simulator"
    stationary = False
    draws_initial_states = False

    @property
    def units(self) -> dict[str, str]:
        units = self.sim.units or ("arbitrary",) * len(self.sim.fields)
        return dict(zip(self.sim.fields, units, strict=True))

    @property
    def cf_units(self) -> dict[str, str | None]:
        """The simulator's ``units`` as CF units (UDUNITS strings); None when it states none."""
        units = self.sim.units or (None,) * len(self.sim.fields)
        return dict(zip(self.sim.fields, units, strict=True))

    # A simulator's time, space and parameter units are not recorded: they stay unstated.
    coordinate_units = None

    @property
    def description(self) -> str:
        return f"user simulator `{self.target}`"

    @property
    def target(self) -> str:
        return self.sim.target if self.sim.kind == "python" else " ".join(self.sim.command)

    @property
    def keep_failed(self) -> bool:
        return bool(self.sim.keep_failed)

    def defaults(self) -> dict[str, Any]:
        return {
            "grid": tuple(self.sim.grid),
            "length": 1.0,
            "t_end": 2.0,
            "n_frames": 41,
            "dt": 0.005,
        }

    def check(self, gen) -> None:
        from pdeflow.tasks.custom import check_custom

        if gen.solver_options:
            raise ValueError("solver_options apply to the registered PDEs, not to pde 'custom'")
        if tuple(gen.grid) != tuple(self.sim.grid):
            raise ValueError(
                f"grid: {list(gen.grid)} differs from simulator.grid {list(self.sim.grid)}; "
                "set only simulator.grid"
            )
        check_custom(gen)

    def resolution_warnings(self, gen) -> list[str]:
        return []

    def coordinates(self, gen) -> list[np.ndarray]:
        return gen.grid_spec.coords()

    def solve(self, gen, params, seeds, sample_ids=None, workdir=None) -> np.ndarray:
        """Run the simulator on one batch; raises SimulationError naming failed samples."""
        from pdeflow.tasks.custom import build_simulator
        from pdeflow.tasks.solve import coefficients

        ids = np.arange(len(params)) if sample_ids is None else sample_ids
        return build_simulator(gen, workdir=workdir).run(coefficients(gen, params), seeds, ids)

    def card(self, gen) -> dict[str, str]:
        return {
            "title": f"custom simulator ({self.sim.kind})",
            "equation": f"Simulator: `{self.target}`",
            "boundary": self.boundary,
            "solver": f"user simulator `{self.target}`",
        }


def problem_for(pde: str, simulator=None) -> PdeProblem | SimulatorProblem:
    """The problem of a generate config's ``pde`` (and ``simulator`` for ``custom``)."""
    if pde == "custom":
        if simulator is None:
            raise ValueError("pde 'custom' needs a simulator section (kind, target or command)")
        return SimulatorProblem(simulator)
    get_pde(pde)  # ValueError listing the names
    return PdeProblem(pde)


def all_problems() -> list[PdeProblem]:
    """Every registered PDE as a problem, in registry order."""
    return [PdeProblem(name) for name in PDES]


def _jsonable(value: Any) -> Any:
    return value if isinstance(value, bool | int | float | str | type(None)) else repr(value)


def _round_down(limit: float) -> float:
    """A round step just below ``limit`` (two significant digits), for messages."""
    scale = 10 ** (math.floor(math.log10(limit)) - 1)
    return math.floor(limit / scale * (1 - 1e-9)) * scale


def _check_coefficients(gen, info: PDEInfo) -> None:
    valid = info.parameter_names
    sampled = gen.coefficient_specs
    fixed = sorted(set(sampled) & set(info.per_run))
    if fixed:
        raise ValueError(
            f"parameters: {fixed} of {info.name} take one value per run; set them under constants"
        )
    for where, names in (("parameters", sampled), ("constants", gen.constants)):
        unknown = sorted(set(names) - set(valid))
        if unknown:
            raise ValueError(
                f"{where}: {info.name} has no coefficient {unknown}; valid: {list(valid)}"
            )
    both = sorted(set(sampled) & set(gen.constants))
    if both:
        raise ValueError(f"{both} are both sampled (parameters) and fixed (constants)")
    have = set(sampled) | set(gen.constants) | set(info.default_constants)
    missing = [n for n in valid if n not in have]
    if missing:
        raise ValueError(f"{info.name} needs {missing} in parameters or constants")
    for name, spec in sampled.items():
        _check_range(info, f"parameters.{name}", name, spec.low, spec.high)
    for name, value in gen.constants.items():
        _check_range(info, f"constants.{name}", name, value, value)


def _check_range(info: PDEInfo, field_name: str, name: str, low: float, high: float) -> None:
    lo, hi = info.coefficients[name].range
    if low < lo or high > hi:
        raise ValueError(
            f"{field_name}: [{low:g}, {high:g}] is outside the valid range [{lo:g}, {hi:g}] "
            f"of {name} for {info.name}"
        )


__all__ = ["Grid", "PdeProblem", "Problem", "SimulatorProblem", "all_problems", "problem_for"]
