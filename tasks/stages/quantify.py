"""Stage 4: propagate the parameter distribution, calibrate bands, attribute variance.

(a) Monte Carlo through the solver (on Dask), the surrogate and the ROM on the same samples:
    mean and standard-deviation fields and quantiles of the quantity of interest (QoI).
(b) Split-conformal bands (Lei et al. 2018) for the surrogate's rollout, with coverage on the test
    split and averaged over random calibration/test re-splits.
(c) First-order and total Sobol indices of the QoI (Saltelli design) from all three models.
The QoI is the mean energy of the final state, E(T) = mean over channels and space of u(T)^2 / 2
(the kinetic energy for Burgers).
"""

from __future__ import annotations

import time

import numpy as np
import torch

import pdeflow.tasks.stages.quantify_mfmc as mfmc
import pdeflow.tasks.stages.quantify_sensitivity as sensitivity
from pdeflow.storage import RunStore, StageRecord
from pdeflow.tasks.config import GenerateConfig, PipelineConfig
from pdeflow.tasks.design import to_physical, to_unit
from pdeflow.tasks.sampling import sample_seeds, sample_unit
from pdeflow.tasks.solve import initial_state, solve_parameters, space_shape
from pdeflow.tasks.stages.base import Outcome, Stage, StageRun
from pdeflow.tasks.stages.integrity import UPSTREAM, record_problems
from pdeflow.tasks.stages.models import load_rom, load_surrogate
from pdeflow.tasks.surrogates.ensemble import Ensemble
from pdeflow.tasks.surrogates.training import rollout
from pdeflow.tasks.uq import (
    RunningMoments,
    SobolAnalysis,
    SplitConformal,
    quantiles,
    resplit_coverage,
)

GROUP = "quantify"
MODELS = ("solver", "surrogate", "rom")
SPACE_DIMS = ("x", "y", "z")
# One step's result: metrics, then the group's variables, coordinates and attributes.
Part = tuple[dict, dict, dict, dict]


def final_energy(traj: np.ndarray) -> np.ndarray:
    """QoI per sample: mean of u(T)^2 / 2; traj (n, n_time, channel, *space) -> (n,)."""
    last = np.asarray(traj, dtype=np.float64)[:, -1]
    return 0.5 * np.mean(last.reshape(len(last), -1) ** 2, axis=1)


def mc_seeds(qc, n: int) -> np.ndarray:
    """Seeds of the Monte Carlo samples' own randomness (random initial states)."""
    return sample_seeds(qc.seed, np.arange(n))


def solve_summary(
    gen: GenerateConfig, params: np.ndarray, seeds: np.ndarray
) -> tuple[np.ndarray, RunningMoments, np.ndarray | None, float]:
    """Dask task: solve a batch and return its QoI and field moments (not the fields).

    For a user simulator (``pde: custom``) the initial states (n, channel, *space) come back too:
    only the simulator knows them, and the surrogate starts its rollouts from them. Last comes
    the solve's wall time on the worker in seconds (the solver's measured cost).
    """
    start = time.perf_counter()
    traj = solve_parameters(gen, params, seeds)
    seconds = time.perf_counter() - start
    u0 = None if gen.problem.draws_initial_states else traj[:, 0].copy()
    return final_energy(traj), RunningMoments().update(traj.astype(np.float64)), u0, seconds


class Predictors:
    """The surrogate and the ROM of a store, evaluated on physical parameters in batches."""

    def __init__(self, cfg: PipelineConfig, store: RunStore, batch: int = 256):
        self.gen, self.batch = cfg.generate, batch
        self.model, self.rom = load_surrogate(cfg, store), load_rom(cfg, store)
        # Wall seconds and samples of every evaluation so far (the solver's summed over its Dask
        # tasks), and the Monte Carlo step's paired samples (params, seeds, model -> QoI):
        # what multifidelity Monte Carlo measures its costs and correlations with.
        self.seconds, self.evaluated = dict.fromkeys(MODELS, 0.0), dict.fromkeys(MODELS, 0)
        self.paired = None
        # The sobol step's Saltelli design in the unit cube, each model's QoI on it and its
        # indices: the polynomial chaos step fits and compares on these same runs.
        self.saltelli = None

    def surrogate(
        self, params: np.ndarray, seeds: np.ndarray, u0: np.ndarray | None = None
    ) -> np.ndarray:
        """Surrogate rollouts from the samples' initial states: (n, time, channel, *space).

        Args:
            u0: initial states (n, channel, *space); default: drawn as the generate stage
                draws them (not possible for ``pde: custom``, whose simulator makes its own).
        """
        return self.surrogate_spread(params, seeds, u0)[0]

    @property
    def is_ensemble(self) -> bool:
        return isinstance(self.model, Ensemble)

    def surrogate_spread(
        self, params: np.ndarray, seeds: np.ndarray, u0: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """``surrogate``'s rollouts and, for an ensemble, the members' standard deviation
        (None for one model). An ensemble's rollout is the mean of its members'."""
        dtype = next(self.model.parameters()).dtype
        if u0 is None:
            u0 = initial_state(self.gen, params, seeds, torch.device("cpu"), dtype)
        else:
            u0 = torch.as_tensor(np.asarray(u0), dtype=dtype)
        p = torch.as_tensor(to_unit(self.gen, params), dtype=dtype)
        n = self.gen.n_frames - 1
        if self.is_ensemble:
            mean, std = self.model.rollout(u0, p, n, batch_size=self.batch)
            return mean.numpy(), std.numpy()
        return rollout(self.model, u0, p, n, batch_size=self.batch).numpy(), None

    def reduced(self, params: np.ndarray, seeds: np.ndarray, u0=None) -> np.ndarray:
        """ROM predictions, shaped like the surrogate's; a ROM that takes the initial state
        gets ``u0`` (default: drawn as the generate stage draws it)."""
        initial = None
        if self.rom.uses_initial_state:
            if u0 is None:
                dtype = getattr(torch, self.gen.dtype)
                u0 = initial_state(self.gen, params, seeds, torch.device("cpu"), dtype).numpy()
            initial = np.asarray(u0).reshape(len(params), -1)
        flat = self.rom.predict(to_unit(self.gen, params), initial)
        return flat.reshape(len(params), flat.shape[1], len(self.gen.fields), *self.space)

    @property
    def space(self) -> tuple[int, ...]:
        return space_shape(self.gen)

    def summaries(
        self, params: np.ndarray, seeds: np.ndarray, u0: np.ndarray | None = None
    ) -> dict[str, tuple[np.ndarray, RunningMoments]]:
        out = {}
        for name, fn in (("surrogate", self.surrogate), ("rom", self.reduced)):
            qoi, mom = [], RunningMoments()
            for start in range(0, len(params), self.batch):
                rows = slice(start, start + self.batch)
                begin = time.perf_counter()
                traj = fn(params[rows], seeds[rows], None if u0 is None else u0[rows])
                self.seconds[name] += time.perf_counter() - begin
                self.evaluated[name] += len(traj)
                qoi.append(final_energy(traj))
                mom.update(traj.astype(np.float64))
            out[name] = (np.concatenate(qoi), mom)
        return out


def run_all(
    client, gen: GenerateConfig, pred: Predictors, params: np.ndarray, seeds: np.ndarray
) -> dict:
    """QoI and moments from the solver (blocks on Dask, overlapped) and both predictors."""
    starts = range(0, len(params), gen.block_size)
    blocks = [params[s : s + gen.block_size] for s in starts]
    block_seeds = [seeds[s : s + gen.block_size] for s in starts]
    futures = client.map(solve_summary, [gen] * len(blocks), blocks, block_seeds, pure=False)
    # Built-in PDEs: the predictors run while the solver's blocks do. A user simulator's initial
    # states are known only once its blocks are back.
    out = pred.summaries(params, seeds) if gen.problem.draws_initial_states else None
    qoi, mom, u0 = [], RunningMoments(), []
    for q, m, first, seconds in client.gather(futures):
        qoi.append(q)
        mom.merge(m)
        u0.append(first)
        pred.seconds["solver"] += seconds
    pred.evaluated["solver"] += len(params)
    if out is None:
        out = pred.summaries(params, seeds, np.concatenate(u0))
    out["solver"] = (np.concatenate(qoi), mom)
    return out


def monte_carlo(client, cfg: PipelineConfig, pred: Predictors) -> Part:
    qc, gen = cfg.quantify, cfg.generate
    params = to_physical(gen, sample_unit("random", qc.n_mc, len(gen.parameter_names), qc.seed))
    seeds = mc_seeds(qc, len(params))
    res = run_all(client, gen, pred, params, seeds)
    pred.paired = (params, seeds, {name: res[name][0] for name in MODELS})
    ref_mean, ref_std = res["solver"][1].mean_, res["solver"][1].std_
    metrics, data = {}, {}
    dims = ("time", "channel", *SPACE_DIMS[: len(pred.space)])
    for name in MODELS:
        qoi, mom = res[name]
        data[f"mean_{name}"] = (dims, mom.mean_)
        data[f"std_{name}"] = (dims, mom.std_)
        data[f"qoi_quantiles_{name}"] = (("quantile",), quantiles(qoi, qc.quantiles))
        if name != "solver":
            metrics[f"mc_mean_rel_diff_{name}"] = _rel(mom.mean_, ref_mean)
            metrics[f"mc_std_rel_diff_{name}"] = _rel(mom.std_, ref_std)
            q_diff = np.abs(data[f"qoi_quantiles_{name}"][1] - data["qoi_quantiles_solver"][1])
            metrics[f"qoi_quantile_max_rel_diff_{name}"] = float(
                q_diff.max() / res["solver"][0].std()
            )
    for q, value in zip(qc.quantiles, data["qoi_quantiles_solver"][1], strict=True):
        metrics[f"qoi_q{round(q * 100):02d}_solver"] = float(value)
    return metrics, data, {"quantile": list(qc.quantiles)}, {}


def conformal(cfg: PipelineConfig, store: RunStore, pred: Predictors) -> Part:
    """Simultaneous bands for the surrogate rollout; scale from validation residuals."""
    qc, gen = cfg.quantify, cfg.generate
    params = store.read_coords(gen.parameter_names)
    seeds = store.read_coords(["seed"])[:, 0]

    def residuals(split):
        idx = store.sample_indices(split)
        true = store.read_samples(idx).astype(np.float64)
        mean, std = pred.surrogate_spread(params[idx], seeds[idx], true[:, 0])
        return mean.astype(np.float64), true, std

    val_pred, val_true, _ = residuals("val")
    scale = np.abs(val_pred - val_true).mean(axis=0) + 1e-6 * np.abs(val_true).mean() + 1e-12
    cal_pred, cal_true, cal_std = residuals("calibration")
    test_pred, test_true, test_std = residuals("test")
    cp = SplitConformal(alpha=qc.alpha).fit(cal_pred, cal_true, scale=scale)
    pool_pred = np.concatenate([cal_pred, test_pred])
    pool_true = np.concatenate([cal_true, test_true])
    cover = resplit_coverage(
        pool_pred,
        pool_true,
        len(cal_pred),
        qc.n_resplits,
        np.random.default_rng(qc.seed),
        qc.alpha,
        scale=scale,
    )
    metrics = {
        "conformal_nominal": 1 - qc.alpha,
        "conformal_coverage_test": cp.coverage(test_pred, test_true),
        "conformal_coverage_resplit_mean": float(cover.mean()),
        "conformal_coverage_resplit_std": float(cover.std()),
        "conformal_band_halfwidth_mean": float(cp.quantile_ * scale.mean()),
    }
    data = {
        "conformal_scale": (("time", "channel", *SPACE_DIMS[: scale.ndim - 2]), scale),
        "conformal_resplit_coverage": (("resplit",), cover),
    }
    attrs = {"conformal_quantile": float(cp.quantile_), "alpha": qc.alpha}
    if cal_std is not None:
        ens_metrics, ens_attrs = ensemble_conformal(
            qc, (cal_pred, cal_true, cal_std), (test_pred, test_true, test_std), scale
        )
        metrics.update(ens_metrics)
        attrs.update(ens_attrs)
    return metrics, data, {}, attrs


# The ensemble-scaled band's floor, as a fraction of the validation residual scale: where the
# members agree exactly (the input frame, a smooth region) a zero spread would give a zero
# width and let one such point decide the whole field's score.
ENSEMBLE_FLOOR = 0.1


def ensemble_conformal(qc, cal, test, val_scale: np.ndarray) -> tuple[dict, dict]:
    """Split-conformal bands scaled per sample by the ensemble's spread.

    The score of sample i is ``max |true_i - mean_i| / s_i`` with ``s_i = std_i + f * scale``
    (``f`` = ``ENSEMBLE_FLOOR``, ``scale`` the validation residual scale). ``s_i`` depends on
    the sample's inputs only, never its truth, so the scores stay exchangeable and the
    ``1 - alpha`` guarantee holds; dividing both fields by ``s_i`` turns it into the
    fixed-scale band of ``SplitConformal``. The band is ``mean_i +- q s_i``: narrow where the
    members agree.
    """
    floor = ENSEMBLE_FLOOR * np.broadcast_to(val_scale, cal[0].shape[1:])

    def scaled(part):
        pred, true, std = part
        s = std + floor
        return pred / s, true / s, s

    cal_p, cal_t, _ = scaled(cal)
    test_p, test_t, test_s = scaled(test)
    cp = SplitConformal(alpha=qc.alpha).fit(cal_p, cal_t)
    cover = resplit_coverage(
        np.concatenate([cal_p, test_p]),
        np.concatenate([cal_t, test_t]),
        len(cal_p),
        qc.n_resplits,
        np.random.default_rng(qc.seed),
        qc.alpha,
    )
    metrics = {
        "conformal_ensemble_coverage_test": cp.coverage(test_p, test_t),
        "conformal_ensemble_coverage_resplit_mean": float(cover.mean()),
        "conformal_ensemble_band_halfwidth_mean": float(cp.quantile_ * test_s.mean()),
    }
    return metrics, {"conformal_ensemble_quantile": float(cp.quantile_)}


def sobol(client, cfg: PipelineConfig, pred: Predictors) -> Part:
    qc, gen = cfg.quantify, cfg.generate
    analysis = SobolAnalysis(n_base=qc.sobol_n_base, seed=qc.seed)
    unit = analysis.sample(len(gen.parameter_names))
    res = run_all(client, gen, pred, to_physical(gen, unit), mc_seeds(qc, len(unit)))
    data, idx = {}, {}
    for name in MODELS:
        idx[name] = analysis.analyze(res[name][0])
        for key in ("S1", "ST", "S1_conf", "ST_conf"):
            data[f"{key}_{name}"] = (("parameter",), np.asarray(idx[name][key]))
    pred.saltelli = (unit, {name: res[name][0] for name in MODELS}, idx)
    metrics = {}
    for name in ("surrogate", "rom"):
        diff = max(np.abs(idx[name][k] - idx["solver"][k]).max() for k in ("S1", "ST"))
        metrics[f"sobol_max_abs_diff_{name}"] = float(diff)
    return metrics, data, {"parameter": gen.parameter_names}, {}


class Quantify(Stage):
    name = "quantify"
    upstream = UPSTREAM["quantify"]

    def check(self, cfg: PipelineConfig) -> None:
        cfg.check_stages(("quantify",))
        if cfg.train.history > 1:
            raise ValueError(
                f"quantify: train.history = {cfg.train.history} needs the first "
                f"{cfg.train.history} frames of every Monte Carlo sample, and only the solver "
                "makes them; quantify propagates from the initial state alone, so it needs "
                "train.history = 1 (train with history > 1 runs on its own: pdeflow run train)"
            )
        sensitivity.check_sensitivity(cfg)
        mfmc.check_mfmc(cfg)

    def problems(self, run: StageRun, record: StageRecord, deep: bool = True) -> list[str]:
        return record_problems(run.store, self.name, record, deep)

    def total(self, run: StageRun) -> int:
        return len(active_steps(run.cfg))

    def pending(self, run: StageRun) -> list[int]:
        return list(range(len(active_steps(run.cfg))))

    def compute(self, run: StageRun, units: list[int]) -> None:
        """Monte Carlo, conformal bands and Sobol' indices, then one group with all three."""
        cfg, store = run.cfg, run.store
        pred = Predictors(cfg, store)
        metrics, variables, coords, attrs = {}, {}, {}, {}
        steps = active_steps(cfg)
        for k in units:
            m, v, c, a = steps[k][1](run.client, cfg, store, pred)
            metrics.update(m)
            variables.update(v)
            coords.update(c)
            attrs.update(a)
            run.report(k + 1, len(steps), finished=steps[k][0])
        run.state["metrics"] = metrics
        run.state["files"] = store.write_group(GROUP, variables, coords, attrs)

    def finish(self, run: StageRun) -> Outcome:
        return Outcome(run.state["metrics"], artifacts=run.state["files"])


STEP_NAMES = ("Monte Carlo", "conformal bands", "Sobol indices")
STEPS = (
    lambda client, cfg, store, pred: monte_carlo(client, cfg, pred),
    lambda client, cfg, store, pred: conformal(cfg, store, pred),
    lambda client, cfg, store, pred: sobol(client, cfg, pred),
)


def active_steps(cfg: PipelineConfig) -> list[tuple[str, object]]:
    """(name, step) of every step ``cfg`` runs, in order: ``STEPS``, then the opt-in ones."""
    return [
        *zip(STEP_NAMES, STEPS, strict=True),
        *sensitivity.sensitivity_steps(cfg),
        *mfmc.mfmc_steps(cfg),
    ]


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))
