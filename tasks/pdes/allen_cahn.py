"""One-dimensional Allen-Cahn equation, pseudo-spectral in space and ETDRK4 in time."""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from pdeflow.tasks.pdes.base import Bound, Coefficient, Defaults, Grid, PDEInfo
from pdeflow.tasks.pdes.spectral1d import RK4_REAL_LIMIT, PeriodicSpectral1D, state_bound


class AllenCahn(PeriodicSpectral1D):
    r"""Allen-Cahn equation on a periodic interval, batched over samples.

    .. math::

        \partial_t u = \varepsilon^2 \, \partial_{xx} u + u - u^3,
        \qquad x \in [0, \ell), \; t > 0,

    with periodic boundary conditions :math:`u(0, t) = u(\ell, t)` (Allen & Cahn 1979, Acta
    Metall. 27, 1085-1095). Symbols: ``u`` is the order parameter of shape (batch, 1, n_x)
    sampled at ``x``, with stable phases :math:`\pm 1`; :math:`\varepsilon` is ``eps``
    (interface width, length units), one value for the batch or one per sample; :math:`\ell` is
    ``length``; the time step is ``dt``. Exact solutions for tests: a uniform state follows
    :math:`u = u_0 / \sqrt{u_0^2 + (1 - u_0^2) e^{-2t}}`, and
    :math:`\tanh(x / (\sqrt 2 \varepsilon))` is a stationary front (see
    ``pdeflow.tasks.pdes.exact``).

    Space is Fourier pseudo-spectral (``torch.fft.rfft``), wavenumbers
    :math:`k_m = 2\pi m / \ell`. In time, :math:`-\varepsilon^2 k^2 \hat u` is integrated exactly
    and the reaction :math:`\widehat{u - u^3}` explicitly, by the ETDRK4 scheme of Cox & Matthews
    (2002), J. Comput. Phys. 176, 430-455, with the contour coefficients of Kassam & Trefethen
    (2005), SIAM J. Sci. Comput. 26(4), 1214-1233, who also solve Allen-Cahn this way. The cubic
    is dealiased by the 1/2 rule, Orszag's argument for a cubic: the state is projected onto the
    modes ``4 m < n_x`` before the first step and stays in their span, so products of three kept
    modes never alias onto kept ones. A front needs ``dx`` well below ``eps``: its spectrum
    falls as :math:`e^{-\pi \varepsilon k / \sqrt 2}`.

    Stability limit: linearised about a uniform state ``U``, the reaction has the real
    eigenvalue :math:`1 - 3U^2`, :math:`-2` at the stable phases. The ``k = 0`` mode has
    ``L = 0``, where ETDRK4 is RK4, stable for real :math:`y \ge -2.785`; the damped modes only
    widen that interval. Hence :math:`(3 u_{max}^2 - 1) \Delta t \le 2.785`, i.e.
    :math:`\Delta t \le 1.39` for data in [-1, 1], which the maximum principle keeps there.
    Diffusion sets no limit, whatever ``eps`` and ``n_x``. At the limit RK4's amplification
    factor passes +1, and past it the scheme settles on spurious steady states near the phases
    (Yee, Sweby & Griffiths 1991, J. Comput. Phys. 97, 474-511; measured 0.88 at 1.02x the
    limit), which no finiteness check detects, so keep ``dt`` below ``max_stable_dt``.

    Construction is ``PDE``'s: ``AllenCahn(n_x, eps=..., dt=..., length=...)``.
    """

    # 512 points: a front's spectrum exp(-pi eps k / sqrt 2) is below 1e-6 at the 1/2-rule
    # cut k = 128 for eps = 0.05 (the last fifth of the kept modes measured 5e-6 of the
    # largest at t = 5; 256 points gave 1.5e-3). By t = 5 the phases have separated
    # (reaction time 1) and the fronts of the wider interfaces have begun to move; dt = 0.01
    # is 0.09 of the limit for max|u0| <= 3, small for the reaction's accuracy.
    info = PDEInfo(
        name="allen_cahn",
        description="Allen-Cahn u_t = eps^2 u_xx + u - u^3",
        fields={"u": "order parameter"},
        coefficients={"eps": Coefficient((1e-4, 10.0), "length", ("loguniform", 0.05, 0.2))},
        defaults=Defaults(
            n=512, length=2 * math.pi, t_end=5.0, dt=0.01, initial_condition={"kind": "modes"}
        ),
    )
    _dealias_factor = 4
    _polynomial = (0.0, 1.0, 0.0, -1.0)  # f = u - u^3, with G = 1
    _affine_powers = {"eps": 2.0}  # L = eps^2 (-k^2)

    @staticmethod
    def _operators(
        k: torch.Tensor, params: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return -(params["eps"] ** 2) * k**2, torch.ones_like(k)[None]

    def _pointwise(self, u: torch.Tensor) -> torch.Tensor:
        return u - u**3

    @classmethod
    def max_stable_dt(
        cls, grid: Grid, coefficients: Mapping[str, Bound], u_max: float | None = None
    ) -> float:
        """``2.785 / (3 max(u_max, 1)^2 - 1)``: the explicit reaction's limit.

        See the class docstring. The state tends to the phases +-1, so ``u_max`` below 1 (or
        none) counts as 1. Diffusion sets no limit, whatever ``eps`` and the grid.
        """
        return RK4_REAL_LIMIT / (3 * max(state_bound(u_max), 1.0) ** 2 - 1)
