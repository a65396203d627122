"""Faults of the stage lifecycle: an interrupted extension met by the shorter command, nested
store names, training that diverges or whose newest checkpoint is damaged, a full disk."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest
import torch
import xarray as xr

from pdeflow.storage import ConfigMismatch, RunStore
from pdeflow.storage.fsio import TMP_MARK
from pdeflow.tasks.config import load_config
from pdeflow.tasks.stages import GenerationError, run_stage
from pdeflow.tasks.surrogates import training
from tests.cli_helpers import cli
from tests.conftest import ROOT, TINY
from tests.stage_helpers import block_files, complete_blocks, generate

pytestmark = pytest.mark.faults
CUSTOM = ROOT / "tests" / "configs" / "custom_python.yaml"


def _faulting(name: str, files, n: int, design: str = "random"):
    """The heat-rod simulator (tests/fault_sims.py) in blocks of 8, logging to ``files``."""
    files.mkdir(parents=True, exist_ok=True)
    return load_config(
        CUSTOM,
        [
            f"store={name}",
            f"generate.n_samples={n}",
            "generate.block_size=8",
            f"generate.design={design}",
            "generate.simulator.target=tests.fault_sims:heat_rod_with_faults",
            f"generate.simulator.options.log={files / 'log'}",
            f"generate.simulator.options.marker={files / 'marker'}",
        ],
    )


def test_an_interrupted_extension_refuses_the_shorter_command(client, tmp_path, runs_dir):
    small = _faulting("ext-interrupted", tmp_path, 32)
    assert generate(small, client).computed == 4
    kept = block_files(runs_dir / small.store)
    grown = _faulting("ext-interrupted", tmp_path, 64)
    (tmp_path / "marker").write_text(json.dumps({"action": "raise", "after_calls": 5}))
    with pytest.raises(GenerationError):
        generate(grown, client)  # the extension stops after one new block
    (tmp_path / "marker").unlink()
    # The old 32-sample command: refused, naming the growth to finish, with nothing changed.
    with pytest.raises(ConfigMismatch, match=r"n_samples.*64 -> 32") as err:
        generate(small, client)
    assert "growth from 32 samples was interrupted" in str(err.value)
    proc = cli("run", "generate", "--config", str(CUSTOM), "--set", f"store={small.store}",
               "--set", "generate.design=random", "--set", "generate.block_size=8",
               "--set", "generate.simulator.target=tests.fault_sims:heat_rod_with_faults",
               "--set", f"generate.simulator.options.log={tmp_path / 'log'}",
               "--set", f"generate.simulator.options.marker={tmp_path / 'marker'}",
               "--set", "generate.n_samples=32", check=False)  # fmt: skip
    assert proc.returncode == 2 and "growth from 32 samples was interrupted" in proc.stderr
    after = block_files(runs_dir / small.store)
    assert {b: after[b] for b in kept} == kept and 5 <= len(after) < 8
    # The 64-sample command finishes the growth: only the missing blocks are solved.
    assert generate(grown, client).computed == 8 - len(after)
    ds = xr.open_zarr(runs_dir / small.store)
    assert ds.sizes["sample"] == 64 and np.isfinite(ds.T.values).all()


def test_a_store_inside_another_store_is_refused_before_anything_is_deleted(client, runs_dir):
    cfg = load_config(TINY, ["store=nest-host", "generate.n_samples=16", "generate.block_size=16"])
    generate(cfg, client)
    files = block_files(runs_dir / "nest-host")
    for name in ("nest-host/u", "nest-host/_pdeflow/x"):
        args = ["run", "generate", "--config", str(TINY), "--set", f"store={name}"]
        proc = cli(*args, "--overwrite", check=False)
        assert proc.returncode == 2 and "inside store 'nest-host'" in proc.stderr, proc.stderr
    assert block_files(runs_dir / "nest-host") == files
    host = RunStore.named("nest-host")
    assert host.block_problems(host.complete_blocks()) == {} and not host.template_problems()


@pytest.fixture(scope="module")
def train_store(client):
    cfg = load_config(TINY, ["store=diverge-data", "train.epochs=3"])
    generate(cfg, client)
    return cfg


def _copy(cfg, runs_dir, name: str):
    shutil.copytree(runs_dir / cfg.store, runs_dir / name)
    return cfg.model_copy(update={"store": name})


def _nan_at(monkeypatch, epoch: int, batch: int) -> None:
    """The loss of ``batch`` in ``epoch`` (1-based, counting from this run's first epoch) is
    NaN, as a diverging optimiser makes it; validation losses are left alone."""
    import pdeflow.tasks.stages.train_units as stage

    real_loss, real_epoch = training.one_step_loss, training.train_epoch
    at = {"epoch": 0, "batch": 0, "training": False}

    def loss(*args):
        value = real_loss(*args)
        if at["training"]:
            at["batch"] += 1
            if (at["epoch"], at["batch"]) == (epoch, batch):
                return value * float("nan")
        return value

    def train_epoch(*args, **kw):
        at.update(epoch=at["epoch"] + 1, batch=0, training=True)
        try:
            return real_epoch(*args, **kw)
        finally:
            at["training"] = False

    monkeypatch.setattr(training, "one_step_loss", loss)
    monkeypatch.setattr(stage, "train_epoch", train_epoch)


def test_a_non_finite_loss_stops_training_and_keeps_the_last_good_checkpoint(
    train_store, runs_dir, monkeypatch
):
    cfg = _copy(train_store, runs_dir, "diverge-nan")
    store = RunStore.named(cfg.store)
    _nan_at(monkeypatch, epoch=2, batch=3)
    with pytest.raises(FloatingPointError, match=r"epoch 2, batch 3.*checkpoint \(epoch 1\)"):
        run_stage("train", cfg)
    monkeypatch.undo()
    rec = store.record("train")
    assert rec.status == "failed" and "epoch 2, batch 3" in rec.error and not rec.artifacts
    state, _ = store.load_unit_checkpoint("train", "model")
    assert state["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    resumed = run_stage("train", cfg)  # a fixed cause: the run resumes after epoch 1
    assert resumed.computed == 2 and store.record("train").details["resumed_from_epoch"] == 1


def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(
    train_store, runs_dir, monkeypatch
):
    cfg = _copy(train_store, runs_dir, "diverge-truncated")
    store = RunStore.named(cfg.store)
    _nan_at(monkeypatch, epoch=3, batch=1)  # stops after the epoch-2 checkpoint
    with pytest.raises(FloatingPointError):
        run_stage("train", cfg)
    monkeypatch.undo()
    newest = store.unit_dir("train", "model") / "checkpoints" / "epoch-000002.pt"
    with open(newest, "r+b") as fh:
        fh.truncate(newest.stat().st_size // 3)
    summary = run_stage("train", cfg)
    assert summary.computed == 2  # epochs 2 and 3 again, from epoch 1
    assert any("epoch-000002.pt is damaged" in note for note in summary.notes)
    rec = store.record("train")
    assert rec.status == "complete" and rec.details["resumed_from_epoch"] == 1


def _mount_tmpfs(path, size: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True, text=True)  # fmt: skip
    if proc.returncode:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {proc.stderr.strip()}")


def test_a_full_disk_fails_blocks_without_marking_them(client, tmp_path, monkeypatch):
    disk = tmp_path / "disk"
    _mount_tmpfs(disk, "2m")
    try:
        monkeypatch.setenv("PDEFLOW_RUNS_DIR", str(disk))
        # 64 samples x 101 frames x 512 points x 4 B = 13 MB: blocks stop fitting after ~2 MB.
        over = ["store=full", "generate.n_x=512", "generate.n_frames=101", "generate.t_end=1.0"]
        over += ["generate.dt=0.002", "generate.block_size=8", "generate.chunk_size=8"]
        cfg = load_config(TINY, over)
        with pytest.raises(GenerationError, match="No space left on device"):
            generate(cfg, client)
        path = disk / "full"
        store = RunStore(path)
        done = complete_blocks(path)
        assert len(done) < 8 and store.block_problems(store.complete_blocks()) == {}
        # "failed" when the record still fitted on the disk, else still "running": never done.
        assert store.record("generate").status in ("failed", "running")
        assert not [p for p in path.rglob("*") if TMP_MARK in p.name]
        subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
        assert generate(cfg, client).computed == 8 - len(done)
        assert store.block_problems(store.complete_blocks()) == {}
        assert np.isfinite(xr.open_zarr(path).u.values).all()
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)
