"""The reduce stage's methods: one registry, what each one is, and what it can be used for.

Light on purpose (no numpy, torch or PyDMD import): the config, the CLI's ``--help`` and the UI
form read it. The numerical cores live beside it (``pod.py``, ``approximation.py``, ``dmd.py``,
``galerkin.py``, ``autoencoder.py``, ``rb.py``); the reduce stage adapts each to the run store
(``pdeflow.tasks.stages.rom_methods``).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["METHODS", "MethodInfo", "get_method"]


@dataclass(frozen=True)
class MethodInfo:
    """One reduce method.

    Attributes:
        name: registry name (``reduce.method``, ``reduce.compare``).
        summary: one line for ``--help``, the report and the README's table.
        intrusive: needs the PDE's own operators (not just its data).
        needs_memory: fits from the training trajectories in memory (the POD methods fit from
            the store out of core).
        estimate: gives an a posteriori error estimate per prediction.
        initial_state: can take each sample's initial state as input.
        time_dependent: needs more than one stored frame per sample.
        stationary_only: only for stationary (elliptic) problems.
    """

    name: str
    summary: str
    intrusive: bool = False
    needs_memory: bool = False
    estimate: bool = False
    initial_state: bool = False
    time_dependent: bool = False
    stationary_only: bool = False


METHODS: dict[str, MethodInfo] = {
    m.name: m
    for m in (
        MethodInfo(
            "pod-rbf",
            "POD + radial-basis-function regression of the coefficients on the parameters",
            initial_state=True,
        ),
        MethodInfo(
            "pod-gpr",
            "POD + Gaussian-process regression of the coefficients on the parameters",
            initial_state=True,
        ),
        MethodInfo(
            "pod-nn",
            "POD + a multilayer perceptron from the parameters to the coefficients",
            initial_state=True,
        ),
        MethodInfo(
            "dmd",
            "parametric dynamic mode decomposition (PyDMD): forecasts past the training horizon",
            needs_memory=True,
            time_dependent=True,
        ),
        MethodInfo(
            "pod-galerkin",
            "intrusive POD-Galerkin projection of the PDE's right-hand side, with DEIM",
            intrusive=True,
            needs_memory=True,
            initial_state=True,
            time_dependent=True,
        ),
        MethodInfo(
            "autoencoder",
            "convolutional autoencoder (a nonlinear manifold) + regression to its latent code",
            needs_memory=True,
        ),
        MethodInfo(
            "rb",
            "certified reduced basis (weak greedy, a posteriori error bound) for affine problems",
            intrusive=True,
            estimate=True,
            stationary_only=True,
        ),
    )
}


def get_method(name: str) -> MethodInfo:
    """The method registered as ``name``.

    Raises:
        ValueError: unknown name; the message lists the valid ones.
    """
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown reduce method {name!r}; valid: {', '.join(METHODS)}") from None
