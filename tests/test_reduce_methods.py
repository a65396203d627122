"""The reduce stage's method registry: config, refusals, the side-by-side table, save and restore.

Each method's numerics are tested in its own file (tests/test_rom_*.py); here the stage runs the
methods on one small Burgers store (64 points, 64 samples) and checks what it reports and keeps.
"""

from __future__ import annotations

import typing

import numpy as np
import pytest

from pdeflow.tasks.config import load_config
from pdeflow.tasks.config_reduce import MethodName, ReduceConfig
from pdeflow.tasks.rom.methods import METHODS, get_method
from tests.conftest import TINY
from tests.stage_helpers import generate, reduce

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


def test_the_config_lists_exactly_the_registered_methods():
    assert set(typing.get_args(MethodName)) == set(METHODS)
    with pytest.raises(ValueError, match="valid: pod-rbf"):
        get_method("pod-svr")


def test_the_old_approximation_field_still_means_a_pod_regression():
    assert ReduceConfig(approximation="gpr").method == "pod-gpr"
    assert ReduceConfig(approximation="rbf", method="pod-rbf").method == "pod-rbf"
    with pytest.raises(ValueError, match="disagree"):
        ReduceConfig(approximation="rbf", method="pod-gpr")
    with pytest.raises(ValueError, match="must be 'rbf' or 'gpr'"):
        ReduceConfig(approximation="kriging")


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        ({"method": "pod-rbf", "compare": ["pod-rbf"]}, "compare lists each method once"),
        ({"compare": ["pod-gpr", "pod-gpr"]}, "compare lists each method once"),
        ({"galerkin_rank": 16, "deim_points": 8}, "deim_points must be 0"),
        ({"method": "svd"}, "method"),
    ],
)
def test_bad_reduce_settings_are_refused_naming_the_field(settings, match):
    with pytest.raises(ValueError, match=match):
        ReduceConfig(**settings)


@pytest.fixture(scope="module")
def burgers(runs_dir, client):
    cfg = load_config(TINY, ["store=reduce-methods", "reduce.compare=[pod-gpr]"])
    generate(cfg, client)
    return cfg, reduce(cfg, client)


def test_compared_methods_are_scored_side_by_side(burgers):
    from pdeflow.storage import RunStore

    cfg, summary = burgers
    rec = RunStore.named(cfg.store).record("reduce")
    rows, m = rec.details["methods"], summary.metrics
    assert set(rows) == {"pod-rbf", "pod-gpr"} and m["method"] == "pod-rbf"
    assert m["rom_rel_error_mean"] == rows["pod-rbf"]["rel_error_mean"]
    assert m["pod_gpr_rel_error_mean"] == rows["pod-gpr"]["rel_error_mean"]
    for row in rows.values():
        # Both share the stage's POD: one floor, below each regression's error.
        assert row["floor_mean"] == rows["pod-rbf"]["floor_mean"] < row["rel_error_mean"]
        assert row["rel_error_mean"] <= row["rel_error_max"]
        assert row["offline_s"] > 0 and row["online_s_per_eval"] > 0 and row["speedup"] > 0
        curve = {int(r): v for r, v in row["rank_errors"].items()}
        ranks = sorted(curve)
        assert ranks[0] == 1 and ranks[-1] == m["rank"]
        # At the full rank the truncated prediction is the prediction, and the floor is the
        # stage's floor: equal up to the float32 store's rounding (relative 1e-6).
        assert curve[ranks[-1]][0] == pytest.approx(row["rel_error_mean"], rel=1e-6)
        assert curve[ranks[-1]][1] == pytest.approx(row["floor_mean"], rel=1e-6)
        # Projection onto nested POD bases: the floor can only fall with the rank.
        floors = [curve[r][1] for r in ranks]
        assert all(a >= b - 1e-12 for a, b in zip(floors, floors[1:], strict=False))
    assert rec.details["solver_s_per_sample"] > 0


def test_the_report_and_show_carry_the_table(burgers):
    from pdeflow.storage import RunStore
    from pdeflow.tasks.report import method_table

    cfg, _ = burgers
    rows = RunStore.named(cfg.store).record("reduce").details["methods"]
    table = method_table(rows, "pod-rbf")
    assert table[0].startswith("| method | error mean |") and len(table) == 2 + len(rows) + 1
    assert table[2].startswith("| **pod-rbf** (used) |") and table[3].startswith("| pod-gpr |")
    assert np.isfinite([r["rel_error_mean"] for r in rows.values()]).all()
