"""Training units on the Dask workers: routing, a killed worker, ensembles, sweeps, records."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import threading
import time

import pytest
import torch

import pdeflow.tasks.clusters as clusters
from pdeflow.storage import RunStore
from pdeflow.tasks.config import ConfigError, load_config
from pdeflow.tasks.config_train import SweepConfig, TrainConfig, plan_units
from pdeflow.tasks.runtime import use_worker_defaults
from pdeflow.tasks.stages import run_stage
from pdeflow.tasks.stages.train import TrainingLog
from tests.cli_helpers import cli
from tests.conftest import TINY

# Small and quick: each unit is well under a second an epoch on one thread.
TRAIN = ["train={width: 8, modes: 8, n_layers: 2, epochs: 3, batch_size: 32}"]


@pytest.fixture(scope="module")
def data(client, tmp_path_factory):
    """A generated tiny store that each test copies."""
    cfg = load_config(TINY, ["store=units-data", *TRAIN])
    run_stage("generate", cfg, client=client)
    return cfg


def _copy(cfg, runs_dir, name: str, *sets: str):
    shutil.copytree(runs_dir / cfg.store, runs_dir / name)
    return load_config(TINY, [f"store={name}", *TRAIN, *sets])


def _weights(store: RunStore, unit: str) -> dict:
    path = store.unit_dir("train", unit) / "model.pt"
    return torch.load(path, weights_only=True)


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_plan_units_names_members_and_trials():
    assert [u.name for u in plan_units(TrainConfig())] == ["model"]
    members = plan_units(TrainConfig(ensemble=3, seed=5))
    assert [(u.name, u.seed) for u in members] == [
        ("member-00", 5), ("member-01", 6), ("member-02", 7)
    ]  # fmt: skip
    grid = plan_units(
        TrainConfig(sweep=SweepConfig(method="grid", values={"width": [8, 16], "lr": [1e-3, 3e-3]}))
    )
    assert [u.overrides for u in grid] == [
        {"width": 8, "lr": 1e-3}, {"width": 8, "lr": 3e-3},
        {"width": 16, "lr": 1e-3}, {"width": 16, "lr": 3e-3},
    ]  # fmt: skip
    sweep = SweepConfig(method="random", values={"width": [8, 16]}, ranges={"lr": (1e-4, 1e-2)})
    drawn = plan_units(TrainConfig(sweep=sweep.model_copy(update={"n_trials": 5})))
    assert len({tuple(sorted(u.overrides.items())) for u in drawn}) == 5
    assert all(1e-4 <= u.overrides["lr"] <= 1e-2 for u in drawn)


@pytest.mark.parametrize(
    ("sets", "says"),
    [
        (["train.ensemble=2", "train.sweep={method: grid, values: {width: [8]}}"], "choose one"),
        (["train.sweep={method: grid, values: {depth: [2]}}"], "'depth' cannot be swept"),
        (["train.sweep={method: grid, ranges: {lr: [0.001, 0.01]}}"], "grid takes values only"),
        (["train.ensemble=0"], "train.ensemble"),
        (["train.sweep={values: {width: [8]}}"], "method: off runs no sweep"),
    ],
)
def test_bad_unit_settings_are_refused_naming_the_field(sets, says):
    with pytest.raises(ConfigError, match=re.escape(says)):
        load_config(TINY, sets)


def test_the_cli_refuses_bad_unit_settings_with_exit_2(runs_dir):
    proc = cli("run", "train", "--config", str(TINY), "--set", "train.ensemble=0", check=False)
    assert proc.returncode == 2 and "train.ensemble" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_units_that_ask_for_a_gpu_never_share_a_worker(data, runs_dir, monkeypatch):
    """On a cuda cluster every unit asks for resources={"GPU": 1}; here two CPU workers
    declare one GPU each (and two threads, so without the resource two units could run on
    one worker at once)."""
    from distributed import Client, LocalCluster

    cfg = _copy(data, runs_dir, "units-gpu", "train.ensemble=4")
    asked = []

    def gpu_resources(cluster, device):
        asked.append(device)
        return {"GPU": 1}

    monkeypatch.setattr(clusters, "task_resources", gpu_resources)
    use_worker_defaults()
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=2, processes=True, dashboard_address=None,
            resources={"GPU": 1},
        ) as lc,
        Client(lc) as client,
    ):  # fmt: skip
        run_stage("train", cfg, client=client)
        workers = set(client.scheduler_info()["workers"])
    assert asked == ["cpu"]
    units = RunStore.named(cfg.store).record("train").details["units"]
    assert {u["worker"] for u in units} <= workers and len(units) == 4
    for w in {u["worker"] for u in units}:
        spans = sorted((u["started"], u["finished"]) for u in units if u["worker"] == w)
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False)), spans


def test_an_ensemble_trains_on_the_workers_and_resumes_nothing_finished(data, runs_dir, client):
    cfg = _copy(data, runs_dir, "units-ens", "train.ensemble=3")
    first = run_stage("train", cfg, client=client)
    assert first.computed == 9 and first.total == 9
    store = RunStore.named(cfg.store)
    rec = store.record("train")
    workers = set(client.scheduler_info()["workers"])
    assert [u["unit"] for u in rec.details["units"]] == ["member-00", "member-01", "member-02"]
    assert {u["worker"] for u in rec.details["units"]} <= workers
    assert rec.details["kind"] == "ensemble" and rec.metrics["ensemble_members"] == 3
    assert sum(r.startswith(f"{store.meta.name}/work/train/ensemble/") for r in rec.artifacts) == 3
    # Members differ (their seeds), the ensemble's spread is stored for quantify.
    w = [_weights(store, f"member-0{k}") for k in range(3)]
    assert not _same(w[0], w[1])
    ds = store.open_dataset("train_ensemble")
    assert float(ds["ensemble_std"].isel(time=slice(1, None)).mean()) > 0
    assert float(ds["ensemble_std"].isel(time=0).max()) == 0  # the input frame is exact
    # Nothing finished is trained again; a removed result re-trains nothing either (its last
    # checkpoint holds every epoch: the unit only writes its result again).
    assert run_stage("train", cfg, client=client).computed == 0
    (store.unit_dir("train", "member-01") / "result.json").unlink()
    again = run_stage("train", cfg, client=client)
    assert again.computed == 0 and _same(_weights(store, "member-01"), w[1])
    shown = json.loads(cli("show", cfg.store, "--json").stdout)
    assert [u["unit"] for u in shown["stages"]["train"]["units"]] == [
        "member-00", "member-01", "member-02"
    ]  # fmt: skip


def test_ensemble_scores_come_from_the_members_own_test_predictions(data, runs_dir, client):
    """The units predict the test split on the workers; the stage's scores and spread equal an
    ensemble evaluated here from the stage's member files. A damaged prediction file makes its
    unit unfinished: it is written again, no epoch is trained, the scores are unchanged."""
    import numpy as np

    from pdeflow.storage import FileEntry
    from pdeflow.tasks.metrics import nrmse
    from pdeflow.tasks.stages.models import unit_parameters
    from pdeflow.tasks.surrogates.ensemble import Ensemble
    from pdeflow.tasks.surrogates.factory import model_from_state

    cfg = _copy(data, runs_dir, "units-ens-scores", "train.ensemble=2")
    run_stage("train", cfg, client=client)
    store = RunStore.named(cfg.store)
    rec = store.record("train")
    entries = rec.artifact_entries()
    files = [u["stage_file"] for u in rec.details["units"]]
    members = [model_from_state(cfg, store.load_model(f, FileEntry(*entries[f]))) for f in files]
    ens, test, p_all = Ensemble(members), store.sample_indices("test"), unit_parameters(store, cfg)
    true = np.concatenate([u for _, u in store.iter_chunks(test)]).astype(np.float64)
    u0 = torch.as_tensor(true[:, :1], dtype=torch.float32).flatten(1, 2)
    mean, std = ens.rollout(
        u0, torch.as_tensor(p_all[test], dtype=torch.float32), true.shape[1] - 1
    )
    expected = float(nrmse(mean.double().numpy()[:, 1:], true[:, 1:], true.ndim - 3).mean())
    # Float32 rollouts here (2 threads) and on a worker (1 thread) may differ in the last bits.
    assert rec.metrics["nrmse_rollout"] == pytest.approx(expected, rel=1e-5)
    stored = store.open_dataset("train_ensemble")["ensemble_std"].values
    np.testing.assert_allclose(stored, std.double().numpy(), rtol=1e-4, atol=1e-6)

    # The run was killed before the stage's record, and one unit's predictions are damaged.
    (store.meta / "stages" / "train.json").unlink()
    damaged = store.unit_dir("train", "member-01") / "predictions.pt"
    raw = bytearray(damaged.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    damaged.write_bytes(raw)
    again = run_stage("train", cfg, client=client)
    assert again.computed == 0  # its last checkpoint holds every epoch
    assert damaged.read_bytes() != bytes(raw)
    assert store.record("train").metrics["nrmse_rollout"] == rec.metrics["nrmse_rollout"]


def test_a_worker_killed_mid_unit_loses_at_most_one_epoch(data, runs_dir, client):
    """SIGKILL the worker training member-00 once it has checkpointed an epoch: its nanny
    restarts it, Dask runs the task again, the unit resumes from its checkpoint, and every
    unit ends with exactly the weights of an undisturbed run."""
    sets = ("train.ensemble=2", "train.epochs=6")
    ref = _copy(data, runs_dir, "units-kill-ref", *sets)
    run_stage("train", ref, client=client)
    cfg = _copy(data, runs_dir, "units-kill", *sets)
    store = RunStore.named(cfg.store)
    log = TrainingLog(store, "member-00")
    pids = client.run(os.getpid)
    killed = {}

    def killer() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            events = log.read()
            starts = [e for e in events if e["event"] == "start"]
            if starts and any(e["event"] == "epoch" for e in events):
                killed["worker"] = starts[0]["worker"]
                killed["after"] = max(e["epoch"] for e in events if e["event"] == "epoch")
                os.kill(pids[killed["worker"]], signal.SIGKILL)
            time.sleep(0.05)

    thread = threading.Thread(target=killer)
    thread.start()
    summary = run_stage("train", cfg, client=client)
    thread.join()
    assert killed, "the unit finished before it could be killed"
    starts = [e for e in log.read() if e["event"] == "start"]
    assert len(starts) == 2 and starts[1]["resumed_from_epoch"] >= killed["after"]
    epochs = [e["epoch"] for e in log.read() if e["event"] == "epoch"]
    # At most the epoch that was running when the worker died ran twice.
    assert len(epochs) - len(set(epochs)) <= 1 and sorted(set(epochs)) == list(range(1, 7))
    assert summary.total == 12
    reference = RunStore.named(ref.store)
    for unit in ("member-00", "member-01"):
        assert _same(_weights(store, unit), _weights(reference, unit)), unit


@pytest.mark.parametrize("method", ["grid", "optuna"])
def test_a_sweep_keeps_its_best_trial(data, runs_dir, client, method):
    sweep = (
        "train.sweep={method: grid, values: {width: [4, 12], lr: [0.003]}}"
        if method == "grid"
        else "train.sweep={method: optuna, values: {width: [4, 12]}, ranges: {lr: [0.001, "
        "0.01]}, n_trials: 3}"
    )
    cfg = _copy(data, runs_dir, f"units-sweep-{method}", sweep)
    summary = run_stage("train", cfg, client=client)
    store = RunStore.named(cfg.store)
    rec = store.record("train")
    units = rec.details["units"]
    assert len(units) == (2 if method == "grid" else 3) and summary.computed == 3 * len(units)
    best = min(units, key=lambda u: u["val_nrmse_one_step"])
    assert rec.details["best"] == best["unit"]
    assert rec.metrics["val_nrmse_one_step"] == best["val_nrmse_one_step"]
    stage_model = torch.load(store.work_dir("train") / "model.pt", weights_only=True)
    assert _same(stage_model, _weights(store, best["unit"]))
    if method == "optuna":
        plans = [json.loads((store.unit_dir("train", u["unit"]) / "plan.json").read_text())
                 for u in units]  # fmt: skip
        assert [p["overrides"] for p in plans] == [u["overrides"] for u in units]
        assert all(set(u["overrides"]) == {"width", "lr"} for u in units)
    assert run_stage("train", cfg, client=client).computed == 0
    if method == "optuna":
        # Killed after trial-002 was asked but before it trained: its plan stays, and the
        # study replays with it (same settings) instead of asking again; nothing else reruns.
        last = store.unit_dir("train", "trial-002")
        for name in ("result.json", "model.pt", "checkpoints"):
            shutil.rmtree(last / name) if (last / name).is_dir() else (last / name).unlink()
        (store.meta / "stages" / "train.json").unlink()
        again = run_stage("train", cfg, client=client)
        assert again.computed == 3
        assert store.record("train").details["units"][2]["overrides"] == units[2]["overrides"]


def test_the_config_names_every_model_of_the_zoo():
    from typing import get_args

    from pdeflow.tasks.config_train import SurrogateName
    from pdeflow.tasks.surrogates.zoo import MODELS

    names = set(get_args(SurrogateName)) - {"auto", "fno1d", "fno2d", "fno3d"}
    assert names == set(MODELS)


def test_history_and_pushforward_train_through_the_stage(data, runs_dir):
    """Multi-frame windows come from TrajectoryDataset; the stage scores the rollout from the
    first `history` frames, which are inputs and never scored."""
    cfg = _copy(data, runs_dir, "units-windows", "train.history=3", "train.pushforward=2",
                "train.noise_std=0.01")  # fmt: skip
    summary = run_stage("train", cfg)
    rec = RunStore.named(cfg.store).record("train")
    assert summary.computed == 3 and rec.status == "complete"
    assert rec.metrics["nrmse_one_step"] < rec.metrics["nrmse_persist_one_step"]
    state = torch.load(RunStore.named(cfg.store).work_dir("train") / "model.pt", weights_only=True)
    assert int(state["n_history"]) == 3
    # quantify propagates from initial states alone: a history model is refused before compute.
    proc = cli("run", "pipeline", "--config", str(TINY), "--set", f"store={cfg.store}",
               "--set", "train.history=3", check=False)  # fmt: skip
    assert proc.returncode == 2 and "train.history = 3" in proc.stderr
