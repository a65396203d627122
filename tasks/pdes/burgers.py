"""One-dimensional viscous Burgers equation, pseudo-spectral in space and ETDRK4 in time."""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from pdeflow.tasks.pdes.base import Bound, Coefficient, Defaults, Grid, PDEInfo, smallest
from pdeflow.tasks.pdes.spectral1d import (
    PeriodicSpectral1D,
    modes_initial_condition,
    state_bound,
)

# Stability limit of the explicit advection, derived in the Burgers docstring: the exact bound
# is 3 * sqrt(2) / pi ~= 1.35; 1.0 leaves ~26% margin for the nonlinearity and Gibbs overshoot.
CFL_MAX = 1.0


class Burgers(PeriodicSpectral1D):
    r"""Viscous Burgers equation on a periodic interval, batched over samples.

    .. math::

        \partial_t u + \partial_x \left(\tfrac{1}{2} u^2\right) = \nu \, \partial_{xx} u,
        \qquad x \in [0, \ell), \; t > 0,

    with periodic boundary conditions :math:`u(0, t) = u(\ell, t)`. Symbols: ``u`` is the state
    of shape (batch, 1, n_x) sampled at ``x``; :math:`\nu` is ``nu`` (units length^2/time), one
    value for the batch or one per sample; :math:`\ell` is ``length``; the time step is ``dt``.

    Space is Fourier pseudo-spectral (``torch.fft.rfft``), wavenumbers
    :math:`k_m = 2\pi m / \ell`, ``m = 0 .. n_x/2``. In time, the stiff linear term
    :math:`-\nu k^2 \hat u` is integrated exactly and the nonlinear term
    :math:`-\tfrac{i k}{2} \widehat{u^2}` explicitly, by the ETDRK4 scheme of Cox & Matthews
    (2002), J. Comput. Phys. 176, 430-455, with coefficients evaluated by the contour integral of
    Kassam & Trefethen (2005), SIAM J. Sci. Comput. 26(4), 1214-1233 (see
    ``pdeflow.tasks.pdes.etdrk4``). The nonlinear term is dealiased by Orszag's 2/3 rule: modes with
    ``3 m >= n_x`` are zeroed. The state is projected onto the kept modes before the first step
    (Galerkin truncation), so every frame after frame 0 lies in that span: the scheme never
    advects the cut modes, so evolving them would only let them decay by viscosity, a dynamics
    the PDE does not have, and alias into the kept ones through :math:`u^2`.

    Stability limit: the viscous term is exact, so only the explicit advection limits ``dt``.
    Linearised about a state with :math:`|u| \le u_{max}`, advection has eigenvalues
    :math:`-i u k`, the largest after dealiasing :math:`u_{max} k_{max}` with
    :math:`k_{max} = (n_x/3)(2\pi/\ell) = 2\pi / (3\,\Delta x)`. For ``L = 0`` ETDRK4 reduces
    on linear problems to classical RK4, whose stability region meets the imaginary axis at
    :math:`2\sqrt 2 \approx 2.83`. Hence :math:`u_{max} k_{max} \Delta t \le 2\sqrt 2`, i.e.
    :math:`C = u_{max} \Delta t / \Delta x \le 3\sqrt 2/\pi \approx 1.35`. The default
    ``cfl_max = 1.0`` keeps ~26% margin because the flux is nonlinear (the frozen-coefficient
    argument is only local), under-resolved fronts overshoot ``u_max`` by Gibbs oscillation, and
    the CFL number is only checked once per frame. Burgers obeys a maximum principle, so a
    violation during a rollout means an unstable ``dt``, bad input, or a front too steep for
    the grid (its Gibbs overshoot breaks the maximum principle: measured +27% over ``max|u0|``
    for ``sin(x)``, ``nu = 1e-3``, ``n_x = 128``), and it raises rather than return garbage.

    Construction is ``PDE``'s: ``Burgers(n_x, nu=..., dt=..., length=..., cfl_max=...)``;
    ``cfl_max`` defaults to ``CFL_MAX`` = 1.0 and ``math.inf`` disables the check.
    """

    # The demo's settings: modes 1-3 with amplitudes in [-0.5, 0.5], max|u0| <= 1.5, so fronts
    # steepen within t_end = 2 at the low viscosities, while 128 points resolve their width
    # 2 nu / max|u| >= 0.067 (see ``resolution_warning``: 95 needed at nu = 0.05) and
    # dt = 0.01 is 0.31 of ``max_stable_dt``.
    info = PDEInfo(
        name="burgers",
        description="viscous Burgers u_t + (u^2/2)_x = nu u_xx",
        fields={"u": "velocity"},
        coefficients={"nu": Coefficient((1e-5, 100.0), "length^2/time", ("loguniform", 0.05, 0.5))},
        defaults=Defaults(
            n=128,
            length=2 * math.pi,
            t_end=2.0,
            dt=0.01,
            initial_condition=modes_initial_condition(0.5),
        ),
    )
    CFL_MAX = CFL_MAX
    _polynomial = (0.0, 0.0, 1.0)  # f = u^2, with G = -i k / 2

    @staticmethod
    def _operators(
        k: torch.Tensor, params: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # (u^2 / 2)_x has the spectrum (i k / 2) F[u^2].
        return -params["nu"] * k**2, -0.5j * k[None]

    def _pointwise(self, u: torch.Tensor) -> torch.Tensor:
        return u.square_()

    def _courant(self, u: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return u.abs().amax(dim=(1, 2)) * (self.dt / self.dx)

    @classmethod
    def max_stable_dt(
        cls, grid: Grid, coefficients: Mapping[str, Bound], u_max: float | None = None
    ) -> float:
        """``CFL_MAX * dx / u_max``: the explicit advection's limit (class docstring).

        By the maximum principle ``max|u0|`` bounds ``|u|`` over the rollout; without a bound
        ``u_max = 1`` is assumed. Viscosity sets no limit (its term is exact).
        """
        u = state_bound(u_max)
        return math.inf if u <= 0 else cls.CFL_MAX * grid.spacing[0] / u

    @classmethod
    def resolution_warning(
        cls, grid: Grid, coefficients: Mapping[str, Bound], u_max: float | None = None
    ) -> str | None:
        """A warning when ``dx`` exceeds the width of the steepest viscous shock.

        A shock ``u = -U tanh(U x / (2 nu))`` has width ~ ``2 nu / U``; the pseudo-spectral
        solution stays free of Gibbs ripples when ``dx`` is at most about that width.
        """
        if not u_max:
            return None
        nu_min = smallest(coefficients["nu"])
        needed = math.ceil(grid.length * u_max / (2 * nu_min))
        if grid.n >= needed:
            return None
        return (
            f"n_x={grid.n} may not resolve shocks of width 2 nu / max|u| = "
            f"{2 * nu_min / u_max:.3g} at nu={nu_min:g}; estimated n_x >= "
            f"{needed + needed % 2} needed"
        )
