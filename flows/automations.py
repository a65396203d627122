"""Crash detection: a run whose process died becomes *Crashed*, so the UI offers Retry.

A flow run emits a ``prefect.flow-run.heartbeat`` event every ``PREFECT_FLOWS_HEARTBEAT_FREQUENCY``
seconds from a thread of its own process. When that process dies (SIGKILL, OOM kill, a lost node,
a pre-empted job), nothing tells the server: the run stays *Running* for ever, and the UI offers
only Suspend and Cancel. The automation made here is Prefect's "detect zombie flows" recipe
(docs.prefect.io/v3/advanced/detect-zombie-flows): after each heartbeat of a pdeflow flow run it
expects another event of that run (a heartbeat or any state change) within two heartbeat periods,
and proactively sets the run *Crashed* when none comes. Retry then resumes the run at block and
epoch granularity, as for a failed run.

The task runs a dead attempt left *Running* stay so: :func:`crash_orphaned_task_runs` marks them
*Crashed* once their flow run has ended or moved on to a new attempt. ``pdeflow serve`` and
``pdeflow server start`` run it periodically (:class:`OrphanWatcher`).

``python -m pdeflow.flows.automations`` creates or updates the automation on the server at
``PREFECT_API_URL`` (for work-pool setups, where no ``pdeflow serve`` does it).
"""

from __future__ import annotations

import sys
import threading
from datetime import timedelta
from typing import Any
from uuid import UUID

AUTOMATION_NAME = "pdeflow: crash flow runs without heartbeats"
# Flow runs carry their deployment's tags; matching the tag leaves other projects' flow runs on a
# shared server alone (their heartbeat period may differ from ours).
TAG = "pdeflow"
# Prefect's own default is 180 s, so a dead run would show Crashed only after up to 6 minutes. One
# event a minute per running flow costs nothing; Prefect refuses values under 30 s.
DEFAULT_HEARTBEAT_S = 60
MISSED_PERIODS = 2
CRASH_MESSAGE = (
    "No heartbeat from this flow run for {window} s: its process died (killed, out of memory, "
    "node lost). Retry resumes it where it stopped."
)


def heartbeat_seconds() -> int:
    """The heartbeat period flow runs get: ``PREFECT_FLOWS_HEARTBEAT_FREQUENCY`` where it is set
    (environment or Prefect profile), else :data:`DEFAULT_HEARTBEAT_S`."""
    from prefect.settings import get_current_settings

    flows = get_current_settings().flows
    if "heartbeat_frequency" in flows.model_fields_set and flows.heartbeat_frequency:
        return int(flows.heartbeat_frequency)
    return DEFAULT_HEARTBEAT_S


def crash_detection(heartbeat_s: int):
    """The automation that marks a pdeflow flow run Crashed when its heartbeats stop.

    Args:
        heartbeat_s: the flow runs' heartbeat period in seconds, >= 30 (Prefect's minimum).

    Returns:
        A ``prefect.events.schemas.automations.AutomationCore`` named :data:`AUTOMATION_NAME`.
        Its window is ``MISSED_PERIODS * heartbeat_s``: a run is Crashed between one and two
        periods after its last heartbeat, and one late heartbeat is no false alarm.
    """
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    if heartbeat_s < 30:
        raise ValueError(f"heartbeat_s must be >= 30, Prefect's minimum (got {heartbeat_s})")
    window = MISSED_PERIODS * heartbeat_s
    return AutomationCore(
        name=AUTOMATION_NAME,
        description=f"Created by pdeflow for flow runs tagged '{TAG}' with a heartbeat every "
        f"{heartbeat_s} s (PREFECT_FLOWS_HEARTBEAT_FREQUENCY).",
        enabled=True,
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            # Any flow-run event disarms it: heartbeats, and every state, custom names included.
            expect={"prefect.flow-run.*"},
            match=ResourceSpecification({"prefect.resource.id": "prefect.flow-run.*"}),
            match_related=ResourceSpecification(
                {"prefect.resource.role": "tag", "prefect.resource.id": f"prefect.tag.{TAG}"}
            ),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=window),
        ),
        actions=[
            ChangeFlowRunState(state=StateType.CRASHED, message=CRASH_MESSAGE.format(window=window))
        ],
    )


def _comparable(automation) -> dict[str, Any]:
    """What decides an automation's behaviour (trigger ids and server fields left out)."""
    data = automation.model_dump(
        mode="json", include={"description", "enabled", "trigger", "actions"}
    )
    data["trigger"].pop("id", None)
    return data


def ensure_crash_detection(client, heartbeat_s: int) -> tuple[UUID, str]:
    """Create the crash-detection automation, or bring the existing one up to date.

    Idempotent: looked up by name, so restarts of ``pdeflow serve`` never add a second one;
    duplicates left by concurrent starts are deleted.

    Args:
        client: a synchronous Prefect client (``get_client(sync_client=True)``).
        heartbeat_s: the flow runs' heartbeat period in seconds, >= 30.

    Returns:
        The automation's id and what was done: ``"created"``, ``"updated"`` or ``"unchanged"``.
    """
    wanted = crash_detection(heartbeat_s)
    found = sorted(client.read_automations_by_name(AUTOMATION_NAME), key=lambda a: str(a.id))
    if not found:
        return client.create_automation(wanted), "created"
    keep, *extra = found
    for duplicate in extra:
        client.delete_automation(duplicate.id)
    if _comparable(keep) == _comparable(wanted):
        return keep.id, "unchanged"
    client.update_automation(keep.id, wanted)
    return keep.id, "updated"


_LIVE = ("RUNNING", "PENDING")


def crash_orphaned_task_runs(
    client, tag: str | None = TAG, flow_run_ids: list[UUID] | None = None
) -> list[UUID]:
    """Mark Crashed the task runs that a dead attempt of their flow run left Running or Pending.

    A task run is orphaned when its flow run has reached a final state, or has started a later
    attempt (its ``run_count`` is past the task run's ``flow_run_run_count``): no process will
    ever finish it, and the UI would show an endless bar.

    Args:
        client: a synchronous Prefect client.
        tag: only flow runs with this tag (pdeflow's deployments tag theirs); None for all.
        flow_run_ids: only these flow runs; None for all.

    Returns:
        The ids of the task runs set Crashed.
    """
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        FlowRunFilterTags,
        TaskRunFilter,
        TaskRunFilterState,
        TaskRunFilterStateType,
    )
    from prefect.states import Crashed

    live = TaskRunFilter(state=TaskRunFilterState(type=TaskRunFilterStateType(any_=list(_LIVE))))
    parents = FlowRunFilter(
        tags=None if tag is None else FlowRunFilterTags(all_=[tag]),
        id=None if flow_run_ids is None else FlowRunFilterId(any_=list(flow_run_ids)),
    )
    tasks = client.read_task_runs(task_run_filter=live, flow_run_filter=parents)
    tasks = [t for t in tasks if t.flow_run_id is not None]
    if not tasks:
        return []
    ids = list({t.flow_run_id for t in tasks})
    flow_runs = {
        f.id: f
        for f in client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)))
    }
    crashed = []
    for task in tasks:
        parent = flow_runs.get(task.flow_run_id)
        if parent is None or not _orphaned(task, parent):
            continue
        message = (
            f"Left {task.state.name} by attempt {task.flow_run_run_count} of flow run "
            f"'{parent.name}', whose process ended (flow run now {parent.state.name}, "
            f"attempt {parent.run_count})."
        )
        client.set_task_run_state(task.id, Crashed(message=message), force=True)
        crashed.append(task.id)
    return crashed


def _orphaned(task, parent) -> bool:
    if parent.state is not None and parent.state.is_final():
        return True
    return parent.run_count > task.flow_run_run_count


def crash_earlier_attempts() -> list[UUID]:
    """In a retried flow run, mark Crashed the task runs its dead earlier attempts left live.

    Every pdeflow flow calls this first. It works wherever the flow runs (a worker of a remote
    work pool included), where :class:`OrphanWatcher` runs only beside ``pdeflow serve`` and
    ``pdeflow server start``. A failure to reach the API is logged, never raised: the cleanup
    is cosmetic, and the run's own work must go on.

    Returns:
        The ids of the task runs set Crashed (none on a first attempt or outside a flow run).
    """
    import logging

    from prefect.client.orchestration import get_client
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    if ctx is None or ctx.flow_run is None or ctx.flow_run.run_count <= 1:
        return []
    try:
        with get_client(sync_client=True) as client:
            crashed = crash_orphaned_task_runs(client, tag=None, flow_run_ids=[ctx.flow_run.id])
    except Exception as err:  # noqa: BLE001 - see the docstring
        logging.getLogger("pdeflow.flows").warning("could not check earlier attempts: %s", err)
        return []
    for task_id in crashed:
        logging.getLogger("pdeflow.flows").warning(
            "task run %s of an earlier attempt of this flow run set Crashed", task_id
        )
    return crashed


class OrphanWatcher:
    """A daemon thread that runs :func:`crash_orphaned_task_runs` every ``interval`` seconds,
    for flow runs tagged :data:`TAG`.

    Args:
        interval: seconds between checks.
        settings: Prefect settings for its client (e.g. ``{PREFECT_API_URL: url}``); None for
            the process's own.
    """

    def __init__(self, interval: float = 10.0, settings: dict | None = None) -> None:
        self.interval = interval
        self.settings = dict(settings or {})
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="pdeflow-orphans", daemon=True)

    def start(self) -> OrphanWatcher:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval + 5)

    def _loop(self) -> None:
        import logging

        from prefect.client.orchestration import get_client
        from prefect.settings import temporary_settings

        logger = logging.getLogger("pdeflow.serve")
        while not self._stop.wait(self.interval):
            try:
                with temporary_settings(self.settings), get_client(sync_client=True) as client:
                    for task_id in crash_orphaned_task_runs(client):
                        logger.warning("task run %s of a dead attempt set Crashed", task_id)
            except Exception as err:  # a server restart must not end the watcher
                logger.warning("could not check for orphaned task runs: %s", err)


def main() -> int:
    """Create or update the automation on the server at ``PREFECT_API_URL``; 2 on no server."""
    from prefect.client.orchestration import get_client

    from pdeflow.flows.serve import ServeError, check_server

    try:
        url = check_server()
    except ServeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    heartbeat = heartbeat_seconds()
    with get_client(sync_client=True) as client:
        automation_id, done = ensure_crash_detection(client, heartbeat)
    print(
        f"{done}: automation '{AUTOMATION_NAME}' ({automation_id}) at {url}: flow runs tagged "
        f"'{TAG}' are Crashed {MISSED_PERIODS * heartbeat} s after their last heartbeat; "
        f"run workers with PREFECT_FLOWS_HEARTBEAT_FREQUENCY={heartbeat}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
