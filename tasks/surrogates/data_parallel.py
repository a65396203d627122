"""One rank's part in data-parallel training of a unit (``train.data_parallel``), torch DDP.

Every rank builds the same model (same seed), reads the same batches in the same order (the
same seeded shuffle), and scores only its contiguous share of each batch
(``training.batch_share``), weighted so that the average DistributedDataParallel takes of the
ranks' gradients is the gradient of the whole batch (``training._shared_loss``). Every rank
therefore takes the optimiser steps one process would take on the same batches, up to the
order of floating-point sums (Li et al. 2020, "PyTorch Distributed: Experiences on Accelerating
Data Parallel Training"). The pushforward depth and the input noise are drawn for the whole
batch before it is split, as one process draws them.

No rank waits on a failed one: every batch's loss is all-reduced as ``[loss, failed]``, so a
rank whose data, model or loss raised reports it in that same collective and every rank stops
at that batch (the failing one with its own error, the others with ``PeerRankFailed``); a
non-finite mean loss stops all of them before the step. ``agree`` does the same for the work
between batches (validation, checkpoints). A rank that dies outright leaves the others in a
collective for at most the process group's timeout.

Unlike ``pdeflow.tasks.surrogates.ddp`` (a self-contained launcher and schedule, with a fixed
global batch that the ranks must divide), this is the train stage's own loop: its batches,
checkpoints, history frames, pushforward and noise, with one extra argument.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from pdeflow.tasks.surrogates.ddp import _ONE_RANK_PER_PROCESS, PeerRankFailed
from pdeflow.tasks.surrogates.training import _training_loss

# Seconds a rank waits in a collective (the rendezvous included) before it raises: bounds the
# wait on a peer whose process died without reporting.
TIMEOUT_S = 300.0


@contextlib.contextmanager
def process_group(rank: int, world: int, init_method: str, device: torch.device) -> Iterator[None]:
    """This process as rank ``rank`` of ``world`` (gloo on CPU, nccl on CUDA), for the block.

    One rank per process: a second one would join the first one's group.
    """
    if not _ONE_RANK_PER_PROCESS.acquire(blocking=False):
        raise RuntimeError("this process already runs a DDP rank; use one rank per process")
    try:
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(
            "nccl" if device.type == "cuda" else "gloo",
            init_method=init_method,
            rank=rank,
            world_size=world,
            timeout=timedelta(seconds=TIMEOUT_S),
        )
        try:
            yield
        finally:
            dist.destroy_process_group()
    finally:
        _ONE_RANK_PER_PROCESS.release()


class _ShareLoss(nn.Module):
    """The training loss of this rank's share of a batch, as a module for DDP to wrap."""

    def __init__(self, model: nn.Module, rank: int, world: int):
        super().__init__()
        self.model, self.share = model, (rank, world)

    def forward(self, batch, pushforward: int, noise_std: float, generator) -> Tensor:
        return _training_loss(self.model, batch, pushforward, noise_std, generator, self.share)


class RankStep:
    """What ``training.train_epoch`` needs of one rank (its ``data_parallel`` argument).

    Args:
        model: This rank's model, already on ``device``; its parameters are the ones trained.
        rank, world: This rank and the number of ranks; the process group must be up.
        device: The rank's device.
    """

    def __init__(self, model: nn.Module, rank: int, world: int, device: torch.device):
        self.rank, self.world, self.device = rank, world, device
        ids = [device] if device.type == "cuda" else None
        # The normalisation statistics are buffers built from the same data on every rank,
        # and copied from rank 0 at construction: syncing them before every forward would
        # only add a collective per step.
        self.ddp = DistributedDataParallel(
            _ShareLoss(model, rank, world), device_ids=ids, forward_sync_buffers=False
        )

    def _reduce(self, failed: bool, value: float) -> tuple[list[int], float]:
        """All-reduce ``[failed per rank..., value]``: the ranks that failed, and the sum."""
        row = torch.zeros(self.world + 1, dtype=torch.float64, device=self.device)
        row[self.rank], row[-1] = float(failed), value
        dist.all_reduce(row)
        return [r for r in range(self.world) if row[r] > 0], float(row[-1])

    def agree(self, error: BaseException | None, phase: str) -> None:
        """Every rank calls it at the same point: raise ``error`` on its own rank, and
        ``PeerRankFailed`` on the others, when any rank had one; else return."""
        failed, _ = self._reduce(error is not None, 0.0)
        if error is not None:
            raise error
        if failed:
            raise PeerRankFailed(failed, phase)

    def guard(self, batches: Iterable) -> Iterator:
        """``batches``, reporting a failure to read the next one to the other ranks first."""
        it = iter(batches)
        while True:
            try:
                batch = next(it)
            except StopIteration:
                return
            except BaseException:
                self._reduce(True, float("nan"))  # the collective the others' batch_mean is in
                raise
            yield batch

    def loss(self, batch, pushforward: int, noise_std: float, generator) -> Tensor:
        """This rank's weighted share of the batch's loss (through DDP, so ``backward``
        all-reduces the gradients)."""
        try:
            return self.ddp(batch, pushforward, noise_std, generator)
        except BaseException:
            self._reduce(True, float("nan"))
            raise

    def batch_mean(self, loss: Tensor) -> float:
        """The whole batch's loss, the same on every rank; raises ``PeerRankFailed`` when
        another rank failed on this batch."""
        failed, total = self._reduce(False, float(loss.detach()))
        if failed:
            raise PeerRankFailed(failed, "a training batch")
        return total / self.world
