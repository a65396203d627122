"""Low-rank (Tucker or CP) spectral weights of the tensorised FNO (Kossaifi et al. 2023,
"Multi-Grid Tensorized Fourier Neural Operator for High-Resolution PDEs").

A spectral layer's complex weight ``(in, out, *modes)`` is held as factors whose parameter count
is a chosen fraction (``rank``) of the dense tensor's; the dense weight is rebuilt for each
forward pass, so the saving is in parameters and optimiser state (what limits 3D FNOs), not in
activation memory. Written here: no maintained PyTorch library offers it without a heavy
dependency (tensorly), and the rebuild is two einsums.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn


class FactorizedWeight(nn.Module):
    """A complex tensor of shape ``shape`` stored as low-rank factors (a TFNO spectral weight).

    Kossaifi et al. 2023, "Multi-Grid Tensorized Fourier Neural Operator for High-Resolution
    PDEs" (TMLR), factorise the ``(in, out, *modes)`` weight of every Fourier layer:

    - ``"tucker"``: ``W = G x_0 U_0 x_1 U_1 ... x_{d-1} U_{d-1}``, a complex core ``G`` of shape
      ``(r_0, ..., r_{d-1})`` and one complex factor ``U_j`` ``(n_j, r_j)`` per axis, with
      ``r_j = round(s n_j)`` for the largest common fraction ``s`` that keeps
      ``prod(r) + sum(n_j r_j) <= rank * prod(n)``;
    - ``"cp"``: ``W[i_0, .., i_{d-1}] = sum_z prod_j U_j[i_j, z]`` with ``R`` components,
      ``R = max(1, floor(rank * prod(n) / sum(n)))``, so ``R sum(n) <= rank * prod(n)``.

    ``rank`` is thus the fraction of the dense weight's entries that the factors may hold. The
    factors are drawn so that every entry of ``W`` has complex standard deviation ``std``, like
    the dense initialisation: Tucker factors ``N(0, 1 / r_j)`` and core ``N(0, std^2)``; CP
    factors ``N(0, (std^2 / R)^(1/d))``. ``forward`` rebuilds the dense complex weight, so the
    memory at run time is that of the dense layer and the saving is in parameters (and optimiser
    state). Stored as ``(real, imag)`` pairs like the dense weight.

    Args:
        shape: Dense weight shape ``(in_channels, out_channels, *mode_shape)``.
        factorization: ``"tucker"`` or ``"cp"``.
        rank: Fraction of ``prod(shape)`` for the factor entries, ``0 < rank <= 1``.
        std: Complex standard deviation of the rebuilt weight's entries at initialisation.
        generator: CPU generator for the factors; ``None`` uses the global RNG.
    """

    def __init__(
        self,
        shape: tuple[int, ...],
        factorization: str,
        rank: float,
        std: float,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if not 0 < rank <= 1:
            raise ValueError(f"rank must be a fraction in (0, 1], got {rank}")
        self.shape, self.factorization = tuple(shape), factorization
        if factorization == "tucker":
            ranks = tucker_ranks(self.shape, rank)
            self.core = nn.Parameter(_complex_normal(ranks, std, generator))
            scales = [1 / math.sqrt(r) for r in ranks]
        elif factorization == "cp":
            ranks = (cp_rank(self.shape, rank),) * len(self.shape)
            scales = [(std**2 / ranks[0]) ** (1 / (2 * len(self.shape)))] * len(self.shape)
        else:
            raise ValueError(f"factorization must be None, 'tucker' or 'cp', got {factorization!r}")
        self.ranks = ranks
        self.factors = nn.ParameterList(
            _complex_normal((n, r), scale, generator)
            for n, r, scale in zip(self.shape, ranks, scales, strict=True)
        )

    def forward(self) -> Tensor:
        """The dense complex weight of shape ``shape``."""
        factors = [torch.view_as_complex(f) for f in self.factors]
        if self.factorization == "tucker":
            w = torch.view_as_complex(self.core)
            # Each mode product contracts the leading rank axis and appends the full axis, so
            # after d of them the axes are back in order and no intermediate exceeds W.
            for u in factors:
                w = torch.tensordot(w, u, dims=([0], [1]))
            return w
        # CP through a Khatri-Rao product of all factors but the first: (prod n_1.., R).
        khatri_rao = factors[-1]
        for u in reversed(factors[1:-1]):
            khatri_rao = (u[:, None, :] * khatri_rao[None, :, :]).flatten(0, 1)
        return (factors[0] @ khatri_rao.T).view(self.shape)

    def extra_repr(self) -> str:
        return f"{self.factorization}, shape={self.shape}, ranks={self.ranks}"


def _complex_normal(shape: Sequence[int], std: float, generator: torch.Generator | None) -> Tensor:
    """``(*shape, 2)`` real-imaginary pairs of a complex normal with standard deviation ``std``."""
    return torch.randn(*shape, 2, generator=generator) * (std / math.sqrt(2))


def tucker_ranks(shape: Sequence[int], rank: float) -> tuple[int, ...]:
    """Tucker ranks ``round(s n_j)`` (at least 1) for the largest ``s`` that fits ``rank``.

    The count ``prod(r) + sum(n_j r_j)`` of complex entries grows with ``s``, so bisection finds
    the largest ``s`` in ``[0, 1]`` with count ``<= rank * prod(shape)``; ranks of 1 everywhere
    when even those exceed it.
    """
    target = rank * math.prod(shape)

    def ranks_at(s: float) -> tuple[int, ...]:
        return tuple(max(1, round(s * n)) for n in shape)

    def count(ranks: tuple[int, ...]) -> int:
        return math.prod(ranks) + sum(n * r for n, r in zip(shape, ranks, strict=True))

    low, high = 0.0, 1.0
    for _ in range(40):
        mid = (low + high) / 2
        low, high = (mid, high) if count(ranks_at(mid)) <= target else (low, mid)
    return ranks_at(low)


def cp_rank(shape: Sequence[int], rank: float) -> int:
    """CP components ``max(1, floor(rank * prod(shape) / sum(shape)))``."""
    return max(1, math.floor(rank * math.prod(shape) / sum(shape)))
