"""The surrogate model zoo: one registry from a name to a network class and the options it takes.

Every network follows one contract: ``Net(n_fields, n_params, n_dims, *, history=1, width=...,
n_layers=..., generator=None, **model_options)`` maps normalised frames ``u`` ``(B, history *
n_fields, *space)`` (oldest frame first) and parameters ``p`` ``(B, n_params)`` to ``(B, n_fields,
*space)``; it sets ``n_dims``, ``n_fields``, ``n_params`` and ``history``, and its class says
whether it is ``resolution_invariant``. A configuration holds one common option dict; each model
takes the options it names and leaves the others (``modes`` means nothing to a U-Net).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from pdeflow.tasks.surrogates.deeponet import DeepONet
from pdeflow.tasks.surrogates.fno import FNO
from pdeflow.tasks.surrogates.transformer import GalerkinTransformer
from pdeflow.tasks.surrogates.unet import UNet


@dataclass(frozen=True)
class ModelInfo:
    """One zoo entry.

    Attributes:
        cls: The network class.
        description: One line for listings.
        options: Names of the common options the class takes as keyword arguments.
        width_scale: The network's width for a ``train.width`` of 1. A run's ``train.width``
            is the FNO's channel width, and each model is built ``width_scale`` times as wide:
            at one nominal width the models differ in size and accuracy. At the demo's 24 the
            FNO has 77,521 weights, the transformer 20,785 and DeepONet 8,801 (its MLPs read a
            whole field, not one point); after the demo's 12 epochs they beat persistence one
            step ahead by more than 10x, 9.4x and 5.1x. Built 2x and 8x as wide (80,737 and
            about 180,000 weights), the transformer and DeepONet reach 12.1x and 16.1x on the
            same data (``pdeflow run train`` with each model on the demo's store).
    """

    cls: type[nn.Module]
    description: str
    options: frozenset[str]
    width_scale: int = 1

    @property
    def resolution_invariant(self) -> bool:
        """Whether trained weights apply on other grids (the class's own claim)."""
        return bool(self.cls.resolution_invariant)


MODELS: dict[str, ModelInfo] = {
    "fno": ModelInfo(
        FNO,
        "Fourier neural operator (Li et al. 2021); factorization='tucker' or 'cp' makes it a "
        "TFNO (Kossaifi et al. 2023)",
        frozenset({"width", "n_layers", "modes", "padding", "factorization", "rank"}),
    ),
    "unet": ModelInfo(
        UNet,
        "PDEArena-style U-Net (Gupta & Brandstetter 2022), FiLM-conditioned on the parameters",
        frozenset({"width", "n_layers", "channel_mults", "padding_mode", "norm_groups"}),
    ),
    "transformer": ModelInfo(
        GalerkinTransformer,
        "Galerkin linear-attention transformer over grid points (Cao 2021)",
        frozenset({"width", "n_layers", "n_heads", "n_fourier"}),
        width_scale=2,
    ),
    "deeponet": ModelInfo(
        DeepONet,
        "DeepONet (Lu et al. 2021) on a fixed grid; a baseline and for steady problems",
        frozenset({"width", "n_layers", "n_basis", "n_fourier", "grid_shape"}),
        width_scale=8,
    ),
}

OPTION_NAMES: frozenset[str] = frozenset().union(*(info.options for info in MODELS.values()))


def get_model(name: str) -> ModelInfo:
    """Return the zoo entry registered under ``name``.

    Raises:
        ValueError: If ``name`` is not registered; the message lists the valid names.
    """
    try:
        return MODELS[name]
    except KeyError:
        valid = ", ".join(sorted(MODELS))
        raise ValueError(f"unknown model {name!r}; valid names: {valid}") from None


def build_net(
    name: str,
    *,
    n_fields: int,
    n_params: int,
    n_dims: int,
    history: int = 1,
    options: Mapping[str, object],
    generator: torch.Generator | None,
) -> nn.Module:
    """Build the network ``name`` from the common option dict.

    Args:
        name: A key of ``MODELS``.
        n_fields: Number of fields C predicted.
        n_params: Number of scalar parameters P (may be 0).
        n_dims: Number of spatial axes, 1, 2 or 3.
        history: Number of input frames; the input has ``history * n_fields`` channels.
        options: Common options; the entry's ``options`` are passed on, the other known names
            are left out, and a name no model takes is an error. Missing options keep the
            class defaults (``deeponet`` needs ``grid_shape``).
        generator: CPU generator for the initial weights (``None``: the global RNG).

    Returns:
        The freshly initialised network, on CPU in float32.

    Raises:
        ValueError: For an unknown model name or option name, or invalid settings.
    """
    info = get_model(name)
    unknown = sorted(set(options) - OPTION_NAMES)
    if unknown:
        raise ValueError(
            f"unknown model option(s) {', '.join(unknown)}; valid options: "
            f"{', '.join(sorted(OPTION_NAMES))}"
        )
    chosen = {key: value for key, value in options.items() if key in info.options}
    required = [
        key
        for key, param in inspect.signature(info.cls).parameters.items()
        if param.kind is inspect.Parameter.KEYWORD_ONLY and param.default is param.empty
    ]
    missing = [key for key in required if key not in chosen]
    if missing:
        raise ValueError(f"model {name!r} needs the option(s) {', '.join(missing)}")
    return info.cls(n_fields, n_params, n_dims, history=history, generator=generator, **chosen)


def auto_model(n_dims: int, stationary: bool) -> str:
    """The model ``auto`` stands for: ``"fno"`` for every dimension, stationary or not.

    The FNO works on 1D, 2D and 3D grids, is resolution invariant, and fits both the one-step map
    of time-dependent data and the parameter-to-solution map of a stationary problem, so it is the
    default for both; ``deeponet`` stays available as the baseline for stationary problems.

    Args:
        n_dims: Spatial rank of the data, 1, 2 or 3.
        stationary: Whether the data is one steady state per sample (the choice does not depend
            on it today).

    Raises:
        ValueError: If ``n_dims`` is not 1, 2 or 3.
    """
    if n_dims not in (1, 2, 3):
        raise ValueError(f"n_dims must be 1, 2 or 3, got {n_dims!r}")
    return "fno"
