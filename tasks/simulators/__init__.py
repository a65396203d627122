"""Bring-your-own simulators: a Python function or an external program as the data source.

Both kinds follow one contract (:class:`Simulator`): ``run(params, seeds, sample_ids)`` returns
one trajectory per sample, shape ``(n, n_frames, C, *space)``, or raises
:class:`SimulationError` naming every failed sample, with the others' results on the error.
"""

from __future__ import annotations

from pdeflow.tasks.simulators.base import SimulationError, Simulator
from pdeflow.tasks.simulators.executable import ExecutableSimulator
from pdeflow.tasks.simulators.python import PythonSimulator

__all__ = [
    "SIMULATORS",
    "ExecutableSimulator",
    "PythonSimulator",
    "SimulationError",
    "Simulator",
    "get_simulator",
]

SIMULATORS: dict[str, type[Simulator]] = {
    "python": PythonSimulator,
    "executable": ExecutableSimulator,
}


def get_simulator(kind: str) -> type[Simulator]:
    """Look up a simulator class by kind (``"python"`` or ``"executable"``).

    Raises:
        ValueError: If ``kind`` is not registered; the message lists the valid kinds.
    """
    try:
        return SIMULATORS[kind]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown simulator kind {kind!r}; valid: {', '.join(SIMULATORS)}"
        ) from None
