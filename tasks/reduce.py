"""Stage 3: POD of the training snapshots out of core with Dask, and a parametric ROM.

The snapshot matrix (n_train * n_time, n_x) is never assembled in memory: Dask reads it from the
store chunk by chunk and computes its thin SVD by tall-skinny QR (Benson, Gleich & Demmel 2013)
or, approximately, by randomized SVD (Halko, Martinsson & Tropp 2011). The POD coefficients of
each training trajectory are then regressed on the parameters (non-intrusive POD-RBF / POD-GPR).
"""

from __future__ import annotations

from pathlib import Path

import dask
import dask.array as da
import numpy as np
import xarray as xr
from distributed import Client
from pdeflow.storage import RunStore
from pdeflow.storage import dataset as ds_io
from pdeflow.tasks.config import PipelineConfig, ReduceConfig
from pdeflow.tasks.rom import POD, ReducedOrderModel, get_approximation
from pdeflow.tasks.rom.pod import select_rank
from pdeflow.tasks.stages import prepare_stage, stage_cache_key, stage_config, stage_hash
from pdeflow.tasks.train import split_indices, unit_parameters
from prefect import task

GROUP = "reduce"


def snapshot_matrix(path: Path, indices: np.ndarray, tall_blocks: bool = True) -> da.Array:
    """Lazy snapshot matrix (len(indices) * n_time, n_features), rows by sample chunk.

    A snapshot is every field at one time, flattened in (channel, *space) order.

    Args:
        tall_blocks: make every row block at least twice as tall as it is wide, as TSQR needs;
            the randomized SVD does not, and keeps the store's sample chunks (at 128^2 a TSQR
            block is 32768 x 16384 float64, 4 GiB).
    """
    fields = [da.from_zarr(str(path), component=name) for name in ds_io.field_names(path)]
    u = da.stack(fields, axis=2)[np.sort(indices)]
    n_time, n_features = u.shape[1], int(np.prod(u.shape[2:]))
    x = u.reshape(-1, n_features)
    rows = ds_io.chunk_size(path) * n_time
    if tall_blocks:
        rows = max(rows, 2 * n_features)
    return x.rechunk((rows, n_features)).astype(np.float64)


def flat(u: np.ndarray) -> np.ndarray:
    """Trajectories (n, time, channel, *space) as (n, time, features), float64."""
    return u.reshape(u.shape[0], u.shape[1], -1).astype(np.float64)


def pod_out_of_core(x: da.Array, rc: ReduceConfig, seed: int = 0) -> POD:
    """Fit a POD from a Dask array without loading it: mean, then SVD of the centred matrix."""
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


def project(x: da.Array, pod: POD, n_samples: int) -> np.ndarray:
    """POD coefficients of every training trajectory, shape (n_samples, n_time, rank)."""
    coeffs = ((x - pod.mean_) @ pod.modes_.T).compute()
    return coeffs.reshape(n_samples, -1, pod.rank_)


def make_rom(rc: ReduceConfig, pod: POD) -> ReducedOrderModel:
    kwargs = (
        {"kernel": rc.rbf_kernel, "smoothing": rc.smoothing} if rc.approximation == "rbf" else {}
    )
    return ReducedOrderModel(
        reduction=pod, approximation=get_approximation(rc.approximation)(**kwargs)
    )


def held_out_errors(rom: ReducedOrderModel, path: Path, indices: np.ndarray, p_unit: np.ndarray):
    """Per-sample relative errors of the ROM and of the POD projection, chunk by chunk."""
    lookup = {int(i): k for k, i in enumerate(indices)}
    rom_err, proj_err = [], []
    for rows, u in ds_io.iter_chunks(path, indices):
        p = p_unit[[lookup[int(r)] for r in rows]]
        rom_err.append(rom.relative_errors(p, flat(u)))
        proj_err.append(rom.projection_errors(flat(u)))
    return np.concatenate(rom_err), np.concatenate(proj_err)


def reduce(cfg: PipelineConfig, client: Client, overwrite: bool = False) -> dict:
    """Run stage 3 on the Dask cluster of ``client``; returns the stage summary."""
    cfg.check_stages(("reduce",))
    store = RunStore.named(cfg.store)
    h = stage_hash(cfg, "reduce")
    if not store.is_complete("generate", stage_hash(cfg, "generate")):
        raise RuntimeError(f"reduce needs a complete generate stage in {store.path}")
    prepare_stage(store, cfg, "reduce", overwrite)
    if not store.is_complete("reduce", h):
        store.start_stage("reduce", stage_config(cfg, "reduce"), h)
        path, rc = store.path, cfg.reduce
        p_all = unit_parameters(path, cfg.generate)
        train_idx, test_idx = split_indices(path, "train"), split_indices(path, "test")
        x = snapshot_matrix(path, train_idx, tall_blocks=rc.svd == "tsqr")
        pod = pod_out_of_core(x, rc, seed=cfg.generate.seed)
        coeffs = project(x, pod, len(train_idx))
        rom = make_rom(rc, pod).fit_coefficients(p_all[train_idx], coeffs)
        rom_err, proj_err = held_out_errors(rom, path, test_idx, p_all[test_idx])
        _write_result(path, pod, coeffs, p_all[train_idx], train_idx, cfg.generate.parameter_names)
        metrics = {
            "rank": pod.rank_,
            "energy_captured": pod.energy_,
            "rom_rel_error_mean": float(rom_err.mean()),
            "rom_rel_error_max": float(rom_err.max()),
            "pod_projection_error_mean": float(proj_err.mean()),
        }
        store.finish_stage("reduce", h, metrics)
    rec = store.record("reduce")
    return {"stage": "reduce", "store": str(store.path), "hash": h, "metrics": rec["metrics"]}


def _write_result(path, pod, coeffs, p_unit, train_idx, names) -> None:
    result = xr.Dataset(
        {
            "modes": (
                ("mode", "feature"),
                pod.modes_,
                {"description": "orthonormal POD modes over flattened (channel, *space)"},
            ),
            "mean": (("feature",), pod.mean_, {"description": "mean snapshot subtracted"}),
            "singular_values": (("component",), pod.singular_values_),
            "coefficients": (("train_sample", "time", "mode"), coeffs),
            "parameters_unit": (("train_sample", "parameter"), p_unit),
        },
        coords={"train_sample": train_idx, "parameter": list(names)},
        attrs={"rank": pod.rank_, "energy_captured": pod.energy_},
    )
    ds_io.write_group(path, GROUP, result)


def load_rom(cfg: PipelineConfig, store: RunStore) -> ReducedOrderModel:
    """Rebuild the stage's ROM from the store: the stored basis, and the regression refitted."""
    res = ds_io.open_dataset(store.path, group=GROUP).load()
    pod = POD.from_svd(
        res.singular_values.values,
        res.modes.values,
        res["mean"].values,
        rank=int(res.attrs["rank"]),
    )
    rom = make_rom(cfg.reduce, pod)
    return rom.fit_coefficients(res.parameters_unit.values, res.coefficients.values)


@task(name="reduce-order", cache_key_fn=stage_cache_key("reduce"), persist_result=True)
def reduce_task(config: PipelineConfig, scheduler: str, overwrite: bool = False) -> dict:
    """Prefect wrapper: connect to the flow's Dask scheduler and run stage 3."""
    with Client(scheduler) as client:
        return reduce(config, client, overwrite)
