"""One-dimensional Kuramoto-Sivashinsky equation, pseudo-spectral in space and ETDRK4 in time."""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from pdeflow.tasks.pdes.base import Bound, Coefficient, Defaults, Grid, PDEInfo, smallest
from pdeflow.tasks.pdes.spectral1d import RK4_IMAG_LIMIT, PeriodicSpectral1D, per_sample

# Fraction of the frozen-coefficient stability limit a rollout accepts (the Courant number of
# the KS docstring is 1 at the limit): the same ~26% margin as Burgers' 1.0 of 1.35.
CFL_MAX = 0.75

# Bound on |u| on the attractor for nu = 1: measured max|u| 3.0 at length 22 (tests), with a
# third of margin. The scaling of the class docstring multiplies it by 1 / sqrt(nu).
ATTRACTOR_U_MAX = 4.0


def _k_star(k: torch.Tensor, u_max: torch.Tensor, nu: torch.Tensor) -> torch.Tensor:
    """Largest kept ``k > 0`` whose advection outruns its damping, per sample (0 if none).

    Args:
        k: Kept wavenumbers, shape (n_modes,).
        u_max: Bounds on ``|u|``, shape (batch,).
        nu: Hyperdiffusivities, shape (1,) or (batch,).

    Returns:
        :math:`\\max\\{k : \\nu k^3 - k < \\sqrt 2 u_{max}\\}`, shape (batch,).
    """
    active = (nu[:, None] * k**3 - k < math.sqrt(2) * u_max[:, None]) & (k > 0)
    return (k * active).amax(dim=-1)


def unit_courant_dt(grid: Grid, nu: Bound, u_max: float) -> float:
    """The ``dt`` at which the Courant number ``C`` of the KS docstring is 1.

    ``dt = 2 sqrt(2) / (u_max k_*)``, minimised over the values of ``nu`` (the smallest gives
    the largest ``k_*``).

    Args:
        grid: The 1D grid.
        nu: Hyperdiffusivity, a value or its (low, high) range over the samples.
        u_max: Bound on ``|u|`` over the rollout (> 0).

    Returns:
        The step size, in time units; ``math.inf`` if hyperdiffusion outruns advection in
        every kept mode.
    """
    nu64 = per_sample("nu", list(nu) if isinstance(nu, tuple | list) else nu, positive=True)
    m = torch.arange(grid.n // 2 + 1)
    k = (2 * math.pi / grid.length) * m[3 * m < grid.n].to(torch.float64)
    k_star = _k_star(k, torch.tensor([float(u_max)], dtype=torch.float64), nu64).amax().item()
    return math.inf if k_star == 0 else RK4_IMAG_LIMIT / (u_max * k_star)


class KuramotoSivashinsky(PeriodicSpectral1D):
    r"""Kuramoto-Sivashinsky equation on a periodic interval, batched over samples.

    .. math::

        \partial_t u + u \, \partial_x u + \partial_{xx} u + \nu \, \partial_{xxxx} u = 0,
        \qquad x \in [0, \ell), \; t > 0,

    with periodic boundary conditions :math:`u(0, t) = u(\ell, t)`. Symbols: ``u`` is the state
    of shape (batch, 1, n_x) sampled at ``x``; :math:`\nu` is ``nu`` (hyperdiffusivity, units
    length^4/time), one value for the batch or one per sample; :math:`\ell` is ``length``; the
    time step is ``dt``. The usual form has :math:`\nu = 1`; the substitution
    :math:`x = \sqrt\nu x'`, :math:`t = \nu t'`, :math:`u = u' / \sqrt\nu` maps any
    :math:`\nu` onto it with length :math:`\ell / \sqrt\nu`. Modes with :math:`\nu k^2 < 1`
    grow, the others are damped, and the nonlinearity moves energy between them; for
    :math:`\ell / \sqrt\nu` of about 22 and above the dynamics are chaotic. The default
    :math:`\ell = 22` is the well-studied chaotic case of Cvitanovic, Davidchack & Siminos
    (2010), SIAM J. Appl. Dyn. Syst. 9(1), 1-33; Kassam & Trefethen (2005) use
    :math:`\ell = 32\pi`.

    Space is Fourier pseudo-spectral (``torch.fft.rfft``), wavenumbers
    :math:`k_m = 2\pi m / \ell`. In time, :math:`L = k^2 - \nu k^4` is integrated exactly and
    :math:`-\tfrac{i k}{2} \widehat{u^2}` explicitly, by the ETDRK4 scheme of Cox & Matthews
    (2002), J. Comput. Phys. 176, 430-455, with the contour coefficients of Kassam & Trefethen
    (2005), SIAM J. Sci. Comput. 26(4), 1214-1233 (the full circle for the growing modes
    :math:`L > 0`, see ``pdeflow.tasks.pdes.spectral1d``). :math:`u^2` is dealiased by Orszag's 2/3
    rule: the state is projected onto the modes ``3 m < n_x`` before the first step and stays
    in their span.

    Stability limit: frozen about a constant state :math:`U`, mode ``k`` evolves by
    :math:`x = h L(k)` (real) and :math:`y = -i U k h` (imaginary). At ``x = 0`` ETDRK4 is RK4,
    stable for :math:`|y| \le 2\sqrt 2`; as :math:`x \to -\infty` its amplification factor tends
    to :math:`s^2 (2 s^2 + 1)` with :math:`|y| = s|x|`, stable for :math:`s \le 1/\sqrt 2`.
    The stable interval measured at least :math:`\max(2\sqrt 2, |x|/\sqrt 2)` for all
    :math:`x \in [-10^6, 0]`, so a mode is stable if
    :math:`U k h \le \max(2\sqrt 2, h(\nu k^4 - k^2)/\sqrt 2)`: automatically when
    :math:`\nu k^3 - k \ge \sqrt 2 U` (hyperdiffusion outruns advection, whatever ``h``), else
    when :math:`U k h \le 2\sqrt 2`. Hence the Courant number

    .. math::

        C = \frac{\max|u| \, k_* \, \Delta t}{2\sqrt 2}, \qquad
        k_* = \max\{k_m \text{ kept} : \nu k_m^3 - k_m < \sqrt 2 \max|u|\},

    is 1 at the limit, which, unlike Burgers', does not shrink with ``dx``: on the KS attractor
    :math:`\max|u| \approx 3` gives :math:`k_* < 1.85` and a limit of at least
    :math:`\Delta t = 0.51` at any resolution (0.55 for ``length = 22``). For the growing modes
    (:math:`0 < x \le h/(4\nu)`) the RK4 bound is used; there :math:`|R|` exceeds the exact
    growth :math:`e^x` by at most 3% at ``x = 0.1``, at the limit :math:`|y| = 2\sqrt 2`. The
    default ``cfl_max = 0.75`` keeps the margin of Burgers (a local, linearised argument,
    checked once per frame); a violation raises rather than return garbage.

    Construction is ``PDE``'s: ``KuramotoSivashinsky(n_x, nu=..., dt=..., length=...,
    cfl_max=...)``; ``cfl_max`` (``C`` above) defaults to ``CFL_MAX`` = 0.75,
    and ``math.inf`` disables the check.
    """

    # From modes 1-3 (amplitudes in [-1, 1]) the chaotic attractor is reached by t ~ 20-40;
    # 128 points keep the last kept modes below 1e-6 of the energetic ones at nu = 0.5
    # (64 measured 2e-4), and dt = 0.1 is 0.69 of ``max_stable_dt`` there.
    info = PDEInfo(
        name="ks",
        description="Kuramoto-Sivashinsky u_t + u u_x + u_xx + nu u_xxxx = 0",
        fields={"u": "amplitude"},
        coefficients={"nu": Coefficient((1e-3, 100.0), "length^4/time", ("uniform", 0.5, 1.5))},
        defaults=Defaults(
            n=128,
            length=22.0,
            t_end=100.0,
            dt=0.1,
            n_frames=101,
            initial_condition={"kind": "modes"},
        ),
    )
    CFL_MAX = CFL_MAX

    def _setup(self, params: dict[str, torch.Tensor]) -> dict:
        out = super()._setup(params)
        # What the Courant number needs on the solver's device and dtype.
        return {**out, "_k_kept": out["k"][out["_keep"][0].real > 0], "_nu": params["nu"]}

    _polynomial = (0.0, 0.0, 1.0)  # f = u^2, with G = -i k / 2 (pod-galerkin: semi_discrete)

    @staticmethod
    def _operators(
        k: torch.Tensor, params: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # u u_x = (u^2 / 2)_x, so -u u_x has the spectrum -(i k / 2) F[u^2].
        return k**2 - params["nu"] * k**4, -0.5j * k[None]

    def _pointwise(self, u: torch.Tensor) -> torch.Tensor:
        return u.square_()

    def _courant(self, u: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        u_max = u.abs().amax(dim=(1, 2))
        return u_max * _k_star(self._k_kept, u_max, self._nu) * (self.dt / RK4_IMAG_LIMIT)

    @classmethod
    def max_stable_dt(
        cls, grid: Grid, coefficients: Mapping[str, Bound], u_max: float | None = None
    ) -> float:
        """``CFL_MAX`` times ``unit_courant_dt`` for ``|u|`` bounded by the attractor.

        Any state grows to the attractor, so ``u_max`` is raised to
        ``ATTRACTOR_U_MAX / sqrt(nu)`` at the smallest ``nu`` (``u_max`` None: that bound).
        """
        nu = coefficients["nu"]
        u = max(u_max or 0.0, ATTRACTOR_U_MAX / math.sqrt(smallest(nu)))
        return cls.CFL_MAX * unit_courant_dt(grid, nu, u)
