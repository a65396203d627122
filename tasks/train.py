"""Stage 2: train the one-step neural operator from the run store, resumable per epoch.

Data streams from the store a few chunks at a time (never the whole store); the normalisation
statistics come from the training split alone; a checkpoint with the model, optimiser, scheduler,
epoch and the shuffling generator's state is written every epoch, and a re-run resumes from it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from prefect import task

from storage import RunStore
from storage import dataset as ds_io
from storage.checkpoints import load_latest, save_checkpoint
from tasks.config import GenerateConfig, PipelineConfig
from tasks.generate import SPLITS, to_unit
from tasks.metrics import nrmse
from tasks.stages import reporter, stage_cache_key, stage_config, stage_hash
from tasks.surrogates import get_surrogate
from tasks.surrogates.fno import OneStepSurrogate
from tasks.surrogates.training import (
    evaluate,
    make_optimizer,
    make_scheduler,
    restore_training_state,
    rollout,
    train_epoch,
    training_state,
)

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def split_indices(path: Path, name: str) -> np.ndarray:
    """Sample indices of split ``name`` (one of ``SPLITS``), ascending."""
    codes = ds_io.read_coords(path, ["split"])[:, 0]
    return np.flatnonzero(codes == SPLITS.index(name))


def unit_parameters(path: Path, gen: GenerateConfig, indices: np.ndarray | None = None):
    """Parameters mapped to the unit cube by their marginals' CDFs (log scale for nu)."""
    params = ds_io.read_coords(path, gen.parameter_names)
    return to_unit(gen, params if indices is None else params[indices])


def streaming_stats(path: Path, indices: np.ndarray, p_unit: np.ndarray) -> dict:
    """Field mean/std, increment std and parameter mean/std of a split, one chunk at a time.

    Sums are accumulated in float64; population (ddof=0) statistics over samples, time and x.
    """
    n = s = s2 = nd = d = d2 = 0.0
    for _, u in ds_io.iter_chunks(path, indices):
        u = u.astype(np.float64)
        inc = np.diff(u, axis=1)
        n, s, s2 = n + u.size, s + u.sum(), s2 + (u**2).sum()
        nd, d, d2 = nd + inc.size, d + inc.sum(), d2 + (inc**2).sum()
    mean, dmean = s / n, d / nd
    return {
        "field_mean": [mean],
        "field_std": [np.sqrt(max(s2 / n - mean**2, 0.0))],
        "delta_std": [np.sqrt(max(d2 / nd - dmean**2, 0.0))],
        "param_mean": p_unit.mean(axis=0),
        "param_std": p_unit.std(axis=0),
    }


def iter_batches(
    path: Path,
    indices: np.ndarray,
    p_unit: np.ndarray,
    batch_size: int,
    shuffle_chunks: int,
    generator: torch.Generator | None,
    dtype: torch.dtype,
) -> Iterator[Batch]:
    """One-step pairs (u_t, p, u_{t+1}) in minibatches; shuffled within a buffer of chunks.

    ``p_unit`` is aligned with ``indices``. With ``generator`` None the order is fixed.
    """
    lookup = {int(i): k for k, i in enumerate(indices)}
    n_chunks = len(np.unique(indices // ds_io.chunk_size(path)))
    order = None if generator is None else torch.randperm(n_chunks, generator=generator).numpy()
    buffer: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for count, (rows, u) in enumerate(ds_io.iter_chunks(path, indices, order=order), start=1):
        p = p_unit[[lookup[int(r)] for r in rows]]
        n_t = u.shape[1] - 1
        buffer.append(
            (
                u[:, :-1].reshape(-1, 1, u.shape[2]),
                np.repeat(p, n_t, axis=0),
                u[:, 1:].reshape(-1, 1, u.shape[2]),
            )
        )
        if len(buffer) == shuffle_chunks or count == n_chunks:
            yield from _emit(buffer, batch_size, generator, dtype)
            buffer = []


def _emit(buffer, batch_size, generator, dtype) -> Iterator[Batch]:
    u, p, v = (
        torch.as_tensor(np.concatenate(part), dtype=dtype) for part in zip(*buffer, strict=True)
    )
    perm = (
        torch.arange(len(u)) if generator is None else torch.randperm(len(u), generator=generator)
    )
    for start in range(0, len(u), batch_size):
        idx = perm[start : start + batch_size]
        yield u[idx], p[idx], v[idx]


def build_model(cfg: PipelineConfig, stats: dict) -> OneStepSurrogate:
    tc, n_params = cfg.train, len(cfg.generate.parameter_names)
    gen = torch.Generator().manual_seed(tc.seed)
    net = get_surrogate(tc.surrogate)(
        n_fields=1,
        n_params=n_params,
        width=tc.width,
        modes=tc.modes,
        n_layers=tc.n_layers,
        generator=gen,
    )
    model = OneStepSurrogate(net, **stats)
    return model.to(device=torch.device(tc.device), dtype=getattr(torch, cfg.generate.dtype))


def evaluate_test(model, path: Path, indices: np.ndarray, p_unit: np.ndarray) -> dict:
    """PDEBench nRMSE (input frame excluded) of the model and of persistence, chunk by chunk."""
    lookup = {int(i): k for k, i in enumerate(indices)}
    sums = dict.fromkeys(("one_step", "rollout", "persist_one_step", "persist_rollout"), 0.0)
    count = 0
    dtype = next(model.parameters()).dtype
    for rows, u in ds_io.iter_chunks(path, indices):
        true = torch.as_tensor(u, dtype=dtype)[:, :, None]  # (n, T, 1, x)
        p = torch.as_tensor(p_unit[[lookup[int(r)] for r in rows]], dtype=dtype)
        with torch.no_grad():
            n, t = true.shape[:2]
            flat_p = p.repeat_interleave(t - 1, dim=0)
            step = model(true[:, :-1].reshape(-1, 1, true.shape[-1]), flat_p)
        roll = rollout(model, true[:, 0], p, t - 1).numpy()
        tn = true.numpy()
        sums["one_step"] += nrmse(step.reshape(n, t - 1, 1, -1).numpy(), tn[:, 1:]).sum()
        sums["rollout"] += nrmse(roll[:, 1:], tn[:, 1:]).sum()
        sums["persist_one_step"] += nrmse(tn[:, :-1], tn[:, 1:]).sum()
        sums["persist_rollout"] += nrmse(
            np.broadcast_to(tn[:, :1], tn[:, 1:].shape), tn[:, 1:]
        ).sum()
        count += n * (t - 1)
    return {f"nrmse_{k}": float(v / count) for k, v in sums.items()}


Progress = Callable[[int, int], None]


def train(cfg: PipelineConfig, overwrite: bool = False, progress: Progress | None = None) -> dict:
    """Run stage 2: train (resuming from the latest checkpoint), then evaluate on the test split."""
    store = RunStore.named(cfg.store)
    h = stage_hash(cfg, "train")
    if not store.is_complete("generate", stage_hash(cfg, "generate")):
        raise RuntimeError(f"train needs a complete generate stage in {store.path}; run generate")
    store.check_config("train", stage_config(cfg, "train"), h, overwrite)
    if store.is_complete("train", h):
        return _summary(store, h, trained=0)
    store.start_stage("train", stage_config(cfg, "train"), h)
    tc, path = cfg.train, store.path
    torch_dtype = getattr(torch, cfg.generate.dtype)
    p_all = unit_parameters(path, cfg.generate)
    train_idx, val_idx = split_indices(path, "train"), split_indices(path, "val")
    model = build_model(cfg, streaming_stats(path, train_idx, p_all[train_idx]))
    optimizer = make_optimizer(model, tc.lr, tc.weight_decay)
    scheduler = make_scheduler(optimizer, tc.epochs)
    shuffle = torch.Generator().manual_seed(tc.seed + 1)
    start, history = 0, []
    state = load_latest(store.checkpoint_dir)
    if state is not None:
        start, history = restore_training_state(state, model, optimizer, scheduler, shuffle)
    for epoch in range(start, tc.epochs):
        batches = iter_batches(
            path,
            train_idx,
            p_all[train_idx],
            tc.batch_size,
            tc.shuffle_chunks,
            shuffle,
            torch_dtype,
        )
        loss = train_epoch(model, optimizer, batches)
        scheduler.step()
        val = (
            evaluate(
                model,
                iter_batches(
                    path,
                    val_idx,
                    p_all[val_idx],
                    tc.batch_size,
                    tc.shuffle_chunks,
                    None,
                    torch_dtype,
                ),
            )
            if len(val_idx)
            else float("nan")
        )
        history.append({"epoch": epoch + 1, "train_loss": loss, "val_loss": val})
        save_checkpoint(
            store.checkpoint_dir,
            epoch + 1,
            training_state(model, optimizer, scheduler, epoch + 1, shuffle, history),
        )
        if progress:
            progress(epoch + 1, tc.epochs)
    test_idx = split_indices(path, "test")
    metrics = evaluate_test(model, path, test_idx, p_all[test_idx])
    metrics["epochs"] = tc.epochs
    metrics["final_train_loss"] = history[-1]["train_loss"]
    torch.save(model.state_dict(), store.meta_dir / "model.pt")
    store.finish_stage("train", h, metrics, history=history, resumed_from_epoch=start)
    return _summary(store, h, trained=tc.epochs - start)


def load_model(cfg: PipelineConfig, store: RunStore) -> OneStepSurrogate:
    """The trained surrogate of a store, loaded with ``weights_only=True``."""
    state = torch.load(store.meta_dir / "model.pt", map_location="cpu", weights_only=True)
    stats = {
        k: state[k].cpu().numpy()
        for k in ("field_mean", "field_std", "param_mean", "param_std", "delta_std")
    }
    model = build_model(cfg, stats)
    model.load_state_dict(state)
    return model.eval()


def _summary(store: RunStore, h: str, trained: int) -> dict:
    rec = store.record("train")
    return {
        "stage": "train",
        "store": str(store.path),
        "hash": h,
        "epochs_trained": trained,
        "metrics": rec["metrics"],
    }


@task(name="train-surrogate", cache_key_fn=stage_cache_key("train"), persist_result=True)
def train_task(config: PipelineConfig, scheduler: str, overwrite: bool = False) -> dict:
    """Prefect wrapper of stage 2 (training runs in this process, on ``train.device``)."""
    return train(config, overwrite, progress=reporter("train"))
