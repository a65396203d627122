"""Stage 2: train the one-step neural operator from the run store, resumable per epoch.

Data streams from the store a few chunks at a time (never the whole store), every chunk checked
against its CRC32 as it is read; the normalisation statistics come from the training split
alone. A checkpoint (model, optimiser, scheduler, epoch, the shuffling generator's state) is
written after every epoch and a re-run resumes from the newest intact one. Training stops at
the first non-finite loss, naming the epoch and batch, and keeps the last good checkpoint.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from functools import partial

import numpy as np
import torch

from pdeflow.storage import FileEntry, RunStore, StageRecord
from pdeflow.tasks.config import PipelineConfig
from pdeflow.tasks.metrics import nrmse as nrmse_nd
from pdeflow.tasks.stages.base import Outcome, Stage, StageRun
from pdeflow.tasks.stages.integrity import UPSTREAM, record_problems
from pdeflow.tasks.stages.models import MODEL, unit_parameters
from pdeflow.tasks.surrogates.factory import build_model, check_trainable
from pdeflow.tasks.surrogates.training import (
    NonFiniteLoss,
    evaluate,
    make_optimizer,
    make_scheduler,
    restore_training_state,
    rollout,
    train_epoch,
    training_state,
)

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
TRAINING_LOG = "training-log.jsonl"
# Seconds between two "batch" lines of the training log, after each epoch's first batch.
LOG_INTERVAL_S = 10.0


def streaming_stats(store: RunStore, indices: np.ndarray, p_unit: np.ndarray) -> dict:
    """Per-channel field mean/std, increment std and parameter mean/std of a split.

    Read one chunk at a time; sums in float64; population (ddof=0) statistics over samples,
    time and space, separately for every channel.
    """
    acc = None
    for _, u in store.iter_chunks(indices):
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


def evaluate_test(model, store: RunStore, indices: np.ndarray, p_unit: np.ndarray) -> dict:
    """PDEBench nRMSE (input frame excluded) of the model and of persistence, chunk by chunk."""
    lookup = {int(i): k for k, i in enumerate(indices)}
    sums = dict.fromkeys(("one_step", "rollout", "persist_one_step", "persist_rollout"), 0.0)
    count = 0
    dtype = next(model.parameters()).dtype
    for rows, u in store.iter_chunks(indices):
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
        persist = np.broadcast_to(tn[:, :1], tn[:, 1:].shape)
        sums["persist_rollout"] += nrmse(persist, tn[:, 1:]).sum()
        count += n * (t - 1) * true.shape[2]  # nrmse is per sample, step and channel
    return {f"nrmse_{k}": float(v / count) for k, v in sums.items()}


class TrainingLog:
    """The training log of a store: every attempt's start, throttled batches and epochs.

    Lines (``storage.log.EventLog``): ``start`` (``resumed_from_epoch``), ``batch`` (``epoch``
    being trained, 1-based, ``batch`` done and its ``loss``; the first batch of every epoch,
    then at most one per ``interval`` seconds) and ``epoch`` (after its checkpoint). The record's
    history is rewritten by a resumed run; this log keeps every attempt, so it shows where a
    killed run stopped and that no finished epoch ran twice.
    """

    def __init__(self, store: RunStore, interval: float = LOG_INTERVAL_S, clock=time.monotonic):
        if interval < 0:
            raise ValueError(f"interval must be >= 0 seconds, got {interval}")
        self.events, self.interval, self.clock = store.log("train", TRAINING_LOG), interval, clock

    def write(self, event: str, **fields) -> None:
        self.events.write(event, **fields)

    def read(self) -> list[dict]:
        return self.events.read()

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


def _batches(run: StageRun, log: TrainingLog, epoch: int) -> Callable[[int, float], None]:
    """``on_batch`` of 0-based ``epoch``: the training log, and the progress line's facts."""
    to_log = log.batches(epoch + 1)

    def on_batch(batch: int, loss: float) -> None:
        to_log(batch, loss)
        run.note(epoch=epoch + 1, batch=batch, batch_loss=loss)

    return on_batch


class Train(Stage):
    name = "train"
    upstream = UPSTREAM["train"]
    unit = "epochs"
    uses_cluster = False

    def check(self, cfg: PipelineConfig) -> None:
        check_trainable(cfg)

    def problems(self, run: StageRun, record: StageRecord, deep: bool = True) -> list[str]:
        return record_problems(run.store, self.name, record, deep)

    def total(self, run: StageRun) -> int:
        return run.cfg.train.epochs

    def pending(self, run: StageRun) -> list[int]:
        """Epochs after the newest intact checkpoint of this config (all of them without)."""
        state, warnings = run.store.load_checkpoint(self.name)
        for warning in warnings:
            run.warn(f"train: {warning}; resuming from an older one")
        if state is not None and state.get("config_hash") != _hash(run):
            state = None  # the smaller run's, before an extension's warm start
        run.state["checkpoint"] = state
        start = 0 if state is None else int(state["epoch"])
        return list(range(start, run.cfg.train.epochs))

    def compute(self, run: StageRun, units: list[int]) -> None:
        _setup(run)
        cfg, store, st = run.cfg, run.store, run.state
        tc, dtype = cfg.train, getattr(torch, cfg.generate.dtype)
        idx, p_all, history = st["idx"], st["p_all"], st["history"]
        log = TrainingLog(store)
        log.write("start", resumed_from_epoch=st["start"], epochs=tc.epochs)
        for epoch in units:
            batches = iter_batches(
                store, idx["train"], p_all[idx["train"]], tc.batch_size, tc.shuffle_chunks,
                st["shuffle"], dtype,
            )  # fmt: skip
            try:
                loss = train_epoch(st["model"], st["optimizer"], batches, _batches(run, log, epoch))
            except NonFiniteLoss as err:
                raise _stopped(epoch + 1, err.batch, err.loss, epoch) from None
            st["scheduler"].step()
            val = _validate(st, store, idx, p_all, tc, dtype)
            if len(idx["val"]) and not np.isfinite(val):
                raise _stopped(epoch + 1, None, val, epoch)
            history.append({"epoch": epoch + 1, "train_loss": loss, "val_loss": val})
            state = training_state(
                st["model"], st["optimizer"], st["scheduler"], epoch + 1, st["shuffle"], history
            )
            store.save_checkpoint(self.name, epoch + 1, {**state, "config_hash": _hash(run)})
            log.write("epoch", epoch=epoch + 1, train_loss=loss, val_loss=val)
            run.report(epoch + 1, tc.epochs, loss=loss, val_loss=val)
        st["trained"] = len(units)

    def finish(self, run: StageRun) -> Outcome:
        st, store = run.state, run.store
        test = st["idx"]["test"]
        metrics = evaluate_test(st["model"], store, test, st["p_all"][test])
        history = st["history"]
        metrics["epochs"] = run.cfg.train.epochs
        metrics["final_train_loss"] = history[-1]["train_loss"] if history else float("nan")
        rel, entry = store.save_model(self.name, MODEL, st["model"].state_dict())
        details = {
            "history": history,
            "resumed_from_epoch": st["start"],
            "warm_started": run.extended,
            "epochs_trained_last_run": st.get("trained", 0),
        }
        return Outcome(metrics, artifacts={rel: entry}, details=details)


def _setup(run: StageRun) -> None:
    """Model, optimiser, schedule and shuffling state: fresh, warm-started or restored."""
    cfg, store, st = run.cfg, run.store, run.state
    p_all = unit_parameters(store, cfg)
    idx = {s: store.sample_indices(s) for s in ("train", "val", "test")}
    model = build_model(cfg, streaming_stats(store, idx["train"], p_all[idx["train"]]))
    optimizer = make_optimizer(model, cfg.train.lr, cfg.train.weight_decay)
    scheduler = make_scheduler(optimizer, cfg.train.epochs)
    shuffle = torch.Generator().manual_seed(cfg.train.seed + 1)
    st.update(p_all=p_all, idx=idx, model=model, optimizer=optimizer, scheduler=scheduler)
    st.update(shuffle=shuffle, start=0, history=[])
    state = st.get("checkpoint")
    if state is None and run.extended:
        _warm_start(run)
    elif state is not None:
        start, history = restore_training_state(state, model, optimizer, scheduler, shuffle)
        st.update(start=start, history=history)


def _hash(run: StageRun) -> str:
    from pdeflow.tasks.stages.runner import hash_of

    return hash_of(run.cfg, "train")


def _validate(st, store, idx, p_all, tc, dtype) -> float:
    """Mean validation loss; NaN without a validation split (nothing was measured)."""
    if not len(idx["val"]):
        return float("nan")
    batches = iter_batches(
        store, idx["val"], p_all[idx["val"]], tc.batch_size, tc.shuffle_chunks, None, dtype
    )
    return evaluate(st["model"], batches)


def _stopped(epoch: int, batch: int | None, value: float, done: int):
    where = f"epoch {epoch}, batch {batch}" if batch else f"the validation of epoch {epoch}"
    kept = f"epoch {done}" if done else "none yet"
    return FloatingPointError(
        f"train: non-finite loss ({value}) at {where}; training stopped and the last good "
        f"checkpoint ({kept}) is kept. Lower train.lr, or check the data (pdeflow verify)"
    )


def _warm_start(run: StageRun) -> None:
    """Continue from the model trained on fewer samples: its weights become epoch 0.

    Written as the epoch-0 checkpoint, so a run killed before its first epoch resumes from the
    same warm weights. The normalisation buffers come with the weights: the network was trained
    in those units.
    """
    store, st, prev = run.store, run.state, run.previous
    store.clear_checkpoints("train")
    model_rel = [rel for rel in prev.artifacts if rel.endswith(MODEL)] if prev else []
    if not model_rel or prev.status != "complete":  # the smaller run never finished training
        return
    rel = model_rel[0]
    st["model"].load_state_dict(store.load_model(rel, FileEntry(*prev.artifacts[rel])))
    state = training_state(st["model"], st["optimizer"], st["scheduler"], 0, st["shuffle"], [])
    store.save_checkpoint("train", 0, {**state, "config_hash": _hash(run)})
