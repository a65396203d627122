"""Data-parallel training of one one-step surrogate over several processes (torch DDP).

Each process (a *rank*) holds a full copy of the model. Every optimiser step uses one global batch
of ``B`` samples: all ranks draw the same shuffling permutation ``pi`` of the ``N`` training
samples from one seeded ``torch.Generator`` each epoch, step ``s`` covers ``pi[s B : (s + 1) B]``,
and rank ``r`` of ``W`` takes the contiguous share ``pi[s B + r b : s B + (r + 1) b]`` with
``b = B / W``. The loss is the per-sample mean of ``one_step_loss``, so with
``L_r = (1 / b) sum_{i in share r} l_i`` the gradient that ``DistributedDataParallel`` (Li et al.
2020, "PyTorch Distributed: Experiences on Accelerating Data Parallel Training") averages over
ranks is

    (1 / W) sum_r grad L_r = (1 / B) sum_{i in batch} grad l_i,

the single-process gradient of the whole global batch: the same AdamW steps, the same cosine
schedule and the same weights as ``train_single`` up to floating-point summation order. The last
``N mod B`` samples of each permutation are dropped (a fixed global batch keeps the average exact).

Every rank reads the training set through ``load_shard(rank, world_size)``, which returns three
arrays ``(u (N, C, *space), p (N, P), u_next (N, C, *space))`` indexed by the global sample index;
a rank only indexes the rows of its shares, so lazily-read arrays (``np.memmap``) load only those.
A global shuffle needs every rank able to reach every sample; a loader that pre-splits the data
would change which samples meet in a batch and lose the equality with ``train_single``.

No rank hangs on another's failure: after the set-up and before every backward pass the ranks
exchange a row ``[failed, value]`` (``all_gather``, summed in rank order so every rank holds the
same bits). A rank whose loader, model or loss raised re-raises its own error and the others raise
``PeerRankFailed``; a non-finite mean loss raises ``NonFiniteLoss`` on every rank before the step.
A rank that dies outright leaves the others blocked in a collective for at most
``settings.timeout_s``.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from functools import partial
from typing import Any, Literal

import numpy as np
import torch
import torch.distributed as dist
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from pdeflow.tasks.surrogates.training import (
    NonFiniteLoss,
    make_optimizer,
    make_scheduler,
    one_step_loss,
)

Dataset = Sequence[Any]
# One torch.distributed process group per process: a second rank in the same process (two Dask
# worker threads, or a threaded cluster) would join the first one's group.
_ONE_RANK_PER_PROCESS = threading.Lock()


class DDPSettings(BaseModel):
    """Schedule and communication settings shared by every rank and by ``train_single``."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    epochs: int = Field(3, ge=1, le=100_000, description="Training epochs.")
    batch_size: int = Field(
        64, ge=1, le=65_536, description="Global batch: one-step pairs per optimiser step."
    )
    lr: float = Field(3e-3, gt=0, le=1.0, description="Peak learning rate of AdamW.")
    weight_decay: float = Field(1e-5, ge=0, le=1.0, description="AdamW weight decay.")
    seed: int = Field(0, ge=0, description="Seed of the per-epoch shuffling permutations.")
    device: Literal["cpu", "cuda"] = Field(
        "cpu", description="cpu, or cuda: the first GPU the rank's process sees (cuda:0)."
    )
    dtype: Literal["float32", "float64"] = Field("float32", description="Model and data dtype.")
    backend: Literal["auto", "gloo", "nccl"] = Field(
        "auto", description="torch.distributed backend; auto: gloo on cpu, nccl on cuda."
    )
    timeout_s: float = Field(
        300.0,
        gt=0,
        le=86_400,
        description="Seconds a rank waits in a collective, rendezvous included, before it raises.",
    )

    def check_world_size(self, world_size: int) -> None:
        """Raise ``ValueError`` unless ``world_size`` ranks can split the global batch equally."""
        if world_size < 1:
            raise ValueError(f"world_size must be >= 1, got {world_size}")
        if self.batch_size % world_size:
            raise ValueError(
                f"global batch_size {self.batch_size} is not divisible by {world_size} ranks: "
                f"every rank must take an equal share (batch_size / world_size samples) for "
                f"the averaged gradient to equal the whole batch's; choose a batch_size that "
                f"is a multiple of {world_size}"
            )

    def torch_device(self) -> torch.device:
        """The rank's device: cpu, or cuda:0, the first GPU its process sees."""
        return torch.device("cuda:0" if self.device == "cuda" else "cpu")

    def torch_dtype(self) -> torch.dtype:
        """``torch.float32`` or ``torch.float64``."""
        return getattr(torch, self.dtype)

    def process_group_backend(self) -> str:
        """``backend``, with auto resolved: gloo on cpu, nccl on cuda."""
        if self.backend != "auto":
            return self.backend
        return "nccl" if self.device == "cuda" else "gloo"


class PeerRankFailed(RuntimeError):
    """Another rank raised; this rank stopped with it instead of waiting in a collective.

    Attributes:
        failed: Ranks whose own code raised.
        phase: Where it happened ("set-up" or "epoch e, batch k").
    """

    def __init__(self, failed: list[int], phase: str):
        self.failed, self.phase = list(failed), phase
        super().__init__(f"rank(s) {self.failed} failed during {phase}")

    def __reduce__(self):
        return (self.__class__, (self.failed, self.phase))


class _Loss(nn.Module):
    """``one_step_loss`` as a module, so that DDP's forward hook sees the whole loss."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, u: Tensor, p: Tensor, u_next: Tensor) -> Tensor:
        return one_step_loss(self.model, u, p, u_next)


class _Exchange:
    """Per-rank rows gathered from every rank; one rank without a process group is the identity."""

    def __init__(self, rank: int, world_size: int, device: torch.device, distributed: bool):
        self.rank, self.world_size, self.device = rank, world_size, device
        self.distributed = distributed

    def agree(self, error: BaseException | None, values: Sequence[float], phase: str) -> Tensor:
        """Gather ``[failed, *values]`` from every rank; raise on all ranks if any failed.

        Returns:
            ``(world_size, len(values))`` float64 tensor on CPU, row r from rank r.
        """
        row = torch.tensor([float(error is not None), *values], dtype=torch.float64)
        if self.distributed:
            local = row.to(self.device)
            rows = [torch.empty_like(local) for _ in range(self.world_size)]
            dist.all_gather(rows, local)
            table = torch.stack(rows).cpu()
        else:
            table = row[None]
        failed = [r for r in range(self.world_size) if table[r, 0] != 0]
        if error is not None:
            raise error
        if failed:
            raise PeerRankFailed(failed, phase)
        return table[:, 1:]


def train_rank(
    rank: int,
    world_size: int,
    init_method: str,
    build_model: Callable[[], nn.Module],
    load_shard: Callable[[int, int], Dataset],
    settings: DDPSettings,
) -> dict:
    """Train as rank ``rank`` of ``world_size`` processes; every rank must call it.

    Args:
        rank: This process's rank, ``0 <= rank < world_size``.
        world_size: Number of ranks W; must divide ``settings.batch_size``.
        init_method: Rendezvous of ``torch.distributed.init_process_group``, e.g.
            ``"tcp://host:port"`` with rank 0 listening on ``port``.
        build_model: Picklable callable returning the ``OneStepSurrogate``-like model, built
            from a fixed seed (DDP also copies rank 0's parameters and buffers to every rank).
        load_shard: Picklable callable ``(rank, world_size) -> (u, p, u_next)``: arrays
            ``(N, C, *space)``, ``(N, P)``, ``(N, C, *space)`` in physical units, indexable along
            axis 0 by a 1-D integer array (torch tensors, numpy arrays, ``np.memmap``), with the
            same N on every rank; see the module docstring.
        settings: Schedule and communication settings, the same on every rank.

    Returns:
        dict with ``rank``, ``world_size``, ``n_samples`` (N), ``epoch_losses`` (mean
        ``one_step_loss`` per epoch over all ranks' samples, identical on every rank),
        ``step_losses`` (the mean over ranks of every global batch, epoch after epoch), ``steps``
        (optimiser steps), ``seconds`` (wall time of the epochs), ``setup_seconds`` (rendezvous,
        loading and model set-up) and ``state_dict`` (rank 0: the final weights and buffers,
        detached on CPU; None on other ranks).

    Raises:
        ValueError: ``world_size`` does not divide the batch, or fewer than B samples.
        PeerRankFailed: another rank raised.
        NonFiniteLoss: the mean loss of a global batch is NaN or inf (on every rank).
    """
    settings.check_world_size(world_size)
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must lie in [0, {world_size}), got {rank}")
    if not _ONE_RANK_PER_PROCESS.acquire(blocking=False):
        raise RuntimeError("this process already runs a DDP rank; use one rank per process")
    try:
        start = time.perf_counter()
        device = settings.torch_device()
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(
            settings.process_group_backend(),
            init_method=init_method,
            rank=rank,
            world_size=world_size,
            timeout=timedelta(seconds=settings.timeout_s),
        )
        try:
            exchange = _Exchange(rank, world_size, device, distributed=True)
            load = partial(load_shard, rank, world_size)
            return _set_up_and_fit(exchange, build_model, load, settings, start)
        finally:
            dist.destroy_process_group()
    finally:
        _ONE_RANK_PER_PROCESS.release()


def train_single(
    build_model: Callable[[], nn.Module], load_all: Callable[[], Dataset], settings: DDPSettings
) -> dict:
    """The schedule of ``train_rank`` in one process without torch.distributed: the reference.

    Same permutations, global batches, optimiser, scheduler and non-finite check as
    ``world_size`` ranks with the same settings.

    Args:
        build_model: Callable returning the model, as for ``train_rank``.
        load_all: Callable returning ``(u, p, u_next)`` of all N samples, as ``load_shard``.
        settings: Schedule settings (``backend`` and ``timeout_s`` are not used).

    Returns:
        The dict of ``train_rank`` for rank 0 of 1.
    """
    start = time.perf_counter()
    exchange = _Exchange(0, 1, settings.torch_device(), distributed=False)
    return _set_up_and_fit(exchange, build_model, load_all, settings, start)


def _set_up_and_fit(
    exchange: _Exchange,
    build_model: Callable[[], nn.Module],
    load: Callable[[], Dataset],
    settings: DDPSettings,
    start: float,
) -> dict:
    """Load, build and agree on N across ranks, then run the epochs."""
    device, dtype = settings.torch_device(), settings.torch_dtype()
    error, data, model, n = None, None, None, 0
    try:
        data = _as_dataset(load())
        n = len(data[0])
        model = build_model().to(device=device, dtype=dtype)
    except Exception as exc:  # noqa: BLE001 - re-raised by exchange.agree on this rank
        error = exc
    counts = exchange.agree(error, [n], "set-up")[:, 0].tolist()
    if len(set(counts)) > 1:
        raise ValueError(f"ranks see different training sets: N per rank {counts}")
    if n < settings.batch_size:
        raise ValueError(f"{n} samples cannot fill one global batch of {settings.batch_size}")
    loss_fn: nn.Module = _Loss(model)
    if exchange.distributed:
        ids = [device.index] if device.type == "cuda" else None
        # Default buffer handling: rank 0's normalisation statistics are copied at construction
        # and again before each forward (a collective per step that _step allows for).
        loss_fn = DistributedDataParallel(loss_fn, device_ids=ids)
    setup_seconds = time.perf_counter() - start
    result = _fit(exchange, loss_fn, model, data, settings)
    state = None
    if exchange.rank == 0:
        state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    return {
        "rank": exchange.rank,
        "world_size": exchange.world_size,
        "n_samples": n,
        **result,
        "setup_seconds": setup_seconds,
        "state_dict": state,
    }


def _fit(
    exchange: _Exchange, loss_fn: nn.Module, model: nn.Module, data: list, settings: DDPSettings
) -> dict:
    """The epochs: shuffle, take this rank's share of each global batch, step, schedule."""
    optimizer = make_optimizer(model, settings.lr, settings.weight_decay)
    scheduler = make_scheduler(optimizer, settings.epochs)
    generator = torch.Generator().manual_seed(settings.seed)
    n, batch = len(data[0]), settings.batch_size
    share = batch // exchange.world_size
    n_steps = n // batch
    model.train()
    step_losses, start = [], time.perf_counter()
    for epoch in range(settings.epochs):
        order = torch.randperm(n, generator=generator)
        for step in range(n_steps):
            first = step * batch + exchange.rank * share
            rows = order[first : first + share]
            step_losses.append(_step(exchange, loss_fn, optimizer, data, rows, epoch, step + 1))
        scheduler.step()
    return {
        # Every global batch holds B samples, so the mean of the batch means is the sample mean.
        "epoch_losses": [sum(e) / n_steps for e in _chunks(step_losses, n_steps)],
        "step_losses": step_losses,
        "steps": settings.epochs * n_steps,
        "seconds": time.perf_counter() - start,
    }


def _step(
    exchange: _Exchange,
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    data: list,
    rows: Tensor,
    epoch: int,
    batch_no: int,
) -> float:
    """One optimiser step on this rank's ``rows`` (batch ``batch_no`` from 1 of epoch ``epoch``
    from 0); returns the mean loss over all ranks.

    Two exchanges: after loading (DDP's forward may run collectives of its own, which a rank
    that failed to load would never join) and after the loss, before the backward pass.
    """
    ref = next(iter(loss_fn.parameters()))
    phase = f"epoch {epoch}, batch {batch_no}"
    error, batch = None, None
    try:
        batch = [_take(a, rows).to(device=ref.device, dtype=ref.dtype) for a in data]
    except Exception as exc:  # noqa: BLE001 - re-raised by exchange.agree on this rank
        error = exc
    exchange.agree(error, [], f"loading of {phase}")
    optimizer.zero_grad(set_to_none=True)
    error, value, loss = None, 0.0, None
    try:
        loss = loss_fn(*batch)
        value = loss.item()
    except Exception as exc:  # noqa: BLE001 - re-raised by exchange.agree on this rank
        error = exc
    mean = float(exchange.agree(error, [value], phase)[:, 0].sum()) / exchange.world_size
    if not math.isfinite(mean):  # before the step: the weights stay the last good ones
        raise NonFiniteLoss(batch_no, mean)
    loss.backward()
    optimizer.step()
    return mean


def _chunks(values: list, size: int) -> list[list]:
    return [values[i : i + size] for i in range(0, len(values), size)]


def _as_dataset(data: Dataset) -> list:
    if len(data) != 3:
        raise ValueError(f"the loader must return (u, p, u_next), got {len(data)} arrays")
    lengths = [len(a) for a in data]
    if len(set(lengths)) != 1:
        raise ValueError(f"u, p and u_next must have the same number of samples, got {lengths}")
    return list(data)


def _take(array: Any, rows: Tensor) -> Tensor:
    """Rows ``rows`` of a torch tensor or of anything numpy-indexable, as a tensor."""
    if isinstance(array, Tensor):
        return array[rows.to(array.device)]
    return torch.as_tensor(np.asarray(array[rows.numpy()]))
