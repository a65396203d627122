"""The thermal block: Darcy flow whose permeability is one constant per block, affine in them.

Two registered members, ``thermal_block_2x2`` and ``thermal_block_3x2``; ``affine_operator``
gives the operator terms ``A_q`` and the load ``f`` that both the solver and the certified
reduced basis (``pdeflow.tasks.rom.rb``) use, so the reduced basis reduces exactly this truth.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import scipy.sparse
import scipy.sparse.linalg
import torch

from pdeflow.tasks.pdes.base import PDE, Coefficient, Defaults, Grid, PDEInfo, as_grid

__all__ = [
    "AffineOperator",
    "ThermalBlock",
    "ThermalBlock2x2",
    "ThermalBlock3x2",
    "affine_operator",
    "solve_truth",
]

# Valid and default range of every block's permeability.
MU_RANGE = (0.1, 1.0)


@dataclass(frozen=True, eq=False)
class AffineOperator:
    """An affinely parametrised linear problem ``A(mu) u = f``, ``A(mu) = sum_q mu_q A_q``.

    Attributes:
        matrices: The ``Q`` terms ``A_q``, scipy CSC matrices (n_dofs, n_dofs), each symmetric
            positive semi-definite, their sum at ``mu_ref`` positive definite.
        rhs: The load ``f``, float64 (n_dofs,).
        mu_ref: Reference parameter (Q,), > 0; ``A(mu_ref)`` defines the energy norm.
        mu_range: (low, high) of every parameter, low > 0 (where training sets are drawn).
        n_outputs: The first ``n_outputs`` unknowns are the stored field (the cells); the
            rest are auxiliary (the interface faces' values), eliminated by ``lift``.
    """

    matrices: tuple[scipy.sparse.csc_matrix, ...]
    rhs: np.ndarray
    mu_ref: np.ndarray
    mu_range: tuple[float, float] = MU_RANGE
    n_outputs: int | None = None

    @property
    def n_terms(self) -> int:
        """Number of affine terms ``Q``."""
        return len(self.matrices)

    @property
    def n_dofs(self) -> int:
        """Number of unknowns."""
        return int(self.rhs.shape[0])

    def assemble(self, mu: Sequence[float] | np.ndarray) -> scipy.sparse.csc_matrix:
        """``A(mu) = sum_q mu_q A_q`` for one parameter ``mu`` (Q,), as a CSC matrix."""
        mu = np.asarray(mu, dtype=np.float64).reshape(-1)
        if mu.shape != (self.n_terms,) or not np.all(np.isfinite(mu) & (mu > 0)):
            raise ValueError(f"mu must be {self.n_terms} finite values > 0, got {mu.tolist()}")
        total = self.matrices[0] * mu[0]
        for m, a in zip(mu[1:], self.matrices[1:], strict=True):
            total = total + a * m
        return total.tocsc()

    def solve(self, mu: Sequence[float] | np.ndarray) -> np.ndarray:
        """The truth ``A(mu)^{-1} f`` (n_dofs,) for one ``mu`` (Q,), by sparse LU.

        SuperLU (``scipy.sparse.linalg.splu``) with the minimum-degree ordering of
        ``A + A^T``, the one for symmetric matrices (measured 0.10 s against 0.15 s with the
        default COLAMD for the 16,640 unknowns of the 2 x 2 block at n = 128).
        """
        lu = scipy.sparse.linalg.splu(self.assemble(mu), permc_spec="MMD_AT_PLUS_A")
        return lu.solve(self.rhs)

    def lift(self, mu: np.ndarray, outputs: np.ndarray) -> np.ndarray:
        """Full solution vectors (n, n_dofs) from their outputs (n, n_outputs): the auxiliary
        unknowns solved from their own rows of ``A(mu) u = f`` (exact for a truth solution).
        """
        mu, outputs = np.atleast_2d(mu), np.atleast_2d(np.asarray(outputs, dtype=np.float64))
        k = self.n_dofs if self.n_outputs is None else self.n_outputs
        if outputs.shape != (len(mu), k):
            raise ValueError(f"outputs must have shape ({len(mu)}, {k}), got {outputs.shape}")
        out = np.zeros((len(mu), self.n_dofs))
        out[:, :k] = outputs
        for i, m in enumerate(mu if k < self.n_dofs else ()):
            a = self.assemble(m)
            rhs = self.rhs[k:] - a[k:, :k] @ outputs[i]
            out[i, k:] = scipy.sparse.linalg.spsolve(a[k:, k:].tocsc(), rhs)
        return out


def block_index(blocks: tuple[int, int], n: int) -> np.ndarray:
    """Block of each cell, int (n, n): ``q = (i // (n / B1)) * B2 + j // (n / B2)``.

    Axis 0 (index ``i``) is ``x`` and is cut into ``B1`` blocks; axis 1 (``j``) is ``y``, cut
    into ``B2``; blocks are numbered row-major, ``x``-block first.
    """
    b1, b2 = blocks
    if n % b1 or n % b2:
        raise ValueError(f"grid: n must be divisible by the block counts {b1} and {b2}, got {n}")
    i = np.arange(n) // (n // b1)
    j = np.arange(n) // (n // b2)
    return i[:, None] * b2 + j[None, :]


def _terms(n_dofs: int, n_terms: int, links: np.ndarray, diagonal: np.ndarray, scale: float):
    """One CSC matrix per block from weighted links ``(i, j, weight, block)`` (rows of
    ``links``, each adding ``weight (e_i - e_j)(e_i - e_j)^T``) and diagonal entries
    ``(i, weight, block)``, all times ``scale``."""
    i, j, w, q = links[:, 0].astype(int), links[:, 1].astype(int), links[:, 2], links[:, 3]
    di, dw, dq = diagonal[:, 0].astype(int), diagonal[:, 1], diagonal[:, 2]
    out = []
    for block in range(n_terms):
        m, d = q == block, dq == block
        rows = np.concatenate([i[m], j[m], i[m], j[m], di[d]])
        cols = np.concatenate([i[m], j[m], j[m], i[m], di[d]])
        vals = np.concatenate([w[m], w[m], -w[m], -w[m], dw[d]]) * scale
        out.append(scipy.sparse.coo_matrix((vals, (rows, cols)), shape=(n_dofs, n_dofs)).tocsc())
    return tuple(out)


def affine_operator(
    blocks: tuple[int, int],
    n: int,
    length: float = 1.0,
    interface: Literal["hybrid", "arithmetic"] = "hybrid",
) -> AffineOperator:
    """The thermal block's terms ``A_q`` (one per block) and load ``f = 1`` on n x n cells.

    Every face adds its transmissibility over ``h^2`` times ``(e_a - e_b)(e_a - e_b)^T``
    between the unknowns on its two sides: ``mu_q`` for a face inside block ``q``, ``2 mu_q``
    from a boundary cell of block ``q`` to the boundary value 0. On a face between blocks
    ``p`` and ``q`` (``interface``):

    - ``"hybrid"`` (the solver's, default): an extra unknown, the face value ``u_f``, linked
      to each side's cell by its half-cell transmissibility ``2 mu``. Eliminating ``u_f``
      gives Darcy2D's harmonic mean ``2 mu_p mu_q / (mu_p + mu_q)``, so the cell values are
      Darcy2D's solution, while ``A(mu)`` is affine. Unknowns: the cells row-major
      (``k = i * n + j``, ``x`` index first, as the stored field), then the interface faces.
    - ``"arithmetic"``: the two cells linked by ``(mu_p + mu_q) / 2``, affine with no extra
      unknowns but first order in ``h`` and with a slowly decaying Kolmogorov width (see
      ``ThermalBlock``); kept to measure that.

    Args:
        blocks: ``(B1, B2)`` blocks along ``x`` and ``y``, each >= 1.
        n: Cells per side, divisible by ``B1`` and ``B2``.
        length: Side of the square. Defaults to 1.0.
        interface: ``"hybrid"`` (default) or ``"arithmetic"``.

    Returns:
        The operator with ``mu_ref`` = ones (Q,), Q = B1 * B2, ``f`` = 1 on the cells and 0
        on the faces, ``n_outputs`` = n * n.

    Raises:
        ValueError: If ``n`` is not divisible by the block counts (naming ``grid``), or
            ``blocks`` or ``interface`` is invalid.
    """
    b1, b2 = (int(b) for b in blocks)
    if b1 < 1 or b2 < 1:
        raise ValueError(f"blocks must be two integers >= 1, got {blocks!r}")
    if interface not in ("hybrid", "arithmetic"):
        raise ValueError(f"interface must be 'hybrid' or 'arithmetic', got {interface!r}")
    block = block_index((b1, b2), n).ravel()
    index = np.arange(n * n).reshape(n, n)
    # Interior faces: cells (a, b) along x, then along y.
    a = np.concatenate([index[:-1, :].ravel(), index[:, :-1].ravel()])
    b = np.concatenate([index[1:, :].ravel(), index[:, 1:].ravel()])
    edge = np.concatenate([index[0], index[-1], index[:, 0], index[:, -1]])
    diagonal = np.stack([edge, np.full(edge.size, 2.0), block[edge]], axis=1)
    if interface == "arithmetic":
        links = np.concatenate(
            [np.stack([a, b, np.full(a.size, 0.5), block[c]], axis=1) for c in (a, b)]
        )
        n_dofs = n * n
    else:
        same = block[a] == block[b]
        face = n * n + np.arange(np.count_nonzero(~same))
        inner = np.stack([a[same], b[same], np.ones(same.sum()), block[a[same]]], axis=1)
        halves = [
            np.stack([c[~same], face, np.full(face.size, 2.0), block[c[~same]]], axis=1)
            for c in (a, b)
        ]
        links = np.concatenate([inner, *halves])
        n_dofs = n * n + face.size
    rhs = np.zeros(n_dofs)
    rhs[: n * n] = 1.0
    return AffineOperator(
        matrices=_terms(n_dofs, b1 * b2, links, diagonal, (n / length) ** 2),
        rhs=rhs,
        mu_ref=np.ones(b1 * b2),
        mu_range=MU_RANGE,
        n_outputs=n * n,
    )


def solve_truth(operator: AffineOperator, mu: np.ndarray) -> np.ndarray:
    """The truth solutions ``A(mu_i)^{-1} f`` (``AffineOperator.solve``), one per row of ``mu``.

    Args:
        operator: The affine operator.
        mu: Parameters, shape (n, Q), finite and > 0.

    Returns:
        float64 (n, n_dofs), every unknown (cells, then interface faces).
    """
    mu = np.atleast_2d(np.asarray(mu, dtype=np.float64))
    return np.stack([operator.solve(m) for m in mu])


class ThermalBlock(PDE):
    r"""Steady diffusion with a blockwise constant conductivity: the thermal block.

    .. math::

        -\nabla \cdot \left(a(x, y) \nabla u\right) = 1 \quad \text{in } (0, \ell)^2, \qquad
        u = 0 \text{ on the boundary}, \qquad a = \mu_q \text{ on block } q,

    the square cut into ``B1`` blocks along ``x`` (axis -2) and ``B2`` along ``y`` (axis -1),
    numbered row-major (block ``q = b_x B2 + b_y``), each :math:`\mu_q \in [0.1, 1]`
    (coefficients ``mu_1 .. mu_Q``; ``mu_{q+1}`` is block ``q``). The model problem of certified
    reduced bases (Maday, Patera & Turinici 2002; Rozza, Huynh & Patera 2008, Arch. Comput.
    Methods Eng. 15). The one field is ``u`` (non-dimensional, scaling as
    :math:`\ell^2 / \mu`); the conductivity is set by the coefficients, not stored.

    Discretisation: exactly Darcy2D's cell-centred 5-point finite volumes on ``n x n`` cells
    (harmonic-mean transmissibility :math:`2\mu_p\mu_q/(\mu_p+\mu_q)` on the faces between
    blocks, second order), written with one extra unknown on each such face, its value
    :math:`u_f`, linked to the cell on either side by the half-cell transmissibility
    :math:`2\mu`. Eliminating :math:`u_f` gives back the harmonic mean, so the cell values are
    Darcy2D's solution for the blockwise permeability (to solver round-off), while the matrix
    is exactly affine, :math:`A(\mu) = \sum_q \mu_q A_q` (``affine_operator``), which the
    certified reduced basis needs. The harmonic mean itself is not linear in :math:`\mu`; the
    arithmetic mean :math:`(\mu_p+\mu_q)/2` is, but it is first order in ``h`` (the
    harmonic mean is exact for a jump on a face; measured for :math:`\mu = (0.1, 1, 1, 0.1)`
    against a 1024^2 reference: max error 1.5e-2 of max ``u`` at n = 128, halving with
    ``h``, against 3.1e-4) and its solution set has a far larger Kolmogorov width: the
    singular values of 300 normalised snapshots at n = 64 fall to 8.6e-6 at the 25th, against
    1.4e-11 with the harmonic mean (8.5e-13 for P1 finite elements), and a reduced basis of 16
    vectors stays at 9.7e-3 relative error against 2.0e-4 (``benchmarks/rom_rb.py``). The
    system is symmetric positive definite; each sample is solved by sparse LU
    (``AffineOperator.solve``). Unknowns: 16,640 for 2 x 2 blocks at n = 128.

    Stability limit: none; the problem is stationary (``max_stable_dt`` is ``math.inf``).
    ``rollout`` returns one frame; the given state is ignored (the problem has no initial
    state, see ``initial_condition``) except that it must be finite.

    Args:
        grid: A ``Grid`` (square) or the cells per side, divisible by ``B1`` and ``B2``.
        **kwargs: ``length`` (default 1.0), ``device``, ``dtype`` (of the results),
            ``mu_1 .. mu_Q`` (each in [0.1, 1], one value or one per sample) and ``dt``
            (accepted for the common signature and unused); see ``pdeflow.tasks.pdes.base.PDE``.

    Attributes:
        operator: The ``AffineOperator`` (``A_q``, ``f = 1``) every solve uses.
        h: Cell size ``length / n``.
        x, y: Cell centres, shape (n,).

    Raises:
        ValueError: If ``n`` is not divisible by ``B1`` and ``B2`` (naming ``grid``), or an
            argument is outside its valid range.
    """

    blocks: ClassVar[tuple[int, int]]
    # Cells per side must be a multiple of this (both block counts divide it).
    grid_multiple: ClassVar[int]
    even_grid = False
    min_points = 4

    @classmethod
    def make_info(cls, b1: int, b2: int) -> PDEInfo:
        """The ``PDEInfo`` of the ``b1 x b2`` member (coefficients ``mu_1 .. mu_Q``)."""
        q = b1 * b2
        coef = Coefficient(MU_RANGE, "1", sample=("uniform", *MU_RANGE))
        # 128 cells per side (16,384 cells) unless a block count of 3 needs a multiple of 6.
        n = 128 if 128 % math.lcm(b1, b2) == 0 else 126
        return PDEInfo(
            name=f"thermal_block_{b1}x{b2}",
            dim=2,
            description=(
                f"2D thermal block -div(a grad u) = 1, u = 0 on the edge, a = mu_q constant "
                f"on each of {b1} x {b2} blocks (x by y, row-major)"
            ),
            fields={"u": "length^2 / mu (f = 1)"},
            coefficients={f"mu_{k + 1}": coef for k in range(q)},
            defaults=Defaults(n=n, length=1.0, t_end=0.0, dt=1.0, n_frames=1),
            boundary="Dirichlet u = 0",
            stationary=True,
            coordinate_offset=0.5,
        )

    def _setup(self, params: dict[str, torch.Tensor]) -> dict[str, Any]:
        operator = affine_operator(self.blocks, self.n, self.length)
        x, y = (torch.from_numpy(c) for c in self.coordinates(self.grid))
        return {"operator": operator, "h": self.dx, "x": x, "y": y}

    @classmethod
    def initial_condition(
        cls,
        grid: Grid,
        seeds: Sequence[int] | np.ndarray,
        *,
        dtype: torch.dtype = torch.float64,
        device: str | torch.device = "cpu",
    ) -> torch.Tensor:
        """Zeros (batch, 1, n, n): the problem has no initial state; the solve replaces it.

        The generate stage starts every sample from a state; a stationary problem's rollout
        returns its solution instead. Any grid size is accepted here (the solver checks ``n``).

        Args:
            grid: The grid (square).
            seeds: Integer seeds, shape (batch,); unused beyond the batch size.
            dtype: Returned dtype. Defaults to ``torch.float64``.
            device: Returned device. Defaults to ``"cpu"``.
        """
        grid = as_grid(grid, None, cls.info.dim, cls.info.defaults.length)
        return torch.zeros((len(seeds), 1, *grid.shape), dtype=dtype, device=device)

    def parameters(self, n_batch: int) -> np.ndarray:
        """Each sample's ``mu``, float64 (n_batch, Q), the coefficients broadcast."""
        cols = [getattr(self, f"mu_{k + 1}").cpu().numpy() for k in range(self.operator.n_terms)]
        return np.stack([np.broadcast_to(c, (n_batch,)) for c in cols], axis=1)

    def _start(self, u: torch.Tensor) -> torch.Tensor:
        return u

    def _advance(self, s: torch.Tensor, n_steps: int) -> torch.Tensor:
        """Solve each sample: (batch, 1, n, n) -> ``u`` (batch, 1, n, n); ``s`` must be finite."""
        bad = ~torch.isfinite(s.flatten(1)).all(dim=1)
        if bool(bad.any()):
            rows = bad.nonzero().flatten().tolist()
            raise ValueError(f"u0 must be finite (it is not used); not so in samples {rows}")
        u = solve_truth(self.operator, self.parameters(s.shape[0]))[:, : self.n * self.n]
        return torch.from_numpy(u.reshape(s.shape)).to(device=self.device, dtype=self.dtype)

    def _frame(self, s: torch.Tensor) -> torch.Tensor:
        return s


class ThermalBlock2x2(ThermalBlock):
    """The thermal block on 2 x 2 blocks (``mu_1 .. mu_4``); see ``ThermalBlock``."""

    blocks = (2, 2)
    grid_multiple = 2
    info = ThermalBlock.make_info(2, 2)


class ThermalBlock3x2(ThermalBlock):
    """The thermal block on 3 (along x) x 2 (along y) blocks (``mu_1 .. mu_6``); see
    ``ThermalBlock``. Its default grid is 126 cells per side (15,876 cells and 378 interface
    faces: 16,254 unknowns), the nearest to 128 that both 3 and 2 divide."""

    blocks = (3, 2)
    grid_multiple = 6
    info = ThermalBlock.make_info(3, 2)
