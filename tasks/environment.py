"""Process-wide defaults pdeflow sets before Prefect and torch load (exported values win)."""

from __future__ import annotations

import os
import sys

# Offline machines make Prefect's telemetry log errors; no flow needs it. setdefault keeps any
# value the user exported.
_PREFECT_DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_CLOUD_ENABLE_ORCHESTRATION_TELEMETRY": "false",
    "DO_NOT_TRACK": "1",
    # The ephemeral server needs 7-17 s to start on 2 idle cores, over 20 s (Prefect's default
    # limit) on loaded ones; a slow start must not fail the run.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    # Any Prefect server pdeflow starts (the ephemeral one of `pdeflow run`) stays local.
    "PREFECT_SERVER_API_HOST": "127.0.0.1",
    # pdeflow's own log lines (pdeflow.stages: repaired blocks, damaged checkpoints) reach the
    # flow run's log in the UI.
    "PREFECT_LOGGING_EXTRA_LOGGERS": "pdeflow",
    # ... and outside a flow run (a stage called directly) they just go to the console.
    "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
    # With the default spinning OpenMP threads, torch ran 15-100x slower whenever another
    # process (a Dask worker, a second job) held one of the cores (measured on 2 cores: a
    # 64-sample solve 4.2 s vs 0.12 s; an FNO batch 2-4 s vs 0.13 s); uncontended speed is
    # unchanged. It must be set before torch loads its OpenMP runtime; Dask workers inherit it.
    "OMP_WAIT_POLICY": "PASSIVE",
}


def configure_environment() -> None:
    """Apply pdeflow's defaults; call before Prefect and torch are imported in a process (the
    CLI's ``main`` and the benchmarks do)."""
    for key, value in _PREFECT_DEFAULTS.items():
        os.environ.setdefault(key, value)


# Seconds to wait for zarr's I/O thread at exit: long enough for a loaded machine, short enough
# that a thread stuck on a dead mount cannot hold the command open.
IO_SETTLE_S = 10.0


def settle_io(timeout: float = IO_SETTLE_S) -> None:
    """Stop zarr's event-loop thread and close its loop before the interpreter exits.

    zarr (3.1) registers an atexit hook that stops its loop, waits 0.2 s for the thread, then
    closes the loop anyway: when the thread has not stopped yet (a callback still running, or
    a loaded machine where the thread does not get the GIL in time), ``loop.close()`` raises
    "Cannot close a running event loop" and Python prints that traceback at exit. Waiting here
    for the thread, then letting zarr clean up, leaves its hook nothing to do. Does nothing if
    zarr was never imported (zarr itself is not imported here: the storage layer owns it).
    """
    sync = sys.modules.get("zarr.core.sync")
    if sync is None or sync.loop[0] is None:
        return
    loop, thread = sync.loop[0], sync.iothread[0]
    if not loop.is_closed():
        loop.call_soon_threadsafe(loop.stop)
    if thread is not None:
        thread.join(timeout)
    if thread is None or not thread.is_alive():
        sync.cleanup_resources()
