"""Serve every pdeflow flow as a Prefect deployment: UI forms prefilled from a config, schedules.

``pdeflow serve`` builds one deployment per entry of :data:`FLOWS`, each with the pipeline config
as its ``config`` parameter, so the Prefect UI's "Custom run" form opens filled with a valid
config whose every field carries its description, range and dropdown. Schedules come from a YAML
file (format: ``deploy/schedules.example.yaml``); their parameters are merged over the served
config and validated before anything is served. A schedule of the ``generate`` or ``pipeline``
deployment with ``extend_by: N`` is incremental: each run grows the store by N samples.

The serving process binds nothing public: it polls the Prefect server at ``PREFECT_API_URL``
(Prefect's runner keeps one token-authenticated control channel on 127.0.0.1 for the flow-run
subprocesses it starts).
"""

from __future__ import annotations

import datetime
import importlib
import re
import zoneinfo
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from pdeflow.tasks.config import PipelineConfig, format_validation_error
from pdeflow.tasks.config_form import form_values

# Deployment name -> "module:flow object". One line here serves one more flow; every flow takes
# ``config: PipelineConfig`` (and may take more parameters, e.g. ``overwrite``; ``generate`` and
# ``pipeline`` also take ``extend_by``).
FLOWS: dict[str, str] = {
    "generate": "pdeflow.flows.stages:data_generation",
    "train": "pdeflow.flows.stages:surrogate_training",
    "reduce": "pdeflow.flows.stages:reduced_order_model",
    "quantify": "pdeflow.flows.stages:uncertainty_quantification",
    "infer": "pdeflow.flows.stages:bayesian_inference",
    "pipeline": "pdeflow.flows.pipeline:pipeline",
    "campaign": "pdeflow.flows.campaign:campaign",
}

TAGS = ["pdeflow"]

NO_SERVER = (
    "PREFECT_API_URL is not set, so there is no Prefect server for the UI to show the "
    "deployments on.\n"
    "Start one in another terminal (it listens on 127.0.0.1 only by default; --port to change):\n"
    "    pdeflow server start\n"
    "then point this shell at it and serve again:\n"
    "    export PREFECT_API_URL=http://127.0.0.1:4200/api\n"
    "    pdeflow serve --config flows/configs/demo.yaml"
)


class ScheduleError(ValueError):
    """A schedule file that cannot be served; one line per problem, naming the field."""


class ServeError(RuntimeError):
    """No Prefect server to serve on: none configured, none answering, or credentials refused."""


class ScheduleEntry(BaseModel):
    """One schedule of one deployment; ``parameters`` are merged over the served defaults."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    deployment: str = Field(description=f"Deployment name, one of {sorted(FLOWS)}.")
    cron: str | None = Field(None, description="Cron expression, e.g. '0 2 * * *' (02:00).")
    interval: float | None = Field(
        None, gt=0, le=366 * 86400, description="Seconds between runs, (0, 1 year]."
    )
    timezone: str | None = Field(None, description="IANA timezone of cron times; default UTC.")
    parameters: dict[str, Any] = Field(
        default_factory=dict,
        description="Flow parameters; 'config' holds overrides merged into the served config; "
        "'extend_by' (generate, pipeline) grows the store by that many samples each run.",
    )
    active: bool = Field(True, description="False registers the schedule paused.")

    @field_validator("deployment")
    @classmethod
    def _known_deployment(cls, v: str) -> str:
        if v not in FLOWS:
            raise ValueError(f"unknown deployment; valid: {', '.join(sorted(FLOWS))} (got {v!r})")
        return v

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, v: str | None) -> str | None:
        from prefect.client.schemas.schedules import CronSchedule

        if v is not None:
            try:
                CronSchedule(cron=v)
            except ValidationError:
                raise ValueError(f"not a valid cron expression (got {v!r})") from None
        return v

    @field_validator("timezone")
    @classmethod
    def _valid_timezone(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                zoneinfo.ZoneInfo(v)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                raise ValueError(
                    f"unknown IANA timezone, e.g. 'Europe/Berlin' (got {v!r})"
                ) from None
        return v

    @model_validator(mode="after")
    def _one_trigger(self) -> ScheduleEntry:
        if (self.cron is None) == (self.interval is None):
            got = "neither" if self.cron is None else "both"
            raise ValueError(f"give exactly one of cron or interval (seconds) (got {got})")
        return self


_ENTRIES = TypeAdapter(list[ScheduleEntry])


def parse_schedules(data: Any, source: str = "schedules") -> list[ScheduleEntry]:
    """Validate a list of schedule mappings (the parsed YAML file).

    Raises:
        ScheduleError: one line per problem, e.g. ``schedules.yaml[0].cron: ...``.
    """
    if data is None:
        return []
    if not isinstance(data, list):
        raise ScheduleError(f"{source}: the top level must be a list of schedules")
    try:
        return _ENTRIES.validate_python(data)
    except ValidationError as err:
        lines = format_validation_error(err).splitlines()
        # Lines start with the entry's index ("0.cron: ..."); name it as "file[0].cron".
        raise ScheduleError(
            "\n".join(re.sub(r"^(\d+)", lambda m: f"{source}[{m[1]}]", line) for line in lines)
        ) from None


def load_schedules(path: str | Path | None) -> list[ScheduleEntry]:
    """Read and validate a schedule YAML file; None gives no schedules."""
    if path is None:
        return []
    path = Path(path)
    if not path.is_file():
        raise ScheduleError(f"schedule file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ScheduleError(f"{path}: not valid YAML: {err}") from None
    return parse_schedules(data, source=path.name)


def load_flow(name: str):
    """The flow object a deployment name refers to in :data:`FLOWS`."""
    if name not in FLOWS:
        raise ValueError(f"unknown deployment {name!r}; valid: {', '.join(sorted(FLOWS))}")
    module, _, attr = FLOWS[name].partition(":")
    return getattr(importlib.import_module(module), attr)


def _deep_merge(base: dict, over: dict) -> dict:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def schedule_parameters(
    entry: ScheduleEntry, config: PipelineConfig, flow, where: str
) -> dict[str, Any]:
    """The full parameters of a scheduled run: ``entry.parameters`` over the served config.

    Prefect merges a schedule's parameters over the deployment's one key deep, so the merged
    config is stored whole.

    Raises:
        ScheduleError: unknown parameter, or a merged config that is not a valid PipelineConfig.
    """
    from prefect.utilities.schema_tools import validate

    known = set(flow.parameters.properties)
    unknown = sorted(set(entry.parameters) - known)
    if unknown:
        raise ScheduleError(
            f"{where}.parameters: unknown {unknown} for flow '{flow.name}'; valid: {sorted(known)}"
        )
    overrides = entry.parameters.get("config", {})
    if not isinstance(overrides, dict):
        raise ScheduleError(f"{where}.parameters.config: must be a mapping of config overrides")
    try:
        cfg = PipelineConfig.model_validate(_deep_merge(config.model_dump(mode="json"), overrides))
    except ValidationError as err:
        raise ScheduleError(format_validation_error(err, f"{where}.parameters.config")) from None
    # Fields left None are left out: the form's schema types them without null.
    params = {**entry.parameters, "config": form_values(cfg)}
    errors = validate(params, flow.parameters.model_dump(), ignore_required=True)
    if errors:
        raise ScheduleError(
            "\n".join(
                f"{where}.parameters.{'.'.join(map(str, e.path))}: {e.message}" for e in errors
            )
        )
    _check_recurring_extension(params, cfg, where)
    return params


def _check_recurring_extension(params: dict[str, Any], cfg: PipelineConfig, where: str) -> None:
    """Refuse an ``extend_by`` that a recurring run cannot apply (design, overwrite)."""
    from pdeflow.tasks.stages.extend import ExtensionError, check_extendable

    try:
        check_extendable(
            cfg.generate.design,
            int(params.get("extend_by", 0)),
            bool(params.get("overwrite", False)),
            recurring=True,
        )
    except ExtensionError as err:
        field, _, message = str(err).partition(": ")
        field = f"config.{field}" if field.startswith("generate.") else field
        raise ScheduleError(f"{where}.parameters.{field}: {message}") from None


def _schedule(entry: ScheduleEntry, parameters: dict[str, Any]):
    from prefect.schedules import Cron, Interval

    if entry.cron is not None:
        return Cron(entry.cron, timezone=entry.timezone, active=entry.active, parameters=parameters)
    return Interval(
        datetime.timedelta(seconds=entry.interval),
        timezone=entry.timezone,
        active=entry.active,
        parameters=parameters,
    )


def build_deployments(config: PipelineConfig, schedules: Sequence[ScheduleEntry] = ()) -> list:
    """One ``RunnerDeployment`` per entry of :data:`FLOWS`, named by its key, nothing served.

    Args:
        config: the served config; it prefills every deployment's ``config`` parameter.
        schedules: validated schedule entries; each attaches to its deployment.

    Returns:
        Deployments in :data:`FLOWS` order, tagged ``pdeflow``, with module-path entrypoints so
        runs load the flow from the installed package whatever the working directory.

    Raises:
        ScheduleError: a schedule's parameters do not validate (names the entry and field).
    """
    from prefect.deployments.runner import EntrypointType

    deployments = []
    for name in FLOWS:
        flow = load_flow(name)
        if "config" not in flow.parameters.properties:
            raise ValueError(f"FLOWS[{name!r}]: flow '{flow.name}' takes no 'config' parameter")
        attached = [
            _schedule(e, schedule_parameters(e, config, flow, f"schedules[{i}]"))
            for i, e in enumerate(schedules)
            if e.deployment == name
        ]
        summary = (flow.description or flow.name).strip().splitlines()[0]
        deployments.append(
            flow.to_deployment(
                name=name,
                parameters={"config": form_values(config)},
                schedules=attached or None,
                tags=TAGS,
                description=f"{summary} The form opens with the served config "
                f"(store '{config.store}'); every field shows its range.",
                entrypoint_type=EntrypointType.MODULE_PATH,
            )
        )
    return deployments


def api_url() -> str:
    """The configured ``PREFECT_API_URL`` (environment or Prefect profile).

    Raises:
        ServeError: none set; Prefect would otherwise start a private ephemeral server that no
            UI shows.
    """
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        raise ServeError(NO_SERVER)
    return url


def check_server() -> str:
    """The Prefect API URL, once the server there answers its health check.

    Raises:
        ServeError: no ``PREFECT_API_URL``, no healthy server at that URL, or missing or wrong
            basic-auth credentials.
    """
    from prefect.client.orchestration import get_client
    from prefect.exceptions import PrefectHTTPStatusError

    url = api_url()
    with get_client(sync_client=True) as client:
        problem = client.api_healthcheck()
        if problem is not None:
            raise ServeError(
                f"no healthy Prefect server at PREFECT_API_URL={url}: {problem}\n"
                "Is `prefect server start` running there?"
            )
        # /health answers without credentials; /admin/version needs them when auth is on.
        try:
            client.api_version()
        except PrefectHTTPStatusError as err:
            if err.response.status_code != 401:
                raise
            raise ServeError(
                f"the Prefect server at {url} refused the credentials (HTTP 401): it uses basic "
                "auth; export PREFECT_API_AUTH_STRING=user:password, the server's "
                "PREFECT_SERVER_API_AUTH_STRING"
            ) from None
    return url


def serve(
    config: PipelineConfig, schedules: str | Path | None = None, limit: int | None = None
) -> None:
    """Serve every flow of :data:`FLOWS` on the server at ``PREFECT_API_URL`` until Ctrl-C.

    Every input is checked before anything is served: the server's URL first (cheap), then the
    schedule file and each schedule's parameters, then the server's health. Crash detection is
    then set up: the flow runs send a heartbeat every
    :func:`~pdeflow.flows.automations.heartbeat_seconds`, the server's automation marks a run
    Crashed when they stop (created once, updated when the period changed), and a watcher marks
    Crashed the task runs a dead attempt left Running.

    Args:
        config: the served config; it prefills every deployment's form.
        schedules: YAML schedule file (format: ``deploy/schedules.example.yaml``); None for none.
        limit: most flow runs executing at once, >= 1; None for no limit.

    Raises:
        ScheduleError: an invalid schedule file.
        ServeError: no server to serve on.
    """
    from prefect import serve as prefect_serve
    from prefect.client.orchestration import get_client

    from pdeflow.flows import automations

    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1 (got {limit})")
    api_url()
    deployments = build_deployments(config, load_schedules(schedules))
    check_server()
    heartbeat = automations.heartbeat_seconds()
    with get_client(sync_client=True) as client:
        automations.ensure_crash_detection(client, heartbeat)
    watcher = automations.OrphanWatcher().start()
    try:
        prefect_serve(*deployments, limit=limit, heartbeat_seconds=heartbeat)
    finally:
        watcher.stop()
