"""Measurement 1: throughput of the batched Burgers solver (samples per second)."""

from __future__ import annotations

import math

import torch

from benchmarks.common import Result, repeat, summarise
from pdeflow.tasks.pdes import Burgers
from pdeflow.tasks.pdes.base import Grid

# NOTES.md: a plain eager torch ETDRK2 Burgers solver, B=256, N=1024, 200 steps, float32, on the
# 2-core development machine. pdeflow's solver is ETDRK4 (four nonlinear evaluations per step
# against two), so about half of this is the expected figure, not a miss.
NOTES_SAMPLES_PER_S = 870.0
N_STEPS = 200
N_FRAMES = 11  # 10 frames of 20 steps: the rollout's per-frame checks are part of the cost


def solver_throughput(n_x: int, batch: int, repeats: int = 3) -> tuple[float, str, list[float]]:
    """Samples per second of ``Burgers.rollout`` over ``N_STEPS`` steps, after one warm-up.

    The initial condition is sin(x) (amplitude 1) in every sample, nu = 0.01 per sample, and
    ``dt`` 0.9 of the stability limit for max|u| = 1, on [0, 2 pi).

    Args:
        n_x: Grid points.
        batch: Samples solved together, shape of the state (batch, 1, n_x).
        repeats: Timed calls (fewer if they take over 6 s together); the best is reported.

    Returns:
        (samples/s of the best call, how it was reduced, all wall times in seconds).
    """
    length = 2 * math.pi
    dt = 0.9 * Burgers.max_stable_dt(Grid.uniform(n_x, length, 1), {"nu": 0.01}, 1.0)
    pde = Burgers(n_x, nu=[0.01] * batch, dt=dt, length=length, dtype=torch.float32)
    u0 = torch.sin(pde.x)[None, None].repeat(batch, 1, 1)
    steps_per_frame = N_STEPS // (N_FRAMES - 1)
    # The first FFTs of a new shape are far slower than steady state (NOTES.md).
    pde.rollout(u0, N_FRAMES, steps_per_frame)
    times = repeat(lambda: pde.rollout(u0, N_FRAMES, steps_per_frame), repeats, max_seconds=6.0)
    best, stat = summarise(times, "best")
    return batch / best, stat, times


def measure(quick: bool) -> list[Result]:
    """Solver rows: n_x=1024 against the NOTES figure, and the demo grid n_x=128 against it.

    Args:
        quick: Unused: the solver calls take about a second, so quick mode keeps them.
    """
    del quick
    saved = torch.get_num_threads()
    # The development machine has 2 cores; NOTES' reference was taken with 2 threads as well.
    torch.set_num_threads(2)
    try:
        big, stat_big, t_big = solver_throughput(1024, 256)
        small, stat_small, t_small = solver_throughput(128, 256)
    finally:
        torch.set_num_threads(saved)
    common = {"batch": 256, "steps": N_STEPS, "dtype": "float32", "threads": 2, "nu": 0.01}
    return [
        Result(
            name="solver, n_x=1024, B=256, 200 steps",
            value=big,
            unit="samples/s",
            stat=stat_big,
            reference=NOTES_SAMPLES_PER_S,
            reference_label="NOTES.md: eager torch ETDRK2 (pdeflow: ETDRK4, ~2x the work)",
            details={**common, "n_x": 1024, "seconds": t_big},
        ),
        Result(
            name="solver, n_x=128 (demo grid), B=256",
            value=small,
            unit="samples/s",
            stat=stat_small,
            reference=big,
            reference_label="row above (n_x=1024); the ratio is the speed-up of the demo grid",
            details={**common, "n_x": 128, "seconds": t_small},
        ),
    ]
