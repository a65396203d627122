"""What later stages (and the report) read of earlier ones: parameters, the surrogate, the ROM.

Each loader finds its files through the stage's record and checks them (size and CRC32) before
use, so a damaged model is refused rather than silently loaded.
"""

from __future__ import annotations

import numpy as np
import torch

from pdeflow.storage import RunStore, StageNotReady
from pdeflow.tasks.config import PipelineConfig
from pdeflow.tasks.design import to_unit
from pdeflow.tasks.rom import POD, ReducedOrderModel
from pdeflow.tasks.rom.factory import make_rom
from pdeflow.tasks.stages.integrity import MODEL
from pdeflow.tasks.stages.rom_adapters import SavedCore, adapter_for
from pdeflow.tasks.surrogates.ensemble import Ensemble
from pdeflow.tasks.surrogates.factory import model_from_state
from pdeflow.tasks.surrogates.fno import OneStepSurrogate

ROM_GROUP = "reduce"
MODEL_GROUP = "reduce_model"


def unit_parameters(store: RunStore, cfg: PipelineConfig, indices=None) -> np.ndarray:
    """Stored parameters mapped to the unit cube by their marginals' CDFs, (n, n_params)."""
    params = store.read_coords(cfg.generate.parameter_names)
    return to_unit(cfg.generate, params if indices is None else params[indices])


def _complete(store: RunStore, stage: str):
    rec = store.record(stage)
    if rec is None or rec.status != "complete":
        raise StageNotReady(f"store {store.name!r} has no complete {stage} stage")
    return rec


# The train stage's rollouts of the test split by its model (an ensemble's: the members' mean),
# the ones its metrics score: {"sample": (n,) sorted store indices, "rollout": (n, T, C, *space)
# in the model's dtype, from the first ``history`` true frames}. The report plots them.
TEST_ROLLOUT = "test_rollout.pt"


def stored_rollouts(store: RunStore, indices: np.ndarray) -> np.ndarray | None:
    """The train stage's stored rollouts (``TEST_ROLLOUT``) of the sorted ``indices``, checked
    on load; None when the stage stored none (an older store) or one of them is not a test
    sample. Call it for a complete train stage."""
    rec = _complete(store, "train")
    rel = next((r for r in rec.artifacts if r.endswith("/" + TEST_ROLLOUT)), None)
    if rel is None:
        return None
    saved = store.load_model(rel, rec.artifact_entries()[rel])
    samples, idx = saved["sample"].numpy(), np.sort(np.asarray(indices))
    at = np.minimum(np.searchsorted(samples, idx), len(samples) - 1)
    if not len(samples) or not np.array_equal(samples[at], idx):
        return None
    return saved["rollout"][torch.as_tensor(at)].numpy()


def load_surrogate(cfg: PipelineConfig, store: RunStore) -> OneStepSurrogate | Ensemble:
    """The trained surrogate of a store, checked and loaded with ``weights_only=True``: the
    stage model (a sweep's best trial, built with its settings), or every ensemble member."""
    rec = _complete(store, "train")
    entries = rec.artifact_entries()
    overrides = rec.details.get("model_overrides", {})
    built = cfg.model_copy(update={"train": cfg.train.model_copy(update=overrides)})
    if rec.details.get("kind") == "ensemble":
        files = [u["stage_file"] for u in rec.details["units"]]
        return Ensemble([model_from_state(built, store.load_model(r, entries[r])) for r in files])
    rel = next(r for r in rec.artifacts if r.endswith("/" + MODEL))
    return model_from_state(built, store.load_model(rel, entries[rel]))


class StoredROM:
    """A reduce method's fitted model restored from the store, as quantify calls a ROM.

    Attributes:
        method: the reduce method's name.
        uses_initial_state: whether ``predict`` needs each sample's initial state.
    """

    def __init__(self, method: str, predict, uses_initial_state: bool):
        self.method, self._predict = method, predict
        self.uses_initial_state = uses_initial_state

    def predict(self, params: np.ndarray, initial_states: np.ndarray | None = None) -> np.ndarray:
        """Trajectories (n, n_time, n_features) for unit-cube parameters (n, n_params)."""
        return self._predict(params, initial_states)


def save_model(store: RunStore, method: str, model) -> dict:
    """The fitted state of the stage's ROM as group ``reduce_model`` (none for the POD
    regressions, which group ``reduce`` holds); the files' entries."""
    adapter = adapter_for(method)
    if not isinstance(adapter, SavedCore):
        return {}
    arrays, attrs = adapter.to_arrays(model)
    names = {f"a{i}": key for i, key in enumerate(arrays)}  # keys may hold '.' or '/'
    variables = {
        short: ([f"{short}_{d}" for d in range(np.ndim(arrays[key]))], np.asarray(arrays[key]))
        for short, key in names.items()
    }
    meta = {"method": method, "names": names, "attrs": attrs}
    return store.write_group(MODEL_GROUP, variables, attrs={"pdeflow_model": meta})


def load_rom(cfg: PipelineConfig, store: RunStore) -> ReducedOrderModel | StoredROM:
    """The stage's ROM: for a POD regression, the stored bases (checked) and the regression
    refitted; for another method, its fitted state restored from group ``reduce_model``.

    Its ``predict`` needs the samples' initial states when ``uses_initial_state`` is True.
    """
    rec = _complete(store, "reduce")
    method = cfg.reduce.method
    adapter = adapter_for(method)
    if isinstance(adapter, SavedCore):
        res = store.read_group(MODEL_GROUP, rec.artifact_entries())
        meta = res.attrs["pdeflow_model"]
        if meta["method"] != method:
            raise StageNotReady(
                f"store {store.name!r} holds a {meta['method']} ROM, not reduce.method={method}"
            )
        arrays = {key: res[short].values for short, key in meta["names"].items()}
        model = adapter.from_arrays(cfg, arrays, meta["attrs"])
        return StoredROM(method, adapter.predictor(model, cfg), adapter.uses_initial_state(model))
    res = store.read_group(ROM_GROUP, rec.artifact_entries())
    pod = POD.from_svd(
        res.singular_values.values,
        res.modes.values,
        res["mean"].values,
        rank=int(res.attrs["rank"]),
    )
    initial, initial_coefficients = None, None
    if "initial_modes" in res:  # the initial state is random: its coefficients are inputs
        initial = POD.from_svd(
            res.initial_singular_values.values,
            res.initial_modes.values,
            res.initial_mean.values,
            rank=res.initial_modes.shape[0],
        )
        initial_coefficients = res.initial_coefficients.values
    rom = make_rom(cfg.reduce, pod, initial)
    return rom.fit_coefficients(
        res.parameters_unit.values, res.coefficients.values, initial_coefficients
    )
