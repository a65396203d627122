"""PDE solvers: an explicit registry from name to solver class."""

from __future__ import annotations

from tasks.pdes.advection import Advection
from tasks.pdes.allen_cahn import AllenCahn
from tasks.pdes.burgers import Burgers
from tasks.pdes.errors import BlowUpError, CFLViolation
from tasks.pdes.fisher_kpp import FisherKPP
from tasks.pdes.heat import Heat
from tasks.pdes.kdv import KdV
from tasks.pdes.kuramoto_sivashinsky import KuramotoSivashinsky

__all__ = [
    "PDES",
    "Advection",
    "AllenCahn",
    "BlowUpError",
    "Burgers",
    "CFLViolation",
    "FisherKPP",
    "Heat",
    "KdV",
    "KuramotoSivashinsky",
    "get_pde",
]

PDES: dict[str, type] = {
    "burgers": Burgers,
    "advection": Advection,
    "heat": Heat,
    "kdv": KdV,
    "ks": KuramotoSivashinsky,
    "fisher_kpp": FisherKPP,
    "allen_cahn": AllenCahn,
}


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
