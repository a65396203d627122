"""Measurement: data-parallel training (``train_ddp``, gloo, CPU) on 2 Dask ranks against 1.

One LocalCluster of two single-threaded worker processes (Dask starts workers with one OpenMP
thread each) trains the same FNO1d surrogate with the same global batch on one rank and on two;
with two ranks each worker computes half of every batch and the ranks all-reduce the gradients.
A warm-up run on both workers first imports torch and plans the FFTs. The timed runs alternate
between 1 and 2 ranks, so a burst of load from other processes hits both alike; each figure is
the best of ``--repeats``. The time is the slowest rank's epochs (``seconds``), without the
rendezvous and data loading; the call's wall time is printed beside it.

Run: ``python -m benchmarks.ddp_speed`` (``--help`` for the sizes). Prints the ratio
``t(2 ranks) / t(1 rank)``: 0.5 is perfect scaling, 1.0 no gain.
"""

from __future__ import annotations

import argparse
import math
from functools import partial

import torch
from distributed import Client, LocalCluster

from benchmarks.cpumeter import CpuMeter
from pdeflow.tasks.stages.ddp import train_ddp
from pdeflow.tasks.surrogates.ddp import DDPSettings
from pdeflow.tasks.surrogates.fno import FNO1d, OneStepSurrogate


def advection_pairs(n: int, n_x: int, seed: int = 0):
    """Exact periodic advection pairs ``u (n, 1, n_x)``, ``c (n, 1)``, ``u(x - c dt)``, float32."""
    g = torch.Generator().manual_seed(seed)
    x = torch.arange(n_x, dtype=torch.float64) / n_x
    k = torch.arange(1, 5, dtype=torch.float64)
    a, b = (torch.randn(n, 4, generator=g, dtype=torch.float64) / k for _ in range(2))
    c = 0.5 + torch.rand(n, 1, generator=g, dtype=torch.float64)

    def field(shift):
        phase = 2 * math.pi * k[None, :, None] * (x[None, None, :] - shift[:, :, None])
        return (a[:, :, None] * torch.cos(phase) + b[:, :, None] * torch.sin(phase)).sum(1)

    return field(0 * c)[:, None].float(), c.float(), field(0.05 * c)[:, None].float()


def build(n: int, n_x: int, width: int, modes: int) -> OneStepSurrogate:
    g = torch.Generator().manual_seed(0)
    net = FNO1d(1, 1, width=width, modes=modes, n_layers=4, generator=g)
    return OneStepSurrogate.from_data(net, *advection_pairs(n, n_x))


def load(n: int, n_x: int, rank: int, world_size: int):
    return advection_pairs(n, n_x)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-samples", type=int, default=1024)
    parser.add_argument("--n-x", type=int, default=256)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--modes", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    model = partial(build, args.n_samples, args.n_x, args.width, args.modes)
    data = partial(load, args.n_samples, args.n_x)
    settings = DDPSettings(epochs=args.epochs, batch_size=args.batch_size, lr=1e-3)
    times: dict[int, list[dict]] = {1: [], 2: []}
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        warm = DDPSettings(epochs=1, batch_size=args.batch_size)
        train_ddp(
            client,
            partial(build, args.batch_size, args.n_x, args.width, args.modes),
            partial(load, args.batch_size, args.n_x),
            warm,
            n_ranks=2,
        )
        for _ in range(args.repeats):
            for n_ranks in (1, 2):
                with CpuMeter() as meter:
                    out = train_ddp(client, model, data, settings, n_ranks=n_ranks)
                cpu = meter.result["own_cpu_by_process_s"].get("dask", 0.0)
                times[n_ranks].append(
                    {**out, "foreign_share": meter.result["foreign_share"], "worker_cpu_s": cpu}
                )
    best = {k: min(v, key=lambda r: r["seconds"]) for k, v in times.items()}
    ratio = best[2]["seconds"] / best[1]["seconds"]
    print(
        f"FNO1d width {args.width}, modes {args.modes}, 4 layers, n_x {args.n_x}; "
        f"{args.n_samples} pairs, global batch {args.batch_size}, {args.epochs} epochs "
        f"({best[1]['steps']} steps), float32, gloo on CPU, best of {args.repeats}"
    )
    for k, r in best.items():
        print(
            f"  {k} rank(s): epochs {r['seconds']:.2f} s, call {r['wall_seconds']:.2f} s, "
            f"foreign CPU share {r['foreign_share']:.0%}, final loss {r['epoch_losses'][-1]:.5f}"
        )
    print(f"ratio t(2 ranks) / t(1 rank) = {ratio:.3f} (speed-up {1 / ratio:.2f}x)")
    # Under foreign load two ranks cannot have two cores; the workers' CPU seconds show the
    # cost of the split itself: half of the two ranks' CPU over one rank's is the ratio two
    # free cores would give if no rank ever waited on the other.
    cpu_ratio = best[2]["worker_cpu_s"] / 2 / best[1]["worker_cpu_s"]
    print(
        f"worker CPU: 1 rank {best[1]['worker_cpu_s']:.2f} s, 2 ranks "
        f"{best[2]['worker_cpu_s']:.2f} s; CPU-bound ratio on two free cores = {cpu_ratio:.3f}"
    )
    return {"ratio": ratio, "cpu_ratio": cpu_ratio, "best": best}


if __name__ == "__main__":
    main()
