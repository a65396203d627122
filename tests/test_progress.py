"""Progress a user can see: a line per interval from every stage, also while one unit is slow,
in the run's log (the UI's Logs tab) and with rate, time left, epochs and loss.

The interval is ``$PDEFLOW_PROGRESS_INTERVAL`` (10 s by default); these tests set 0.25-0.5 s.
"""

from __future__ import annotations

import logging
import time

import pytest

from pdeflow.storage import RunStore
from pdeflow.tasks.config import load_config
from pdeflow.tasks.stages import runner
from pdeflow.tasks.stages.base import (
    PROGRESS_INTERVAL_ENV,
    Outcome,
    ProgressLine,
    Stage,
    progress_interval,
)
from tests.conftest import TINY


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class SlowStage(Stage):
    """Three units; the second takes ``slow`` seconds and reports nothing meanwhile."""

    name = "quantify"  # the registry slot it borrows: its config section exists
    unit = "steps"
    uses_cluster = False
    slow = 1.6

    def problems(self, run, record, deep=True):
        return []

    def total(self, run):
        return 3

    def pending(self, run):
        return [0, 1, 2]

    def compute(self, run, units):
        for k in units:
            time.sleep(self.slow if k == 1 else 0.01)
            run.report(k + 1, 3, finished=f"unit {k}")

    def finish(self, run):
        return Outcome({"units": 3})


def _lines(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "pdeflow.progress"]


def test_a_slow_unit_still_gets_a_progress_line_per_interval(monkeypatch, caplog, runs_dir):
    monkeypatch.setenv(PROGRESS_INTERVAL_ENV, "0.25")
    monkeypatch.setitem(runner.REGISTRY, "quantify", SlowStage())
    cfg = load_config(TINY, ["store=progress-slow"])
    seen: list[tuple[int, int]] = []
    with caplog.at_level(logging.INFO, logger="pdeflow.progress"):
        summary = runner.run_stage("quantify", cfg, progress=lambda d, t: seen.append((d, t)))
    assert summary.computed == 3
    lines = _lines(caplog)
    beats = [r for r in lines if "elapsed" in r.getMessage() and "(done)" not in r.getMessage()]
    # 1.6 s of silence from the stage at 0.25 s: about 6 lines; a loaded machine may lose some.
    assert len(beats) >= 3, [r.getMessage() for r in lines]
    assert all("quantify: 1/3 steps" in r.getMessage() for r in beats[1:-1])
    assert lines[0].getMessage() == "quantify: starting, 0/3 steps done"
    assert lines[-1].getMessage().startswith("quantify: 3/3 steps (100%), finished unit 2")
    assert lines[-1].getMessage().endswith("(done)")
    # The sinks (CLI bars, progress artifact) see the start at 0, then every unit.
    assert seen == [(0, 3), (1, 3), (2, 3), (3, 3)]


def test_a_failing_stage_ends_its_progress_with_failed(monkeypatch, caplog, runs_dir):
    class Broken(SlowStage):
        slow = 0.0

        def compute(self, run, units):
            run.report(1, 3)
            raise RuntimeError("unit 1 broke")

    monkeypatch.setitem(runner.REGISTRY, "quantify", Broken())
    cfg = load_config(TINY, ["store=progress-broken"])
    with caplog.at_level(logging.INFO, logger="pdeflow.progress"):
        with pytest.raises(RuntimeError, match="unit 1 broke"):
            runner.run_stage("quantify", cfg)
    assert _lines(caplog)[-1].getMessage().endswith("(failed)")
    record = RunStore.named(cfg.store).record("quantify")
    assert record.status == "failed" and record.seconds is not None and record.seconds >= 0


def test_the_line_gives_rate_and_time_left_for_blocks():
    clock = _Clock()
    line = ProgressLine("generate", "blocks", 2, 10, interval=10, clock=clock)
    assert line.text() == "generate: 2/10 blocks (20%), 0 s elapsed"
    clock.now += 20.0
    line.update(4, 10, samples=128)  # 2 blocks of 64 samples in 20 s
    assert line.text() == (
        "generate: 4/10 blocks (40%), 6.4 samples/s, about 1 min 00 s left, 20 s elapsed"
    )


def test_the_line_gives_epochs_and_loss_for_training():
    clock = _Clock()
    line = ProgressLine("train", "epochs", 0, 50, interval=10, clock=clock)
    line.note(epoch=1, batch=7, batch_loss=0.25)
    clock.now += 3700.0
    assert line.text() == (
        "train: 0/50 epochs (0%), epoch 1, batch 7, batch_loss 0.25, 1 h 01 min elapsed"
    )
    line.update(10, 50, loss=0.125, val_loss=0.5)
    assert "10/50 epochs (20%)" in line.text() and "loss 0.125, val_loss 0.5" in line.text()
    assert "about 4 h 06 min left" in line.text()


@pytest.mark.parametrize("value", ["0", "-1", "soon", "inf"])
def test_a_bad_interval_names_the_variable(monkeypatch, value):
    monkeypatch.setenv(PROGRESS_INTERVAL_ENV, value)
    with pytest.raises(ValueError, match=PROGRESS_INTERVAL_ENV):
        progress_interval()


def test_progress_lines_from_the_stage_thread_reach_the_task_runs_log(prefect_api):
    """The lines are logged from a background thread: they must still land in the task run's
    log on the server (what the UI's Logs tab shows)."""
    import asyncio

    from prefect import flow, get_client, task
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    @task
    def slow_unit() -> None:
        with ProgressLine("generate", "blocks", 0, 2, interval=0.25) as line:
            time.sleep(1.0)
            line.update(2, 2, samples=32)

    @flow
    def progress_flow() -> None:
        slow_unit()

    state = progress_flow(return_state=True)
    flow_run_id = state.state_details.flow_run_id

    async def read() -> list:
        async with get_client() as client:
            found = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
            return await client.read_logs(log_filter=found)

    def finished(logs: list) -> bool:
        return any("2/2 blocks (100%)" in x.message for x in logs)

    # Logs are shipped in batches, so the last line can reach the server a batch after the
    # heartbeats: wait for it (not for a count, which the heartbeats alone can reach).
    deadline = time.monotonic() + 30
    while True:
        logs = [x for x in asyncio.run(read()) if x.name == "pdeflow.progress"]
        if finished(logs) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    beats = [x for x in logs if "0/2 blocks" in x.message and "elapsed" in x.message]
    assert beats and all(x.task_run_id is not None for x in logs), [x.message for x in logs]
    assert finished(logs), [x.message for x in logs]
