"""Fault injection: kill or fail a run, resume it, count what was recomputed, compare values.

Faults come from a test-support simulator (``tests/fault_sims.py``), a ``pde: custom`` Python
function that logs every call and obeys a marker file; training is killed from outside, mid-epoch,
recognised by the training log. Each resumed store must equal an uninterrupted run value for value.
SIGKILL of the whole generating process is ``tests/test_generate.py``'s
``test_sigkill_then_rerun_computes_only_missing_blocks``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

from pdeflow.storage import RunStore
from pdeflow.storage.checkpoints import list_checkpoints
from pdeflow.storage.fsio import TMP_MARK
from pdeflow.tasks.config import PipelineConfig, load_config
from pdeflow.tasks.sampling import sample_seeds
from pdeflow.tasks.stages import GenerationError, run_stage
from pdeflow.tasks.stages.registry import PIPELINE_STAGES
from pdeflow.tasks.stages.train import TrainingLog
from tests.cli_helpers import cli, kill_when
from tests.conftest import ROOT, TINY
from tests.fault_sims import solves_per_block
from tests.stage_helpers import block_files, complete_blocks, generate

pytestmark = pytest.mark.faults

CUSTOM = ROOT / "tests" / "configs" / "custom_python.yaml"
N_SAMPLES, BLOCK = 32, 8  # four blocks of one chunk each
N_BLOCKS = N_SAMPLES // BLOCK
# Epochs of a few seconds (batch 4): a kill right after an epoch's first batch lands mid-epoch.
SLOW_TRAIN = ["train.epochs=4", "train.batch_size=4", "train.width=12", "train.modes=8"]


def fault_config(name: str, files: Path) -> PipelineConfig:
    """The heat-rod pipeline in four blocks, solved by the faulting simulator logging to
    ``files/log`` and obeying ``files/marker``."""
    files.mkdir(parents=True, exist_ok=True)
    return load_config(
        CUSTOM,
        [
            f"store={name}",
            f"generate.n_samples={N_SAMPLES}",
            f"generate.block_size={BLOCK}",
            "generate.simulator.target=tests.fault_sims:heat_rod_with_faults",
            f"generate.simulator.options.log={files / 'log'}",
            f"generate.simulator.options.marker={files / 'marker'}",
        ],
    )


def block_of_seed(cfg: PipelineConfig) -> dict[int, int]:
    seeds = sample_seeds(cfg.generate.seed, np.arange(N_SAMPLES))
    return {int(s): i // BLOCK for i, s in enumerate(seeds)}


def first_seed(cfg: PipelineConfig, block: int) -> int:
    return int(sample_seeds(cfg.generate.seed, np.array([block * BLOCK]))[0])


def calls(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def assert_same_store(path: Path, reference: Path) -> None:
    """Every data variable and coordinate, and the manifest, equal value for value."""
    ds, ref = xr.open_zarr(path), xr.open_zarr(reference)
    assert set(ds.variables) == set(ref.variables)
    for name in ref.variables:
        np.testing.assert_array_equal(ds[name].values, ref[name].values, err_msg=name)
    assert block_files(path) == block_files(reference)
    assert complete_blocks(path) == list(range(N_BLOCKS))


@pytest.fixture(scope="module")
def reference(client, tmp_path_factory) -> Path:
    """An uninterrupted run of the faulting simulator, no marker: one solve per block."""
    files = tmp_path_factory.mktemp("reference")
    cfg = fault_config("faults-reference", files)
    assert generate(cfg, client).computed == N_BLOCKS
    assert solves_per_block(files / "log", block_of_seed(cfg)) == dict.fromkeys(range(N_BLOCKS), 1)
    return RunStore.named(cfg.store).path


def test_worker_killed_mid_block_recomputes_only_that_block(client, reference, tmp_path):
    cfg = fault_config("faults-worker-killed", tmp_path)
    killed = N_BLOCKS - 1  # solved after another block on the same worker (checked below)
    order = {"action": "kill", "seed": first_seed(cfg, killed)}
    (tmp_path / "marker").write_text(json.dumps(order))
    summary = generate(cfg, client)
    assert not (tmp_path / "marker").exists(), "the worker was never killed"
    log = calls(tmp_path / "log")
    seed_block = block_of_seed(cfg)
    attempts = [c["pid"] for c in log if seed_block[c["seeds"][0]] == killed]
    assert len(attempts) == 2 and attempts[0] != attempts[1]
    # The dead worker held a finished block: Dask would recompute it (prefect #15442) unless
    # generate drops finished futures and solve_block skips blocks the manifest has.
    first_kill = next(i for i, c in enumerate(log) if c["pid"] == attempts[0])
    assert seed_block[log[first_kill]["seeds"][0]] != killed, "no finished block was at risk"
    expected = {b: 1 for b in range(N_BLOCKS)} | {killed: 2}
    assert solves_per_block(tmp_path / "log", seed_block) == expected
    assert summary.metrics == {"blocks_total": N_BLOCKS, "blocks_complete": N_BLOCKS}
    assert RunStore.named(cfg.store).record("generate").status == "complete"
    assert_same_store(RunStore.named(cfg.store).path, reference)


def test_block_that_raises_fails_alone_and_rerun_solves_only_it(client, reference, tmp_path):
    cfg = fault_config("faults-block-raises", tmp_path)
    failing = 1
    order = {"action": "raise", "seed": first_seed(cfg, failing)}
    (tmp_path / "marker").write_text(json.dumps(order))
    with pytest.raises(GenerationError) as err:
        generate(cfg, client)
    message = str(err.value)
    assert f"1 of {N_BLOCKS} blocks failed" in message and f"\nblock {failing}: " in message
    assert "InjectedFault" in message
    store = RunStore.named(cfg.store)
    assert failing not in complete_blocks(store.path)
    assert sorted(complete_blocks(store.path)) == sorted(set(range(N_BLOCKS)) - {failing})
    assert store.record("generate").status == "failed"
    # Nothing of the failed block was written: its samples are still the template's NaN.
    rows = slice(failing * BLOCK, (failing + 1) * BLOCK)
    assert np.isnan(xr.open_zarr(store.path).T.values[rows]).all()
    seed_block = block_of_seed(cfg)
    assert solves_per_block(tmp_path / "log", seed_block) == dict.fromkeys(range(N_BLOCKS), 1)

    (tmp_path / "marker").unlink()
    assert generate(cfg, client).computed == 1
    expected = {b: 1 for b in range(N_BLOCKS)} | {failing: 2}
    assert solves_per_block(tmp_path / "log", seed_block) == expected
    assert store.record("generate").status == "complete"
    assert_same_store(store.path, reference)


@pytest.fixture(scope="module")
def train_data(client) -> str:
    cfg = load_config(TINY, ["store=faults-train-data"])
    generate(cfg, client)
    return cfg.store


def _train_args(store: str) -> list[str]:
    args = ["run", "train", "--config", str(TINY), "--set", f"store={store}"]
    return args + sum((["--set", s] for s in SLOW_TRAIN), [])


def test_training_killed_mid_epoch_resumes_from_its_checkpoint(
    prefect_api, train_data, runs_dir, client
):
    n_epochs = int(SLOW_TRAIN[0].split("=")[1])
    for name in ("faults-train-ref", "faults-train-killed"):
        shutil.copytree(runs_dir / train_data, runs_dir / name)
    # The reference trains on the session's cluster, as the CLI does on its own: one unit on a
    # single-threaded worker, so equal weights mean the resume restored every piece of
    # training state.
    run_stage("train", load_config(TINY, ["store=faults-train-ref", *SLOW_TRAIN]), client=client)
    store = RunStore.named("faults-train-killed")
    log = TrainingLog(store)
    checkpoints = store.unit_dir("train", "model") / "checkpoints"

    def inside_epoch_after_checkpoint() -> bool:
        found = list_checkpoints(checkpoints)
        if not found:
            return False
        done = int(found[-1].name[6:12])
        return any(e["event"] == "batch" and e["epoch"] == done + 1 for e in log.read())

    kill_when(_train_args(store.path.name), inside_epoch_after_checkpoint, freeze=True)
    killed_at = int(list_checkpoints(checkpoints)[-1].name[6:12])
    assert 1 <= killed_at < n_epochs
    before = log.read()
    # Killed inside epoch killed_at + 1: its batches had started, it never finished.
    assert any(e["event"] == "batch" and e["epoch"] == killed_at + 1 for e in before)
    assert [e["epoch"] for e in before if e["event"] == "epoch"] == list(range(1, killed_at + 1))
    assert store.record("train").status == "running"

    cli(*_train_args(store.path.name))
    # Whatever the kill left half-written (a temporary checkpoint) is gone once a run started.
    assert not [p for p in store.path.rglob("*") if TMP_MARK in p.name or ".partial" in p.name]
    record = store.record("train")
    assert record.status == "complete" and record.details["resumed_from_epoch"] == killed_at
    assert [h["epoch"] for h in record.details["history"]] == list(range(1, n_epochs + 1))
    after = log.read()[len(before) :]
    assert [e["resumed_from_epoch"] for e in after if e["event"] == "start"] == [killed_at]
    # Every epoch finished exactly once over both runs: none before the checkpoint re-ran.
    epochs = Counter(e["epoch"] for e in log.read() if e["event"] == "epoch")
    assert epochs == Counter(range(1, n_epochs + 1))
    resumed = torch.load(store.work_dir("train") / "model.pt", weights_only=True)
    reference = torch.load(
        RunStore.named("faults-train-ref").work_dir("train") / "model.pt", weights_only=True
    )
    assert resumed.keys() == reference.keys()
    for key, value in reference.items():
        assert torch.equal(resumed[key], value), key


def _latest_task_states(flow_run_id):
    """Task name -> state name of its latest task run in the flow run, and the flow run."""
    import asyncio

    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    async def read():
        async with get_client() as client:
            runs = await client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
            )
            flow_run = await client.read_flow_run(flow_run_id)
            return runs, flow_run

    runs, flow_run = asyncio.run(read())
    latest = {}
    for r in sorted(runs, key=lambda r: r.created):
        latest[r.name.rsplit("-", 1)[0]] = r.state.name
    return latest, flow_run


@pytest.mark.filterwarnings("ignore:Object at quantify is not recognized:UserWarning")
def test_failed_pipeline_retried_by_prefect_skips_finished_work(prefect_api, client):
    from pdeflow.flows.pipeline import pipeline

    # On this module's cluster (kind address): the run and its retry start no cluster of their own.
    address = client.scheduler.address
    cfg = load_config(
        TINY, ["store=faults-retry", "cluster.kind=address", f"cluster.address={address}"]
    )
    store = RunStore.named(cfg.store)
    # A storage fault in the last stage: a stray file where the quantify group's directory
    # goes makes its write fail after generate, train and reduce are finished.
    store.path.mkdir(parents=True)
    (store.path / "quantify").write_text("in the way")
    state = pipeline(config=cfg, return_state=True)
    assert state.is_failed(), state
    run_id = state.state_details.flow_run_id
    status = {s: store.record(s).status for s in PIPELINE_STAGES}
    assert status == {
        "generate": "complete",
        "train": "complete",
        "reduce": "complete",
        "quantify": "failed",
    }
    seconds = {b: e.seconds for b, e in store.complete_blocks().items()}
    train_log = TrainingLog(store).read()
    reduce_record = store.record("reduce")

    (store.path / "quantify").unlink()
    # What the UI's Retry does for a served deployment (set the run Scheduled; its runner then
    # executes the same flow run); without a deployment the CLI executes it here.
    proc = subprocess.run(
        [sys.executable, "-m", "prefect", "flow-run", "retry", str(run_id)]
        + ["--entrypoint", "pdeflow.flows.pipeline:pipeline"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    tasks, flow_run = _latest_task_states(run_id)
    assert flow_run.state.is_completed() and flow_run.run_count == 2
    # No Prefect result cache: every task ran again and asked the store what was done.
    assert set(tasks.values()) == {"Completed"} and len(tasks) == 4
    assert all(store.record(s).status == "complete" for s in PIPELINE_STAGES)
    # Nothing finished ran again: no block rewritten (each keeps its recorded wall time), no
    # training line written, the reduce record untouched.
    assert {b: e.seconds for b, e in store.complete_blocks().items()} == seconds
    assert TrainingLog(store).read() == train_log
    assert store.record("reduce") == reduce_record


def test_training_log_throttles_batch_lines_and_skips_a_torn_line(tmp_path):
    now = [0.0]
    log = TrainingLog(RunStore(tmp_path / "s"), interval=10.0, clock=lambda: now[0])
    on_batch = log.batches(epoch=3)
    for batch, t in enumerate((0.0, 4.0, 9.9, 10.0, 15.0, 20.5), start=1):
        now[0] = t
        on_batch(batch, 0.5)
    log.write("epoch", epoch=3)
    lines = log.read()
    # The epoch's first batch, then one per 10 s: t = 0, 10, 20.5.
    assert [(e["event"], e.get("batch")) for e in lines] == [
        ("batch", 1),
        ("batch", 4),
        ("batch", 6),
        ("epoch", None),
    ]
    assert all(e["epoch"] == 3 and e["pid"] == os.getpid() for e in lines)
    with open(log.events.path, "a") as fh:
        fh.write('{"event": "ba')  # a line still being written
    assert log.read() == lines
    with pytest.raises(ValueError, match="interval"):
        TrainingLog(tmp_path / "x", interval=-1)


SLOW_GENERATE = [
    "generate.n_samples=64",
    "generate.block_size=8",
    "generate.chunk_size=8",
    "generate.n_x=512",
    "generate.n_frames=101",
    "generate.t_end=3.0",
    "generate.dt=0.005",
]


def test_sigkill_then_rerun_computes_only_missing_blocks(client, runs_dir, prefect_api):
    ref = load_config(TINY, ["store=gen-reference", *SLOW_GENERATE])
    generate(ref, client)
    name = "gen-killed"
    path = runs_dir / name

    def half_done() -> bool:
        try:
            return 2 <= len(complete_blocks(path)) <= 5
        except Exception:  # the store is still being created
            return False

    args = ["run", "generate", "--config", str(TINY), "--set", f"store={name}"]
    args += sum((["--set", s] for s in SLOW_GENERATE), [])
    kill_when(args, half_done)
    done_before = len(complete_blocks(path))
    assert 2 <= done_before < 8
    assert RunStore(path).record("generate").status == "running"
    cli(*args)
    record = RunStore(path).record("generate")
    assert record.status == "complete"
    assert record.details["blocks_computed_last_run"] == 8 - done_before
    killed = xr.open_zarr(path).u.values
    np.testing.assert_array_equal(killed, xr.open_zarr(runs_dir / "gen-reference").u.values)
    assert block_files(path) == block_files(runs_dir / "gen-reference")
