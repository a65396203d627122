"""DeepONet (Lu et al. 2021): a branch net of the sampled input times a trunk net of the point.

Lu, Jin, Pang, Zhang & Karniadakis 2021, "Learning nonlinear operators via DeepONet based on the
universal approximation theorem of operators" (Nature Machine Intelligence 3, 218-229). The branch
net sees the input function through its values at fixed sensor points (here: every point of the
training grid), so a DeepONet is tied to that grid; it serves steady problems and as a baseline.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from pdeflow.tasks.surrogates.fno import check_inputs, check_net_args, seeded_init
from pdeflow.tasks.surrogates.transformer import coordinate_features, n_coordinate_features


def mlp(n_in: int, width: int, n_layers: int, n_out: int) -> list[nn.Module]:
    """Layers of ``n_in -> width (x n_layers, GELU after each) -> n_out`` (no last activation)."""
    sizes = [n_in] + [width] * n_layers
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [nn.Linear(a, b), nn.GELU()]
    return [*layers, nn.Linear(sizes[-1], n_out)]


class DeepONet(nn.Module):
    """Unstacked DeepONet (Lu et al. 2021) with one set of basis functions per field.

    ``G(u, p)(x)_c = sum_{k < n_basis} b_{c,k}(u, p) t_{c,k}(x) + beta_c``, where the branch
    ``b = B([vec(u), p])`` is an MLP of the ``history * n_fields * prod(grid_shape)`` input values
    and the parameters, the trunk ``t = GELU(T(phi(x)))`` an MLP of the ``coordinate_features``
    ``phi(x)`` of the point (activated at its output as in Lu et al.), and ``beta`` a learned bias
    per field. Both MLPs have ``n_layers`` hidden layers of ``width`` with GELU.

    The branch net takes the input on ``grid_shape`` only: ``resolution_invariant`` is False and
    another grid raises a ``ValueError`` that names the expected size.

    Weights are PyTorch's default initialisation drawn inside ``seeded_init(generator)``; the
    bias ``beta`` starts at 0.

    Args:
        n_fields: Number of fields C predicted.
        n_params: Number of scalar parameters P (may be 0).
        n_dims: Number of spatial axes, 1, 2 or 3.
        grid_shape: The grid ``(n_1, .., n_{n_dims})`` the branch net samples the input on.
        history: Number of input frames h; the input has ``h * C`` channels, oldest frame first.
        width: Hidden width of the branch and trunk MLPs.
        n_layers: Hidden layers of each MLP.
        n_basis: Basis functions per field.
        n_fourier: Fourier frequencies of the trunk's coordinate features per axis (periodic
            basis functions); 0 for the raw coordinates.
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
        grid_shape: Sequence[int],
        history: int = 1,
        width: int = 64,
        n_layers: int = 3,
        n_basis: int = 32,
        n_fourier: int = 8,
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
            n_basis=n_basis,
        )
        grid_shape = tuple(int(n) for n in grid_shape)
        if len(grid_shape) != n_dims or min(grid_shape) < 1:
            raise ValueError(f"grid_shape must hold {n_dims} positive sizes, got {grid_shape}")
        if n_fourier < 0:
            raise ValueError(f"n_fourier must be >= 0, got {n_fourier}")
        self.n_fields, self.n_params = n_fields, n_params
        self.n_dims, self.history = n_dims, history
        self.grid_shape, self.n_basis, self.n_fourier = grid_shape, n_basis, n_fourier
        n_branch = history * n_fields * math.prod(grid_shape) + n_params
        n_out = n_fields * n_basis
        with seeded_init(generator):
            self.branch = nn.Sequential(*mlp(n_branch, width, n_layers, n_out))
            n_trunk = n_coordinate_features(n_dims, n_fourier)
            self.trunk = nn.Sequential(*mlp(n_trunk, width, n_layers, n_out), nn.GELU())
        self.bias = nn.Parameter(torch.zeros(n_fields))

    def forward(self, u: Tensor, p: Tensor) -> Tensor:
        """Predict the output field.

        Args:
            u: Normalised frames ``(batch, history * n_fields, *grid_shape)``, oldest first.
            p: Normalised parameters ``(batch, n_params)``.

        Returns:
            ``(batch, n_fields, *grid_shape)``.

        Raises:
            ValueError: If the grid of ``u`` is not ``grid_shape``.
        """
        check_inputs(u, p, self.history * self.n_fields, self.n_params, self.n_dims)
        space = tuple(u.shape[2:])
        if space != self.grid_shape:
            raise ValueError(
                f"DeepONet was built for the grid {self.grid_shape} (its branch net reads the "
                f"input there) and is not resolution invariant; got a grid {space}: resample "
                f"the input to {self.grid_shape} or build a model for this grid"
            )
        b = u.shape[0]
        branch = self.branch(torch.cat([u.reshape(b, -1), p], dim=1))
        x = coordinate_features(space, self.n_fourier, dtype=u.dtype, device=u.device)
        trunk = self.trunk(x)  # (n_points, C * n_basis)
        out = torch.einsum(
            "bck,nck->bcn",
            branch.view(b, self.n_fields, self.n_basis),
            trunk.view(-1, self.n_fields, self.n_basis),
        )
        return (out + self.bias[:, None]).view(b, self.n_fields, *space)
