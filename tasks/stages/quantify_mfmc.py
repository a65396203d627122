"""Opt-in step of the quantify stage: multifidelity Monte Carlo (MFMC) of the QoI's mean.

With ``quantify.mfmc_budget = p > 0`` the step estimates ``E[QoI]`` of the solver (high fidelity)
with the ROM and the surrogate as low-fidelity control variates (:class:`~pdeflow.tasks.uq.MFMC`,
Peherstorfer, Willcox & Gunzburger 2016), spending ``p`` solver evaluations' worth of time.

What is measured and what is predicted:

- Costs (measured in this run): seconds per sample of each model, summed over every evaluation
  the stage made before this step divided by the samples evaluated. The solver's is the wall
  time of ``solve_parameters`` inside its Dask tasks (worker seconds, scheduling and transfer
  excluded); the ROM's and the surrogate's the wall time of their batches in the stage's process
  (including the contention of running while the solver's blocks do). The time to draw one input
  (parameters and seed, measured on the pilot's inputs) is added to every model's cost. Costs
  are divided by the solver's, so the budget counts solver evaluations.
- Pilot: the Monte Carlo step's paired samples (the same ``n_mc`` inputs through all three
  models), or, if that step did not run in this call, the same inputs evaluated here. Variances
  and correlations with the solver come from it; :class:`MFMC` orders the models by correlation
  and drops a model that breaks the paper's ordering conditions or does not lower the MSE.
- Samples: the inputs are the Monte Carlo step's design extended (its "random" design and
  per-sample seeds are regenerable point by point), so the pilot's inputs are the first ``n_mc``
  of every model's nested sample set and are reused; only inputs beyond them are evaluated. The
  weights and counts come from the same pilot, which makes the estimate biased by O(1/n_mc),
  the usual price of estimated control-variate weights (Nelson 1990), small next to its
  O(1/sqrt(m_1)) standard error.
- ``mfmc_std_error``: predicted, ``sqrt`` of the MFMC variance of the rounded allocation from the
  pilot moments (Lemma 3.2 of the paper); ``mfmc_std_error_posterior`` the same variance with
  moments re-estimated on every paired sample the step has (``floor(p)`` of them).
- Plain Monte Carlo at equal cost: the mean of the solver over the first ``floor(p)`` inputs (the
  pilot's runs reused), with its sample standard error.
- ``mfmc_variance_reduction``: predicted, ``Var(plain MC) / Var(MFMC)`` at equal cost from the
  pilot moments; its interval ``mfmc_variance_reduction_pilot_ci_*`` is a 95% percentile
  bootstrap over the pilot's rows (allocation redone per resample, costs held fixed): the
  uncertainty of the prediction due to the pilot's size only.
- ``mfmc_variance_reduction_posterior``: the same ratio for the allocation made, with moments
  re-estimated on the step's ``floor(p)`` paired samples (all three models on the plain
  estimate's inputs), and a 95% percentile bootstrap interval over those rows
  (``*_posterior_ci_*``): a better-informed prediction, not an observed variance.
- ``mfmc_variance_reduction_measured`` (only where affordable): ``s_1^2 / floor(p)`` (the
  plain estimator's variance, ``s_1^2`` the sample variance of the solver's ``floor(p)`` runs)
  over the sample variance of ``R`` independent MFMC replicates with the same allocation.
  Replicate ``r`` takes the solver runs ``[r m_1, (r + 1) m_1)`` already made and fresh inputs
  for its low-fidelity remainder, so it costs cheap-model evaluations only; ``R <= floor(p /
  m_1)``, at most ``MAX_REPLICATES``, fewer if the replicates' cheap evaluations would cost
  more than ``REPLICATE_BUDGETS p``, and none below ``MIN_REPLICATES`` (so only where ``m_1 <=
  p / 3``, a large reduction). Its interval is the 95% interval of a ratio of two independent
  Gaussian variances (F law, ``floor(p) - 1`` and ``R - 1`` degrees of freedom); the two share
  solver runs, so it is approximate.

Cost of the step: ``floor(p) - n_mc`` new solver runs (the plain estimate's; MFMC's ``m_1 <=
floor(p)`` are among them) and the cheap models' share of ``p``, plus the replicates' (at most
``REPLICATE_BUDGETS p`` in cheap-model evaluations).
"""

from __future__ import annotations

import math
import time

import numpy as np
from scipy import stats

import pdeflow.tasks.stages.quantify as stage
from pdeflow.tasks.design import to_physical
from pdeflow.tasks.sampling import sample_seeds, sample_unit
from pdeflow.tasks.uq import MFMC
from pdeflow.tasks.uq.mfmc import estimator_variance

# The models in the order given to MFMC, the high-fidelity one first.
ORDER = ("solver", "rom", "surrogate")
N_BOOTSTRAP = 200
MAX_REPLICATES = 50
MIN_REPLICATES = 3
# The replicates' cheap-model evaluations may cost this many budgets (solver evaluations).
REPLICATE_BUDGETS = 4


def check_mfmc(cfg) -> None:
    """Refuse MFMC where the cheap models cannot run without the solver.

    Raises:
        ValueError: ``quantify.mfmc_budget`` is on for a simulator that makes its own initial
            states (the ROM and the surrogate then start from the solver's, so they cannot run
            on inputs the solver does not).
    """
    if cfg.quantify.mfmc_budget and not cfg.generate.problem.draws_initial_states:
        raise ValueError(
            "quantify.mfmc_budget: multifidelity Monte Carlo runs the ROM and the surrogate on "
            "inputs the solver never sees, and this simulator makes its own initial states; "
            "set quantify.mfmc_budget=0"
        )


def mfmc_steps(cfg) -> list[tuple[str, object]]:
    """``[(name, step)]`` when ``quantify.mfmc_budget`` is on, else ``[]``."""
    if not cfg.quantify.mfmc_budget:
        return []
    return [("multifidelity Monte Carlo", lambda client, cfg, store, pred: mfmc(client, cfg, pred))]


def inputs(cfg, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
    """Physical parameters ``(n, d)`` and seeds ``(n,)`` of inputs ``start .. stop - 1`` of the
    Monte Carlo step's design, extended: the same points for the same indices."""
    qc, gen = cfg.quantify, cfg.generate
    if stop <= start:
        return np.empty((0, len(gen.parameter_names))), np.empty(0, np.uint32)
    unit = sample_unit("random", stop - start, len(gen.parameter_names), qc.seed, start=start)
    return to_physical(gen, unit), sample_seeds(qc.seed, np.arange(start, stop))


def mfmc(client, cfg, pred) -> tuple[dict, dict, dict, dict]:
    """The MFMC step: pilot, allocation, new evaluations, estimate and comparisons.

    Stored (group ``quantify``): ``mfmc_n_samples``, ``mfmc_alpha``,
    ``mfmc_costs``, ``mfmc_rho`` and ``mfmc_sigma`` (dim ``mfmc_model``: solver, rom,
    surrogate; 0 samples and weight 0 for a dropped model), the replicate estimates
    ``mfmc_replicates`` (dim ``mfmc_replicate``, when made); metrics ``mfmc_*`` (see the module
    docstring).
    """
    qc = cfg.quantify
    pilot, w_seconds = _pilot(client, cfg, pred)
    costs = w_seconds / w_seconds[0]
    est = allocate(pilot, w_seconds, float(qc.mfmc_budget))
    n_plain = est.n_samples_mc_
    m = dict(zip((ORDER[k] for k in est.selected_), est.n_samples_.tolist(), strict=True))
    need = {"solver": n_plain} | {n: max(m.get(n, 0), n_plain) for n in ORDER[1:]}
    started = time.perf_counter()
    y = _evaluate(client, cfg, pred, pilot, need)
    reps = _replicates(cfg, pred, est, y, costs)
    spent = time.perf_counter() - started
    value = float(est.estimate(lambda n, rng: np.arange(n), [_lookup(y[n]) for n in ORDER]))
    plain = y["solver"][:n_plain]
    paired = {n: y[n][:n_plain] for n in ORDER}
    metrics = {
        "mfmc_estimate": value,
        "mfmc_std_error": math.sqrt(est.mse_),
        "mfmc_std_error_posterior": math.sqrt(_variance(est, paired)),
        "mfmc_mc_estimate": float(plain.mean()),
        "mfmc_mc_std_error": float(plain.std(ddof=1) / math.sqrt(n_plain)),
        "mfmc_mc_n_samples": n_plain,
        "mfmc_budget": float(qc.mfmc_budget),
        "mfmc_cost": est.cost_,
        "mfmc_n_pilot": est.n_pilot_,
        "mfmc_variance_reduction": float(est.variance_reduction_),
        "mfmc_step_seconds": spent,
        "mfmc_new_solver_runs": max(n_plain - est.n_pilot_, 0),
    }
    metrics.update(_pilot_interval(pilot, costs, float(qc.mfmc_budget), est.n_pilot_, qc.seed))
    metrics.update(_posterior_reduction(est, paired, qc.seed))
    metrics.update(_measured(plain, reps))
    for k, name in enumerate(ORDER):
        metrics[f"mfmc_rho_{name}"] = float(est.rho_[k])
        metrics[f"mfmc_cost_{name}"] = float(costs[k])
        metrics[f"mfmc_seconds_per_sample_{name}"] = float(w_seconds[k])
        metrics[f"mfmc_n_samples_{name}"] = int(m.get(name, 0))
    return metrics, *_group(est, reps)


def allocate(pilot: dict, seconds: np.ndarray, budget: float) -> MFMC:
    """MFMC's model selection and allocation (Peherstorfer et al. 2016, Algorithm 1, Theorem
    3.4) for pilot QoIs ``{model: (n_pilot,)}`` and seconds per sample ``(3,)``, both in
    ``ORDER``; the budget counts solver evaluations (costs are divided by the solver's)."""
    seconds = np.asarray(seconds, dtype=np.float64)
    return MFMC().pilot([pilot[n] for n in ORDER], seconds / seconds[0]).allocate(budget)


def _pilot(client, cfg, pred) -> tuple[dict, np.ndarray]:
    """The paired pilot QoIs (model -> (n_pilot,)) and seconds per sample of each model."""
    if pred.paired is None:  # the Monte Carlo step did not run in this call
        params, seeds = inputs(cfg, 0, cfg.quantify.n_mc)
        res = stage.run_all(client, cfg.generate, pred, params, seeds)
        pred.paired = (params, seeds, {name: res[name][0] for name in stage.MODELS})
    params, seeds, qoi = pred.paired
    begin = time.perf_counter()
    again = inputs(cfg, 0, len(params))
    per_input = (time.perf_counter() - begin) / len(params)
    if not (np.array_equal(again[0], params) and np.array_equal(again[1], seeds)):
        raise RuntimeError("the Monte Carlo step's inputs are not the design MFMC extends")
    seconds = [pred.seconds[n] / pred.evaluated[n] + per_input for n in ORDER]
    return {n: np.asarray(qoi[n], dtype=np.float64) for n in ORDER}, np.asarray(seconds)


def _evaluate(client, cfg, pred, pilot: dict, need: dict) -> dict:
    """QoI of each model on inputs ``0 .. need[model] - 1``: the pilot's, then new ones.

    New solver inputs run on Dask in the stage's blocks while the cheap models run here.
    """
    gen, n0 = cfg.generate, len(pilot["solver"])
    params, seeds = inputs(cfg, n0, max(need["solver"], n0))
    starts = range(0, len(params), gen.block_size)
    futures = client.map(
        stage.solve_summary,
        [gen] * len(starts),
        [params[s : s + gen.block_size] for s in starts],
        [seeds[s : s + gen.block_size] for s in starts],
        pure=False,
    )
    y = {n: [pilot[n]] + [_cheap(cfg, pred, n, n0, need[n])] for n in ORDER[1:]}
    solver = [pilot["solver"]]
    for future in futures:
        qoi, _, _, seconds = future.result()
        future.release()
        solver.append(qoi)
        pred.seconds["solver"] += seconds
    pred.evaluated["solver"] += len(params)
    return {"solver": np.concatenate(solver)} | {n: np.concatenate(v) for n, v in y.items()}


def _cheap(cfg, pred, name: str, start: int, stop: int) -> np.ndarray:
    """QoI of the ROM or the surrogate on inputs ``start .. stop - 1``, in the stage's batches."""
    fn = pred.reduced if name == "rom" else pred.surrogate
    out = []
    for lo in range(start, stop, pred.batch):
        params, seeds = inputs(cfg, lo, min(lo + pred.batch, stop))
        begin = time.perf_counter()
        traj = fn(params, seeds)
        pred.seconds[name] += time.perf_counter() - begin
        pred.evaluated[name] += len(traj)
        out.append(stage.final_energy(traj))
    return np.concatenate(out) if out else np.empty(0)


def _replicates(cfg, pred, est: MFMC, y: dict, costs: np.ndarray) -> np.ndarray:
    """Independent MFMC estimates ``(R,)`` with ``est``'s allocation, on disjoint solver runs.

    Replicate ``r`` uses the solver runs ``[r m_1, (r + 1) m_1)`` and, for its remaining
    low-fidelity samples, fresh inputs beyond every one evaluated so far (evaluated here and
    appended to ``y``). Empty when fewer than ``MIN_REPLICATES`` are affordable.
    """
    m, run = (
        est.n_samples_,
        [j for j in range(1, len(est.n_samples_)) if est.n_samples_[j] > est.n_samples_[j - 1]],
    )
    cheap = sum(costs[est.selected_[j]] * (m[j] - m[0]) for j in run)
    n_reps = min(len(y["solver"]) // m[0], MAX_REPLICATES)
    if cheap > 0:
        n_reps = min(n_reps, int(REPLICATE_BUDGETS * est.budget_ // cheap))
    if n_reps < MIN_REPLICATES:
        return np.empty(0)
    pool, extra = max(len(v) for v in y.values()), int(m[-1] - m[0])
    for j in run:
        name = ORDER[est.selected_[j]]
        more = _cheap(cfg, pred, name, len(y[name]), pool + n_reps * extra)
        y[name] = np.concatenate([y[name], more])
    models, values = [_lookup(y[n]) for n in ORDER], []
    for r in range(n_reps):
        fresh = np.arange(pool + r * extra, pool + (r + 1) * extra)
        idx = np.concatenate([np.arange(r * m[0], (r + 1) * m[0]), fresh])
        values.append(float(est.estimate(lambda n, rng, idx=idx: idx[:n], models)))
    return np.asarray(values)


def _lookup(values: np.ndarray):
    """A "model" of MFMC.estimate whose inputs are sample indices into computed QoIs."""
    return lambda idx: values[np.asarray(idx, dtype=np.int64)]


def _variance(est: MFMC, paired: dict) -> float:
    """Variance of ``est``'s estimator (its counts and weights) under the moments of the paired
    samples ``{model: (n,)}`` (``uq.mfmc.estimator_variance``)."""
    ys = np.stack([paired[ORDER[k]] for k in est.selected_])
    return estimator_variance(ys, est.n_samples_, est.alpha_)


def _pilot_interval(pilot: dict, costs, budget: float, n: int, seed: int) -> dict:
    """95% percentile bootstrap interval of the predicted variance reduction over pilot rows."""
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(N_BOOTSTRAP):
        rows = rng.integers(0, n, n)
        try:
            boot = MFMC().pilot([pilot[k][rows] for k in ORDER], costs).allocate(budget)
        except ValueError:  # a resample with a constant output: no correlation to estimate
            continue
        values.append(boot.variance_reduction_)
    if len(values) < N_BOOTSTRAP // 2:
        return {}
    low, high = np.quantile(values, [0.025, 0.975])
    return {
        "mfmc_variance_reduction_pilot_ci_low": low,
        "mfmc_variance_reduction_pilot_ci_high": high,
    }


def _posterior_reduction(est: MFMC, paired: dict, seed: int) -> dict:
    """Variance reduction of ``est``'s allocation re-estimated on the step's ``floor(p)`` paired
    samples, with a 95% percentile bootstrap interval over those rows (allocation fixed)."""
    n = len(paired["solver"])

    def reduction(rows):
        y = {k: v[rows] for k, v in paired.items()}
        return y["solver"].var(ddof=1) / n / _variance(est, y)

    rng = np.random.default_rng(seed)
    boot = [reduction(rng.integers(0, n, n)) for _ in range(N_BOOTSTRAP)]
    low, high = np.nanquantile(boot, [0.025, 0.975])
    return {
        "mfmc_variance_reduction_posterior": float(reduction(np.arange(n))),
        "mfmc_variance_reduction_posterior_ci_low": float(low),
        "mfmc_variance_reduction_posterior_ci_high": float(high),
    }


def _measured(plain: np.ndarray, reps: np.ndarray) -> dict:
    """Measured variance reduction and its F-law 95% interval (see the module docstring)."""
    if len(reps) < MIN_REPLICATES:
        return {}
    ratio = (plain.var(ddof=1) / len(plain)) / reps.var(ddof=1)
    f = stats.f(len(plain) - 1, len(reps) - 1)
    return {
        "mfmc_variance_reduction_measured": float(ratio),
        "mfmc_variance_reduction_measured_ci_low": float(ratio / f.ppf(0.975)),
        "mfmc_variance_reduction_measured_ci_high": float(ratio / f.ppf(0.025)),
        "mfmc_n_replicates": len(reps),
        "mfmc_replicate_mean": float(reps.mean()),
    }


def _group(est: MFMC, reps: np.ndarray) -> tuple[dict, dict, dict]:
    """The group's variables, coordinates and attributes of the step."""
    counts, alpha = np.zeros(len(ORDER), np.int64), np.zeros(len(ORDER))
    counts[list(est.selected_)] = est.n_samples_
    alpha[list(est.selected_)] = est.alpha_
    data = {
        "mfmc_n_samples": (("mfmc_model",), counts),
        "mfmc_alpha": (("mfmc_model",), alpha),
        "mfmc_costs": (("mfmc_model",), est.costs_),
        "mfmc_rho": (("mfmc_model",), est.rho_),
        "mfmc_sigma": (("mfmc_model",), est.sigma_),
    }
    if len(reps):
        data["mfmc_replicates"] = (("mfmc_replicate",), reps)
    attrs = {
        "mfmc_selected": [ORDER[k] for k in est.selected_],
        "mfmc_dropped": {ORDER[k]: why for k, why in est.dropped_.items()},
    }
    return data, {"mfmc_model": list(ORDER)}, attrs


def report_lines(m: dict, fmt) -> list[str]:
    """The report's lines on the step's metrics ``m`` (none when the step did not run)."""
    if "mfmc_estimate" not in m:
        return []
    used = ", ".join(
        f"{n} {m[f'mfmc_n_samples_{n}']} (cost {fmt(m[f'mfmc_cost_{n}'])}, "
        f"rho {fmt(m[f'mfmc_rho_{n}'])})"
        for n in ORDER
    )
    lines = [
        "",
        f"Multifidelity Monte Carlo of the QoI's mean, budget {fmt(m['mfmc_budget'])} solver "
        f"runs at the costs measured in this run (per sample, relative to the solver):",
        "",
        f"- samples: {used}",
        f"- MFMC estimate {fmt(m['mfmc_estimate'])} +- {fmt(m['mfmc_std_error'])} (predicted "
        f"standard error; {fmt(m['mfmc_std_error_posterior'])} re-estimated on all paired runs)",
        f"- plain Monte Carlo, {m['mfmc_mc_n_samples']} solver runs: "
        f"{fmt(m['mfmc_mc_estimate'])} +- {fmt(m['mfmc_mc_std_error'])}",
        f"- variance reduction at equal cost, predicted from the pilot: "
        f"{fmt(m['mfmc_variance_reduction'])}" + _interval(m, "pilot", "bootstrap over the pilot"),
        f"- re-estimated on the {m['mfmc_mc_n_samples']} paired runs: "
        f"{fmt(m['mfmc_variance_reduction_posterior'])}"
        + _interval(m, "posterior", "bootstrap over those runs"),
    ]
    if "mfmc_variance_reduction_measured" in m:
        lines.append(
            f"- measured over {m['mfmc_n_replicates']} independent MFMC replicates: "
            f"{fmt(m['mfmc_variance_reduction_measured'])}"
            + _interval(m, "measured", "F-law interval")
        )
    return lines


def _interval(m: dict, kind: str, what: str) -> str:
    low, high = (m.get(f"mfmc_variance_reduction_{kind}_ci_{e}") for e in ("low", "high"))
    return "" if low is None else f" (95% {what}: {low:.3g} to {high:.3g})"
