"""Configuration: defaults, YAML, overrides, and every bad input named with what is allowed."""

from __future__ import annotations

import pytest
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
        ("generate.initial_condition.kind=pde", ["burgers has no initial state of its own"]),
        ("generate.dt=0.5", ["dt=0.5", "stability limit"]),
        ("generate.pde=heat2", ["generate.pde", "'burgers'", "'heat'", "'custom'"]),
        ("generate.design=halton", ["generate.design", "'sobol'", "'lhs'", "'random'"]),
        ("generate.block_size=24", ["block_size (24)", "chunk_size (16)"]),
        ("generate.n_x=255", ["generate.n_x", "even"]),
        ("generate.n_samples=0", ["generate.n_samples", "greater than or equal to 8"]),
        ("generate.split.train=0.9", ["must equal 1"]),
        ("quantify.sobol_n_base=100", ["quantify.sobol_n_base", "power of 2"]),
        ("store=../escape", ["store", "'..'"]),
        ("store=/abs/path", ["store"]),
        ("generate.colour=red", ["generate.colour", "Extra inputs are not permitted"]),
    ],
)
def test_bad_input_names_field_and_range(override, fragments):
    with pytest.raises(ConfigError) as err:
        load_config(DEMO, [override])
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
    limit = Burgers.max_stable_dt(gen.n_x, gen.domain_length, gen.u_max)
    assert gen.internal_dt <= gen.dt <= limit
    # The limit is the solver's own: just above it is refused.
    with pytest.raises(ConfigError, match="stability limit"):
        load_config(DEMO, [f"generate.dt={limit * 1.01}"])
