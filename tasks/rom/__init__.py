"""Reduced-order models: reductions, coefficient regressors and their composition.

Registries are explicit dictionaries; ``get_reduction`` and ``get_approximation`` return the class
for a name and list the valid names on a miss.
"""

from pdeflow.tasks.rom.approximation import GPR, NN, RBF
from pdeflow.tasks.rom.pod import POD, fix_signs, select_rank
from pdeflow.tasks.rom.rom import ReducedOrderModel

__all__ = [
    "APPROXIMATIONS",
    "GPR",
    "NN",
    "POD",
    "RBF",
    "REDUCTIONS",
    "ReducedOrderModel",
    "fix_signs",
    "get_approximation",
    "get_reduction",
    "select_rank",
]

REDUCTIONS: dict[str, type] = {"pod": POD}
APPROXIMATIONS: dict[str, type] = {"rbf": RBF, "gpr": GPR, "nn": NN}


def _lookup(registry: dict[str, type], family: str, name: str) -> type:
    try:
        return registry[name]
    except KeyError:
        valid = ", ".join(sorted(registry))
        raise ValueError(f"unknown {family} {name!r}; valid names: {valid}") from None


def get_reduction(name: str) -> type:
    """Return the reduction class registered as ``name`` (e.g. ``"pod"``).

    Raises:
        ValueError: If ``name`` is not registered; the message lists the valid names.
    """
    return _lookup(REDUCTIONS, "reduction", name)


def get_approximation(name: str) -> type:
    """Return the approximation class registered as ``name`` (``"rbf"``, ``"gpr"``, ``"nn"``).

    Raises:
        ValueError: If ``name`` is not registered; the message lists the valid names.
    """
    return _lookup(APPROXIMATIONS, "approximation", name)
