"""Measurement: task runs per minute a Prefect server records, on SQLite and on PostgreSQL.

The same flow of N trivial tasks (``task.map`` on Prefect's default thread pool, each task
persisting its result) runs once against each of two ``prefect server start`` processes that
differ only in their database: SQLite (Prefect's default, a file in the server's home) and
PostgreSQL (Debian's package, started for the measurement; ``tests/backends/services.py``). The
flow runs in a subprocess that knows only ``PREFECT_API_URL``, as a served deployment does.

Prefect 3 clients report task-run states as events; the server's task-run recorder writes them
to the database afterwards. So the figure is not the flow's wall time but the time from the
flow's start until the server's API counts all N task runs COMPLETED: what the server took in.
Both are kept in the details, with the servers' start-up (schema migration) times.

Usage (from the repository root)::

    .venv/bin/python -m benchmarks.server_throughput [--tasks 500]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import Result, table
from benchmarks.cpumeter import CpuMeter
from tests.backends.services import postgres_missing, postgres_server
from tests.e2e.prefect_server import api, prefect_server, server_env

N_TASKS = {"full": 500, "quick": 200}
# Recording lags the flow; past this the server is taken to have dropped task runs.
INGEST_TIMEOUT_S = 300
CLIENT_TIMEOUT_S = 600


def client(n_tasks: int) -> dict:
    """Run the flow of ``n_tasks`` trivial tasks on the server at PREFECT_API_URL.

    Returns:
        The flow run's id and the wall-clock (epoch) seconds at which it started and ended.
    """
    from prefect import flow, task
    from prefect.cache_policies import NO_CACHE
    from prefect.context import get_run_context

    # NO_CACHE: every task run computes and writes its result; nothing is skipped as cached.
    @task(persist_result=True, cache_policy=NO_CACHE)
    def trivial(i: int) -> int:
        return i

    @flow(name="bench-server-throughput")
    def many(n: int) -> str:
        trivial.map(range(n)).wait()
        return str(get_run_context().flow_run.id)

    start = time.time()
    flow_run_id = many(n_tasks)
    return {"flow_run_id": flow_run_id, "start": start, "end": time.time()}


def _completed(base: str, flow_run_id: str) -> int:
    body = {
        "task_runs": {
            "flow_run_id": {"any_": [flow_run_id]},
            "state": {"type": {"any_": ["COMPLETED"]}},
        }
    }
    return api(base, "/task_runs/count", body)


def run_against(base: str, home: Path, n_tasks: int) -> dict:
    """The flow in a subprocess against ``base``; then wait until the server counts every run.

    Returns:
        flow_s (the flow's wall time), ingest_s (flow start until all N runs are recorded
        COMPLETED, or the timeout), recorded (task runs counted COMPLETED then).
    """
    env = server_env(home, PREFECT_API_URL=f"{base}/api")
    cmd = [sys.executable, "-m", "benchmarks.server_throughput", "--client", str(n_tasks)]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, env=env, timeout=CLIENT_TIMEOUT_S, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark flow failed:\n{proc.stdout}\n{proc.stderr[-4000:]}")
    run = json.loads(proc.stdout.strip().splitlines()[-1])
    deadline = time.monotonic() + INGEST_TIMEOUT_S
    recorded = _completed(base, run["flow_run_id"])
    while recorded < n_tasks and time.monotonic() < deadline:
        time.sleep(0.25)
        recorded = _completed(base, run["flow_run_id"])
    done = time.time()
    return {
        "flow_s": run["end"] - run["start"],
        "ingest_s": done - run["start"],
        "recorded": recorded,
    }


def _backend(name: str, n_tasks: int, scratch: Path, **db: str) -> dict:
    """Start a server on the given database settings, measure one flow, stop it."""
    home = scratch / name
    t0 = time.monotonic()
    with prefect_server(home, "--no-ui", **db) as base:
        started = time.monotonic() - t0
        # Server, database and flow are all this process's descendants: own CPU.
        with CpuMeter() as meter:
            out = run_against(base, home, n_tasks)
    out["server_start_s"] = started
    out["cpu"] = meter.result
    out["runs_per_min"] = out["recorded"] / out["ingest_s"] * 60
    return out


def _row(name: str, got: dict, n: int, reference: dict | None) -> Result:
    note = (
        f"{got['recorded']}/{n} recorded; flow {got['flow_s']:.1f} s, all recorded after "
        f"{got['ingest_s']:.1f} s; server start-up {got['server_start_s']:.1f} s"
    )
    return Result(
        name=f"task runs recorded by the server, {name} ({n} tasks)",
        value=got["runs_per_min"],
        unit="runs/min",
        stat="1 run",
        reference=None if reference is None else reference["runs_per_min"],
        reference_label="the SQLite row above, same flow, same run"
        if reference
        else "none: the baseline for the PostgreSQL row",
        note=note,
        foreign_share=got["cpu"]["foreign_share"],
        details=got,
    )


def measure(quick: bool) -> list[Result]:
    """SQLite, then PostgreSQL (when installed), the same flow against each."""
    n = N_TASKS["quick" if quick else "full"]
    with tempfile.TemporaryDirectory(prefix="pdeflow-throughput-") as tmp:
        scratch = Path(tmp)
        sqlite = _backend("SQLite", n, scratch)
        rows = [_row("SQLite", sqlite, n, None)]
        missing = postgres_missing()
        if missing is not None:
            rows[0].note += f"; PostgreSQL not measured: {missing}"
            return rows
        with postgres_server("prefect") as pg:
            db = {"PREFECT_API_DATABASE_CONNECTION_URL": pg.url}
            postgres = _backend("PostgreSQL", n, scratch, **db)
        rows.append(_row("PostgreSQL", postgres, n, sqlite))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.server_throughput")
    parser.add_argument("--tasks", type=int, default=N_TASKS["full"], help="task runs per flow")
    parser.add_argument("--quick", action="store_true", help=f"{N_TASKS['quick']} tasks")
    parser.add_argument("--client", type=int, metavar="N", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.client is not None:  # the flow's own process, started by run_against
        print(json.dumps(client(args.client)))
        return
    if not args.quick:
        N_TASKS["full"] = args.tasks
    print(table(measure(args.quick)))


if __name__ == "__main__":
    main()
