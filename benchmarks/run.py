"""Run pdeflow's benchmarks; print one table and write ``bench-out/results.json``.

Usage (from the repository root)::

    .venv/bin/python -m benchmarks.run            # full sizes (make bench)
    .venv/bin/python -m benchmarks.run --quick    # reduced sizes, a few minutes
    .venv/bin/python -m benchmarks.run --only solver io

Every run works in a fresh temporary runs directory and Prefect home, removed at exit, so it
never finds (or leaves) a user's stores, cached task results or flow runs.
"""

from __future__ import annotations

import argparse
import atexit
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

SECTIONS = (
    "solver",
    "exponax",
    "ns3d",
    "io",
    "verify",
    "scaling",
    "memory",
    "throughput",
    "overhead",
    "pipeline",
)
# Wall-time budgets (s) of a whole run: the pipeline section repeats its comparison only while
# the repeat would still end inside the budget (make bench: ~13 min, --quick: ~3 min).
BUDGET_S = {"full": 720.0, "quick": 180.0}
OUT = Path("bench-out") / "results.json"


def isolate_environment() -> Path:
    """Point pdeflow and Prefect at a new temporary directory; call before importing them.

    Returns:
        The directory; it is deleted at interpreter exit.
    """
    base = Path(tempfile.mkdtemp(prefix="pdeflow-bench-"))
    os.environ["PDEFLOW_RUNS_DIR"] = str(base / "runs")
    os.environ["PREFECT_HOME"] = str(base / "prefect")
    # As the CLI does: Prefect's per-run INFO lines would bury the table.
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    # Registered before Prefect starts its server, so it runs after the server's own atexit
    # shutdown (atexit is last-in, first-out) and never pulls the database from under it.
    atexit.register(shutil.rmtree, base, ignore_errors=True)
    return base


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="reduced sizes (about 3 minutes)")
    parser.add_argument(
        "--only", nargs="+", choices=SECTIONS, default=list(SECTIONS), help="sections to run"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra config override for the pipeline comparison (repeatable)",
    )
    parser.add_argument("--out", type=Path, default=OUT, help=f"JSON output (default {OUT})")
    return parser.parse_args(argv)


def sections(args: argparse.Namespace, scratch: Path, deadline: float) -> dict:
    """Each section's callable, importing project modules only now (after the environment)."""
    from benchmarks import (
        exponax_compare,
        memory,
        ns3d,
        overhead,
        pipeline,
        scaling,
        server_throughput,
        solver,
        storage_io,
        verify_cost,
    )

    def prefect() -> list:
        # The server's one-off start-up first, so the pipeline run below does not pay it.
        server = pipeline.measure_server()
        return [*server, *pipeline.measure_pipeline(args.quick, args.overrides, deadline)]

    table = {
        "solver": lambda: solver.measure(args.quick),
        # Needs the bench extra (exponax, JAX): make bench installs it.
        "exponax": lambda: exponax_compare.measure(args.quick),
        "ns3d": lambda: ns3d.measure(args.quick),
        "io": lambda: storage_io.measure(args.quick, scratch / "io"),
        "verify": lambda: verify_cost.measure(args.quick),
        "scaling": lambda: scaling.measure(args.quick),
        "memory": lambda: memory.measure(args.quick),
        "throughput": lambda: server_throughput.measure(args.quick),
        "overhead": lambda: overhead.measure(args.quick),
        # Last: the ephemeral server keeps running services that would disturb later sections.
        "pipeline": prefect,
    }
    return {name: table[name] for name in SECTIONS if name in args.only}


def run_sections(todo: dict) -> tuple[list, dict[str, str], dict[str, dict]]:
    """Run each section, keeping going past a failure.

    Returns:
        (results, tracebacks by section, CPU meter reading by section: wall, own, foreign).
    """
    from benchmarks.cpumeter import CpuMeter

    results, errors, usage = [], {}, {}
    for name, fn in todo.items():
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        rows = []
        with CpuMeter() as meter:
            try:
                rows = fn()
            except Exception:  # one broken section must not hide the others' numbers
                errors[name] = traceback.format_exc()
                print(errors[name], file=sys.stderr, flush=True)
        usage[name] = meter.result
        for row in rows:
            # A row may carry a finer reading (its own runs only); else the section's.
            if row.foreign_share is None:
                row.foreign_share = meter.result["foreign_share"]
        results += rows
        print(
            f"[bench] {name} done in {meter.result['wall_s']:.1f} s; other processes used "
            f"{meter.result['foreign_share']:.0%} of the CPUs meanwhile",
            file=sys.stderr,
            flush=True,
        )
    return results, errors, usage


def _version(package: str) -> str:
    """Installed version of ``package``, or "not installed" (exponax and JAX are optional)."""
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def metadata(args: argparse.Namespace, usage: dict, errors: dict, load: tuple) -> dict:
    """What the numbers were measured on, how long it took, and how busy the machine was."""
    packages = ("torch", "prefect", "distributed", "zarr", "h5py", "numpy", "exponax", "jax")
    return {
        "mode": "quick" if args.quick else "full",
        "pipeline_overrides": args.overrides,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "python": platform.python_version(),
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "versions": {p: _version(p) for p in packages},
        "load_average_before_after": [load, os.getloadavg()],
        "section_cpu": usage,
        "total_seconds": sum(u["wall_s"] for u in usage.values()),
        "foreign_cpu_share": sum(u["foreign_cpu_s"] for u in usage.values())
        / max(sum(u["wall_s"] for u in usage.values()) * (os.cpu_count() or 1), 1e-9),
        "errors": errors,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks; exit status 1 if a section failed (a missed goal is not a failure)."""
    args = parse_args(argv)
    deadline = time.monotonic() + BUDGET_S["quick" if args.quick else "full"]
    scratch = isolate_environment()
    from pdeflow.tasks.environment import configure_environment

    configure_environment()
    from benchmarks.common import table, write_json

    load = os.getloadavg()
    results, errors, usage = run_sections(sections(args, scratch, deadline))
    meta = metadata(args, usage, errors, load)
    write_json(args.out, results, meta)
    print()
    print(
        f"pdeflow benchmarks ({meta['mode']}), {meta['total_seconds']:.0f} s on {meta['cpus']} "
        f"CPUs; other processes used {meta['foreign_cpu_share']:.0%} of them meanwhile"
    )
    print(table(results))
    for name in errors:
        print(f"section {name} FAILED (traceback above)")
    print(f"written: {args.out}")
    return 1 if errors else 0


if __name__ == "__main__":
    # Dask starts worker processes with spawn, which re-imports this module: keep work here.
    sys.exit(main())
