"""What multi-frame history, pushforward training and training noise buy an FNO's rollouts.

Data: pdeflow's own Kuramoto-Sivashinsky solver (``KuramotoSivashinsky``, ETDRK4, its default
length 22 and solver step 0.1, ``nu`` drawn from its own U[0.5, 1.5], on ``N_X`` = 64 points).
Every trajectory starts from ``sum_m a_m cos(m k x) + b_m sin(m k x)``, ``m = 1..3``, amplitudes
uniform in +-1, runs ``BURN_IN`` time units onto the chaotic attractor unrecorded, and is then
recorded every ``FRAME_DT`` time units. Training trajectories hold ``HORIZON`` + 1 frames (the
training horizon T); held-out ones, from other initial states and ``nu``, 2T + 1 frames.

Models: the same FNO (``FNO(1, 1, n_dims=1, history=h)``, width 32, 16 modes, 4 layers, the
same initial-weight seed) inside ``OneStepSurrogate``, trained for the same number of epochs
(AdamW, lr 3e-3 with cosine decay, batch 64) with:

- one-step: pairs of consecutive frames (the baseline);
- pushforward k=3: windows of 4 frames, ``k`` drawn per batch from 1..3 (Brandstetter, Worrall
  & Welling 2022), ``train_epoch(pushforward=3)``;
- noise 1e-2: one-step pairs with Gaussian input noise of 0.01 field standard deviations
  (Sanchez-Gonzalez et al. 2020), ``train_epoch(noise_std=1e-2)``;
- history 4: windows of 5 frames, the model fed the last 4.

Every model is rolled out from the true first ``history`` frames of each held-out trajectory to
2T. Reported: PDEBench nRMSE (``pdeflow.tasks.metrics.nrmse``; the given input frames are
excluded) at t = T and t = 2T, mean over the held-out trajectories, each also as a ratio to
one-step's; and the first time the mean nRMSE exceeds 1 ("none" within 2T). KS is chaotic:
two independent states of the attractor are an nRMSE of about sqrt(2) apart, so nRMSE > 1
past a few Lyapunov times (1 / 0.043, about 23 time units, for length 22) is decorrelation from the
truth, not necessarily instability; the "peak" column tells the two apart with the largest
``max|u|`` of a rollout over that of the truth (about 1 for a rollout that stays on the
attractor, far above 1 for one that blows up).

Measured (30 epochs, 6 weight seeds, ratios per seed to one-step, mean and range): pushforward
k=3 1.03 (0.87-1.21) at T and 1.03 (0.75-1.22) at 2T; noise 1e-2 1.04 (0.85-1.19) and 1.11
(0.83-1.39); history 4 1.33 (1.13-1.44) and 1.25 (1.16-1.44), worse on every seed although its
one-step loss is the lowest (0.0015 against 0.0016). No model blew up: the mean nRMSE stayed
below 1 to 2T (0.47 for one-step) and no rollout's max|u| exceeded 1.11 times the truth's. At
this budget, where one-step rollouts are already stable over 2T, neither pushforward nor noise
bought a measurable gain over the spread between seeds; the first three seeds alone (the default
run, about 5 CPU minutes) suggested 0.89 for pushforward at 2T, which the next three undid.

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.rollout_training [--epochs 30] [--seeds 3]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from pdeflow.tasks.metrics import nrmse
from pdeflow.tasks.pdes import KuramotoSivashinsky
from pdeflow.tasks.surrogates.fno import FNO
from pdeflow.tasks.surrogates.onestep import OneStepSurrogate
from pdeflow.tasks.surrogates.training import (
    evaluate,
    make_optimizer,
    make_scheduler,
    rollout,
    stack_frames,
    train_epoch,
    trajectory_windows,
)

N_X = 64  # the KS docstring: 64 points leave the last kept modes at 2e-4 of the energetic ones
SOLVER_DT, STEPS_PER_FRAME = 0.1, 5
FRAME_DT = SOLVER_DT * STEPS_PER_FRAME
BURN_IN = 50.0  # the attractor is reached by t ~ 20-40 from modes 1-3 (KS docstring)
HORIZON = 40  # training frames after the first: T = 40 frames = 20 time units
N_TRAIN, N_TEST = 64, 32
BATCH = 64
CONFIGS = {
    "one-step": {"history": 1, "pushforward": 1, "noise_std": 0.0},
    "pushforward k=3": {"history": 1, "pushforward": 3, "noise_std": 0.0},
    "noise 1e-2": {"history": 1, "pushforward": 1, "noise_std": 1e-2},
    "history 4": {"history": 4, "pushforward": 1, "noise_std": 0.0},
}


def trajectories(n: int, n_frames: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """KS trajectories ``(n, n_frames, 1, N_X)`` on the attractor and their ``nu`` ``(n, 1)``."""
    rng = np.random.default_rng(seed)
    d = KuramotoSivashinsky.info.defaults
    _, low, high = KuramotoSivashinsky.info.coefficients["nu"].sample
    nu = rng.uniform(low, high, n)
    x = np.arange(N_X) * d.length / N_X
    k = 2 * np.pi / d.length
    a = rng.uniform(-1.0, 1.0, (n, 3, 2))
    u0 = sum(a[:, m - 1, :1] * np.cos(m * k * x) + a[:, m - 1, 1:] * np.sin(m * k * x)
             for m in (1, 2, 3))  # fmt: skip
    pde = KuramotoSivashinsky(N_X, nu=nu, dt=SOLVER_DT, length=d.length)
    burn = round(BURN_IN / SOLVER_DT)
    start = pde.rollout(torch.from_numpy(u0)[:, None], 2, burn)[:, -1]
    u = pde.rollout(start, n_frames, STEPS_PER_FRAME)
    return u.float(), torch.from_numpy(nu).float()[:, None]


def batches(data: tuple[torch.Tensor, ...], gen: torch.Generator):
    """Shuffled mini-batches of the rows of every tensor in ``data``."""
    order = torch.randperm(len(data[0]), generator=gen)
    for rows in order.split(BATCH):
        yield tuple(t[rows] for t in data)


def train(name: str, train_u, train_nu, epochs: int, seed: int):
    """The model of config ``name``, its final training loss and its training seconds."""
    cfg = CONFIGS[name]
    h, k = cfg["history"], cfg["pushforward"]
    pairs_u, pairs_p = trajectory_windows(train_u, train_nu, 2)
    net = FNO(1, 1, n_dims=1, history=h, width=32, modes=16, n_layers=4,
              generator=torch.Generator().manual_seed(seed))  # fmt: skip
    model = OneStepSurrogate.from_data(net, pairs_u[:, 0], pairs_p, pairs_u[:, 1], history=h)
    if h == 1 and k == 1:
        data = (pairs_u[:, 0], pairs_p, pairs_u[:, 1])
    else:
        data = trajectory_windows(train_u, train_nu, h + k)
    optimizer = make_optimizer(model, lr=3e-3, weight_decay=1e-4)
    scheduler = make_scheduler(optimizer, epochs)
    gen = torch.Generator().manual_seed(seed + 1)
    t0 = time.perf_counter()
    for _ in range(epochs):
        loss = train_epoch(model, optimizer, batches(data, gen), pushforward=k,
                           noise_std=cfg["noise_std"], generator=gen)  # fmt: skip
        scheduler.step()
    return model.eval(), loss, time.perf_counter() - t0


def scores(model, test_u, test_nu) -> dict:
    """One-step loss, mean nRMSE at T and 2T, when it first exceeds 1, how many trajectories
    exceed 1 by 2T, and the max|u| ratio."""
    h = model.history
    one_step = evaluate(model, [trajectory_windows(test_u, test_nu, h + 1)])
    pred = rollout(model, stack_frames(test_u[:, :h]), test_nu, test_u.shape[1] - h)
    per_sample = nrmse(pred[:, h:].double().numpy(), test_u[:, h:].double().numpy())[..., 0]
    per_sample = np.concatenate([np.full((len(pred), h), np.nan), per_sample], axis=1)
    err = per_sample.mean(axis=0)  # index = frame; the h input frames are NaN, excluded
    over = np.flatnonzero(~(err[h:] <= 1.0))  # NaN (a non-finite rollout) counts as over
    peak = pred.abs().amax(dim=(1, 2, 3)) / test_u.abs().amax(dim=(1, 2, 3))
    return {
        "one_step": one_step,
        "at_t": err[HORIZON],
        "at_2t": err[2 * HORIZON],
        "blow_up": None if over.size == 0 else (over[0] + h) * FRAME_DT,
        "n_over": int(np.sum(~np.all(per_sample[:, h:] <= 1.0, axis=1))),
        "peak": peak.max().item(),
    }


def _spread(values: list[float], digits: str = ".3f") -> str:
    if len(values) == 1:
        return format(values[0], digits)
    return f"{np.mean(values):{digits}} ({min(values):{digits}}-{max(values):{digits}})"


def table(runs: list[dict[str, dict]]) -> list[str]:
    """Markdown rows: mean over the seeds (min-max), ratios taken per seed against one-step."""
    t = HORIZON * FRAME_DT
    lines = [
        f"| training | one-step loss | nRMSE t=T={t:g} | / one-step | nRMSE t=2T={2 * t:g} "
        f"| / one-step | first t of mean nRMSE > 1 | trajectories > 1 by 2T (of {N_TEST}) "
        "| peak abs(u) / true | train s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in CONFIGS:
        col = {key: [run[name][key] for run in runs] for key in runs[0][name]}
        ratio = {key: _spread([run[name][key] / run["one-step"][key] for run in runs], ".2f")
                 for key in ("at_t", "at_2t")}  # fmt: skip
        if name == "one-step":
            ratio = {"at_t": "1", "at_2t": "1"}
        blow = ", ".join("none" if b is None else f"{b:g}" for b in col["blow_up"])
        lines.append(
            f"| {name} | {_spread(col['one_step'], '.4f')} | {_spread(col['at_t'])} "
            f"| {ratio['at_t']} | {_spread(col['at_2t'])} "
            f"| {ratio['at_2t']} | {blow} | {', '.join(map(str, col['n_over']))} "
            f"| {max(col['peak']):.2f} | {sum(col['seconds']):.0f} |"
        )
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.rollout_training", description=__doc__
    )
    parser.add_argument("--epochs", type=int, default=30, help="epochs per model (default 30)")
    parser.add_argument("--seeds", type=int, default=3, help="initial-weight seeds (default 3)")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    threads = torch.get_num_threads()
    # One torch thread: tiny batches on a shared 2-core machine (see benchmarks.rom_dmd).
    torch.set_num_threads(1)
    try:
        train_u, train_nu = trajectories(N_TRAIN, HORIZON + 1, seed=0)
        test_u, test_nu = trajectories(N_TEST, 2 * HORIZON + 1, seed=1)
        runs = []
        for seed in range(args.seeds):
            runs.append({})
            for name in CONFIGS:
                model, _, seconds = train(name, train_u, train_nu, args.epochs, seed)
                runs[-1][name] = {**scores(model, test_u, test_nu), "seconds": seconds}
                r = runs[-1][name]
                print(f"seed {seed} {name}: nRMSE {r['at_t']:.3f} at T, {r['at_2t']:.3f} at 2T, "
                      f"{seconds:.0f} s", flush=True)  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    print(
        f"\nKS, length 22, {N_X} points, frames {FRAME_DT:g} apart; {N_TRAIN} training "
        f"trajectories of T = {HORIZON} steps, {N_TEST} held-out of 2T; {args.epochs} epochs; "
        f"{args.seeds} weight seeds: mean (min-max); first t and trajectory counts per seed\n"
    )
    print("\n".join(table(runs)))
    omp = os.environ.get("OMP_NUM_THREADS", "unset")
    print(f"\n{time.perf_counter() - t0:.0f} s in all, OMP_NUM_THREADS={omp}")


if __name__ == "__main__":
    main()
