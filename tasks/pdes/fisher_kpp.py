"""One-dimensional Fisher-KPP reaction-diffusion, pseudo-spectral in space and ETDRK4 in time."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from pdeflow.tasks.pdes.base import Bound, Coefficient, Defaults, Grid, PDEInfo, largest
from pdeflow.tasks.pdes.spectral1d import RK4_REAL_LIMIT, PeriodicSpectral1D, state_bound


class FisherKPP(PeriodicSpectral1D):
    r"""Fisher-KPP equation on a periodic interval, batched over samples.

    .. math::

        \partial_t u = \nu \, \partial_{xx} u + \rho \, u (1 - u),
        \qquad x \in [0, \ell), \; t > 0,

    with periodic boundary conditions :math:`u(0, t) = u(\ell, t)` (Fisher 1937, Ann. Eugenics
    7, 355-369; Kolmogorov, Petrovsky & Piskunov 1937). Symbols: ``u`` is the state (a density,
    physically in [0, 1]) of shape (batch, 1, n_x) sampled at ``x``; :math:`\nu` is ``nu``
    (diffusivity, units length^2/time) and :math:`\rho` is ``rho`` (growth rate, units 1/time),
    each one value for the batch or one per sample; :math:`\ell` is ``length``; the time step is
    ``dt``. The default ``length = 1`` is PDEBench's 1D reaction-diffusion setting (Takamoto et
    al. 2022, NeurIPS Datasets and Benchmarks), with ``nu`` in {0.5, 1, 2, 5} and ``rho`` in
    {1, 2, 5, 10}. Exact solutions for tests: a uniform state follows the logistic ODE, and for
    a front joining 1 to 0 Ablowitz & Zeppetella (1979), Bull. Math. Biol. 41, 835-840, give the
    travelling wave of speed :math:`5\sqrt{\nu\rho/6}` (see ``pdeflow.tasks.pdes.exact``).

    Space is Fourier pseudo-spectral (``torch.fft.rfft``), wavenumbers
    :math:`k_m = 2\pi m / \ell`. In time, diffusion :math:`-\nu k^2 \hat u` is integrated exactly
    and the reaction :math:`\rho\, \widehat{u - u^2}` explicitly, by the ETDRK4 scheme of Cox &
    Matthews (2002), J. Comput. Phys. 176, 430-455, with the contour coefficients of Kassam &
    Trefethen (2005), SIAM J. Sci. Comput. 26(4), 1214-1233. :math:`u^2` is dealiased by
    Orszag's 2/3 rule: the state is projected onto the modes ``3 m < n_x`` before the first step
    and stays in their span. The growth :math:`\rho u` stays in the explicit part: in ``L`` it
    would make the ``k = 0`` entry positive, and the gain is small, since the reaction is not
    stiff for the ``dt`` that resolves it.

    Stability limit: linearised about a uniform state ``U``, the reaction has the real
    eigenvalue :math:`\rho (1 - 2U)`, :math:`-\rho` at the stable state ``U = 1``. The ``k = 0``
    mode has ``L = 0``, where ETDRK4 is RK4, stable for real :math:`y \ge -2.785`; the damped
    modes only widen that interval. Hence :math:`\rho (2 u_{max} - 1) \Delta t \le 2.785`, i.e.
    :math:`\rho \Delta t \le 2.785` for data in [0, 1], which the maximum principle keeps in
    [0, 1]. Diffusion sets no limit. At the limit RK4's amplification factor passes +1, and
    past it the scheme settles on spurious steady states near 1 (Yee, Sweby & Griffiths 1991,
    J. Comput. Phys. 97, 474-511; measured 0.84 and 1.02 at 1.02x the limit), which no
    finiteness check detects, so keep ``dt`` below ``max_stable_dt``. Near the limit the
    reaction is resolved poorly anyway (the logistic time scale is :math:`1/\rho`); accuracy,
    not stability, usually picks ``dt``. Negative values are unphysical and can blow up in finite
    time (as the ODE :math:`u' = \rho u (1 - u)` does for ``u < 0``); the rollout reports that
    as ``BlowUpError``.

    Construction is ``PDE``'s: ``FisherKPP(n_x, nu=..., rho=..., dt=..., length=...)``.
    """

    # PDEBench's horizon; the state must lie in [0, 1] (rescaled waves). Diffusion flattens
    # the state in ~1 / (nu k^2) <= 0.05 while the logistic growth takes ~1 / rho; rho dt
    # <= 0.1 keeps RK4's error on it ~1e-6, far below the limit rho dt <= 2.785.
    info = PDEInfo(
        name="fisher_kpp",
        description="Fisher-KPP reaction-diffusion u_t = nu u_xx + rho u (1 - u)",
        fields={"u": "density"},
        coefficients={
            "nu": Coefficient((1e-6, 100.0), "length^2/time", ("loguniform", 0.5, 5.0)),
            "rho": Coefficient((1e-6, 1e3), "1/time", ("loguniform", 1.0, 10.0)),
        },
        defaults=Defaults(
            n=128,
            length=1.0,
            t_end=1.0,
            dt=0.01,
            initial_condition={"kind": "fourier", "rescale": "unit"},
        ),
    )

    _polynomial = (0.0, 1.0, -1.0)  # f = u - u^2, with G = rho

    @staticmethod
    def _operators(
        k: torch.Tensor, params: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return -params["nu"] * k**2, params["rho"] * torch.ones_like(k)

    def _pointwise(self, u: torch.Tensor) -> torch.Tensor:
        return u - u.square()

    @classmethod
    def max_stable_dt(
        cls, grid: Grid, coefficients: Mapping[str, Bound], u_max: float | None = None
    ) -> float:
        """``2.785 / (max(rho) (2 max(u_max, 1) - 1))``: the explicit reaction's limit.

        See the class docstring. The state tends to 1, so ``u_max`` below 1 (or none, data in
        [0, 1]) counts as 1. Diffusion sets no limit.
        """
        u = max(state_bound(u_max), 1.0)
        return RK4_REAL_LIMIT / (largest(coefficients["rho"]) * (2 * u - 1))
