"""The physical-units one-step surrogate around a normalised network, with multi-frame history.

``OneStepSurrogate`` maps the last ``history`` states of a trajectory to the next one. It carries
the normalisation statistics as buffers, so a checkpoint of its ``state_dict`` is a complete,
self-describing model; ``normalization_stats`` computes them from a training split.

Frames are stacked on the channel axis, oldest first: for ``C`` fields and history ``h`` the input
``u`` is ``(batch, h * C, *space)`` with channels ``j * C .. (j + 1) * C - 1`` holding frame ``j``
(``u(t - (h - 1 - j) dt)``), so the last ``C`` channels are the current state ``u(t)``. Feeding
several past frames lets the network represent multistep methods (and recover information that
one frame of a partially observed state lacks); Brandstetter, Worrall & Welling 2022,
"Message Passing Neural PDE Solvers" (ICLR 2022), condition their solver on a window of past
frames in the same way.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

ArrayLike = np.ndarray | Tensor | Sequence[float]

# State-dict key of the history length; present only when history > 1, so that a history-1
# model keeps exactly the keys (and checkpoints) it had before multi-frame input existed.
HISTORY_KEY = "n_history"


def _as_array(a: ArrayLike) -> np.ndarray:
    if isinstance(a, Tensor):
        a = a.detach().cpu().numpy()
    return np.asarray(a, dtype=np.float64)


def _as_vector(name: str, value: ArrayLike, size: int | None) -> Tensor:
    t = torch.from_numpy(_as_array(value).reshape(-1))
    if size is not None and t.numel() != size:
        raise ValueError(f"{name} must have {size} entries, got {t.numel()}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} must be finite")
    return t


def _safe_std(t: Tensor) -> Tensor:
    # A constant training field or parameter has std 0; dividing by 1 instead leaves it centred
    # and bounded rather than infinite.
    return torch.where(t > 0, t, torch.ones_like(t))


def per_channel(stat: Tensor, n_space: int) -> Tensor:
    """View a ``(C,)`` statistic as ``(C, 1, ..., 1)`` to broadcast over ``n_space`` axes."""
    return stat.view(-1, *(1,) * n_space)


class OneStepSurrogate(nn.Module):
    """Physical-units map from ``history`` frames ``u(t - (h-1) dt) .. u(t)`` to ``u(t + dt)``.

    With ``u`` ``(batch, h * C, *space)`` holding ``h = history`` frames oldest first (see the
    module docstring) and ``u_last = u[:, -C:]`` the current state,

    ``forward(u, p) = u_last + delta_std * net((u - field_mean) / field_std,
    (p - param_mean) / param_std)``,

    where every frame is normalised with the same per-field statistics, broadcast over every
    spatial axis. The network maps ``(batch, h * C, *space)`` and ``(batch, P)`` to a normalised
    increment ``(batch, C, *space)``. Predicting the increment scaled by its own standard
    deviation keeps the network's target O(1) even when ``dt`` is small, and the skip from the
    last frame makes persistence the trivial starting point. With ``history=1`` this is the
    single-frame surrogate, with the same ``state_dict`` keys and values.

    The statistics are registered buffers: they live in ``state_dict``, move with ``.to()``, and
    come back from ``torch.load(..., weights_only=True)``. Non-positive standard deviations (a
    constant field or parameter) are replaced by 1. For ``history > 1`` the history length is
    stored too, as the int64 buffer ``n_history``; loading a ``state_dict`` saved with another
    history raises a ``RuntimeError`` that names both (a builder can read ``state["n_history"]``,
    absent meaning 1, to construct the matching model).

    Args:
        net: Module mapping normalised ``(u (B, history * C, *space), p (B, P))`` to a normalised
            increment ``(B, C, *space)``. Its ``n_dims`` attribute, if present, fixes the spatial
            rank of ``u``.
        field_mean: ``(n_fields,)`` mean of u over samples and space, physical units.
        field_std: ``(n_fields,)`` standard deviation of u, physical units.
        param_mean: ``(n_params,)`` mean of p, physical units.
        param_std: ``(n_params,)`` standard deviation of p, physical units.
        delta_std: ``(n_fields,)`` standard deviation of ``u(t+dt) - u(t)`` over the training
            split, physical units.
        history: Number of input frames h (>= 1); defaults to 1.
    """

    def __init__(
        self,
        net: nn.Module,
        field_mean: ArrayLike,
        field_std: ArrayLike,
        param_mean: ArrayLike,
        param_std: ArrayLike,
        delta_std: ArrayLike,
        history: int = 1,
    ) -> None:
        super().__init__()
        if isinstance(history, bool) or not isinstance(history, int | np.integer) or history < 1:
            raise ValueError(f"history must be an int >= 1, got {history!r}")
        self.net = net
        self.history = int(history)
        n_fields = _as_vector("field_mean", field_mean, None).numel()
        n_params = _as_vector("param_mean", param_mean, None).numel()
        ref = next(net.parameters(), None)
        dtype = ref.dtype if ref is not None and ref.is_floating_point() else torch.float32
        device = ref.device if ref is not None else None
        stats = {
            "field_mean": (field_mean, n_fields, False),
            "field_std": (field_std, n_fields, True),
            "param_mean": (param_mean, n_params, False),
            "param_std": (param_std, n_params, True),
            "delta_std": (delta_std, n_fields, True),
        }
        for name, (value, size, is_std) in stats.items():
            t = _as_vector(name, value, size)
            t = _safe_std(t) if is_std else t
            self.register_buffer(name, t.to(device=device, dtype=dtype))
        if self.history > 1:
            # Registered after the statistics: training code takes the first buffer as the
            # reference for device and dtype, and this one is an integer.
            self.register_buffer(HISTORY_KEY, torch.tensor(self.history, device=device))

    @classmethod
    def from_data(
        cls, net: nn.Module, u: ArrayLike, p: ArrayLike, u_next: ArrayLike, history: int = 1
    ) -> OneStepSurrogate:
        """Build the surrogate with statistics of a training split.

        Args:
            net: Normalised network, as in the constructor.
            u: ``(n_samples, n_fields, *space)`` states at t, physical units (one frame each,
                whatever ``history``: the statistics are per field).
            p: ``(n_samples, n_params)`` parameters.
            u_next: ``(n_samples, n_fields, *space)`` states at t + dt.
            history: Number of input frames of the model; defaults to 1.

        Returns:
            OneStepSurrogate: with all five statistics computed in float64.
        """
        return cls(net, **normalization_stats(u, p, u_next), history=history)

    @property
    def n_fields(self) -> int:
        return self.field_mean.numel()

    @property
    def n_params(self) -> int:
        return self.param_mean.numel()

    @property
    def n_dims(self) -> int | None:
        """Spatial rank the network expects, or ``None`` if it does not say."""
        return getattr(self.net, "n_dims", None)

    def check_inputs(self, u: Tensor, p: Tensor) -> None:
        """Raise ``ValueError`` unless ``u`` is ``(B, history * C, *space)``, ``p`` ``(B, P)``."""
        n_dims = self.n_dims
        space = "*space" if n_dims is None else ", ".join(("n_x", "n_y", "n_z")[:n_dims])
        rank_ok = u.ndim >= 3 if n_dims is None else u.ndim == 2 + n_dims
        n_in = self.history * self.n_fields
        if not rank_ok or u.shape[1] != n_in:
            frames = "" if self.history == 1 else f" ({self.history} frames of {self.n_fields})"
            raise ValueError(f"u must be (batch, {n_in}, {space}){frames}, got {tuple(u.shape)}")
        if p.ndim != 2 or p.shape != (u.shape[0], self.n_params):
            raise ValueError(f"p must be ({u.shape[0]}, {self.n_params}), got {tuple(p.shape)}")

    def normalise_state(self, u: Tensor) -> Tensor:
        """``(u - field_mean) / field_std`` for ``u`` ``(B, k * C, *space)``, k frames stacked.

        Every frame is normalised with the same per-field statistics (the statistic of channel
        ``j * C + c`` is that of field ``c``).
        """
        n_space, n_frames = u.ndim - 2, u.shape[1] // self.n_fields
        mean = per_channel(self.field_mean.repeat(n_frames), n_space)
        return (u - mean) / per_channel(self.field_std.repeat(n_frames), n_space)

    def normalised_increment(self, u: Tensor, p: Tensor) -> Tensor:
        """Normalised increment ``(B, C, *space)`` from physical ``u`` ``(B, history * C, *space)``.

        This is the raw network output; ``forward`` scales it by ``delta_std`` and adds the last
        frame of ``u``. ``p`` is ``(B, P)`` in physical units.
        """
        self.check_inputs(u, p)
        p_n = (p - self.param_mean) / self.param_std
        return self.net(self.normalise_state(u), p_n)

    def last_frame(self, u: Tensor) -> Tensor:
        """The current state ``u(t)``, ``(B, C, *space)``: the last ``C`` channels of ``u``."""
        return u[:, u.shape[1] - self.n_fields :]

    def forward(self, u: Tensor, p: Tensor) -> Tensor:
        """Advance one step.

        Args:
            u: ``(batch, history * n_fields, *space)`` states at ``t - (history - 1) dt .. t``,
                oldest first, physical units.
            p: ``(batch, n_params)`` parameters, physical units.

        Returns:
            ``(batch, n_fields, *space)`` predicted state at t + dt, physical units.
        """
        increment = self.normalised_increment(u, p)
        return self.last_frame(u) + per_channel(self.delta_std, u.ndim - 2) * increment

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        saved = state_dict.get(prefix + HISTORY_KEY)
        saved = 1 if saved is None else int(saved)
        if saved != self.history:
            error_msgs.append(
                f"the state_dict is of a model with history={saved} (input frames), this "
                f"OneStepSurrogate has history={self.history}: build it with history={saved}"
            )
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )


def normalization_stats(u: ArrayLike, p: ArrayLike, u_next: ArrayLike) -> dict[str, np.ndarray]:
    """Per-channel means and standard deviations for ``OneStepSurrogate``, in float64.

    Args:
        u: ``(n_samples, n_fields, *space)`` states at t, physical units, any number >= 1 of
            spatial axes.
        p: ``(n_samples, n_params)`` parameters.
        u_next: ``(n_samples, n_fields, *space)`` states at t + dt.

    Returns:
        dict with ``field_mean``, ``field_std``, ``delta_std`` of shape ``(n_fields,)`` and
        ``param_mean``, ``param_std`` of shape ``(n_params,)``; standard deviations are
        population (ddof=0) values over samples and all spatial axes.
    """
    u, p, u_next = (_as_array(a) for a in (u, p, u_next))
    if u.ndim < 3 or u_next.shape != u.shape or p.ndim != 2 or p.shape[0] != u.shape[0]:
        raise ValueError(
            f"expected u, u_next (S, C, *space) and p (S, P); got {u.shape}, {u_next.shape}, "
            f"{p.shape}"
        )
    axes = (0, *range(2, u.ndim))
    delta = u_next - u
    return {
        "field_mean": u.mean(axis=axes),
        "field_std": u.std(axis=axes),
        "param_mean": p.mean(axis=0),
        "param_std": p.std(axis=0),
        "delta_std": delta.std(axis=axes),
    }
