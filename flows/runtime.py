"""Process-wide defaults for Prefect, and the Dask cluster a flow run computes on."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

import psutil

# Offline machines make Prefect's telemetry log errors; no flow needs it. setdefault keeps any
# value the user exported.
_PREFECT_DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_CLOUD_ENABLE_ORCHESTRATION_TELEMETRY": "false",
    "DO_NOT_TRACK": "1",
    # The ephemeral server needs 7-17 s to start on 2 idle cores, over 20 s (Prefect's default
    # limit) on loaded ones; a slow start must not fail the run.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
}


def configure_environment() -> None:
    """Apply pdeflow's Prefect defaults; call before the first Prefect import in a process."""
    for key, value in _PREFECT_DEFAULTS.items():
        os.environ.setdefault(key, value)


configure_environment()

from distributed import Client, LocalCluster  # noqa: E402

from tasks.clusters import ClusterConfig  # noqa: E402


def local_workers(cluster: ClusterConfig) -> int:
    return cluster.n_workers or psutil.cpu_count(logical=False) or os.cpu_count() or 1


@contextmanager
def dask_client(cluster: ClusterConfig) -> Iterator[Client]:
    """A Dask client for one flow run: a fresh LocalCluster, or the scheduler at an address.

    A cluster per flow run is the safer default: attaching many runs to one long-lived scheduler
    leaks scheduler memory (prefect #21697).
    """
    if cluster.kind == "address":
        with Client(cluster.address) as client:
            yield client
        return
    with (
        LocalCluster(
            n_workers=local_workers(cluster),
            threads_per_worker=1,
            processes=True,
            # Any free port: a second run beside the first must not warn about 8787.
            dashboard_address=":0",
            silence_logs=logging.ERROR,
        ) as lc,
        Client(lc) as client,
    ):
        yield client
