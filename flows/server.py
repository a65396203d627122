"""``pdeflow server start``: a Prefect server whose UI talks to its own API, on any port.

``prefect server start --port 4299`` alone serves a UI that calls ``http://127.0.0.1:4200/api``
("Can't connect to Server API"): the UI asks the server's ``/ui-settings`` for its API URL, and the
server builds that from ``PREFECT_UI_API_URL``, else ``PREFECT_API_URL``, else
``PREFECT_SERVER_API_HOST`` and ``PREFECT_SERVER_API_PORT`` (prefect/settings/models/root.py), never
from the ``--port`` flag. A ``PREFECT_API_URL`` exported for clients in the same shell (say, for a
server on 4200) would win too. So this starts ``prefect server start`` with all three set from
``--host`` and ``--port``; a ``PREFECT_UI_API_URL`` already in the environment is kept, as the
address a browser reaches through a proxy or a published container port.

Once the server answers, the crash-detection automation is created or updated on it
(:mod:`pdeflow.flows.automations`), so a run whose process dies shows Crashed and can be retried.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping

# A fresh SQLite database is migrated on first start: 10-20 s on 2 idle cores, a minute loaded.
STARTUP_TIMEOUT_S = 300
_WILDCARD_HOSTS = {"0.0.0.0", "::", ""}


def _url_host(host: str) -> str:
    """The host a browser on this machine uses for ``host``: loopback for a wildcard bind."""
    if host in _WILDCARD_HOSTS:
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def server_environment(host: str, port: int, environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` with the settings that make the UI call the API at ``host:port``.

    Args:
        host: the address the server binds; a wildcard (0.0.0.0, ::) gives the UI 127.0.0.1.
        port: the server's port, 1 to 65535.
        environ: the environment to start from (usually ``os.environ``).

    Raises:
        ValueError: a port out of range, naming ``--port``.
    """
    if not 1 <= port <= 65535:
        raise ValueError(f"--port: must be in 1..65535 (got {port})")
    env = dict(environ)
    local = f"http://{_url_host(host)}:{port}/api"
    env["PREFECT_SERVER_API_HOST"] = host
    env["PREFECT_SERVER_API_PORT"] = str(port)
    if not (env.get("PREFECT_UI_API_URL") or env.get("PREFECT_SERVER_UI_API_URL")):
        env["PREFECT_UI_API_URL"] = local
    return env


def ui_api_url(env: Mapping[str, str]) -> str:
    """The API URL the UI will call, from a :func:`server_environment`."""
    return env.get("PREFECT_UI_API_URL") or env["PREFECT_SERVER_UI_API_URL"]


def _wait_healthy(api: str, proc: subprocess.Popen, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(f"{api}/health", timeout=2) as resp:
                if resp.status == 200:
                    return True
        time.sleep(0.5)
    return False


def _client_settings(api: str, env: Mapping[str, str]) -> dict:
    """Prefect client settings for the server at ``api``, with its basic-auth string if any."""
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL

    settings = {PREFECT_API_URL: api}
    if env.get("PREFECT_SERVER_API_AUTH_STRING"):
        settings[PREFECT_API_AUTH_STRING] = env["PREFECT_SERVER_API_AUTH_STRING"]
    return settings


def _ensure_crash_detection(api: str, env: Mapping[str, str]) -> str:
    """Create or update the automation on the server at ``api``; the line to print."""
    from prefect.client.orchestration import get_client
    from prefect.settings import temporary_settings

    from pdeflow.flows import automations

    with temporary_settings(_client_settings(api, env)), get_client(sync_client=True) as client:
        heartbeat = automations.heartbeat_seconds()
        _, done = automations.ensure_crash_detection(client, heartbeat)
    return (
        f"crash detection {done}: a pdeflow run without a heartbeat for "
        f"{automations.MISSED_PERIODS * heartbeat} s is marked Crashed (flow runs need "
        f"PREFECT_FLOWS_HEARTBEAT_FREQUENCY={heartbeat}; `pdeflow serve` sets it)"
    )


def _start_crash_detection(api: str, env: Mapping[str, str]):
    """The automation, and a watcher of task runs left Running by dead attempts (work-pool runs
    have no ``pdeflow serve`` to watch them); None if the server refused."""
    from pdeflow.flows.automations import OrphanWatcher

    try:
        print(_ensure_crash_detection(api, env), flush=True)
    except Exception as err:  # the server stays useful without it
        print(f"warning: crash detection not set up: {err}", file=sys.stderr)
        return None
    return OrphanWatcher(settings=_client_settings(api, env)).start()


def start(port: int = 4200, host: str = "127.0.0.1", crash_detection: bool = True) -> int:
    """Run ``prefect server start`` on ``host:port`` with a UI that calls that API; block.

    Ctrl-C and SIGTERM stop the server. Prints the URLs to open and to export for clients.

    Args:
        port: the port of the UI and the API.
        host: the address to bind; the default, loopback, keeps the server private.
        crash_detection: once the server answers, create or update pdeflow's crash-detection
            automation and watch for task runs that dead attempts left Running.

    Returns:
        The server's exit status.

    Raises:
        ValueError: a port out of range (the message names ``--port``).
    """
    env = server_environment(host, port, os.environ)
    api = f"http://{_url_host(host)}:{port}/api"
    proc = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", host, "--port", str(port)],
        env=env,
    )
    watcher = None
    # docker stop and scancel signal this process only: pass it on.
    signal.signal(signal.SIGTERM, lambda signum, _frame: proc.send_signal(signum))
    try:
        if _wait_healthy(api, proc, STARTUP_TIMEOUT_S):
            print(
                f"\nUI: {api.removesuffix('/api')}  (it calls {ui_api_url(env)})\n"
                f"clients: export PREFECT_API_URL={api}",
                flush=True,
            )
            if crash_detection:
                watcher = _start_crash_detection(api, env)
        while True:
            try:
                return proc.wait()
            except KeyboardInterrupt:
                # The terminal sent SIGINT to the server too; let it shut down cleanly.
                continue
    finally:
        if watcher is not None:
            watcher.stop()
        if proc.poll() is None:
            proc.terminate()
            proc.wait()
