"""Stage 3: POD of the training snapshots out of core with Dask, and a parametric ROM.

The snapshot matrix (n_train * n_time, n_features) is never assembled in memory: Dask reads it
from the store chunk by chunk (each chunk checked against its CRC32) and computes its thin SVD by
tall-skinny QR (Benson, Gleich & Demmel 2013) or, approximately, by randomized SVD (Halko,
Martinsson & Tropp 2011). The POD coefficients of each training trajectory are then regressed on
the parameters (non-intrusive POD-RBF / POD-GPR).

When each sample's initial state is drawn at random from its seed (not set by the parameters),
no function of the parameters alone can predict the field: the leading POD coefficients of the
initial state (frame 0) then join the parameters as regression inputs. The held-out error is
reported beside two trivial baselines, predicting zero (error 1) and predicting the training
mean trajectory, and the stage warns when the ROM does not beat them.
"""

from __future__ import annotations

import math
import time

import numpy as np

from pdeflow.storage import RunStore, StageRecord
from pdeflow.tasks.config import PipelineConfig, ReduceConfig
from pdeflow.tasks.rom import POD
from pdeflow.tasks.rom.incremental import IncrementalPOD
from pdeflow.tasks.rom.pod import select_rank
from pdeflow.tasks.stages.base import Outcome, Stage, StageRun
from pdeflow.tasks.stages.integrity import UPSTREAM, record_problems
from pdeflow.tasks.stages.models import save_model, unit_parameters
from pdeflow.tasks.stages.rom_adapters import adapter_for
from pdeflow.tasks.stages.rom_methods import (
    ReduceData,
    evaluate,
    flat,
    initial_state_is_random,
    relative_errors,
)

GROUP = "reduce"
# Modes kept beyond the POD rank for incremental updates (IncrementalPOD's buffer): directions
# just below the cut that later snapshots may strengthen are not lost.
BASIS_BUFFER = 16


def snapshot_matrix(store: RunStore, indices: np.ndarray, tall_blocks: bool = True):
    """Lazy snapshot matrix (len(indices) * n_time, n_features), rows by sample chunk.

    A snapshot is every field at one time, flattened in (channel, *space) order.

    Args:
        tall_blocks: make every row block at least twice as tall as it is wide, as TSQR needs;
            the randomized SVD does not, and keeps the store's sample chunks (at 128^2 a TSQR
            block is 32768 x 16384 float64, 4 GiB).
    """
    u = store.dask_trajectories(indices)
    n_time, n_features = u.shape[1], int(np.prod(u.shape[2:]))
    x = u.reshape(-1, n_features)
    rows = store.layout().chunk_size * n_time
    if tall_blocks:
        rows = max(rows, 2 * n_features)
    return x.rechunk((rows, n_features)).astype(np.float64)


def pod_out_of_core(x, rc: ReduceConfig, seed: int = 0) -> POD:
    """Fit a POD from a Dask array without loading it: mean, then SVD of the centred matrix.

    The randomized SVD computes only ``max_rank + 10`` singular values; the squared norm of the
    centred matrix is computed with them, so that ``energy_`` counts the energy they miss.
    """
    return basis_out_of_core(x, rc, seed).to_pod()


def basis_out_of_core(x, rc: ReduceConfig, seed: int = 0) -> IncrementalPOD:
    """``pod_out_of_core`` as an ``IncrementalPOD`` that keeps ``BASIS_BUFFER`` modes beyond the
    POD rank, so that a later extension of the store can update it from its new snapshots."""
    import dask
    import dask.array as da

    mean = x.mean(axis=0) if rc.center else da.zeros(x.shape[1], chunks=x.shape[1])
    xc = x - mean
    if rc.svd == "tsqr":
        _, s, vt = da.linalg.svd(xc)
        total = da.zeros(())
    else:
        k = min(rc.max_rank + 10, min(x.shape))
        _, s, vt = da.linalg.svd_compressed(xc, k=k, n_power_iter=2, seed=seed)
        total = (xc**2).sum()
    s, vt, mean, total = dask.compute(s, vt, mean, total)
    return IncrementalPOD.from_svd(
        s,
        vt,
        mean if rc.center else None,
        n_seen=x.shape[0],
        total_energy=float(total) or None,
        **basis_settings(rc),
    )


def basis_settings(rc: ReduceConfig) -> dict:
    return {"energy": rc.energy, "max_rank": rc.max_rank, "buffer": BASIS_BUFFER}


def update_basis(run: StageRun, train: np.ndarray) -> tuple[IncrementalPOD, dict] | None:
    """The previous run's basis updated from the new training snapshots alone, when this run
    extends the store (``extend_by``, a campaign) and ``reduce.incremental`` is on; else None.

    Brand's update (``IncrementalPOD.partial_fit``) costs time in proportion to the new
    snapshots, not to all of them. The old training samples must all still be training samples
    (the split of a sample never changes when a store grows), and the old state intact.

    Returns:
        The updated basis, and what was done (for the record): samples before and added, seconds.
    """
    rec, rc = run.previous, run.cfg.reduce
    if not (rc.incremental and run.extended and rec and rec.status == "complete"):
        return None
    old = run.store.read_group(GROUP, rec.artifact_entries())
    if "basis_modes" not in old:
        return None
    before = old.train_sample.values
    new = np.setdiff1d(train, before)
    if len(np.setdiff1d(before, train)) or not len(new):
        return None
    start = time.perf_counter()
    arrays = {k: old[f"basis_{k}"].values for k in ("modes", "singular_values", "mean")}
    ipod = IncrementalPOD.from_arrays(arrays, old.attrs["basis_state"])
    ipod.set_params(**basis_settings(rc))
    for block in snapshot_matrix(run.store, new, tall_blocks=False).blocks:
        ipod.partial_fit(block.compute())  # one store chunk of new samples at a time
    done = {"previous_samples": len(before), "added_samples": len(new)}
    return ipod, done | {"seconds": time.perf_counter() - start}


def basis_variables(ipod: IncrementalPOD) -> tuple[dict, dict]:
    """The basis state a later update needs, as the reduce group's variables and attributes."""
    arrays, attrs = ipod.to_arrays()
    about = "POD modes kept for incremental updates: the rank's and a buffer of more"
    variables = {
        "basis_modes": (("basis_mode", "feature"), arrays["modes"], {"description": about}),
        "basis_singular_values": (("basis_mode",), arrays["singular_values"]),
        "basis_mean": (("feature",), arrays["mean"]),
    }
    return variables, {"basis_state": attrs}


def project(x, pod: POD, n_samples: int) -> np.ndarray:
    """POD coefficients of every training trajectory, shape (n_samples, n_time, rank)."""
    coeffs = ((x - pod.mean_) @ pod.modes_.T).compute()
    return coeffs.reshape(n_samples, -1, pod.rank_)


def initial_rank(cfg: PipelineConfig, n_train: int, random_initial: bool) -> int:
    """Initial-state coefficients to add to the ROM's inputs (0: the parameters alone).

    The RBF's linear polynomial needs more training samples than inputs plus one.
    """
    if not random_initial:
        return 0
    n_features = int(np.prod(cfg.generate.grid)) * len(cfg.generate.fields)
    room = n_train - len(cfg.generate.parameter_names) - 2
    return max(0, min(cfg.reduce.initial_modes, room, n_features))


def initial_pod(store: RunStore, train: np.ndarray, rank: int, seed: int):
    """POD of the training initial states (frame 0), out of core, and their coefficients.

    Returns:
        The POD (``rank`` modes) and the coefficients, shape (n_train, rank).
    """
    import dask
    import dask.array as da

    u0 = store.dask_trajectories(train)[:, 0]
    x0 = u0.reshape(len(train), -1).astype(np.float64)
    k = min(rank + 10, min(x0.shape))
    # The randomized SVD's QR of the sketch needs row blocks at least as tall as it is wide.
    x0 = x0.rechunk((max(x0.chunks[0][0], 2 * k), x0.shape[1]))
    mean = x0.mean(axis=0)
    _, s, vt = da.linalg.svd_compressed(x0 - mean, k=k, n_power_iter=2, seed=seed)
    s, vt, mean = dask.compute(s, vt, mean)
    pod = POD.from_svd(s, vt, mean, rank=rank)
    return pod, (x0 - mean).dot(pod.modes_.T).compute()


def mean_trajectory(store: RunStore, train: np.ndarray) -> np.ndarray:
    """The training mean trajectory, shape (n_time, n_features): the mean-field baseline."""
    u = store.dask_trajectories(train)
    return u.mean(axis=0).compute().reshape(u.shape[1], -1).astype(np.float64)


def baseline_errors(store: RunStore, indices, mean_traj: np.ndarray, pod: POD):
    """Per-sample relative errors of predicting the training mean trajectory, and of the
    projection onto the stage's POD basis (the floor of every POD-based method), chunk by chunk.

    Returns:
        Two arrays of shape (len(indices),).
    """
    mean_err, floor = [], []
    for _, u in store.iter_chunks(indices):
        traj = flat(u)
        mean_err.append(relative_errors(np.broadcast_to(mean_traj, traj.shape), traj))
        coefficients = (traj - pod.mean_) @ pod.modes_.T
        floor.append(relative_errors(coefficients @ pod.modes_ + pod.mean_, traj))
    return np.concatenate(mean_err), np.concatenate(floor)


def solver_seconds_per_sample(store: RunStore) -> float:
    """The solver's wall seconds per sample, from the blocks' timings in the manifest (batched
    solves, as the generate stage ran them)."""
    entries = store.complete_blocks().values()
    n = sum(e.stop - e.start for e in entries)
    return sum(e.seconds for e in entries) / n if n else float("nan")


def fit_and_evaluate(name: str, data: ReduceData, solver_s: float) -> tuple[dict, object]:
    """Fit reduce method ``name`` (timed) and evaluate it on the test split.

    Returns:
        Its row of the stage's table (``rom_methods.evaluate`` plus ``offline_s`` and
        ``speedup``, the solver's seconds per sample over the method's online seconds per
        evaluation), and the fitted model.
    """
    adapter = adapter_for(name)
    start = time.perf_counter()
    model = adapter.fit(data)
    offline = time.perf_counter() - start
    row = evaluate(adapter, model, data, data.test)
    online = row["online_s_per_eval"]
    row |= {"offline_s": offline, "speedup": solver_s / online if online > 0 else float("inf")}
    return row, model


def primary_metrics(rows: dict, method: str, pod: POD, k: int, baselines: dict) -> dict:
    """The stage's scalar metrics: the stage's ROM (``method``) under the names quantify, the
    report and earlier stores use, and every compared method's held-out mean error.

    Args:
        baselines: ``mean`` (the mean-field prediction's mean error) and ``pod_floor`` (the
            mean projection error onto the stage's POD basis), on the test split.
    """
    row = rows[method]
    # Timings stay out (they are in each method's row of the record's details): metrics are
    # results, equal for equal inputs wherever the stage runs.
    metrics = {
        "rank": pod.rank_,
        "energy_captured": pod.energy_,
        "initial_modes": k,
        "rom_rel_error_mean": row["rel_error_mean"],
        "rom_rel_error_max": row["rel_error_max"],
        "pod_projection_error_mean": baselines["pod_floor"],
        "baseline_zero_rel_error": 1.0,
        "baseline_mean_rel_error_mean": baselines["mean"],
    }
    for name, other in rows.items():
        metrics[f"{name.replace('-', '_')}_rel_error_mean"] = other["rel_error_mean"]
    return {k: v for k, v in metrics.items() if not isinstance(v, float) or math.isfinite(v)}


def rank_cap_warning(rc: ReduceConfig, pod: POD) -> str | None:
    """The warning when ``reduce.max_rank`` stops the basis short of ``reduce.energy``."""
    if pod.rank_ < rc.max_rank or pod.energy_ >= rc.energy:
        return None
    s = pod.singular_values_
    needed = select_rank(s, rc.energy, pod.total_energy_)
    reached = np.cumsum(s**2)[needed - 1] / pod.total_energy_ >= rc.energy - 1e-12
    asks = f"{needed} modes" if reached else f"more than the {len(s)} modes computed"
    return (
        f"reduce: the POD rank is capped at reduce.max_rank={rc.max_rank}: the basis captures "
        f"{pod.energy_:.6g} of the snapshot energy where reduce.energy={rc.energy:g} was asked "
        f"(that needs {asks}); raise reduce.max_rank, or lower reduce.energy"
    )


def baseline_warning(metrics: dict, cfg: PipelineConfig, random_initial: bool, n_train: int):
    """The warning, with its likely cause, when the ROM does not beat a trivial prediction.

    The baselines are predicting zero (relative error 1) and the training mean trajectory.
    """
    err, floor = metrics["rom_rel_error_mean"], metrics["pod_projection_error_mean"]
    mean = metrics["baseline_mean_rel_error_mean"]
    if err < min(1.0, mean):
        return None
    which = "zero (error 1)" if mean >= 1.0 else f"the training mean field (error {mean:.3g})"
    return (
        f"reduce: the ROM's held-out relative error {err:.3g} is no better than predicting "
        f"{which}; {_likely_cause(metrics, cfg, random_initial, n_train, floor)}"
    )


def _likely_cause(metrics, cfg, random_initial: bool, n_train: int, floor: float) -> str:
    n_inputs = len(cfg.generate.parameter_names) + metrics["initial_modes"]
    if random_initial and not metrics["initial_modes"]:
        return (
            "likely cause: the initial state is drawn at random from each sample's seed and is "
            "not a parameter, so no function of the parameters alone can predict the field; "
            "set reduce.initial_modes > 0 (it adds the initial state's leading POD "
            f"coefficients to the inputs) or raise generate.n_samples (n_train={n_train})"
        )
    if floor >= 0.5:
        return (
            f"likely cause: the POD basis itself misses much of the held-out fields (projection "
            f"error {floor:.3g}); raise reduce.max_rank or reduce.energy, or generate.n_samples"
        )
    if random_initial:
        return (
            f"likely cause: {metrics['initial_modes']} coefficients of a random initial state "
            f"leave too much of it out, or {n_train} training samples are too few for "
            f"{n_inputs} inputs; raise generate.n_samples and reduce.initial_modes"
        )
    return (
        f"likely cause: {n_train} training samples are too few for the {n_inputs} inputs, or "
        "the field varies too sharply with them (advected fronts, shocks); raise "
        "generate.n_samples, or try reduce.method=pod-gpr or reduce.smoothing > 0"
    )


def _group_data(cfg, train, p_train, pod: POD, coeffs, initial) -> tuple[dict, dict]:
    """The reduce group's variables and coordinates (the initial-state basis when used)."""
    data = {
        "modes": (
            ("mode", "feature"),
            pod.modes_,
            {"description": "orthonormal POD modes over flattened (channel, *space)"},
        ),
        "mean": (("feature",), pod.mean_, {"description": "mean snapshot subtracted"}),
        "singular_values": (("component",), pod.singular_values_),
        "coefficients": (("train_sample", "time", "mode"), coeffs),
        "parameters_unit": (("train_sample", "parameter"), p_train),
    }
    if initial is not None:
        ipod, icoeffs = initial
        about = "POD modes of the training initial states (frame 0), ROM inputs"
        data |= {
            "initial_modes": (("initial_mode", "feature"), ipod.modes_, {"description": about}),
            "initial_mean": (("feature",), ipod.mean_),
            "initial_singular_values": (("initial_component",), ipod.singular_values_),
            "initial_coefficients": (("train_sample", "initial_mode"), icoeffs),
        }
    coords = {"train_sample": train, "parameter": list(cfg.generate.parameter_names)}
    return data, coords


class Reduce(Stage):
    name = "reduce"
    upstream = UPSTREAM["reduce"]

    def check(self, cfg: PipelineConfig) -> None:
        cfg.check_stages(("reduce",))
        for name in cfg.reduce.methods:
            if why := adapter_for(name).refusal(cfg):
                field = "method" if name == cfg.reduce.method else "compare"
                raise ValueError(f"reduce.{field}: {why}")
        gen = cfg.generate
        if gen.problem.stationary and initial_state_is_random(gen):
            raise ValueError(
                f"reduce: {gen.pde} is stationary and its input field (generate."
                "initial_condition kind pde) is drawn at random from each sample's seed, so "
                f"the solution is not a function of the sampled parameters "
                f"{gen.parameter_names}, and its single stored frame holds the solution, not "
                "an initial state the ROM could take as input; run generate alone for this PDE"
            )

    def problems(self, run: StageRun, record: StageRecord, deep: bool = True) -> list[str]:
        return record_problems(run.store, self.name, record, deep)

    def pending(self, run: StageRun) -> list[int]:
        return list(range(self.total(run)))  # one pass: every step is redone

    def total(self, run: StageRun) -> int:
        # Steps reported: snapshots, basis, coefficients, then one per reduce method.
        return 3 + len(run.cfg.reduce.methods)

    def compute(self, run: StageRun, units: list[int]) -> None:
        cfg, store, rc = run.cfg, run.store, run.cfg.reduce
        p_all = unit_parameters(store, cfg)
        train, test = store.sample_indices("train"), store.sample_indices("test")
        total = 3 + len(rc.methods)
        run.report(0, total)
        x = snapshot_matrix(store, train, tall_blocks=rc.svd == "tsqr")
        updated = update_basis(run, train)
        if updated is None:
            start = time.perf_counter()
            ipod = basis_out_of_core(x, rc, seed=cfg.generate.seed)
            basis = {"incremental": False, "seconds": time.perf_counter() - start}
        else:
            ipod, done = updated
            basis = {"incremental": True} | done
        pod = ipod.to_pod()
        if note := rank_cap_warning(rc, pod):
            run.warn(note)
        run.report(1, total)
        random_initial = initial_state_is_random(cfg.generate)
        k = initial_rank(cfg, len(train), random_initial)
        initial = initial_pod(store, train, k, cfg.generate.seed) if k else None
        coeffs = project(x, pod, len(train))
        run.report(2, total)
        data = ReduceData(cfg, store, train, test, p_all, pod, coeffs, initial, run.client)
        mean_err, floor = baseline_errors(store, test, mean_trajectory(store, train), pod)
        solver_s = solver_seconds_per_sample(store)
        rows, models = {}, {}
        for i, name in enumerate(rc.methods):
            rows[name], models[name] = fit_and_evaluate(name, data, solver_s)
            run.report(3 + i, total)
        baselines = {"mean": float(mean_err.mean()), "pod_floor": float(floor.mean())}
        metrics = primary_metrics(rows, rc.method, pod, k, baselines)
        if random_initial and not k:
            run.warn(
                "reduce: the initial state is drawn at random from each sample's seed, but the "
                "ROM maps the parameters alone (reduce.initial_modes=0, or too few training "
                "samples for more inputs), so it cannot predict the field"
            )
        if note := baseline_warning(metrics, cfg, random_initial, len(train)):
            run.warn(note)
        run.state["metrics"] = metrics
        run.state["details"] = {
            "method": rc.method,
            "methods": rows,
            "solver_s_per_sample": solver_s,
            "basis": basis,
        }
        data_vars, coords = _group_data(cfg, train, p_all[train], pod, coeffs, initial)
        state_vars, state_attrs = basis_variables(ipod)
        data_vars |= state_vars
        attrs = {"rank": pod.rank_, "energy_captured": pod.energy_, "initial_rank": k}
        attrs |= state_attrs
        files = store.write_group(GROUP, data_vars, coords=coords, attrs=attrs)
        files |= save_model(store, rc.method, models[rc.method])
        run.state["files"] = files
        run.report(total, total)

    def finish(self, run: StageRun) -> Outcome:
        return Outcome(
            run.state["metrics"], artifacts=run.state["files"], details=run.state["details"]
        )
