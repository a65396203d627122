"""The reduce stage's methods, adapted to the run store: fit, held-out evaluation, save, restore.

Each method's numerical core (``pdeflow.tasks.rom``) is a scikit-learn style estimator that never
sees the store. An adapter here gives it what it needs (the out-of-core POD, the training
trajectories, the PDE's operators, physical or unit-cube parameters), evaluates it on the test
split in chunks, and turns its fitted state into arrays for the store and back.

Every adapter answers the same questions, so the stage can put the methods side by side:
held-out relative error (mean and max), the projection floor where there is one, the error
estimate and its effectivity where there is one, offline seconds, online seconds per evaluation,
and the error against the rank.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from pdeflow.storage import RunStore
from pdeflow.tasks.config import GenerateConfig, PipelineConfig
from pdeflow.tasks.design import to_physical
from pdeflow.tasks.rom import POD
from pdeflow.tasks.rom.factory import make_rom
from pdeflow.tasks.rom.methods import MethodInfo, get_method

# Initial-state families drawn from each sample's seed; "pde" is probed (initial_state_is_random).
RANDOM_KINDS = ("fourier", "grf", "steps")

__all__ = ["Adapter", "PodRegression", "ReduceData", "evaluate", "flat", "relative_errors"]


def flat(u: np.ndarray) -> np.ndarray:
    """Trajectories (n, time, channel, *space) as (n, time, features), float64."""
    return u.reshape(u.shape[0], u.shape[1], -1).astype(np.float64)


def relative_errors(predicted: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per-sample ``||predicted - truth||_F / ||truth||_F`` over time and space, shape (n,)."""
    diff = (predicted - truth).reshape(len(truth), -1)
    norms = np.linalg.norm(truth.reshape(len(truth), -1), axis=1)
    if np.any(norms == 0):
        raise ValueError("a reference trajectory is all zeros; its relative error is undefined")
    return np.linalg.norm(diff, axis=1) / norms


def initial_state_is_random(gen: GenerateConfig) -> bool:
    """Whether each sample's initial state is drawn from its seed, not set by its parameters.

    The generic random families are; a PDE's own state (kind ``pde``) is probed: two seeds
    with the same parameters. A user simulator's state cannot be drawn here: False.
    """
    ic = gen.initial_condition
    if ic is None or not gen.problem.draws_initial_states:
        return False
    if ic.kind in RANDOM_KINDS:
        return True
    if ic.kind != "pde":
        return False
    import torch

    from pdeflow.tasks.design import to_physical
    from pdeflow.tasks.solve import initial_state

    params = to_physical(gen, np.full((2, len(gen.parameter_names)), 0.5))
    u0 = initial_state(gen, params, np.array([1, 2]), torch.device("cpu"), torch.float64)
    return not torch.equal(u0[0], u0[1])


def rank_ladder(rank: int) -> list[int]:
    """1, 2, 4, ... up to ``rank`` (``rank`` itself last): the ranks of the error curve."""
    ladder, r = [], 1
    while r < rank:
        ladder.append(r)
        r *= 2
    return [*ladder, rank]


@dataclass
class ReduceData:
    """What the reduce stage knows when it fits its methods.

    Attributes:
        cfg, store: the run's config and store.
        train, test: sample indices of the two splits.
        p_unit: every sample's parameters mapped to the unit cube, (n_samples, n_params).
        pod: the stage's POD of the training snapshots (out of core, or updated incrementally).
        coefficients: the training trajectories' POD coefficients, (n_train, n_time, rank).
        initial: the initial states' POD and the training coefficients, when the initial state
            is random and so a ROM input; else None.
        client: the Dask client of the stage (methods that train on a worker use it), or None.
        operator: the PDE's affine operator, once a method that needs it has built it.
    """

    cfg: PipelineConfig
    store: RunStore
    train: np.ndarray
    test: np.ndarray
    p_unit: np.ndarray
    pod: POD
    coefficients: np.ndarray
    initial: tuple[POD, np.ndarray] | None = None
    client: Any = None
    operator: Any = None
    _cache: dict = field(default_factory=dict, repr=False)

    def physical(self, indices: np.ndarray) -> np.ndarray:
        """The samples' parameters in physical units, (n, n_params)."""
        return to_physical(self.cfg.generate, self.p_unit[indices])

    def trajectories(self, indices: np.ndarray) -> np.ndarray:
        """The samples' trajectories in memory, (n, n_time, n_features) float64 (cached)."""
        key = tuple(int(i) for i in indices)
        if key not in self._cache:
            self._cache.clear()  # one split at a time: the training set, then the test set
            self._cache[key] = flat(self.store.read_samples(indices))
        return self._cache[key]

    @property
    def times(self) -> np.ndarray:
        """The stored frames' times, (n_time,)."""
        gen = self.cfg.generate
        return np.linspace(0.0, gen.t_end, gen.n_frames)

    @property
    def frame_dt(self) -> float:
        """Time between two stored frames (0 for a single frame)."""
        gen = self.cfg.generate
        return gen.t_end / (gen.n_frames - 1) if gen.n_frames > 1 else 0.0


class Adapter(ABC):
    """One reduce method on the run store. Subclasses set ``name`` and implement the hooks."""

    name: ClassVar[str]

    @property
    def info(self) -> MethodInfo:
        return get_method(self.name)

    def refusal(self, cfg: PipelineConfig) -> str | None:
        """Why this method cannot run on ``cfg`` (checked before any compute), or None."""
        problem = cfg.generate.problem
        if self.info.stationary_only and not problem.stationary:
            return f"{self.name} is for stationary problems; {cfg.generate.pde} is time-dependent"
        if self.info.time_dependent and cfg.generate.n_frames < 2:
            return f"{self.name} needs a trajectory (generate.n_frames >= 2)"
        return None

    @abstractmethod
    def fit(self, data: ReduceData) -> Any:
        """The fitted core."""

    @abstractmethod
    def predict(self, model: Any, data: ReduceData, indices: np.ndarray, truth: np.ndarray):
        """Predictions for the samples, (n, n_time, n_features); ``truth`` gives the stored
        initial states to methods that take them (never more of it)."""

    def estimate(
        self, model: Any, data: ReduceData, indices: np.ndarray, truth: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """A posteriori relative error bound per sample, and the true relative error in the
        bound's own norm (e.g. the energy norm), where the method has one; else None."""
        return None

    def floor(self, model: Any, truth: np.ndarray) -> np.ndarray | None:
        """The best any prediction on the method's manifold can do, per sample, or None."""
        return None

    def rank_errors(
        self, model: Any, data: ReduceData, indices: np.ndarray, truth: np.ndarray
    ) -> dict[int, tuple[float, float | None]]:
        """Mean held-out error (and floor) against the rank, where the method has a rank."""
        return {}

    @abstractmethod
    def predictor(self, model: Any, cfg: PipelineConfig):
        """``f(params_unit, initial_states or None) -> (n, n_time, n_features)`` for quantify."""

    def uses_initial_state(self, model: Any) -> bool:
        return False


class PodRegression(Adapter):
    """POD (the stage's, out of core) + a regression of the coefficients on the parameters.

    Nothing of its own is saved: the stage's group ``reduce`` holds the bases and coefficients,
    and ``stages.models.load_rom`` refits the regression from them.
    """

    def __init__(self, name: str):
        self.name = name

    def fit(self, data: ReduceData):
        initial = data.initial
        rom = make_rom(data.cfg.reduce, data.pod, initial and initial[0], method=self.name)
        return rom.fit_coefficients(
            data.p_unit[data.train], data.coefficients, initial and initial[1]
        )

    def predict(self, model, data, indices, truth):
        return model.predict(data.p_unit[indices], truth[:, 0])

    def floor(self, model, truth):
        return model.projection_errors(truth)

    def rank_errors(self, model, data, indices, truth):
        coefficients = model.predict_coefficients(data.p_unit[indices], truth[:, 0])
        modes, mean = model.reduction_.modes_, model.reduction_.mean_
        exact = (truth - mean) @ modes.T
        out = {}
        for r in rank_ladder(model.rank_):
            rom = coefficients[..., :r] @ modes[:r] + mean
            projected = exact[..., :r] @ modes[:r] + mean
            out[r] = (
                float(relative_errors(rom, truth).mean()),
                float(relative_errors(projected, truth).mean()),
            )
        return out

    def predictor(self, model, cfg):
        return model.predict

    def uses_initial_state(self, model) -> bool:
        return model.uses_initial_state


def evaluate(adapter: Adapter, model: Any, data: ReduceData, indices: np.ndarray) -> dict:
    """Held-out errors, floor, estimate and online time of a fitted method, chunk by chunk.

    Returns:
        ``{"rel_error_mean", "rel_error_max", "floor_mean"?, "estimate_effectivity_min"?, ...,
        "online_s_per_eval", "rank_errors": {rank: [error, floor]}}``; the online time counts
        predictions only (no store reads), per test sample.
    """
    import time

    errors, floors, estimates, measured, seconds, curves = [], [], [], [], 0.0, []
    for rows, u in data.store.iter_chunks(indices):
        rows = np.asarray(rows)
        truth = flat(u)
        start = time.perf_counter()
        predicted = adapter.predict(model, data, rows, truth)
        seconds += time.perf_counter() - start
        if not np.all(np.isfinite(predicted)):
            raise FloatingPointError(f"reduce: {adapter.name} predicted non-finite values")
        errors.append(relative_errors(predicted, truth))
        if (floor := adapter.floor(model, truth)) is not None:
            floors.append(floor)
        if (pair := adapter.estimate(model, data, rows, truth)) is not None:
            estimates.append(pair[0])
            measured.append(pair[1])
        curves.append((len(rows), adapter.rank_errors(model, data, rows, truth)))
    err = np.concatenate(errors)
    row: dict[str, Any] = {
        "rel_error_mean": float(err.mean()),
        "rel_error_max": float(err.max()),
        "online_s_per_eval": seconds / len(err),
    }
    if floors:
        row["floor_mean"] = float(np.concatenate(floors).mean())
    if estimates:
        bound, true = np.concatenate(estimates), np.concatenate(measured)
        effectivity = bound / np.maximum(true, np.finfo(float).tiny)
        row |= {
            "estimate_max": float(bound.max()),
            "estimate_norm_error_max": float(true.max()),
            "effectivity_min": float(effectivity.min()),
            "effectivity_mean": float(effectivity.mean()),
            "effectivity_max": float(effectivity.max()),
        }
    row["rank_errors"] = _merge_curves(curves)
    return row


def _merge_curves(curves: list[tuple[int, dict]]) -> dict[str, list]:
    """Chunk-weighted means of the per-chunk error curves; keys as strings (JSON)."""
    total = sum(n for n, _ in curves)
    ranks = sorted({r for _, c in curves for r in c})
    out = {}
    for r in ranks:
        err = sum(n * c[r][0] for n, c in curves) / total
        floors = [c[r][1] for _, c in curves]
        floor = None if None in floors else sum(n * c[r][1] for n, c in curves) / total
        out[str(r)] = [err, floor]
    return out
