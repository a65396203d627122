"""Configuration of a pdeflow run: one frozen pydantic model per stage and one for the pipeline.

The same models are read from YAML, overridden from the command line (``--set a.b=value``) and
used as the Prefect flows' parameters, so the Prefect UI renders them as forms. Every field has a
description with its unit or range and a constraint. Cross-field rules (block alignment, the
solver's stability limit) are model validators: they run before any compute.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from pdeflow.tasks.clusters import ClusterConfig
from pdeflow.tasks.config_campaign import CampaignConfig
from pdeflow.tasks.config_form import _Frozen
from pdeflow.tasks.config_infer import InferConfig
from pdeflow.tasks.config_io import (
    ConfigError,
    format_validation_error,
    read_yaml,
    set_dotted,
    yaml_problem,
)
from pdeflow.tasks.config_reduce import ReduceConfig
from pdeflow.tasks.config_train import TrainConfig
from pdeflow.tasks.custom import SimulatorConfig
from pdeflow.tasks.pdes import PDES
from pdeflow.tasks.pdes.base import Grid
from pdeflow.tasks.presets import PRESETS, apply_preset
from pdeflow.tasks.problems import problem_for
from pdeflow.tasks.sampling import DESIGNS, split_codes

# Literal types are built from the registries so the UI shows dropdowns and errors list names.
# "custom" is a simulator of the user's own (see SimulatorConfig).
GENERATE_PDES = (*PDES, "custom")
PdeName = Literal[GENERATE_PDES]  # type: ignore[valid-type]
PresetName = Literal[tuple(PRESETS)]  # type: ignore[valid-type]
DesignName = Literal[DESIGNS]  # type: ignore[valid-type]

_STORE_NAME = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")


class ParameterSpec(_Frozen):
    """Marginal distribution of one sampled parameter."""

    distribution: Literal["uniform", "loguniform"] = Field(
        "uniform", description="Marginal: uniform on [low, high], or log-uniform (needs low > 0)."
    )
    low: float = Field(description="Lower bound, in the parameter's unit.")
    high: float = Field(description="Upper bound, in the parameter's unit; must exceed low.")

    @model_validator(mode="after")
    def _check_bounds(self) -> ParameterSpec:
        if not self.high > self.low:
            raise ValueError(f"high must exceed low (got low={self.low}, high={self.high})")
        if self.distribution == "loguniform" and self.low <= 0:
            raise ValueError(f"loguniform needs low > 0 (got low={self.low})")
        return self


class SplitConfig(_Frozen):
    """Seeded split of the samples into train / validation / test / calibration sets."""

    train: float = Field(0.6, gt=0, lt=1, description="Fraction of samples for training, (0, 1).")
    val: float = Field(0.1, ge=0, lt=1, description="Fraction for validation, [0, 1).")
    test: float = Field(0.15, gt=0, lt=1, description="Fraction for testing, (0, 1).")
    calibration: float = Field(
        0.15, gt=0, lt=1, description="Fraction for conformal calibration, (0, 1)."
    )
    seed: int = Field(0, ge=0, description="Seed of the random assignment of samples to splits.")

    @model_validator(mode="after")
    def _check_sum(self) -> SplitConfig:
        total = self.train + self.val + self.test + self.calibration
        if not math.isclose(total, 1.0, abs_tol=1e-9):
            raise ValueError(f"train + val + test + calibration must equal 1 (got {total:g})")
        return self


class InitialConditionConfig(_Frozen):
    """How each sample's initial state is drawn."""

    kind: Literal["modes", "fourier", "grf", "steps", "pde"] = Field(
        "modes",
        description="modes: u0 = sum_k a_k sin(2 pi k x / L) (times sin(2 pi k y / L) in 2D) with "
        "the amplitudes a_k sampled as design parameters; fourier: random sine waves; grf: "
        "Gaussian random field; steps: random steps (1D) or a thresholded field (2D); these "
        "three are drawn from each sample's seed. pde: the PDE's own initial state (needed for "
        "multi-field PDEs and Darcy).",
    )
    modes: tuple[int, ...] = Field(
        (1, 2, 3),
        min_length=1,
        max_length=32,
        description="kind modes: the wavenumbers k (distinct positive integers).",
    )
    amplitude: ParameterSpec = Field(
        ParameterSpec(distribution="uniform", low=-1.0, high=1.0),
        description="kind modes: marginal of every a_k; fourier: range of the wave amplitudes; "
        "steps: range of the levels (field units).",
    )
    n_waves: int = Field(2, ge=1, le=64, description="kind fourier: waves per sample.")
    k_max: int = Field(4, ge=1, le=1024, description="kind fourier: largest wavenumber.")
    alpha: float = Field(2.0, gt=0, le=20, description="kind grf: spectral decay exponent.")
    tau: float = Field(3.0, ge=0, le=1e3, description="kind grf: inverse length scale.")
    sigma: float = Field(1.0, gt=0, le=1e6, description="kind grf: amplitude (field units).")
    n_steps: int = Field(4, ge=1, le=1024, description="kind steps: breakpoints (1D).")
    rescale: Literal["none", "unit"] = Field(
        "none", description="unit: map each sample's u0 onto [0, 1] (densities, Fisher-KPP)."
    )
    options: dict[str, float | str | list[float]] = Field(
        {},
        description="kind pde: keyword options of the PDE's own initial state, e.g. Darcy's "
        "permeability levels [low, high] or coefficient 'piecewise' / 'lognormal'.",
    )

    @field_validator("modes")
    @classmethod
    def _positive_modes(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if any(k < 1 for k in v) or len(set(v)) != len(v):
            raise ValueError(f"must be distinct positive integers (got {list(v)})")
        return v


class GenerateConfig(_Frozen):
    """Stage 1: sample parameters, solve the PDE in blocks, write the run's Zarr store.

    The grid, domain, horizon, step, frames and initial state default to the PDE's own
    (``pdeflow list pdes``): ``{pde: NAME, n_samples: 16, design: random}`` runs for every
    registered PDE. An explicit value wins and is checked the same way.
    """

    preset: PresetName | None = Field(
        None,
        description="Named preset (pdeflow list presets) whose settings fill every field "
        "this config leaves out.",
    )
    pde: PdeName = Field(
        "burgers", description="PDE to solve, by registry name (pdeflow list pdes)."
    )
    design: DesignName = Field("sobol", description="Sampling design of the parameters.")
    seed: int = Field(0, ge=0, description="Seed of the design and of every per-sample seed.")
    n_samples: int = Field(512, ge=8, le=10_000_000, description="Number of trajectories.")
    chunk_size: int = Field(16, ge=1, le=65_536, description="Samples per Zarr chunk.")
    block_size: int = Field(
        64,
        ge=1,
        le=1_000_000,
        description="Samples solved as one batch by one Dask task; "
        "a whole multiple of chunk_size so every writer owns whole chunks.",
    )
    grid: tuple[int, ...] | None = Field(
        None,
        min_length=1,
        max_length=3,
        description="Grid points per spatial axis, e.g. [128] or [64, 64]; one value applies "
        "to every axis; default: the PDE's own.",
    )
    n_x: int | None = Field(
        None,
        ge=8,
        le=65_536,
        description="Alias of grid: n_x N means N points on every axis (grid [N] in 1D, [N, N] "
        "in 2D, [N, N, N] in 3D). Give grid or n_x, not both.",
    )
    length: float | None = Field(
        None,
        gt=0,
        le=1e6,
        description="Domain side length L on every axis; default: the PDE's own.",
    )
    t_end: float | None = Field(
        None,
        ge=0,
        le=1e6,
        description="Final time of every trajectory (> 0; 0 for a steady PDE); default: the "
        "PDE's own.",
    )
    n_frames: int | None = Field(
        None, ge=1, le=100_000, description="Saved frames, t = 0 included; default: the PDE's own."
    )
    dt: float | None = Field(
        None,
        gt=0,
        le=10.0,
        description="Largest internal time step; the solver takes the smallest number of equal "
        "steps per saved frame that keeps the step at most dt; default: the PDE's own.",
    )
    parameters: dict[str, ParameterSpec] | None = Field(
        None,
        description="Marginal of each sampled PDE coefficient (e.g. nu); default: the PDE's "
        "own ranges for every coefficient not in constants.",
    )
    constants: dict[str, float] = Field(
        {}, description="PDE coefficients held fixed for every sample (not sampled)."
    )
    initial_condition: InitialConditionConfig | None = Field(
        None, description="Initial states; default: the PDE's own family (none for pde custom)."
    )
    solver_options: dict[str, float | int | str | bool] = Field(
        {},
        description="Keyword options of the PDE's solver (pdeflow list pdes shows each PDE's), "
        "e.g. boundary: outflow for compressible_euler_1d, method: cg for darcy_2d.",
    )
    simulator: SimulatorConfig | None = Field(
        None, description="pde 'custom' only: your own simulator (Python callable or executable)."
    )
    split: SplitConfig = Field(SplitConfig(), description="Split of samples into subsets.")
    points: tuple[tuple[float, ...], ...] = Field(
        (),
        description="Chosen points of the unit cube (one coordinate per sampled parameter, "
        "through its marginal's CDF), solved as the last samples, after the design's "
        "n_samples - len(points); all in the train split. pdeflow run campaign appends them.",
    )
    dtype: Literal["float32", "float64"] = Field("float32", description="Solver precision.")
    device: Literal["cpu", "cuda"] = Field("cpu", description="Device the solver runs on.")

    @model_validator(mode="before")
    @classmethod
    def _fill_defaults(cls, data: Any) -> Any:
        """Apply the preset, then the PDE's own defaults to every setting left out."""
        if not isinstance(data, dict):
            return data
        if data.get("preset") is not None:
            data = apply_preset(data)
        return own_defaults(data)

    @field_validator("grid")
    @classmethod
    def _positive_grid(cls, v: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if v is not None and any(n < 1 for n in v):
            raise ValueError(f"points per axis must be >= 1 (got {list(v)})")
        return v

    @model_validator(mode="after")
    def _check_consistency(self) -> GenerateConfig:
        if self.block_size % self.chunk_size:
            raise ValueError(
                f"block_size ({self.block_size}) must be a whole multiple of chunk_size "
                f"({self.chunk_size}) so that each block writes whole chunks"
            )
        if not self.problem.stationary and (self.n_frames < 2 or self.t_end <= 0):
            raise ValueError(
                f"n_frames must be >= 2 and t_end > 0 for the time-dependent {self.pde} "
                f"(got n_frames={self.n_frames}, t_end={self.t_end:g})"
            )
        self.problem.check(self)
        self._check_points()
        return self

    def _check_points(self) -> None:
        if not self.points:
            return
        d = len(self.parameter_names)
        if len(self.points) >= self.n_samples:
            raise ValueError(
                f"points: {len(self.points)} chosen points need n_samples > {len(self.points)} "
                f"(the design's samples come first; got n_samples={self.n_samples})"
            )
        for k, point in enumerate(self.points):
            if len(point) != d or not all(0.0 < v < 1.0 for v in point):
                raise ValueError(
                    f"points[{k}]: must hold {d} numbers in (0, 1), one per parameter "
                    f"{list(self.parameter_names)} (got {list(point)})"
                )

    @property
    def n_design(self) -> int:
        """Samples drawn from the design; the chosen ``points`` follow them."""
        return self.n_samples - len(self.points)

    def identity(self) -> dict:
        """The settings naming the results: ``points`` left out while empty, so stores made
        before it existed keep their names."""
        out = self.model_dump(mode="json")
        if not out["points"]:
            out.pop("points")
        return out

    @property
    def problem(self):
        """The problem (``pdeflow.tasks.problems``): a registered PDE or the user's simulator."""
        return problem_for(self.pde, self.simulator)

    @property
    def grid_spec(self) -> Grid:
        """Points and side per axis."""
        return Grid(self.grid, (self.domain_length,) * len(self.grid))

    @property
    def domain_length(self) -> float:
        return self.length

    @property
    def dim(self) -> int:
        return len(self.grid)

    @property
    def fields(self) -> tuple[str, ...]:
        return self.problem.fields

    @property
    def coefficient_specs(self) -> dict[str, ParameterSpec]:
        """Sampled PDE coefficients and their marginals, in the PDE's order."""
        if self.parameters is not None:
            return dict(self.parameters)
        return {
            name: ParameterSpec(distribution=d, low=lo, high=hi)
            for name, (d, lo, hi) in self.problem.info.default_parameters.items()
            if name not in self.constants
        }

    @property
    def sampled_specs(self) -> dict[str, ParameterSpec]:
        """Every design dimension: coefficients, then mode amplitudes ``a<k>``."""
        specs = self.coefficient_specs
        ic = self.initial_condition
        if ic is not None and ic.kind == "modes":
            specs.update({f"a{k}": ic.amplitude for k in ic.modes})
        return specs

    @property
    def modes(self) -> tuple[int, ...]:
        return () if self.initial_condition is None else self.initial_condition.modes

    @property
    def u_max(self) -> float | None:
        """Bound on max|u0| when the initial family gives one (used for the stable step)."""
        ic = self.initial_condition
        if ic is None:
            return None
        bound = max(abs(ic.amplitude.low), abs(ic.amplitude.high))
        if ic.kind == "modes":
            return bound * len(ic.modes)
        if ic.kind == "fourier":
            return 1.0 if ic.rescale == "unit" else bound * ic.n_waves
        if ic.kind == "steps":
            return bound
        return None

    @property
    def parameter_names(self) -> list[str]:
        return list(self.sampled_specs)

    @property
    def parameter_specs(self) -> list[ParameterSpec]:
        return list(self.sampled_specs.values())

    @property
    def steps_per_frame(self) -> int:
        if self.n_frames < 2:
            return 1
        return max(1, math.ceil(self.t_end / (self.n_frames - 1) / self.dt - 1e-9))

    @property
    def internal_dt(self) -> float:
        """The solver's step: the save interval split into ``steps_per_frame`` equal steps."""
        if self.n_frames < 2:
            return self.dt
        return self.t_end / (self.n_frames - 1) / self.steps_per_frame

    @property
    def n_blocks(self) -> int:
        return -(-self.n_samples // self.block_size)

    def resolution_warnings(self) -> list[str]:
        """Warnings (not errors) about a grid too coarse for the sampled coefficients."""
        return self.problem.resolution_warnings(self)


def own_defaults(data: dict) -> dict:
    """``data`` (a generate section) with the PDE's own settings for every one left out.

    ``n_x`` is an alias: it becomes ``grid`` (the same count on every axis) and is cleared.
    """
    data = dict(data)
    pde = data.get("pde", "burgers")
    try:
        problem = problem_for(pde, _simulator(data.get("simulator")))
    except (ValueError, TypeError):
        return data  # the field validators name the bad pde or simulator
    own = problem.defaults()
    n_x = data.pop("n_x", None)
    if n_x is not None:
        if data.get("grid") is not None:
            raise ValueError("give generate.grid or its alias generate.n_x, not both")
        data["grid"] = (n_x,)
    grid = data.get("grid")
    if grid is None:
        data["grid"] = own["grid"]
    elif isinstance(grid, list | tuple) and len(grid) == 1 and problem.dim > 1:
        data["grid"] = tuple(grid) * problem.dim
    for key in ("length", "t_end", "n_frames", "dt", "initial_condition"):
        if data.get(key) is None and key in own:
            data[key] = own[key]
    return data


def _simulator(raw: Any) -> SimulatorConfig | None:
    if raw is None or isinstance(raw, SimulatorConfig):
        return raw
    return SimulatorConfig.model_validate(raw)


class QuantifyConfig(_Frozen):
    """Stage 4: Monte Carlo propagation, split-conformal bands and Sobol indices."""

    n_mc: int = Field(256, ge=8, le=10_000_000, description="Monte Carlo samples.")
    seed: int = Field(1, ge=0, description="Seed of the Monte Carlo and Saltelli designs.")
    quantiles: tuple[float, ...] = Field(
        (0.05, 0.25, 0.5, 0.75, 0.95), min_length=1, description="QoI quantiles, each in (0, 1)."
    )
    alpha: float = Field(0.1, gt=0, lt=1, description="Conformal miscoverage; bands at 1-alpha.")
    n_resplits: int = Field(
        100, ge=1, le=100_000, description="Random calibration/test re-splits for coverage."
    )
    sobol_n_base: int = Field(
        256, ge=8, le=1_048_576, description="Saltelli base sample size (a power of 2)."
    )
    morris_trajectories: int = Field(
        0,
        ge=0,
        le=100_000,
        description="Morris screening of the QoI on the surrogate and the ROM: trajectories r "
        "(0 = off, else >= 2; r (d + 1) runs per model).",
    )
    field_sobol: bool = Field(
        False,
        description="Sobol index maps (S1, ST at every grid point and saved time) from the "
        "surrogate and the ROM, on a Saltelli design of sobol_n_base base rows.",
    )
    pce_degree_max: int = Field(
        0,
        ge=0,
        le=8,
        description="Polynomial chaos of the QoI on the surrogate and the ROM: largest degree "
        "tried by cross-validation (0 = off, else 1 to 8).",
    )
    mfmc_budget: int = Field(
        0,
        ge=0,
        le=1_000_000,
        description="Multifidelity Monte Carlo of the QoI's mean (solver, ROM, surrogate): "
        "budget in solver evaluations at the measured costs (0 = off, else 8 to 1e6).",
    )

    @field_validator("quantiles")
    @classmethod
    def _unit_quantiles(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if any(not 0 < q < 1 for q in v):
            raise ValueError(f"each quantile must lie in (0, 1) (got {list(v)})")
        return v

    @field_validator("sobol_n_base")
    @classmethod
    def _power_of_two(cls, v: int) -> int:
        if v & (v - 1):
            raise ValueError(f"must be a power of 2 for the Sobol sequence (got {v})")
        return v

    @field_validator("morris_trajectories")
    @classmethod
    def _morris_paths(cls, v: int) -> int:
        if v == 1:
            raise ValueError("must be 0 (off) or >= 2: the spread of the effects needs two (got 1)")
        return v

    @field_validator("mfmc_budget")
    @classmethod
    def _mfmc_budget(cls, v: int) -> int:
        if 0 < v < 8:
            raise ValueError(
                f"must be 0 (off) or between 8 and 1000000 solver evaluations (got {v}): "
                "the plain Monte Carlo estimate it is compared with needs 8 runs or more"
            )
        return v

    def identity(self) -> dict:
        """The settings naming the stage's results: the sensitivity options are left out while
        off, so stores quantified before they existed keep their names."""
        out = self.model_dump(mode="json")
        for name in SENSITIVITY_OPTIONS:
            if not out[name]:
                out.pop(name)
        if not out["mfmc_budget"]:  # off: likewise left out
            out.pop("mfmc_budget")
        return out


# Opt-in quantify steps added after stores existed (see ``QuantifyConfig.identity``).
SENSITIVITY_OPTIONS = ("morris_trajectories", "field_sobol", "pce_degree_max")


class PipelineConfig(_Frozen):
    """A whole run: where it is stored, where it computes, and the four stages."""

    store: str = Field(
        "demo", description="Store name under the runs directory (letters, digits, . _ - /)."
    )
    cluster: ClusterConfig = Field(ClusterConfig(), description="Dask cluster settings.")
    generate: GenerateConfig = Field(GenerateConfig(), description="Data generation.")
    train: TrainConfig = Field(TrainConfig(), description="Surrogate training.")
    reduce: ReduceConfig = Field(ReduceConfig(), description="Reduced-order model.")
    quantify: QuantifyConfig = Field(QuantifyConfig(), description="Uncertainty quantification.")
    infer: InferConfig = Field(
        InferConfig(), description="Bayesian inversion from observations (pdeflow run infer)."
    )
    campaign: CampaignConfig = Field(
        CampaignConfig(), description="Active learning over the design (pdeflow run campaign)."
    )

    @field_validator("store")
    @classmethod
    def _safe_store(cls, v: str) -> str:
        if not _STORE_NAME.match(v) or any(part in (".", "..") for part in v.split("/")):
            raise ValueError(
                f"must be a relative name under the runs directory without '..' (got {v!r})"
            )
        return v

    @model_validator(mode="after")
    def _check_cross_stage(self) -> PipelineConfig:
        n = min(self.generate.grid)
        if self.train.modes > n // 2 + 1:
            raise ValueError(f"train.modes ({self.train.modes}) must be <= grid/2+1 = {n // 2 + 1}")
        return self

    def check_stages(self, stages: tuple[str, ...] | list[str]) -> None:
        """What ``stages`` need of the data, checked before any of them computes.

        Not checked when the config loads: a config that cannot feed the ROM or the conformal
        step still generates and trains.

        Raises:
            ValueError: reduce or quantify without sampled parameters (the ROM regresses on
                them, Sobol attributes variance to them), or too few samples in a split for
                quantify; the message names the fields.
        """
        if {"reduce", "quantify"} & set(stages) and not self.generate.parameter_names:
            raise ValueError(
                "generate.parameters: reduce and quantify need sampled parameters (the ROM "
                "regresses on them, Sobol indices attribute variance to them) and this config "
                "samples none; sample at least one coefficient, or run generate and train only"
            )
        if "quantify" in stages:
            self._check_splits(("train", "val", "test", "calibration"))
        elif {"train", "reduce"} & set(stages):
            # Both fit on the training split and report held-out errors on the test split.
            self._check_splits(("train", "test"))

    def _check_splits(self, needed: tuple[str, ...]) -> None:
        """Enough samples in each split for training, the conformal scale and its guarantee."""
        gen, alpha = self.generate, self.quantify.alpha
        sp = gen.split
        # Chosen points are all in the train split: the design's samples hold the others.
        codes = split_codes((sp.train, sp.val, sp.test, sp.calibration), sp.seed, 0, gen.n_design)
        names = ("train", "val", "test", "calibration")
        counts = dict(zip(names, np.bincount(codes, minlength=4), strict=True))
        empty = [name for name in needed if counts[name] == 0]
        if empty:
            raise ValueError(
                f"generate.split: {empty} get no sample of generate.n_samples={gen.n_samples}; "
                "raise n_samples or those fractions"
            )
        if "calibration" not in needed:
            return
        # Split conformal needs the rank ceil((n_cal + 1)(1 - alpha)) <= n_cal (Lei et al. 2018).
        need = math.ceil((1 - alpha) / alpha - 1e-9)
        if counts["calibration"] < need:
            raise ValueError(
                f"generate.split.calibration gives {counts['calibration']} calibration samples of "
                f"{gen.n_samples}; quantify.alpha={alpha:g} needs at least {need} "
                "(raise n_samples or split.calibration, or quantify.alpha)"
            )


def _identity(model: BaseModel) -> dict:
    return model.identity() if isinstance(model, _Frozen) else model.model_dump(mode="json")


def config_hash(*parts: BaseModel | dict) -> str:
    """Content hash of configs: the same settings always name the same artifacts."""
    payload = [_identity(p) if isinstance(p, BaseModel) else p for p in parts]
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def load_config(
    path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> PipelineConfig:
    """Read a pipeline config from YAML and apply ``key.sub=value`` overrides.

    Args:
        path: YAML file; None starts from the defaults.
        overrides: strings ``dotted.key=value``; values are parsed as YAML scalars or lists.

    Raises:
        ConfigError: unreadable, binary or malformed file, malformed override, unknown key, or
            invalid value (out of range, NaN or infinite), with one line per problem naming the
            file or the field.
    """
    data = read_yaml(Path(path)) if path is not None else {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value (got {item!r})")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as err:
            raise ConfigError(
                f"--set {item}: {raw!r} is not a YAML value ({yaml_problem(err)})"
            ) from None
        set_dotted(data, key.strip(), value)
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err)) from None
