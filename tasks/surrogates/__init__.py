"""Neural surrogates: one explicit registry from name to model class.

``SURROGATES`` keeps the legacy FNO names (``fno1d``, ``fno2d``, ``fno3d``); the model zoo
(``zoo.MODELS``: ``fno``, ``unet``, ``transformer``, ``deeponet``) builds any of its networks for
any spatial rank through ``build_net``.
"""

from pdeflow.tasks.surrogates.deeponet import DeepONet
from pdeflow.tasks.surrogates.fno import (
    FNO,
    FNO1d,
    FNO2d,
    FNO3d,
    OneStepSurrogate,
    SpectralConv1d,
    SpectralConv2d,
    SpectralConv3d,
    normalization_stats,
)
from pdeflow.tasks.surrogates.transformer import GalerkinTransformer
from pdeflow.tasks.surrogates.unet import UNet
from pdeflow.tasks.surrogates.zoo import MODELS, ModelInfo, build_net, get_model

SURROGATES: dict[str, type] = {"fno1d": FNO1d, "fno2d": FNO2d, "fno3d": FNO3d}


def get_surrogate(name: str) -> type:
    """Return the surrogate class registered under ``name``.

    Args:
        name: Registry key, e.g. ``"fno1d"``, ``"fno2d"`` or ``"fno3d"``.

    Returns:
        The model class (not an instance).

    Raises:
        ValueError: If ``name`` is not registered; the message lists the valid names.
    """
    try:
        return SURROGATES[name]
    except KeyError:
        valid = ", ".join(sorted(SURROGATES))
        raise ValueError(f"unknown surrogate {name!r}; valid names: {valid}") from None


__all__ = [
    "DeepONet",
    "FNO",
    "FNO1d",
    "FNO2d",
    "FNO3d",
    "GalerkinTransformer",
    "MODELS",
    "ModelInfo",
    "OneStepSurrogate",
    "SURROGATES",
    "SpectralConv1d",
    "SpectralConv2d",
    "SpectralConv3d",
    "UNet",
    "build_net",
    "get_model",
    "get_surrogate",
    "normalization_stats",
]
