"""The ``pdeflow`` command line: run a stage or the pipeline, and show what a store holds."""

from __future__ import annotations

import json
import logging
import os
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from pdeflow.flows.runtime import configure_environment
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

configure_environment()
# The CLI shows progress bars and a summary; Prefect's per-run INFO lines are noise there.
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
console = Console(stderr=True, soft_wrap=True)


class Stage(StrEnum):
    generate = "generate"
    train = "train"
    reduce = "reduce"
    quantify = "quantify"
    pipeline = "pipeline"


STAGES_OF = {
    "generate": ("generate",),
    "train": ("train",),
    "reduce": ("reduce",),
    "quantify": ("quantify",),
    "pipeline": ("generate", "train", "reduce", "quantify"),
}


def _fail(message: str, code: int = 2) -> None:
    console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def _flow(stage: str):
    from pdeflow.flows import stages
    from pdeflow.flows.pipeline import pipeline

    return {
        "generate": stages.data_generation,
        "train": stages.surrogate_training,
        "reduce": stages.reduced_order_model,
        "quantify": stages.uncertainty_quantification,
        "pipeline": pipeline,
    }[stage]


def _precheck(cfg, stage: str, overwrite: bool) -> None:
    """Refuse a store of another config before any server, cluster or compute starts."""
    from pdeflow.storage import RunStore
    from pdeflow.tasks.config import ConfigError
    from pdeflow.tasks.stages import check_records

    for warning in cfg.generate.resolution_warnings():
        console.print(f"[bold yellow]warning:[/] {warning}", highlight=False)
    try:
        cfg.check_stages(STAGES_OF[stage])
    except ValueError as err:
        raise ConfigError(str(err)) from None
    store = RunStore.named(cfg.store)
    if overwrite or not store.exists():
        return
    check_records(store, cfg, STAGES_OF[stage])


@app.command()
def run(
    stage: Annotated[Stage, typer.Argument(help="Stage to run, or the whole pipeline.")],
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML config.")] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override: key.sub=value.")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace results of a different config.")] = False,
) -> None:
    """Run STAGE with the config (defaults, then the YAML file, then --set overrides)."""
    from pdeflow.storage import StoreError
    from pdeflow.tasks.config import ConfigError, load_config
    from pdeflow.tasks.stages import set_reporter

    try:
        cfg = load_config(config, set_ or [])
        _precheck(cfg, stage.value, overwrite)
    except (ConfigError, StoreError) as err:
        _fail(str(err))
    logging.getLogger("distributed").setLevel(logging.ERROR)
    with Progress(
        TextColumn("{task.description:<10}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as bars:
        ids: dict[str, int] = {}

        def report(name: str, done: int, total: int) -> None:
            if name not in ids:
                ids[name] = bars.add_task(name, total=total)
            bars.update(ids[name], completed=done, total=total)

        set_reporter(report)
        try:
            _flow(stage.value)(config=cfg, overwrite=overwrite)
        except Exception as err:  # the flow failed: say why, without a Prefect traceback
            set_reporter(None)
            _fail(f"{stage.value} failed: {err}", code=1)
        set_reporter(None)
    _print_summary(cfg.store)


def _print_summary(store_name: str) -> None:
    from pdeflow.storage import RunStore

    summary = RunStore.named(store_name).summary()
    out = Console()
    _print_summary_table(out, summary)
    out.print(
        f"Open the data: [bold]xarray.open_zarr('{summary['store']}')[/]; stage results: "
        "group='reduce' / group='quantify'.",
        highlight=False,
    )


@app.command()
def show(
    store: Annotated[str, typer.Argument(help="Store path, or a name under the runs directory.")],
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object, for scripts.")] = False,
) -> None:
    """Print what STORE holds: stages done, blocks complete, metrics."""
    from pdeflow.storage import RunStore, StoreError

    path = Path(store)
    try:
        handle = RunStore(path) if path.is_dir() else RunStore.named(store)
    except StoreError as err:
        _fail(str(err))
    if not handle.exists():
        _fail(f"no pdeflow store at {handle.path}")
    summary = handle.summary()
    if as_json:
        sys.stdout.write(json.dumps(summary, indent=2, sort_keys=True) + "\n")
        return
    out = Console()
    out.print(f"[bold]{summary['store']}[/]")
    for name, info in summary["stages"].items():
        out.print(f"  {name:<9} {info['status']}")
    blocks = summary["blocks"]
    out.print(f"  blocks    {blocks['complete']}/{blocks['total']} complete")
    _print_summary_table(out, summary)


def _print_summary_table(out: Console, summary: dict) -> None:
    if not summary["metrics"]:
        return
    table = Table(title=f"metrics of {summary['store']}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in sorted(summary["metrics"].items()):
        table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
    out.print(table)


list_app = typer.Typer(no_args_is_help=True, help="List the registered PDEs or presets.")
app.add_typer(list_app, name="list")


@list_app.command("pdes")
def list_pdes(
    as_json: Annotated[bool, typer.Option("--json", help="JSON, for scripts.")] = False,
) -> None:
    """The PDE registry: name, dimension, fields, boundary conditions, description."""
    from pdeflow.tasks.problems import all_entries

    rows = [entry.describe() for entry in all_entries()]
    if as_json:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return
    table = Table(title="pdeflow PDEs (generate.pde)")
    for column in ("name", "dim", "fields", "boundary", "parameters", "description"):
        table.add_column(column)
    for r in rows:
        fixed = r["one_value_per_run"]
        params = ", ".join(
            f"{k} in [{lo:g}, {hi:g}]"
            + (f" (constant, default {fixed[k]:g})" if k in fixed else "")
            for k, (lo, hi) in r["parameters"].items()
        )
        dim = f"{r['dim']}D" + (" steady" if r["stationary"] else "")
        table.add_row(
            r["name"], dim, ", ".join(r["fields"]), r["boundary"], params, r["description"]
        )
    Console().print(table)


@list_app.command("presets")
def list_presets(
    as_json: Annotated[bool, typer.Option("--json", help="JSON, for scripts.")] = False,
) -> None:
    """Named presets (generate.preset) that reproduce published dataset settings."""
    from pdeflow.tasks.presets import describe_presets

    rows = describe_presets()
    if as_json:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return
    table = Table(title="pdeflow presets (generate.preset)")
    for column in ("name", "pde", "description", "published values"):
        table.add_column(column)
    for r in rows:
        values = "; ".join(f"{k}: {v}" for k, v in r["published_values"].items())
        table.add_row(r["name"], r["pde"], r["description"], values)
    Console().print(table)
    Console().print(f"Cite: {rows[0]['cite']}" if rows else "")


class ExportFormat(StrEnum):
    pdebench = "pdebench"


@app.command()
def export(
    store: Annotated[str, typer.Argument(help="Store path, or a name under the runs directory.")],
    out: Annotated[Path, typer.Argument(help="Output file (.h5 / .hdf5).")],
    fmt: Annotated[ExportFormat, typer.Option("--format", help="Target layout.")] = (
        ExportFormat.pdebench
    ),
    split: Annotated[str | None, typer.Option(help="Only this split (train, val, ...).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output file.")] = False,
) -> None:
    """Write STORE in another tool's layout (PDEBench's HDF5) for existing baselines."""
    from pdeflow.storage import RunStore, StoreError
    from pdeflow.storage.export import export_pdebench

    path = Path(store)
    try:
        handle = RunStore(path) if path.is_dir() else RunStore.named(store)
    except StoreError as err:
        _fail(str(err))
    if not handle.exists():
        _fail(f"no pdeflow store at {handle.path}")
    try:
        written = export_pdebench(handle.path, out, split=split, overwrite=overwrite)
    except (ValueError, FileExistsError, ImportError) as err:
        _fail(str(err))
    Console().print(f"wrote {written} ({fmt.value} layout)", highlight=False)


@app.command()
def serve(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML config.")] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override: key.sub=value.")
    ] = None,
    schedules: Annotated[
        Path | None,
        typer.Option(help="YAML list of schedules (format: deploy/schedules.example.yaml)."),
    ] = None,
    limit: Annotated[
        int | None, typer.Option(min=1, help="Most flow runs at once; default no limit.")
    ] = None,
) -> None:
    """Serve every stage and the pipeline as deployments for the Prefect UI (Ctrl-C stops).

    Needs a running server: `prefect server start` (127.0.0.1 only) and PREFECT_API_URL.
    """
    # Runs started from the UI should log INFO lines there; the WARNING default above is for `run`.
    if os.environ.get("PREFECT_LOGGING_LEVEL") == "WARNING":
        os.environ["PREFECT_LOGGING_LEVEL"] = "INFO"
    from pdeflow.flows import serve as serving
    from pdeflow.tasks.config import ConfigError, load_config

    try:
        serving.serve(load_config(config, set_ or []), schedules, limit=limit)
    except (ConfigError, serving.ScheduleError, serving.ServeError) as err:
        _fail(str(err))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
