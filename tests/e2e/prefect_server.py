"""A real ``prefect server start`` in a subprocess: free port, own PREFECT_HOME, clean kill."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

PREFECT = [sys.executable, "-m", "prefect"]
# A fresh SQLite database is migrated on first start: 10-20 s on 2 idle cores, over 60 s seen on
# loaded ones.
STARTUP_TIMEOUT_S = 180


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment of a server (or client) that uses ``home`` and no profile settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        {
            "PREFECT_HOME": str(home),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "1",
            "PREFECT_LOGGING_LEVEL": "WARNING",
            **extra,
        }
    )
    return env


def wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    """Poll ``url/api/health`` (open without auth) until it answers or the server dies."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"prefect server exited ({proc.returncode}):\n{log.read_text()}")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(f"{url}/api/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        time.sleep(0.25)
    raise AssertionError(f"prefect server not healthy after {timeout:.0f} s:\n{log.read_text()}")


@contextlib.contextmanager
def prefect_server(home: Path, *args: str, **env: str) -> Iterator[str]:
    """Run ``prefect server start ARGS`` on 127.0.0.1 and a free port; yield its base URL.

    The server gets its own session so that killing its process group at exit takes any
    process it started with it.
    """
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = home / "server.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [*PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port), *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            # The UI asks /ui-settings for the API URL, built from these settings, not from the
            # --port flag: without them the browser calls port 4200.
            env=server_env(
                home,
                PREFECT_SERVER_API_HOST="127.0.0.1",
                PREFECT_SERVER_API_PORT=str(port),
                **env,
            ),
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc, log, STARTUP_TIMEOUT_S)
        yield url
    finally:
        stop_group(proc)


def stop_group(proc: subprocess.Popen, grace: float = 10) -> None:
    """SIGTERM the process group, then SIGKILL what is left after ``grace`` seconds."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def request(url: str, method: str = "GET", auth: tuple[str, str] | None = None) -> int:
    """HTTP status of one request with an empty JSON body for POST (errors included)."""
    import base64

    data = b"{}" if method == "POST" else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code


def api(base: str, path: str, body: dict | None = None, method: str | None = None):
    """JSON of one API call; POST when ``body`` is given."""
    import json

    data = None if body is None else json.dumps(body).encode()
    # A loaded server (SQLite under a parallel test run) answers 503 for a moment: retry those.
    for attempt in range(6):
        req = urllib.request.Request(f"{base}/api{path}", data=data, method=method)
        req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as err:
            if err.code != 503 or attempt == 5:
                raise
            time.sleep(0.5 * 2**attempt)


@contextlib.contextmanager
def pdeflow_serve(
    base: str,
    home: Path,
    runs: Path,
    *args: str,
    names: set[str],
    timeout: float = 300,
    log_name: str = "serve.log",
    **extra_env: str,
) -> Iterator[subprocess.Popen]:
    """Run ``pdeflow serve ARGS`` against the server at ``base`` until ``names`` are ready.

    A deployment is READY once the serving process polls for its runs. ``extra_env`` is added
    to the serving process's environment; its output goes to ``home/log_name``.
    """
    log = home / log_name
    env = server_env(
        home,
        PREFECT_API_URL=f"{base}/api",
        PDEFLOW_RUNS_DIR=str(runs),
        **extra_env,
    )
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pdeflow.flows.cli", "serve", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise AssertionError(
                    f"pdeflow serve exited ({proc.returncode}):\n{log.read_text()}"
                )
            ready = {
                d["name"] for d in api(base, "/deployments/filter", {}) if d["status"] == "READY"
            }
            if names <= ready:
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"deployments {names - ready} not ready:\n{log.read_text()}")
            time.sleep(1)
        yield proc
    finally:
        stop_group(proc, grace=30)
