"""Stage 1: sample the parameters, solve the PDE block by block on Dask, fill the run store.

The Prefect task is one coarse task per stage: fine-grained fan-out (one Dask task per block) goes
to Dask directly, so the number of Prefect task runs does not grow with the number of samples.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from importlib.metadata import version

import numpy as np
import torch
from distributed import Client, as_completed, get_worker
from prefect import task

from storage import RunStore
from storage import dataset as ds_io
from storage.manifest import BlockManifest
from tasks.config import GenerateConfig, PipelineConfig
from tasks.pdes import BlowUpError, get_pde
from tasks.sampling import MARGINALS, sample_seeds, sample_unit
from tasks.stages import stage_cache_key, stage_config, stage_hash

SPLITS = ("train", "val", "test", "calibration")
Progress = Callable[[int, int], None]


class GenerationError(RuntimeError):
    """One or more blocks failed; completed blocks stay complete and are not recomputed."""


def to_physical(gen: GenerateConfig, unit: np.ndarray) -> np.ndarray:
    """Map design points in [0, 1)^d to parameters, shape (n, d), columns ``parameter_names``."""
    cols = [
        MARGINALS[spec.distribution](spec.low, spec.high).ppf(unit[:, j])
        for j, spec in enumerate(gen.parameter_specs)
    ]
    return np.stack(cols, axis=1)


def split_labels(gen: GenerateConfig) -> np.ndarray:
    """Seeded assignment of every sample to a split, codes index ``SPLITS``; shape (n,)."""
    n, s = gen.n_samples, gen.split
    counts = np.floor(np.array([s.train, s.val, s.test, s.calibration]) * n).astype(int)
    counts[0] += n - counts.sum()
    labels = np.repeat(np.arange(4, dtype=np.int8), counts)
    return np.random.default_rng(np.random.SeedSequence(s.seed)).permutation(labels)


def initial_condition(gen: GenerateConfig, params: np.ndarray, x: torch.Tensor) -> torch.Tensor:
    """u0(x) = sum_k a_k sin(2 pi k x / L); params (n, d) with amplitudes after nu."""
    k = torch.tensor(gen.modes, dtype=x.dtype, device=x.device)
    amp = torch.as_tensor(params[:, 1:], dtype=x.dtype, device=x.device)
    return amp @ torch.sin(2 * torch.pi * k[:, None] * x[None, :] / gen.length)


def solve_parameters(gen: GenerateConfig, params: np.ndarray) -> np.ndarray:
    """Solve one batch of trajectories; shape (n, n_frames, n_x), in ``gen.dtype``.

    Raises:
        BlowUpError: non-finite values or a CFL violation, naming the batch rows.
    """
    dtype = getattr(torch, gen.dtype)
    device = torch.device(gen.device)
    pde = get_pde(gen.pde)(
        gen.n_x, nu=params[:, 0], dt=gen.internal_dt, length=gen.length, device=device, dtype=dtype
    )
    u0 = initial_condition(gen, params, pde.x)
    return pde.rollout(u0, gen.n_frames, gen.steps_per_frame).cpu().numpy()


def solve_block(store_path: str, gen_json: dict, block: int) -> dict:
    """Dask task: solve block ``block`` and write it to its own chunk-aligned region."""
    gen = GenerateConfig.model_validate(gen_json)
    try:
        torch.set_num_threads(max(1, get_worker().state.nthreads))
    except ValueError:  # called outside a worker (direct use, tests)
        pass
    start = block * gen.block_size
    stop = min(start + gen.block_size, gen.n_samples)
    store = RunStore(store_path)
    params = ds_io.read_coords(store.path, gen.parameter_names, start, stop)
    t0 = time.perf_counter()
    try:
        values = solve_parameters(gen, params)
    except BlowUpError as err:
        bad = [start + i for i in err.samples]
        raise GenerationError(
            f"block {block}: {type(err).__name__} at t={err.time:.4g} in samples {bad}: {err}"
        ) from None
    seconds = time.perf_counter() - t0
    checksum = ds_io.write_block(store.path, block, start, values, seconds)
    return {"block": block, "seconds": seconds, "checksum": checksum}


def dataset_card(gen: GenerateConfig) -> str:
    lines = [
        "# pdeflow dataset: 1D viscous Burgers",
        "",
        "Equation: u_t + (u^2/2)_x = nu u_xx, x in [0, L), periodic boundary conditions.",
        f"Domain: L = {gen.length:g}, n_x = {gen.n_x}; time [0, {gen.t_end:g}], "
        f"{gen.n_frames} saved frames, internal step {gen.internal_dt:.4g}.",
        f"Initial condition: u0 = sum_k a_k sin(2 pi k x / L), k in {list(gen.modes)}.",
        f"Solver: pseudo-spectral, ETDRK4 (Cox & Matthews 2002), 2/3 dealiasing, {gen.dtype}.",
        f"Design: {gen.design}, seed {gen.seed}, {gen.n_samples} samples.",
        "Parameters:",
    ]
    for name, spec in zip(gen.parameter_names, gen.parameter_specs, strict=True):
        lines.append(f"- {name}: {spec.distribution} on [{spec.low:g}, {spec.high:g}]")
    return "\n".join(lines)


def _coords(gen: GenerateConfig) -> dict:
    unit = sample_unit(gen.design, gen.n_samples, len(gen.parameter_names), gen.seed)
    params = to_physical(gen, unit)
    idx = np.arange(gen.n_samples)
    units = {"nu": "length^2/time"}
    coords = {
        "sample": ("sample", idx),
        "time": ("time", np.linspace(0.0, gen.t_end, gen.n_frames), {"units": "time"}),
        "x": ("x", np.arange(gen.n_x) * gen.length / gen.n_x, {"units": "length"}),
        "seed": ("sample", sample_seeds(gen.seed, idx), {"description": "per-sample seed"}),
        "split": (
            "sample",
            split_labels(gen),
            {"flag_values": list(range(4)), "flag_meanings": " ".join(SPLITS)},
        ),
    }
    for j, name in enumerate(gen.parameter_names):
        coords[name] = ("sample", params[:, j], {"units": units.get(name, "velocity")})
    return coords


def _create_store(store: RunStore, gen: GenerateConfig) -> None:
    attrs = {
        "pdeflow_version": version("pdeflow"),
        "config": gen.model_dump(mode="json"),
        "solver": {
            "name": "pseudo-spectral ETDRK4",
            "dealiasing": "2/3",
            "steps_per_frame": gen.steps_per_frame,
            "dtype": gen.dtype,
        },
        "parameters": gen.parameter_names,
        "dataset_card": dataset_card(gen),
    }
    ds_io.create_trajectories(
        store.path,
        shape=(gen.n_samples, gen.n_frames, gen.n_x),
        chunk_size=gen.chunk_size,
        n_blocks=gen.n_blocks,
        dtype=gen.dtype,
        coords=_coords(gen),
        attrs=attrs,
        field_attrs={"units": "velocity", "long_name": "Burgers velocity u(t, x)"},
    )
    store.consolidate()


def generate(
    cfg: PipelineConfig, client: Client, overwrite: bool = False, progress: Progress | None = None
) -> dict:
    """Run stage 1: compute the blocks the manifest lacks, then mark the stage complete.

    Returns:
        Summary with the store path, config hash, and counts of blocks computed and skipped.
    """
    gen = cfg.generate
    store = RunStore.named(cfg.store)
    h = stage_hash(cfg, "generate")
    store.check_config("generate", stage_config(cfg, "generate"), h, overwrite)
    if store.is_complete("generate", h):
        return _summary(store, h, computed=0)
    if not (store.path / "zarr.json").is_file():
        _create_store(store, gen)
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
    )
    errors = []
    for fut in as_completed(futures):
        if fut.status == "error":
            errors.append(str(fut.exception()))
        else:
            done += 1
            if progress:
                progress(done, total)
    if errors:
        raise GenerationError(
            f"{len(errors)} of {len(missing)} blocks failed; {done} of {total} complete "
            "(re-run to retry only the failed ones):\n" + "\n".join(sorted(errors))
        )
    return _summary(store, h, computed=len(missing), finish=True)


def _summary(store: RunStore, h: str, computed: int, finish: bool = False) -> dict:
    manifest = BlockManifest(store.path)
    metrics = {"blocks_total": manifest.n_blocks, "blocks_complete": manifest.n_complete()}
    if finish:
        rec = store.finish_stage("generate", h, metrics, blocks_computed_last_run=computed)
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
    from tasks.stages import reporter

    with Client(scheduler) as client:
        return generate(config, client, overwrite, progress=reporter("generate"))


def to_unit(gen: GenerateConfig, params: np.ndarray) -> np.ndarray:
    """Inverse of ``to_physical``: parameters (n, d) to the unit cube via the marginals' CDFs."""
    cols = [
        MARGINALS[spec.distribution](spec.low, spec.high).cdf(params[:, j])
        for j, spec in enumerate(gen.parameter_specs)
    ]
    return np.stack(cols, axis=1)
