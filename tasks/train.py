"""Stage 2: train the one-step neural operator from the run store, resumable per epoch.

Data streams from the store a few chunks at a time (never the whole store); the normalisation
statistics come from the training split alone; a checkpoint with the model, optimiser, scheduler,
epoch and the shuffling generator's state is written every epoch, and a re-run resumes from it.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import numpy as np
import torch
from pdeflow.storage import RunStore
from pdeflow.storage import dataset as ds_io
from pdeflow.storage.checkpoints import load_latest, save_checkpoint
from pdeflow.tasks.config import GenerateConfig, PipelineConfig
from pdeflow.tasks.generate import SPLITS, to_unit
from pdeflow.tasks.metrics import nrmse as nrmse_nd
from pdeflow.tasks.stages import prepare_stage, reporter, stage_cache_key, stage_config, stage_hash
from pdeflow.tasks.surrogates import get_surrogate
from pdeflow.tasks.surrogates.fno import OneStepSurrogate
from pdeflow.tasks.surrogates.training import (
    evaluate,
    make_optimizer,
    make_scheduler,
    restore_training_state,
    rollout,
    train_epoch,
    training_state,
)
from prefect import task

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
    """Per-channel field mean/std, increment std and parameter mean/std of a split.

    Read one chunk at a time; sums in float64; population (ddof=0) statistics over samples,
    time and space, separately for every channel.
    """
    acc = None
    for _, u in ds_io.iter_chunks(path, indices):
        u = np.moveaxis(u.astype(np.float64), 2, 0)  # (C, n, T, *space)
        inc = np.diff(u, axis=2)
        flat, dflat = u.reshape(len(u), -1), inc.reshape(len(u), -1)
        part = np.stack(
            [
                np.full(len(u), flat.shape[1]),
                flat.sum(1),
                (flat**2).sum(1),
                np.full(len(u), dflat.shape[1]),
                dflat.sum(1),
                (dflat**2).sum(1),
            ]
        )
        acc = part if acc is None else acc + part
    n, s, s2, nd, d, d2 = acc
    mean, dmean = s / n, d / nd
    return {
        "field_mean": mean,
        "field_std": np.sqrt(np.maximum(s2 / n - mean**2, 0.0)),
        "delta_std": np.sqrt(np.maximum(d2 / nd - dmean**2, 0.0)),
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
        n_t, state = u.shape[1] - 1, u.shape[2:]
        buffer.append(
            (
                u[:, :-1].reshape(-1, *state),
                np.repeat(p, n_t, axis=0),
                u[:, 1:].reshape(-1, *state),
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


def surrogate_name(cfg: PipelineConfig) -> str:
    """The configured architecture; ``auto`` picks the FNO of the data's dimension."""
    if cfg.train.surrogate != "auto":
        return cfg.train.surrogate
    return f"fno{cfg.generate.dim}d"


def check_trainable(cfg: PipelineConfig) -> None:
    """Raise ValueError when the generated data cannot train a one-step surrogate."""
    gen = cfg.generate
    if not gen.is_custom and gen.entry.stationary:
        raise ValueError(
            f"train: {gen.pde} is stationary (one state per sample); the one-step surrogate "
            "needs a time-dependent PDE"
        )
    name = surrogate_name(cfg)
    if name != f"fno{gen.dim}d":
        raise ValueError(f"train.surrogate: {name} does not fit {gen.dim}D data")


def build_model(cfg: PipelineConfig, stats: dict) -> OneStepSurrogate:
    tc, n_params = cfg.train, len(cfg.generate.parameter_names)
    gen = torch.Generator().manual_seed(tc.seed)
    net = get_surrogate(surrogate_name(cfg))(
        n_fields=len(cfg.generate.fields),
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
        true = torch.as_tensor(u, dtype=dtype)  # (n, T, C, *space)
        p = torch.as_tensor(p_unit[[lookup[int(r)] for r in rows]], dtype=dtype)
        with torch.no_grad():
            n, t, state = true.shape[0], true.shape[1], true.shape[2:]
            flat_p = p.repeat_interleave(t - 1, dim=0)
            step = model(true[:, :-1].reshape(-1, *state), flat_p)
        roll = rollout(model, true[:, 0], p, t - 1).numpy()
        tn = true.numpy()
        nrmse = partial(nrmse_nd, n_space_dims=len(state) - 1)
        sums["one_step"] += nrmse(step.reshape(n, t - 1, *state).numpy(), tn[:, 1:]).sum()
        sums["rollout"] += nrmse(roll[:, 1:], tn[:, 1:]).sum()
        sums["persist_one_step"] += nrmse(tn[:, :-1], tn[:, 1:]).sum()
        sums["persist_rollout"] += nrmse(
            np.broadcast_to(tn[:, :1], tn[:, 1:].shape), tn[:, 1:]
        ).sum()
        count += n * (t - 1) * true.shape[2]  # nrmse is per sample, step and channel
    return {f"nrmse_{k}": float(v / count) for k, v in sums.items()}


Progress = Callable[[int, int], None]
# The training log's file, beside the checkpoints it describes (removed with them).
TRAINING_LOG = "training-log.jsonl"
# Seconds between two "batch" lines of the training log, after each epoch's first batch.
LOG_INTERVAL_S = 10.0


class TrainingLog:
    """Append-only JSON-lines log of every training attempt on a store.

    One line per event, each with ``event``, ``pid`` and wall-clock ``time`` (s since the
    epoch): ``start`` (with ``resumed_from_epoch``), ``batch`` (``epoch`` being trained, 1-based,
    ``batch`` done and its ``loss``; the first batch of every epoch, then at most one per
    ``interval`` seconds) and ``epoch`` (after its checkpoint is written). The stage record's
    history is rewritten by a resumed run; this log keeps every attempt, so it shows where a
    killed run stopped and that no finished epoch ran twice. Costs one short append per line.

    Args:
        path: the log file; its directory is created on the first write.
        interval: minimum seconds between two batch lines of one epoch, >= 0.
        clock: monotonic clock in seconds (injectable for tests).
    """

    def __init__(self, path: Path, interval: float = LOG_INTERVAL_S, clock=time.monotonic):
        if interval < 0:
            raise ValueError(f"interval must be >= 0 seconds, got {interval}")
        self.path, self.interval, self.clock = Path(path), interval, clock

    def write(self, event: str, **fields) -> None:
        line = {"event": event, "pid": os.getpid(), "time": time.time(), **fields}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as fh:
            fh.write(json.dumps(line) + "\n")

    def batches(self, epoch: int) -> Callable[[int, float], None]:
        """An ``on_batch(batch, loss)`` callback for ``train_epoch`` of 1-based ``epoch``."""
        last = -float("inf")

        def on_batch(batch: int, loss: float) -> None:
            nonlocal last
            now = self.clock()
            if batch == 1 or now - last >= self.interval:
                self.write("batch", epoch=epoch, batch=batch, loss=loss)
                last = now

        return on_batch

    def read(self) -> list[dict]:
        """Every complete line written so far, oldest first; [] without a log.

        A line still being appended (no newline yet) is left out, so a reader may poll the log
        of a running training.
        """
        if not self.path.is_file():
            return []
        *complete, _partial = self.path.read_text().split("\n")
        return [json.loads(line) for line in complete if line]


def train(cfg: PipelineConfig, overwrite: bool = False, progress: Progress | None = None) -> dict:
    """Run stage 2: train (resuming from the latest checkpoint), then evaluate on the test split."""
    store = RunStore.named(cfg.store)
    h = stage_hash(cfg, "train")
    if not store.is_complete("generate", stage_hash(cfg, "generate")):
        raise RuntimeError(f"train needs a complete generate stage in {store.path}; run generate")
    check_trainable(cfg)
    extended = prepare_stage(store, cfg, "train", overwrite)
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
    if extended:
        _warm_start(store, model, optimizer, scheduler, shuffle)
    state = load_latest(store.checkpoint_dir)
    if state is not None:
        start, history = restore_training_state(state, model, optimizer, scheduler, shuffle)
    log = TrainingLog(store.checkpoint_dir / TRAINING_LOG)
    log.write("start", resumed_from_epoch=start, epochs=tc.epochs)
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
        loss = train_epoch(model, optimizer, batches, on_batch=log.batches(epoch + 1))
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
        log.write("epoch", epoch=epoch + 1, train_loss=loss, val_loss=val)
        if progress:
            progress(epoch + 1, tc.epochs)
    test_idx = split_indices(path, "test")
    metrics = evaluate_test(model, path, test_idx, p_all[test_idx])
    metrics["epochs"] = tc.epochs
    metrics["final_train_loss"] = history[-1]["train_loss"]
    torch.save(model.state_dict(), store.meta_dir / "model.pt")
    store.finish_stage(
        "train", h, metrics, history=history, resumed_from_epoch=start, warm_started=extended
    )
    return _summary(store, h, trained=tc.epochs - start)


def _warm_start(store: RunStore, model, optimizer, scheduler, shuffle) -> None:
    """Continue from the model trained on fewer samples: its weights become epoch 0.

    Written as the epoch-0 checkpoint, so a run killed before its first epoch resumes from the
    same warm weights. The normalisation buffers come with the weights: the network was trained
    in those units.
    """
    shutil.rmtree(store.checkpoint_dir, ignore_errors=True)
    if not (store.meta_dir / "model.pt").is_file():  # the smaller run never finished training
        return
    state = torch.load(store.meta_dir / "model.pt", map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    save_checkpoint(
        store.checkpoint_dir, 0, training_state(model, optimizer, scheduler, 0, shuffle, [])
    )


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
