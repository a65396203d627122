"""The flows end to end, once, on the tiny config inside one Prefect test harness."""

from __future__ import annotations

import json

import pytest
import xarray as xr

from pdeflow.storage import RunStore
from pdeflow.tasks.config import load_config
from tests.cli_helpers import cli
from tests.conftest import TINY


@pytest.fixture(scope="module")
def first_run(prefect_api):
    from pdeflow.flows.pipeline import pipeline

    cfg = load_config(TINY, ["store=pipe"])
    state = pipeline(config=cfg, return_state=True)
    assert state.is_completed(), state.message
    return cfg, state.result()


def _task_states(flow_run_id) -> dict[str, str]:
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    async def read():
        async with get_client() as client:
            runs = await client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
            )
            return {r.name.rsplit("-", 1)[0]: r.state.name for r in runs}

    import asyncio

    return asyncio.run(read())


def test_pipeline_fills_every_stage(first_run):
    cfg, summaries = first_run
    assert list(summaries) == ["generate", "train", "reduce", "quantify"]
    store = RunStore.named(cfg.store)
    assert all(store.record(s).status == "complete" for s in summaries)
    reduce = xr.open_zarr(store.path, group="reduce")
    assert reduce.modes.shape == (summaries["reduce"]["metrics"]["rank"], cfg.generate.grid[0])
    assert reduce.modes.dims == ("mode", "feature")
    quantify = xr.open_zarr(store.path, group="quantify")
    assert set(quantify.parameter.values) == {"nu", "a1", "a2", "a3"}
    for name in ("solver", "surrogate", "rom"):
        assert quantify[f"mean_{name}"].shape == (cfg.generate.n_frames, 1, cfg.generate.grid[0])
        assert quantify[f"ST_{name}"].shape == (4,)
    m = summaries["quantify"]["metrics"]
    assert 0 <= m["conformal_coverage_resplit_mean"] <= 1 and "sobol_max_abs_diff_rom" in m


def test_rerun_skips_finished_stages_and_artifacts_exist(first_run):
    from prefect import get_client

    from pdeflow.flows.pipeline import pipeline

    cfg, _ = first_run
    store = RunStore.named(cfg.store)
    stamp = {s: store.record(s) for s in ("generate", "train", "reduce", "quantify")}
    state = pipeline(config=cfg, return_state=True)
    assert state.is_completed()
    states = _task_states(state.state_details.flow_run_id)
    # No Prefect result cache: each task asks the store, which says everything is done.
    assert set(states.values()) == {"Completed"} and len(states) == 4
    assert {name: s["computed"] for name, s in state.result().items()} == dict.fromkeys(stamp, 0)
    assert {s: store.record(s) for s in stamp} == stamp

    import asyncio

    async def keys():
        async with get_client() as client:
            return {a.key for a in await client.read_artifacts()}

    assert {
        "pdeflow-pipe-metrics",
        "pdeflow-pipe-report",
        "pdeflow-pipe-uq-metrics",
    } <= asyncio.run(keys())


def test_show_json_reports_stages_blocks_metrics(first_run):
    cfg, _ = first_run
    out = json.loads(cli("show", cfg.store, "--json").stdout)
    assert {s: v["status"] for s, v in out["stages"].items()} == dict.fromkeys(
        ("generate", "train", "reduce", "quantify"), "complete"
    )
    assert out["blocks"] == {"total": 4, "complete": 4}
    assert all(isinstance(v, int | float) for v in out["metrics"].values())
    assert "reduce.rom_rel_error_mean" in out["metrics"]
    human = cli("show", cfg.store).stdout
    assert "complete" in human and "4/4" in human


def test_show_gives_each_stage_start_end_and_duration(first_run):
    import datetime

    cfg, _ = first_run
    out = json.loads(cli("show", cfg.store, "--json").stdout)
    previous_end = None
    for name in ("generate", "train", "reduce", "quantify"):
        info = out["stages"][name]
        start = datetime.datetime.fromisoformat(info["started"])
        end = datetime.datetime.fromisoformat(info["finished"])
        assert start.tzinfo is not None and start <= end, info
        assert info["seconds"] == pytest.approx((end - start).total_seconds())
        assert previous_end is None or previous_end <= start  # stages in order, not overlapping
        previous_end = end
    human = cli("show", cfg.store).stdout
    seconds = out["stages"]["train"]["seconds"]
    assert f"{seconds:.1f} s)" in human and "started " in human


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--set", "generate.parameters.nu.low=-1"], "parameters.nu"),
        (["--set", "generate.dt=1.0"], "stability limit"),
        (["--set", "generate.pde=navier"], "'burgers'"),
        (["--set", "generate.design=grid"], "'sobol'"),
        (["--set", "generate.block_size=12"], "chunk_size"),
    ],
)
def test_cli_bad_input_exits_2_and_writes_nothing(runs_dir, args, fragment):
    proc = cli("run", "generate", "--config", str(TINY), "--set", "store=never", *args, check=False)
    assert proc.returncode == 2, proc.stderr
    assert fragment in proc.stderr and "Traceback" not in proc.stderr
    assert not (runs_dir / "never").exists()


def test_cli_refuses_too_few_calibration_samples_before_any_stage(runs_dir):
    # 64 samples with 15% calibration give 9 or 10; alpha 0.05 needs 19 for a finite band.
    args = ["--set", "store=never-cal", "--set", "quantify.alpha=0.05"]
    proc = cli("run", "pipeline", "--config", str(TINY), *args, check=False)
    assert proc.returncode == 2, proc.stderr
    assert "quantify.alpha=0.05 needs at least 19" in proc.stderr
    assert "Traceback" not in proc.stderr and not (runs_dir / "never-cal").exists()


def test_cli_refuses_a_rom_without_sampled_parameters_before_any_stage(runs_dir):
    # Every coefficient constant and a fourier initial state: nothing for the ROM to regress on.
    over = ["store=never-rom", "generate.parameters={}", "generate.constants.nu=0.2"]
    over.append("generate.initial_condition.kind=fourier")
    args = [arg for item in over for arg in ("--set", item)]
    proc = cli("run", "pipeline", "--config", str(TINY), *args, check=False)
    assert proc.returncode == 2, proc.stderr
    assert "generate.parameters: reduce and quantify need sampled parameters" in proc.stderr
    assert "Traceback" not in proc.stderr and not (runs_dir / "never-rom").exists()
    # Generating and training such data is fine.
    load_config(TINY, over).check_stages(("generate", "train"))


def test_cli_refuses_store_of_other_config(first_run, runs_dir):
    cfg, _ = first_run
    proc = cli(
        "run",
        "generate",
        "--config",
        str(TINY),
        "--set",
        f"store={cfg.store}",
        "--set",
        "generate.seed=5",
        check=False,
    )
    assert proc.returncode == 2
    assert "different config" in proc.stderr and "seed: 0 -> 5" in proc.stderr
    assert "--overwrite" in proc.stderr
