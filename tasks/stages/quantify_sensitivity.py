"""Opt-in sensitivity steps of the quantify stage, on the cheap models (surrogate and ROM).

Each step returns a ``Part`` like the stage's own steps and runs only when its setting is on:

- ``quantify.morris_trajectories`` (r > 0): Morris elementary effects of the QoI
  (:class:`~pdeflow.tasks.uq.MorrisScreening`, Morris 1991; Campolongo et al. 2007), on ``r``
  one-at-a-time paths in the unit cube of the design (``r (d + 1)`` runs per model). Effects are
  per unit of *normalised* parameter (its CDF value), so parameters of different units compare.
- ``quantify.field_sobol``: first-order and total Sobol' indices at every grid point and saved
  time (:class:`~pdeflow.tasks.uq.FieldSobol`) on a Saltelli design of ``quantify.sobol_n_base``
  base rows; also the QoI's indices from the same runs, an independent estimate of what the
  ``sobol`` step computes.
- ``quantify.pce_degree_max`` (p > 0): a polynomial chaos expansion of the QoI
  (:class:`~pdeflow.tasks.uq.PolynomialChaos`, Legendre in the unit cube, degree 0..p by 5-fold
  cross-validation) regressed on the runs of the ``sobol`` step's Saltelli design, so its Sobol'
  indices compare with the Saltelli estimates on the very same runs; its mean and variance compare
  with plain Monte Carlo on the ``monte_carlo`` step's sample.

The random part of a sample that is not a parameter (the seed of a random initial field) is
shared where an estimator differences runs: along a Morris path, and within a Saltelli block
(``A_j``, its ``A_B^(i)_j`` and ``B_j``). The seed then acts as an extra input that is never
swapped: ``ST_i`` is parameter ``i``'s total index and ``S1_i`` its first-order index plus its
interactions with that seed. With initial states made of sampled Fourier amplitudes
(``initial_condition.kind: modes``) there is no such randomness and both are the usual indices.
The PCE's runs have a seed each, as the ``sobol`` step's: there the expansion fits the mean QoI
given the parameters, and its variance is the parameters' share ``Var E[QoI | parameters]``,
short of the Monte Carlo variance by the seed's share (its cross-validated error shows that
share, and its indices are fractions of the parameters' share).
"""

from __future__ import annotations

import numpy as np

import pdeflow.tasks.stages.quantify as stage
from pdeflow.tasks.design import to_physical
from pdeflow.tasks.sampling import sample_unit
from pdeflow.tasks.uq import FieldSobol, MorrisScreening, PolynomialChaos, SobolAnalysis

CHEAP = ("surrogate", "rom")
SPACE_DIMS = ("x", "y", "z")
# Bootstrap resamples of the index maps' intervals: they are summarised by their mean only, and
# each resample costs a pass over (n_params, n_base, n_locations) values.
MAP_BOOTSTRAP = 50
# Morris grid levels: even (odd grids bias the design), 4 as recommended by Saltelli et al. (2008).
MORRIS_LEVELS = 4
PCE_FOLDS = 5


def check_sensitivity(cfg) -> None:
    """What the opt-in steps need of the config, checked before the stage computes.

    Raises:
        ValueError: a step is on for a simulator that makes its own initial states (the cheap
            models start from the solver's then, and these designs do not run the solver).
    """
    qc = cfg.quantify
    on = [
        name
        for name, value in (
            ("morris_trajectories", qc.morris_trajectories),
            ("field_sobol", qc.field_sobol),
            ("pce_degree_max", qc.pce_degree_max),
        )
        if value
    ]
    if on and not cfg.generate.problem.draws_initial_states:
        raise ValueError(
            f"quantify.{on[0]}: the sensitivity steps run the surrogate and the ROM from initial "
            "states drawn as the generate stage draws them, and this simulator makes its own; "
            "set quantify.morris_trajectories=0, field_sobol=false and pce_degree_max=0"
        )


def sensitivity_steps(cfg) -> list[tuple[str, object]]:
    """(name, step) of each enabled step, in the stage's order; a step is called as
    ``step(client, cfg, store, pred)`` and returns a ``Part``."""
    qc, out = cfg.quantify, []
    if qc.morris_trajectories:
        out.append(("Morris screening", lambda client, cfg, store, pred: morris(cfg, pred)))
    if qc.field_sobol:
        out.append(("Sobol index maps", lambda client, cfg, store, pred: field_maps(cfg, pred)))
    if qc.pce_degree_max:
        out.append(("polynomial chaos", lambda client, cfg, store, pred: chaos(cfg, pred)))
    return out


def _qoi(pred, params: np.ndarray, seeds: np.ndarray) -> dict[str, np.ndarray]:
    """The QoI of the cheap models on physical parameters (n, d): model -> (n,)."""
    return {name: qoi for name, (qoi, _) in pred.summaries(params, seeds).items()}


def _fields(pred, params: np.ndarray, seeds: np.ndarray) -> dict[str, np.ndarray]:
    """Trajectories of the cheap models, model -> (n, time, channel, *space), float32."""
    out = {}
    for name, fn in (("surrogate", pred.surrogate), ("rom", pred.reduced)):
        parts = [
            fn(params[s : s + pred.batch], seeds[s : s + pred.batch]).astype(np.float32)
            for s in range(0, len(params), pred.batch)
        ]
        out[name] = np.concatenate(parts)
    return out


def _seeds(qc, n_groups: int, group_size: int) -> np.ndarray:
    """One seed per group of consecutive runs (a Morris path, a Saltelli block)."""
    return np.repeat(stage.mc_seeds(qc, n_groups), group_size)


def morris(cfg, pred) -> tuple[dict, dict, dict, dict]:
    """Morris mu*, mu, sigma and mu*'s bootstrap half-width of the QoI, per parameter and model.

    Stored as ``morris_<stat>_<model>`` with dims ``("parameter",)``; metrics
    ``morris_mu_star_<model>_<parameter>`` and ``morris_top_rank_agree`` (1 when both models rank
    the same parameter first).
    """
    qc, gen = cfg.quantify, cfg.generate
    names, d = gen.parameter_names, len(gen.parameter_names)
    screen = MorrisScreening(qc.morris_trajectories, num_levels=MORRIS_LEVELS, seed=qc.seed)
    unit = screen.design(d)
    qoi = _qoi(pred, to_physical(gen, unit), _seeds(qc, qc.morris_trajectories, d + 1))
    metrics, data, top = {}, {}, {}
    for name in CHEAP:
        screen.fit(unit, qoi[name])
        for key in ("mu_star", "mu", "sigma", "mu_star_conf"):
            data[f"morris_{key}_{name}"] = (("parameter",), getattr(screen, key + "_"))
        for p, value in zip(names, screen.mu_star_, strict=True):
            metrics[f"morris_mu_star_{name}_{p}"] = float(value)
        top[name] = int(np.argmax(screen.mu_star_))
    metrics["morris_top_rank_agree"] = int(top["surrogate"] == top["rom"])
    attrs = {"morris_trajectories": qc.morris_trajectories, "morris_levels": MORRIS_LEVELS}
    return metrics, data, {"parameter": names}, attrs


def field_maps(cfg, pred) -> tuple[dict, dict, dict, dict]:
    """S1 and ST maps at every grid point and saved time, per parameter and model.

    Stored as ``field_S1_<model>`` and ``field_ST_<model>``, dims
    ``("parameter", "time", "channel", "x"[, "y", "z"])``, NaN where the field does not vary
    (e.g. a boundary value fixed for every sample); the generalised (variance-weighted) indices
    of the whole field as ``field_S1_agg_<model>`` / ``field_ST_agg_<model>`` (dims
    ``("parameter",)``); and the QoI's indices from the same runs as
    ``field_qoi_S1_<model>`` / ``field_qoi_ST_<model>``.

    Metrics per model and parameter: the spatio-temporal means of both maps and the generalised
    indices. The maps are indices of the field at each point, not of the QoI (the mean energy of
    the final state): they need not agree with the QoI's indices of the ``sobol`` step. What
    must agree with those, within Monte Carlo error, is ``field_qoi_*`` (the same quantity on
    an independent design); ``field_qoi_max_abs_diff_<model>`` is stored for that comparison
    in the ``sobol_max_abs_diff`` convention.
    """
    qc, gen = cfg.quantify, cfg.generate
    names, d = gen.parameter_names, len(gen.parameter_names)
    # The seed differs from the sobol step's so the QoI indices are an independent estimate.
    analysis = FieldSobol(qc.sobol_n_base, seed=qc.seed + 1, n_bootstrap=MAP_BOOTSTRAP)
    unit = analysis.design(d)
    fields = _fields(pred, to_physical(gen, unit), _seeds(qc, qc.sobol_n_base, d + 2))
    dims = ("parameter", "time", "channel", *SPACE_DIMS[: len(pred.space)])
    metrics, data = {}, {}
    for name in CHEAP:
        maps = analysis.fit(unit, fields[name])
        data[f"field_S1_{name}"] = (dims, maps.S1_.astype(np.float32))
        data[f"field_ST_{name}"] = (dims, maps.ST_.astype(np.float32))
        data[f"field_S1_agg_{name}"] = (("parameter",), maps.S1_agg_)
        data[f"field_ST_agg_{name}"] = (("parameter",), maps.ST_agg_)
        for j, p in enumerate(names):
            metrics[f"field_S1_mean_{name}_{p}"] = _nanmean(maps.S1_[j])
            metrics[f"field_ST_mean_{name}_{p}"] = _nanmean(maps.ST_[j])
            metrics[f"field_S1_agg_{name}_{p}"] = float(maps.S1_agg_[j])
            metrics[f"field_ST_agg_{name}_{p}"] = float(maps.ST_agg_[j])
        metrics[f"field_S1_conf_mean_{name}"] = _nanmean(maps.S1_conf_)
        metrics[f"field_constant_fraction_{name}"] = float(maps.constant_.mean())
        scalar = FieldSobol(qc.sobol_n_base, seed=qc.seed + 1, n_bootstrap=MAP_BOOTSTRAP)
        scalar.fit(unit, stage.final_energy(fields[name]))
        data[f"field_qoi_S1_{name}"] = (("parameter",), scalar.S1_)
        data[f"field_qoi_ST_{name}"] = (("parameter",), scalar.ST_)
    return metrics, data, {"parameter": names}, {"field_sobol_n_base": qc.sobol_n_base}


def chaos(cfg, pred) -> tuple[dict, dict, dict, dict]:
    """A PCE of the QoI per model; its moments and Sobol' indices against sampling estimates.

    The expansion is fitted to the runs of the ``sobol`` step's Saltelli design and compared
    with that step's indices (its QoI values and indices as it left them on ``pred``, or the
    same points and seeds evaluated here when it did not run in this call). The mean and
    variance compare with the ``monte_carlo`` step's sample (``pred.paired``, or evaluated
    here likewise), with its standard errors.

    Stored: ``pce_S1_<model>``, ``pce_ST_<model>`` (dims ``("parameter",)``), ``pce_cv_error_
    <model>`` (dims ``("degree",)``, the relative 5-fold error of each degree tried, NaN where
    a degree has more terms than a training fold has rows). Metrics per model: ``pce_degree``,
    ``pce_mean``, ``pce_variance``, ``mc_qoi_mean`` and ``mc_qoi_variance`` with their
    standard errors, the differences in standard errors (``pce_mean_z``, ``pce_variance_z``)
    and ``pce_sobol_max_abs_diff`` (largest |PCE - Saltelli| over S1 and ST).
    """
    qc, gen = cfg.quantify, cfg.generate
    names, d = gen.parameter_names, len(gen.parameter_names)
    if pred.saltelli is not None:  # the sobol step's runs, evaluated once
        unit, qoi, ref = pred.saltelli
    else:
        saltelli = SobolAnalysis(n_base=qc.sobol_n_base, seed=qc.seed)
        unit = saltelli.sample(d)
        qoi = _qoi(pred, to_physical(gen, unit), stage.mc_seeds(qc, len(unit)))
        ref = {name: saltelli.analyze(qoi[name]) for name in CHEAP}
    if pred.paired is not None:  # the monte_carlo step's sample, evaluated once
        mc_qoi = pred.paired[2]
    else:
        mc_unit = sample_unit("random", qc.n_mc, d, qc.seed)
        mc_qoi = _qoi(pred, to_physical(gen, mc_unit), stage.mc_seeds(qc, qc.n_mc))
    box = [[0.0, 1.0]] * d
    metrics, data, degrees = {}, {}, np.arange(qc.pce_degree_max + 1)
    for name in CHEAP:
        pce = PolynomialChaos(
            box, degree="cv", max_degree=qc.pce_degree_max, n_folds=PCE_FOLDS, seed=qc.seed
        )
        pce.fit(unit, qoi[name])
        data[f"pce_S1_{name}"] = (("parameter",), pce.S1_)
        data[f"pce_ST_{name}"] = (("parameter",), pce.ST_)
        cv = [pce.cv_errors_.get(int(k), np.nan) for k in degrees]
        data[f"pce_cv_error_{name}"] = (("degree",), np.asarray(cv, dtype=float))
        metrics.update(_moment_metrics(name, pce, mc_qoi[name]))
        diff = max(np.nanmax(np.abs(getattr(pce, k + "_") - ref[name][k])) for k in ("S1", "ST"))
        metrics[f"pce_sobol_max_abs_diff_{name}"] = float(diff)
    return metrics, data, {"parameter": names, "degree": degrees.tolist()}, {}


def _moment_metrics(name: str, pce: PolynomialChaos, sample: np.ndarray) -> dict:
    """PCE mean and variance against the sample's, with the sample's standard errors: sd/sqrt(n)
    for the mean and sqrt((m4 - s^4) / n) for the variance (the delta method; no normality)."""
    n = len(sample)
    mean, var = float(sample.mean()), float(sample.var(ddof=1))
    m4 = float(np.mean((sample - mean) ** 4))
    se_mean, se_var = np.sqrt(var / n), np.sqrt(max(m4 - var**2, 0.0) / n)
    pce_mean, pce_var = float(pce.mean_), float(pce.variance_)
    return {
        f"pce_degree_{name}": int(pce.degree_),
        f"pce_mean_{name}": pce_mean,
        f"pce_variance_{name}": pce_var,
        f"mc_qoi_mean_{name}": mean,
        f"mc_qoi_mean_se_{name}": float(se_mean),
        f"mc_qoi_variance_{name}": var,
        f"mc_qoi_variance_se_{name}": float(se_var),
        f"pce_mean_z_{name}": (pce_mean - mean) / max(float(se_mean), 1e-300),
        f"pce_variance_z_{name}": (pce_var - var) / max(float(se_var), 1e-300),
    }


def _nanmean(values: np.ndarray) -> float:
    """Mean over the finite entries; 0 when there are none (a metric must be finite)."""
    finite = np.asarray(values)[np.isfinite(values)]
    return float(finite.mean()) if finite.size else 0.0
