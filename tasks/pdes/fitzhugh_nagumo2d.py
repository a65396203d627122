"""Two-dimensional FitzHugh-Nagumo diffusion-reaction system: cell-centred differences and RK4."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from pdeflow.tasks.fields import seeded_samples
from pdeflow.tasks.pdes import base
from pdeflow.tasks.pdes.base import PDE, Coefficient, Defaults, Grid, PDEInfo
from pdeflow.tasks.pdes.spectral1d import RK4_REAL_LIMIT

# Bound on |u| assumed by max_stable_dt when none is given: the initial state is standard
# normal noise, and the largest |u| of 128^2 draws exceeds 5 with probability 0.9% per sample
# (P(|z| > 5) = 5.7e-7 per cell). The cubic term and diffusion pull max |u| below 1.3 by
# t = 0.1 (measured), so the bound only matters for the first steps, and a draw slightly above
# it still sits inside the margin that the default dt leaves (0.005 against 0.0069 at the
# largest default Dv).
NOISE_BOUND = 5.0

# Cells per interface width sqrt(2 Du) that resolution_warning asks for; PDEBench's 128^2 cells
# with Du = 1e-3 on [-1, 1]^2 have 2.9.
CELLS_PER_WIDTH = 2.0

DIFFUSIVITY = "length^2/time"


class FitzHugh2D(PDE):
    r"""FitzHugh-Nagumo diffusion-reaction system on a square with no-flux walls, batched.

    .. math::

        \partial_t u &= D_u \Delta u + u - u^3 - k - v, \\
        \partial_t v &= D_v \Delta v + u - v,
        \qquad (x, y) \in [-\ell/2, \ell/2]^2, \; t > 0,

    with homogeneous Neumann conditions :math:`\partial_n u = \partial_n v = 0` on the walls.
    Symbols: ``u`` (activator) and ``v`` (inhibitor) are the channels of the state, shape
    (batch, 2, n, n), dimensionless; :math:`D_u, D_v` are ``Du``, ``Dv`` (diffusivities, units
    length^2/time) and ``k`` the threshold (dimensionless), each one value for the batch or one
    per sample; :math:`\ell` is ``length`` (default 2, the square :math:`[-1, 1]^2` centred on
    the origin). Default setting: PDEBench's 2D diffusion-reaction data (Takamoto et al. 2022,
    NeurIPS Datasets and Benchmarks): ``Du = 1e-3``, ``Dv = 5e-3``, ``k = 5e-3``, standard
    normal noise in every cell at ``t = 0``, ``t`` in [0, 5] saved at 101 times, 128^2 cells;
    the default coefficients are sampled a factor 2 either way around PDEBench's.

    Space: ``n`` x ``n`` cells of side :math:`h = \ell/n`, values at the cell centres
    ``x_i = -\ell/2 + (i + 1/2) h`` (axis -2 of the state is ``x``, axis -1 is ``y``), five-point
    Laplacian with one ghost cell per side that copies its neighbour inside, which makes the face
    flux zero: the finite-volume form of the Neumann condition, conserving :math:`\int u` to
    rounding when reactions are off. Its eigenvectors are
    :math:`\cos(\pi m (i + 1/2)/n) \cos(\pi l (j + 1/2)/n)` with eigenvalues
    :math:`-\tfrac{4}{h^2}[\sin^2\tfrac{\pi m}{2n} + \sin^2\tfrac{\pi l}{2n}]`, all in
    :math:`(-8/h^2, 0]`. Time: the classical fourth-order Runge-Kutta method.

    Stability limit: linearised about a state with :math:`|u| \le u_{max}`, the right-hand side
    is :math:`A = D \otimes \Delta_h + J` with the reaction Jacobian
    :math:`J = \begin{pmatrix} 1 - 3u^2 & -1 \\ 1 & -1 \end{pmatrix}` in each cell. The
    diffusion part has a real spectrum in :math:`[-8 D_{max}/h^2, 0]` (row sum 8/h^2 at most),
    and :math:`\|J\|_\infty = \max(2, |1 - 3u^2| + 1) \le \max(2, 3 u_{max}^2) = \rho_r`, so
    :math:`\|A\|_\infty \le 8 D_{max}/h^2 + \rho_r` bounds every eigenvalue. RK4 is stable on
    the negative real axis down to :math:`-2.785` (``RK4_REAL_LIMIT``), hence

    .. math::

        \Delta t \le \frac{2.785}{8 D_{max}/h^2 + \max(2, 3 u_{max}^2)},

    exact for the dominant (real) diffusion eigenvalues; the reaction budget is a frozen-
    coefficient bound placed on the real axis, where the region is narrowest. Past the limit
    the checkerboard mode grows by :math:`|R(-\Delta t\,8D/h^2)| > 1` per step and the rollout
    raises ``BlowUpError`` once it overflows.

    Args:
        grid: A ``Grid`` (square, >= 4 cells per side, any parity) or the cells per side.
        reaction: ``False`` drops the reaction terms and solves two heat equations (used to
            verify the discretisation). Defaults to ``True``.
        **kwargs: ``dt``, ``length`` (default 2.0), ``device``, ``dtype`` and the coefficients
            ``Du``, ``Dv`` (in [0, 1]) and ``k`` (in [-1, 1]), each one value or one per
            sample; see ``pdeflow.tasks.pdes.base.PDE``.

    Attributes:
        reaction: The constructor argument.
        x, y: Cell-centre coordinates, shape (n,), solver dtype (``coordinates``).
    """

    # max_stable_dt = 0.0069 at Dv = 1e-2 on 128^2 cells (more on coarser grids); dt = 0.005
    # gives 10 steps per PDEBench frame.
    # The centre of the default square; ``coordinates`` centres any side on the origin.
    info = PDEInfo(
        name="fitzhugh_nagumo_2d",
        dim=2,
        description="FitzHugh-Nagumo diffusion-reaction on [-1, 1]^2 (PDEBench 2D), "
        "finite differences + RK4",
        fields={"u": "dimensionless (activator)", "v": "dimensionless (inhibitor)"},
        coefficients={
            "Du": Coefficient((0.0, 1.0), DIFFUSIVITY, sample=("loguniform", 5e-4, 2e-3)),
            "Dv": Coefficient((0.0, 1.0), DIFFUSIVITY, sample=("loguniform", 2.5e-3, 1e-2)),
            "k": Coefficient((-1.0, 1.0), "1", sample=("uniform", 0.0, 1e-2)),
        },
        defaults=Defaults(n=128, length=2.0, t_end=5.0, dt=0.005, n_frames=101),
        boundary="no-flux (Neumann)",
        coordinate_offset=0.5,
        origin=-1.0,
    )
    even_grid = False
    min_points = 4

    def __init__(self, grid: Grid | int, *, reaction: bool = True, **kwargs: Any) -> None:
        if not isinstance(reaction, bool):
            raise ValueError(f"reaction must be True or False, got {reaction!r}")
        object.__setattr__(self, "reaction", reaction)
        super().__init__(grid, **kwargs)

    @classmethod
    def coordinates(cls, grid: Grid) -> list[np.ndarray]:
        """Cell centres of the square centred on the origin, per axis, float64."""
        return [
            -length / 2 + axis for axis, length in zip(grid.coords(0.5), grid.lengths, strict=True)
        ]

    def _setup(self, params: dict[str, torch.Tensor]) -> dict[str, Any]:
        diffusivity = torch.stack(torch.broadcast_tensors(params["Du"], params["Dv"]), dim=1)
        x, y = (torch.from_numpy(c) for c in self.coordinates(self.grid))
        return {
            "_diffusivity": (diffusivity / self.dx**2)[:, :, None, None],
            "_k": params["k"][:, None, None],
            "x": x,
            "y": y,
        }

    @classmethod
    def max_stable_dt(
        cls, grid: Grid, coefficients: Mapping[str, base.Bound], u_max: float | None = None
    ) -> float:
        """Largest stable RK4 step: ``2.785 / (8 max(Du, Dv) / dx^2 + max(2, 3 u_max^2))``.

        See the class docstring for the derivation; ``k`` does not enter.

        Args:
            grid: The grid.
            coefficients: Every coefficient's value or (low, high) range.
            u_max: Bound on ``|u|`` over the rollout; None: ``NOISE_BOUND`` = 5.0, a bound on
                the standard normal initial state.

        Returns:
            The step size bound, in time units.
        """
        u_max = NOISE_BOUND if u_max is None else float(u_max)
        d_max = max(base.largest(coefficients["Du"]), base.largest(coefficients["Dv"]))
        rate = 8 * d_max / min(grid.spacing) ** 2 + max(2.0, 3.0 * u_max**2)
        return RK4_REAL_LIMIT / rate

    @classmethod
    def resolution_warning(
        cls, grid: Grid, coefficients: Mapping[str, base.Bound], u_max: float | None = None
    ) -> str | None:
        """A message if the grid cannot resolve the thinnest ``u`` fronts, else ``None``.

        Where :math:`u - u^3` dominates, ``u`` forms Allen-Cahn fronts
        :math:`\\tanh(s / \\sqrt{2 D_u})`, of width :math:`w = \\sqrt{2 D_u}`;
        ``CELLS_PER_WIDTH`` = 2 cells per width are asked for at the smallest ``Du``.
        """
        width = math.sqrt(2 * max(base.smallest(coefficients["Du"]), 0.0))
        h = max(grid.spacing)
        if width >= CELLS_PER_WIDTH * h:
            return None
        if width == 0:
            return f"{cls.info.name}: Du = 0 leaves the fronts sharp on every grid"
        n_needed = math.ceil(CELLS_PER_WIDTH * max(grid.lengths) / width)
        return (
            f"{cls.info.name}: grid {grid.describe()} gives {width / h:.2g} cells per front "
            f"width sqrt(2 Du) = {width:.3g}; use n >= {n_needed}"
        )

    @classmethod
    def initial_condition(
        cls,
        grid: Grid,
        seeds: Iterable[int],
        *,
        dtype: torch.dtype = torch.float64,
        device: str | torch.device = "cpu",
    ) -> torch.Tensor:
        """PDEBench's initial state: independent standard normal ``u`` and ``v`` in each cell.

        Each sample is drawn by itself (``pdeflow.tasks.fields.seeded_samples``), so it is
        bitwise the same alone as at any position of any batch: batch-invariant by construction.

        Args:
            grid: The grid (the noise does not depend on the side).
            seeds: One integer per sample; sample ``i`` uses
                ``numpy.random.default_rng(int(seeds[i]))`` alone.
            dtype: Torch dtype of the result.
            device: Torch device of the result.

        Returns:
            The state, shape (batch, 2, *grid.shape).
        """
        grid = base.as_grid(grid, None, cls.info.dim, cls.info.defaults.length)
        shape = (2, *grid.shape)
        noise = seeded_samples(seeds, shape, lambda rng: rng.standard_normal(shape))
        return torch.as_tensor(noise, dtype=dtype, device=device)

    def _laplacian(self, s: torch.Tensor) -> torch.Tensor:
        """Neumann five-point Laplacian times ``D / dx^2``, (batch, 2, n, n) -> same."""
        p = F.pad(s, (1, 1, 1, 1), mode="replicate")
        # Differences first: a uniform state gives exact zeros (the ODE test relies on it).
        lap = (p[..., :-2, 1:-1] - s) + (p[..., 2:, 1:-1] - s)
        lap += (p[..., 1:-1, :-2] - s) + (p[..., 1:-1, 2:] - s)
        return lap.mul_(self._diffusivity)

    def _rhs(self, s: torch.Tensor) -> torch.Tensor:
        """Right-hand side of the semi-discrete system, (batch, 2, n, n)."""
        out = self._laplacian(s)
        if self.reaction:
            u, v = s[:, 0], s[:, 1]
            out[:, 0] += u - u**3 - self._k - v
            out[:, 1] += u - v
        return out

    def _start(self, u: torch.Tensor) -> torch.Tensor:
        return u

    def _advance(self, s: torch.Tensor, n_steps: int) -> torch.Tensor:
        """``n_steps`` classical RK4 steps of size ``dt``; never in place (``s`` may be u0)."""
        h = self.dt
        for _ in range(n_steps):
            k1 = self._rhs(s)
            k2 = self._rhs(s + (h / 2) * k1)
            k3 = self._rhs(s + (h / 2) * k2)
            k4 = self._rhs(s + h * k3)
            s = s + (h / 6) * (k1 + 2 * (k2 + k3) + k4)
        return s

    def _frame(self, s: torch.Tensor) -> torch.Tensor:
        return s
