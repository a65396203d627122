"""Stage 3: POD of the training snapshots out of core with Dask, and a parametric ROM.

The snapshot matrix (n_train * n_time, n_features) is never assembled in memory: Dask reads it
from the store chunk by chunk (each chunk checked against its CRC32) and computes its thin SVD by
tall-skinny QR (Benson, Gleich & Demmel 2013) or, approximately, by randomized SVD (Halko,
Martinsson & Tropp 2011). The POD coefficients of each training trajectory are then regressed on
the parameters (non-intrusive POD-RBF / POD-GPR).
"""

from __future__ import annotations

import numpy as np

from pdeflow.storage import RunStore, StageRecord
from pdeflow.tasks.config import PipelineConfig, ReduceConfig
from pdeflow.tasks.rom import POD, ReducedOrderModel
from pdeflow.tasks.rom.factory import make_rom
from pdeflow.tasks.rom.pod import select_rank
from pdeflow.tasks.stages.base import Outcome, Stage, StageRun, artifact_problems
from pdeflow.tasks.stages.models import unit_parameters

GROUP = "reduce"


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


def flat(u: np.ndarray) -> np.ndarray:
    """Trajectories (n, time, channel, *space) as (n, time, features), float64."""
    return u.reshape(u.shape[0], u.shape[1], -1).astype(np.float64)


def pod_out_of_core(x, rc: ReduceConfig, seed: int = 0) -> POD:
    """Fit a POD from a Dask array without loading it: mean, then SVD of the centred matrix."""
    import dask
    import dask.array as da

    mean = x.mean(axis=0) if rc.center else da.zeros(x.shape[1], chunks=x.shape[1])
    xc = x - mean
    if rc.svd == "tsqr":
        _, s, vt = da.linalg.svd(xc)
    else:
        k = min(rc.max_rank + 10, min(x.shape))
        _, s, vt = da.linalg.svd_compressed(xc, k=k, n_power_iter=2, seed=seed)
    s, vt, mean = dask.compute(s, vt, mean)
    rank = min(select_rank(s, rc.energy), rc.max_rank, vt.shape[0])
    return POD.from_svd(s, vt, mean if rc.center else None, rank=rank)


def project(x, pod: POD, n_samples: int) -> np.ndarray:
    """POD coefficients of every training trajectory, shape (n_samples, n_time, rank)."""
    coeffs = ((x - pod.mean_) @ pod.modes_.T).compute()
    return coeffs.reshape(n_samples, -1, pod.rank_)


def held_out_errors(rom: ReducedOrderModel, store: RunStore, indices, p_unit: np.ndarray):
    """Per-sample relative errors of the ROM and of the POD projection, chunk by chunk."""
    lookup = {int(i): k for k, i in enumerate(indices)}
    rom_err, proj_err = [], []
    for rows, u in store.iter_chunks(indices):
        p = p_unit[[lookup[int(r)] for r in rows]]
        rom_err.append(rom.relative_errors(p, flat(u)))
        proj_err.append(rom.projection_errors(flat(u)))
    return np.concatenate(rom_err), np.concatenate(proj_err)


class Reduce(Stage):
    name = "reduce"
    upstream = ("generate",)

    def check(self, cfg: PipelineConfig) -> None:
        cfg.check_stages(("reduce",))

    def problems(self, run: StageRun, record: StageRecord, deep: bool = True) -> list[str]:
        return artifact_problems(run, record, "ROM's", deep)

    def pending(self, run: StageRun) -> list[int]:
        return [0]

    def compute(self, run: StageRun, units: list[int]) -> None:
        cfg, store, rc = run.cfg, run.store, run.cfg.reduce
        p_all = unit_parameters(store, cfg)
        train, test = store.sample_indices("train"), store.sample_indices("test")
        run.report(0, 3)
        x = snapshot_matrix(store, train, tall_blocks=rc.svd == "tsqr")
        pod = pod_out_of_core(x, rc, seed=cfg.generate.seed)
        run.report(1, 3)
        coeffs = project(x, pod, len(train))
        rom = make_rom(rc, pod).fit_coefficients(p_all[train], coeffs)
        rom_err, proj_err = held_out_errors(rom, store, test, p_all[test])
        run.report(2, 3)
        run.state["metrics"] = {
            "rank": pod.rank_,
            "energy_captured": pod.energy_,
            "rom_rel_error_mean": float(rom_err.mean()),
            "rom_rel_error_max": float(rom_err.max()),
            "pod_projection_error_mean": float(proj_err.mean()),
        }
        run.state["files"] = store.write_group(
            GROUP,
            {
                "modes": (
                    ("mode", "feature"),
                    pod.modes_,
                    {"description": "orthonormal POD modes over flattened (channel, *space)"},
                ),
                "mean": (("feature",), pod.mean_, {"description": "mean snapshot subtracted"}),
                "singular_values": (("component",), pod.singular_values_),
                "coefficients": (("train_sample", "time", "mode"), coeffs),
                "parameters_unit": (("train_sample", "parameter"), p_all[train]),
            },
            coords={"train_sample": train, "parameter": list(cfg.generate.parameter_names)},
            attrs={"rank": pod.rank_, "energy_captured": pod.energy_},
        )
        run.report(3, 3)

    def finish(self, run: StageRun) -> Outcome:
        return Outcome(run.state["metrics"], artifacts=run.state["files"])
