"""The train stage's end: pick the stage model from its units, score it, keep what later reads.

- One unit: its model is the stage's model.
- A sweep: the trial with the lowest validation nRMSE (one step) is; every trial is a row of
  the record's ``sweep`` table (and of the UI's table artifact).
- An ensemble: every member is kept (``ensemble/<member>.pt``); the stage's predictions are the
  mean of the members' rollouts, and the mean and standard deviation fields of the test split
  are stored in group ``train_ensemble`` for quantify, which can scale its conformal bands by
  the spread.

The test metrics are PDEBench's nRMSE one step ahead and over the rollout, beside persistence,
plus the full metric set (``pdeflow.tasks.metrics.metric_table``) in the record's details. The
first ``history`` frames are inputs and are never scored.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from pdeflow.storage import FileEntry, RunStore
from pdeflow.tasks.config import PipelineConfig
from pdeflow.tasks.config_train import Unit
from pdeflow.tasks.metrics import metric_table, nrmse
from pdeflow.tasks.stages.base import Outcome, StageRun
from pdeflow.tasks.stages.models import MODEL, TEST_ROLLOUT, unit_parameters
from pdeflow.tasks.stages.train_units import predict_split, unit_config
from pdeflow.tasks.surrogates.ensemble import spread
from pdeflow.tasks.surrogates.factory import model_from_state

ENSEMBLE_GROUP = "train_ensemble"
# What a unit's row in the record keeps of its result (the history is the stage model's).
UNIT_FIELDS = (
    "unit", "seed", "overrides", "worker", "device", "threads", "epochs", "epochs_this_attempt",
    "seconds", "started", "finished", "val_nrmse_one_step", "final_train_loss", "ranks",
)  # fmt: skip


def unit_model(store: RunStore, cfg: PipelineConfig, unit: Unit, result: dict):
    """A finished unit's model, checked and loaded (``weights_only``), in eval mode."""
    state = store.load_model(result["model"], FileEntry(*result["model_entry"]))
    return model_from_state(unit_config(cfg, unit), state)


def best_trial(results: list[dict]) -> dict:
    """The sweep trial with the lowest finite validation nRMSE."""
    scored = [r for r in results if math.isfinite(r.get("val_nrmse_one_step", math.nan))]
    if not scored:
        raise FloatingPointError(
            "train.sweep: no trial has a finite validation nRMSE (is the val split empty?)"
        )
    return min(scored, key=lambda r: r["val_nrmse_one_step"])


def finish_training(run: StageRun) -> Outcome:
    cfg, store, st = run.cfg, run.store, run.state
    units: list[Unit] = st["units"]
    results = [st["done"][u.name] for u in units]
    by_name = {u.name: u for u in units}
    tc = cfg.train
    kind = "ensemble" if tc.ensemble > 1 else "sweep" if tc.sweep.active else "single"
    chosen = best_trial(results) if kind == "sweep" else results[0]
    chosen_unit = by_name[chosen["unit"]]
    model = unit_model(store, cfg, chosen_unit, chosen)
    artifacts = dict([store.save_model("train", MODEL, model.state_dict())])
    rows = [{k: r[k] for k in UNIT_FIELDS if k in r} for r in results]
    details: dict = {"kind": kind, "units": rows}
    scored_units = [chosen]
    if kind == "ensemble":
        scored_units = results
        for row, result in zip(rows, results, strict=True):
            member = unit_model(store, cfg, by_name[result["unit"]], result)
            name = f"ensemble/{result['unit']}.pt"
            rel, entry = store.save_model("train", name, member.state_dict())
            artifacts[rel] = entry
            row["stage_file"] = rel
    test = store.sample_indices("test")
    p_all = unit_parameters(store, cfg)
    predictions = [
        unit_predictions(store, cfg, by_name[r["unit"]], r, test, p_all) for r in scored_units
    ]
    scored = score_predictions(store, test, predictions, tc.history, kind == "ensemble")
    if len(test):
        rollout = torch.stack([p["rollout"] for p in predictions]).mean(0)
        order = np.sort(np.asarray(test))  # the order iter_chunks reads (and scores) the split
        rel, entry = store.save_model(
            "train", TEST_ROLLOUT, {"sample": torch.as_tensor(order), "rollout": rollout}
        )
        artifacts[rel] = entry
    metrics = scored["metrics"]
    metrics["epochs"] = tc.epochs
    metrics["final_train_loss"] = chosen["final_train_loss"]
    if math.isfinite(chosen["val_nrmse_one_step"]):  # NaN without a validation split
        metrics["val_nrmse_one_step"] = chosen["val_nrmse_one_step"]
    if kind == "ensemble":
        metrics["ensemble_members"] = len(units)
        metrics["ensemble_std_mean"] = float(scored["std"][:, tc.history :].mean())
        artifacts.update(_save_ensemble_fields(store, cfg, test, scored))
    if kind == "sweep":
        details["best"] = chosen["unit"]
        details["model_overrides"] = chosen_unit.overrides
    details.update(
        history=chosen["history"],
        metric_table=scored["table"],
        resumed_from_epoch=st["start"].get(chosen["unit"], 0),
        warm_started=run.extended,
        epochs_trained_last_run=st.get("trained", 0),
    )
    return Outcome(metrics, artifacts=artifacts, details=details)


def unit_predictions(
    store: RunStore, cfg: PipelineConfig, unit: Unit, result: dict, indices, p_all
) -> dict:
    """The test predictions a finished unit saved (``train_units.predict_split``), checked;
    computed here from its model for a unit that saved none (trained by an older pdeflow)."""
    if "predictions" in result:
        return store.load_model(result["predictions"], FileEntry(*result["predictions_entry"]))
    model = unit_model(store, cfg, unit, result)
    return predict_split(model, store, indices, p_all, cfg.train.history, cfg.train.batch_size)


def score_predictions(
    store: RunStore, indices: np.ndarray, predictions: list[dict], h: int, ensemble: bool
) -> dict:
    """Test-split scores of one model's predictions, or of an ensemble's (the mean of its
    members' rollouts, each rolled out on its own, and their spread): nRMSE one step ahead
    and over the rollout from the first ``h`` frames, beside persistence, and the full metric
    table.

    Returns:
        ``{"metrics": {...}, "table": metric_table(...), "mean": rollouts, "std": spreads or
        None}``; rollouts ``(n, T, C, *space)`` in float64.
    """
    rolls = torch.stack([p["rollout"] for p in predictions])
    steps = torch.stack([p["one_step"] for p in predictions])
    mean, step = rolls.mean(0).double().numpy(), steps.mean(0).double().numpy()
    true = np.concatenate([u.astype(np.float64) for _, u in store.iter_chunks(indices)])
    n_space = true.ndim - 3
    target = true[:, h:]
    persist = np.broadcast_to(true[:, h - 1 : h], target.shape)
    metrics = {
        "nrmse_one_step": float(nrmse(step, target, n_space).mean()),
        "nrmse_rollout": float(nrmse(mean[:, h:], target, n_space).mean()),
        "nrmse_persist_one_step": float(nrmse(true[:, h - 1 : -1], target, n_space).mean()),
        "nrmse_persist_rollout": float(nrmse(persist, target, n_space).mean()),
    }
    table = metric_table(mean, true, n_input=h, n_space_dims=n_space)
    # A band the grid cannot resolve is NaN; records keep JSON's null for it.
    table = {
        k: {m: v if math.isfinite(v) else None for m, v in row.items()} for k, row in table.items()
    }
    return {
        "metrics": metrics,
        "table": table,
        "mean": mean,
        "std": spread(rolls).double().numpy() if ensemble else None,
    }


def _save_ensemble_fields(store: RunStore, cfg: PipelineConfig, test, scored) -> dict:
    """The test split's ensemble mean and standard deviation fields, as a stage group."""
    dims = ("sample", "time", "channel", *("x", "y", "z")[: scored["mean"].ndim - 3])
    return store.write_group(
        ENSEMBLE_GROUP,
        {
            "ensemble_mean": (dims, scored["mean"]),
            "ensemble_std": (dims, scored["std"]),
        },
        coords={"sample": np.asarray(test)},
        attrs={"members": cfg.train.ensemble, "history": cfg.train.history},
    )
