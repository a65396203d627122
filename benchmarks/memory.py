"""Measurement 5: peak memory of generation and of training at N and 4N samples.

Every measurement runs in a fresh interpreter (``python -m benchmarks.memory KIND N STORE``) so
that the peak resident set size (Linux VmHWM) is that measurement's alone. Generation runs its
Dask cluster inside that process (threads, not worker processes) so the workers' memory is
counted too. Training reads the store the generation child wrote: the data is made separately
and only the training is inside the measured process.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import subprocess
import sys
import time

from distributed import Client, LocalCluster

from benchmarks.common import DEMO, ROOT, Goal, Result, fresh_name
from pdeflow.tasks.config import PipelineConfig, load_config
from pdeflow.tasks.stages import run_stage

KINDS = ("generate", "train")


def _peak_mb() -> float:
    """This process's peak resident set size since it started, in MB (1e6 bytes)."""
    try:
        # VmHWM belongs to the address space made at exec. ru_maxrss does not: Linux carries the
        # parent's high-water mark across fork + exec, so a child of a big parent reads big.
        with open("/proc/self/status") as fh:
            line = next(x for x in fh if x.startswith("VmHWM:"))
        return int(line.split()[1]) * 1024 / 1e6
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6


def _config(n_samples: int, store: str) -> PipelineConfig:
    return load_config(
        DEMO, [f"generate.n_samples={n_samples}", "train.epochs=1", f"store={store}"]
    )


def _run_generate(cfg: PipelineConfig) -> None:
    # Threads in this process, not worker processes: the workers' memory must count here.
    with (
        LocalCluster(
            processes=False,
            n_workers=1,
            threads_per_worker=2,
            dashboard_address=None,
            silence_logs=logging.ERROR,
        ) as cluster,
        Client(cluster) as client,
    ):
        run_stage("generate", cfg, client=client)


def _run_train(cfg: PipelineConfig) -> None:
    run_stage("train", cfg)


def child(kind: str, n_samples: int, store: str) -> dict:
    """Run one measurement in this (fresh) process; peak RSS before and after the work, in MB.

    The module's imports (torch, Dask, zarr, Prefect) are done before the baseline is read, so
    the increment is the work's own memory.
    """
    cfg = _config(n_samples, store)
    baseline = _peak_mb()
    t0 = time.perf_counter()
    {"generate": _run_generate, "train": _run_train}[kind](cfg)
    seconds = time.perf_counter() - t0
    return {
        "kind": kind,
        "n": n_samples,
        "baseline_mb": baseline,
        "peak_mb": _peak_mb(),
        "s": seconds,
    }


def measure_child(kind: str, n_samples: int, store: str) -> dict:
    """Run ``child`` in a new interpreter (same environment, repo root as cwd); its report."""
    cmd = [sys.executable, "-m", "benchmarks.memory", kind, str(n_samples), store]
    proc = subprocess.run(cmd, cwd=ROOT, env=os.environ.copy(), capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure(quick: bool) -> list[Result]:
    """Peak RSS of generation and of training at N and 4N samples (N = 64 quick, 256 full)."""
    n = 64 if quick else 256
    stores = {m: fresh_name(f"bench-memory-{m * n}") for m in (1, 4)}
    runs = {kind: {} for kind in KINDS}
    for kind in KINDS:  # generation first: training reads the stores it writes
        for m, store in stores.items():
            runs[kind][m] = measure_child(kind, m * n, store)
    results = []
    for kind in KINDS:
        small, big = runs[kind][1], runs[kind][4]
        inc = {m: r["peak_mb"] - r["baseline_mb"] for m, r in runs[kind].items()}
        results.append(
            Result(
                name=f"peak RSS, {kind}, {4 * n} samples",
                value=big["peak_mb"],
                unit="MB",
                stat="1 run",
                reference=small["peak_mb"],
                reference_label=f"peak RSS of {kind} at {n} samples; ratio = growth for 4x data",
                goal=Goal("<=", 1.20),
                note=f"above the {small['baseline_mb']:.0f} MB after imports: "
                f"+{inc[1]:.0f} MB at {n}, +{inc[4]:.0f} MB at {4 * n} samples",
                details={"runs": runs[kind], "increment_mb": inc},
            )
        )
    return results


if __name__ == "__main__":
    kind_arg, n_arg, store_arg = sys.argv[1:4]
    if kind_arg not in KINDS:
        raise SystemExit(f"kind must be one of {KINDS}, got {kind_arg!r}")
    print(json.dumps(child(kind_arg, int(n_arg), store_arg)))
