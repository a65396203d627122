"""Stage 2's config: the surrogate, how it is trained, and the training units it plans.

One model trained with one config is one *unit*: the single default model, a member of an
ensemble (``ensemble: K``, seeds ``seed .. seed + K - 1``) or a point of a sweep (``sweep``).
Units run as Dask tasks on the cluster's workers (``pdeflow.tasks.stages.train``). The registry
of architectures is ``pdeflow.tasks.surrogates.zoo.MODELS``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from pdeflow.tasks.config_form import _Frozen

__all__ = ["SweepConfig", "TrainConfig", "Unit", "plan_units"]

# The names of pdeflow.tasks.surrogates.zoo.MODELS (a test checks that the two agree), auto,
# and the FNO's old names per dimension.
SurrogateName = Literal[
    "auto", "fno", "unet", "transformer", "deeponet", "fno1d", "fno2d", "fno3d"
]  # fmt: skip
# Settings added with the model zoo and the training units (see TrainConfig.identity).
ADDED_WITH_UNITS = (
    "factorization", "factor_rank", "history", "pushforward", "noise_std", "ensemble", "sweep",
    "data_parallel",
)  # fmt: skip
# The fields a sweep may vary, and the type each value must have.
SWEEPABLE: dict[str, type] = {
    "surrogate": str,
    "width": int,
    "modes": int,
    "n_layers": int,
    "lr": float,
    "weight_decay": float,
    "batch_size": int,
    "history": int,
    "pushforward": int,
    "noise_std": float,
    "factorization": str,
}


class SweepConfig(_Frozen):
    """A hyperparameter search: every trial is one training unit on the cluster."""

    method: Literal["off", "grid", "random", "optuna"] = Field(
        "off",
        description="off: no sweep; grid: every combination of values; random: n_trials "
        "distinct draws from them (and from ranges); optuna: a TPE study of n_trials, asked in "
        "parallel rounds.",
    )
    values: dict[str, list[float | int | str]] = Field(
        default_factory=dict,
        description="Field -> the values to try, e.g. {width: [16, 32], lr: [0.001, 0.003]}.",
    )
    ranges: dict[str, tuple[float, float]] = Field(
        default_factory=dict,
        description="random and optuna: field -> (low, high), drawn log-uniformly, e.g. "
        "{lr: [0.0001, 0.01]}.",
    )
    n_trials: int = Field(8, ge=1, le=10_000, description="Trials of random and optuna.")
    seed: int = Field(0, ge=0, description="Seed of the random draws and of Optuna's sampler.")

    @property
    def active(self) -> bool:
        return self.method != "off"

    @model_validator(mode="after")
    def _check(self) -> SweepConfig:
        if not self.active:
            if self.values or self.ranges:
                raise ValueError(
                    "train.sweep.method: off runs no sweep; set method grid, random or optuna "
                    "to search over the values and ranges given"
                )
            return self
        for name in (*self.values, *self.ranges):
            if name not in SWEEPABLE:
                raise ValueError(
                    f"train.sweep: {name!r} cannot be swept; valid: {', '.join(SWEEPABLE)}"
                )
        for name, options in self.values.items():
            if not options:
                raise ValueError(f"train.sweep.values.{name}: give at least one value")
        for name, (low, high) in self.ranges.items():
            if SWEEPABLE[name] is not float or not 0 < low < high:
                floats = ", ".join(k for k, t in SWEEPABLE.items() if t is float)
                raise ValueError(
                    f"train.sweep.ranges.{name}: a range is (low, high) with 0 < low < high, "
                    f"for a float field ({floats})"
                )
        overlap = set(self.values) & set(self.ranges)
        if overlap:
            raise ValueError(f"train.sweep: {sorted(overlap)} given as both values and a range")
        if not self.values and not self.ranges:
            raise ValueError("train.sweep: name at least one field in values or ranges")
        if self.method == "grid" and self.ranges:
            raise ValueError("train.sweep.ranges: a grid takes values only; use random or optuna")
        return self


class TrainConfig(_Frozen):
    """Stage 2: train neural surrogates to advance the state by one saved frame."""

    surrogate: SurrogateName = Field(
        "auto",
        description="Architecture: fno, unet, transformer (Galerkin attention) or deeponet; "
        "auto: the FNO. fno1d/fno2d/fno3d are the FNO's old names.",
    )
    width: int = Field(
        32,
        ge=4,
        le=1024,
        description="Channels of the hidden layers (FNO, U-Net); the transformer is built 2x "
        "and DeepONet 8x as wide, sizes of comparable accuracy.",
    )
    modes: int = Field(16, ge=1, le=4096, description="Fourier modes kept per spectral layer.")
    n_layers: int = Field(4, ge=1, le=32, description="Number of layers (blocks).")
    factorization: Literal["none", "tucker", "cp"] = Field(
        "none", description="FNO: low-rank spectral weights (TFNO), for 3D memory."
    )
    factor_rank: float = Field(
        0.25, gt=0, le=1, description="TFNO: the factors' size as a fraction of the full weights."
    )
    history: int = Field(
        1, ge=1, le=64, description="Input frames per prediction (PDEBench's initial_step)."
    )
    pushforward: int = Field(
        1, ge=1, le=32, description="Unrolled steps per loss, gradient through the last only."
    )
    noise_std: float = Field(
        0.0, ge=0, le=1, description="Training noise on the input frames, per field std."
    )
    epochs: int = Field(20, ge=1, le=100_000, description="Training epochs.")
    batch_size: int = Field(64, ge=1, le=65_536, description="Training windows per minibatch.")
    lr: float = Field(3e-3, gt=0, le=1.0, description="Peak learning rate of AdamW.")
    weight_decay: float = Field(1e-5, ge=0, le=1.0, description="AdamW weight decay.")
    shuffle_chunks: int = Field(
        8, ge=1, le=4096, description="Zarr chunks held in memory and shuffled together."
    )
    seed: int = Field(0, ge=0, description="Seed of initialisation and shuffling.")
    device: Literal["cpu", "cuda"] = Field("cpu", description="Device used for training.")
    ensemble: int = Field(
        1, ge=1, le=256, description="Members trained with seeds seed..seed+K-1, in parallel."
    )
    data_parallel: int = Field(
        1,
        ge=1,
        le=1024,
        description=(
            "Workers that train the model together (torch DDP, each on a share of every "
            "batch: gloo on cpu, nccl on cuda); 1 trains it on one worker."
        ),
    )
    # Not nullable: Prefect's form renders an optional nested model as a "None" tab.
    sweep: SweepConfig = Field(
        SweepConfig(),
        description="A hyperparameter search; the best trial by validation nRMSE is kept.",
    )

    @model_validator(mode="after")
    def _one_kind_of_units(self) -> TrainConfig:
        if self.sweep.active and self.ensemble > 1:
            raise ValueError(
                "train.ensemble and train.sweep: choose one (sweep first, then train an "
                "ensemble of the best trial's settings)"
            )
        if self.data_parallel > 1 and (self.sweep.active or self.ensemble > 1):
            what = "train.sweep" if self.sweep.active else f"train.ensemble={self.ensemble}"
            raise ValueError(
                f"train.data_parallel={self.data_parallel} trains one model on several workers "
                f"and {what} trains several models side by side: choose one (data_parallel 1, "
                "or no ensemble and no sweep)"
            )
        return self

    def identity(self) -> dict:
        """The settings naming the stage's results: the fields added with the training units
        are left out while at their defaults, so stores trained before keep their names."""
        out = self.model_dump(mode="json")
        defaults = type(self)()
        for name in ADDED_WITH_UNITS:
            if getattr(self, name) == getattr(defaults, name):
                out.pop(name)
        return out


@dataclass(frozen=True)
class Unit:
    """One model to train: its name (the checkpoint directory), seed and setting overrides."""

    name: str
    seed: int
    overrides: dict[str, Any] = field(default_factory=dict)

    def config(self, tc: TrainConfig) -> TrainConfig:
        """The unit's own train config: ``tc`` with its seed and overrides, and no units."""
        return tc.model_copy(
            update={**self.overrides, "seed": self.seed, "ensemble": 1, "sweep": SweepConfig()}
        )


def plan_units(tc: TrainConfig) -> list[Unit]:
    """The units of a train config, in a fixed order.

    The default is one unit, ``model``. ``ensemble: K`` gives ``member-00 ..``; a grid sweep
    gives every combination (``trial-000 ..``) and a random one ``n_trials`` distinct draws, all
    seeded by ``sweep.seed``. Optuna's trials are planned while the study runs (their settings
    depend on the results so far), so here they are only named; see ``train.optuna_trials``.
    """
    if not tc.sweep.active:
        if tc.ensemble == 1:
            return [Unit("model", tc.seed)]
        return [Unit(f"member-{k:02d}", tc.seed + k) for k in range(tc.ensemble)]
    sw = tc.sweep
    if sw.method == "grid":
        names = list(sw.values)
        combos = list(itertools.product(*(sw.values[n] for n in names)))
        points = [dict(zip(names, c, strict=True)) for c in combos]
    elif sw.method == "random":
        points = random_points(sw)
    else:
        points = [{} for _ in range(sw.n_trials)]
    return [Unit(f"trial-{i:03d}", tc.seed, _typed(p)) for i, p in enumerate(points)]


def random_points(sw: SweepConfig) -> list[dict]:
    """``n_trials`` draws: each value list uniformly, each range log-uniformly (duplicates of
    a finite grid are drawn again, up to its size)."""
    rng = np.random.default_rng(sw.seed)
    size = int(np.prod([len(v) for v in sw.values.values()])) if not sw.ranges else None
    n = sw.n_trials if size is None else min(sw.n_trials, size)
    seen: set[tuple] = set()
    points: list[dict] = []
    while len(points) < n:
        point = {k: v[int(rng.integers(len(v)))] for k, v in sw.values.items()}
        for k, (low, high) in sw.ranges.items():
            point[k] = float(np.exp(rng.uniform(np.log(low), np.log(high))))
        key = tuple(sorted(point.items()))
        if key not in seen:
            seen.add(key)
            points.append(point)
    return points


def _typed(point: dict) -> dict:
    """A sweep point with each value of its field's type (YAML gives 1 for 1.0 and such)."""
    return {k: SWEEPABLE[k](v) for k, v in point.items()}
