"""The quantify stage's opt-in multifidelity Monte Carlo step (tasks/stages/quantify_mfmc.py).

One tiny pipeline (tests/configs/tiny.yaml, ``quantify.mfmc_budget = 64``) on an in-process Dask
client; the MFMC estimator itself is tested in tests/test_uq_mfmc.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from distributed import Client
from pydantic import ValidationError

from pdeflow.storage import RunStore
from pdeflow.tasks.config import QuantifyConfig, load_config
from pdeflow.tasks.stages import quantify_mfmc
from pdeflow.tasks.stages.quantify import Predictors, active_steps
from tests.conftest import TINY
from tests.stage_helpers import generate, quantify, reduce, train

BUDGET = 64


@pytest.fixture(scope="module")
def mfmc_run():
    cfg = load_config(TINY, ["store=mfmc", f"quantify.mfmc_budget={BUDGET}"])
    with Client(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=":0") as c:
        generate(cfg, c)
        train(cfg)
        reduce(cfg, c)
        summary = quantify(cfg, c)
        # The step alone, without the Monte Carlo step's samples: it draws its own pilot.
        alone = Predictors(cfg, RunStore.named(cfg.store))
        quantify_mfmc.mfmc(c, cfg, alone)
    group = RunStore.named(cfg.store).read_group("quantify")
    return cfg, summary.metrics, group, alone


def test_step_is_off_by_default_and_appended_when_on(mfmc_run):
    cfg, _, _, _ = mfmc_run
    off = load_config(TINY)
    assert "mfmc_budget" not in off.quantify.identity()  # stores made before keep their names
    names = [name for name, _ in active_steps(cfg)]
    assert names == [name for name, _ in active_steps(off)] + ["multifidelity Monte Carlo"]


def test_stored_results_are_consistent(mfmc_run):
    cfg, m, group, _ = mfmc_run
    assert list(group["mfmc_model"].values) == list(quantify_mfmc.ORDER)
    counts = group["mfmc_n_samples"].values
    np.testing.assert_array_equal(counts, [m[f"mfmc_n_samples_{n}"] for n in quantify_mfmc.ORDER])
    assert counts[0] >= 1 and group["mfmc_alpha"].values[0] == 1.0
    costs = [m[f"mfmc_cost_{n}"] for n in quantify_mfmc.ORDER]
    np.testing.assert_allclose(group["mfmc_costs"].values, costs)
    assert m["mfmc_n_pilot"] == cfg.quantify.n_mc  # the Monte Carlo step's samples, reused
    assert m["mfmc_new_solver_runs"] == BUDGET - cfg.quantify.n_mc
    assert m["mfmc_mc_n_samples"] == BUDGET
    # The costs are seconds per sample measured in this run, the solver's the unit.
    assert m["mfmc_cost_solver"] == 1.0
    for name in quantify_mfmc.ORDER:
        assert m[f"mfmc_seconds_per_sample_{name}"] > 0
        ratio = m[f"mfmc_seconds_per_sample_{name}"] / m["mfmc_seconds_per_sample_solver"]
        assert m[f"mfmc_cost_{name}"] == pytest.approx(ratio)
    assert m["mfmc_variance_reduction_pilot_ci_low"] <= m["mfmc_variance_reduction"]
    assert m["mfmc_variance_reduction"] <= m["mfmc_variance_reduction_pilot_ci_high"]
    assert (
        m["mfmc_variance_reduction_posterior_ci_low"]
        <= m["mfmc_variance_reduction_posterior"]
        <= m["mfmc_variance_reduction_posterior_ci_high"]
    )
    selected = group.attrs["mfmc_selected"]
    assert selected[0] == "solver"
    for name in quantify_mfmc.ORDER[1:]:
        index = quantify_mfmc.ORDER.index(name)
        assert (name in selected) == (counts[index] > 0)
        assert (name in selected) != (name in group.attrs["mfmc_dropped"])


def test_allocation_respects_the_budget_at_the_measured_costs(mfmc_run):
    _, m, group, _ = mfmc_run
    counts, costs = group["mfmc_n_samples"].values, group["mfmc_costs"].values
    # A model with its predecessor's count (in MFMC's order) is not run and costs nothing.
    order = np.argsort(-np.abs(group["mfmc_rho"].values), kind="stable")
    active = [k for k in order if counts[k] > 0]
    spent = costs[active[0]] * counts[active[0]]
    for prev, k in zip(active, active[1:], strict=False):
        assert counts[k] >= counts[prev]  # nested sample sets
        spent += costs[k] * counts[k] if counts[k] > counts[prev] else 0.0
    assert spent == pytest.approx(m["mfmc_cost"]) and spent <= BUDGET
    # Rounding down the optimum loses less than one sample of each model.
    assert spent > BUDGET - costs.sum()


def test_estimate_agrees_with_plain_monte_carlo(mfmc_run):
    cfg, m, _, alone = mfmc_run
    # The estimates share solver runs, so their errors are correlated; whatever the
    # correlation, sd(a - b) <= sd(a) + sd(b). 4 times that bound is a false-alarm rate below
    # 1e-4 for Gaussian errors, with room for the standard errors being estimates themselves
    # (from 32 to 64 samples: ~15% off) and for the pilot weights' O(1/n_mc) bias, a small
    # fraction of a standard error. Against the Monte Carlo step's own n_mc samples (the
    # stage's plain mean of the solver QoI) and against plain MC at equal cost:
    mc_step = alone.paired[2]["solver"]
    assert len(mc_step) == cfg.quantify.n_mc
    for mean, std_error in (
        (mc_step.mean(), mc_step.std(ddof=1) / math.sqrt(len(mc_step))),
        (m["mfmc_mc_estimate"], m["mfmc_mc_std_error"]),
    ):
        assert std_error > 0 and m["mfmc_std_error_posterior"] > 0
        assert abs(m["mfmc_estimate"] - mean) < 4 * (m["mfmc_std_error_posterior"] + std_error)
    # The reduction the step predicts shows in the errors: MFMC's is the smaller one.
    assert m["mfmc_std_error"] < m["mfmc_mc_std_error"]


def _synthetic_pilot(rho_surrogate: float, n: int = 2000, seed: int = 0) -> dict:
    """Pilot QoIs with exactly known correlations: rom 0.95, surrogate ``rho_surrogate``."""
    z = np.random.default_rng(seed).standard_normal((n, 3))
    solver = 1.0 + z[:, 0]
    rom = 0.95 * z[:, 0] + math.sqrt(1 - 0.95**2) * z[:, 1]
    return {"solver": solver, "rom": rom, "surrogate": rho_surrogate * z[:, 0] + z[:, 2]}


def test_uncorrelated_low_fidelity_model_gets_no_samples():
    # The surrogate's output is independent noise: MFMC must not spend on it even when cheap.
    est = quantify_mfmc.allocate(_synthetic_pilot(0.0), [1.0, 0.01, 1e-4], 100.0)
    assert 2 not in est.selected_ and 2 in est.dropped_
    assert est.selected_ == (0, 1) and est.cost_ <= 100.0
    # A correlated, cheap surrogate is used: the check above can fail.
    est = quantify_mfmc.allocate(_synthetic_pilot(3.0), [1.0, 0.01, 1e-4], 100.0)
    assert 2 in est.selected_


@pytest.mark.parametrize(
    ("budget", "bound"),
    [
        (-1, "greater than or equal to 0"),
        (1, "between 8 and 1000000"),
        (7, "between 8"),
        (1_000_001, "less than or equal to 1000000"),
    ],
)
def test_bad_budget_is_refused(budget, bound):
    with pytest.raises(ValidationError, match="mfmc_budget") as err:
        QuantifyConfig(mfmc_budget=budget)
    assert bound in str(err.value)
    assert QuantifyConfig(mfmc_budget=8).mfmc_budget == 8


class FakeModels:
    """Cheap "models" of known QoI on the stage's inputs: ``1 + a + eps (u - 1/2)``, ``a`` a
    uniform variable from the sample's seed and ``u`` the unit parameter, as trajectories
    ``(n, 1, 1, 1)`` whose final energy is that QoI."""

    batch = 256

    def __init__(self, cfg, eps_rom: float, eps_surrogate: float):
        self.gen, self.eps = cfg.generate, {"rom": eps_rom, "surrogate": eps_surrogate}
        self.seconds = {"solver": 0.0, "rom": 0.0, "surrogate": 0.0}
        self.evaluated = dict.fromkeys(self.seconds, 0)

    def qoi(self, name, params, seeds):
        from pdeflow.tasks.design import to_unit

        a = (np.asarray(seeds) % 1000) / 1000 - 0.4995
        return 1 + a + self.eps.get(name, 0.0) * (to_unit(self.gen, params)[:, 0] - 0.5)

    def _traj(self, name, params, seeds):
        return np.sqrt(2 * self.qoi(name, params, seeds)).reshape(-1, 1, 1, 1)

    def reduced(self, params, seeds):
        return self._traj("rom", params, seeds)

    def surrogate(self, params, seeds):
        return self._traj("surrogate", params, seeds)


def test_replicates_measure_the_variance_reduction():
    # rho(rom) ~ 0.9996 at 1% of the solver's cost: MFMC gives the solver m_1 ~ p / 4, so
    # floor(p / m_1) >= 4 independent replicates fit in the plain estimate's solver runs.
    budget = 24
    cfg = load_config(TINY, [f"quantify.mfmc_budget={budget}"])
    fake = FakeModels(cfg, 0.03, 0.5)
    params, seeds = quantify_mfmc.inputs(cfg, 0, 200)
    pilot = {n: fake.qoi(n, params, seeds) for n in quantify_mfmc.ORDER}
    est = quantify_mfmc.allocate(pilot, [1.0, 0.01, 0.01], float(budget))
    assert est.selected_ == (0, 1) and budget // est.n_samples_[0] >= 4
    y = {n: v[:budget] for n, v in pilot.items()}
    y["rom"] = np.concatenate(
        [pilot["rom"], fake.qoi("rom", *quantify_mfmc.inputs(cfg, 200, 2000))]
    )
    reps = quantify_mfmc._replicates(cfg, fake, est, y, est.costs_)
    assert len(reps) >= quantify_mfmc.MIN_REPLICATES
    # Each replicate is an MFMC estimate of E[f_1] = 1 (the seeds' a is centred), of variance
    # est.mse_ (pilot moments of 200 samples, ~10% off): 5 standard errors of their mean.
    assert abs(reps.mean() - 1.0) < 5 * math.sqrt(est.mse_ / len(reps))
    m = quantify_mfmc._measured(y["solver"], reps)
    assert m["mfmc_n_replicates"] == len(reps)
    assert m["mfmc_variance_reduction_measured_ci_low"] < m["mfmc_variance_reduction_measured"]
    assert m["mfmc_variance_reduction_measured"] < m["mfmc_variance_reduction_measured_ci_high"]
    assert quantify_mfmc._measured(y["solver"], reps[:2]) == {}


def test_report_has_the_mfmc_lines(mfmc_run):
    from pdeflow.tasks.report import report_markdown

    cfg, m, _, _ = mfmc_run
    text = report_markdown(cfg, RunStore.named(cfg.store))
    assert "Multifidelity Monte Carlo of the QoI's mean" in text
    assert f"plain Monte Carlo, {BUDGET} solver runs" in text
    assert "bootstrap over the pilot" in text


def test_own_pilot_is_the_monte_carlo_steps_samples(mfmc_run):
    cfg, _, group, alone = mfmc_run
    _, _, qoi = alone.paired
    assert len(qoi["solver"]) == cfg.quantify.n_mc
    # Same inputs, same solver: the QoI quantiles the Monte Carlo step stored (float32 fields
    # in the solver, float64 QoI: equal to round-off).
    q = np.quantile(qoi["solver"], cfg.quantify.quantiles)
    np.testing.assert_allclose(q, group["qoi_quantiles_solver"].values, rtol=1e-6)
    assert alone.evaluated["solver"] == cfg.quantify.n_mc + BUDGET - cfg.quantify.n_mc


def test_simulator_with_its_own_initial_states_is_refused():
    from tests.conftest import ROOT

    custom = ROOT / "tests" / "configs" / "custom_python.yaml"
    quantify_mfmc.check_mfmc(load_config(custom))  # off: nothing to refuse
    with pytest.raises(ValueError, match="quantify.mfmc_budget: .* its own initial states"):
        quantify_mfmc.check_mfmc(load_config(custom, ["quantify.mfmc_budget=8"]))
