"""The stage lifecycle, in plain Python: the stages, their one runner, and the stage order.

``STAGES`` is the pipeline order, defined in ``registry`` and nowhere else. ``run_stage(name, cfg,
...)`` runs one stage under the store's lock (see ``runner``); the Prefect ``@task`` wrappers in
``pdeflow.tasks.generate`` etc. do nothing more than call it.
"""

from pdeflow.tasks.stages.base import Stage, StageRun, StageSummary, is_extension
from pdeflow.tasks.stages.generate import GenerationError
from pdeflow.tasks.stages.registry import STAGES, get_stage, pipeline_stages
from pdeflow.tasks.stages.runner import (
    annotate,
    config_of,
    hash_of,
    require_ready,
    run_stage,
    upstream_digests,
)

__all__ = [
    "STAGES",
    "pipeline_stages",
    "GenerationError",
    "Stage",
    "StageRun",
    "StageSummary",
    "annotate",
    "config_of",
    "get_stage",
    "hash_of",
    "is_extension",
    "require_ready",
    "run_stage",
    "upstream_digests",
]
