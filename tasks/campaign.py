"""The active-learning campaign: let the ROM's uncertainty pick the next simulations.

Round 0 runs generate and reduce (and train, with ``campaign.train``) on the config's design.
Every round after it

1. scores a pool of candidate parameters (scrambled Sobol' points of the unit cube) by the
   predictive variance of a GP on the reduce stage's POD coefficients (the POD-GPR ROM) over
   the whole trajectory, relative to its predicted squared norm (the held-out error is
   relative), and picks a batch greedily, conditioning the GP on each pick
   (``pdeflow.tasks.uq.acquisition``), or takes the baselines' points (``random``, ``sobol``);
2. appends the batch to ``generate.points``: generate solves them as new blocks of the same
   store (all in the train split, so the held-out test split of the design never changes);
3. updates the models as an extension of the store: the POD basis incrementally and the
   regression refitted (reduce), the surrogate fine-tuned from its last checkpoint (train);
4. logs the ROM's held-out mean relative error against the number of simulations.

It stops at the budget or at the target error. The campaign's log in the store holds every
chosen point with its round and every round's error, written before the round's simulations
start and after its models are updated: a killed campaign resumes at that round, and the stages
themselves compute only what is missing (no finished simulation or training is repeated).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from pdeflow.storage import RunStore
from pdeflow.storage.fsio import read_checked, write_checked
from pdeflow.tasks.config import PipelineConfig, config_hash

log = logging.getLogger("pdeflow.campaign")
GROUP = "campaign"
LOG = "campaign.json"
# Chosen points stay this far inside the unit cube (the marginals' quantiles are finite there).
EDGE = 1e-9


class CampaignError(ValueError):
    """A campaign config that cannot run (names the field); nothing was computed."""


def stages(cfg: PipelineConfig) -> tuple[str, ...]:
    """The stages every round runs."""
    return ("generate", "train", "reduce") if cfg.campaign.train else ("generate", "reduce")


def check(cfg: PipelineConfig) -> None:
    """Refuse what the campaign cannot run, before anything starts.

    Raises:
        CampaignError: naming the field and what it needs.
    """
    cc, gen = cfg.campaign, cfg.generate
    if gen.points:
        raise CampaignError("generate.points: the campaign chooses them; leave them out")
    if not gen.parameter_names:
        raise CampaignError("generate.parameters: a campaign chooses parameters; sample some")
    for name, value in (("campaign.batch", cc.batch), ("campaign.budget", cc.budget)):
        if value % gen.block_size:
            raise CampaignError(
                f"{name} = {value}: must be a whole multiple of generate.block_size "
                f"({gen.block_size}), so that every round fills whole blocks"
            )
    if gen.n_samples % gen.block_size:
        raise CampaignError(
            f"generate.n_samples = {gen.n_samples}: must be a whole multiple of "
            f"generate.block_size ({gen.block_size}) for a campaign"
        )
    from pdeflow.tasks.stages.rom_methods import initial_state_is_random

    if cc.acquisition == "variance" and initial_state_is_random(gen):
        raise CampaignError(
            "campaign.acquisition variance: each sample's initial state is drawn at random, so "
            "the ROM's inputs are not the parameters alone and its variance cannot rank them; "
            "use acquisition random or sobol, or an initial state set by the parameters"
        )
    if cc.train and gen.problem.stationary:
        raise CampaignError("campaign.train: a stationary problem has no surrogate to train")
    cfg.check_stages(stages(cfg))


def key(cfg: PipelineConfig) -> str:
    """What a campaign's log belongs to: the design, the models and how points are chosen. Not
    the budget and the target, so a campaign can be continued with a larger budget."""
    cc = cfg.campaign.model_dump(mode="json")
    for name in ("budget", "target_error"):
        cc.pop(name)
    parts = [cfg.generate, cfg.reduce, cc] + ([cfg.train] if cfg.campaign.train else [])
    return config_hash(*parts)


def round_config(cfg: PipelineConfig, points: list) -> PipelineConfig:
    """``cfg`` with the chosen ``points`` appended to its design (validated)."""
    data = cfg.model_dump(mode="json")
    data["generate"]["points"] = [list(p) for p in points]
    data["generate"]["n_samples"] = cfg.generate.n_samples + len(points)
    return PipelineConfig.model_validate(data)


def _log_path(store: RunStore):
    return store.work_dir(GROUP) / LOG


def read_log(cfg: PipelineConfig, store: RunStore) -> dict:
    """The campaign's log in the store: chosen points, their rounds, the rounds' errors."""
    k = key(cfg)
    found = read_checked(_log_path(store), k)
    return found or {"key": k, "points": [], "point_rounds": [], "rounds": []}


def current_config(cfg: PipelineConfig) -> PipelineConfig:
    """The config of the campaign's latest chosen points (what the store's records hold)."""
    store = RunStore.named(cfg.store)
    return round_config(cfg, read_log(cfg, store)["points"])


def choose(cfg: PipelineConfig, store: RunStore, n: int, round_: int, chosen: int) -> np.ndarray:
    """``n`` new points of the unit cube for round ``round_`` after ``chosen`` chosen ones.

    ``cfg`` is the round's config (its ROM is the store's current one).
    """
    cc, gen = cfg.campaign, cfg.generate
    d = len(gen.parameter_names)
    stream = int(np.random.SeedSequence([cc.seed, round_]).generate_state(1)[0])
    if cc.acquisition == "random":
        unit = np.random.default_rng(stream).random((n, d))
    elif cc.acquisition == "sobol":
        from pdeflow.tasks.sampling import sample_unit

        # A Sobol' design is continued where it stopped; another design gets a sequence of
        # the campaign's own.
        own = gen.design != "sobol"
        seed, start = (cc.seed, chosen) if own else (gen.seed, gen.n_design + chosen)
        unit = sample_unit("sobol", n, d, seed, start=start)
    else:
        from pdeflow.tasks.stages.models import load_rom
        from pdeflow.tasks.uq.acquisition import candidate_pool, select_batch

        rom = load_rom(_with_gp(cfg), store)
        pool = candidate_pool(d, cc.pool, stream)
        # The held-out metric is the relative error: weight the variance by 1 / ||u||^2.
        norms = np.sum(rom.predict(pool).reshape(len(pool), -1) ** 2, axis=1)
        weights = 1.0 / np.maximum(norms, np.finfo(float).tiny)
        unit = pool[select_batch(pool, n, model=rom, weights=weights)]
    return np.clip(unit, EDGE, 1.0 - EDGE)


def _with_gp(cfg: PipelineConfig) -> PipelineConfig:
    """``cfg`` with the POD-GPR ROM: the stage's POD coefficients regressed by a GP, whose
    variance scores the pool whatever ROM the stage reports (its error is the one logged)."""
    if cfg.reduce.method == "pod-gpr":
        return cfg
    return cfg.model_copy(update={"reduce": cfg.reduce.model_copy(update={"method": "pod-gpr"})})


@dataclass
class Campaign:
    """One campaign run over the store of ``cfg``.

    Attributes:
        run_stage: ``run_stage(name, round_cfg, first_round)`` runs a stage (in process for
            tests, as a Prefect task in the flow); returns its summary as a dict.
        publish: called with the log after every round (the UI's artifact), or None.
    """

    cfg: PipelineConfig
    run_stage: Callable[[str, PipelineConfig, bool], dict]
    publish: Callable[[PipelineConfig, dict], None] | None = None
    summaries: list = field(default_factory=list)

    def run(self) -> dict:
        cfg, cc = self.cfg, self.cfg.campaign
        check(cfg)
        store = RunStore.named(cfg.store)
        with store.lock("pdeflow campaign"):
            entry = read_log(cfg, store)
            while True:
                points = entry["points"]
                rcfg = round_config(cfg, points)
                rounds = entry["rounds"]
                if not rounds or rounds[-1]["simulations"] != len(points):
                    self._round(store, rcfg, entry)
                last = entry["rounds"][-1]
                if len(points) >= cc.budget:
                    reason = "budget"
                    break
                if cc.target_error and last["error"] <= cc.target_error:
                    reason = "target error"
                    break
                n = min(cc.batch, cc.budget - len(points))
                r = len(entry["rounds"])
                new = choose(rcfg, store, n, r, len(points)).tolist()
                log.info(f"campaign round {r}: {n} points chosen by {cc.acquisition}")
                entry["points"] = points + new
                entry["point_rounds"] = entry["point_rounds"] + [r] * n
                write_checked(_log_path(store), entry)  # before their simulations start
            self._write_group(store, rcfg, entry)
        return {
            "store": str(store.path),
            "stopped": reason,
            "simulations": len(entry["points"]),
            "samples": rcfg.generate.n_samples,
            "rounds": entry["rounds"],
        }

    def _round(self, store: RunStore, rcfg: PipelineConfig, entry: dict) -> None:
        r = len(entry["rounds"])
        t0 = time.perf_counter()
        for name in stages(rcfg):
            self.run_stage(name, rcfg, r == 0)
        rec = store.record("reduce")
        error = float(rec.metrics["rom_rel_error_mean"])
        entry["rounds"] = entry["rounds"] + [
            {
                "round": r,
                "simulations": len(entry["points"]),
                "samples": rcfg.generate.n_samples,
                "error": error,
                "seconds": time.perf_counter() - t0,
            }
        ]
        write_checked(_log_path(store), entry)
        log.info(
            f"campaign round {r}: {len(entry['points'])} simulations added, held-out ROM "
            f"error {error:.4g}"
        )
        self._write_group(store, rcfg, entry)
        if self.publish is not None:
            self.publish(rcfg, entry)

    def _write_group(self, store: RunStore, rcfg: PipelineConfig, entry: dict) -> None:
        from pdeflow.tasks.design import to_physical

        gen = rcfg.generate
        names = list(gen.parameter_names)
        unit = np.asarray(entry["points"], dtype=np.float64).reshape(-1, len(names))
        rounds = entry["rounds"]
        store.write_group(
            GROUP,
            {
                "chosen": (("point", "parameter"), to_physical(gen, unit),
                           {"long_name": "chosen parameters, in their units"}),
                "chosen_unit": (("point", "parameter"), unit,
                                {"long_name": "chosen parameters in the unit cube", "units": "1"}),
                "chosen_round": (("point",), np.asarray(entry["point_rounds"], dtype=np.int64),
                                 {"long_name": "round that chose the point"}),
                "chosen_sample": (("point",), gen.n_design + np.arange(len(unit)),
                                  {"long_name": "store sample index of the point"}),
                "simulations": (("round",), np.array([x["simulations"] for x in rounds]),
                                {"long_name": "simulations added by the campaign"}),
                "error": (("round",), np.array([x["error"] for x in rounds]),
                          {"long_name": "ROM held-out mean relative L2 error", "units": "1"}),
            },
            coords={"parameter": names, "round": np.arange(len(rounds))},
            attrs={"acquisition": rcfg.campaign.acquisition, "design_samples": gen.n_design},
        )  # fmt: skip
