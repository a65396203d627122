"""Measurement: pdeflow's solvers side by side with exponax (JAX) on the same problems.

For each case both libraries solve the same equation with the same coefficients, domain, grid,
time step, number of steps, recorded frames, batch, dtype (float32) and integrator (ETDRK4,
exponax ``order=4``), from the same initial state, with the same thread count. The two
trajectories are compared (relative L2 difference over all frames) before any time is
reported: a speed ratio of two different computations would mean nothing.

Matched details, each checked against exponax 0.2.0's source:

- Dealiasing: exponax keeps the modes ``|m| <= f * (n // 2) - 1`` (``dealiasing_fraction``
  ``f``), pdeflow those with ``3 |m| < n``. ``_dealiasing_fraction`` picks the ``f`` that keeps
  the same set (for ``f = 2/3`` exponax drops one mode more). The initial states lie in that
  span, so the state's cut modes are zero in both and stay zero.
- Burgers: ``exponax.stepper.Burgers(conservative=True, convection_scale=1)`` evaluates
  :math:`-\\tfrac12 (u^2)_x`, the form pdeflow uses.
- Kuramoto-Sivashinsky: ``KuramotoSivashinskyConservative`` with ``second_order_scale = 1``,
  ``fourth_order_scale = nu``: :math:`u_t + \\tfrac12 (u^2)_x + u_{xx} + \\nu u_{xxxx} = 0`.
- Navier-Stokes: ``NavierStokesVorticity`` takes the stream function as :math:`\\Delta^{-1}
  \\omega` and the velocity as :math:`(\\psi_y, -\\psi_x)`, the velocity of :math:`-\\omega`;
  ``vorticity_convection_scale = -1`` turns it into pdeflow's :math:`\\partial_t \\omega +
  \\mathbf u \\cdot \\nabla \\omega = \\nu \\Delta \\omega` (``drag = 0`` in both).
- Time stepping: both record ``n_frames`` frames ``steps_per_frame`` steps apart, exponax by
  its documented pattern ``rollout(RepeatedStepper(stepper, k), ...)`` (sub-steps in Fourier
  space), ``jax.vmap`` over the batch, the whole rollout under one ``jax.jit``. pdeflow's
  rollout also checks every frame (finite values, CFL number), work exponax does not do.

Timing: each library in a fresh process of its own (XLA's thread pool spin-waits after a call
and would slow torch's threads in a shared process, and the other way round), two such
processes per library, alternating; in each, one warm-up call (JIT compilation, FFT plans) and
then a few timed calls; the median wall time over all of them. The CPU time of the same calls is
recorded too (the work done, less disturbed by other processes on a shared machine).

Threads: each timing process is pinned (``os.sched_setaffinity``) to the CPUs it may use before
JAX starts, so XLA's thread pool and ``torch.set_num_threads`` get the same cores: one CPU (the
goal's row: per-core throughput, what pdeflow's one-thread-per-core workers multiply), then two.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import statistics
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version

import numpy as np
import torch

from benchmarks.common import Goal, Result, timed

# One CPU each is the goal's row: pdeflow generates data with one single-threaded Dask worker per
# core, and XLA's CPU backend runs these rollouts at the same speed on one CPU as on two
# (measured: 351 vs 353 samples/s for Burgers), so per-core throughput is what a machine
# multiplies. Two CPUs, two threads each, is reported beside it.
THREAD_COUNTS = (1, 2)
GOAL = Goal(">=", 1.5)  # issue: pdeflow at least 1.5x exponax's throughput on CPU
AGREEMENT_TOL = 1e-3  # relative L2 difference of the float32 trajectories
REPEATS = 5
MAX_SECONDS = 20.0  # per library and case: fewer repeats once the timed calls took this long


@dataclass(frozen=True)
class Case:
    """One problem: sizes, and what each library needs to solve it.

    Attributes:
        name: Row name.
        batch: Samples solved together.
        n: Grid points (per side in 2D).
        n_frames: Frames recorded, the initial state included.
        steps_per_frame: Steps between frames; ``(n_frames - 1) * steps_per_frame`` in all.
        dt: Time step.
        setup: Case parameters for the details.
    """

    name: str
    batch: int
    n: int
    n_frames: int
    steps_per_frame: int
    dt: float
    setup: dict

    @property
    def n_steps(self) -> int:
        return (self.n_frames - 1) * self.steps_per_frame


def _dealiasing_fraction(n: int) -> float:
    """exponax's ``dealiasing_fraction`` that keeps exactly pdeflow's modes ``3 |m| < n``.

    exponax keeps ``|m| <= f * (n // 2) - 1``; with ``m_max = (n - 1) // 3`` the fraction puts
    that bound half-way between ``m_max`` and ``m_max + 1``.
    """
    return ((n - 1) // 3 + 1.5) / (n // 2)


def _smooth_1d(batch: int, n: int, length: float, n_modes: int, seed: int) -> torch.Tensor:
    """Random sums of the first ``n_modes`` Fourier modes, each sample scaled to max|u| = 1.

    Returns:
        States of shape (batch, 1, n), float32.
    """
    rng = np.random.default_rng(seed)
    x = np.arange(n) * (length / n)
    m = np.arange(1, n_modes + 1)[:, None]
    amp = rng.normal(size=(batch, n_modes, 1)) / m
    phase = rng.uniform(0, 2 * math.pi, size=(batch, n_modes, 1))
    u = (amp * np.sin(2 * math.pi * m * x / length + phase)).sum(axis=1)
    u /= np.abs(u).max(axis=1, keepdims=True)
    return torch.from_numpy(u[:, None]).to(torch.float32)


def cases(quick: bool) -> list[Case]:
    """Burgers and KS at batch 256, n = 1024, 200 steps; NS at 128^2 (smaller with ``quick``)."""
    from pdeflow.tasks.pdes.base import Grid
    from pdeflow.tasks.pdes.burgers import Burgers

    batch_1d, n_1d, batch_2d = (64, 256, 4) if quick else (256, 1024, 16)
    frames_1d = (11, 20)  # 200 steps, a frame every 20
    frames_2d = (6, 4) if quick else (11, 10)
    grid = Grid.uniform(n_1d, 2 * math.pi, 1)
    burgers_dt = 0.9 * Burgers.max_stable_dt(grid, {"nu": 0.01}, 1.0)
    return [
        Case(
            "Burgers 1D",
            batch_1d,
            n_1d,
            *frames_1d,
            burgers_dt,
            {"length": 2 * math.pi, "nu": 0.01, "initial": "4 random modes, max|u| = 1"},
        ),
        Case(
            "Kuramoto-Sivashinsky 1D",
            batch_1d,
            n_1d,
            *frames_1d,
            0.25,
            {"length": 32 * math.pi, "nu": 1.0, "initial": "8 random modes, max|u| = 1"},
        ),
        Case(
            "Navier-Stokes 2D",
            batch_2d,
            128,
            *frames_2d,
            0.01,
            {"length": 1.0, "nu": 1e-3, "initial": "NavierStokes2D.initial_condition"},
        ),
    ]


def _ours(case: Case) -> tuple[Callable, torch.Tensor]:
    """pdeflow's float32 rollout and the initial state, (batch, 1, *space)."""
    from pdeflow.tasks.pdes.base import Grid
    from pdeflow.tasks.pdes.burgers import Burgers
    from pdeflow.tasks.pdes.kuramoto_sivashinsky import KuramotoSivashinsky
    from pdeflow.tasks.pdes.navier_stokes2d import NavierStokes2D

    s, f32 = case.setup, torch.float32
    if case.name.startswith("Burgers"):
        pde = Burgers(case.n, nu=s["nu"], dt=case.dt, length=s["length"], dtype=f32)
        u0 = _smooth_1d(case.batch, case.n, s["length"], 4, seed=0)
    elif case.name.startswith("Kuramoto"):
        pde = KuramotoSivashinsky(case.n, nu=s["nu"], dt=case.dt, length=s["length"], dtype=f32)
        u0 = _smooth_1d(case.batch, case.n, s["length"], 8, seed=1)
    else:
        pde = NavierStokes2D(case.n, nu=s["nu"], dt=case.dt, length=s["length"], dtype=f32)
        grid = Grid.uniform(case.n, s["length"], 2)
        u0 = NavierStokes2D.initial_condition(grid, np.arange(case.batch), dtype=f32)
    return (lambda u: pde.rollout(u, case.n_frames, case.steps_per_frame)), u0


def _theirs(case: Case) -> Callable:
    """exponax's jitted, batched float32 rollout of the same problem (pdeflow's ``u0`` in)."""
    import exponax
    import jax.numpy as jnp

    s = case.setup
    common = {"order": 4, "dealiasing_fraction": _dealiasing_fraction(case.n)}
    if case.name.startswith("Burgers"):
        ref = exponax.stepper.Burgers(
            1, s["length"], case.n, case.dt, diffusivity=s["nu"], convection_scale=1.0,
            conservative=True, **common,
        )  # fmt: skip
    elif case.name.startswith("Kuramoto"):
        ref = exponax.stepper.KuramotoSivashinskyConservative(
            1, s["length"], case.n, case.dt, convection_scale=1.0, second_order_scale=1.0,
            fourth_order_scale=s["nu"], conservative=True, **common,
        )  # fmt: skip
    else:
        ref = exponax.stepper.NavierStokesVorticity(
            2, s["length"], case.n, case.dt, diffusivity=s["nu"], drag=0.0,
            vorticity_convection_scale=-1.0, **common,
        )  # fmt: skip
    rollout = _exponax_rollout(case, ref)
    return lambda u: rollout(jnp.asarray(u.numpy()))


def _exponax_rollout(case: Case, stepper: object) -> Callable:
    """The jitted, batched exponax rollout: (batch, 1, *space) -> (batch, n_frames, 1, *space)."""
    import exponax
    import jax

    sub = exponax.RepeatedStepper(stepper, case.steps_per_frame)
    trajectory = exponax.rollout(sub, case.n_frames - 1, include_init=True)
    fn = jax.jit(jax.vmap(trajectory))
    return lambda u: jax.block_until_ready(fn(u))


def _time_alone(library: str, case: Case, threads: int) -> list[tuple[float, float]]:
    """(wall, CPU) seconds of ``REPEATS // 2 + 1`` calls of one library, after a warm-up.

    Runs in a fresh process of its own (see ``_isolated_times``), pinned to ``threads`` CPUs
    before JAX starts: XLA's threads spin-wait after each call, and torch's would take cycles
    from JAX's; neither library should pay for the other's thread pool.
    """
    with _threads(threads):
        if library == "pdeflow":
            fn, u0 = _ours(case)
        else:
            fn, u0 = _theirs(case), _ours(case)[1]
        fn(u0)  # warm-up: JIT compilation, FFT plans
        times = []
        for _ in range(REPEATS // 2 + 1):
            cpu = time.process_time()
            wall = timed(lambda: fn(u0))[0]
            times.append((wall, time.process_time() - cpu))
            if sum(w for w, _ in times) > MAX_SECONDS:
                break
        return times


def _isolated_times(case: Case, threads: int) -> dict[str, list[tuple[float, float]]]:
    """Both libraries timed in fresh processes, alternating twice (pdeflow, exponax, ...).

    Alternating spreads a burst of load from other processes over both libraries; fresh
    processes keep each library's thread pool from competing with the other's.
    """
    ctx = multiprocessing.get_context("spawn")
    times: dict[str, list[tuple[float, float]]] = {"pdeflow": [], "exponax": []}
    with ProcessPoolExecutor(max_workers=1, mp_context=ctx, max_tasks_per_child=1) as pool:
        for _ in range(2):
            for name in times:
                times[name] += pool.submit(_time_alone, name, case, threads).result()
    return times


def _wall(times: dict[str, list[tuple[float, float]]]) -> float:
    return sum(wall for runs in times.values() for wall, _ in runs)


def compare(case: Case) -> list[Result]:
    """Solve ``case`` with both libraries, check they agree, time both; a row per thread count.

    Returns:
        Rows with pdeflow's samples/s as value and exponax's as reference: one CPU each (the
        goal's row), then two.

    Raises:
        AssertionError: If the trajectories differ by more than ``AGREEMENT_TOL``.
    """
    ours, u0 = _ours(case)
    theirs = _theirs(case)
    a = ours(u0).numpy().astype(np.float64)
    b = np.asarray(theirs(u0), dtype=np.float64).reshape(a.shape)
    diff = float(np.linalg.norm(a - b) / np.linalg.norm(b))
    final = a[:, -1] - b[:, -1]
    worst = float(
        (
            np.linalg.norm(final.reshape(case.batch, -1), axis=1)
            / np.linalg.norm(b[:, -1].reshape(case.batch, -1), axis=1)
        ).max()
    )
    if not diff < AGREEMENT_TOL:
        raise AssertionError(f"{case.name}: pdeflow and exponax differ by {diff:.2e} (rel. L2)")
    return [_row(case, u0, diff, worst, threads) for threads in THREAD_COUNTS]


def _row(case: Case, u0: torch.Tensor, diff: float, worst: float, threads: int) -> Result:
    times = _isolated_times(case, threads)
    wall = {name: statistics.median(w for w, _ in runs) for name, runs in times.items()}
    cpu = {name: statistics.median(c for _, c in runs) for name, runs in times.items()}
    space = f"{case.n}" if u0.ndim == 3 else f"{case.n}^2"
    return Result(
        name=(
            f"{case.name} vs exponax, n={space}, B={case.batch}, {case.n_steps} steps, "
            f"{threads} CPU{'s' if threads > 1 else ''}"
        ),
        value=case.batch / wall["pdeflow"],
        unit="samples/s",
        stat=f"median of {len(times['pdeflow'])}",
        reference=case.batch / wall["exponax"],
        reference_label=(
            f"exponax {version('exponax')} (jax {version('jax')}, jit + vmap), same equation, "
            "grid, dt, steps, float32, ETDRK4"
        ),
        goal=GOAL if threads == 1 else None,
        note=(
            f"rel. L2 difference pdeflow - exponax over all frames {diff:.1e} (worst sample, "
            f"last frame {worst:.1e}); {threads} thread(s) each; CPU seconds per call pdeflow "
            f"{cpu['pdeflow']:.2f}, exponax {cpu['exponax']:.2f} (ratio "
            f"{cpu['exponax'] / cpu['pdeflow']:.2f})"
        ),
        details={
            "batch": case.batch,
            "n": case.n,
            "dims": u0.ndim - 2,
            "dt": case.dt,
            "steps": case.n_steps,
            "n_frames": case.n_frames,
            "steps_per_frame": case.steps_per_frame,
            "dtype": "float32",
            "integrator": "ETDRK4 (exponax order=4)",
            "threads": threads,
            "rel_l2_difference": diff,
            "worst_sample_last_frame_rel_l2": worst,
            "pdeflow_seconds": [w for w, _ in times["pdeflow"]],
            "exponax_seconds": [w for w, _ in times["exponax"]],
            "pdeflow_cpu_seconds": [c for _, c in times["pdeflow"]],
            "exponax_cpu_seconds": [c for _, c in times["exponax"]],
            "cpu_ratio_exponax_over_pdeflow": cpu["exponax"] / cpu["pdeflow"],
            **case.setup,
        },
    )


@contextmanager
def _threads(n: int) -> Iterator[None]:
    """Pin this process to ``n`` of its CPUs and torch to ``n`` threads; restore both after.

    XLA sizes its CPU thread pool from the schedulable CPUs when JAX's backend starts, so this
    must be entered before JAX's first computation in the process.
    """
    saved_threads = torch.get_num_threads()
    saved_cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    if saved_cpus is not None and len(saved_cpus) > n:
        os.sched_setaffinity(0, sorted(saved_cpus)[:n])
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(saved_threads)
        if saved_cpus is not None:
            os.sched_setaffinity(0, saved_cpus)


def measure(quick: bool) -> list[Result]:
    """One row per case: pdeflow's samples/s against exponax's (goal: ratio >= 1.5).

    Args:
        quick: Smaller batches and grids (seconds instead of minutes); not comparable with
            the issue's sizes.

    Raises:
        ImportError: If exponax or JAX is missing (``pip install -e ".[bench]"``).
    """
    try:
        version("exponax")
        version("jax")
    except PackageNotFoundError as err:
        raise ImportError(
            'the exponax comparison needs the bench extra: pip install -e ".[bench]" '
            "(make bench installs it)"
        ) from err
    with _threads(max(THREAD_COUNTS)):
        return [row for case in cases(quick) for row in compare(case)]
