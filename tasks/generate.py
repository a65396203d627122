"""Stage 1: sample the parameters, solve the PDE block by block on Dask, fill the run store.

The Prefect task is one coarse task per stage: fine-grained fan-out (one Dask task per block) goes
to Dask directly, so the number of Prefect task runs does not grow with the number of samples.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch
from distributed import Client, as_completed, get_worker
from pdeflow.storage import RunStore
from pdeflow.storage import dataset as ds_io
from pdeflow.storage.manifest import BlockManifest
from pdeflow.tasks.clusters import task_resources
from pdeflow.tasks.config import GenerateConfig, PipelineConfig
from pdeflow.tasks.custom import build_simulator
from pdeflow.tasks.datasets import (
    SPLITS,
    create_store,
    dataset_card,
    normalization_stats,
    sample_coords,
)
from pdeflow.tasks.pdes import BlowUpError
from pdeflow.tasks.problems import pde_initial_state, solve
from pdeflow.tasks.sampling import MARGINALS, split_codes
from pdeflow.tasks.simulators import SimulationError
from pdeflow.tasks.stages import stage_cache_key, stage_config, stage_hash
from prefect import task

Progress = Callable[[int, int], None]


class GenerationError(RuntimeError):
    """One or more blocks failed; completed blocks stay complete and are not recomputed."""


def to_physical(gen: GenerateConfig, unit: np.ndarray) -> np.ndarray:
    """Map design points in [0, 1)^d to parameters, shape (n, d), columns ``parameter_names``."""
    cols = [
        MARGINALS[spec.distribution](spec.low, spec.high).ppf(unit[:, j])
        for j, spec in enumerate(gen.parameter_specs)
    ]
    return np.stack(cols, axis=1) if cols else np.zeros((len(unit), 0))


def split_labels(gen: GenerateConfig, start: int = 0, stop: int | None = None) -> np.ndarray:
    """Seeded split of samples ``start:stop``, codes index ``SPLITS``; shape (stop - start,)."""
    s = gen.split
    fractions = (s.train, s.val, s.test, s.calibration)
    return split_codes(fractions, s.seed, start, gen.n_samples if stop is None else stop)


def grid_coords(gen: GenerateConfig) -> list[np.ndarray]:
    """Coordinates of each spatial axis: ``i * L / n`` (periodic) or the PDE's own points."""
    if gen.is_custom:
        return [np.arange(n) * gen.domain_length / n for n in gen.simulator.grid]
    cls = gen.entry.cls
    if gen.entry.dim > 1 or gen.entry.stationary:
        kwargs = {} if gen.entry.stationary else {"dt": gen.internal_dt}
        coefs = {k: s.low for k, s in gen.coefficient_specs.items()} | dict(gen.constants)
        pde = cls(gen.n_x, length=gen.domain_length, **kwargs, **coefs)
        return [np.asarray(pde.x, dtype=np.float64), np.asarray(pde.y, dtype=np.float64)]
    return [np.arange(gen.n_x) * gen.domain_length / gen.n_x]


def initial_state(
    gen: GenerateConfig, params: np.ndarray, seeds: np.ndarray, device, dtype
) -> torch.Tensor:
    """Initial states of a batch, shape (n, channel, *space), from parameters and seeds."""
    ic, entry, length = gen.initial_condition, gen.entry, gen.domain_length
    shape = (gen.n_x,) * entry.dim
    if ic.kind == "pde":
        coefs = coefficients(gen, params)
        return pde_initial_state(
            entry, gen.n_x, length, seeds, coefs, ic.options, dtype=dtype, device=device
        )
    if ic.kind == "modes":
        amp = torch.as_tensor(params[:, -len(gen.modes) :], dtype=torch.float64)
        u0 = torch.zeros((len(params), *shape), dtype=torch.float64)
        axes = torch.meshgrid(*[torch.as_tensor(c) for c in grid_coords(gen)], indexing="ij")
        for j, k in enumerate(gen.modes):
            wave = torch.ones(shape, dtype=torch.float64)
            for axis in axes:
                wave = wave * torch.sin(2 * torch.pi * k * axis / length)
            u0 += amp[:, j].reshape(-1, *([1] * entry.dim)) * wave
        values = u0.numpy()
    else:
        values = _random_field(gen, shape, seeds)
    if ic.rescale == "unit":
        flat = values.reshape(len(values), -1)
        low, high = flat.min(axis=1), flat.max(axis=1)
        span = np.where(high > low, high - low, 1.0)
        values = ((flat - low[:, None]) / span[:, None]).reshape(values.shape)
    return torch.as_tensor(values[:, None], dtype=dtype, device=device)


def _random_field(gen: GenerateConfig, shape: tuple[int, ...], seeds: np.ndarray) -> np.ndarray:
    from pdeflow.tasks import fields

    ic, length = gen.initial_condition, gen.domain_length
    if ic.kind == "fourier":
        amplitude = (ic.amplitude.low, ic.amplitude.high)
        return fields.fourier_series(
            shape, length, seeds, n_waves=ic.n_waves, k_max=ic.k_max, amplitude=amplitude
        )
    if ic.kind == "grf":
        return fields.gaussian_random_field(
            shape, length, seeds, alpha=ic.alpha, tau=ic.tau, sigma=ic.sigma
        )
    levels = (ic.amplitude.low, ic.amplitude.high)
    return fields.step_function(shape, length, seeds, n_steps=ic.n_steps, levels=levels)


def coefficients(gen: GenerateConfig, params: np.ndarray) -> dict[str, np.ndarray]:
    """Every PDE coefficient per sample: sampled columns and constants, each shape (n,)."""
    out = {name: params[:, j] for j, name in enumerate(gen.coefficient_specs)}
    out.update({name: np.full(len(params), value) for name, value in gen.constants.items()})
    return out


def solve_parameters(
    gen: GenerateConfig, params: np.ndarray, seeds: np.ndarray, sample_ids: np.ndarray | None = None
) -> np.ndarray:
    """Solve one batch; shape (n, n_frames, channel, *space), in ``gen.dtype``.

    Raises:
        BlowUpError: non-finite values or a CFL violation, naming the batch rows.
        SimulationError: a user simulator failed for some samples (``pde: custom``).
    """
    if gen.is_custom:
        ids = np.arange(len(params)) if sample_ids is None else sample_ids
        return build_simulator(gen).run(coefficients(gen, params), seeds, ids)
    dtype = getattr(torch, gen.dtype)
    device = torch.device(gen.device)
    u0 = initial_state(gen, params, seeds, device, dtype)
    traj = solve(
        gen.entry,
        n=gen.n_x,
        length=gen.domain_length,
        dt=gen.internal_dt,
        n_frames=gen.n_frames,
        steps_per_frame=gen.steps_per_frame,
        coefficients=coefficients(gen, params),
        u0=u0,
        device=device,
        dtype=dtype,
    )
    return traj.cpu().numpy()


def solve_block(store_path: str, gen_json: dict, block: int) -> dict:
    """Dask task: solve block ``block`` and write it to its own chunk-aligned region.

    A block the manifest already marks complete is returned as recorded, unsolved: Dask re-runs
    finished tasks whose results were held by a worker that died (prefect #15442), and a
    complete block always belongs to the store's current config (``generate`` maps only missing
    blocks; an extension reopens the block it grows; ``overwrite`` wipes the store).
    """
    done = BlockManifest(store_path).completed(block)
    if done is not None:
        return {"block": block, "seconds": done[0], "checksum": done[1], "skipped": True}
    gen = GenerateConfig.model_validate(gen_json)
    try:
        torch.set_num_threads(max(1, get_worker().state.nthreads))
    except ValueError:  # called outside a worker (direct use, tests)
        pass
    start = block * gen.block_size
    stop = min(start + gen.block_size, gen.n_samples)
    store = RunStore(store_path)
    params = ds_io.read_coords(store.path, gen.parameter_names, start, stop)
    seeds = ds_io.read_coords(store.path, ["seed"], start, stop)[:, 0]
    t0 = time.perf_counter()
    try:
        values = solve_parameters(gen, params, seeds, np.arange(start, stop))
    except BlowUpError as err:
        bad = [start + i for i in err.samples]
        raise GenerationError(
            f"block {block}: {type(err).__name__} at t={err.time:.4g} in samples {bad}: {err}"
        ) from None
    except SimulationError as err:
        raise GenerationError(f"block {block}: {err}") from None
    seconds = time.perf_counter() - t0
    checksum = ds_io.write_block(store.path, block, start, values, seconds, list(gen.fields))
    return {"block": block, "seconds": seconds, "checksum": checksum}


def generate(
    cfg: PipelineConfig, client: Client, overwrite: bool = False, progress: Progress | None = None
) -> dict:
    """Run stage 1: compute the blocks the manifest lacks, then mark the stage complete.

    A store generated with the same settings but fewer samples is extended in place: the design
    continues, earlier samples keep their values, seeds and splits, and only new blocks (and a
    formerly partial last block) are solved.

    Returns:
        Summary with the store path, config hash, and counts of blocks computed and skipped.
    """
    gen = cfg.generate
    store = RunStore.named(cfg.store)
    h = stage_hash(cfg, "generate")
    extended_from = None if overwrite else extend_store(store, gen)
    if extended_from is None:
        store.check_config("generate", stage_config(cfg, "generate"), h, overwrite)
    if store.is_complete("generate", h):
        return _summary(store, h, computed=0)
    if not (store.path / "zarr.json").is_file():
        create_store(store, gen)
    store.start_stage("generate", stage_config(cfg, "generate"), h)
    missing = BlockManifest(store.path).missing()
    total, done = gen.n_blocks, gen.n_blocks - len(missing)
    if progress:
        progress(done, total)
    gen_json = gen.model_dump(mode="json")
    futures = client.map(
        solve_block,
        [str(store.path)] * len(missing),
        [gen_json] * len(missing),
        missing,
        pure=False,
        resources=task_resources(cfg.cluster, gen.device),
    )
    errors = []
    pending = as_completed(futures)
    # Drop each future as it completes: Dask recomputes a lost result only while a client holds
    # its future, so a worker dying later cannot re-run this block (solve_block also skips it).
    del futures
    for fut in pending:
        if fut.status == "error":
            errors.append(str(fut.exception()))
        else:
            done += 1
            if progress:
                progress(done, total)
        fut.release()
    if errors:
        raise GenerationError(
            f"{len(errors)} of {len(missing)} blocks failed; {done} of {total} complete "
            "(re-run to retry only the failed ones):\n" + "\n".join(sorted(errors))
        )
    stats = normalization_stats(store.path, _train_indices(store.path))
    ds_io.update_attrs(store.path, {"normalization": stats})
    return _summary(store, h, computed=len(missing), finish=True, extended_from=extended_from)


def _train_indices(path) -> np.ndarray:
    codes = ds_io.read_coords(path, ["split"])[:, 0]
    return np.flatnonzero(codes == SPLITS.index("train"))


def extend_store(store: RunStore, gen: GenerateConfig) -> int | None:
    """Grow a store generated with fewer samples of otherwise the same settings.

    Returns:
        The previous sample count if the store was (or is being) extended, else None (no store,
        same size, or other settings changed: then ``check_config`` decides).
    """
    rec = store.record("generate")
    if rec is None or not (store.path / "zarr.json").is_file():
        return None
    old = GenerateConfig.model_validate(rec["config"]["generate"])
    if old.model_dump(exclude={"n_samples"}) != gen.model_dump(exclude={"n_samples"}):
        return None
    old_n = int(ds_io.read_coords(store.path, ["sample"]).shape[0])
    if gen.n_samples < old_n:
        return None
    if gen.n_samples == old_n:
        # Same size: a fresh run, or the resumed run of an extension begun earlier.
        return rec.get("extended_from") if rec.get("status") != "complete" else None
    if gen.design not in ("sobol", "random"):
        raise GenerationError(
            f"generate.n_samples: a '{gen.design}' design cannot be extended from {old_n} "
            "samples; use design sobol or random, or a new store"
        )
    coords = {k: v[1] for k, v in sample_coords(gen).items()}
    ds_io.extend_trajectories(store.path, gen.n_samples, coords)
    manifest = BlockManifest(store.path)
    old_blocks = manifest.n_blocks
    manifest.resize(gen.n_blocks)
    if old_n % gen.block_size:
        # The old last block held fewer samples than a block: it is solved again, whole.
        manifest.mark_incomplete(old_blocks - 1)
    attrs = {"config": gen.model_dump(mode="json"), "dataset_card": dataset_card(gen)}
    ds_io.update_attrs(store.path, attrs)
    store.write_record("generate", {**rec, "status": "running", "extended_from": old_n})
    store.consolidate()
    return old_n


def _summary(
    store: RunStore, h: str, computed: int, finish: bool = False, extended_from: int | None = None
) -> dict:
    manifest = BlockManifest(store.path)
    metrics = {"blocks_total": manifest.n_blocks, "blocks_complete": manifest.n_complete()}
    if finish:
        extra = {} if extended_from is None else {"extended_from": extended_from}
        rec = store.finish_stage("generate", h, metrics, blocks_computed_last_run=computed, **extra)
    else:
        rec = store.record("generate")
    return {
        "stage": "generate",
        "store": str(store.path),
        "hash": h,
        "blocks_computed": computed,
        "metrics": rec["metrics"],
    }


@task(name="generate-data", cache_key_fn=stage_cache_key("generate"), persist_result=True)
def generate_task(config: PipelineConfig, scheduler: str, overwrite: bool = False) -> dict:
    """Prefect wrapper: connect to the flow's Dask scheduler and run stage 1."""
    from pdeflow.tasks.stages import reporter

    with Client(scheduler) as client:
        return generate(config, client, overwrite, progress=reporter("generate"))


def to_unit(gen: GenerateConfig, params: np.ndarray) -> np.ndarray:
    """Inverse of ``to_physical``: parameters (n, d) to the unit cube via the marginals' CDFs."""
    cols = [
        MARGINALS[spec.distribution](spec.low, spec.high).cdf(params[:, j])
        for j, spec in enumerate(gen.parameter_specs)
    ]
    return np.stack(cols, axis=1) if cols else np.zeros((len(params), 0))
