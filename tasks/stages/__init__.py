"""The stage lifecycle, in plain Python: the stages, their one runner, and the stage order.

``STAGES`` is the pipeline order, defined in ``integrity`` and nowhere else. ``run_stage(name,
cfg, ...)`` runs one stage under the store's lock (see ``runner``); the Prefect ``@task``
wrappers in ``pdeflow.tasks.generate`` etc. do nothing more than call it.

The names below are imported on first use, not with the package: the stage modules import
torch, scikit-learn and Dask, and ``pdeflow verify`` (which needs only ``stages.verify`` and
``stages.integrity``) would pay about 2 s of start-up for them on 2 cores.
"""

from importlib import import_module

_HOMES = {
    "STAGES": "integrity",
    "Stage": "base",
    "StageRun": "base",
    "StageSummary": "base",
    "is_extension": "base",
    "GenerationError": "generate",
    "get_stage": "registry",
    "pipeline_stages": "registry",
    "annotate": "runner",
    "config_of": "runner",
    "hash_of": "runner",
    "require_ready": "runner",
    "run_stage": "runner",
    "upstream_digests": "runner",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str):
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOMES))
