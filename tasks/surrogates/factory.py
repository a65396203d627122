"""The surrogate a train config describes: architecture by name, built and initialised."""

from __future__ import annotations

import torch

from pdeflow.tasks.config import PipelineConfig
from pdeflow.tasks.surrogates import get_surrogate
from pdeflow.tasks.surrogates.fno import OneStepSurrogate

STAT_NAMES = ("field_mean", "field_std", "param_mean", "param_std", "delta_std")


def surrogate_name(cfg: PipelineConfig) -> str:
    """The configured architecture; ``auto`` picks the FNO of the data's dimension."""
    if cfg.train.surrogate != "auto":
        return cfg.train.surrogate
    return f"fno{cfg.generate.dim}d"


def check_trainable(cfg: PipelineConfig) -> None:
    """Raise ValueError when the generated data cannot train a one-step surrogate."""
    gen = cfg.generate
    if gen.problem.stationary:
        raise ValueError(
            f"train: {gen.pde} is stationary (one state per sample); the one-step surrogate "
            "needs a time-dependent PDE: choose one for generate.pde, or run generate (and "
            "reduce) alone for this PDE"
        )
    name = surrogate_name(cfg)
    if name != f"fno{gen.dim}d":
        raise ValueError(f"train.surrogate: {name} does not fit {gen.dim}D data")
    cfg.check_stages(("train",))  # a training and a test sample at least


def build_model(cfg: PipelineConfig, stats: dict) -> OneStepSurrogate:
    """A freshly initialised surrogate (seeded by ``train.seed``) around ``stats``.

    Args:
        stats: the normalisation statistics ``STAT_NAMES``, arrays per field or parameter.
    """
    tc, n_params = cfg.train, len(cfg.generate.parameter_names)
    gen = torch.Generator().manual_seed(tc.seed)
    net = get_surrogate(surrogate_name(cfg))(
        n_fields=len(cfg.generate.fields),
        n_params=n_params,
        width=tc.width,
        modes=tc.modes,
        n_layers=tc.n_layers,
        generator=gen,
    )
    model = OneStepSurrogate(net, **stats)
    return model.to(device=torch.device(tc.device), dtype=getattr(torch, cfg.generate.dtype))


def model_from_state(cfg: PipelineConfig, state: dict) -> OneStepSurrogate:
    """The trained surrogate from its ``state_dict`` (statistics included), in eval mode."""
    stats = {k: state[k].cpu().numpy() for k in STAT_NAMES}
    model = build_model(cfg, stats)
    model.load_state_dict(state)
    return model.eval()
