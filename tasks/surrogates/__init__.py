"""Neural surrogates: one explicit registry from name to model class."""

from pdeflow.tasks.surrogates.fno import (
    FNO1d,
    FNO2d,
    FNO3d,
    OneStepSurrogate,
    SpectralConv1d,
    SpectralConv2d,
    SpectralConv3d,
    normalization_stats,
)

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
    "FNO1d",
    "FNO2d",
    "FNO3d",
    "OneStepSurrogate",
    "SURROGATES",
    "SpectralConv1d",
    "SpectralConv2d",
    "SpectralConv3d",
    "get_surrogate",
    "normalization_stats",
]
