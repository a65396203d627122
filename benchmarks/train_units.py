"""Training on the Dask workers: throughput per model, ensemble speed-up, per-unit overhead.

Run alone: ``python -m benchmarks.train_units [--repeats N] [--epochs E]`` (about 15 minutes
on 2 cores with the defaults).

1. Throughput: training samples (one-step pairs) per second of a training epoch, for every
   model of the zoo on the same 1D Burgers data (128 points), one thread, on CPU (and on the
   GPU when torch sees one).
2. Ensemble speed-up: the train stage with ``train.ensemble=4`` on a cluster of 2 single-thread
   workers against 1 worker, interleaved A B A B. Goal: >= 1.7.
3. Unit overhead: one unit trained as a Dask task on a warm 1-worker cluster against the same
   unit trained in this process (``run_stage`` without a client), interleaved. Goal: <= 1.05.

2 and 3 train the demo's model on the demo's data (``flows/configs/demo.yaml``: 512 Burgers
samples, FNO of width 24, batch 64) for ``--epochs`` (default 12, the demo's): the units a user
of the demo trains. A unit has a fixed part (building the model, scoring the validation and
test splits, writing its result: about 0.5 s) that a tiny unit of 2 s would show as overhead.
Every figure is a ratio measured side by side in one run; the share of the CPUs that other
processes used is printed beside it (above 15% the wall times are not comparable).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "configs" / "tiny.yaml"
DEMO = ROOT / "flows" / "configs" / "demo.yaml"
# The throughput rows' model settings.
MODEL = "train={width: 16, modes: 12, n_layers: 3, epochs: 3, batch_size: 64}"


def _foreign_share(fn):
    """Run ``fn``; return its result and the share of the CPUs other processes used."""
    import psutil

    me = psutil.Process()
    kids0 = sum(c.cpu_times().user + c.cpu_times().system for c in me.children(recursive=True))
    own0, total0 = me.cpu_times(), psutil.cpu_times()
    t0 = time.perf_counter()
    out = fn()
    wall = time.perf_counter() - t0
    own1, total1 = me.cpu_times(), psutil.cpu_times()
    kids1 = sum(c.cpu_times().user + c.cpu_times().system for c in me.children(recursive=True))
    busy = (total1.user + total1.system) - (total0.user + total0.system)
    mine = (own1.user + own1.system - own0.user - own0.system) + max(0.0, kids1 - kids0)
    share = max(0.0, busy - mine) / (wall * psutil.cpu_count())
    return out, wall, share


def throughput(models: list[str], device: str) -> list[tuple[str, float]]:
    """Training pairs per second of one epoch, per model, on ``device``."""
    import torch

    from pdeflow.tasks.config import load_config
    from pdeflow.tasks.surrogates.factory import build_model
    from pdeflow.tasks.surrogates.training import make_optimizer, train_epoch

    torch.set_num_threads(1)
    n_x, n_batches, batch = 128, 20, 64
    gen = torch.Generator().manual_seed(0)
    rows = []
    for name in models:
        cfg = load_config(TINY, [f"train.surrogate={name}", f"train.device={device}", MODEL])
        n_p = len(cfg.generate.parameter_names)
        u = torch.randn(n_batches * batch, 1, n_x, generator=gen)
        v = torch.roll(u, 1, -1)
        p = torch.rand(n_batches * batch, n_p, generator=gen)
        cfg = cfg.model_copy(update={"generate": cfg.generate.model_copy(update={"grid": (n_x,)})})
        stats = {"field_mean": [0.0], "field_std": [1.0], "param_mean": [0.5] * n_p,
                 "param_std": [0.3] * n_p, "delta_std": [1.0]}  # fmt: skip
        model = build_model(cfg, stats)
        opt = make_optimizer(model, 1e-3, 0.0)
        batches = [(u[i : i + batch], p[i : i + batch], v[i : i + batch])
                   for i in range(0, len(u), batch)]  # fmt: skip
        train_epoch(model, opt, batches[:2])  # warm-up (allocations, cuDNN choice)
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        train_epoch(model, opt, batches)
        if device == "cuda":
            torch.cuda.synchronize()
        rows.append((name, len(u) / (time.perf_counter() - t0)))
    return rows


def _stage_time(cfg, client) -> float:
    from pdeflow.storage import RunStore
    from pdeflow.tasks.stages import run_stage

    store = RunStore.named(cfg.store)
    with store.lock("benchmark"):  # every repeat trains from scratch
        store.clear_stage("train")
        store.clear_units("train")
    t0 = time.perf_counter()
    run_stage("train", cfg, client=client, overwrite=True)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=12, help="epochs of every unit (1-500)")
    args = parser.parse_args()
    if not 1 <= args.epochs <= 500:
        parser.error(f"--epochs must be in [1, 500], got {args.epochs}")
    tmp = Path(tempfile.mkdtemp(prefix="pdeflow-bench-units-"))
    os.environ["PDEFLOW_RUNS_DIR"] = str(tmp)
    try:
        _run(args.repeats, args.epochs)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _run(repeats: int, epochs: int) -> None:
    import torch
    from distributed import Client, LocalCluster

    from pdeflow.tasks.config import load_config
    from pdeflow.tasks.runtime import use_worker_defaults
    from pdeflow.tasks.stages import run_stage

    use_worker_defaults()  # the clusters below are built here: the workers pdeflow starts

    print("| model | device | training pairs / s (1 thread) |\n|---|---|---|")
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        for name, rate in throughput(["fno", "unet", "transformer", "deeponet"], device):
            print(f"| {name} | {device} | {rate:,.0f} |")

    base = load_config(DEMO, ["store=bench-units", f"train.epochs={epochs}"])
    ens = base.model_copy(update={"train": base.train.model_copy(update={"ensemble": 4})})
    one = base
    kw = {"threads_per_worker": 1, "processes": True, "dashboard_address": None}
    with LocalCluster(n_workers=2, **kw) as lc2, Client(lc2) as c2:
        run_stage("generate", base, client=c2)
        with LocalCluster(n_workers=1, **kw) as lc1, Client(lc1) as c1:
            for c in (c1, c2):  # warm: torch and pdeflow imported on every worker
                c.run(lambda: __import__("pdeflow.tasks.stages.train_units"))
            two_w, one_w, dask_t, local_t, shares = [], [], [], [], []
            for _ in range(repeats):
                for times, cfg, client in (
                    (two_w, ens, c2), (one_w, ens, c1), (dask_t, one, c1), (local_t, one, None)
                ):  # fmt: skip
                    t, _, share = _foreign_share(lambda c=cfg, k=client: _stage_time(c, k))
                    times.append(t)
                    shares.append(share)
    speedup = statistics.median(one_w) / statistics.median(two_w)
    overhead = statistics.median(dask_t) / statistics.median(local_t)
    print(
        "\n| measurement | value | goal |\n|---|---|---|\n"
        f"| ensemble of 4: 1 worker / 2 workers | {speedup:.2f}x "
        f"({statistics.median(one_w):.1f} s / {statistics.median(two_w):.1f} s) | >= 1.7 |\n"
        f"| one unit: Dask worker / in process | {overhead:.3f} "
        f"({statistics.median(dask_t):.2f} s / {statistics.median(local_t):.2f} s) | <= 1.05 |\n"
        f"\nforeign CPU share during the runs: max {max(shares):.0%}, median "
        f"{statistics.median(shares):.0%} (above 15% the ratios are not comparable)"
    )


if __name__ == "__main__":
    main()
