"""A U-Net surrogate in the style of PDEArena for 1D, 2D and 3D fields, conditioned by FiLM.

Gupta & Brandstetter 2022, "Towards Multi-spatiotemporal-scale Generalized PDE Modeling" (TMLR),
found modern U-Nets (pre-activation residual blocks with GroupNorm and GELU, several resolution
levels joined by skip connections, conditioning injected into every block) strong PDE
surrogates. This module builds such a network for any spatial rank through ``nn.ConvNd``, with
the PDE parameters entering each residual block as a feature-wise affine map (FiLM; Perez et al.
2018, "FiLM: Visual Reasoning with a General Conditioning Layer").
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from pdeflow.tasks.surrogates.fno import check_inputs, check_net_args, seeded_init

CONV: dict[int, type[nn.Module]] = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
# Convolution padding_mode -> the F.pad mode that extends a grid the same way.
PAD_MODES = {
    "circular": "circular",
    "zeros": "constant",
    "reflect": "reflect",
    "replicate": "replicate",
}


def _group_norm(channels: int, groups: int) -> nn.GroupNorm:
    # The largest group count <= groups that divides the channels.
    return nn.GroupNorm(math.gcd(groups, channels), channels)


class ResidualBlock(nn.Module):
    """Pre-activation residual block with optional FiLM conditioning.

    ``h = conv_1(GELU(GN(x)))``, ``h = GN(h)``, then with a conditioning vector ``e``
    ``h = h * (1 + gamma(e)) + beta(e)`` (``gamma, beta`` one linear map of ``e``, per channel),
    and ``y = conv_2(GELU(h)) + S x`` with ``S`` a 1x1 convolution when the channel count changes
    and the identity otherwise. The convolutions have kernel 3 and keep the grid size.

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        n_dims: Spatial rank, 1, 2 or 3.
        cond_dim: Size of the conditioning vector; 0 for an unconditioned block.
        norm_groups: Upper bound on the GroupNorm group count (the largest divisor of the
            channel count not above it is used).
        padding_mode: ``padding_mode`` of the convolutions.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        n_dims: int,
        cond_dim: int,
        norm_groups: int,
        padding_mode: str,
    ) -> None:
        super().__init__()
        conv = CONV[n_dims]
        self.norm_in = _group_norm(in_channels, norm_groups)
        self.conv_in = conv(in_channels, out_channels, 3, padding=1, padding_mode=padding_mode)
        self.norm_out = _group_norm(out_channels, norm_groups)
        self.conv_out = conv(out_channels, out_channels, 3, padding=1, padding_mode=padding_mode)
        self.film = nn.Linear(cond_dim, 2 * out_channels) if cond_dim else None
        self.skip = conv(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: Tensor, cond: Tensor | None) -> Tensor:
        """``x`` ``(B, in, *space)``, ``cond`` ``(B, cond_dim)`` or None -> ``(B, out, *space)``."""
        h = self.norm_out(self.conv_in(F.gelu(self.norm_in(x))))
        if self.film is not None:
            film = self.film(cond).view(*cond.shape[:1], -1, *(1,) * (x.ndim - 2))
            scale, shift = film.chunk(2, dim=1)
            h = h * (1 + scale) + shift
        h = self.conv_out(F.gelu(h))
        return h + (x if self.skip is None else self.skip(x))


class UNet(nn.Module):
    """PDEArena-style U-Net (Gupta & Brandstetter 2022) with FiLM parameter conditioning.

    Level ``i`` of ``L = len(channel_mults)`` works at ``width * channel_mults[i]`` channels on
    the grid coarsened ``2^i`` times. A 3-wide convolution lifts the ``history * n_fields`` input
    channels to ``width``; on the way down each level runs ``n_layers`` ``ResidualBlock`` s, keeps
    the result as a skip connection and (except the last) halves the grid with a stride-2
    convolution; one more block runs at the coarsest level; on the way up each level (except the
    last) doubles the grid by nearest-neighbour interpolation and a 3-wide convolution,
    concatenates the skip of that level, and runs ``n_layers`` blocks; GroupNorm, GELU and a 1x1
    convolution give the ``n_fields`` output channels. The parameters ``p`` go through an MLP
    ``e = GELU(A_2 GELU(A_1 p))`` of size ``4 width`` whose output scales and shifts every block
    (FiLM); with ``n_params = 0`` there is no conditioning.

    Every grid size must be at least ``2^(L-1)``. Sizes that are not multiples of it are
    extended at the end of each axis to the next multiple (wrapped around for
    ``padding_mode="circular"``, else as the mode pads) and the output is cropped back, so near
    the end of such an axis a periodic field is not treated as exactly periodic. Kernels count
    grid cells, so the model runs on any grid but the learned map changes with the resolution:
    ``resolution_invariant`` is False.

    Weights are PyTorch's default initialisation drawn inside ``seeded_init(generator)``: the
    same seed gives the same weights in any process, and the global RNG is left as it was.

    Args:
        n_fields: Number of fields C predicted.
        n_params: Number of scalar parameters P (may be 0).
        n_dims: Number of spatial axes, 1, 2 or 3.
        history: Number of input frames h; the input has ``h * C`` channels, oldest frame first.
        width: Channels of the first level.
        n_layers: Residual blocks per level on each of the down and up paths.
        channel_mults: Channel multiplier of each level; its length is the number of levels.
        padding_mode: ``"circular"`` (periodic grids), ``"zeros"``, ``"reflect"`` or
            ``"replicate"``: how the convolutions (and the extension to a multiple of
            ``2^(L-1)``) see beyond the grid.
        norm_groups: Upper bound on the GroupNorm group count.
        generator: CPU generator the initialisation seed is drawn from; ``None`` uses the global
            RNG.
    """

    resolution_invariant = False

    def __init__(
        self,
        n_fields: int,
        n_params: int,
        n_dims: int,
        *,
        history: int = 1,
        width: int = 32,
        n_layers: int = 2,
        channel_mults: Sequence[int] = (1, 2, 2),
        padding_mode: str = "circular",
        norm_groups: int = 8,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        channel_mults = tuple(int(m) for m in channel_mults)
        check_net_args(
            n_dims,
            n_params,
            n_fields=n_fields,
            history=history,
            width=width,
            n_layers=n_layers,
            norm_groups=norm_groups,
        )
        if not channel_mults or min(channel_mults) < 1:
            raise ValueError(f"channel_mults must be positive ints, got {channel_mults}")
        if padding_mode not in PAD_MODES:
            raise ValueError(
                f"padding_mode must be one of {sorted(PAD_MODES)}, got {padding_mode!r}"
            )
        self.n_fields, self.n_params = n_fields, n_params
        self.n_dims, self.history = n_dims, history
        self.width, self.n_layers, self.channel_mults = width, n_layers, channel_mults
        self.padding_mode = padding_mode
        with seeded_init(generator):
            self._build(norm_groups)

    def _build(self, norm_groups: int) -> None:
        conv, n_dims, mode = CONV[self.n_dims], self.n_dims, self.padding_mode
        channels = [self.width * m for m in self.channel_mults]
        cond = 4 * self.width if self.n_params else 0
        self.embed = (
            nn.Sequential(
                nn.Linear(self.n_params, cond), nn.GELU(), nn.Linear(cond, cond), nn.GELU()
            )
            if cond
            else None
        )
        self.lift = conv(self.history * self.n_fields, self.width, 3, padding=1, padding_mode=mode)

        def blocks(c_in: int, c_out: int, n: int) -> nn.ModuleList:
            return nn.ModuleList(
                ResidualBlock(c_in if i == 0 else c_out, c_out, n_dims, cond, norm_groups, mode)
                for i in range(n)
            )

        self.down = nn.ModuleList(
            blocks(c_prev, c, self.n_layers)
            for c_prev, c in zip([self.width, *channels[:-1]], channels, strict=True)
        )
        self.downsample = nn.ModuleList(
            conv(c, c, 3, stride=2, padding=1, padding_mode=mode) for c in channels[:-1]
        )
        self.middle = ResidualBlock(*channels[-1:] * 2, n_dims, cond, norm_groups, mode)
        self.upsample = nn.ModuleList(
            conv(c, c, 3, padding=1, padding_mode=mode) for c in channels[1:]
        )
        self.up = nn.ModuleList(
            blocks(c_below + c, c, self.n_layers)
            for c_below, c in zip([*channels[1:], channels[-1]], channels, strict=True)
        )
        self.norm_out = _group_norm(channels[0], norm_groups)
        self.project = conv(channels[0], self.n_fields, 1)

    def forward(self, u: Tensor, p: Tensor) -> Tensor:
        """Predict the normalised increment.

        Args:
            u: Normalised frames ``(batch, history * n_fields, *space)``, oldest frame first.
            p: Normalised parameters ``(batch, n_params)``.

        Returns:
            Normalised increment ``(batch, n_fields, *space)``.
        """
        check_inputs(u, p, self.history * self.n_fields, self.n_params, self.n_dims)
        space = u.shape[2:]
        factor = 2 ** (len(self.channel_mults) - 1)
        if min(space) < factor:
            raise ValueError(
                f"a U-Net of {len(self.channel_mults)} levels halves the grid "
                f"{len(self.channel_mults) - 1} times and needs every size >= {factor}; got a "
                f"grid {tuple(space)}"
            )
        extra = [-n % factor for n in space]
        if any(extra):
            pads = [side for e in reversed(extra) for side in (0, e)]
            u = F.pad(u, pads, mode=PAD_MODES[self.padding_mode])
        cond = self.embed(p) if self.embed is not None else None
        h, skips = self.lift(u), []
        for level, down in enumerate(self.down):
            for block in down:
                h = block(h, cond)
            skips.append(h)
            if level < len(self.downsample):
                h = self.downsample[level](h)
        h = self.middle(h, cond)
        for level in reversed(range(len(self.up))):
            if level < len(self.upsample):
                h = self.upsample[level](F.interpolate(h, scale_factor=2.0, mode="nearest"))
            h = torch.cat([h, skips[level]], dim=1)
            for block in self.up[level]:
                h = block(h, cond)
        out = self.project(F.gelu(self.norm_out(h)))
        return out[(..., *(slice(0, n) for n in space))]
