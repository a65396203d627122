"""The temporary Prefect server of a ``pdeflow run`` on a machine with no server configured.

Without a configured API (``PREFECT_API_URL``), Prefect starts a temporary server on a flow's
first API call: uvicorn in a subprocess (``prefect.server.api.server.SubprocessASGIServer``).
It first imports ``prefect.server.api`` in the calling process, some 4 s of imports that on 2
cores held the GIL against the CLI's own imports (config, torch, the flow), and only then starts
the server, which needs 4 s more on its own. A tiny pipeline waited 11.5 s before its first
stage (``python -m benchmarks.overhead``).

Here a bootstrap interpreter is started before the CLI imports anything heavy. It reads
Prefect's settings (the same environment and profile the flow will see) and either says a server
is configured, and exits, or becomes the temporary server itself: it runs, in the same
interpreter (Prefect's settings are imported once), the uvicorn app Prefect's own temporary
server runs (same factory, same ``PREFECT__SERVER_EPHEMERAL`` services, no UI, 127.0.0.1
only). The CLI then points its Prefect client at it through ``PREFECT_API_URL``, before Prefect
is imported in this process, waits for ``/api/health`` just before the flow starts, and stops
the server at exit.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request

# Seconds the server is given to stop on SIGTERM before it is killed (Prefect waits 5).
STOP_TIMEOUT_S = 5.0

_BOOTSTRAP = r"""
import os, sys
from prefect.settings import get_current_settings

settings = get_current_settings()
if settings.api.url or not settings.server.ephemeral.enabled:
    print("configured", flush=True)
    sys.exit(0)
# What Prefect's temporary server sets (SubprocessASGIServer): its services, no UI.
os.environ.update(PREFECT_UI_ENABLED="0", PREFECT__SERVER_EPHEMERAL="1", PREFECT__SERVER_FINAL="1")
print("starting", flush=True)
os.dup2(2, 1)  # the server's own output goes where the CLI's errors go, never into the pipe
import uvicorn

uvicorn.run(
    "prefect.server.api.server:create_app", factory=True, host="127.0.0.1",
    port=int(sys.argv[1]), log_level="error", lifespan="on",
)
"""


class ServerStartError(RuntimeError):
    """The temporary server exited or did not answer in time."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TemporaryServer:
    """A Prefect server for this process's flow run, started at once, stopped at exit.

    ``launch()`` starts the bootstrap. ``settle()`` (before Prefect is imported here) learns
    whether a server is configured; if not, it sets ``PREFECT_API_URL`` to the temporary one.
    ``wait_ready()`` (before the flow's first API call) waits for its health check.
    """

    def __init__(self, proc: subprocess.Popen, port: int):
        self.proc, self.port = proc, port
        self.url: str | None = None  # set by settle() when this server is the run's API
        atexit.register(self.stop)

    @classmethod
    def launch(cls) -> TemporaryServer | None:
        """Start the bootstrap; None when ``PREFECT_API_URL`` is exported (nothing to start)."""
        if os.environ.get("PREFECT_API_URL"):
            return None
        port = _free_port()
        proc = subprocess.Popen(
            [sys.executable, "-c", _BOOTSTRAP, str(port)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            text=True,
        )
        return cls(proc, port)

    def settle(self) -> str | None:
        """Whether this run uses the temporary server: its API URL (now in ``PREFECT_API_URL``
        for this process and its children), or None when Prefect's settings name a server."""
        line = self.proc.stdout.readline().strip() if self.proc.stdout else ""
        if line != "starting":  # "configured", or the bootstrap failed: Prefect decides
            self.stop()
            return None
        self.url = f"http://127.0.0.1:{self.port}/api"
        os.environ["PREFECT_API_URL"] = self.url
        return self.url

    def wait_ready(self, timeout: float | None = None) -> None:
        """Block until the server answers ``/api/health``.

        Raises:
            ServerStartError: the server exited, or did not answer within ``timeout`` seconds
                (default: Prefect's ``PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS``, which
                pdeflow's environment sets to 120).
        """
        if self.url is None:
            return
        if timeout is None:  # Prefect is imported by now: its own setting, env or profile
            from prefect.settings import get_current_settings

            timeout = get_current_settings().server.ephemeral.startup_timeout_seconds
        limit = max(1.0, float(timeout))
        deadline = time.monotonic() + limit
        while True:
            code = self.proc.poll()
            if code is not None:
                raise ServerStartError(
                    f"Prefect's temporary server exited with status {code} before answering "
                    f"(its messages are above); set PREFECT_API_URL to use a running server"
                )
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            if time.monotonic() > deadline:
                self.stop()
                raise ServerStartError(
                    f"Prefect's temporary server did not answer within {limit:.0f} s "
                    "(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS)"
                )
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after ``STOP_TIMEOUT_S``); idempotent."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()
        if self.url is not None and os.environ.get("PREFECT_API_URL") == self.url:
            del os.environ["PREFECT_API_URL"]


@contextlib.contextmanager
def temporary_server_settings():
    """Prefect settings for a run on the temporary server: no flow-run heartbeats, no check of
    the server's API version.

    Heartbeats let a lasting server mark a run Crashed when its process dies
    (``flows.automations``); the temporary server dies with the process, so nobody can read
    them. Their thread sleeps in 1 s steps and the flow's end waits for it: 0.5 s on average
    (measured with py-spy on a tiny pipeline). The version check is a request that cannot fail:
    the server is this interpreter's own Prefect.
    """
    from prefect.context import SettingsContext

    ctx = SettingsContext.get()
    flows = ctx.settings.flows.model_copy(update={"heartbeat_frequency": None})
    client = ctx.settings.client.model_copy(update={"server_version_check_enabled": False})
    settings = ctx.settings.model_copy(update={"flows": flows, "client": client})
    with SettingsContext(profile=ctx.profile, settings=settings):
        yield
