"""`pdeflow serve`'s deployments, their UI form schema and schedules; deploy/prefect.yaml."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import uuid
from typing import get_args

import pytest
import yaml

from pdeflow.flows import automations, server
from pdeflow.flows import serve as serving
from pdeflow.tasks.config import GenerateConfig, PipelineConfig, TrainConfig, load_config
from pdeflow.tasks.rom.methods import METHODS
from pdeflow.tasks.sampling import DESIGNS
from tests.cli_helpers import cli
from tests.conftest import ROOT, TINY

NAMES = ["generate", "train", "reduce", "quantify", "infer", "pipeline", "campaign"]
EXAMPLE = ROOT / "deploy" / "schedules.example.yaml"
PREFECT_YAML = ROOT / "deploy" / "prefect.yaml"
DEMO = ROOT / "flows" / "configs" / "demo.yaml"


@pytest.fixture(scope="module")
def tiny() -> PipelineConfig:
    return load_config(TINY)


@pytest.fixture(scope="module")
def deployments(tiny):
    return {d.name: d for d in serving.build_deployments(tiny, serving.load_schedules(EXAMPLE))}


def _schema(deployment) -> dict:
    """The parameter schema the UI renders as the run form and the server enforces."""
    return deployment._parameter_openapi_schema.model_dump()


def _deref(schema: dict, node: dict) -> dict:
    while "$ref" in node or "allOf" in node:
        ref = node["$ref"] if "$ref" in node else node["allOf"][0]["$ref"]
        node = schema["definitions"][ref.rsplit("/", 1)[1]]
    return node


def _model_schema(schema: dict, *path: str) -> dict:
    """The JSON schema of the config section at ``path``, ``$ref``s followed."""
    node = _deref(schema, schema["properties"]["config"])
    for key in path:
        node = _deref(schema, node["properties"][key])
    return node


def _errors(deployment, parameters: dict) -> list:
    from prefect.utilities.schema_tools import validate

    return validate(parameters, _schema(deployment), ignore_required=True)


def test_one_deployment_per_flow_prefilled_with_the_config(deployments, tiny):
    assert list(deployments) == NAMES == list(serving.FLOWS)
    for name, d in deployments.items():
        flow = serving.load_flow(name)
        assert d.flow_name == flow.name and d.tags == ["pdeflow"] and d.description
        module, _, attr = d.entrypoint.rpartition(".")
        assert getattr(importlib.import_module(module), attr) is flow
        assert PipelineConfig.model_validate(d.parameters["config"]) == tiny
        assert d.enforce_parameter_schema
        assert _errors(d, d.parameters) == []


def test_form_schema_has_descriptions_ranges_and_dropdowns(deployments):
    schema = _schema(deployments["pipeline"])
    for model, path in ((GenerateConfig, ("generate",)), (TrainConfig, ("train",))):
        props = _model_schema(schema, *path)["properties"]
        for field, info in model.model_fields.items():
            assert props[field]["description"] == info.description, field
    generate = _model_schema(schema, "generate")["properties"]
    assert generate["design"]["enum"] == list(DESIGNS)
    bounds = {type(m).__name__: m for m in GenerateConfig.model_fields["n_samples"].metadata}
    assert generate["n_samples"]["minimum"] == bounds["Ge"].ge
    assert generate["n_samples"]["maximum"] == bounds["Le"].le
    device = TrainConfig.model_fields["device"].annotation
    assert _model_schema(schema, "train")["properties"]["device"]["enum"] == list(get_args(device))
    reduce = _model_schema(schema, "reduce")["properties"]
    assert reduce["energy"]["exclusiveMinimum"] == 0
    # The reduce methods are a dropdown (the thermal-block config picks rb from it).
    assert reduce["method"]["enum"] == list(METHODS)
    assert {"thermal_block_2x2", "thermal_block_3x2"} <= set(generate["pde"]["enum"])


@pytest.mark.parametrize(
    ("section", "field", "value"),
    [("generate", "design", "grid"), ("train", "device", "tpu"), ("generate", "n_samples", 4)],
)
def test_form_schema_rejects_what_the_config_rejects(deployments, tiny, section, field, value):
    config = tiny.model_dump(mode="json")
    config[section][field] = value
    assert _errors(deployments["pipeline"], {"config": config})
    with pytest.raises(ValueError, match=field):
        PipelineConfig.model_validate(config)


def test_schedules_attach_with_merged_parameters(deployments, tiny):
    assert all(not deployments[n].schedules for n in NAMES if n != "pipeline")
    nightly, weekly, smoke = deployments["pipeline"].schedules
    assert nightly.schedule.cron == "0 2 * * *" and nightly.schedule.timezone == "Europe/Berlin"
    assert weekly.schedule.cron == "0 3 * * 0"
    assert nightly.active and weekly.active and not smoke.active
    assert smoke.schedule.interval.total_seconds() == 3600
    # The nightly run is incremental; the weekly one rebuilds its own store.
    assert nightly.parameters["extend_by"] == 256 and "overwrite" not in nightly.parameters
    assert weekly.parameters["overwrite"] is True and "extend_by" not in weekly.parameters
    cfg = PipelineConfig.model_validate(nightly.parameters["config"])
    # Overrides replace only the keys they name; everything else is the served config.
    assert cfg == tiny.model_copy(
        update={
            "store": "campaign",
            "generate": tiny.generate.model_copy(update={"design": "random"}),
        }
    )
    assert PipelineConfig.model_validate(weekly.parameters["config"]).generate.seed == 7
    assert PipelineConfig.model_validate(smoke.parameters["config"]).train.epochs == 2
    for schedule in (nightly, weekly):
        assert _errors(deployments["pipeline"], schedule.parameters) == []


def test_extend_by_is_a_described_bounded_form_field(deployments):
    for name in ("generate", "pipeline"):
        prop = _schema(deployments[name])["properties"]["extend_by"]
        assert (
            prop["default"] == 0 and prop["minimum"] == 0 and "Samples added" in prop["description"]
        )
        assert _errors(deployments[name], {"extend_by": -1})
    for name in ("train", "reduce", "quantify"):
        assert "extend_by" not in _schema(deployments[name])["properties"]


BAD_SCHEDULES = [
    ("- {deployment: pipelin, cron: '0 2 * * *'}", "s.yaml[0].deployment: unknown deployment"),
    ("- {deployment: train}", "s.yaml[0]: give exactly one of cron or interval"),
    ("- {deployment: train, cron: '0 2 * * *', interval: 60}", "(got both)"),
    ("- {deployment: train, cron: '61 * * * *'}", "s.yaml[0].cron: not a valid cron"),
    ("- {deployment: train, interval: 60}\n- {deployment: train, interval: -5}", "[1].interval"),
    ("- {deployment: train, interval: 60, timezone: Mars/Base}", "s.yaml[0].timezone"),
    ("- {deployment: train, interval: 60, every: 2}", "s.yaml[0].every: Extra inputs"),
    ("deployment: train", "s.yaml: the top level must be a list"),
    ("- {deployment: train, interval: 60, parameters: {overwrit: true}}", "unknown ['overwrit']"),
    (
        "- {deployment: train, interval: 60, parameters: {overwrite: maybe}}",
        "schedules[0].parameters.overwrite",
    ),
    (
        "- {deployment: train, interval: 60, parameters: {config: {generate: {n_samples: 1}}}}",
        "schedules[0].parameters.config.generate.n_samples",
    ),
    ("- {deployment: train, interval: 60, parameters: {extend_by: 8}}", "unknown ['extend_by']"),
    (
        "- {deployment: pipeline, interval: 60, parameters: {extend_by: -8}}",
        "schedules[0].parameters.extend_by: -8 is less than the minimum of 0",
    ),
    (  # tiny.yaml keeps the default design, sobol
        "- {deployment: generate, interval: 60, parameters: {extend_by: 8}}",
        "schedules[0].parameters.extend_by: a Sobol' design is balanced only at powers of 2",
    ),
    (
        "- {deployment: pipeline, interval: 60, parameters: "
        "{extend_by: 8, config: {generate: {design: lhs}}}}",
        "schedules[0].parameters.config.generate.design: a 'lhs' design cannot be extended",
    ),
    (
        "- {deployment: pipeline, interval: 60, parameters: "
        "{extend_by: 8, overwrite: true, config: {generate: {design: random}}}}",
        "schedules[0].parameters.extend_by: cannot be combined with overwrite=True",
    ),
]


@pytest.mark.parametrize(("text", "fragment"), BAD_SCHEDULES)
def test_bad_schedule_files_fail_naming_the_field(tmp_path, tiny, text, fragment):
    path = tmp_path / "s.yaml"
    path.write_text(text)
    with pytest.raises(serving.ScheduleError) as err:
        serving.build_deployments(tiny, serving.load_schedules(path))
    assert fragment in str(err.value)


def test_serve_without_server_says_how_to_start_one(monkeypatch):
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    proc = cli("serve", "--config", str(TINY), check=False, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "pdeflow server start" in proc.stderr and "export PREFECT_API_URL" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_serve_refuses_an_unreachable_server():
    from prefect.settings import PREFECT_API_URL, temporary_settings

    # Port 9 (discard) on loopback: nothing listens there on a test machine.
    with (
        temporary_settings({PREFECT_API_URL: "http://127.0.0.1:9/api"}),
        pytest.raises(serving.ServeError, match="no healthy Prefect server"),
    ):
        serving.check_server()


def test_prefect_yaml_deploys_the_same_flows_with_the_demo_config():
    spec = yaml.safe_load(PREFECT_YAML.read_text())
    assert spec["definitions"]["demo_config"] and spec["build"] is None
    by_name = {d["name"]: d for d in spec["deployments"]}
    assert list(by_name) == NAMES
    demo = load_config(DEMO)
    for name, d in by_name.items():
        # Module paths: the installed package, whatever the workers' working directory.
        module, _, attr = d["entrypoint"].partition(":")
        assert module.startswith("pdeflow.flows.")
        assert getattr(importlib.import_module(module), attr) is serving.load_flow(name)
        assert d["work_pool"]["name"] == "pdeflow-process" and d["tags"] == ["pdeflow"]
        assert PipelineConfig.model_validate(d["parameters"]["config"]) == demo
    (schedule,) = by_name["pipeline"]["schedules"]
    entry = serving.ScheduleEntry.model_validate(
        {"deployment": "pipeline", **{k: v for k, v in schedule.items() if k != "parameters"}}
    )
    assert entry.cron and not entry.active
    nightly = PipelineConfig.model_validate(schedule["parameters"]["config"])
    assert nightly == demo.model_copy(update={"store": "demo-nightly"})


def test_schedules_example_documents_every_field():
    text = EXAMPLE.read_text()
    for field in serving.ScheduleEntry.model_fields:
        assert f"#   {field}" in text, field
    assert serving.load_schedules(EXAMPLE)


# Crash detection: the heartbeat automation and the task runs a dead attempt leaves Running.


def test_crash_detection_is_prefects_zombie_recipe_scoped_to_pdeflow():
    from datetime import timedelta

    spec = automations.crash_detection(30)
    trigger = spec.trigger
    assert spec.name == automations.AUTOMATION_NAME and spec.enabled
    assert trigger.posture == "Proactive" and trigger.threshold == 1
    assert trigger.after == {"prefect.flow-run.heartbeat"}
    assert trigger.expect == {"prefect.flow-run.*"}
    assert trigger.for_each == {"prefect.resource.id"}
    assert trigger.within == timedelta(seconds=60)  # two heartbeat periods
    (related,) = (
        trigger.match_related
        if isinstance(trigger.match_related, list)
        else [trigger.match_related]
    )
    assert related.root == {
        "prefect.resource.role": "tag",
        "prefect.resource.id": "prefect.tag.pdeflow",
    }
    (action,) = spec.actions
    assert action.type == "change-flow-run-state" and action.state == "CRASHED"
    assert "Retry" in action.message
    with pytest.raises(ValueError, match="heartbeat_s must be >= 30"):
        automations.crash_detection(29)


def _heartbeat_in(env: dict[str, str]) -> int:
    """``heartbeat_seconds()`` in a fresh interpreter: Prefect reads its settings at import."""
    code = "from pdeflow.flows.automations import heartbeat_seconds as h; print(h())"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_FLOWS_")}
    out = subprocess.run(
        [sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    return int(out.stdout)


def test_heartbeat_defaults_to_a_minute_and_follows_prefects_setting():
    # Prefect's own default (180 s) would show a dead run Crashed only after up to 6 minutes.
    assert _heartbeat_in({}) == automations.DEFAULT_HEARTBEAT_S == 60
    assert _heartbeat_in({"PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "45"}) == 45


def _named(client) -> list:
    return client.read_automations_by_name(automations.AUTOMATION_NAME)


def test_crash_detection_is_created_once_and_updated_in_place(prefect_api):
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        for automation in _named(client):
            client.delete_automation(automation.id)
        first, done = automations.ensure_crash_detection(client, 30)
        assert done == "created"
        # A restarted `pdeflow serve` finds it: no second automation.
        assert automations.ensure_crash_detection(client, 30) == (first, "unchanged")
        assert automations.ensure_crash_detection(client, 90) == (first, "updated")
        (stored,) = _named(client)
        assert stored.trigger.within.total_seconds() == 180
        # Two serve processes started at once may both create one: the extra one goes.
        client.create_automation(automations.crash_detection(90))
        kept, done = automations.ensure_crash_detection(client, 90)
        assert done == "unchanged" and [a.id for a in _named(client)] == [kept]


def _running_task(client, flow_run_id):
    from prefect import task
    from prefect.states import Running

    @task(name="generate-data")
    def step() -> None:
        pass

    task_run = client.create_task_run(step, flow_run_id, dynamic_key=str(uuid.uuid4()))
    client.set_task_run_state(task_run.id, Running())
    return task_run.id


def _flow_run(client, tags: list[str]):
    from prefect import flow
    from prefect.states import Running

    @flow(name="crash-probe")
    def probe() -> None:
        pass

    run = client.create_flow_run(probe, tags=tags)
    client.set_flow_run_state(run.id, Running(), force=True)
    return run.id


def test_task_runs_of_a_dead_attempt_are_crashed_and_live_ones_kept(prefect_api):
    from prefect.client.orchestration import get_client
    from prefect.states import AwaitingRetry, Crashed, Running

    with get_client(sync_client=True) as client:
        crashed_run = _flow_run(client, ["pdeflow"])
        left_by_crash = _running_task(client, crashed_run)
        client.set_flow_run_state(crashed_run, Crashed(), force=True)
        retried_run = _flow_run(client, ["pdeflow"])
        left_by_attempt_1 = _running_task(client, retried_run)
        client.set_flow_run_state(retried_run, Crashed(), force=True)
        client.set_flow_run_state(retried_run, AwaitingRetry(), force=True)
        client.set_flow_run_state(retried_run, Running(), force=True)
        attempt_2 = _running_task(client, retried_run)
        other_project = _flow_run(client, ["elsewhere"])
        foreign = _running_task(client, other_project)
        client.set_flow_run_state(other_project, Crashed(), force=True)

        crashed = automations.crash_orphaned_task_runs(client)
        assert set(crashed) == {left_by_crash, left_by_attempt_1}
        states = {t: client.read_task_run(t).state for t in crashed}
        assert all(s.type == "CRASHED" and "attempt 1" in s.message for s in states.values())
        for alive in (attempt_2, foreign):
            assert client.read_task_run(alive).state.type == "RUNNING"
        assert automations.crash_orphaned_task_runs(client) == []


def test_a_retried_flow_crashes_what_its_dead_attempt_left_running(prefect_api):
    """Without pdeflow's server or serve beside it (a remote work pool), the retried flow run
    cleans up after its own earlier attempt, and touches no other flow run's task runs."""
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.context import FlowRunContext

    left: dict[str, object] = {}
    with get_client(sync_client=True) as client:
        other_run = _flow_run(client, ["pdeflow"])
        other_task = _running_task(client, other_run)

        @flow(name="retried-probe", retries=1, retry_delay_seconds=0)
        def retried() -> list:
            run = FlowRunContext.get().flow_run
            if run.run_count == 1:  # the attempt whose process "died" with a task running
                left["task"] = _running_task(client, run.id)
                raise RuntimeError("attempt 1 dies")
            return automations.crash_earlier_attempts()

        assert automations.crash_earlier_attempts() == []  # outside a flow run: nothing
        crashed = retried()
        assert crashed == [left["task"]]
        state = client.read_task_run(left["task"]).state
        assert state.type == "CRASHED" and "attempt 1" in state.message
        assert client.read_task_run(other_task).state.type == "RUNNING"


# `pdeflow server start`: the UI calls the API on the server's own port.


def _ui_api_url_in(env: dict[str, str]) -> str:
    """The UI's API URL as Prefect's settings resolve it in a server started with ``env``."""
    code = "from prefect.settings import get_current_settings as s; print(s().server.ui.api_url)"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_server_environment_points_the_ui_at_its_own_port():
    # A client URL for another server exported in the same shell is what the UI would call.
    shell = {**os.environ, "PREFECT_API_URL": "http://127.0.0.1:4200/api"}
    shell.pop("PREFECT_UI_API_URL", None)
    assert _ui_api_url_in(shell) == "http://127.0.0.1:4200/api"
    env = server.server_environment("127.0.0.1", 4299, shell)
    assert env["PREFECT_SERVER_API_PORT"] == "4299"
    assert _ui_api_url_in(env) == "http://127.0.0.1:4299/api"
    # Bound to every interface: a browser on this machine reaches it on loopback.
    wildcard = server.server_environment("0.0.0.0", 8080, shell)
    assert wildcard["PREFECT_UI_API_URL"] == "http://127.0.0.1:8080/api"
    # A URL set for a proxy or a published container port is the user's to keep.
    proxied = {**shell, "PREFECT_UI_API_URL": "https://prefect.example.org/api"}
    assert server.ui_api_url(server.server_environment("0.0.0.0", 4200, proxied)) == (
        "https://prefect.example.org/api"
    )
    with pytest.raises(ValueError, match="--port: must be in 1..65535"):
        server.server_environment("127.0.0.1", 70000, shell)
