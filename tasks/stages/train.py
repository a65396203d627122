"""Stage 2: train neural surrogates from the run store, as units on the Dask workers.

Data streams from the store a few chunks at a time (never the whole store), every chunk checked
against its CRC32 as it is read; the normalisation statistics come from the training split
alone. Each unit (one model, one config: the default model, an ensemble member, a sweep trial)
is one Dask task that writes a checkpoint after every epoch and resumes from its newest intact
one (``train_units``). Training stops at the first non-finite loss, naming the unit, epoch and
batch, and keeps the last good checkpoint.
"""

from __future__ import annotations

import uuid

import numpy as np

from pdeflow.storage import RunStore, StageRecord
from pdeflow.tasks.config import PipelineConfig
from pdeflow.tasks.config_train import Unit, plan_units
from pdeflow.tasks.stages.base import Outcome, Stage, StageRun
from pdeflow.tasks.stages.integrity import UPSTREAM, record_problems
from pdeflow.tasks.stages.models import MODEL, unit_parameters
from pdeflow.tasks.stages.train_units import TrainingLog, iter_batches, unit_hash
from pdeflow.tasks.surrogates.factory import check_trainable

__all__ = ["Train", "TrainingLog", "iter_batches", "streaming_stats"]
# Seconds between two looks at the units' checkpoints for the progress line.
POLL_S = 2.0


def streaming_stats(store: RunStore, indices: np.ndarray, p_unit: np.ndarray) -> dict:
    """Per-channel field mean/std, increment std and parameter mean/std of a split.

    Read one chunk at a time; sums in float64; population (ddof=0) statistics over samples,
    time and space, separately for every channel.
    """
    acc = None
    for _, u in store.iter_chunks(indices):
        u = np.moveaxis(u.astype(np.float64), 2, 0)  # (C, n, T, *space)
        inc = np.diff(u, axis=2)
        flat, dflat = u.reshape(len(u), -1), inc.reshape(len(u), -1)
        part = np.stack(
            [
                np.full(len(u), flat.shape[1]),
                flat.sum(1),
                (flat**2).sum(1),
                np.full(len(u), dflat.shape[1]),
                dflat.sum(1),
                (dflat**2).sum(1),
            ]
        )
        acc = part if acc is None else acc + part
    n, s, s2, nd, d, d2 = acc
    mean, dmean = s / n, d / nd
    return {
        "field_mean": mean,
        "field_std": np.sqrt(np.maximum(s2 / n - mean**2, 0.0)),
        "delta_std": np.sqrt(np.maximum(d2 / nd - dmean**2, 0.0)),
        "param_mean": p_unit.mean(axis=0),
        "param_std": p_unit.std(axis=0),
    }


class Train(Stage):
    """Training units (``config_train.plan_units``) as Dask tasks on the cluster's workers.

    The stage counts epochs over all units: unit ``i``'s epoch ``e`` is work unit
    ``i * epochs + e``. Normalisation statistics come once from the training split, so every
    unit (every ensemble member) works in the same units. Without a client (``run_stage``
    called directly, as library code and tests do) the units run in this process, one after
    the other; every flow passes its cluster.
    """

    name = "train"
    upstream = UPSTREAM["train"]
    unit = "epochs"

    def check(self, cfg: PipelineConfig) -> None:
        check_trainable(cfg)

    def problems(self, run: StageRun, record: StageRecord, deep: bool = True) -> list[str]:
        return record_problems(run.store, self.name, record, deep)

    def prepare(self, run: StageRun) -> None:
        """Plan the units; forget a unit's checkpoints and result of another config."""
        store, stage_hash = run.store, _hash(run)
        units = planned_units(run.cfg, store, stage_hash)
        run.state.update(units=units, stage_hash=stage_hash, done={}, start={})
        for unit in units:
            key = unit_hash(stage_hash, unit)
            result = store.unit_result(self.name, unit.name, key)
            if result is not None:
                run.state["done"][unit.name] = result
                continue
            state, warnings = store.load_unit_checkpoint(self.name, unit.name)
            for warning in warnings:
                run.warn(f"train: {unit.name}: {warning}; resuming from an older one")
            if state is not None and state.get("config_hash") == key:
                run.state["start"][unit.name] = int(state["epoch"])
            elif state is not None or store.has_unit_result(self.name, unit.name):
                store.reset_unit(self.name, unit.name)  # another config's, or damaged

    def total(self, run: StageRun) -> int:
        return len(run.state["units"]) * run.cfg.train.epochs

    def pending(self, run: StageRun) -> list[int]:
        epochs, st = run.cfg.train.epochs, run.state
        out = []
        for i, unit in enumerate(st["units"]):
            if unit.name not in st["done"]:
                out += [i * epochs + e for e in range(st["start"].get(unit.name, 0), epochs)]
        return out

    def compute(self, run: StageRun, units: list[int]) -> None:
        cfg, store, st = run.cfg, run.store, run.state
        p_all = unit_parameters(store, cfg)
        idx = {s: store.sample_indices(s) for s in ("train", "val", "test")}
        stats = streaming_stats(store, idx["train"], p_all[idx["train"]])
        epochs = cfg.train.epochs
        # Every unfinished unit, also one killed after its last checkpoint but before its
        # result: it has no epoch left, and its task only writes the result.
        todo = [u for u in st["units"] if u.name not in st["done"]]
        warm = _warm_models(run)
        args = (str(store.path), store.name, cfg)
        common = (stats, p_all, idx, st["stage_hash"])

        def report() -> None:
            done, facts = 0, {}
            for u in st["units"]:
                if u.name in st["done"]:
                    done += epochs
                    continue
                progress = TrainingLog(store, u.name).progress()
                done += progress.pop("epochs_done", 0)
                facts = facts or progress  # the first running unit's epoch and loss
            if not facts and st["done"]:  # all finished: the last one's final loss
                facts = {"loss": list(st["done"].values())[-1]["final_train_loss"]}
            if len(st["units"]) > 1:
                facts["units"] = f"{len(st['done'])}/{len(st['units'])}"
            run.report(min(done, self.total(run)), self.total(run), **facts)

        def train_round(todo: list[Unit]) -> dict:
            return run_units(
                run.client, cfg, todo,
                lambda u: (*args, u, *common, warm.get(u.name)),
                report,
            )  # fmt: skip

        sweep = cfg.train.sweep
        if sweep.method == "optuna":
            from pdeflow.tasks.stages.train_sweep import run_study

            workers = len(run.client.scheduler_info()["workers"]) if run.client else 1
            run_study(run, train_round, max(2, workers))
        else:
            st["done"].update(train_round(todo))
        st["trained"] = len(units)

    def finish(self, run: StageRun) -> Outcome:
        from pdeflow.tasks.stages.train_finish import finish_training

        return finish_training(run)


def planned_units(cfg: PipelineConfig, store: RunStore, stage_hash: str) -> list[Unit]:
    """The stage's units; an Optuna sweep's are asked of its study (see ``train_sweep``)."""
    if cfg.train.sweep.method == "optuna":
        from pdeflow.tasks.stages.train_sweep import optuna_units

        return optuna_units(cfg, store, stage_hash)
    return plan_units(cfg.train)


def run_units(client, cfg: PipelineConfig, units: list[Unit], args_of, report) -> dict:
    """Train ``units``: one Dask task each on ``client`` (in this process without one).

    Every unit runs to its end even when another fails, so that finished units stay finished;
    then the first failure is raised, naming its unit. ``report()`` is called every few
    seconds while the units run.

    Returns:
        unit name -> the unit's result.
    """
    from pdeflow.tasks.stages.train_units import train_unit

    if client is None:
        out = {}
        for unit in units:
            out[unit.name] = train_unit(*args_of(unit))
            report()
        return out
    if cfg.train.data_parallel > 1:
        return {unit.name: _data_parallel(client, cfg, unit, args_of, report) for unit in units}
    from distributed import wait

    from pdeflow.tasks.clusters import task_resources

    resources = task_resources(cfg.cluster, cfg.train.device)
    futures = {
        client.submit(
            train_unit, *args_of(unit), key=f"train-unit-{unit.name}-{uuid.uuid4().hex[:8]}",
            resources=resources, pure=False,
        ): unit
        for unit in units
    }  # fmt: skip
    pending = list(futures)
    while pending:
        try:
            wait(pending, timeout=POLL_S, return_when="FIRST_COMPLETED")
        except TimeoutError:  # nothing finished yet: report the epochs done so far
            pass
        pending = [f for f in pending if not f.done()]
        report()
    out, failures = {}, []
    for future, unit in futures.items():
        if future.status == "finished":
            out[unit.name] = future.result()
        else:
            failures.append((unit, future.exception()))
    if failures:
        unit, err = failures[0]
        if isinstance(err, FloatingPointError):
            raise err
        raise RuntimeError(f"train: unit {unit.name} failed: {type(err).__name__}: {err}") from err
    return out


def _data_parallel(client, cfg: PipelineConfig, unit: Unit, args_of, report) -> dict:
    """Train ``unit`` on ``train.data_parallel`` workers at once (one DDP rank each, rank 0 on
    the first worker); rank 0's result is the unit's."""
    from pdeflow.tasks.stages.ddp import run_ranks
    from pdeflow.tasks.stages.train_units import train_unit_rank

    ranks = cfg.train.data_parallel
    try:
        results, _, _ = run_ranks(
            client, train_unit_rank, args_of(unit), cfg.train.device, ranks, on_poll=report,
            name=f"train-unit-{unit.name}",
        )  # fmt: skip
    except FloatingPointError:
        raise
    except Exception as err:
        notes = "".join(f"; {note}" for note in getattr(err, "__notes__", ()))
        raise RuntimeError(
            f"train: unit {unit.name} ({ranks} data-parallel ranks) failed: "
            f"{type(err).__name__}: {err}{notes}. Its checkpoints are kept: run the stage "
            "again to resume"
        ) from err
    report()
    return results[0]


def _hash(run: StageRun) -> str:
    from pdeflow.tasks.stages.runner import hash_of

    return hash_of(run.cfg, "train")


def _warm_models(run: StageRun) -> dict[str, tuple[str, list[int]]]:
    """For a grown store: each unit starts from the model the smaller run finished with.

    A unit of the same name that the previous record kept (an ensemble member) starts from its
    own model; any other from the previous stage model. Nothing when the smaller run never
    finished training. Returns unit name -> (model file, its entry).
    """
    prev = run.previous
    if not run.extended or prev is None or prev.status != "complete":
        return {}
    models = [rel for rel in prev.artifacts if rel.endswith("/" + MODEL)]
    if not models:
        return {}
    # Ensemble members were saved as stage files of their own (train_finish).
    own = {u["unit"]: u["stage_file"] for u in prev.details.get("units", []) if "stage_file" in u}
    entries = prev.artifact_entries()
    pick = {u.name: own.get(u.name, models[0]) for u in run.state["units"]}
    return {name: (rel, list(entries[rel])) for name, rel in pick.items() if rel in entries}
