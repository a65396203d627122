"""A scheduled incremental deployment on a real Prefect server, fired twice, grows the store twice.

``pdeflow serve`` serves the pipeline with an interval schedule of a few seconds whose parameters
are ``{config: tiny overrides, extend_by: 16}``; the server's scheduler creates the runs, the
serving process executes them one at a time (``--limit 1``). After two runs the deployment is
paused (which deletes its remaining scheduled runs) and serving stops.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time

import psutil
import pytest
import yaml

from pdeflow.flows.serve import load_flow, parse_schedules, schedule_parameters
from pdeflow.storage import ConfigMismatch, RunStore, StageRecord
from pdeflow.tasks import datasets
from pdeflow.tasks.config import PipelineConfig, load_config
from pdeflow.tasks.stages import config_of, hash_of
from pdeflow.tasks.stages.extend import ExtensionError, plan_extension, stored_samples
from tests.conftest import TINY
from tests.e2e.prefect_server import api, prefect_server, server_env, stop_group
from tests.stage_helpers import block_files

INITIAL, N, BLOCK = 32, 16, 16
INTERVAL_S = 3
SCHEDULE = {
    "deployment": "pipeline",
    "interval": INTERVAL_S,
    "parameters": {
        "extend_by": N,
        "config": {
            "store": "scheduled",
            "cluster": {"n_workers": 1},
            "generate": {
                "design": "random",
                "n_samples": INITIAL,
                "block_size": BLOCK,
                "chunk_size": 8,
            },
            # alpha 0.2: split-conformal bands need n_cal >= 8 here; 48 samples hold 8.
            "quantify": {"n_mc": 16, "n_resplits": 5, "sobol_n_base": 8, "alpha": 0.2},
        },
    },
}
# The scheduler creates runs within a second of the deployment's registration and keeps only a
# few ahead; the late-runs and foreman services have nothing to do here.
SERVER_ENV = {
    "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "1",
    "PREFECT_SERVER_SERVICES_SCHEDULER_RECENT_DEPLOYMENTS_LOOP_SECONDS": "1",
    "PREFECT_SERVER_SERVICES_SCHEDULER_MAX_RUNS": "3",
    "PREFECT_SERVER_SERVICES_LATE_RUNS_ENABLED": "false",
    "PREFECT_SERVER_SERVICES_FOREMAN_ENABLED": "false",
}
STARTED = {"PENDING", "RUNNING", "COMPLETED", "FAILED", "CRASHED", "CANCELLING", "CANCELLED"}
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
RUNS_TIMEOUT_S = 300


@pytest.fixture(scope="module")
def scheduled_config() -> PipelineConfig:
    """The config each scheduled run receives, before it grows ``n_samples``."""
    (entry,) = parse_schedules([SCHEDULE])
    params = schedule_parameters(entry, load_config(TINY), load_flow("pipeline"), "test")
    return PipelineConfig.model_validate(params["config"])


def _pregenerate(cfg: PipelineConfig) -> None:
    """The store the schedule extends: the generate stage alone, no model trained yet."""
    from distributed import Client

    from tests.stage_helpers import generate

    with Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=":0") as c:
        generate(cfg, c)


def _block_seconds(store: RunStore) -> dict[int, float]:
    """Solve time recorded per block: a block solved again would record a new one."""
    return {b: e.seconds for b, e in store.complete_blocks().items()}


def _runs(base: str, deployment_id: str) -> list[dict]:
    body = {"flow_runs": {"deployment_id": {"any_": [deployment_id]}}, "sort": "START_TIME_ASC"}
    return api(base, "/flow_runs/filter", body)


def _serve_until_two_runs(base: str, home, runs_dir, schedules) -> list[str]:
    """Serve, wait for two started runs, pause the deployment, wait for both to end; stop."""
    log = home / "serve.log"
    env = server_env(
        home,
        PREFECT_API_URL=f"{base}/api",
        PDEFLOW_RUNS_DIR=str(runs_dir),
        PREFECT_RUNNER_POLL_FREQUENCY="1",
    )
    cmd = [sys.executable, "-m", "pdeflow.flows.cli", "serve", "--config", str(TINY)]
    with log.open("w") as out:
        proc = subprocess.Popen(
            [*cmd, "--schedules", str(schedules), "--limit", "1"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    try:
        deadline, paused, dep_id = time.monotonic() + RUNS_TIMEOUT_S, False, None
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"pdeflow serve exited:\n{log.read_text()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"two scheduled runs did not finish:\n{log.read_text()}")
            time.sleep(0.5)
            if dep_id is None:
                deps = api(base, "/deployments/filter", {})
                dep_id = next((d["id"] for d in deps if d["name"] == "pipeline"), None)
                continue
            started = [r for r in _runs(base, dep_id) if r["state_type"] in STARTED]
            if len(started) >= 2 and not paused:
                # Deletes the deployment's runs still scheduled: no third run starts.
                api(base, f"/deployments/{dep_id}/pause_deployment", {})
                paused = True
            if paused and all(r["state_type"] in TERMINAL for r in started):
                break
        # A run is final in the API before its process has exited; stopping the runner then
        # would cancel it. Let the flow-run processes end first.
        _, alive = psutil.wait_procs(psutil.Process(proc.pid).children(), timeout=60)
        assert not alive, f"flow-run processes still running:\n{log.read_text()}"
        return [r["id"] for r in started]
    finally:
        stop_group(proc, grace=30)


def test_scheduled_runs_extend_the_store_twice(tmp_path, runs_dir, scheduled_config):
    cfg = scheduled_config
    _pregenerate(cfg)
    store = RunStore.named(cfg.store)
    kept_files, kept_seconds = block_files(store.path), _block_seconds(store)
    assert stored_samples(store) == INITIAL and len(kept_files) == INITIAL // BLOCK
    schedules = tmp_path / "schedules.yaml"
    schedules.write_text(yaml.safe_dump([SCHEDULE]))

    with prefect_server(tmp_path / "server", "--no-ui", **SERVER_ENV) as base:
        ids = _serve_until_two_runs(base, tmp_path / "server", runs_dir, schedules)
        # Read after serving stopped: stopping must not have changed what the runs left.
        runs = [api(base, f"/flow_runs/{i}") for i in ids]
        states = [(r["state_type"], r["state"]["message"]) for r in runs]
        log = (tmp_path / "server" / "serve.log").read_text()
        assert [t for t, _ in states] == ["COMPLETED", "COMPLETED"], f"{states}\n{log[-4000:]}"
        assert all(r["auto_scheduled"] for r in runs)
        artifacts = api(
            base,
            "/artifacts/filter",
            {"artifacts": {"key": {"any_": ["pdeflow-scheduled-changes"]}}},
        )

    # The store grew INITIAL -> +N -> +2N, each run solving only its new block.
    final = INITIAL + 2 * N
    assert stored_samples(store) == final
    gen = store.record("generate")
    assert gen.status == "complete" and gen.config["generate"]["n_samples"] == final
    assert gen.details["extended_from"] == INITIAL + N
    assert "planned_extension" not in gen.details
    lineage = [
        {k: e[k] for k in ("from", "to", "blocks_computed", "flow_run_id")}
        for e in gen.details["extensions"]
    ]
    assert lineage == [
        {"from": INITIAL, "to": INITIAL + N, "blocks_computed": N // BLOCK, "flow_run_id": ids[0]},
        {"from": INITIAL + N, "to": final, "blocks_computed": N // BLOCK, "flow_run_id": ids[1]},
    ]
    # No model existed before the first run; the second warm-started from the first's.
    assert [e["warm_started"] for e in gen.details["extensions"]] == [False, True]
    grown = cfg.model_copy(
        update={"generate": cfg.generate.model_copy(update={"n_samples": final})}
    )
    for stage in ("train", "reduce", "quantify"):
        rec = store.record(stage)
        assert rec.status == "complete" and rec.config_hash == hash_of(grown, stage), stage
    assert store.record("train").details["warm_started"] is True

    # Manifest: every block complete, its files' bytes match it; the first blocks untouched.
    files = block_files(store.path)
    assert sorted(files) == list(range(final // BLOCK))
    assert store.block_problems(store.complete_blocks(), deep=True) == {}
    assert {b: files[b] for b in kept_files} == kept_files
    assert {b: _block_seconds(store)[b] for b in kept_seconds} == kept_seconds

    # Each run published what it changed.
    reports = {a["flow_run_id"]: a["data"] for a in artifacts}
    assert f"samples: {INITIAL} -> {INITIAL + N} (+{N})" in reports[ids[0]]
    assert f"samples: {INITIAL + N} -> {final} (+{N})" in reports[ids[1]]
    assert "warm-started" in reports[ids[1]] and "from scratch" in reports[ids[0]]


def _template_store(name: str, design: str = "random", **record) -> PipelineConfig:
    """A store of INITIAL samples whose generate record says ``record`` (no solve needed)."""
    cfg = load_config(TINY, [f"store={name}", f"generate.design={design}"])
    cfg = cfg.model_copy(
        update={"generate": cfg.generate.model_copy(update={"n_samples": INITIAL})}
    )
    store = RunStore.named(name)
    status = record.pop("status", "complete")
    rec = StageRecord(
        stage="generate",
        config_hash=hash_of(cfg, "generate"),
        config=config_of(cfg, "generate"),
        status=status,
        details=record,
    )
    with store.lock():
        store.write_template(datasets.template(cfg.generate))
        store.write_record(rec)
    return cfg


def _n(cfg: PipelineConfig, extend_by: int, **kw) -> tuple[int, int]:
    grown, before = plan_extension(cfg, extend_by, **kw)
    return grown.generate.n_samples, before


def test_plan_extension_grows_from_what_the_store_holds(runs_dir):
    cfg = _template_store("plan-complete")
    assert _n(cfg, N) == (INITIAL + N, INITIAL)
    assert _n(cfg, 0) == (INITIAL, INITIAL)
    # The config's n_samples sizes a new store only; the store's own size wins.
    bigger = cfg.model_copy(update={"generate": cfg.generate.model_copy(update={"n_samples": 99})})
    assert _n(bigger, N) == (INITIAL + N, INITIAL)
    new = cfg.model_copy(update={"store": "plan-missing"})
    assert _n(new, N) == (INITIAL, 0)
    # An interrupted extension 16 -> 32 is finished, not grown again (a retried run).
    cfg = _template_store("plan-pending", status="running", extended_from=INITIAL - N)
    assert _n(cfg, N) == (INITIAL, INITIAL - N)
    assert _n(cfg, 2 * N) == (INITIAL - N + 2 * N, INITIAL - N)
    # A retried flow run keeps the size it planned, even once its generate stage completed.
    plan = {"flow_run_id": "run-1", "from": INITIAL - N, "to": INITIAL}
    cfg = _template_store("plan-retry", planned_extension=plan)
    assert _n(cfg, N, run_id="run-1") == (INITIAL, INITIAL - N)
    assert _n(cfg, N, run_id="run-2") == (INITIAL + N, INITIAL)
    # A first generation that never finished is finished first.
    cfg = _template_store("plan-first", status="running")
    assert _n(cfg, N) == (INITIAL, 0)


@pytest.mark.parametrize(
    ("design", "extend_by", "kw", "error", "fragment"),
    [
        ("sobol", N, {}, ExtensionError, "extend_by: a Sobol' design is balanced only at powers"),
        ("lhs", N, {}, ExtensionError, "generate.design: a 'lhs' design cannot be extended"),
        ("random", N, {"overwrite": True}, ExtensionError, "cannot be combined with overwrite"),
        (
            "random",
            10_000_000,
            {},
            ExtensionError,
            "extend_by: 32 + 10000000 samples do not fit the config: generate.n_samples",
        ),
    ],
)
def test_plan_extension_refuses_before_computing(runs_dir, design, extend_by, kw, error, fragment):
    cfg = _template_store(f"plan-bad-{design}-{extend_by}-{len(kw)}", design=design)
    with pytest.raises(error, match=re.escape(fragment)):
        plan_extension(cfg, extend_by, **kw)


def test_plan_extension_checks_every_stage_it_runs(runs_dir):
    cfg = _template_store("plan-sobol", design="sobol")
    assert _n(cfg, INITIAL) == (2 * INITIAL, INITIAL)  # a power of 2: balanced
    other = cfg.model_copy(update={"generate": cfg.generate.model_copy(update={"grid": (32,)})})
    with pytest.raises(ConfigMismatch, match=r"generate.grid: \[64\] -> \[32\]"):
        plan_extension(other, INITIAL)
    store = RunStore.named(cfg.store)
    rec = StageRecord(stage="train", config_hash="x", config=config_of(cfg, "train"),
                      status="complete")  # fmt: skip
    with store.lock():
        store.write_record(rec)
    retrained = cfg.model_copy(update={"train": cfg.train.model_copy(update={"epochs": 5})})
    with pytest.raises(ConfigMismatch, match="train.epochs: 2 -> 5"):
        plan_extension(retrained, INITIAL, stages=("generate", "train"))
    assert _n(retrained, INITIAL) == (2 * INITIAL, INITIAL)  # generate alone: train not checked
