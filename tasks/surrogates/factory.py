"""The surrogate a train config describes: architecture by name, built and initialised."""

from __future__ import annotations

import torch

from pdeflow.tasks.clusters import local_workers
from pdeflow.tasks.config import PipelineConfig
from pdeflow.tasks.surrogates.onestep import OneStepSurrogate
from pdeflow.tasks.surrogates.zoo import auto_model, build_net, get_model

STAT_NAMES = ("field_mean", "field_std", "param_mean", "param_std", "delta_std")
# The FNO's names per dimension before the model zoo.
_OLD_FNO = {"fno1d": 1, "fno2d": 2, "fno3d": 3}


def surrogate_name(cfg: PipelineConfig) -> str:
    """The zoo name of the configured architecture (``auto`` and ``fnoNd`` are the FNO)."""
    name = cfg.train.surrogate
    if name == "auto":
        return auto_model(cfg.generate.dim, cfg.generate.problem.stationary)
    return "fno" if name in _OLD_FNO else name


def check_trainable(cfg: PipelineConfig) -> None:
    """Raise ValueError when the generated data cannot train a one-step surrogate."""
    gen, tc = cfg.generate, cfg.train
    if gen.problem.stationary:
        raise ValueError(
            f"train: {gen.pde} is stationary (one state per sample); the one-step surrogate "
            "needs a time-dependent PDE: choose one for generate.pde, or run generate (and "
            "reduce) alone for this PDE"
        )
    if _OLD_FNO.get(tc.surrogate, gen.dim) != gen.dim:
        raise ValueError(f"train.surrogate: {tc.surrogate} does not fit {gen.dim}D data")
    names = [tc.surrogate, *tc.sweep.values.get("surrogate", [])]
    for name in names:
        if name not in ("auto", *_OLD_FNO):
            get_model(str(name))
    frames = tc.history + tc.pushforward
    if frames > gen.n_frames:
        raise ValueError(
            f"train.history + train.pushforward = {frames} needs that many saved frames and "
            f"generate.n_frames is {gen.n_frames}: lower them to a sum <= {gen.n_frames}"
        )
    ranks = tc.data_parallel
    if ranks > 1 and cfg.cluster.kind == "local":
        workers = local_workers(cfg.cluster)
        if ranks > workers:
            raise ValueError(
                f"train.data_parallel: {ranks} ranks need {ranks} workers, one each, and the "
                f"local cluster has {workers} (cluster.n_workers): choose 1..{workers}"
            )
    cfg.check_stages(("train",))  # a training and a test sample at least


def net_options(cfg: PipelineConfig) -> dict:
    """The zoo's common options from the train config."""
    tc, name = cfg.train, surrogate_name(cfg)
    width = tc.width * get_model(name).width_scale  # the FNO's width, scaled per model
    options: dict = {"width": width, "n_layers": tc.n_layers, "modes": tc.modes}
    if tc.factorization != "none":
        options.update(factorization=tc.factorization, rank=tc.factor_rank)
    if name == "deeponet":
        options["grid_shape"] = tuple(cfg.generate.grid)
    return options


def build_model(cfg: PipelineConfig, stats: dict) -> OneStepSurrogate:
    """A freshly initialised surrogate (seeded by ``train.seed``) around ``stats``.

    Args:
        stats: the normalisation statistics ``STAT_NAMES``, arrays per field or parameter.
    """
    tc, gen = cfg.train, cfg.generate
    net = build_net(
        surrogate_name(cfg),
        n_fields=len(gen.fields),
        n_params=len(gen.parameter_names),
        n_dims=gen.dim,
        history=tc.history,
        options=net_options(cfg),
        generator=torch.Generator().manual_seed(tc.seed),
    )
    model = OneStepSurrogate(net, **stats, history=tc.history)
    return model.to(device=torch.device(tc.device), dtype=getattr(torch, gen.dtype))


def model_from_state(cfg: PipelineConfig, state: dict) -> OneStepSurrogate:
    """The trained surrogate from its ``state_dict`` (statistics included), in eval mode."""
    stats = {k: state[k].cpu().numpy() for k in STAT_NAMES}
    model = build_model(cfg, stats)
    model.load_state_dict(state)
    return model.eval()
