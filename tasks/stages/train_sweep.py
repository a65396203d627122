"""``train.sweep.method: optuna``: an Optuna study whose trials are training units.

Optuna (a well-kept library) proposes the settings; pdeflow trains them. The study asks for a
round of trials at a time, as many as the cluster has workers (at least 2), so the round trains
in parallel; the next round is asked once the study has been told the round's validation
nRMSE. Every asked trial's settings are written to its unit directory (``plan.json``) before it
is trained, so a killed run replays the study: it tells the finished trials again in order,
trains the planned but unfinished ones with the settings they were given, and only then asks
for more. The sampler is TPE seeded by ``sweep.seed``.
"""

from __future__ import annotations

import math

from pdeflow.storage import RunStore
from pdeflow.storage.fsio import read_json, write_json
from pdeflow.tasks.config import PipelineConfig
from pdeflow.tasks.config_train import SWEEPABLE, Unit

STAGE = "train"


def _name(i: int) -> str:
    return f"trial-{i:03d}"


def planned(cfg: PipelineConfig, store: RunStore, study: str) -> list[Unit]:
    """The trials this study (named by the train stage's config hash) asked so far, in order,
    from their plan files; a plan of another study ends the list."""
    out = []
    for i in range(cfg.train.sweep.n_trials):
        plan = read_json(store.unit_dir(STAGE, _name(i)) / "plan.json")
        if plan is None or plan.get("study") != study:
            break
        out.append(Unit(_name(i), cfg.train.seed, plan["overrides"]))
    return out


def optuna_units(cfg: PipelineConfig, store: RunStore, study: str) -> list[Unit]:
    """Every trial of the study: those asked so far with their settings, the rest unplanned
    (empty overrides until asked; never trained as they are)."""
    asked = planned(cfg, store, study)
    rest = [Unit(_name(i), cfg.train.seed) for i in range(len(asked), cfg.train.sweep.n_trials)]
    return asked + rest


def distributions(cfg: PipelineConfig) -> dict:
    import optuna

    sw = cfg.train.sweep
    out = {k: optuna.distributions.CategoricalDistribution(v) for k, v in sw.values.items()}
    for k, (low, high) in sw.ranges.items():
        out[k] = optuna.distributions.FloatDistribution(low, high, log=True)
    return out


def run_study(run, train_round, round_size: int) -> None:
    """Ask, train and tell rounds of trials until ``n_trials`` are finished.

    Args:
        run: the train stage's run (``state["units"]`` and ``state["done"]`` are updated).
        train_round: trains a list of units; returns unit name -> result.
        round_size: trials asked per round.
    """
    import optuna

    cfg, store, st = run.cfg, run.store, run.state
    sw = cfg.train.sweep
    dists, study_name = distributions(cfg), st["stage_hash"]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction="minimize", sampler=optuna.samplers.TPESampler(seed=sw.seed)
    )
    units = planned(cfg, store, study_name)
    replay = [u for u in units if u.name not in st["done"]]
    if replay:  # asked before a kill: trained with the settings they were given
        st["done"].update(train_round(replay))
    for unit in units:
        study.add_trial(_finished(unit, st["done"][unit.name], dists))
    while len(units) < sw.n_trials:
        asked = []
        for i in range(len(units), min(len(units) + round_size, sw.n_trials)):
            trial = study.ask(dists)
            overrides = {k: SWEEPABLE[k](v) for k, v in trial.params.items()}
            unit = Unit(_name(i), cfg.train.seed, overrides)
            directory = store.unit_dir(STAGE, unit.name)
            directory.mkdir(parents=True, exist_ok=True)
            write_json(directory / "plan.json", {"overrides": overrides, "study": study_name})
            asked.append((unit, trial))
        units += [u for u, _ in asked]
        st["units"] = units + optuna_units(cfg, store, study_name)[len(units) :]
        st["done"].update(train_round([u for u, _ in asked]))
        for unit, trial in asked:
            value = st["done"][unit.name].get("val_nrmse_one_step", math.nan)
            if math.isfinite(value):
                study.tell(trial, value)
            else:
                study.tell(trial, state=optuna.trial.TrialState.FAIL)


def _finished(unit: Unit, result: dict, dists: dict):
    import optuna

    value = result.get("val_nrmse_one_step", math.nan)
    if not math.isfinite(value):
        return optuna.trial.create_trial(
            params=unit.overrides, distributions=dists, state=optuna.trial.TrialState.FAIL
        )
    return optuna.trial.create_trial(params=unit.overrides, distributions=dists, value=value)
