"""`pdeflow serve`'s deployments, their UI form schema and schedules; deploy/prefect.yaml."""

from __future__ import annotations

import importlib
from typing import get_args

import pytest
import yaml

from pdeflow.flows import serve as serving
from pdeflow.tasks.config import GenerateConfig, PipelineConfig, TrainConfig, load_config
from pdeflow.tasks.sampling import DESIGNS
from tests.cli_helpers import cli
from tests.conftest import ROOT, TINY

NAMES = ["generate", "train", "reduce", "quantify", "pipeline"]
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
    assert _model_schema(schema, "reduce")["properties"]["energy"]["exclusiveMinimum"] == 0


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
    assert all(not deployments[n].schedules for n in NAMES[:-1])
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
    assert "prefect server start" in proc.stderr and "export PREFECT_API_URL" in proc.stderr
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
