"""One-dimensional Kuramoto-Sivashinsky equation, pseudo-spectral in space and ETDRK4 in time."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from pdeflow.tasks.pdes.spectral1d import (
    RK4_IMAG_LIMIT,
    Coefficient,
    PeriodicSpectral1D,
    per_sample,
    validate_grid,
    validate_positive,
)

# Fraction of the frozen-coefficient stability limit a rollout accepts (the Courant number of
# the KS docstring is 1 at the limit): the same ~26% margin as Burgers' 1.0 of 1.35.
CFL_MAX = 0.75


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


class KuramotoSivashinsky(PeriodicSpectral1D):
    r"""Kuramoto-Sivashinsky equation on a periodic interval, batched over samples.

    .. math::

        \partial_t u + u \, \partial_x u + \partial_{xx} u + \nu \, \partial_{xxxx} u = 0,
        \qquad x \in [0, \ell), \; t > 0,

    with periodic boundary conditions :math:`u(0, t) = u(\ell, t)`. Symbols: ``u`` is the state
    of shape (batch, n_x) sampled at ``x``; :math:`\nu` is ``nu`` (hyperdiffusivity, units
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

    Args:
        n_x: Number of grid points, even and >= 8.
        nu: Hyperdiffusivity > 0: a scalar, or a sequence/tensor of shape (batch,) with one per
            sample. Defaults to 1.0.
        dt: Time step > 0, in time units.
        length: Domain length :math:`\ell > 0`. Defaults to 22.0.
        device: Torch device of all tensors. Defaults to ``"cpu"``.
        dtype: ``torch.float32`` or ``torch.float64`` (default) for the state.
        cfl_max: Largest Courant number ``C`` above a rollout accepts; ``math.inf`` disables
            the check. Defaults to ``CFL_MAX`` = 0.75.

    Attributes:
        n_x, dt, length, cfl_max, device, dtype: The constructor arguments.
        nu: Hyperdiffusivities, shape (1,) or (batch,), solver dtype.
        dx: Grid spacing ``length / n_x``.
        x: Grid points ``i * dx``, shape (n_x,), solver dtype.
        k: Wavenumbers ``2 pi m / length``, ``m = 0 .. n_x // 2``, shape (n_x // 2 + 1,).

    Raises:
        ValueError: If an argument is outside its valid range; the message names it.
    """

    name = "ks"
    parameter_names = ("nu",)
    _positive = frozenset({"nu"})

    def __init__(
        self,
        n_x: int,
        *,
        nu: Coefficient = 1.0,
        dt: float,
        length: float = 22.0,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float64,
        cfl_max: float = CFL_MAX,
    ) -> None:
        super().__init__(
            n_x,
            dt=dt,
            length=length,
            device=device,
            dtype=dtype,
            coefficients={"nu": nu},
            cfl_max=cfl_max,
        )

    @staticmethod
    def max_stable_dt(
        n_x: int,
        length: float,
        u_max: float,
        nu: float | Sequence[float] | torch.Tensor = 1.0,
        cfl_max: float = CFL_MAX,
    ) -> float:
        """Largest ``dt`` for which the Courant number of the class docstring is ``cfl_max``.

        ``dt = cfl_max * 2 sqrt(2) / (u_max k_*)``, minimised over the values of ``nu``.

        Args:
            n_x: Number of grid points, even and >= 8.
            length: Domain length > 0.
            u_max: Bound on ``|u|`` over the rollout (> 0); about 3 on the attractor for
                ``nu = 1``.
            nu: Hyperdiffusivity > 0, one value or one per sample. Defaults to 1.0.
            cfl_max: Courant limit (> 0). Defaults to ``CFL_MAX`` = 0.75.

        Returns:
            The step size bound, in time units; ``math.inf`` if hyperdiffusion outruns
            advection in every kept mode.
        """
        validate_grid(n_x, length)
        validate_positive("u_max", u_max)
        validate_positive("cfl_max", cfl_max)
        nu64 = per_sample("nu", nu, positive=True)
        m = torch.arange(n_x // 2 + 1)
        k = (2 * math.pi / length) * m[3 * m < n_x].to(torch.float64)
        k_star = _k_star(k, torch.tensor([float(u_max)], dtype=torch.float64), nu64).amax()
        if k_star.item() == 0:
            return math.inf
        return cfl_max * RK4_IMAG_LIMIT / (u_max * k_star.item())

    @staticmethod
    def _operators(
        k: torch.Tensor, params: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # u u_x = (u^2 / 2)_x, so -u u_x has the spectrum -(i k / 2) F[u^2].
        return k**2 - params["nu"] * k**4, -0.5j * k[None]

    def _pointwise(self, u: torch.Tensor) -> torch.Tensor:
        return u.square_()

    def _courant(self, u: torch.Tensor) -> torch.Tensor:
        u_max = u.abs().amax(dim=-1)
        k_star = _k_star(self.k[self._keep[0].real > 0], u_max, self.nu)
        return u_max * k_star * (self.dt / RK4_IMAG_LIMIT)
