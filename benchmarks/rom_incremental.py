"""Incremental POD: adding N/8 snapshots to a basis of N against recomputing it on N + N/8.

A scheduled run that extends its store by N/8 samples can update the stored POD from the new
snapshots alone (``pdeflow.tasks.rom.incremental.IncrementalPOD``, Brand 2006) instead of
recomputing the SVD of all of them. Measured here, side by side in one run:

1. Synthetic snapshots, 16384 features (a 128 x 128 field), a spectrum decaying like
   ``exp(-j / 8)`` over 200 modes above a noise floor of 1e-5 (energy 0.9999 needs ~37 modes):
   the update of a basis of N = 2048 by N/8 = 256 snapshots against the thin SVD of all 2304
   that ``POD.fit`` computes (scipy's gesdd, as the reduce stage's numpy path), and how close
   the two bases are: the largest principal angle of the POD modes, its Davis-Kahan bound,
   the singular values, and the projection error of 128 held-out snapshots under each.
2. The update of the same 256 new snapshots on bases of N = 1024, 2048 and 4096 old ones
   (flat in N), and of 256, 512 and 1024 new ones on N = 2048 (linear in the new ones),
   the cases taking turns so that the shared machine's load hits them alike.
3. Burgers trajectories (n_x = 256, 11 frames), 2048 of them then 256 more, a tall snapshot
   matrix like the reduce stage's 1D runs: the update against the thin SVD by scipy and by
   Dask's tall-skinny QR (``da.linalg.svd``, the stage's ``svd: tsqr``).

The old bases are themselves built incrementally (the default blocks: 64 rows at 16384
features), so the accuracy figures include the truncations of every earlier update, not only
the last one.

Usage: ``OMP_NUM_THREADS=2 .venv/bin/python -m benchmarks.rom_incremental [--quick]``
(64 s on the 2-core development machine with no other load, 11 min with other processes
taking half of it; ``--quick``: N = 512, 8192 features, 7 s).
"""

from __future__ import annotations

import argparse
import math
import os
import time

import numpy as np
import torch
from scipy.linalg import subspace_angles

from benchmarks.common import Goal, Result, summarise, table, timed
from benchmarks.cpumeter import CpuMeter
from pdeflow.tasks.pdes import Burgers
from pdeflow.tasks.rom.incremental import IncrementalPOD
from pdeflow.tasks.rom.pod import POD

ENERGY = 0.9999
BUFFER = 10
N_HELD = 128
# Why the Burgers rows carry no goal: with fewer features than kept modes plus new rows, both
# the update and the full SVD cost ~n_features^2 per snapshot, so the update cannot fall much
# below the new snapshots' share of all of them, 1/9.
NARROW = (
    "; narrow snapshots: both costs are linear in the rows, so the share of new rows (1/9) "
    "bounds the ratio from below"
)


def synthetic(n: int, n_features: int, seed: int) -> np.ndarray:
    """Snapshots ``mean + c @ phi + noise``, shape (n, n_features), float64.

    200 orthonormal random modes ``phi`` with coefficient standard deviations ``exp(-j / 8)``
    (the exponential decay of a diffusion-dominated field) plus white noise of 1e-5, so the
    matrix has full rank like real data.
    """
    rng = np.random.default_rng(seed)
    phi = np.linalg.qr(rng.standard_normal((n_features, 200)))[0].T
    coeffs = rng.standard_normal((n, 200)) * np.exp(-np.arange(200) / 8)
    mean = np.sin(np.linspace(0, 2 * np.pi, n_features))
    return mean + coeffs @ phi + 1e-5 * rng.standard_normal((n, n_features))


def burgers(n_samples: int, n_x: int, seed: int) -> np.ndarray:
    """Burgers snapshots (n_samples * 11, n_x): 11 frames to t = 1, demo-like parameters.

    Initial states sum modes 1-3 with amplitudes uniform in [-0.5, 0.5]; viscosities are
    log-uniform in [0.05, 0.5]; dt = 0.005 is well inside the stability limit at n_x = 256.
    """
    rng = np.random.default_rng(seed)
    nu = np.exp(rng.uniform(np.log(0.05), np.log(0.5), n_samples))
    x = np.arange(n_x) * (2 * math.pi / n_x)
    k = np.arange(1, 4)
    amp = rng.uniform(-0.5, 0.5, (n_samples, 3, 2))
    u0 = amp[..., 0] @ np.cos(np.outer(k, x)) + amp[..., 1] @ np.sin(np.outer(k, x))
    pde = Burgers(n_x, nu=nu.tolist(), dt=0.005)
    return pde.rollout(torch.from_numpy(u0[:, None]), 11, 20).numpy().reshape(-1, n_x)


def update_times(state: IncrementalPOD, new: np.ndarray, n: int) -> tuple[list[float], object]:
    """Wall times of ``n`` updates of copies of ``state`` by ``new``; the last updated copy."""
    times, est = [], None
    for _ in range(n):
        est = IncrementalPOD.from_arrays(*state.to_arrays())
        times.append(timed(lambda e=est: e.partial_fit(new))[0])
    return times, est


def accuracy(inc: IncrementalPOD, full: POD, held: np.ndarray) -> dict[str, float]:
    """How far the updated basis is from the recomputed one, at the recomputed POD rank."""
    r, s, t = full.rank_, full.singular_values_, inc.singular_values_
    sine = float(np.sin(np.max(subspace_angles(inc.modes_[:r].T, full.modes_.T))))
    gap = s[r - 1] ** 2 - (t[r] ** 2 if t.size > r else s[r] ** 2)

    def held_error(modes: np.ndarray, mean: np.ndarray) -> float:
        centred = held - mean
        return float(np.linalg.norm(centred - centred @ modes.T @ modes) / np.linalg.norm(centred))

    return {
        "rank_full": r,
        "rank_incremental": inc.rank_,
        "n_kept": int(t.size),
        "sin_max_angle": sine,
        "davis_kahan_bound": inc.gram_error_bound_ / gap,
        "max_rel_singular_value_error": float(np.max(np.abs(s[:r] - t[:r]) / s[:r])),
        "discarded_energy_fraction": inc.discarded_energy_ / inc.total_energy_,
        "held_out_error_full": held_error(full.modes_, full.mean_),
        "held_out_error_incremental": held_error(inc.modes_[: inc.rank_], inc.mean_),
    }


def _accuracy_note(acc: dict[str, float]) -> str:
    return (
        f"rank {acc['rank_incremental']} (full {acc['rank_full']}), {acc['n_kept']} kept; "
        f"sin(max angle) {acc['sin_max_angle']:.1e} (bound {acc['davis_kahan_bound']:.1e}); "
        f"held-out error {acc['held_out_error_incremental']:.6e} vs full "
        f"{acc['held_out_error_full']:.6e}; max rel. s error "
        f"{acc['max_rel_singular_value_error']:.1e}"
    )


def grown_states(X: np.ndarray, sizes: list[int]) -> dict[int, IncrementalPOD]:
    """Incremental bases of the first ``n`` rows of ``X`` for each ``n`` in ``sizes``."""
    est, states, done = IncrementalPOD(energy=ENERGY, buffer=BUFFER), {}, 0
    for n in sorted(sizes):
        if done:
            est.partial_fit(X[done:n])
        else:
            est.fit(X[:n])
        done = n
        states[n] = IncrementalPOD.from_arrays(*est.to_arrays())
    return states


def measure_synthetic(quick: bool) -> list[Result]:
    """Rows 1-2: the update against the full SVD, and the update's cost against N and N_new."""
    n_old, n_features = (512, 8192) if quick else (2048, 16384)
    n_new = n_old // 8
    olds = [n_old // 2, n_old, 2 * n_old]
    X = synthetic(2 * n_old + 4 * n_new + N_HELD, n_features, seed=0)
    new_rows = X[2 * n_old :]  # never in any old basis: 4 N/8 new rows, then the held-out ones
    held = new_rows[4 * n_new :]
    states = grown_states(X, olds)
    union = np.concatenate([X[:n_old], new_rows[:n_new]])
    update_times(states[n_old], new_rows[:n_new], 1)  # first-call costs (LAPACK workspaces)
    with CpuMeter() as meter:
        times, inc = update_times(states[n_old], new_rows[:n_new], 3)
        full_s, full = timed(lambda: POD(energy=ENERGY).fit(union))
    update, stat = summarise(times, "best")
    acc = accuracy(inc, full, held)
    rows = [
        Result(
            name=f"update N={n_old} by N/8={n_new} snapshots, {n_features} features",
            value=update,
            unit="s",
            stat=stat,
            reference=full_s,
            reference_label=f"POD.fit (scipy gesdd thin SVD) of all {n_old + n_new} snapshots, "
            "1 run",
            goal=Goal("<=", 0.1),
            note=_accuracy_note(acc),
            foreign_share=meter.result["foreign_share"],
            details={"update_s": times, "full_s": full_s, **acc},
        )
    ]
    fixed = [(f"update N={n} by {n_new} (fixed new)", states[n], new_rows[:n_new]) for n in olds]
    grow = [(f"update N={n_old} by {m} (growing new)", states[n_old], new_rows[:m])
            for m in (n_new, 2 * n_new, 4 * n_new)]  # fmt: skip
    return [*rows, *timed_in_turns(fixed, 3), *timed_in_turns(grow, 3)]


def timed_in_turns(cases: list[tuple[str, IncrementalPOD, np.ndarray]], repeats: int) -> list:
    """Rows: the update time of each ``(name, state, new)``, against the first case's.

    The cases take turns, one update each per round, so that a change in the load of the shared
    machine slows them alike rather than whichever ran during it.
    """
    times: dict[str, list[float]] = {name: [] for name, _, _ in cases}
    kept = {}
    with CpuMeter() as meter:
        for _ in range(repeats):
            for name, state, new in cases:
                elapsed, est = update_times(state, new, 1)
                times[name] += elapsed
                kept[name] = (state.modes_.shape[0], est.modes_.shape[0])
    base = min(times[cases[0][0]])
    rows = []
    for name, _, new in cases:
        value, stat = summarise(times[name], "best")
        rows.append(
            Result(
                name=name,
                value=value,
                unit="s",
                stat=stat,
                reference=base,
                reference_label=f"the first row of its group ({cases[0][0]})",
                note=f"{len(new)} new rows; modes kept {kept[name][0]} before, "
                f"{kept[name][1]} after",
                foreign_share=meter.result["foreign_share"],
                details={"times_s": times[name]},
            )
        )
    return rows


def tsqr_pod(x: np.ndarray) -> POD:
    """The reduce stage's ``svd: tsqr`` path: mean, then Dask's thin SVD of the centred rows.

    Row blocks are at least twice as tall as the matrix is wide, as the stage makes them; the
    synchronous scheduler leaves the BLAS threads as the only parallelism, as for scipy.
    """
    import dask
    import dask.array as da

    rows = max(2 * x.shape[1], 4096)
    xd = da.from_array(x, chunks=(rows, x.shape[1]))
    mean = xd.mean(axis=0)
    with dask.config.set(scheduler="synchronous"):
        _, s, vt = da.linalg.svd(xd - mean)
        s, vt, mean = dask.compute(s, vt, mean)
    return POD.from_svd(s, vt, mean, energy=ENERGY)


def measure_burgers(quick: bool) -> list[Result]:
    """Row 3: Burgers, a tall snapshot matrix: the update against scipy's and Dask's SVD."""
    n_old, n_x = (512, 128) if quick else (2048, 256)
    n_new = n_old // 8
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        X = burgers(n_old + n_new + N_HELD // 8, n_x, seed=1)
    finally:
        torch.set_num_threads(torch_threads)
    n_rows, n_add = n_old * 11, n_new * 11
    state = grown_states(X, [n_rows])[n_rows]
    union = X[: n_rows + n_add]
    times, scipy_times, tsqr_times = [], [], []
    with CpuMeter() as meter:
        # In turns, as in timed_in_turns: each full SVD takes about a second here.
        for _ in range(3):
            times += update_times(state, X[n_rows : n_rows + n_add], 1)[0]
            scipy_times.append(timed(lambda: POD(energy=ENERGY).fit(union))[0])
            tsqr_times.append(timed(lambda: tsqr_pod(union))[0])
    _, inc = update_times(state, X[n_rows : n_rows + n_add], 1)
    full, full_tsqr = POD(energy=ENERGY).fit(union), tsqr_pod(union)
    update, stat = summarise(times, "best")
    scipy_s, tsqr_s = min(scipy_times), min(tsqr_times)
    acc = accuracy(inc, full, X[n_rows + n_add :])
    label = f"Burgers n_x={n_x}: update {n_old} trajectories by {n_new} ({n_add} snapshots)"
    tsqr_sine = float(np.sin(np.max(subspace_angles(full_tsqr.modes_.T, full.modes_.T))))
    details = {"update_s": times, "scipy_s": scipy_times, "tsqr_s": tsqr_times, **acc}
    common = {"unit": "s", "stat": stat, "foreign_share": meter.result["foreign_share"]}
    return [
        Result(
            name=label,
            value=update,
            reference=scipy_s,
            reference_label=f"POD.fit (scipy gesdd) of all {len(union)} snapshots, best of 3",
            note=_accuracy_note(acc) + NARROW,
            details=details,
            **common,
        ),
        Result(
            name=label + ", against TSQR",
            value=update,
            reference=tsqr_s,
            reference_label=f"Dask tall-skinny QR SVD of all {len(union)} snapshots, best of 3",
            note=f"TSQR and scipy POD modes agree to sin(max angle) {tsqr_sine:.1e}",
            details=details,
            **common,
        ),
    ]


def measure(quick: bool) -> list[Result]:
    """All rows: the synthetic update and its cost against N and N_new, then Burgers."""
    return [*measure_synthetic(quick), *measure_burgers(quick)]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.rom_incremental")
    parser.add_argument("--quick", action="store_true", help="N = 512, 8192 features")
    args = parser.parse_args()
    t0 = time.perf_counter()
    results = measure(args.quick)
    print(table(results))
    threads = os.environ.get("OMP_NUM_THREADS", "unset")
    print(f"\n{time.perf_counter() - t0:.0f} s in all, OMP_NUM_THREADS={threads}")
    for r in results:
        if "sin_max_angle" in r.details:
            print(r.name, {k: v for k, v in r.details.items() if not k.endswith("_s")})


if __name__ == "__main__":
    main()
