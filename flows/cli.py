"""The ``pdeflow`` command line: run a stage or the pipeline, and show what a store holds."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.traceback import Traceback

from pdeflow.tasks.environment import configure_environment, settle_io
from pdeflow.tasks.fast_exit import exit_now

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
console = Console(stderr=True, soft_wrap=True)
_OPTIONS = {"debug": False}
# Refusals of bad input or of a store in the wrong state: exit 2, nothing was computed.
EXIT_REFUSED, EXIT_FAILED = 2, 1


@app.callback()
def _global(
    debug: Annotated[
        bool, typer.Option("--debug", help="Show tracebacks and Prefect's failure logs.")
    ] = False,
) -> None:
    _OPTIONS["debug"] = debug


class Stage(StrEnum):
    """The stages (``pdeflow.tasks.stages.STAGES``, not imported here to keep ``--help`` fast;
    tests/test_layout.py checks the two agree), the pipeline and the campaign."""

    generate = "generate"
    train = "train"
    reduce = "reduce"
    quantify = "quantify"
    infer = "infer"
    pipeline = "pipeline"
    campaign = "campaign"


def _stages_of(stage: str, cfg) -> tuple[str, ...]:
    from pdeflow.tasks.stages import pipeline_stages

    if stage == "campaign":
        from pdeflow.tasks.campaign import stages

        return stages(cfg)
    return pipeline_stages(cfg) if stage == "pipeline" else (stage,)


def _fail(message: str, code: int = EXIT_REFUSED) -> None:
    if _OPTIONS["debug"] and sys.exc_info()[0] is not None:
        console.print_exception()
    console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def _refusals() -> tuple[type[BaseException], ...]:
    """Exception types that mean bad input or a store in the wrong state (exit 2)."""
    from pdeflow.storage import StoreError
    from pdeflow.tasks.config import ConfigError
    from pdeflow.tasks.stages.extend import ExtensionError

    return (ConfigError, StoreError, ExtensionError)


def _precheck(cfg, stage: str, overwrite: bool) -> None:
    """Refuse a store of another config, a nested store name, or a stage whose upstream is not
    ready, before any server, cluster or compute starts (the lock is taken right after)."""
    from pdeflow.tasks.stages import require_ready

    for warning in cfg.generate.resolution_warnings():
        console.print(f"[bold yellow]warning:[/] {warning}", highlight=False)
    if stage == "campaign":  # the store's records hold the latest round's chosen points
        from pdeflow.tasks.campaign import check, current_config

        check(cfg)
        cfg = current_config(cfg)
    require_ready(cfg, _stages_of(stage, cfg), overwrite)


@app.command()
def run(
    stage: Annotated[
        Stage, typer.Argument(help="Stage to run, the whole pipeline, or an active campaign.")
    ],
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML config.")] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override: key.sub=value.")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace results of a different config.")] = False,
) -> None:
    """Run STAGE with the config (defaults, then the YAML file, then --set overrides).

    Exit status: 0 done, 1 the run failed (finished work is kept: run again to resume),
    2 refused before anything was computed (bad input, or a store busy or of another config).
    """
    from pdeflow.flows.temporary_server import ServerStartError, TemporaryServer

    # Boots during the imports and checks below; stopped at exit, also after a refusal.
    server = TemporaryServer.launch()
    from pdeflow.storage import RunStore
    from pdeflow.tasks.config import load_config

    with contextlib.ExitStack() as held:
        try:
            cfg = load_config(config, set_ or [])
            _precheck(cfg, stage.value, overwrite)  # reads only: a refusal leaves no trace
            # Held until the command ends; the flow and its stages take it again (re-entrant).
            held.enter_context(RunStore.named(cfg.store).lock(f"pdeflow run {stage.value}"))
        except (*_refusals(), ValueError) as err:
            _fail(str(err))
        if server is not None:
            server.settle()  # before Prefect is imported here: it reads PREFECT_API_URL once
        flow = load_flow_quietly(stage.value)  # imports Prefect, Dask and torch meanwhile
        from pdeflow.tasks.runtime import prestart

        prestart(cfg.cluster)  # the workers start while Prefect creates the flow run
        if server is not None:
            try:
                server.wait_ready()
            except ServerStartError as err:
                _fail(str(err), code=EXIT_FAILED)
        temporary = server is not None and server.url is not None
        failure, kept = _run_flow(flow, cfg, overwrite, temporary)
    if isinstance(failure, _refusals()):
        _fail(f"{stage.value} refused: {failure}")
    if failure is not None:  # the flow failed: say why, without a Prefect traceback
        if _OPTIONS["debug"]:
            console.print(Traceback.from_exception(type(failure), failure, failure.__traceback__))
        from pdeflow.tasks.orchestration import write_failure_log

        where = write_failure_log(cfg.store, stage.value, failure, kept)
        more = f"full traceback in {where} (or run with --debug)" if where else "run with --debug"
        _fail(f"{stage.value} failed: {failure}\n{more}", code=EXIT_FAILED)
    _print_summary(cfg.store)


def load_flow_quietly(stage: str):
    """The flow of ``stage`` (``serve.load_flow``), imported here, not at the CLI's start."""
    from pdeflow.flows.serve import load_flow

    return load_flow(stage)


def _run_flow(flow, cfg, overwrite: bool, temporary: bool):
    """Run the flow with progress: bars on a terminal, plain lines every interval otherwise.

    ``temporary``: the run's API is the temporary server (no heartbeats: nobody reads them).

    Returns:
        The flow's exception (None if it succeeded) and the kept error records
        (``orchestration.KeptErrors``).
    """
    from pdeflow.flows.temporary_server import temporary_server_settings
    from pdeflow.tasks.orchestration import route_logs, set_reporter

    bars = _bars() if console.is_terminal else None
    kept = route_logs(plain_progress=bars is None, debug=_OPTIONS["debug"])
    failure = None
    with (
        bars or contextlib.nullcontext(),
        temporary_server_settings() if temporary else contextlib.nullcontext(),
    ):
        if bars is not None:
            ids: dict[str, int] = {}

            def report(name: str, done: int, total: int) -> None:
                if name not in ids:
                    ids[name] = bars.add_task(name, total=total)
                bars.update(ids[name], completed=done, total=total)

            set_reporter(report)
        try:
            flow(config=cfg, overwrite=overwrite)
        except Exception as err:  # said by the caller, once the bars are drawn
            failure = err
        finally:
            set_reporter(None)
    return failure, kept


def _bars() -> Progress:
    return Progress(
        TextColumn("{task.description:<10}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


def _print_summary(store_name: str) -> None:
    from pdeflow.storage import RunStore

    summary = _summary(RunStore.named(store_name))
    out = Console()
    _print_summary_table(out, summary)
    _print_units_table(out, summary)
    _print_methods_table(out, summary)
    out.print(
        f"Open the data: [bold]xarray.open_zarr('{summary['store']}')[/]; stage results: "
        "group='reduce' / group='quantify'.",
        highlight=False,
    )


def _summary(handle) -> dict:
    """``storage.records.summarize`` with the CLI's stage order: no stage module is imported,
    so ``show`` needs no torch or Dask."""
    from pdeflow.storage.records import summarize

    stages = tuple(s.value for s in Stage if s not in (Stage.pipeline, Stage.campaign))
    summary = summarize(handle, stages, optional=(Stage.infer.value,))
    rec = handle.record("reduce")
    if rec is not None and rec.status == "complete" and rec.details.get("methods"):
        summary["reduce_methods"] = rec.details["methods"]
        summary["reduce_method"] = rec.details.get("method")
    return summary


def _open_store(store: str):
    """A store given by path or by name under the runs directory; exits 2 if there is none."""
    from pdeflow.storage import RunStore, StoreError

    path = Path(store)
    try:
        handle = RunStore(path.resolve()) if path.is_dir() else RunStore.named(store)
    except StoreError as err:
        _fail(str(err))
    if not handle.exists():
        _fail(f"no pdeflow store at {handle.path}")
    return handle


@app.command()
def show(
    store: Annotated[str, typer.Argument(help="Store path, or a name under the runs directory.")],
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object, for scripts.")] = False,
) -> None:
    """Print what STORE holds: stages (status, start, duration), blocks complete, metrics."""
    summary = _summary(_open_store(store))
    if as_json:
        sys.stdout.write(json.dumps(summary, indent=2, sort_keys=True) + "\n")
        return
    out = Console()
    out.print(f"[bold]{summary['store']}[/]")
    for name, info in summary["stages"].items():
        took = ""
        if info.get("started"):
            ended = f"{info['seconds']:.1f} s" if info.get("seconds") is not None else "running"
            took = f"  (started {info['started'][:19].replace('T', ' ')} UTC, {ended})"
        out.print(f"  {name:<9} {info['status']}{took}", highlight=False)
        if info.get("error"):
            out.print(f"            {info['error'].splitlines()[0]}", highlight=False)
    blocks = summary["blocks"]
    out.print(f"  blocks    {blocks['complete']}/{blocks['total']} complete")
    _print_summary_table(out, summary)
    _print_units_table(out, summary)
    _print_methods_table(out, summary)


@app.command()
def verify(
    store: Annotated[str, typer.Argument(help="Store path, or a name under the runs directory.")],
    repair: Annotated[
        bool, typer.Option(help="Reopen what is damaged, so the next run recomputes it.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object, for scripts.")] = False,
) -> None:
    """Check every byte STORE vouches for (sizes and CRC32s); exit 0 if all is intact, else 1.

    Prints the verdict of each stage (ok, damaged, stale, incomplete, missing) and names every
    damaged block and file. With --repair the damaged blocks and stages are reopened.
    """
    from pdeflow.tasks.stages.verify import repair as reopen_damaged
    from pdeflow.tasks.stages.verify import verify_store

    handle = _open_store(store)
    try:
        with handle.lock("pdeflow verify"):
            verdict = verify_store(handle)
            actions = reopen_damaged(handle, verdict) if repair else []
    except _refusals() as err:
        _fail(str(err))
    if as_json:
        sys.stdout.write(json.dumps({**verdict, "repaired": actions}, indent=2) + "\n")
    else:
        _print_verdict(handle, verdict, actions)
    raise typer.Exit(0 if verdict["ok"] else EXIT_FAILED)


def _print_verdict(handle, verdict: dict, actions: list[str]) -> None:
    out = Console()
    out.print(f"[bold]{handle.path}[/]: {'intact' if verdict['ok'] else 'NOT intact'}")
    for line in verdict["template"]:
        out.print(f"  template  {line}", highlight=False)
    for name, info in verdict["stages"].items():
        out.print(f"  {name:<9} {info['verdict']:<10} ({info['status']})", highlight=False)
        for problem in info["problems"][:5]:
            out.print(f"            {problem}", highlight=False)
    blocks = verdict["blocks"]
    out.print(
        f"  blocks    {blocks['complete']}/{blocks['total']} intact, "
        f"{len(blocks['damaged'])} damaged, {len(blocks['missing'])} missing"
    )
    for block, why in sorted(blocks["damaged"].items())[:10]:
        out.print(f"            block {block}: {why}", highlight=False)
    for action in actions:
        out.print(f"  repaired  {action}", highlight=False)
    if not verdict["ok"] and not actions:
        out.print("Run `pdeflow verify --repair` then the stage again, or just run the stage: "
                  "generate recomputes damaged blocks itself.")  # fmt: skip


def _print_summary_table(out: Console, summary: dict) -> None:
    if not summary["metrics"]:
        return
    table = Table(title=f"metrics of {summary['store']}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in sorted(summary["metrics"].items()):
        table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
    out.print(table)


def _print_units_table(out: Console, summary: dict) -> None:
    """The train stage's units (ensemble members, sweep trials) when it has more than one."""
    units = summary["stages"].get("train", {}).get("units") or []
    if len(units) < 2:
        return
    table = Table(title="training units (each one Dask task)")
    for head in ("unit", "settings", "worker", "device", "epochs", "seconds", "val nRMSE"):
        table.add_column(head, justify="right" if head in ("epochs", "seconds") else "left")
    for u in units:
        settings = ", ".join(_setting(k, v) for k, v in u.get("overrides", {}).items())
        table.add_row(
            u["unit"], settings or f"seed {u['seed']}", u.get("worker", "?"),
            u.get("device", "?"), str(u["epochs"]), f"{u['seconds']:.1f}",
            f"{u.get('val_nrmse_one_step', float('nan')):.3g}",
        )  # fmt: skip
    out.print(table)


def _setting(name: str, value) -> str:
    return f"{name}={value:g}" if isinstance(value, float) else f"{name}={value}"


def _print_methods_table(out: Console, summary: dict) -> None:
    """The reduce methods side by side (``reduce.compare``), when the reduce stage has run."""
    rows = summary.get("reduce_methods")
    if not rows:
        return
    from pdeflow.tasks.config_reduce import TABLE_COLUMNS

    columns = [(h, k) for h, k in TABLE_COLUMNS if any(k in row for row in rows.values())]
    used = summary.get("reduce_method")
    table = Table(title=f"reduce methods on the test split (the stage's ROM: {used})")
    table.add_column("method", no_wrap=True)
    for head, _ in columns:
        table.add_column(head, justify="right")
    for name in sorted(rows, key=lambda n: n != used):
        table.add_row(
            name, *(f"{rows[name][k]:.3g}" if k in rows[name] else "-" for _, k in columns)
        )
    out.print(table)


list_app = typer.Typer(no_args_is_help=True, help="List the registered PDEs or presets.")
app.add_typer(list_app, name="list")


@list_app.command("pdes")
def list_pdes(
    as_json: Annotated[bool, typer.Option("--json", help="JSON, for scripts.")] = False,
) -> None:
    """The PDE registry: dimension, fields, boundaries, own defaults and coefficient ranges."""
    from pdeflow.tasks.pde_catalog import load_catalog

    rows = load_catalog()  # the registry's facts without importing torch (see pde_catalog.py)
    if as_json:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return
    table = Table(title=f"pdeflow PDEs (generate.pde): {len(rows)}")
    for column in ("name", "dim", "fields", "boundary", "defaults", "coefficients"):
        table.add_column(column)
    for r in rows:
        table.add_row(
            r["name"],
            f"{r['dim']}D" + (" steady" if r["stationary"] else ""),
            ", ".join(r["fields"]),
            r["boundary"],
            _defaults_text(r["defaults"], r["stationary"]),
            "\n".join(_coefficient_text(k, c) for k, c in r["coefficients"].items()),
        )
    Console().print(table)


def _defaults_text(d: dict, stationary: bool) -> str:
    grid = "x".join(str(n) for n in d["grid"])
    time = "" if stationary else f", t_end {d['t_end']:g}, dt {d['dt']:g}, {d['n_frames']} frames"
    return f"grid {grid}, L {d['length']:.4g}{time}, u0 {d['initial_condition']}"


def _coefficient_text(name: str, c: dict) -> str:
    lo, hi = c["range"]
    d = c["default"]
    if "constant" in d:
        default = f"= {d['constant']:g}" + (" per run" if c.get("one_value_per_run") else "")
    else:
        default = f"~ {d['distribution']}[{d['low']:g}, {d['high']:g}]"
    return f"{name} {default} (valid [{lo:g}, {hi:g}])"


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
    the_well = "the_well"


@app.command()
def export(
    store: Annotated[str, typer.Argument(help="Store path, or a name under the runs directory.")],
    out: Annotated[
        Path,
        typer.Argument(
            help="Output file: .hdf5 for 1D and Darcy stores, .h5 for 2D time-dependent ones "
            "(PDEBench's loaders read a name ending in h5 as per-sample groups, any other as "
            "one tensor); other names are refused. For the_well: a directory, whose name "
            "becomes the dataset name."
        ),
    ],
    fmt: Annotated[ExportFormat, typer.Option("--format", help="Target layout.")] = (
        ExportFormat.pdebench
    ),
    split: Annotated[
        str | None, typer.Option(help="Only this split (train, val, ...); pdebench only.")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output file.")] = False,
) -> None:
    """Write STORE in another tool's layout (PDEBench's HDF5, The Well's tree) for baselines.

    Only a complete, intact dataset is exported: its blocks are verified first. Coefficients
    carry PDEBench's names and scaling (Burgers Nu = pi * nu), pdeflow's own in
    pdeflow_parameters; periodic grids get PDEBench's cell-centre coordinates; each sample's
    split is kept. the_well writes OUT/data/{train,valid,test,calibration}/, stats.yaml and
    the metadata YAML, with the PDE's boundary conditions.
    """
    from pdeflow.storage.export import export_pdebench
    from pdeflow.storage.export_the_well import export_the_well
    from pdeflow.tasks.stages.verify import verify_store

    if fmt is ExportFormat.the_well and split is not None:
        _fail("--split: The Well's layout writes every split to its own directory")
    handle = _open_store(store)
    verdict = verify_store(handle)
    generate = verdict["stages"]["generate"]
    if generate["verdict"] != "ok":
        why = "; ".join(generate["problems"][:2]) or f"generate is {generate['status']}"
        _fail(f"store {handle.path} has no complete, intact dataset to export ({why})")
    try:
        if fmt is ExportFormat.the_well:
            written = export_the_well(handle.path, out, overwrite=overwrite)
        else:
            written = export_pdebench(handle.path, out, split=split, overwrite=overwrite)
    except (ValueError, FileExistsError, ImportError, OSError) as err:
        _fail(f"export to {out}: {err}")
    Console().print(f"wrote {written} ({fmt.value} layout)", highlight=False)


class ServedModel(StrEnum):
    """The models ``serve-model`` serves (``model_server.STAGE_OF``)."""

    solver = "solver"
    surrogate = "surrogate"
    rom = "rom"


@app.command("serve-model")
def serve_model(
    store: Annotated[str, typer.Argument(help="Store path, or a name under the runs directory.")],
    model: Annotated[
        ServedModel, typer.Option(help="The PDE solver, the trained surrogate, or the ROM.")
    ],
    qoi: Annotated[
        str | None,
        typer.Option(help="Serve this scalar instead of the field: final_energy (quantify's)."),
    ] = None,
    sample: Annotated[
        int | None,
        typer.Option(min=0, help="Start from stored sample N's initial state (default 0)."),
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option(min=0, max=2**32 - 1, help="Draw the initial state from this seed."),
    ] = None,
    host: Annotated[str, typer.Option(help="Address to bind; 0.0.0.0 for all.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port.")] = 4242,
) -> None:
    """Serve a model of STORE over UM-Bridge (HTTP) for UQ codes; Ctrl-C stops.

    Input: the parameters in the order of generate.parameter_names, in their units, each within
    the design's range. Output: the trajectory (time, channel, *space) flattened, or --qoi.
    Every model starts from the same initial state: the generate stage's for the parameters,
    drawn from --seed or from stored sample --sample's seed (pde custom: that sample's first
    frame). The surrogate also serves gradients. Client: umbridge.HTTPModel(URL, MODEL).
    """
    from pdeflow.storage.errors import StoreDamaged
    from pdeflow.tasks.model_server import InputError, build_model
    from pdeflow.tasks.umbridge_server import ModelServer

    handle = _open_store(store)
    try:
        served = build_model(handle, model.value, qoi=qoi, sample=sample, seed=seed)
    except (*_refusals(), StoreDamaged, ValueError) as err:
        _fail(str(err))
    server = ModelServer([served], host, port, input_errors=(InputError,))
    try:
        url = server.start()
    except OSError as err:  # in use, not this machine's address, an unknown host name
        reason = os.strerror(err.errno) if (err.errno or 0) > 0 else err.strerror or err
        _fail(f"cannot listen on {host}:{port}: {reason}")
    names = ", ".join(served.gen.parameter_names)
    what = f"QoI {qoi}" if qoi else f"field of {served.get_output_sizes()[0]} values"
    try:
        console.print(
            f"serving {model.value} of {handle.path} at {url} (UM-Bridge model "
            f"{served.name!r})\n  input: {names}; output: {what}\n"
            f"  initial state: {served.start.text}\nCtrl-C stops.",
            highlight=False,
        )
        server.serve_forever()
    except KeyboardInterrupt:  # before serve_forever took over
        server.stop()
    console.print("stopped", highlight=False)


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

    Needs a running server: `pdeflow server start` (127.0.0.1 only) and PREFECT_API_URL.
    """
    # Runs started from the UI should log INFO lines there; the WARNING default is for `run`.
    if os.environ.get("PREFECT_LOGGING_LEVEL") == "WARNING":
        os.environ["PREFECT_LOGGING_LEVEL"] = "INFO"
    from pdeflow.flows import serve as serving
    from pdeflow.tasks.config import ConfigError, load_config

    try:
        serving.serve(load_config(config, set_ or []), schedules, limit=limit)
    except (ConfigError, serving.ScheduleError, serving.ServeError) as err:
        _fail(str(err))


server_app = typer.Typer(no_args_is_help=True, help="A Prefect server for the UI.")
app.add_typer(server_app, name="server")


@server_app.command("start")
def server_start(
    port: Annotated[int, typer.Option(help="Port of the UI and its API.")] = 4200,
    host: Annotated[str, typer.Option(help="Address to bind; 0.0.0.0 for all.")] = "127.0.0.1",
) -> None:
    """Start a Prefect server whose UI calls its own API on --port, with crash detection.

    Ctrl-C stops it. Clients: export PREFECT_API_URL=http://127.0.0.1:PORT/api.
    """
    from pdeflow.flows.server import start

    try:
        code = start(port=port, host=host)
    except ValueError as err:
        _fail(str(err))
    raise typer.Exit(code)


def main() -> None:
    configure_environment()
    # The CLI shows progress bars and a summary; Prefect's per-run INFO lines are noise there.
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    code = 0
    try:
        app()
    except SystemExit as done:  # typer ends every command so, also with status 0
        code = done.code
    finally:  # no zarr traceback at interpreter exit
        settle_io()
    # Threads and exit handlers (the cluster closing in the background, Prefect's log shipping,
    # the temporary server's stop) run; the interpreter's teardown, 1.5 s after a pipeline
    # (benchmarks.overhead), is skipped: every store file is already written whole.
    exit_now(code)


if __name__ == "__main__":
    main()
