"""Training units: one model, one config, trained as one Dask task on a worker.

``train_unit`` is the task. It streams its data from the run store, writes a checkpoint to its
own directory after every epoch, and resumes from the newest intact one, so a killed worker
(Dask re-runs its task elsewhere) or a killed run loses at most one epoch of the units that were
running, and a finished unit is never trained again: its result is written last, after its
model, and names the model's size and CRC32. The batches are the train stage's own
(``train.iter_batches``); multi-frame windows (history or pushforward) come from
``pdeflow.storage.TrajectoryDataset`` in chunk order.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import socket
import time
from collections.abc import Iterator

import numpy as np
import torch

from pdeflow.storage import FileEntry, RunStore, TrajectoryDataset, chunk_order_sampler
from pdeflow.tasks.config import PipelineConfig
from pdeflow.tasks.config_train import Unit
from pdeflow.tasks.metrics import nrmse
from pdeflow.tasks.surrogates.factory import build_model
from pdeflow.tasks.surrogates.training import (
    NonFiniteLoss,
    evaluate,
    make_optimizer,
    make_scheduler,
    restore_training_state,
    rollout,
    stack_frames,
    train_epoch,
    training_state,
)

STAGE = "train"
Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
# Seconds between two "batch" lines of a unit's log after each epoch's first batch.
LOG_INTERVAL_S = 10.0


class TrainingLog:
    """The training log of one unit: every attempt's start, throttled batches and epochs.

    Lines (``storage.log.EventLog``): ``start`` (``resumed_from_epoch``, ``worker``),
    ``batch`` (``epoch`` being trained, 1-based, ``batch`` done and its ``loss``; the first
    batch of every epoch, then at most one per ``interval`` seconds) and ``epoch`` (after its
    checkpoint). The record's history is rewritten by a resumed run; this log keeps every
    attempt, so it shows where a killed run stopped and that no finished epoch ran twice. The
    flow process reads it for the progress line while the unit runs on a worker.
    """

    def __init__(
        self,
        store: RunStore,
        unit: str = "model",
        interval: float = LOG_INTERVAL_S,
        clock=time.monotonic,
    ):
        if interval < 0:
            raise ValueError(f"interval must be >= 0 seconds, got {interval}")
        self.events = store.log(STAGE, f"units/{unit}/log.jsonl")
        self.interval, self.clock = interval, clock

    def write(self, event: str, **fields) -> None:
        self.events.write(event, **fields)

    def read(self) -> list[dict]:
        return self.events.read()

    def batches(self, epoch: int):
        """An ``on_batch(batch, loss)`` callback for ``train_epoch`` of 1-based ``epoch``."""
        last = -math.inf

        def on_batch(batch: int, loss: float) -> None:
            nonlocal last
            now = self.clock()
            if batch == 1 or now - last >= self.interval:
                self.write("batch", epoch=epoch, batch=batch, loss=loss)
                last = now

        return on_batch

    def progress(self) -> dict:
        """The last attempt's epochs done, and the epoch and loss it is at."""
        events = self.read()
        starts = [i for i, e in enumerate(events) if e["event"] == "start"]
        if not starts:
            return {}
        latest = events[starts[-1] :]
        done = latest[0].get("resumed_from_epoch", 0)
        facts: dict = {"epochs_done": done}
        for e in latest[1:]:
            if e["event"] == "epoch":
                facts.update(epochs_done=e["epoch"], loss=e["train_loss"], val_loss=e["val_loss"])
            elif e["event"] == "batch":
                facts.update(epoch=e["epoch"], batch=e["batch"], batch_loss=e["loss"])
        return facts


def unit_config(cfg: PipelineConfig, unit: Unit) -> PipelineConfig:
    """The pipeline config a unit trains with: its seed and overrides in ``train``."""
    return cfg.model_copy(update={"train": unit.config(cfg.train)})


def unit_hash(stage_hash: str, unit: Unit) -> str:
    """The name of a unit's results: the stage's config hash, the unit's seed and overrides."""
    text = json.dumps([stage_hash, unit.name, unit.seed, unit.overrides], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _device(cfg: PipelineConfig) -> torch.device:
    # dask-cuda gives each worker one GPU through CUDA_VISIBLE_DEVICES: it is cuda:0 there.
    return torch.device("cuda:0" if cfg.train.device == "cuda" else "cpu")


def _where() -> tuple[str, int]:
    """The Dask worker's address and thread count, or this host and 1 outside a worker."""
    try:
        from distributed import get_worker

        worker = get_worker()
        return worker.address, max(1, worker.state.nthreads)
    except (ImportError, ValueError):
        return f"in-process:{socket.gethostname()}:{os.getpid()}", 1


def iter_batches(
    store: RunStore,
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
    n_chunks = store.n_chunks_of(indices)
    order = None if generator is None else torch.randperm(n_chunks, generator=generator).numpy()
    buffer: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for count, (rows, u) in enumerate(store.iter_chunks(indices, order=order), start=1):
        p = p_unit[[lookup[int(r)] for r in rows]]
        n_t, state = u.shape[1] - 1, u.shape[2:]
        buffer.append(
            (u[:, :-1].reshape(-1, *state), np.repeat(p, n_t, axis=0), u[:, 1:].reshape(-1, *state))
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


class Data:
    """A unit's training and validation batches, read from the store every epoch."""

    def __init__(self, store: RunStore, cfg: PipelineConfig, p_all: np.ndarray, idx: dict):
        self.store, self.cfg, self.p_all, self.idx = store, cfg, p_all, idx
        tc = cfg.train
        self.frames = tc.history + tc.pushforward
        self.dtype = getattr(torch, cfg.generate.dtype)
        self._datasets: dict[str, TrajectoryDataset] = {}  # per split, kept across epochs

    @property
    def windows(self) -> bool:
        """Multi-frame windows (history or pushforward), else one-step pairs."""
        return self.frames > 2

    def batches(self, split: str, generator: torch.Generator | None):
        tc, idx = self.cfg.train, self.idx[split]
        if not self.windows:
            return iter_batches(
                self.store, idx, self.p_all[idx], tc.batch_size, tc.shuffle_chunks, generator,
                self.dtype,
            )  # fmt: skip
        return self._windows(split, generator)

    def _windows(self, split: str, generator: torch.Generator | None):
        """``(window (B, history + pushforward, C, *space), p (B, P))`` batches."""
        tc = self.cfg.train
        if split not in self._datasets:  # its layout, split and parameters are read once
            self._datasets[split] = TrajectoryDataset(
                self.store, split=split, history=tc.history, horizon=tc.pushforward
            )
        ds = self._datasets[split]
        order = range(len(ds)) if generator is None else chunk_order_sampler(ds, generator)
        buffer: list[dict] = []
        for i in order:
            buffer.append(ds[i])
            if len(buffer) == tc.batch_size:
                yield self._batch(buffer)
                buffer = []
        if buffer:
            yield self._batch(buffer)

    def _batch(self, items: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
        # The input frames and the target frames after them are one window.
        window = torch.stack([torch.cat([it["input"], it["target"]]) for it in items])
        p = self.p_all[[int(it["sample"]) for it in items]]
        return window.to(self.dtype), torch.as_tensor(p, dtype=self.dtype)


def train_unit(
    store_path: str,
    store_name: str,
    cfg: PipelineConfig,
    unit: Unit,
    stats: dict,
    p_all: np.ndarray,
    idx: dict,
    stage_hash: str,
    warm: tuple[str, list[int]] | None = None,
) -> dict:
    """Dask task: train ``unit`` to ``cfg.train.epochs``, resuming from its own checkpoint.

    Args:
        cfg: the stage's config (the unit applies its own seed and overrides).
        stats: normalisation statistics of the training split (the same for every unit).
        p_all: every sample's parameters mapped to the unit cube, (n_samples, n_params).
        idx: sample indices of the ``train``, ``val`` and ``test`` splits.
        stage_hash: the train stage's config hash.
        warm: a model file (relative to the store) and its entry to start from, for a grown
            store.

    Returns:
        The unit's result: name, seed, overrides, worker, device, epochs, seconds, history and
        validation metrics, and its model file.

    Raises:
        FloatingPointError: a non-finite loss; the unit's last good checkpoint is kept.
    """
    return _train(store_path, store_name, cfg, unit, stats, p_all, idx, stage_hash, warm, None)


def train_unit_rank(
    rank: int,
    world: int,
    init_method: str,
    store_path: str,
    store_name: str,
    cfg: PipelineConfig,
    unit: Unit,
    stats: dict,
    p_all: np.ndarray,
    idx: dict,
    stage_hash: str,
    warm: tuple[str, list[int]] | None = None,
) -> dict | None:
    """Dask task: rank ``rank`` of ``world`` training one unit together with the other ranks
    (``train.data_parallel``, torch DDP; see ``pdeflow.tasks.surrogates.data_parallel``).

    Every rank runs on its own worker process, reads every batch and trains on its share of
    it; rank 0 writes the checkpoints, the log and the result. All ranks resume from the same
    checkpoint. The other arguments are ``train_unit``'s.

    Returns:
        rank 0: the unit's result, as ``train_unit``'s, with ``ranks`` (each rank's worker);
        every other rank: None.
    """
    from pdeflow.tasks.surrogates.data_parallel import process_group

    args = (store_path, store_name, cfg, unit, stats, p_all, idx, stage_hash, warm)
    with process_group(rank, world, init_method, _device(cfg)):
        return _train(*args, (rank, world))


def _train(
    store_path, store_name, cfg, unit, stats, p_all, idx, stage_hash, warm, ranks
) -> dict | None:
    """``train_unit``'s body; ``ranks = (rank, world)`` in a data-parallel run."""
    store = RunStore(store_path, store_name)
    key = unit_hash(stage_hash, unit)
    done = store.unit_result(STAGE, unit.name, key)
    if done is not None:  # Dask re-ran a finished task whose worker died afterwards
        return done
    lead = ranks is None or ranks[0] == 0  # writes the checkpoints, the log and the result
    worker, threads = _where()
    torch.set_num_threads(threads)
    ucfg = unit_config(cfg, unit)
    tc, device = ucfg.train, _device(ucfg)
    model = build_model(ucfg, stats).to(device)
    optimizer = make_optimizer(model, tc.lr, tc.weight_decay)
    scheduler = make_scheduler(optimizer, tc.epochs)
    shuffle = torch.Generator().manual_seed(tc.seed + 1)
    noise = torch.Generator().manual_seed(tc.seed + 2)
    data = Data(store, ucfg, p_all, idx)
    state, warnings = store.load_unit_checkpoint(STAGE, unit.name)
    log = TrainingLog(store, unit.name)
    for warning in warnings if lead else ():
        log.write("warning", message=warning)
    start, history, seconds = 0, [], 0.0
    if state is not None and state.get("config_hash") == key:
        start, history = restore_training_state(state, model, optimizer, scheduler, shuffle)
        noise.set_state(state["noise"])
        seconds = float(state.get("seconds", 0.0))
    elif warm is not None:
        model.load_state_dict(store.load_model(warm[0], FileEntry(*warm[1])))
    dp, where = None, [worker]
    if ranks is not None:
        dp, where = _join_ranks(model, ranks, device, unit, worker, start)
    if lead:
        log.write("start", resumed_from_epoch=start, epochs=tc.epochs, worker=worker)
    began = time.time()
    for epoch in range(start, tc.epochs):
        t0 = time.perf_counter()
        on_batch = log.batches(epoch + 1) if lead else None
        try:
            loss = train_epoch(
                model, optimizer, data.batches("train", shuffle), on_batch,
                pushforward=tc.pushforward, noise_std=tc.noise_std,
                generator=noise if tc.pushforward > 1 or tc.noise_std > 0 else None,
                data_parallel=dp,
            )  # fmt: skip
        except NonFiniteLoss as err:
            raise _stopped(unit, epoch + 1, err.batch, err.loss, epoch) from None
        error = None
        try:
            scheduler.step()
            val = evaluate(model, data.batches("val", None)) if len(idx["val"]) else float("nan")
            if len(idx["val"]) and not math.isfinite(val):
                raise _stopped(unit, epoch + 1, None, val, epoch)
            seconds += time.perf_counter() - t0
            history.append({"epoch": epoch + 1, "train_loss": loss, "val_loss": val})
            if lead:
                state = training_state(model, optimizer, scheduler, epoch + 1, shuffle, history)
                state.update(config_hash=key, noise=noise.get_state(), seconds=seconds)
                store.save_unit_checkpoint(STAGE, unit.name, epoch + 1, state)
                log.write("epoch", epoch=epoch + 1, train_loss=loss, val_loss=val)
        except Exception as exc:  # noqa: BLE001 - raised below, on this rank
            error = exc
        if dp is not None:
            dp.agree(error, f"epoch {epoch + 1}")  # no rank goes on without the others
        elif error is not None:
            raise error
    if not lead:
        return None
    result = {
        "unit": unit.name,
        "seed": unit.seed,
        "overrides": unit.overrides,
        "config_hash": key,
        "worker": worker,
        "device": _device_name(device),
        "threads": threads,
        "started": began,  # this attempt's wall-clock start and end (seconds since the epoch)
        "finished": time.time(),
        "epochs": tc.epochs,
        "epochs_this_attempt": tc.epochs - start,
        "seconds": seconds,
        "history": history,
        "val_nrmse_one_step": one_step_nrmse(model, store, idx["val"], p_all, ucfg),
        "final_train_loss": history[-1]["train_loss"] if history else float("nan"),
    }
    if ranks is not None:
        result["ranks"] = where
    state_dict = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    # The test split's predictions, here on the worker where the units run in parallel: the
    # stage's end only combines them (an ensemble of 4 scored in the flow process took 1.3 s
    # of a 6 s stage, python -m benchmarks.train_units).
    predictions = predict_split(model, store, idx["test"], p_all, tc.history, tc.batch_size)
    return store.save_unit_result(STAGE, unit.name, state_dict, result, predictions)


def _join_ranks(model, ranks: tuple[int, int], device, unit: Unit, worker: str, start: int):
    """The rank's DDP step, once every rank has restored the same epoch; and each rank's
    worker, in rank order."""
    import torch.distributed as dist

    from pdeflow.tasks.surrogates.data_parallel import RankStep

    seen: list = [None] * ranks[1]
    dist.all_gather_object(seen, (worker, start))
    epochs = [s for _, s in seen]
    if len(set(epochs)) > 1:  # a checkpoint written or damaged while the ranks were loading
        raise RuntimeError(
            f"train: unit {unit.name}: the ranks resumed from different epochs {epochs}; run "
            "the stage again"
        )
    return RankStep(model, *ranks, device), [w for w, _ in seen]


@torch.no_grad()
def predict_split(
    model, store: RunStore, indices: np.ndarray, p_all: np.ndarray, h: int, batch: int
) -> dict | None:
    """A model's predictions of a split: its rollout from the first ``h`` frames, and its
    one-step prediction of every later frame from the ``h`` true frames before it, ``batch``
    samples (or windows) advanced at once.

    Returns:
        ``{"rollout": (n, T, C, *space), "one_step": (n, T - h, C, *space)}``, CPU tensors in
        the model's dtype (the first ``h`` rollout frames are the inputs); None for an empty
        split.
    """
    if not len(indices):
        return None
    ref = next(model.parameters())
    steps, firsts, order = [], [], []
    for rows, u in store.iter_chunks(indices):  # in the order every score reads the split
        steps.append(one_step_predictions(model, u, p_all[rows], h, batch))
        firsts.append(torch.as_tensor(u[:, :h], dtype=ref.dtype))
        order.append(rows)
    n_steps = steps[0].shape[1]
    p = torch.as_tensor(p_all[np.concatenate(order)], dtype=ref.dtype)
    u0 = stack_frames(torch.cat(firsts))
    return {"rollout": rollout(model, u0, p, n_steps, batch), "one_step": torch.cat(steps)}


@torch.no_grad()
def one_step_nrmse(model, store: RunStore, indices: np.ndarray, p_all: np.ndarray, cfg) -> float:
    """PDEBench nRMSE of the one-step prediction over a split's predicted frames (the inputs
    are never scored); NaN for an empty split. A sweep ranks its trials by it on ``val``."""
    if not len(indices):
        return float("nan")
    h = cfg.train.history
    total, count = 0.0, 0
    for rows, u in store.iter_chunks(indices):
        pred = one_step_predictions(model, u, p_all[rows], h, cfg.train.batch_size)
        score = nrmse(pred.numpy(), u[:, h:], u.ndim - 3)  # (n, T - h, C)
        total += float(score.sum())
        count += score.size
    return total / count


@torch.no_grad()
def one_step_predictions(model, u: np.ndarray, p: np.ndarray, h: int, batch: int):
    """The model's prediction of every frame ``k >= h`` of trajectories ``u`` (n, T, C,
    *space) from the ``h`` true frames before it, ``batch`` windows per call; (n, T - h, C,
    *space) on the CPU."""
    model.eval()
    ref = next(model.parameters())
    true = torch.as_tensor(u, dtype=ref.dtype)
    n, n_t = true.shape[:2]
    inputs = torch.stack([stack_frames(true[:, k - h : k]) for k in range(h, n_t)], 1)
    flat_in = inputs.flatten(0, 1)
    flat_p = torch.as_tensor(p, dtype=ref.dtype).repeat_interleave(n_t - h, dim=0)
    out = [
        model(flat_in[i : i + batch].to(ref.device), flat_p[i : i + batch].to(ref.device)).cpu()
        for i in range(0, len(flat_in), batch)
    ]
    return torch.cat(out).unflatten(0, (n, n_t - h))


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


def _stopped(unit: Unit, epoch: int, batch: int | None, value: float, done: int):
    where = f"epoch {epoch}, batch {batch}" if batch else f"the validation of epoch {epoch}"
    kept = f"epoch {done}" if done else "none yet"
    return FloatingPointError(
        f"train: unit {unit.name}: non-finite loss ({value}) at {where}; training stopped and "
        f"the last good checkpoint ({kept}) is kept. Lower train.lr, or check the data "
        "(pdeflow verify)"
    )
