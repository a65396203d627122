"""Configuration: defaults, YAML, overrides, and every bad input named with what is allowed."""

from __future__ import annotations

import os
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from pdeflow.tasks.config import ConfigError, PipelineConfig, load_config
from tests.conftest import ROOT, TINY

DEMO = ROOT / "flows" / "configs" / "demo.yaml"


def test_demo_and_tiny_configs_load():
    demo = load_config(DEMO)
    assert demo.store == "demo" and demo.generate.n_samples == 512
    assert demo.generate.parameter_names == ["nu", "a1", "a2", "a3"]
    assert load_config(TINY).generate.n_samples == 64


def test_override_parses_yaml_values():
    cfg = load_config(
        DEMO, ["generate.n_samples=2048", "generate.initial_condition.modes=[1, 4]", "store=x/y"]
    )
    assert cfg.generate.n_samples == 2048 and cfg.generate.modes == (1, 4)
    assert cfg.store == "x/y"


def test_models_are_frozen():
    cfg = PipelineConfig()
    with pytest.raises(Exception, match="frozen"):
        cfg.generate.n_samples = 3


@pytest.mark.parametrize(
    ("override", "fragments"),
    [
        ("generate.parameters.nu.low=-0.1", ["parameters.nu", "low > 0"]),
        (
            "generate.parameters.nu={distribution: uniform, low: 0.0, high: 1.0}",
            ["parameters.nu", "outside the valid range"],
        ),
        ("generate.parameters.nu={distribution: loguniform, low: 0.0, high: 1.0}", ["low > 0"]),
        ("generate.parameters.rho={low: 1, high: 2}", ["no coefficient ['rho']", "['nu']"]),
        ("generate.constants.nu=0.1", ["both sampled (parameters) and fixed (constants)"]),
        ("generate.preset=pdebench-kdv", ["unknown preset", "pdebench-burgers"]),
        ("generate.initial_condition.kind=pde", ["'pde' does not apply to burgers", "'modes'"]),
        ("generate.dt=0.5", ["dt=0.5", "stability limit"]),
        ("generate.pde=heat2", ["generate.pde", "'burgers'", "'heat'", "'custom'"]),
        ("generate.design=halton", ["generate.design", "'sobol'", "'lhs'", "'random'"]),
        ("generate.block_size=20", ["block_size (20)", "chunk_size (8)"]),
        ("generate.n_x=255", ["generate: grid", "even", "got 255"]),
        ("generate.n_samples=0", ["generate.n_samples", "greater than or equal to 8"]),
        ("generate.split.train=0.9", ["must equal 1"]),
        ("quantify.sobol_n_base=100", ["quantify.sobol_n_base", "power of 2"]),
        ("store=../escape", ["store", "'..'"]),
        ("store=/abs/path", ["store"]),
        ("generate.colour=red", ["generate.colour", "Extra inputs are not permitted"]),
    ],
)
def test_bad_input_names_field_and_range(override, fragments):
    # TINY samples nu explicitly (the demo takes Burgers' own range).
    with pytest.raises(ConfigError) as err:
        load_config(TINY, [override])
    for fragment in fragments:
        assert fragment in str(err.value), str(err.value)


def test_yaml_with_unknown_keys_is_refused(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("generate:\n  n_samples: 64\n  viscosty: 0.1\nextra_section: {}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "generate.viscosty" in str(err.value) and "extra_section" in str(err.value)


def test_malformed_override_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, ["generate.n_samples"])
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_stability_limit_matches_solver():
    from pdeflow.tasks.pdes import Burgers

    gen = load_config(DEMO).generate
    bounds = {"nu": (gen.coefficient_specs["nu"].low, gen.coefficient_specs["nu"].high)}
    limit = Burgers.max_stable_dt(gen.grid_spec, bounds, gen.u_max)
    assert gen.internal_dt <= gen.dt <= limit
    # The limit is the solver's own: just above it is refused.
    with pytest.raises(ConfigError, match="stability limit"):
        load_config(DEMO, [f"generate.dt={limit * 1.01}"])


PNG = b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe"


@pytest.mark.parametrize(
    ("content", "fragments"),
    [
        (PNG, ["not UTF-8 text", "byte 0x89 at offset 0"]),
        ("store: caf\xe9\n".encode("latin-1"), ["not UTF-8 text", "byte 0xe9 at offset 10"]),
        (
            b"generate: {n_samples: 8\n  oops: [",
            ["not valid YAML", "expected ',' or '}'", "line 2, column 7", "line 1, column 11"],
        ),
        (b"generate:\n  n_samples: 8\n   dt: 0.1\n", ["not valid YAML", "line 3, column 6"]),
        (b"store: a\x00b\n", ["not valid YAML", "unacceptable character #x0000"]),
        (b"store: !!python/object:os.system x\n", ["not valid YAML", "line 1, column 8"]),
    ],
    ids=["binary", "latin-1", "broken-flow", "bad-indent", "nul-char", "python-tag"],
)
def test_unparsable_config_file_names_file_and_problem(tmp_path, content, fragments):
    path = tmp_path / "bad.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert message.startswith(f"config file {path}: "), message
    assert len(message.splitlines()) == 1 and "^" not in message, message  # no YAML dump
    for fragment in fragments:
        assert fragment in message, message


def test_directory_or_unreadable_config_names_file(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="is a directory") as err:
        load_config(tmp_path)
    assert str(tmp_path) in str(err.value)
    path = tmp_path / "secret.yaml"
    path.write_text("store: x\n")
    path.chmod(0)
    if os.access(path, os.R_OK):  # root reads anything: refuse the read as the kernel would
        denied = PermissionError(13, "Permission denied", str(path))
        monkeypatch.setattr(Path, "read_bytes", lambda self: (_ for _ in ()).throw(denied))
    with pytest.raises(ConfigError, match="cannot be read \\(Permission denied\\)") as err:
        load_config(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize(
    "override",
    [
        "generate.n_samples=[1,",
        "generate.parameters={nu: ",
        "store='unterminated",
        "generate.constants={nu: 0.1}}",
        "generate.modes=a: b: c",
        "store=a\n---\nb",
    ],
)
def test_set_value_that_is_not_yaml_names_the_item(override):
    with pytest.raises(ConfigError) as err:
        load_config(DEMO, [override])
    message = str(err.value)
    assert message.startswith(f"--set {override}: "), message
    assert "is not a YAML value" in message and "line 1, column" in message, message


def test_set_with_empty_key_part_is_refused():
    for override in ("generate..n_samples=8", "generate.=8", ".store=x"):
        with pytest.raises(ConfigError, match="empty key"):
            load_config(None, [override])


SIMULATOR = ["generate.pde=custom", "generate.parameters={p: {low: 0.0, high: 1.0}}"]


@pytest.mark.parametrize(
    ("overrides", "field", "got"),
    [
        (["generate.constants.nu=.nan"], "generate.constants.nu", "nan"),
        (["generate.t_end=.inf"], "generate.t_end", "inf"),
        (["generate.t_end=-.inf"], "generate.t_end", "-inf"),
        (["generate.t_end=1.0e+400"], "generate.t_end", "inf"),  # overflows to inf
        (["generate.dt=nan"], "generate.dt", "'nan'"),  # a string pydantic would parse to NaN
        (["generate.length=.nan"], "generate.length", "nan"),  # float | None
        (["generate.parameters.nu.low=.nan"], "generate.parameters.nu.low", "nan"),
        (["generate.parameters.nu.high=.inf"], "generate.parameters.nu.high", "inf"),
        (
            ["generate.initial_condition.amplitude={low: -1.0, high: .inf}"],
            "generate.initial_condition.amplitude.high",
            "inf",
        ),
        (["generate.initial_condition.tau=.nan"], "generate.initial_condition.tau", "nan"),
        (
            ["generate.initial_condition.options.x=.nan"],  # float | str | list[float]
            "generate.initial_condition.options.x",
            "nan",
        ),
        (
            ["generate.initial_condition.options.x=[1.0, .inf]"],
            "generate.initial_condition.options.x.1",
            "inf",
        ),
        (["generate.split.train=.nan"], "generate.split.train", "nan"),
        (["train.lr=.nan"], "train.lr", "nan"),
        (["train.weight_decay=.inf"], "train.weight_decay", "inf"),
        (["reduce.energy=.nan"], "reduce.energy", "nan"),
        (["reduce.smoothing=.inf"], "reduce.smoothing", "inf"),
        (["quantify.alpha=.nan"], "quantify.alpha", "nan"),
        (["quantify.quantiles=[.nan]"], "quantify.quantiles.0", "nan"),
        (["quantify.quantiles=[0.5, -.inf]"], "quantify.quantiles.1", "-inf"),
        (["cluster.threads_per_worker=.nan"], "cluster.threads_per_worker", "nan"),
        (["cluster.slurm.cores=.inf"], "cluster.slurm.cores", "inf"),
        (
            [*SIMULATOR, "generate.simulator={kind: python, target: 'm:f', timeout_s: .inf}"],
            "generate.simulator.timeout_s",
            "inf",
        ),
        (
            [*SIMULATOR, "generate.simulator={kind: python, target: 'm:f', options: {k: .nan}}"],
            "generate.simulator.options.k",  # float | int | str | bool
            "nan",
        ),
    ],
)
def test_non_finite_numbers_are_refused_naming_the_field(overrides, field, got):
    with pytest.raises(ConfigError) as err:
        load_config(TINY, overrides)
    assert str(err.value) == f"{field}: must be a finite number (got {got})"


def test_non_finite_in_yaml_file_and_several_at_once(tmp_path):
    path = tmp_path / "nan.yaml"
    path.write_text(
        "generate:\n  constants: {nu: .NaN}\n  parameters: null\n"
        "  initial_condition: {options: {x: .nan, y: [.inf, a]}}\n"
    )
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value).splitlines() == [
        "generate.constants.nu: must be a finite number (got nan)",
        "generate.initial_condition.options.x: must be a finite number (got nan)",
        "generate.initial_condition.options.y.0: must be a finite number (got inf)",
        "generate.initial_condition.options.y.1: Input should be a valid number, unable to "
        "parse string as a number (got 'a')",
    ]


@pytest.mark.parametrize(
    ("override", "line"),
    [
        (
            "generate.t_end=-1",
            "generate.t_end: Input should be greater than or equal to 0 (got -1)",
        ),
        ("train.lr=2", "train.lr: Input should be less than or equal to 1 (got 2)"),
        ("reduce.energy=0", "reduce.energy: Input should be greater than 0 (got 0)"),
        (
            "quantify.quantiles=[0.5, 1.5]",
            "quantify.quantiles: each quantile must lie in (0, 1) (got [0.5, 1.5])",
        ),
        (
            "cluster.threads_per_worker=0",
            "cluster.threads_per_worker: Input should be greater than or equal to 1 (got 0)",
        ),
    ],
)
def test_range_errors_name_field_range_and_value(override, line):
    with pytest.raises(ConfigError) as err:
        load_config(DEMO, [override])
    assert str(err.value) == line


def _models(model: type[BaseModel], seen: set) -> set:
    """``model`` and every model its fields hold, through dicts, tuples and unions."""
    seen.add(model)
    stack = [f.annotation for f in model.model_fields.values()]
    while stack:
        tp = stack.pop()
        if isinstance(tp, type) and issubclass(tp, BaseModel) and tp not in seen:
            _models(tp, seen)
        stack.extend(typing.get_args(tp))
    return seen


def test_every_config_model_refuses_non_finite_and_schema_builds():
    models = _models(PipelineConfig, set())
    names = {m.__name__ for m in models}
    assert {"SimulatorConfig", "ClusterConfig", "SlurmSettings", "ParameterSpec"} <= names
    assert [m.__name__ for m in models if m.model_config.get("allow_inf_nan") is not False] == []
    schema = PipelineConfig.model_json_schema()
    assert schema["properties"]["generate"]


def test_form_schema_types_nullable_fields_and_prefect_still_accepts_null():
    from prefect.utilities.callables import parameter_schema
    from prefect.utilities.schema_tools.validation import validate

    from pdeflow.flows.pipeline import pipeline
    from pdeflow.tasks.config_form import form_values

    schema = parameter_schema(pipeline).model_dump()
    gen = schema["definitions"]["GenerateConfig"]["properties"]
    # Rendered as plain inputs, not as a None tab ('Property is type "None"').
    for name, kind in (("n_x", "integer"), ("length", "number"), ("grid", "array")):
        assert gen[name]["type"] == kind and "anyOf" not in gen[name] and "default" not in gen[name]
    assert gen["preset"]["enum"][-1] is None
    assert schema["definitions"]["ClusterConfig"]["properties"]["n_workers"]["type"] == "integer"
    # A nullable nested model keeps the choice; a null that means something keeps its null.
    assert {"type": "null"} in gen["simulator"]["anyOf"]
    dashboard = schema["definitions"]["ClusterConfig"]["properties"]["dashboard"]
    assert {"type": "null"} in dashboard["anyOf"]
    cfg = PipelineConfig()
    values = form_values(cfg)
    assert "n_x" not in values["generate"] and values["generate"]["n_samples"] == 512
    assert PipelineConfig.model_validate(values) == cfg
    # The form validates without preprocessing; the server's run creation preprocesses and
    # must still accept a client's explicit nulls.
    assert validate({"config": values}, schema, ignore_required=True, preprocess=False) == []
    full = {"config": cfg.model_dump(mode="json")}
    assert validate(full, schema, ignore_required=True) == []
