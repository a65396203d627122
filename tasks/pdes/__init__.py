"""PDE solvers: an explicit registry from name to solver class."""

from __future__ import annotations

from tasks.pdes.burgers import Burgers
from tasks.pdes.errors import BlowUpError, CFLViolation

__all__ = ["PDES", "BlowUpError", "Burgers", "CFLViolation", "get_pde"]

PDES: dict[str, type] = {"burgers": Burgers}


def get_pde(name: str) -> type:
    """Look up a PDE solver class by its registry name.

    Args:
        name: Registry key, e.g. ``"burgers"``.

    Returns:
        The solver class (not an instance).

    Raises:
        ValueError: If ``name`` is not registered; the message lists the valid names.
    """
    try:
        return PDES[name]
    except (KeyError, TypeError):
        valid = ", ".join(sorted(PDES))
        raise ValueError(f"unknown pde {name!r}; valid: {valid}") from None
