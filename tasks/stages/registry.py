"""The stage objects, by name, in the pipeline order that ``integrity.STAGES`` defines."""

from pdeflow.tasks.stages.base import Stage
from pdeflow.tasks.stages.generate import Generate
from pdeflow.tasks.stages.infer import Infer
from pdeflow.tasks.stages.integrity import STAGES
from pdeflow.tasks.stages.quantify import Quantify
from pdeflow.tasks.stages.reduce import Reduce
from pdeflow.tasks.stages.train import Train

REGISTRY: dict[str, Stage] = {
    s.name: s for s in (Generate(), Train(), Reduce(), Quantify(), Infer())
}
if tuple(REGISTRY) != STAGES:  # the order and the upstreams are defined in integrity
    raise RuntimeError(f"stage registry {tuple(REGISTRY)} differs from the stage order {STAGES}")


# What ``pdeflow run pipeline`` runs; infer samples a posterior from a store they filled, on its
# own (``pdeflow run infer``), since it needs observations the pipeline does not have.
PIPELINE_STAGES: tuple[str, ...] = tuple(s for s in STAGES if s != "infer")
# What a stationary (elliptic) problem's pipeline runs: there is no time stepping for a one-step
# surrogate to learn (train refuses it), and quantify compares the surrogate's rollouts.
STATIONARY_STAGES: tuple[str, ...] = ("generate", "reduce")


def pipeline_stages(cfg) -> tuple[str, ...]:
    """The stages the pipeline runs for ``cfg``: all four, or generate and reduce for a
    stationary problem (e.g. the thermal blocks, whose ROM is the certified reduced basis)."""
    return STATIONARY_STAGES if cfg.generate.problem.stationary else PIPELINE_STAGES


def get_stage(name: str) -> Stage:
    """The stage called ``name``; an unknown name lists the valid ones."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown stage {name!r}; valid: {', '.join(STAGES)}") from None
