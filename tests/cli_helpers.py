"""Running the ``pdeflow`` CLI in a subprocess, and killing it the way a crash would."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

PDEFLOW = [sys.executable, "-m", "pdeflow.flows.cli"]


def _wide_env() -> dict[str, str]:
    """The environment, with a console wide enough that rich never wraps a line the tests match
    (a long temporary path would otherwise break "NOT intact" across two 80-column lines)."""
    return os.environ | {"COLUMNS": "400"}


def cli(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [*PDEFLOW, *args], capture_output=True, text=True, timeout=timeout, env=_wide_env()
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"pdeflow {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def kill_when(
    args: list[str],
    ready: Callable[[], bool],
    timeout: float = 240,
    freeze: bool = False,
    command: list[str] | None = None,
) -> None:
    """Start ``pdeflow ARGS`` (or ``command + ARGS``) in its own session and SIGKILL the whole
    session once ``ready()``.

    Killing the process group takes the Dask workers and the ephemeral Prefect server with it,
    as a machine crash or an OOM kill of the job would. With ``freeze``, the session is first
    frozen (SIGSTOP) and ``ready()`` asked again: only a state that still holds while nothing
    runs is killed, else the session continues. So the kill lands at the state the test checks,
    however short it lasts.
    """
    proc = subprocess.Popen(
        [*(command or PDEFLOW), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
        env=os.environ.copy(),
    )
    deadline = time.monotonic() + timeout
    try:
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"finished before the kill:\n{proc.stderr.read().decode()}")
            if time.monotonic() > deadline:
                raise AssertionError("kill condition never reached")
            if ready() and not freeze:
                break
            if ready():
                os.killpg(proc.pid, signal.SIGSTOP)
                time.sleep(0.05)  # delivery is asynchronous: let every thread stop first
                if ready():
                    break
                os.killpg(proc.pid, signal.SIGCONT)
            time.sleep(0.02)
    finally:
        with contextlib.suppress(ProcessLookupError):  # it may have exited on its own
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def store_path(runs_dir: Path, name: str) -> Path:
    return runs_dir / name
