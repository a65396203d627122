"""What later stages (and the report) read of earlier ones: parameters, the surrogate, the ROM.

Each loader finds its files through the stage's record and checks them (size and CRC32) before
use, so a damaged model is refused rather than silently loaded.
"""

from __future__ import annotations

import numpy as np

from pdeflow.storage import RunStore, StageNotReady
from pdeflow.tasks.config import PipelineConfig
from pdeflow.tasks.design import to_unit
from pdeflow.tasks.rom import POD, ReducedOrderModel
from pdeflow.tasks.rom.factory import make_rom
from pdeflow.tasks.surrogates.factory import model_from_state
from pdeflow.tasks.surrogates.fno import OneStepSurrogate

MODEL = "model.pt"
ROM_GROUP = "reduce"


def unit_parameters(store: RunStore, cfg: PipelineConfig, indices=None) -> np.ndarray:
    """Stored parameters mapped to the unit cube by their marginals' CDFs, (n, n_params)."""
    params = store.read_coords(cfg.generate.parameter_names)
    return to_unit(cfg.generate, params if indices is None else params[indices])


def _complete(store: RunStore, stage: str):
    rec = store.record(stage)
    if rec is None or rec.status != "complete":
        raise StageNotReady(f"store {store.name!r} has no complete {stage} stage")
    return rec


def load_surrogate(cfg: PipelineConfig, store: RunStore) -> OneStepSurrogate:
    """The trained surrogate of a store, checked and loaded with ``weights_only=True``."""
    rec = _complete(store, "train")
    rel = next(r for r in rec.artifacts if r.endswith(MODEL))
    return model_from_state(cfg, store.load_model(rel, rec.artifact_entries()[rel]))


def load_rom(cfg: PipelineConfig, store: RunStore) -> ReducedOrderModel:
    """The stage's ROM: the stored bases (checked), and the regression refitted.

    Its ``predict`` needs the samples' initial states when ``uses_initial_state`` is True.
    """
    rec = _complete(store, "reduce")
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
