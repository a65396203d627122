"""Fourier neural operators for one-step prediction of 1D, 2D and 3D fields.

Implements the architecture of Li et al. 2021, "Fourier Neural Operator for Parametric Partial
Differential Equations" (ICLR 2021), for a state ``u`` of shape ``(batch, n_fields, *space)`` on a
uniform grid with one (``FNO1d``), two (``FNO2d``) or three (``FNO3d``) spatial axes, conditioned
on PDE parameters ``p`` of shape ``(batch, n_params)``. The grid is periodic unless ``padding`` > 0.

The network works in normalised units and predicts a normalised increment; ``OneStepSurrogate``
carries the normalisation statistics as buffers and maps physical ``u(t)`` to physical
``u(t + dt)``, so a checkpoint of its ``state_dict`` is a complete, self-describing model.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

ArrayLike = np.ndarray | Tensor | Sequence[float]


def _uniform_(tensor: Tensor, bound: float, generator: torch.Generator | None) -> None:
    with torch.no_grad():
        tensor.uniform_(-bound, bound, generator=generator)


class Pointwise(nn.Module):
    """A 1x1 convolution over channels, ``(B, Cin, *space) -> (B, Cout, *space)``, as a matmul.

    Equivalent to ``nn.Conv1d``/``nn.Conv2d`` with ``kernel_size=1`` but about 10x faster on CPU
    here: oneDNN's convolution path costs ~12 ms per backward call at (64, 32, 256), a matmul well
    under 1 ms. The spatial axes are flattened into one for the matmul. Initialised like PyTorch's
    default ``Conv1d``, but from ``generator``.
    """

    def __init__(self, in_channels: int, out_channels: int, generator: torch.Generator | None):
        super().__init__()
        bound = 1.0 / math.sqrt(in_channels)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels))
        self.bias = nn.Parameter(torch.empty(out_channels))
        _uniform_(self.weight, bound, generator)
        _uniform_(self.bias, bound, generator)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim == 3:
            # Kept as it was before 2D support, so 1D models and runs reproduce bit for bit.
            return torch.matmul(self.weight, x) + self.bias[:, None]
        # matmul(W, x) folds the batch into the rows through transposed copies of x; baddbmm
        # keeps the (B, C, points) layout: forward 2x, backward 1.3x faster at (16, 24, 64^2).
        flat = x.flatten(2)
        n = flat.shape[0]
        y = torch.baddbmm(self.bias[:, None].expand(n, -1, 1), self.weight.expand(n, -1, -1), flat)
        return y.unflatten(2, x.shape[2:])


class _SpectralConv(nn.Module, ABC):
    """Weights shared by the spectral convolutions: one complex matrix per mode."""

    @classmethod
    @abstractmethod
    def mode_shape(cls, modes: int) -> tuple[int, ...]:
        """Shape of the retained-mode axes of the weight for ``modes`` modes per axis."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        modes: int,
        *,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        _check_at_least(1, in_channels=in_channels, out_channels=out_channels, modes=modes)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.modes = modes
        # Stored as (real, imag) pairs rather than a complex dtype: Module.to(torch.float64)
        # would otherwise cast a complex parameter to real and silently drop the imaginary part.
        shape = (in_channels, out_channels, *self.mode_shape(modes), 2)
        self.weight = nn.Parameter(torch.empty(shape))
        # Smaller than the pointwise branch's 1/sqrt(in) so each Fourier layer starts close to its
        # 1x1 path; between Li et al.'s 1/(in*out) and 1/sqrt(in), which trained equally well on
        # the 1D advection test (one-step nRMSE 0.0085-0.0117 over three seeds for all three).
        _uniform_(self.weight, 1.0 / math.sqrt(in_channels * out_channels), generator)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, modes={self.modes}"


class SpectralConv1d(_SpectralConv):
    """Fourier layer kernel of Li et al. 2021: a learned linear map on the lowest Fourier modes.

    ``y = irfft(W_k rfft(x)_k)`` for ``k < modes`` and zero above, where ``W_k`` is a complex
    ``(in_channels, out_channels)`` matrix per retained mode. The layer is linear, has no bias,
    and commutes with periodic shifts of the grid.

    Args:
        in_channels: Number of input channels.
        out_channels: Number of output channels.
        modes: Number of retained rfft modes (0 .. modes-1); at forward time it must not exceed
            ``n_x // 2 + 1``.
        generator: CPU generator for the weight initialisation; ``None`` uses the global RNG.
    """

    @classmethod
    def mode_shape(cls, modes: int) -> tuple[int, ...]:
        return (modes,)

    def forward(self, x: Tensor) -> Tensor:
        """Apply the truncated spectral convolution.

        Args:
            x: Real tensor ``(batch, in_channels, n_x)``.

        Returns:
            Real tensor ``(batch, out_channels, n_x)`` with no content above mode ``modes - 1``.
        """
        n_x = x.shape[-1]
        check_modes(self.modes, n_x)
        x_hat = torch.fft.rfft(x, dim=-1)[..., : self.modes]
        y_hat = torch.einsum("bik,iok->bok", x_hat, torch.view_as_complex(self.weight))
        # irfft zero-pads the missing high modes, which is exactly the truncation.
        return torch.fft.irfft(y_hat, n=n_x, dim=-1)


class SpectralConvNd(_SpectralConv):
    """Fourier layer kernel of Li et al. 2021 on a grid of ``n_dims`` >= 2 axes.

    Keeps the wavenumbers ``0 .. modes-1`` of the real FFT along the last axis and both
    ``0 .. modes-1`` and ``-modes .. -1`` along every other axis (a real field's half-spectrum
    needs both signs there), applies a complex ``(in_channels, out_channels)`` matrix per
    retained mode and transforms back with zeros elsewhere. Linear, no bias, commutes with
    periodic shifts along every axis. Subclasses set ``n_dims``.

    Args:
        in_channels: Number of input channels.
        out_channels: Number of output channels.
        modes: Retained modes per axis; at forward time ``modes <= n // 2`` on every axis but
            the last and ``modes <= n_last // 2 + 1``.
        generator: CPU generator for the weight initialisation; ``None`` uses the global RNG.
    """

    n_dims: int

    @classmethod
    def mode_shape(cls, modes: int) -> tuple[int, ...]:
        # Along each leading axis, rows 0 .. modes-1 hold k = 0 .. modes-1 and rows
        # modes .. 2 modes-1 hold k = -modes .. -1.
        return (2 * modes,) * (cls.n_dims - 1) + (modes,)

    def forward(self, x: Tensor) -> Tensor:
        """Apply the truncated spectral convolution.

        Args:
            x: Real tensor ``(batch, in_channels, *space)`` with ``n_dims`` spatial axes.

        Returns:
            Real tensor ``(batch, out_channels, *space)`` whose spectrum is zero outside the
            retained modes.
        """
        space = x.shape[2:]
        m = self.modes
        check_modes(m, *space)
        # rfftn taken axis by axis from the last, each transform running on the modes kept so
        # far only.
        x_hat = torch.fft.rfft(x, dim=-1)[..., :m]
        for axis in range(-2, -len(space) - 1, -1):
            x_hat = torch.fft.fft(x_hat, dim=axis)
            n = x_hat.shape[axis]
            x_hat = torch.cat([x_hat.narrow(axis, 0, m), x_hat.narrow(axis, n - m, m)], dim=axis)
        y_hat = torch.einsum("bi...,io...->bo...", x_hat, torch.view_as_complex(self.weight))
        for axis in range(-len(space), -1):
            gap = list(y_hat.shape)
            gap[axis] = space[axis] - 2 * m
            halves = (y_hat.narrow(axis, 0, m), y_hat.new_zeros(gap), y_hat.narrow(axis, m, m))
            y_hat = torch.fft.ifft(torch.cat(halves, dim=axis), dim=axis)
        # irfft zero-pads the missing high modes, which is exactly the truncation along it.
        return torch.fft.irfft(y_hat, n=space[-1], dim=-1)


class SpectralConv2d(SpectralConvNd):
    """2D Fourier layer kernel on a ``(n_x, n_y)`` grid; see ``SpectralConvNd``."""

    n_dims = 2


class SpectralConv3d(SpectralConvNd):
    """3D Fourier layer kernel on a ``(n_x, n_y, n_z)`` grid; see ``SpectralConvNd``."""

    n_dims = 3


def check_modes(modes: int, *shape: int) -> None:
    """Raise ``ValueError`` unless ``modes`` fits the FFT of a grid of ``shape``.

    The last axis is transformed by a real FFT with ``n // 2 + 1`` modes; every other axis keeps
    ``modes`` non-negative and ``modes`` negative wavenumbers, so needs ``2 * modes <= n``.

    Args:
        modes: Retained modes per axis.
        *shape: Grid points per spatial axis, e.g. ``n_x`` or ``n_x, n_y``.
    """
    *leading, n_last = shape
    if modes > n_last // 2 + 1:
        raise ValueError(
            f"modes={modes} exceeds the {n_last // 2 + 1} Fourier modes of the last grid axis "
            f"(n={n_last}); use modes <= n // 2 + 1 or a finer grid"
        )
    for axis, n in enumerate(leading):
        if modes > n // 2:
            raise ValueError(
                f"modes={modes} exceeds the {n // 2} modes per sign of grid axis {axis} (n={n}); "
                f"use modes <= n // 2 or a finer grid"
            )


def _check_at_least(low: int, **sizes: int) -> None:
    for name, value in sizes.items():
        if value < low:
            raise ValueError(f"{name} must be >= {low}, got {value}")


class _FNO(nn.Module):
    """Shared body of the FNOs; subclasses set ``n_dims`` and ``spectral_layer``."""

    n_dims: int
    spectral_layer: type[_SpectralConv]

    def __init__(
        self,
        n_fields: int,
        n_params: int,
        width: int = 32,
        modes: int = 16,
        n_layers: int = 4,
        *,
        padding: int = 0,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        _check_at_least(1, n_fields=n_fields, width=width, modes=modes, n_layers=n_layers)
        _check_at_least(0, n_params=n_params, padding=padding)
        self.n_fields, self.n_params = n_fields, n_params
        self.width, self.modes, self.n_layers, self.padding = width, modes, n_layers, padding
        g = generator
        # The construction order fixes which generator draws go to which weights; keep it.
        self.lift = Pointwise(n_fields + n_params, width, g)
        self.spectral = nn.ModuleList(
            self.spectral_layer(width, width, modes, generator=g) for _ in range(n_layers)
        )
        self.pointwise = nn.ModuleList(Pointwise(width, width, g) for _ in range(n_layers))
        self.project_hidden = Pointwise(width, 2 * width, g)
        self.project_out = Pointwise(2 * width, n_fields, g)

    def forward(self, u: Tensor, p: Tensor) -> Tensor:
        """Predict the normalised increment.

        Args:
            u: Normalised state ``(batch, n_fields, *space)`` with ``n_dims`` spatial axes.
            p: Normalised parameters ``(batch, n_params)``.

        Returns:
            Normalised increment ``(batch, n_fields, *space)``.
        """
        check_inputs(u, p, self.n_fields, self.n_params, self.n_dims)
        space = u.shape[2:]
        check_modes(self.modes, *(n + self.padding for n in space))
        x = torch.cat([u, p.view(*p.shape, *(1,) * self.n_dims).expand(-1, -1, *space)], dim=1)
        v = self.lift(x)
        if self.padding:
            v = F.pad(v, (0, self.padding) * self.n_dims)
        for i, (spectral, pointwise) in enumerate(zip(self.spectral, self.pointwise, strict=True)):
            v = spectral(v) + pointwise(v)
            if i < self.n_layers - 1:
                v = F.gelu(v)
        if self.padding:
            v = v[(..., *(slice(0, n) for n in space))]
        return self.project_out(F.gelu(self.project_hidden(v)))


class FNO1d(_FNO):
    """Fourier neural operator (Li et al. 2021) for 1D fields with parameters.

    The parameters are broadcast over x as extra input channels, lifted with a 1x1 convolution to
    ``width`` channels, passed through ``n_layers`` Fourier layers ``v <- GELU(K v + W v)``
    (``K`` a ``SpectralConv1d``, ``W`` a 1x1 convolution; as in the paper the last layer has no
    activation) and projected by two 1x1 convolutions to ``n_fields`` channels. There is no grid
    coordinate channel, so with ``padding=0`` the operator is equivariant to periodic shifts.

    Inputs and output are in normalised units; see ``OneStepSurrogate`` for physical units.

    Args:
        n_fields: Number of state channels C.
        n_params: Number of scalar PDE parameters P (may be 0).
        width: Hidden channel count.
        modes: Retained Fourier modes per layer, at most ``(n_x + padding) // 2 + 1``.
        n_layers: Number of Fourier layers.
        padding: Zeros appended to the end of the grid after the lift and cropped before the
            projection, so that the FFTs do not wrap a non-periodic field around (Li et al. pad
            their non-periodic problems); 0 for periodic fields.
        generator: CPU generator for the initialisation; ``None`` uses the global RNG. Build on
            CPU and move with ``.to(device, dtype)``.
    """

    n_dims = 1
    spectral_layer = SpectralConv1d


class FNO2d(_FNO):
    """Fourier neural operator (Li et al. 2021) for 2D fields ``(batch, C, n_x, n_y)``.

    The same network as ``FNO1d`` with ``SpectralConv2d`` Fourier layers: parameters broadcast
    over the grid as channels, 1x1 lift, ``n_layers`` layers ``v <- GELU(K v + W v)`` (no
    activation after the last), two 1x1 projections. With ``padding=0`` it is equivariant to
    periodic shifts in x and y.

    Args:
        n_fields: Number of state channels C.
        n_params: Number of scalar PDE parameters P (may be 0).
        width: Hidden channel count.
        modes: Retained modes per axis, at most ``(n_x + padding) // 2`` and
            ``(n_y + padding) // 2 + 1``.
        n_layers: Number of Fourier layers.
        padding: Zeros appended to the end of both axes after the lift and cropped before the
            projection, for non-periodic fields; 0 for periodic fields.
        generator: CPU generator for the initialisation; ``None`` uses the global RNG.
    """

    n_dims = 2
    spectral_layer = SpectralConv2d


class FNO3d(_FNO):
    """Fourier neural operator (Li et al. 2021) for 3D fields ``(batch, C, n_x, n_y, n_z)``.

    The same network as ``FNO1d`` and ``FNO2d`` with ``SpectralConv3d`` Fourier layers:
    parameters broadcast over the grid as channels, 1x1 lift, ``n_layers`` layers
    ``v <- GELU(K v + W v)`` (no activation after the last), two 1x1 projections. With
    ``padding=0`` it is equivariant to periodic shifts along each axis.

    Args:
        n_fields: Number of state channels C.
        n_params: Number of scalar PDE parameters P (may be 0).
        width: Hidden channel count.
        modes: Retained modes per axis, at most ``(n + padding) // 2`` on x and y and
            ``(n_z + padding) // 2 + 1`` on z; the weights hold ``4 modes^3`` complex matrices
            per layer, so 3D models use fewer modes than 2D ones.
        n_layers: Number of Fourier layers.
        padding: Zeros appended to the end of every axis after the lift and cropped before the
            projection, for non-periodic fields; 0 for periodic fields.
        generator: CPU generator for the initialisation; ``None`` uses the global RNG.
    """

    n_dims = 3
    spectral_layer = SpectralConv3d


def check_inputs(
    u: Tensor, p: Tensor, n_fields: int, n_params: int, n_dims: int | None = None
) -> None:
    """Raise ``ValueError`` unless ``u`` is ``(B, n_fields, *space)`` and ``p`` ``(B, n_params)``.

    ``space`` has ``n_dims`` axes, or any number >= 1 when ``n_dims`` is ``None``.
    """
    space = "*space" if n_dims is None else ", ".join(("n_x", "n_y", "n_z")[:n_dims])
    rank_ok = u.ndim >= 3 if n_dims is None else u.ndim == 2 + n_dims
    if not rank_ok or u.shape[1] != n_fields:
        raise ValueError(f"u must be (batch, {n_fields}, {space}), got {tuple(u.shape)}")
    if p.ndim != 2 or p.shape != (u.shape[0], n_params):
        raise ValueError(f"p must be ({u.shape[0]}, {n_params}), got {tuple(p.shape)}")


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


class OneStepSurrogate(nn.Module):
    """Physical-units one-step map ``u(t) -> u(t + dt)`` around a normalised network.

    ``forward(u, p) = u + delta_std * net((u - field_mean) / field_std,
    (p - param_mean) / param_std)``, with per-field statistics broadcast over every spatial axis
    of ``u`` ``(batch, C, *space)``. Predicting the
    increment scaled by its own standard deviation keeps the network's target O(1) even when
    ``dt`` is small, and the identity skip makes persistence the trivial starting point.

    The statistics are registered buffers: they live in ``state_dict``, move with ``.to()``, and
    come back from ``torch.load(..., weights_only=True)``. Non-positive standard deviations (a
    constant field or parameter) are replaced by 1.

    Args:
        net: Module mapping normalised ``(u, p)`` to a normalised increment, e.g. ``FNO1d`` or
            ``FNO2d``. Its ``n_dims`` attribute, if present, fixes the spatial rank of ``u``.
        field_mean: ``(n_fields,)`` mean of u over samples and space, physical units.
        field_std: ``(n_fields,)`` standard deviation of u, physical units.
        param_mean: ``(n_params,)`` mean of p, physical units.
        param_std: ``(n_params,)`` standard deviation of p, physical units.
        delta_std: ``(n_fields,)`` standard deviation of ``u(t+dt) - u(t)`` over the training
            split, physical units.
    """

    def __init__(
        self,
        net: nn.Module,
        field_mean: ArrayLike,
        field_std: ArrayLike,
        param_mean: ArrayLike,
        param_std: ArrayLike,
        delta_std: ArrayLike,
    ) -> None:
        super().__init__()
        self.net = net
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

    @classmethod
    def from_data(
        cls, net: nn.Module, u: ArrayLike, p: ArrayLike, u_next: ArrayLike
    ) -> OneStepSurrogate:
        """Build the surrogate with statistics of a training split.

        Args:
            net: Normalised network, as in the constructor.
            u: ``(n_samples, n_fields, *space)`` states at t, physical units.
            p: ``(n_samples, n_params)`` parameters.
            u_next: ``(n_samples, n_fields, *space)`` states at t + dt.

        Returns:
            OneStepSurrogate: with all five statistics computed in float64.
        """
        return cls(net, **normalization_stats(u, p, u_next))

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

    def normalised_increment(self, u: Tensor, p: Tensor) -> Tensor:
        """Normalised increment ``(B, C, *space)`` from physical ``u`` ``(B, C, *space)``.

        This is the raw network output; ``forward`` scales it by ``delta_std`` and adds ``u``.
        ``p`` is ``(B, P)`` in physical units.
        """
        check_inputs(u, p, self.n_fields, self.n_params, self.n_dims)
        n_space = u.ndim - 2
        u_n = (u - per_channel(self.field_mean, n_space)) / per_channel(self.field_std, n_space)
        p_n = (p - self.param_mean) / self.param_std
        return self.net(u_n, p_n)

    def forward(self, u: Tensor, p: Tensor) -> Tensor:
        """Advance one step.

        Args:
            u: ``(batch, n_fields, *space)`` state at t, physical units.
            p: ``(batch, n_params)`` parameters, physical units.

        Returns:
            ``(batch, n_fields, *space)`` predicted state at t + dt, physical units.
        """
        return u + per_channel(self.delta_std, u.ndim - 2) * self.normalised_increment(u, p)


def per_channel(stat: Tensor, n_space: int) -> Tensor:
    """View a ``(C,)`` statistic as ``(C, 1, ..., 1)`` to broadcast over ``n_space`` axes."""
    return stat.view(-1, *(1,) * n_space)


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


def _as_array(a: ArrayLike) -> np.ndarray:
    if isinstance(a, Tensor):
        a = a.detach().cpu().numpy()
    return np.asarray(a, dtype=np.float64)
