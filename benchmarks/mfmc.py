"""Variance reduction of multifidelity Monte Carlo over plain Monte Carlo at equal cost.

Two analytic model families with closed-form moments, three models each (high fidelity first),
with nominal costs per evaluation (the models' own run times are too small to mean anything):

- ``gaussian``: ``z ~ N(0, I_3)``, ``f_1 = 2 + 1.5 z_0``, ``f_k = f_1 + tau_k z_k`` with
  ``rho = 0.95, 0.8``; costs 1, 0.05, 0.001.
- ``trig``: ``x ~ U(-pi, pi)``, ``f_k = 1 + sin x + eps_k cos(k x)``, ``eps = 0, 0.3, 0.8``
  (``rho_k = 1 / sqrt(1 + eps_k^2)``); costs 1, 0.02, 0.001; non-Gaussian outputs.

For each family and budget: a pilot of ``--pilot`` shared samples (not charged to the budget)
estimates the moments; :class:`MFMC` allocates the budget; ``--reps`` independent MFMC estimates
and as many plain Monte Carlo estimates (``floor(budget / w_1)`` high-fidelity runs each) are
drawn. Reported: the variance reduction predicted from the pilot, the analytic one from the true
moments (``(sum_k sqrt(w_k / w_1 (rho_k^2 - rho_{k+1}^2)))^-2``, Peherstorfer, Willcox &
Gunzburger 2016, before rounding), the measured ratio of the two sample variances with a 95%
percentile bootstrap interval, and the MFMC bias in standard errors.

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.mfmc [--reps 2000] [--pilot 100]
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from pdeflow.tasks.uq import MFMC

BUDGETS = (10.0, 100.0, 1000.0)
N_BOOTSTRAP = 2000


def gaussian() -> dict:
    taus = [1.5 * math.sqrt(1 / r**2 - 1) for r in (0.95, 0.8)]

    def high(z: np.ndarray) -> np.ndarray:
        return 2.0 + 1.5 * z[:, 0]

    models = [high] + [lambda z, k=k, t=t: high(z) + t * z[:, k] for k, t in enumerate(taus, 1)]
    return {
        "sampler": lambda n, rng: rng.standard_normal((n, 3)),
        "models": models,
        "costs": [1.0, 0.05, 0.001],
        "rho": np.array([1.0, 0.95, 0.8]),
        "mean": 2.0,
    }


def trig() -> dict:
    eps = [0.0, 0.3, 0.8]
    models = [lambda x, k=k, e=e: 1.0 + np.sin(x) + e * np.cos(k * x) for k, e in enumerate(eps)]
    return {
        "sampler": lambda n, rng: rng.uniform(-np.pi, np.pi, n),
        "models": models,
        "costs": [1.0, 0.02, 0.001],
        "rho": 1 / np.sqrt(1 + np.square(eps)),
        "mean": 1.0,
    }


def analytic_reduction(rho: np.ndarray, costs: list[float]) -> float:
    """Closed-form variance reduction for models already ordered by decreasing ``|rho|``."""
    w, r2 = np.asarray(costs), np.append(np.asarray(rho) ** 2, 0.0)
    return float(1 / np.sum(np.sqrt(w / w[0] * (r2[:-1] - r2[1:]))) ** 2)


def measure(family: dict, budget: float, n_reps: int, n_pilot: int, seed: int) -> dict:
    sampler, models = family["sampler"], family["models"]
    seeds = np.random.SeedSequence([seed, int(budget)]).spawn(n_reps + 2)
    x = sampler(n_pilot, np.random.default_rng(seeds[0]))
    est = MFMC().pilot([f(x) for f in models], family["costs"]).allocate(budget)
    t0 = time.perf_counter()
    mfmc = np.array([est.estimate(sampler, models, np.random.default_rng(s)) for s in seeds[2:]])
    seconds = time.perf_counter() - t0
    n_mc = est.n_samples_mc_
    rng = np.random.default_rng(seeds[1])
    mc = models[0](sampler(n_reps * n_mc, rng)).reshape(n_reps, n_mc).mean(axis=1)
    boot = np.random.default_rng(seeds[1].spawn(1)[0])
    idx_a = boot.integers(0, n_reps, (N_BOOTSTRAP, n_reps))
    idx_b = boot.integers(0, n_reps, (N_BOOTSTRAP, n_reps))
    ratios = mc[idx_a].var(axis=1, ddof=1) / mfmc[idx_b].var(axis=1, ddof=1)
    return {
        "counts": est.n_samples_,
        "selected": est.selected_,
        "predicted": est.variance_reduction_,
        "analytic": analytic_reduction(family["rho"], family["costs"]),
        "measured": mc.var(ddof=1) / mfmc.var(ddof=1),
        "low": float(np.quantile(ratios, 0.025)),
        "high": float(np.quantile(ratios, 0.975)),
        "bias_se": (mfmc.mean() - family["mean"]) / (mfmc.std(ddof=1) / math.sqrt(n_reps)),
        "seconds": seconds,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.mfmc", description=__doc__)
    parser.add_argument("--reps", type=int, default=2000, help="replicate estimates per row")
    parser.add_argument("--pilot", type=int, default=100, help="pilot samples (not charged)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    print(
        f"MFMC vs plain MC at equal cost: {args.reps} replicates, pilot {args.pilot} samples, "
        "95% percentile bootstrap interval of the variance ratio\n"
    )
    print(
        "| family | budget | m_k (MFMC) | MC runs | predicted | analytic | measured [95% CI] "
        "| bias / SE | MFMC time |"
    )
    print("|---|---:|---|---:|---:|---:|---|---:|---:|")
    for name, family in (("gaussian", gaussian()), ("trig", trig())):
        for budget in BUDGETS:
            r = measure(family, budget, args.reps, args.pilot, args.seed)
            counts = ", ".join(str(int(m)) for m in r["counts"])
            print(
                f"| {name} | {budget:g} | {counts} | {int(budget // family['costs'][0])} "
                f"| {r['predicted']:.2f} | {r['analytic']:.2f} "
                f"| {r['measured']:.2f} [{r['low']:.2f}, {r['high']:.2f}] | {r['bias_se']:+.2f} "
                f"| {r['seconds']:.1f} s |",
                flush=True,
            )
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
