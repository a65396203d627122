"""A Galerkin-type linear attention operator (Cao 2021) on 1D, 2D and 3D grids.

Cao 2021, "Choose a Transformer: Fourier or Galerkin" (NeurIPS 2021), drops the softmax of
attention and layer-normalises keys and values instead; ``Q (K^T V) / n`` is then a Petrov-Galerkin
projection whose cost is linear in the number of grid points ``n``, and ``(K^T V) / n`` is the
quadrature of an integral over the domain, which is what lets the same weights act on any grid.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from pdeflow.tasks.surrogates.fno import check_inputs, check_net_args, seeded_init


def coordinate_features(
    space: Sequence[int],
    n_fourier: int,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """Positional features of the points of a uniform grid on the unit cube ``[0, 1)^d``.

    Point ``(i_1, .., i_d)`` sits at ``x_j = i_j / n_j``. With ``n_fourier = 0`` the features are
    the coordinates ``x_j`` themselves; otherwise ``sin(2 pi k x_j)`` and ``cos(2 pi k x_j)`` for
    ``k = 1 .. n_fourier``, which are periodic and smooth, so that sums over the grid of
    functions of them are spectrally accurate quadratures on a periodic domain. Computed in
    float64 and cast: a point shared by two grids gets bitwise the same features.

    Args:
        space: Grid points per axis ``(n_1, .., n_d)``.
        n_fourier: Number of Fourier frequencies per axis; 0 for raw coordinates.
        dtype: Output dtype.
        device: Output device.

    Returns:
        ``(prod(space), n_features)`` with points in row-major (C) order and
        ``n_features = d`` for ``n_fourier = 0``, else ``2 d n_fourier``.
    """
    axes = [torch.arange(n, dtype=torch.float64) / n for n in space]
    x = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, len(space))
    if n_fourier:
        k = torch.arange(1, n_fourier + 1, dtype=torch.float64)
        phase = (2 * math.pi * x[:, :, None] * k).flatten(1)
        x = torch.cat([torch.sin(phase), torch.cos(phase)], dim=1)
    return x.to(dtype=dtype, device=device)


def n_coordinate_features(n_dims: int, n_fourier: int) -> int:
    """Width of ``coordinate_features`` on an ``n_dims`` grid."""
    return n_dims * (2 * n_fourier if n_fourier else 1)


class GalerkinAttention(nn.Module):
    """Softmax-free multi-head attention ``z = Q (LN(K)^T LN(V)) / n`` (Cao 2021).

    For tokens ``v`` ``(B, n, width)``, ``Q, K, V`` are linear maps of ``v`` split into
    ``n_heads`` heads of ``d = width / n_heads`` channels; per head the keys and values are
    layer-normalised over their ``d`` channels and ``z_h = Q_h (K_h^T V_h) / n`` (a ``d x d``
    matrix per head, so the cost is ``O(n d^2)``); the heads are concatenated and mixed by a last
    linear map. ``(K^T V) / n`` is the grid average of ``k(x) v(x)^T``: the quadrature of an
    integral over the domain.

    Args:
        width: Token channels, a multiple of ``n_heads``.
        n_heads: Number of heads.
    """

    def __init__(self, width: int, n_heads: int) -> None:
        super().__init__()
        if width % n_heads:
            raise ValueError(f"width={width} must be a multiple of n_heads={n_heads}")
        self.n_heads, self.head_dim = n_heads, width // n_heads
        self.qkv = nn.Linear(width, 3 * width)
        self.norm_k = nn.LayerNorm(self.head_dim)
        self.norm_v = nn.LayerNorm(self.head_dim)
        self.out = nn.Linear(width, width)

    def forward(self, v: Tensor) -> Tensor:
        """Attend: ``(B, n, width) -> (B, n, width)``."""
        b, n, width = v.shape
        q, k, val = self.qkv(v).view(b, n, 3, self.n_heads, self.head_dim).unbind(dim=2)
        k, val = self.norm_k(k), self.norm_v(val)
        kv = torch.einsum("bnhd,bnhe->bhde", k, val) / n
        z = torch.einsum("bnhd,bhde->bnhe", q, kv)
        return self.out(z.reshape(b, n, width))


class GalerkinLayer(nn.Module):
    """Encoder layer ``v <- v + Attn(v)``, ``v <- v + W_2 GELU(W_1 v)`` (hidden ``2 width``)."""

    def __init__(self, width: int, n_heads: int) -> None:
        super().__init__()
        self.attention = GalerkinAttention(width, n_heads)
        self.feed_forward = nn.Sequential(
            nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width)
        )

    def forward(self, v: Tensor) -> Tensor:
        """``(B, n, width) -> (B, n, width)``."""
        v = v + self.attention(v)
        return v + self.feed_forward(v)


class GalerkinTransformer(nn.Module):
    """Galerkin transformer operator (Cao 2021): grid points as tokens, linear attention.

    Every grid point is a token holding its ``history * n_fields`` input values, the ``n_params``
    parameters (broadcast to every point) and its ``coordinate_features``; a linear map lifts the
    tokens to ``width`` channels, ``n_layers`` ``GalerkinLayer`` s transform them, and a two-layer
    MLP (hidden ``2 width``, GELU) maps each token to the ``n_fields`` outputs at its point.

    Cost and memory are ``O(n)`` in the number of points ``n``. Nothing depends on the grid size
    but the quadrature ``(K^T V) / n``: the same weights are a discretisation of one operator on
    the unit cube, so a model trained on one uniform grid applies on another
    (``resolution_invariant``), up to the quadrature error of the grid average (spectrally small
    for smooth periodic fields with Fourier features; first order in ``1 / n`` with raw
    coordinates, ``n_fourier=0``, whose features are not periodic).

    Weights are PyTorch's default initialisation drawn inside ``seeded_init(generator)``.

    Args:
        n_fields: Number of fields C predicted.
        n_params: Number of scalar parameters P (may be 0).
        n_dims: Number of spatial axes, 1, 2 or 3.
        history: Number of input frames h; the input has ``h * C`` channels, oldest frame first.
        width: Token channels, a multiple of ``n_heads``.
        n_layers: Number of attention layers.
        n_heads: Attention heads per layer.
        n_fourier: Fourier frequencies of the positional features per axis; 0 for the raw
            coordinates.
        generator: CPU generator the initialisation seed is drawn from; ``None`` uses the global
            RNG.
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
        n_layers: int = 4,
        n_heads: int = 4,
        n_fourier: int = 4,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        check_net_args(
            n_dims,
            n_params,
            n_fields=n_fields,
            history=history,
            width=width,
            n_layers=n_layers,
            n_heads=n_heads,
        )
        if n_fourier < 0:
            raise ValueError(f"n_fourier must be >= 0, got {n_fourier}")
        self.n_fields, self.n_params = n_fields, n_params
        self.n_dims, self.history = n_dims, history
        self.width, self.n_layers, self.n_fourier = width, n_layers, n_fourier
        n_in = history * n_fields + n_params + n_coordinate_features(n_dims, n_fourier)
        with seeded_init(generator):
            self.lift = nn.Linear(n_in, width)
            self.layers = nn.ModuleList(GalerkinLayer(width, n_heads) for _ in range(n_layers))
            self.project = nn.Sequential(
                nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, n_fields)
            )

    def forward(self, u: Tensor, p: Tensor) -> Tensor:
        """Predict the normalised increment.

        Args:
            u: Normalised frames ``(batch, history * n_fields, *space)``, oldest frame first.
            p: Normalised parameters ``(batch, n_params)``.

        Returns:
            Normalised increment ``(batch, n_fields, *space)``.
        """
        check_inputs(u, p, self.history * self.n_fields, self.n_params, self.n_dims)
        b, space = u.shape[0], u.shape[2:]
        tokens = u.flatten(2).transpose(1, 2)  # (B, n, h C)
        n = tokens.shape[1]
        position = coordinate_features(space, self.n_fourier, dtype=u.dtype, device=u.device)
        features = [tokens, p[:, None, :].expand(-1, n, -1), position.expand(b, -1, -1)]
        v = self.lift(torch.cat(features, dim=-1))
        for layer in self.layers:
            v = layer(v)
        return self.project(v).transpose(1, 2).reshape(b, self.n_fields, *space)
