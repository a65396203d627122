"""The infer stage's results: the chains' draws as a group, diagnostics and efficiency metrics.

Per method (``da``, ``mh``), over the kept steps (after the burn-in) of all chains:
acceptance rates, solver calls, ArviZ's bulk effective sample size (the smallest over the
parameters) per solver call, and R-hat (the largest); per parameter the posterior mean and 90%
central interval, and with a synthetic truth, whether the interval covers it.
"""

from __future__ import annotations

import numpy as np

from pdeflow.tasks.design import to_physical
from pdeflow.tasks.stages.base import Outcome, StageRun
from pdeflow.tasks.stages.infer import GROUP, METHOD_TEXT, read_segment
from pdeflow.tasks.stages.infer_observations import SPACE, load_observations

# The 90% central credible interval.
LOWER, UPPER = 0.05, 0.95


def _chains(run: StageRun, method: str) -> tuple[np.ndarray, dict, int]:
    """Kept draws in the unit cube (n_chains, n_steps, d), the kept counters summed over the
    chains, and the solver blow-ups."""
    ic, key = run.cfg.infer, run.state.get("key")
    if key is None:
        from pdeflow.tasks.stages.infer import chain_key

        key = chain_key(run.cfg, run.store)
    chains, counts, blow_ups = [], {}, 0
    for c in range(ic.n_chains):
        parts = []
        for s in range(ic.n_segments):
            seg = read_segment(run.store, method, c, s, key)
            if seg is None:
                raise RuntimeError(f"infer: {method} chain {c} segment {s} is missing or damaged")
            parts.append(np.asarray(seg["draws"], dtype=np.float64))
            for k, v in seg["kept"].items():
                counts[k] = counts.get(k, 0) + v
            blow_ups += seg["blow_ups"]
        chains.append(np.concatenate(parts)[ic.burn_in :])
    return np.stack(chains), counts, blow_ups


def _finite(value: float, default: float = 0.0) -> float:
    return float(value) if np.isfinite(value) else default


def summarize(run: StageRun) -> Outcome:
    from pdeflow.tasks.uq import mcmc

    cfg, store = run.cfg, run.store
    gen, ic = cfg.generate, cfg.infer
    names = list(gen.parameter_names)
    obs = load_observations(cfg, store)
    metrics: dict = {"observations": len(obs.values), "noise_sigma": obs.sigma}
    details: dict = {"sample": obs.sample, "methods": {}}
    draws, blow_ups = {}, 0
    for method in ic.methods:
        unit, counts, blown = _chains(run, method)
        blow_ups += blown
        phys = to_physical(gen, unit.reshape(-1, len(names))).reshape(unit.shape)
        draws[method] = phys
        diag = mcmc.diagnostics(phys, names)
        ess = min(_finite(diag[n]["ess_bulk"]) for n in names)
        rhat = [diag[n]["r_hat"] for n in names]
        steps = counts["steps"]
        calls = counts["fine_calls"]
        row = {
            "acceptance": counts["accepted"] / steps,
            "solver_calls": calls,
            "solver_calls_per_step": calls / steps,
            "ess_min": ess,
            "ess_per_solver_call": ess / max(calls, 1),
        }
        if np.all(np.isfinite(rhat)):
            row["rhat_max"] = float(np.max(rhat))
            if ic.n_chains > 1 and row["rhat_max"] > 1.1:
                run.warn(
                    f"infer {method}: R-hat {row['rhat_max']:.2f} > 1.1, the chains disagree; "
                    "run more steps (infer.n_steps) or a longer burn-in"
                )
        else:
            run.warn(f"infer {method}: a chain never moved; R-hat is undefined")
        if method == "da":
            inside = steps - counts["outside"]
            row["screen_acceptance"] = counts["screened"] / max(inside, 1)
            row["second_acceptance"] = counts["accepted"] / max(counts["screened"], 1)
            row["rom_calls"] = counts["screen_calls"]
        for key, value in row.items():
            metrics[f"{method}_{key}"] = value
        details["methods"][method] = {
            "text": METHOD_TEXT[method],
            **row,
            "parameters": {n: {k: float(v) for k, v in diag[n].items()} for n in names},
        }
    if {"da", "mh"} <= set(ic.methods):
        metrics["ess_per_solver_call_gain"] = metrics["da_ess_per_solver_call"] / max(
            metrics["mh_ess_per_solver_call"], 1e-300
        )
    primary = ic.methods[0]
    flat = draws[primary].reshape(-1, len(names))
    for j, n in enumerate(names):
        lo, hi = np.quantile(flat[:, j], [LOWER, UPPER])
        metrics[f"{n}_mean"] = float(flat[:, j].mean())
        metrics[f"{n}_q05"], metrics[f"{n}_q95"] = float(lo), float(hi)
        if obs.truth is not None:
            metrics[f"{n}_true"] = float(obs.truth[j])
            metrics[f"{n}_covered"] = bool(lo <= obs.truth[j] <= hi)
    if blow_ups:
        metrics["solver_blow_ups"] = blow_ups
        run.warn(
            f"infer: the solver blew up at {blow_ups} proposal(s), which were rejected: the "
            "posterior excludes the parameters the solver cannot run"
        )
    files = _write_group(run, obs, draws, names)
    details["primary"] = primary
    return Outcome(metrics, artifacts=files, details=details)


def _write_group(run: StageRun, obs, draws: dict[str, np.ndarray], names: list[str]) -> dict:
    methods = list(draws)
    stacked = np.stack([draws[m] for m in methods])
    n_dims = obs.points.shape[1]
    variables = {
        "draws": (
            ("method", "chain", "draw", "parameter"),
            stacked,
            {"long_name": "posterior draws after the burn-in, in the parameters' units"},
        ),
        "observed": (("observation",), obs.values, {"long_name": "observed value"}),
        "observed_frame": (("observation",), obs.frames, {"long_name": "saved frame index"}),
        "observed_channel": (("observation",), obs.channels, {"long_name": "field index"}),
    }
    for a in range(n_dims):
        variables[f"observed_{SPACE[a]}"] = (
            ("observation",),
            obs.points[:, a],
            {"long_name": f"sensor {SPACE[a]} position"},
        )
    attrs = {"noise_sigma": obs.sigma, "sample": obs.sample, "burn_in": run.cfg.infer.burn_in}
    if obs.truth is not None:
        attrs["truth"] = [float(v) for v in obs.truth]
    coords = {"method": methods, "parameter": names}
    return run.store.write_group(GROUP, variables, coords, attrs)
