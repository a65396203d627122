"""Training loop pieces for one-step surrogates: optimiser, schedule, epochs, rollout, resume.

Pure torch. The model is a ``OneStepSurrogate`` (or anything with the same
``normalised_increment(u, p)`` / ``delta_std`` / ``field_std`` / ``forward(u, p)`` interface and an
optional ``history`` attribute, 1 if absent) that maps ``history`` frames stacked on channels,
oldest first, ``(batch, history * C, *space)``, to the next state ``(batch, C, *space)``. Batches
come in two kinds, in physical units, with any number of spatial axes, and are moved to the
model's device and dtype here, so a data loader may yield CPU tensors for a CUDA model:

- ``(u, p, u_next)``: ``u`` ``(B, history * C, *space)``, ``p`` ``(B, P)``, ``u_next``
  ``(B, C, *space)``; one-step training only;
- ``(window, p)``: ``window`` ``(B, history + k, C, *space)`` consecutive true frames (see
  ``trajectory_windows``); needed for pushforward training with ``k > 1``.

The loss is the per-sample relative L2 error of the next state, averaged over the batch, as in
PDEBench (Takamoto et al. 2022, "PDEBench: An Extensive Benchmark for Scientific Machine
Learning"): ``mean_b ||pred_b - u_next_b||_2 / ||u_next_b||_2`` over channels and space. It is
chosen over the MSE of the normalised increment because it weights every sample equally, as the
nRMSE it is judged by does; MSE lets large-amplitude samples dominate. On the 1D advection of
tests/test_fno.py (1024 pairs, 10 epochs, lr 3e-3 and 1e-2) it gave 1.6-2.6x lower held-out
nRMSE than the MSE. Its O(|du| / |u|) gradient scale does not slow Adam, whose step is invariant
to a constant gradient scale (until gradients approach its eps = 1e-8).
The error is formed from increments, ``delta_std * (net_out - (u_next - u_last) / delta_std)``,
not as ``(u_last + increment) - u_next``, so that a small ``dt`` does not lose it to float32
cancellation (``u_last`` is the last input frame).

Two remedies for the drift of autoregressive rollouts are offered by ``train_epoch``:

- the pushforward trick of Brandstetter, Worrall & Welling 2022, "Message Passing Neural PDE
  Solvers" (ICLR 2022): the model is unrolled ``k - 1`` steps without gradient and trained on the
  step that follows, so it learns from inputs drawn from its own error distribution at the cost
  of ``k - 1`` extra forward passes, without backpropagating through time (``pushforward_loss``);
- training noise, Sanchez-Gonzalez et al. 2020, "Learning to Simulate Complex Physics with Graph
  Networks" (ICML 2020): Gaussian noise on the input frames with the target state unchanged, so
  that the model learns to pull a perturbed state back towards the data (``add_input_noise``).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any, Protocol

import torch
from torch import Tensor, nn
from torch.optim.lr_scheduler import CosineAnnealingLR, LRScheduler

Batch = tuple[Tensor, Tensor, Tensor]
Window = tuple[Tensor, Tensor]


class DataParallelStep(Protocol):
    """What ``train_epoch`` asks of one rank of a data-parallel run (see ``data_parallel``)."""

    def guard(self, batches: Iterable) -> Iterable: ...

    def loss(self, batch: tuple[Tensor, ...], pushforward: int, noise_std: float, generator): ...

    def batch_mean(self, loss: Tensor) -> float: ...


STATE_VERSION = 1


class NonFiniteLoss(FloatingPointError):
    """A batch's loss is NaN or inf; raised before its optimiser step.

    Attributes:
        batch: 1-based batch number within the epoch.
        loss: the non-finite value.
    """

    def __init__(self, batch: int, loss: float):
        self.batch, self.loss = batch, loss
        super().__init__(f"non-finite loss {loss} at batch {batch}")

    def __reduce__(self):
        return (self.__class__, (self.batch, self.loss))


def make_optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW (Loshchilov & Hutter 2019, "Decoupled Weight Decay Regularization").

    Args:
        model: Module whose trainable parameters are optimised.
        lr: Peak learning rate.
        weight_decay: Decoupled weight decay coefficient.

    Returns:
        The optimiser.
    """
    params = [q for q in model.parameters() if q.requires_grad]
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def make_scheduler(optimizer: torch.optim.Optimizer, n_epochs: int) -> CosineAnnealingLR:
    """Cosine annealing from the optimiser's lr to 0 over ``n_epochs`` epochs.

    Call ``scheduler.step()`` once after each epoch (Loshchilov & Hutter 2017, "SGDR").

    Args:
        optimizer: The optimiser whose learning rate is scheduled.
        n_epochs: Number of epochs of the whole run (the cosine half-period).

    Returns:
        The scheduler.
    """
    if n_epochs < 1:
        raise ValueError(f"n_epochs must be >= 1, got {n_epochs}")
    return CosineAnnealingLR(optimizer, T_max=n_epochs)


def _reference(model: nn.Module) -> Tensor:
    ref = next(model.buffers(), None)
    if ref is None:
        ref = next(model.parameters())
    return ref


def _to_model(batch: tuple[Tensor, ...], ref: Tensor) -> tuple[Tensor, ...]:
    return tuple(t.to(device=ref.device, dtype=ref.dtype) for t in batch)


def _history(model: nn.Module) -> int:
    return int(getattr(model, "history", 1))


def _per_field(stat: Tensor, like: Tensor) -> Tensor:
    """A ``(C,)`` statistic repeated per stacked frame, viewed to broadcast over ``like``
    ``(B, k * C, *space)``."""
    return stat.repeat(like.shape[1] // stat.numel()).view(-1, *(1,) * (like.ndim - 2))


def stack_frames(frames: Tensor) -> Tensor:
    """Frames ``(B, h, C, *space)`` as one model input ``(B, h * C, *space)``, oldest first."""
    return frames.flatten(1, 2)


def trajectory_windows(u: Tensor, p: Tensor, n_frames: int) -> Window:
    """Every run of ``n_frames`` consecutive frames of every trajectory, as training windows.

    Args:
        u: ``(S, T, C, *space)`` trajectories, physical units.
        p: ``(S, P)`` parameters, constant along each trajectory.
        n_frames: Window length ``history + k`` (``1 <= n_frames <= T``).

    Returns:
        ``(windows, p_windows)``: ``(S * (T - n_frames + 1), n_frames, C, *space)`` and
        ``(S * (T - n_frames + 1), P)``, sample-major (all windows of trajectory 0 first,
        earliest start first); a copy.
    """
    n_time = u.shape[1]
    if not 1 <= n_frames <= n_time:
        raise ValueError(f"n_frames must be in 1..{n_time} (frames per trajectory), got {n_frames}")
    starts = n_time - n_frames + 1
    # unfold puts the window axis last: (S, starts, C, *space, n_frames)
    windows = u.unfold(1, n_frames, 1).movedim(-1, 2).reshape(-1, n_frames, *u.shape[2:])
    return windows, p.repeat_interleave(starts, dim=0)


def one_step_loss(model: nn.Module, u: Tensor, p: Tensor, u_next: Tensor) -> Tensor:
    """Mean per-sample relative L2 error of the predicted next state (see the module docstring).

    ``mean_b ||pred_b - u_next_b||_2 / max(||u_next_b||_2, 1e-6 ||typical state||_2)`` with
    ``pred = u_last + delta_std * net_out``.

    Args:
        model: ``OneStepSurrogate``-like model.
        u: ``(B, history * C, *space)`` states at ``t - (history - 1) dt .. t``, oldest first,
            physical units.
        p: ``(B, P)`` parameters, physical units.
        u_next: ``(B, C, *space)`` state at t + dt, physical units.

    Returns:
        Scalar loss, dimensionless.
    """
    scale = model.delta_std.view(-1, *(1,) * (u.ndim - 2))
    u_last = u[:, u.shape[1] - model.delta_std.numel() :]
    err = scale * (model.normalised_increment(u, p) - (u_next - u_last) / scale)
    # An all-zero target would divide by 0. Norms are floored at 1e-6 of a typical training
    # state's norm, so such a sample is judged in absolute terms at that scale instead.
    n_points = math.prod(u.shape[2:])
    typical = torch.sqrt(n_points * torch.sum(model.field_std**2 + model.field_mean**2))
    ref = torch.linalg.vector_norm(u_next.flatten(1), dim=1).clamp_min(1e-6 * typical)
    return torch.mean(torch.linalg.vector_norm(err.flatten(1), dim=1) / ref)


def _step(model: nn.Module, frames: Tensor, p: Tensor) -> Tensor:
    """The next frames window: drop the oldest of ``frames`` ``(B, h, C, *space)``, append the
    model's prediction."""
    return torch.cat([frames[:, 1:], model(stack_frames(frames), p)[:, None]], dim=1)


def pushforward_loss(model: nn.Module, window: Tensor, p: Tensor, k: int) -> Tensor:
    """One-step loss after ``k - 1`` gradient-free model steps: the pushforward trick.

    Brandstetter, Worrall & Welling 2022, "Message Passing Neural PDE Solvers" (ICLR 2022): from the
    first ``h = history`` frames the model is unrolled ``k - 1`` steps under ``torch.no_grad()``;
    the last ``h`` frames then held (true frames while ``k - 1 < h``, the rest the model's own,
    detached) are the input of one more step with gradient, scored by ``one_step_loss`` against
    the true frame ``window[:, h + k - 1]``. The gradient thus only flows through the last step:
    it teaches the model to map its own error distribution back to the data, not to change the
    earlier steps. ``k = 1`` is ``one_step_loss`` of the first ``h`` frames and the next one.

    Args:
        model: ``OneStepSurrogate``-like model.
        window: ``(B, h + k, C, *space)`` consecutive true frames, physical units.
        p: ``(B, P)`` parameters, physical units.
        k: Model steps from the input frames to the scored frame (>= 1).

    Returns:
        Scalar loss, dimensionless.
    """
    h = _history(model)
    if k < 1 or window.ndim < 4 or window.shape[1] != h + k:
        raise ValueError(
            f"window must be (batch, history + k = {h} + {k}, C, *space) with k >= 1, got "
            f"{tuple(window.shape)}"
        )
    frames = window[:, :h]
    with torch.no_grad():
        for _ in range(k - 1):
            frames = _step(model, frames, p)
    return one_step_loss(model, stack_frames(frames), p, window[:, h + k - 1])


def add_input_noise(
    model: nn.Module, u: Tensor, noise_std: float, generator: torch.Generator
) -> Tensor:
    """``u + noise_std * field_std * z``, ``z ~ N(0, 1)`` drawn from ``generator``.

    The training noise of Sanchez-Gonzalez et al. 2020, as PDEArena (Gupta &
    Brandstetter 2022, "Towards Multi-spatiotemporal-scale Generalized PDE Modeling") also uses:
    applied to the input frames only, with the target left unchanged, so that the model learns
    to correct a perturbed state as well as to advance it.

    Args:
        model: ``OneStepSurrogate``-like model; its ``field_std`` ``(C,)`` sets the scale per
            field.
        u: ``(B, k * C, *space)`` stacked input frames, physical units.
        noise_std: Standard deviation relative to each field's standard deviation (>= 0).
        generator: Source of ``z``, on any device; ``z`` is drawn there in ``u``'s dtype and
            moved to ``u``'s device.

    Returns:
        Perturbed copy of ``u``, same shape.
    """
    z = torch.randn(u.shape, generator=generator, dtype=u.dtype, device=generator.device)
    return u + (noise_std * _per_field(model.field_std, u)) * z.to(u.device)


def _check_settings(pushforward: int, noise_std: float, generator) -> None:
    if isinstance(pushforward, bool) or not isinstance(pushforward, int) or pushforward < 1:
        raise ValueError(f"pushforward must be an int >= 1, got {pushforward!r}")
    if not (math.isfinite(noise_std) and noise_std >= 0):
        raise ValueError(f"noise_std must be finite and >= 0, got {noise_std!r}")
    if generator is None and (pushforward > 1 or noise_std > 0):
        raise ValueError("pushforward > 1 and noise_std > 0 need a torch.Generator (generator=)")


def batch_share(n: int, rank: int, world: int) -> slice:
    """The rows of a batch of ``n`` that rank ``rank`` of ``world`` takes in data-parallel
    training: contiguous, in rank order, sizes differing by at most one (empty when n < world)."""
    return slice(n * rank // world, n * (rank + 1) // world)


def _shared_loss(model: nn.Module, loss_of, tensors: tuple[Tensor, ...], share) -> Tensor:
    """``loss_of(*tensors)``, or with ``share = (rank, world)`` this rank's part of it.

    A rank scores its rows ``batch_share`` and weights that mean by ``n_r * world / n``, so the
    average over ranks (what DistributedDataParallel averages the gradients by) is the mean over
    the whole batch, also for a last batch that does not split evenly. A rank with no rows
    returns a zero that still reaches every parameter, so its gradient hooks fire as DDP needs.
    """
    if share is None:
        return loss_of(*tensors)
    rank, world = share
    n = tensors[0].shape[0]
    rows = batch_share(n, rank, world)
    if rows.stop == rows.start:
        return sum(p.sum() for p in model.parameters()) * 0.0
    part = tuple(t[rows] for t in tensors)
    return loss_of(*part) * ((rows.stop - rows.start) * world / n)


def _training_loss(
    model: nn.Module,
    batch: tuple[Tensor, ...],
    pushforward: int,
    noise_std: float,
    generator: torch.Generator | None,
    share: tuple[int, int] | None = None,
) -> Tensor:
    """The loss of one training batch (see ``train_epoch``); with ``share = (rank, world)``
    this rank's weighted part of it (``_shared_loss``). The pushforward depth and the noise
    are drawn for the whole batch before it is split, as one process draws them."""
    if len(batch) == 3:
        if pushforward != 1:
            raise ValueError("pushforward > 1 needs (window, p) batches, got (u, p, u_next)")
        u, p, u_next = batch
        if noise_std > 0:
            u = add_input_noise(model, u, noise_std, generator)
        return _shared_loss(model, partial(one_step_loss, model), (u, p, u_next), share)
    window, p = batch
    h = _history(model)
    if window.ndim < 4 or window.shape[1] != h + pushforward:
        raise ValueError(
            f"window must be (batch, history + pushforward = {h + pushforward}, C, *space), got "
            f"{tuple(window.shape)}"
        )
    k = 1
    if pushforward > 1:  # MP-PDE draws the number of unrolled steps per batch
        k = int(torch.randint(1, pushforward + 1, (1,), generator=generator))
        window = window[:, : h + k]
    if noise_std > 0:
        noisy = add_input_noise(model, stack_frames(window[:, :h]), noise_std, generator)
        window = torch.cat([noisy.unflatten(1, (h, -1)), window[:, h:]], dim=1)
    loss_of = partial(pushforward_loss, model, k=k)
    return _shared_loss(model, loss_of, (window, p), share)


def train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Iterable[Batch | Window],
    on_batch: Callable[[int, float], None] | None = None,
    *,
    pushforward: int = 1,
    noise_std: float = 0.0,
    generator: torch.Generator | None = None,
    data_parallel: DataParallelStep | None = None,
) -> float:
    """One pass over ``batches`` with one optimiser step per batch.

    The learning-rate scheduler is not stepped here; call ``scheduler.step()`` after the epoch.
    With the defaults, an ``(u, p, u_next)`` batch is trained on ``one_step_loss`` exactly as
    before pushforward and noise existed (bit for bit).

    Args:
        model: ``OneStepSurrogate``-like model, put in train mode.
        optimizer: Optimiser over the model's parameters.
        batches: Iterable of ``(u (B, history * C, *space), p (B, P), u_next (B, C, *space))``
            or ``(window (B, history + pushforward, C, *space), p (B, P))`` physical tensors.
        on_batch: Called after every optimiser step with the number of batches done in this
            epoch (from 1) and the batch's loss; defaults to None (nothing is called).
        pushforward: Largest number of model steps per training sample. For ``pushforward > 1``
            each batch draws ``k`` uniformly from ``1 .. pushforward`` (from ``generator``), as
            MP-PDE does, and is scored by ``pushforward_loss`` on its first ``history + k``
            frames; needs window batches. Defaults to 1 (one-step training).
        noise_std: Training noise added to the input frames (before any unroll), relative to
            each field's standard deviation (``add_input_noise``); defaults to 0.0 (none).
        generator: Source of the per-batch ``k`` and of the noise, in that order per batch;
            required when ``pushforward > 1`` or ``noise_std > 0``, else unused.
        data_parallel: This rank's part in data-parallel training
            (``pdeflow.tasks.surrogates.data_parallel.RankStep``): every rank iterates the same
            batches, scores its share of each, and the step uses the gradient of the whole
            batch. Defaults to None (one process).

    Returns:
        Mean loss over samples (batches weighted by their size); with ``pushforward > 1`` a mix
        of the drawn ``k``. The same on every rank of a data-parallel run.

    Raises:
        NonFiniteLoss: a batch's loss is NaN or inf (its step is not taken).
    """
    _check_settings(pushforward, noise_std, generator)
    model.train()
    ref = _reference(model)
    total, count = 0.0, 0
    dp = data_parallel
    for n_done, batch in enumerate(batches if dp is None else dp.guard(batches), start=1):
        batch = _to_model(batch, ref)
        optimizer.zero_grad(set_to_none=True)
        if dp is None:
            loss = _training_loss(model, batch, pushforward, noise_std, generator)
            value = loss.item()
        else:
            loss = dp.loss(batch, pushforward, noise_std, generator)
            value = dp.batch_mean(loss)  # every rank: the whole batch's loss
        if not math.isfinite(value):  # before the step: the weights stay the last good ones
            raise NonFiniteLoss(n_done, value)
        loss.backward()
        optimizer.step()
        total += value * batch[0].shape[0]
        count += batch[0].shape[0]
        if on_batch is not None:
            on_batch(n_done, value)
    if count == 0:
        raise ValueError("train_epoch got no batches")
    return total / count


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable[Batch | Window]) -> float:
    """Mean loss over ``batches`` without gradients or noise, in eval mode.

    An ``(u, p, u_next)`` batch is scored by ``one_step_loss``; a ``(window, p)`` batch of
    ``history + k`` frames by ``pushforward_loss`` with that ``k``, i.e. the relative L2 error
    of its last frame predicted ``k`` model steps from its first ``history``.

    Args:
        model: ``OneStepSurrogate``-like model.
        batches: Iterable of ``(u (B, history * C, *space), p (B, P), u_next (B, C, *space))``
            or ``(window (B, history + k, C, *space), p (B, P))`` physical tensors.

    Returns:
        Mean loss over samples (batches weighted by their size).
    """
    was_training = model.training
    model.eval()
    ref = _reference(model)
    total, count = 0.0, 0
    for batch in batches:
        batch = _to_model(batch, ref)
        if len(batch) == 3:
            loss = one_step_loss(model, *batch)
        else:
            window, p = batch
            loss = pushforward_loss(model, window, p, window.shape[1] - _history(model))
        total += loss.item() * batch[0].shape[0]
        count += batch[0].shape[0]
    model.train(was_training)
    if count == 0:
        raise ValueError("evaluate got no batches")
    return total / count


@torch.no_grad()
def rollout(
    model: nn.Module, u0: Tensor, p: Tensor, n_steps: int, batch_size: int | None = None
) -> Tensor:
    """Autoregressive rollout in eval mode: each step feeds the last ``history`` frames.

    With ``h = history`` (the model's, 1 if it has none) and the given frames
    ``u_0 .. u_{h-1}``, step ``j`` computes ``u_{h-1+j} = model([u_{j-1} .. u_{h-2+j}], p)``.

    Args:
        model: ``OneStepSurrogate``-like model, physical units in and out.
        u0: ``(B, h * C, *space)`` the first ``h`` frames stacked on channels, oldest first.
        p: ``(B, P)`` parameters, constant along the trajectory.
        n_steps: Number of model steps (>= 0).
        batch_size: Samples advanced at once; ``None`` means all. Bounds activation memory on
            the model's device; the result stays on ``u0``'s device.

    Returns:
        ``(B, h - 1 + n_steps + 1, C, *space)`` trajectory on ``u0``'s device and dtype: indices
        ``0 .. h-1`` are the given frames (inputs, not predictions; exclude them from error
        metrics), index ``h - 1 + j`` is the prediction of step ``j``. For ``h = 1`` this is
        ``(B, n_steps + 1, C, *space)`` with index 0 equal to ``u0``.
    """
    if n_steps < 0:
        raise ValueError(f"n_steps must be >= 0, got {n_steps}")
    n, h = u0.shape[0], _history(model)
    chunk = n if batch_size is None else batch_size
    if chunk < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if u0.ndim < 3 or u0.shape[1] % h:
        raise ValueError(f"u0 must be (batch, {h} * C, *space) for history {h}, got {u0.shape}")
    frames0 = u0.unflatten(1, (h, -1))
    was_training = model.training
    model.eval()
    ref = _reference(model)
    out = u0.new_empty((n, h + n_steps, *frames0.shape[2:]))
    for start in range(0, n, chunk):
        rows = slice(start, start + chunk)
        frames = frames0[rows].to(device=ref.device, dtype=ref.dtype)
        p_chunk = p[rows].to(device=ref.device, dtype=ref.dtype)
        out[rows, :h] = frames0[rows]
        for k in range(h, h + n_steps):
            u = model(stack_frames(frames), p_chunk)
            frames = torch.cat([frames[:, 1:], u[:, None]], dim=1)
            out[rows, k] = u.to(out.dtype)
    model.train(was_training)
    return out


def _detached_cpu(obj: Any) -> Any:
    """Deep copy with tensors moved to CPU, so a held state does not alias live training tensors."""
    if isinstance(obj, Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _detached_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_detached_cpu(v) for v in obj)
    return copy.deepcopy(obj)


def training_state(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: LRScheduler,
    epoch: int,
    generator: torch.Generator,
    history: list[dict],
) -> dict:
    """Everything needed to resume training bit-for-bit, as a ``weights_only``-loadable dict.

    Args:
        model: The model being trained.
        optimizer: Its optimiser (moments, step counts, learning rates).
        scheduler: Its learning-rate scheduler.
        epoch: Number of epochs completed.
        generator: The generator that drives data shuffling (its RNG state is saved).
        history: Per-epoch records of plain numbers and strings, e.g. ``{"epoch": 0, "loss": ..}``.

    Returns:
        dict of CPU tensors, ints, floats, strings, lists and dicts; save with ``torch.save``.
    """
    return {
        "version": STATE_VERSION,
        "model": _detached_cpu(model.state_dict()),
        "optimizer": _detached_cpu(optimizer.state_dict()),
        "scheduler": _detached_cpu(scheduler.state_dict()),
        "epoch": int(epoch),
        "generator": generator.get_state().clone(),
        "history": copy.deepcopy(list(history)),
    }


def restore_training_state(
    state: dict,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: LRScheduler,
    generator: torch.Generator,
) -> tuple[int, list[dict]]:
    """Load a ``training_state`` dict into freshly built objects, in place.

    The objects must be built with the same architecture and settings as the saved ones; the
    optimiser and scheduler must wrap this model and this optimiser.

    Args:
        state: Output of ``training_state`` (e.g. after ``torch.load(..., weights_only=True)``).
        model: Model to overwrite.
        optimizer: Optimiser to overwrite.
        scheduler: Scheduler to overwrite.
        generator: Shuffling generator whose RNG state is overwritten.

    Returns:
        ``(epoch, history)``: epochs completed and the saved history.
    """
    if state.get("version") != STATE_VERSION:
        raise ValueError(f"unsupported training state version {state.get('version')!r}")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    generator.set_state(state["generator"].cpu())
    return int(state["epoch"]), list(state["history"])
