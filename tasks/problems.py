"""What the generate stage needs to know about each registered PDE, and one batched solve.

The solver classes in ``pdeflow.tasks.pdes`` are plain numerical objects. This module adds, per
registry name, the facts a data campaign needs: spatial dimension, fields and their units, boundary
conditions, the valid range and default distribution of each coefficient, the stable step of the
scheme for a grid, and whether the grid resolves the coefficients' smallest scale. The 2D
classes carry these facts as class attributes; the 1D spectral solvers predate that contract, so
their entries are written out here.

Trajectories leave ``solve`` as ``(sample, time, channel, *space)``.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch

from pdeflow.tasks.pdes import PDES, Burgers, get_pde
from pdeflow.tasks.pdes.allen_cahn import AllenCahn
from pdeflow.tasks.pdes.fisher_kpp import FisherKPP
from pdeflow.tasks.pdes.kdv import KdV
from pdeflow.tasks.pdes.kuramoto_sivashinsky import KuramotoSivashinsky

Range = tuple[float, float]
# (n, length, u_max or None, {coefficient: (low, high)}) -> largest stable dt
StableDt = Callable[[int, float, float | None, dict[str, Range]], float]
# (n, length, u_max or None, {coefficient: (low, high)}) -> warning or None
Resolution = Callable[[int, float, float | None, dict[str, Range]], str | None]


def _unlimited(n, length, u_max, coeffs) -> float:
    return math.inf


def _no_warning(n, length, u_max, ranges) -> None:
    return None


@dataclass(frozen=True)
class PdeEntry:
    """One registered PDE as the generate stage sees it."""

    name: str
    cls: type
    dim: int
    fields: tuple[str, ...]
    field_units: dict[str, str]
    boundary: str
    description: str
    parameter_ranges: dict[str, Range]
    default_parameters: dict[str, tuple[str, float, float]]
    default_length: float
    stationary: bool = False
    stable_dt: StableDt = _unlimited
    resolution: Resolution = _no_warning
    # Coefficients the solver accepts only through its constructor defaults (not sampled).
    notes: dict[str, str] = field(default_factory=dict)
    # Coefficients that take one value per run: constants only, the solver's default if unset.
    batch_constants: dict[str, float] = field(default_factory=dict)

    @property
    def parameter_names(self) -> tuple[str, ...]:
        return tuple(self.parameter_ranges)

    def describe(self) -> dict:
        """A JSON-ready summary, as ``pdeflow list pdes --json`` prints it."""
        return {
            "name": self.name,
            "dim": self.dim,
            "fields": list(self.fields),
            "units": self.field_units,
            "boundary": self.boundary,
            "stationary": self.stationary,
            "parameters": {k: list(v) for k, v in self.parameter_ranges.items()},
            "one_value_per_run": dict(self.batch_constants),
            "description": self.description,
        }


def _burgers_resolution(n, length, u_max, ranges) -> str | None:
    # A viscous shock u = -U tanh(U x / (2 nu)) has width ~ 2 nu / U; the pseudo-spectral
    # solution stays free of Gibbs ripples when dx is at most about that width.
    nu_min = ranges["nu"][0]
    if not u_max:
        return None
    needed = math.ceil(length * u_max / (2 * nu_min))
    if n < needed:
        return (
            f"n_x={n} may not resolve shocks of width 2 nu / max|u| = {2 * nu_min / u_max:.3g} "
            f"at nu={nu_min:g}; estimated n_x >= {needed + needed % 2} needed"
        )
    return None


_1D: dict[str, dict] = {
    "burgers": {
        "description": "viscous Burgers u_t + (u^2/2)_x = nu u_xx",
        "units": "velocity",
        "ranges": {"nu": (1e-5, 100.0)},
        "defaults": {"nu": ("loguniform", 0.02, 0.2)},
        "length": 2 * math.pi,
        "stable_dt": lambda n, length, u, c: Burgers.max_stable_dt(n, length, u or 1.0),
        "resolution": _burgers_resolution,
    },
    "advection": {
        "description": "linear advection u_t + c u_x = 0 (exact propagator)",
        "units": "concentration",
        "ranges": {"c": (-100.0, 100.0)},
        "defaults": {"c": ("uniform", 0.1, 4.0)},
        "length": 1.0,
    },
    "heat": {
        "description": "diffusion u_t = nu u_xx (exact propagator)",
        "units": "temperature",
        "ranges": {"nu": (1e-8, 1e3)},
        "defaults": {"nu": ("loguniform", 0.01, 1.0)},
        "length": 2 * math.pi,
    },
    "kdv": {
        "description": "Korteweg-de Vries u_t + 6 u u_x + beta u_xxx = 0",
        "units": "amplitude",
        "ranges": {"beta": (1e-4, 100.0)},
        "defaults": {"beta": ("loguniform", 0.5, 2.0)},
        "length": 2 * math.pi,
        "stable_dt": lambda n, length, u, c: KdV.max_stable_dt(n, length, u or 1.0),
    },
    "ks": {
        "description": "Kuramoto-Sivashinsky u_t + u u_x + u_xx + nu u_xxxx = 0",
        "units": "amplitude",
        "ranges": {"nu": (1e-3, 100.0)},
        "defaults": {"nu": ("uniform", 0.5, 1.5)},
        "length": 22.0,
        # KS grows any state to an O(3) attractor: bound |u| by that, not by u0.
        "stable_dt": lambda n, length, u, c: KuramotoSivashinsky.max_stable_dt(
            n, length, max(u or 0.0, 4.0), list(c["nu"])
        ),
    },
    "fisher_kpp": {
        "description": "Fisher-KPP reaction-diffusion u_t = nu u_xx + rho u (1 - u)",
        "units": "density",
        "ranges": {"nu": (1e-6, 100.0), "rho": (1e-6, 1e3)},
        "defaults": {"nu": ("loguniform", 0.5, 5.0), "rho": ("loguniform", 1.0, 10.0)},
        "length": 1.0,
        "stable_dt": lambda n, length, u, c: FisherKPP.max_stable_dt(c["rho"][1], u or 1.0),
    },
    "allen_cahn": {
        "description": "Allen-Cahn u_t = eps^2 u_xx + u - u^3",
        "units": "order parameter",
        "ranges": {"eps": (1e-4, 10.0)},
        "defaults": {"eps": ("loguniform", 0.05, 0.2)},
        "length": 2 * math.pi,
        "stable_dt": lambda n, length, u, c: AllenCahn.max_stable_dt(u or 1.0),
    },
}


def _entry_1d(name: str, cls: type) -> PdeEntry:
    spec = _1D[name]
    return PdeEntry(
        name=name,
        cls=cls,
        dim=1,
        fields=("u",),
        field_units={"u": spec["units"]},
        boundary="periodic",
        description=spec["description"],
        parameter_ranges=spec["ranges"],
        default_parameters=spec["defaults"],
        default_length=spec["length"],
        stable_dt=spec.get("stable_dt", _unlimited),
        resolution=spec.get("resolution", _no_warning),
    )


def _entry_nd(name: str, cls: type) -> PdeEntry:
    """Entry of a solver that states its own facts (the 2D classes' contract)."""

    def stable_dt(n, length, u_max, coeffs):
        # Ranges, not maxima: the bound may grow at the low end (Kolmogorov flow's viscosity).
        kwargs = {} if u_max is None else {"u_max": u_max}
        return float(cls.max_stable_dt(n, length, **kwargs, **coeffs))

    def resolution(n, length, u_max, ranges):
        return cls.resolution_warning(n, length, **ranges)

    return PdeEntry(
        name=name,
        cls=cls,
        dim=int(cls.dim),
        fields=tuple(cls.fields),
        field_units=dict(cls.field_units),
        boundary=cls.boundary,
        description=cls.description,
        parameter_ranges={k: tuple(v) for k, v in cls.parameter_ranges.items()},
        default_parameters=dict(cls.default_parameters),
        default_length=float(cls.default_length),
        stationary=bool(getattr(cls, "stationary", False)),
        stable_dt=stable_dt,
        resolution=resolution,
        batch_constants=dict(getattr(cls, "batch_constants", {})),
    )


def get_entry(name: str) -> PdeEntry:
    """The generate stage's entry for a registered PDE (ValueError listing names if unknown)."""
    cls = get_pde(name)
    return _entry_1d(name, cls) if name in _1D else _entry_nd(name, cls)


def all_entries() -> list[PdeEntry]:
    return [get_entry(name) for name in PDES]


def solve(
    entry: PdeEntry,
    *,
    n: int,
    length: float,
    dt: float,
    n_frames: int,
    steps_per_frame: int,
    coefficients: Mapping[str, np.ndarray],
    u0: torch.Tensor,
    device: torch.device,
    dtype: torch.dtype,
) -> torch.Tensor:
    """Solve one batch: ``u0`` (batch, channel, *space) -> (batch, time, channel, *space).

    Args:
        coefficients: every coefficient of the PDE, each of shape (batch,) or a scalar.

    Raises:
        BlowUpError: non-finite values or a CFL violation, naming the batch rows.
    """
    coeffs = {
        k: torch.as_tensor(np.asarray(v), dtype=torch.float64) for k, v in coefficients.items()
    }
    kwargs = dict(length=length, device=device, dtype=dtype, **coeffs)
    if entry.stationary:
        return entry.cls(n, **kwargs).rollout(u0.to(device=device, dtype=dtype), 1, 1)
    pde = entry.cls(n, dt=dt, **kwargs)
    if entry.dim == 1:
        return pde.rollout(u0[:, 0], n_frames, steps_per_frame)[:, :, None]
    return pde.rollout(u0.to(device=device, dtype=dtype), n_frames, steps_per_frame)


def initial_condition_options(entry: PdeEntry) -> list[str]:
    """Keyword options of a PDE's own ``initial_condition`` (kind ``pde``), coefficients aside."""
    if not hasattr(entry.cls, "initial_condition"):
        return []
    params = inspect.signature(entry.cls.initial_condition).parameters
    skip = {"n", "length", "seeds", "dtype", "device", *entry.parameter_names}
    return [k for k, p in params.items() if p.kind is p.KEYWORD_ONLY and k not in skip]


def pde_initial_state(
    entry: PdeEntry,
    n: int,
    length: float,
    seeds: np.ndarray,
    coefficients: Mapping[str, np.ndarray],
    options: Mapping[str, object],
    *,
    dtype: torch.dtype,
    device: torch.device,
) -> torch.Tensor:
    """The PDE's own initial states (kind ``pde``), shape (batch, channel, *space).

    Coefficients the initial state depends on (the shallow-water dam radius) are passed on, so
    a sample's state matches its recorded coefficients; ``options`` are the config's
    ``initial_condition.options`` (e.g. Darcy's permeability ``levels``). Nothing here mixes
    samples, and every ``initial_condition`` builds sample ``i`` from ``seeds[i]`` (and its own
    coefficients) alone, so a sample is bitwise the same in any batch.
    """
    params = inspect.signature(entry.cls.initial_condition).parameters
    used = {k: np.asarray(v) for k, v in coefficients.items() if k in params}
    return entry.cls.initial_condition(
        n, length, seeds, dtype=dtype, device=device, **used, **dict(options)
    )


def _check_coefficients(gen, entry: PdeEntry) -> None:
    valid = entry.parameter_names
    sampled = gen.coefficient_specs
    fixed = sorted(set(sampled) & set(entry.batch_constants))
    if fixed:
        raise ValueError(
            f"parameters: {fixed} of {entry.name} take one value per run; set them under constants"
        )
    for where, names in (("parameters", sampled), ("constants", gen.constants)):
        unknown = sorted(set(names) - set(valid))
        if unknown:
            raise ValueError(
                f"{where}: {entry.name} has no coefficient {unknown}; valid: {list(valid)}"
            )
    both = sorted(set(sampled) & set(gen.constants))
    if both:
        raise ValueError(f"{both} are both sampled (parameters) and fixed (constants)")
    missing = [
        n
        for n in valid
        if n not in sampled and n not in gen.constants and n not in entry.batch_constants
    ]
    if missing:
        raise ValueError(f"{entry.name} needs {missing} in parameters or constants")
    for name, spec in sampled.items():
        _check_range(entry, f"parameters.{name}", name, spec.low, spec.high)
    for name, value in gen.constants.items():
        _check_range(entry, f"constants.{name}", name, value, value)


def _check_range(entry: PdeEntry, field_name: str, name: str, low: float, high: float) -> None:
    lo, hi = entry.parameter_ranges[name]
    if low < lo or high > hi:
        raise ValueError(
            f"{field_name}: [{low:g}, {high:g}] is outside the valid range [{lo:g}, {hi:g}] "
            f"of {name} for {entry.name}"
        )


def _check_initial_condition(gen, entry: PdeEntry) -> None:
    ic = gen.initial_condition
    if ic.kind == "pde" and not hasattr(entry.cls, "initial_condition"):
        raise ValueError(
            f"initial_condition.kind: {entry.name} has no initial state of its own; "
            "use modes, fourier, grf or steps"
        )
    if ic.kind != "pde" and (len(entry.fields) > 1 or entry.stationary):
        raise ValueError(
            f"initial_condition.kind: {entry.name} has fields {list(entry.fields)}"
            f"{' and is stationary' if entry.stationary else ''}; only kind 'pde' applies"
        )
    if ic.options and ic.kind != "pde":
        raise ValueError("initial_condition.options apply to kind 'pde' only")
    unknown = sorted(set(ic.options) - set(initial_condition_options(entry)))
    if unknown:
        raise ValueError(
            f"initial_condition.options: {entry.name} has no option {unknown}; valid: "
            f"{initial_condition_options(entry)}"
        )
    if ic.kind == "modes" and max(ic.modes) > gen.n_x // 3:
        raise ValueError(
            f"initial_condition.modes must be <= n_x/3 = {gen.n_x // 3} to be resolved"
        )


def check_pde(gen) -> None:
    """Cross-field checks of a built-in PDE's generate config; ValueError naming the field."""
    if gen.simulator is not None:
        raise ValueError("simulator is only used with pde: custom")
    entry = gen.entry
    _check_coefficients(gen, entry)
    _check_initial_condition(gen, entry)
    if entry.stationary:
        return
    ranges = {k: (s.low, s.high) for k, s in gen.coefficient_specs.items()}
    ranges.update({k: (v, v) for k, v in gen.constants.items()})
    limit = entry.stable_dt(gen.n_x, gen.domain_length, gen.u_max, ranges)
    if gen.dt > limit:
        bound = "" if gen.u_max is None else f" and max|u0|={gen.u_max:g}"
        raise ValueError(
            f"dt={gen.dt:g} exceeds the stability limit {limit:.4g} of the {entry.name} "
            f"solver for n_x={gen.n_x}, length={gen.domain_length:g}{bound}"
        )
