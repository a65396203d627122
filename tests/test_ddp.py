"""Data-parallel training over Dask workers (torch DDP, gloo) against the single-process schedule.

The data are exact one-step pairs of periodic linear advection ``u_t + c u_x = 0`` on ``[0, 1)``:
``u(x, t + dt) = u(x - c dt, t)`` for a finite Fourier series, in float64, so that the comparison
between two ranks and one process is about the algorithm (shares of the global batch, gradient
averaging, the shared shuffle) and not about float32 round-off.

Everything passed to the workers is a module-level function or a ``functools.partial`` of one;
the workers import this module by name (Dask's spawned processes inherit pytest's ``sys.path``).
"""

from __future__ import annotations

import math
import time
from functools import partial

import numpy as np
import pytest
import torch

from pdeflow.tasks.stages.ddp import choose_workers, free_port, train_ddp
from pdeflow.tasks.surrogates.ddp import DDPSettings, PeerRankFailed, train_single
from pdeflow.tasks.surrogates.fno import FNO1d, OneStepSurrogate
from pdeflow.tasks.surrogates.training import (
    NonFiniteLoss,
    make_optimizer,
    make_scheduler,
    train_epoch,
)

N_X = 32
N_SAMPLES = 32
DT = 0.05
DATA_SEED = 3
SETTINGS = DDPSettings(epochs=3, batch_size=8, lr=3e-3, seed=11, dtype="float64", timeout_s=30)
# A failing rank must surface well inside the ranks' own collective timeout (SETTINGS.timeout_s =
# 30 s): the failure exchange stops the others within one batch, so anything near 30 s means a
# rank waited on its peer instead.
PROMPT_S = 15.0


def advection_pairs(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Exact pairs ``u (n, 1, N_X)``, speeds ``p (n, 1)``, ``u_next (n, 1, N_X)``, float64.

    ``u0 = sum_{k=1..3} a_k cos(2 pi k x) + b_k sin(2 pi k x)``, ``a_k, b_k ~ N(0, 1) / k``,
    ``c ~ U[0.5, 1.5]``; ``u_next(x) = u0(x - c DT)``.
    """
    g = torch.Generator().manual_seed(seed)
    x = torch.arange(N_X, dtype=torch.float64) / N_X
    k = torch.arange(1, 4, dtype=torch.float64)
    a = torch.randn(n, 3, generator=g, dtype=torch.float64) / k
    b = torch.randn(n, 3, generator=g, dtype=torch.float64) / k
    c = 0.5 + torch.rand(n, 1, generator=g, dtype=torch.float64)

    def field(shift: torch.Tensor) -> torch.Tensor:
        phase = 2 * math.pi * k[None, :, None] * (x[None, None, :] - shift[:, :, None])
        return (a[:, :, None] * torch.cos(phase) + b[:, :, None] * torch.sin(phase)).sum(1)

    return field(0 * c)[:, None], c, field(c * DT)[:, None]


def build_surrogate(n: int, seed: int, width: int = 8) -> OneStepSurrogate:
    """A small float64 FNO1d behind ``OneStepSurrogate``, statistics from the training pairs."""
    net = FNO1d(1, 1, width=width, modes=6, n_layers=2, generator=torch.Generator().manual_seed(7))
    return OneStepSurrogate.from_data(net.double(), *advection_pairs(n, seed))


def load_all(n: int, seed: int):
    return advection_pairs(n, seed)


def load_shard(n: int, seed: int, rank: int, world_size: int):
    """Each rank's view of the training set, here as numpy arrays (the ranks index rows)."""
    return tuple(t.numpy() for t in advection_pairs(n, seed))


def load_fails_on_rank_1(rank: int, world_size: int):
    if rank == 1:
        raise OSError("shard of rank 1 is unreadable")
    return advection_pairs(N_SAMPLES, DATA_SEED)


def load_nan_on_rank_1(rank: int, world_size: int):
    u, p, u_next = advection_pairs(N_SAMPLES, DATA_SEED)
    if rank == 1:
        u_next = u_next.clone()
        u_next[5, 0, 3] = math.nan
    return u, p, u_next


class FailingRows:
    """An array whose row reads fail from the ``fail_at``-th read on (an I/O error mid-epoch)."""

    def __init__(self, array: np.ndarray, fail_at: int):
        self.array, self.fail_at, self.reads = array, fail_at, 0

    def __len__(self) -> int:
        return len(self.array)

    def __getitem__(self, rows):
        self.reads += 1
        if self.reads >= self.fail_at:
            raise OSError(f"read {self.reads} of rank 1's rows failed")
        return self.array[rows]


def load_breaks_mid_epoch_on_rank_1(rank: int, world_size: int):
    u, p, u_next = (t.numpy() for t in advection_pairs(N_SAMPLES, DATA_SEED))
    return (FailingRows(u, fail_at=6) if rank == 1 else u), p, u_next


BUILD = partial(build_surrogate, N_SAMPLES, DATA_SEED)
LOAD_ALL = partial(load_all, N_SAMPLES, DATA_SEED)
LOAD_SHARD = partial(load_shard, N_SAMPLES, DATA_SEED)


@pytest.fixture(autouse=True)
def one_intra_op_thread():
    # Tiny tensors: intra-op threads only add synchronisation on the shared 2-core runner.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def single():
    return train_single(BUILD, LOAD_ALL, SETTINGS)


def test_train_single_is_the_plain_training_loop(single):
    """``train_single`` equals ``train_epoch`` fed the same permutation's batches, bit for bit."""
    model = BUILD()
    optimizer = make_optimizer(model, SETTINGS.lr, SETTINGS.weight_decay)
    scheduler = make_scheduler(optimizer, SETTINGS.epochs)
    g = torch.Generator().manual_seed(SETTINGS.seed)
    u, p, u_next = LOAD_ALL()
    losses = []
    for _ in range(SETTINGS.epochs):
        order = torch.randperm(N_SAMPLES, generator=g)
        batches = [(u[rows], p[rows], u_next[rows]) for rows in order.split(SETTINGS.batch_size)]
        losses.append(train_epoch(model, optimizer, batches))
        scheduler.step()
    # N_SAMPLES is a multiple of the batch, so no sample is dropped and the schedules match.
    # The two loops form the same float64 loss through different code (train_epoch's batch
    # loss and the rank's), so they may differ by summation order: a few ulps, 1e-17 seen in
    # weights of size 1; a wrong schedule moves them by ~1e-2 (see the seed control below).
    assert single["epoch_losses"] == pytest.approx(losses, rel=1e-13)
    assert single["steps"] == SETTINGS.epochs * N_SAMPLES // SETTINGS.batch_size
    for name, value in model.state_dict().items():
        torch.testing.assert_close(single["state_dict"][name], value, rtol=0, atol=1e-13)
    assert losses[-1] < losses[0]  # it trains: the comparison below is not between two no-ops


def test_two_ranks_match_one_process(client, single):
    result = train_ddp(client, BUILD, LOAD_SHARD, SETTINGS, n_ranks=2)
    assert result["world_size"] == 2 and len(set(result["workers"])) == 2
    assert result["init_method"].startswith("tcp://127.0.0.1:")
    assert result["steps"] == single["steps"] and result["n_samples"] == N_SAMPLES
    # The two runs add the same float64 numbers in different orders (two half-batch means
    # averaged against one full-batch mean, gradients likewise), a relative difference of a few
    # 1e-16 per step; twelve AdamW steps, whose update m / sqrt(v) is smooth in the gradient
    # here, do not amplify it past 1e-12. Measured: 0 on the losses (equal to the last bit).
    assert result["epoch_losses"] == pytest.approx(single["epoch_losses"], rel=1e-12)
    # The weights are O(1) (largest 1.05) and training moved them by up to 2.4e-2; the same
    # round-off argument bounds their difference near 1e-14. Measured: 4e-15.
    for name, value in single["state_dict"].items():
        torch.testing.assert_close(result["state_dict"][name], value, rtol=0, atol=1e-12)


def test_the_comparison_tells_schedules_apart(single):
    """The tolerances above separate the schedule from a near miss: the same run with another
    shuffling seed (what ranks drawing their own permutations would see) differs by ~3e-4 in
    the losses and ~2e-2 in the weights (measured), eight orders of magnitude above them."""
    other = train_single(BUILD, LOAD_ALL, SETTINGS.model_copy(update={"seed": SETTINGS.seed + 1}))
    loss_gap = np.max(np.abs(np.subtract(other["epoch_losses"], single["epoch_losses"])))
    weight_gap = max(
        (other["state_dict"][k] - v).abs().max().item() for k, v in single["state_dict"].items()
    )
    assert loss_gap > 1e-6 and weight_gap > 1e-6


def test_a_failing_rank_raises_its_own_error_promptly(client):
    start = time.perf_counter()
    with pytest.raises(OSError, match="shard of rank 1 is unreadable") as info:
        train_ddp(client, BUILD, load_fails_on_rank_1, SETTINGS, n_ranks=2)
    assert time.perf_counter() - start < PROMPT_S
    assert any("rank 1 of 2" in note for note in info.value.__notes__)
    _workers_are_free(client)


def test_a_rank_failing_mid_epoch_stops_every_rank(client):
    start = time.perf_counter()
    with pytest.raises(OSError, match="read 6 of rank 1's rows failed"):
        train_ddp(client, BUILD, load_breaks_mid_epoch_on_rank_1, SETTINGS, n_ranks=2)
    assert time.perf_counter() - start < PROMPT_S
    _workers_are_free(client)


def test_a_non_finite_loss_on_one_rank_stops_every_rank(client):
    start = time.perf_counter()
    with pytest.raises(NonFiniteLoss, match="non-finite loss nan"):
        train_ddp(client, BUILD, load_nan_on_rank_1, SETTINGS, n_ranks=2)
    assert time.perf_counter() - start < PROMPT_S
    _workers_are_free(client)


def _workers_are_free(client):
    """Both workers take new work at once: no rank is left blocked in a collective."""
    workers, _ = choose_workers(client, "cpu", None)
    futures = [client.submit(free_port, "127.0.0.1", workers=[w], pure=False) for w in workers]
    assert all(0 < f.result(timeout=10) < 65536 for f in futures)


@pytest.mark.parametrize("n_ranks", [2, None])
def test_indivisible_batch_is_refused_before_any_compute(client, monkeypatch, n_ranks):
    def no_submit(*args, **kwargs):
        raise AssertionError("submitted work for a refused batch size")

    monkeypatch.setattr(client, "submit", no_submit)
    odd = SETTINGS.model_copy(update={"batch_size": 9})
    with pytest.raises(ValueError, match="batch_size 9 is not divisible by 2 ranks"):
        train_ddp(client, BUILD, LOAD_SHARD, odd, n_ranks=n_ranks)


def test_too_many_ranks_are_refused(client):
    with pytest.raises(ValueError, match="2 eligible worker"):
        train_ddp(client, BUILD, LOAD_SHARD, SETTINGS, n_ranks=4)


def test_peer_failure_pickles_with_its_fields():
    import pickle

    error = pickle.loads(pickle.dumps(PeerRankFailed([1], "set-up")))
    assert error.failed == [1] and error.phase == "set-up"
    assert str(error) == "rank(s) [1] failed during set-up"
