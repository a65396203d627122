"""One-dimensional heat equation, pseudo-spectral in space and exact in time."""

from __future__ import annotations

import math

import torch

from pdeflow.tasks.pdes.spectral1d import Coefficient, PeriodicSpectral1D


class Heat(PeriodicSpectral1D):
    r"""Heat (diffusion) equation on a periodic interval, batched over samples.

    .. math::

        \partial_t u = \nu \, \partial_{xx} u, \qquad x \in [0, \ell), \; t > 0,

    with periodic boundary conditions :math:`u(0, t) = u(\ell, t)`. Symbols: ``u`` is the state
    of shape (batch, n_x) sampled at ``x``; :math:`\nu` is ``nu`` (diffusivity, units
    length^2/time), one value for the batch or one per sample; :math:`\ell` is ``length``; the
    time step is ``dt``.

    Space is Fourier pseudo-spectral (``torch.fft.rfft``), wavenumbers
    :math:`k_m = 2\pi m / \ell`, ``m = 0 .. n_x/2``, all kept. Each mode decays as
    :math:`\hat u_m(t) = e^{-\nu k_m^2 t} \hat u_m(0)`; ETDRK4 (Cox & Matthews 2002, J. Comput.
    Phys. 176, 430-455) without a nonlinear term reduces to this exact propagator, so the only
    errors are rounding and the projection of ``u0`` onto the grid's modes.

    Stability limit: none. The propagator is :math:`e^{-\nu k^2 \Delta t} \in (0, 1]` for every
    ``dt`` (unconditionally stable and exact in time), so there is no ``max_stable_dt``; ``dt``
    only sets the spacing of the recorded frames.

    Args:
        n_x: Number of grid points, even and >= 8.
        nu: Diffusivity > 0: a scalar, or a sequence/tensor of shape (batch,) with one per
            sample.
        dt: Time step > 0, in time units.
        length: Domain length :math:`\ell > 0`. Defaults to ``2 * math.pi``.
        device: Torch device of all tensors. Defaults to ``"cpu"``.
        dtype: ``torch.float32`` or ``torch.float64`` (default) for the state.

    Attributes:
        n_x, dt, length, device, dtype: The constructor arguments.
        nu: Diffusivities, shape (1,) or (batch,), solver dtype.
        dx: Grid spacing ``length / n_x``.
        x: Grid points ``i * dx``, shape (n_x,), solver dtype.
        k: Wavenumbers ``2 pi m / length``, ``m = 0 .. n_x // 2``, shape (n_x // 2 + 1,).

    Raises:
        ValueError: If an argument is outside its valid range; the message names it.
    """

    name = "heat"
    parameter_names = ("nu",)
    _positive = frozenset({"nu"})
    _dealias_factor = 1

    def __init__(
        self,
        n_x: int,
        *,
        nu: Coefficient,
        dt: float,
        length: float = 2 * math.pi,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float64,
    ) -> None:
        super().__init__(
            n_x, dt=dt, length=length, device=device, dtype=dtype, coefficients={"nu": nu}
        )

    @staticmethod
    def _operators(k: torch.Tensor, params: dict[str, torch.Tensor]) -> tuple[torch.Tensor, None]:
        return -params["nu"] * k**2, None
