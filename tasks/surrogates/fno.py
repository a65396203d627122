"""Fourier neural operators for one-step prediction of 1D, 2D and 3D fields.

Implements the architecture of Li et al. 2021, "Fourier Neural Operator for Parametric Partial
Differential Equations" (ICLR 2021), for a state ``u`` of shape ``(batch, n_fields, *space)`` on a
uniform grid with one (``FNO1d``), two (``FNO2d``) or three (``FNO3d``) spatial axes, conditioned
on PDE parameters ``p`` of shape ``(batch, n_params)``. The grid is periodic unless ``padding`` > 0.
``FNO`` is the same network for any of these ranks, with a multi-frame input and, as an option,
Tucker or CP factorised spectral weights (the TFNO of Kossaifi et al. 2023).

The network works in normalised units and predicts a normalised increment; ``OneStepSurrogate``
carries the normalisation statistics as buffers and maps physical ``u(t)`` to physical
``u(t + dt)``, so a checkpoint of its ``state_dict`` is a complete, self-describing model.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from pdeflow.tasks.surrogates.onestep import OneStepSurrogate, normalization_stats, per_channel  # noqa: F401
from pdeflow.tasks.surrogates.tensorized import FactorizedWeight, cp_rank, tucker_ranks  # noqa: F401


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
    """Weights shared by the spectral convolutions: one complex matrix per mode.

    The weight is dense (``weight``, shape ``(in, out, *mode_shape, 2)``) unless
    ``factorization`` names a low-rank format, when ``factorized`` (a ``FactorizedWeight``)
    holds it; ``complex_weight()`` returns the complex ``(in, out, *mode_shape)`` tensor either
    way.
    """

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
        factorization: str | None = None,
        rank: float = 0.25,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        _check_at_least(1, in_channels=in_channels, out_channels=out_channels, modes=modes)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.modes = modes
        # Smaller than the pointwise branch's 1/sqrt(in) so each Fourier layer starts close to its
        # 1x1 path; between Li et al.'s 1/(in*out) and 1/sqrt(in), which trained equally well on
        # the 1D advection test (one-step nRMSE 0.0085-0.0117 over three seeds for all three).
        bound = 1.0 / math.sqrt(in_channels * out_channels)
        shape = (in_channels, out_channels, *self.mode_shape(modes))
        self.factorized: FactorizedWeight | None = None
        if factorization is None:
            # Stored as (real, imag) pairs rather than a complex dtype: Module.to(torch.float64)
            # would otherwise cast a complex parameter to real and drop the imaginary part.
            self.weight = nn.Parameter(torch.empty((*shape, 2)))
            _uniform_(self.weight, bound, generator)
        else:
            # U(-b, b) real and imaginary parts have complex variance 2 b^2 / 3.
            std = bound * math.sqrt(2 / 3)
            self.factorized = FactorizedWeight(shape, factorization, rank, std, generator)

    def complex_weight(self) -> Tensor:
        """The complex weight ``(in_channels, out_channels, *mode_shape)``."""
        if self.factorized is None:
            return torch.view_as_complex(self.weight)
        return self.factorized()

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
        y_hat = torch.einsum("bik,iok->bok", x_hat, self.complex_weight())
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
        y_hat = torch.einsum("bi...,io...->bo...", x_hat, self.complex_weight())
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


def check_net_args(n_dims: int, n_params: int, **positive: int) -> None:
    """Raise ``ValueError`` unless the sizes a zoo network is built with are valid.

    ``n_dims`` must be 1, 2 or 3, ``n_params >= 0``, and every size in ``positive``
    (``n_fields``, ``history``, ``width``, ...) ``>= 1``; the message names the first that is not.
    """
    if n_dims not in (1, 2, 3):
        raise ValueError(f"n_dims must be 1, 2 or 3, got {n_dims!r}")
    _check_at_least(0, n_params=n_params)
    _check_at_least(1, **positive)


@contextmanager
def seeded_init(generator: torch.Generator | None) -> Iterator[None]:
    """Run the block with the CPU RNG seeded from ``generator``; restore the global RNG after.

    For modules initialised by PyTorch's defaults (which draw from the global RNG): the seed is
    one draw ``randint(2^62)`` from ``generator`` (the global RNG when ``None``), so the same
    generator seed gives the same weights in any process. Only the CPU generator is forked and
    reseeded (``torch.manual_seed`` would also reseed every CUDA device); build on CPU.
    """
    seed = int(torch.randint(2**62, (1,), generator=generator))
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(seed)
        yield


SPECTRAL_LAYERS: dict[int, type[_SpectralConv]] = {
    1: SpectralConv1d,
    2: SpectralConv2d,
    3: SpectralConv3d,
}


class FNO(nn.Module):
    """Fourier neural operator (Li et al. 2021) on 1D, 2D or 3D fields, optionally tensorised.

    ``history`` frames of ``n_fields`` fields, stacked on the channel axis oldest first, and the
    parameters broadcast over the grid as channels are lifted by a 1x1 convolution to ``width``
    channels, passed through ``n_layers`` Fourier layers ``v <- GELU(K v + W v)`` (``K`` a
    spectral convolution keeping ``modes`` modes per axis, ``W`` a 1x1 convolution; as in the
    paper the last layer has no activation) and projected by two 1x1 convolutions to
    ``n_fields`` channels. With ``factorization`` set, every ``K`` stores its weight as Tucker
    or CP factors (the TFNO of Kossaifi et al. 2023; see ``FactorizedWeight``).

    There is no grid coordinate channel and the spectral weights act on wavenumbers, so with
    ``padding=0`` the operator is equivariant to periodic shifts and the same weights apply on
    any grid whose FFT holds ``modes`` modes (``resolution_invariant``); ``padding`` counts grid
    points, so a padded model sees a different extension at another resolution.

    With ``history=1`` and ``factorization=None`` the weights drawn from ``generator`` and the
    outputs equal those of ``FNO1d``, ``FNO2d`` and ``FNO3d`` with the same arguments.

    Args:
        n_fields: Number of fields C predicted.
        n_params: Number of scalar parameters P (may be 0).
        n_dims: Number of spatial axes, 1, 2 or 3.
        history: Number of input frames h; the input has ``h * C`` channels.
        width: Hidden channel count.
        modes: Retained Fourier modes per axis, at most ``(n + padding) // 2`` on every axis but
            the last and ``(n_last + padding) // 2 + 1`` on the last.
        n_layers: Number of Fourier layers.
        padding: Zeros appended to the end of every axis after the lift and cropped before the
            projection, so that the FFTs do not wrap a non-periodic field around (Li et al. pad
            their non-periodic problems); 0 for periodic fields.
        factorization: ``None`` for dense spectral weights, ``"tucker"`` or ``"cp"`` for
            low-rank ones.
        rank: Fraction of the dense spectral weight's entries kept by the factors (ignored by
            dense weights), ``0 < rank <= 1``.
        generator: CPU generator that every initial weight is drawn from; ``None`` uses the
            global RNG. Build on CPU and move with ``.to(device, dtype)``.
    """

    resolution_invariant = True

    def __init__(
        self,
        n_fields: int,
        n_params: int,
        n_dims: int,
        *,
        history: int = 1,
        width: int = 32,
        modes: int = 16,
        n_layers: int = 4,
        padding: int = 0,
        factorization: str | None = None,
        rank: float = 0.25,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        check_net_args(
            n_dims, n_params, n_fields=n_fields, history=history, width=width, n_layers=n_layers
        )
        _check_at_least(1, modes=modes)
        _check_at_least(0, padding=padding)
        self.n_fields, self.n_params = n_fields, n_params
        self.n_dims, self.history = n_dims, history
        self.width, self.modes, self.n_layers, self.padding = width, modes, n_layers, padding
        g, layer = generator, SPECTRAL_LAYERS[n_dims]
        # The construction order fixes which generator draws go to which weights; keep it.
        self.lift = Pointwise(history * n_fields + n_params, width, g)
        self.spectral = nn.ModuleList(
            layer(width, width, modes, factorization=factorization, rank=rank, generator=g)
            for _ in range(n_layers)
        )
        self.pointwise = nn.ModuleList(Pointwise(width, width, g) for _ in range(n_layers))
        self.project_hidden = Pointwise(width, 2 * width, g)
        self.project_out = Pointwise(2 * width, n_fields, g)

    def forward(self, u: Tensor, p: Tensor) -> Tensor:
        """Predict the normalised increment.

        Args:
            u: Normalised frames ``(batch, history * n_fields, *space)``, ``n_dims`` spatial
                axes, oldest frame first.
            p: Normalised parameters ``(batch, n_params)``.

        Returns:
            Normalised increment ``(batch, n_fields, *space)``.
        """
        check_inputs(u, p, self.history * self.n_fields, self.n_params, self.n_dims)
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


class _FixedDimFNO(FNO):
    """An ``FNO`` of one frame, dense weights and the class's ``n_dims``, built positionally."""

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
        super().__init__(
            n_fields,
            n_params,
            type(self).n_dims,
            width=width,
            modes=modes,
            n_layers=n_layers,
            padding=padding,
            generator=generator,
        )


class FNO1d(_FixedDimFNO):
    """Fourier neural operator (Li et al. 2021) for 1D fields with parameters.

    The parameters are broadcast over x as extra input channels, lifted with a 1x1 convolution to
    ``width`` channels, passed through ``n_layers`` Fourier layers ``v <- GELU(K v + W v)``
    (``K`` a ``SpectralConv1d``, ``W`` a 1x1 convolution; as in the paper the last layer has no
    activation) and projected by two 1x1 convolutions to ``n_fields`` channels. There is no grid
    coordinate channel, so with ``padding=0`` the operator is equivariant to periodic shifts.
    ``FNO(n_fields, n_params, 1, ...)`` is the same network, with multi-frame input and
    factorised weights as options.

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


class FNO2d(_FixedDimFNO):
    """Fourier neural operator (Li et al. 2021) for 2D fields ``(batch, C, n_x, n_y)``.

    The same network as ``FNO1d`` with ``SpectralConv2d`` Fourier layers: parameters broadcast
    over the grid as channels, 1x1 lift, ``n_layers`` layers ``v <- GELU(K v + W v)`` (no
    activation after the last), two 1x1 projections. With ``padding=0`` it is equivariant to
    periodic shifts in x and y. ``FNO(n_fields, n_params, 2, ...)`` is the same network.

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


class FNO3d(_FixedDimFNO):
    """Fourier neural operator (Li et al. 2021) for 3D fields ``(batch, C, n_x, n_y, n_z)``.

    The same network as ``FNO1d`` and ``FNO2d`` with ``SpectralConv3d`` Fourier layers:
    parameters broadcast over the grid as channels, 1x1 lift, ``n_layers`` layers
    ``v <- GELU(K v + W v)`` (no activation after the last), two 1x1 projections. With
    ``padding=0`` it is equivariant to periodic shifts along each axis.
    ``FNO(n_fields, n_params, 3, ...)`` is the same network.

    Args:
        n_fields: Number of state channels C.
        n_params: Number of scalar PDE parameters P (may be 0).
        width: Hidden channel count.
        modes: Retained modes per axis, at most ``(n + padding) // 2`` on x and y and
            ``(n_z + padding) // 2 + 1`` on z; the weights hold ``4 modes^3`` complex matrices
            per layer, so 3D models use fewer modes than 2D ones (or ``FNO`` with
            ``factorization``).
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
