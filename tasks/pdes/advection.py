"""One-dimensional linear advection, pseudo-spectral in space and exact in time."""

from __future__ import annotations

import torch

from pdeflow.tasks.pdes.spectral1d import Coefficient, PeriodicSpectral1D


class Advection(PeriodicSpectral1D):
    r"""Linear advection on a periodic interval, batched over samples.

    .. math::

        \partial_t u + c \, \partial_x u = 0, \qquad x \in [0, \ell), \; t > 0,

    with periodic boundary conditions :math:`u(0, t) = u(\ell, t)`; the solution is the
    translation :math:`u(x, t) = u_0(x - c t)`. Symbols: ``u`` is the state of shape
    (batch, n_x) sampled at ``x``; :math:`c` is ``c`` (units length/time, either sign), one value
    for the batch or one per sample; :math:`\ell` is ``length``; the time step is ``dt``. The
    default ``length = 1`` is the 1D advection setting of PDEBench (Takamoto et al. 2022,
    "PDEBench: an extensive benchmark for scientific machine learning", NeurIPS Datasets and
    Benchmarks), whose speeds are ``c`` in {0.1, 0.4, 1, 2, 4}.

    Space is Fourier pseudo-spectral (``torch.fft.rfft``), wavenumbers
    :math:`k_m = 2\pi m / \ell`. The equation is linear and diagonal in Fourier space,
    :math:`\hat u_t = -i c k \hat u`, so ETDRK4 (Cox & Matthews 2002, J. Comput. Phys. 176,
    430-455) without a nonlinear term reduces to the exact propagator
    :math:`\hat u \leftarrow e^{-i c k \Delta t} \hat u`: the only errors are rounding and the
    projection of ``u0`` onto the grid's modes. The Nyquist mode ``m = n_x / 2`` is projected
    out before the first step: on the grid it is :math:`\cos(\pi x / \Delta x)` alone, whose
    translation by a non-integer number of cells is not representable (its sine partner
    vanishes at the nodes).

    Stability limit: none. The propagator has modulus 1 for every ``dt`` (unconditionally
    stable and exact in time), so there is no ``max_stable_dt`` and no CFL check; ``dt`` only
    sets the spacing of the recorded frames.

    Args:
        n_x: Number of grid points, even and >= 8.
        c: Advection speed, finite, either sign: a scalar, or a sequence/tensor of shape
            (batch,) with one per sample.
        dt: Time step > 0, in time units.
        length: Domain length :math:`\ell > 0`. Defaults to 1.0.
        device: Torch device of all tensors. Defaults to ``"cpu"``.
        dtype: ``torch.float32`` or ``torch.float64`` (default) for the state.

    Attributes:
        n_x, dt, length, device, dtype: The constructor arguments.
        c: Speeds, shape (1,) or (batch,), solver dtype.
        dx: Grid spacing ``length / n_x``.
        x: Grid points ``i * dx``, shape (n_x,), solver dtype.
        k: Wavenumbers ``2 pi m / length``, ``m = 0 .. n_x // 2``, shape (n_x // 2 + 1,).

    Raises:
        ValueError: If an argument is outside its valid range; the message names it.
    """

    name = "advection"
    parameter_names = ("c",)
    _dealias_factor = 2

    def __init__(
        self,
        n_x: int,
        *,
        c: Coefficient,
        dt: float,
        length: float = 1.0,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float64,
    ) -> None:
        super().__init__(
            n_x, dt=dt, length=length, device=device, dtype=dtype, coefficients={"c": c}
        )

    @staticmethod
    def _operators(k: torch.Tensor, params: dict[str, torch.Tensor]) -> tuple[torch.Tensor, None]:
        return -1j * params["c"] * k, None
