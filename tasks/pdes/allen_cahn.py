"""One-dimensional Allen-Cahn equation, pseudo-spectral in space and ETDRK4 in time."""

from __future__ import annotations

import math

import torch

from pdeflow.tasks.pdes.spectral1d import (
    RK4_REAL_LIMIT,
    Coefficient,
    PeriodicSpectral1D,
    validate_positive,
)


class AllenCahn(PeriodicSpectral1D):
    r"""Allen-Cahn equation on a periodic interval, batched over samples.

    .. math::

        \partial_t u = \varepsilon^2 \, \partial_{xx} u + u - u^3,
        \qquad x \in [0, \ell), \; t > 0,

    with periodic boundary conditions :math:`u(0, t) = u(\ell, t)` (Allen & Cahn 1979, Acta
    Metall. 27, 1085-1095). Symbols: ``u`` is the order parameter of shape (batch, n_x) sampled
    at ``x``, with stable phases :math:`\pm 1`; :math:`\varepsilon` is ``eps`` (interface width,
    length units), one value for the batch or one per sample; :math:`\ell` is ``length``; the
    time step is ``dt``. Exact solutions for tests: a uniform state follows
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

    Args:
        n_x: Number of grid points, even and >= 8.
        eps: Interface width > 0: a scalar, or a sequence/tensor of shape (batch,) with one per
            sample.
        dt: Time step > 0, in time units.
        length: Domain length :math:`\ell > 0`. Defaults to ``2 * math.pi``.
        device: Torch device of all tensors. Defaults to ``"cpu"``.
        dtype: ``torch.float32`` or ``torch.float64`` (default) for the state.

    Attributes:
        n_x, dt, length, device, dtype: The constructor arguments.
        eps: Interface widths, shape (1,) or (batch,), solver dtype.
        dx: Grid spacing ``length / n_x``.
        x: Grid points ``i * dx``, shape (n_x,), solver dtype.
        k: Wavenumbers ``2 pi m / length``, ``m = 0 .. n_x // 2``, shape (n_x // 2 + 1,).

    Raises:
        ValueError: If an argument is outside its valid range; the message names it.
    """

    name = "allen_cahn"
    parameter_names = ("eps",)
    _positive = frozenset({"eps"})
    _dealias_factor = 4

    def __init__(
        self,
        n_x: int,
        *,
        eps: Coefficient,
        dt: float,
        length: float = 2 * math.pi,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float64,
    ) -> None:
        super().__init__(
            n_x, dt=dt, length=length, device=device, dtype=dtype, coefficients={"eps": eps}
        )

    @staticmethod
    def max_stable_dt(u_max: float = 1.0) -> float:
        """Largest ``dt`` for which the explicit reaction is stable.

        ``dt = 2.785 / (3 max(u_max, 1)^2 - 1)``: see the class docstring. The state tends to
        the phases +-1, so ``u_max`` below 1 counts as 1.

        Args:
            u_max: Bound on ``|u|`` over the rollout (> 0); 1 for data in [-1, 1].
                Defaults to 1.0.

        Returns:
            The step size bound, in time units.
        """
        validate_positive("u_max", u_max)
        return RK4_REAL_LIMIT / (3 * max(u_max, 1.0) ** 2 - 1)

    @staticmethod
    def _operators(
        k: torch.Tensor, params: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return -(params["eps"] ** 2) * k**2, torch.ones_like(k)[None]

    def _pointwise(self, u: torch.Tensor) -> torch.Tensor:
        return u - u**3
