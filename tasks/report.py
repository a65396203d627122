"""Prefect artifacts: a metrics table and a markdown report of a run."""

from __future__ import annotations

from prefect.artifacts import create_markdown_artifact, create_table_artifact

from storage import RunStore
from storage import dataset as ds_io
from tasks.config import PipelineConfig


def _key(cfg: PipelineConfig, what: str) -> str:
    # Artifact keys allow lowercase letters, digits and dashes only.
    slug = "".join(c if c.isalnum() else "-" for c in cfg.store.lower()).strip("-")
    return f"pdeflow-{slug}-{what}"


def metric_rows(summary: dict) -> list[dict]:
    """One row per metric of a store summary, for tables."""
    return [
        {"metric": k, "value": f"{v:.6g}" if isinstance(v, float) else str(v)}
        for k, v in sorted(summary["metrics"].items())
    ]


def report_markdown(cfg: PipelineConfig, store: RunStore) -> str:
    """Dataset card, then every stage's status and metrics, as markdown."""
    summary = store.summary()
    card = ds_io.read_attrs(store.path).get("dataset_card", "") if store.exists() else ""
    lines = [f"# pdeflow run `{cfg.store}`", "", f"Store: `{store.path}`", "", card, ""]
    for stage, info in summary["stages"].items():
        lines += [f"## {stage}: {info['status']}", "", "| metric | value |", "|---|---|"]
        lines += [
            f"| {k.split('.', 1)[1]} | {v:.6g} |"
            if isinstance(v, float)
            else f"| {k.split('.', 1)[1]} | {v} |"
            for k, v in sorted(summary["metrics"].items())
            if k.startswith(stage + ".")
        ]
        lines.append("")
    lines.append(
        "Open the data with `xarray.open_zarr(store)`; stage results with "
        "`xarray.open_zarr(store, group='reduce')` or `group='quantify'`."
    )
    return "\n".join(lines)


def publish_quantify(cfg: PipelineConfig, summary: dict) -> None:
    """The stage-4 metrics table."""
    create_table_artifact(
        metric_rows(summary),
        key=_key(cfg, "uq-metrics"),
        description="Uncertainty quantification metrics",
    )


def publish_run(cfg: PipelineConfig) -> None:
    """The whole run's metrics table and markdown report."""
    store = RunStore.named(cfg.store)
    create_table_artifact(
        metric_rows(store.summary()), key=_key(cfg, "metrics"), description="All metrics of the run"
    )
    create_markdown_artifact(
        report_markdown(cfg, store), key=_key(cfg, "report"), description="pdeflow run report"
    )
