"""One-dimensional linear advection, pseudo-spectral in space and exact in time."""

from __future__ import annotations

import torch

from pdeflow.tasks.pdes.base import Coefficient, Defaults, PDEInfo
from pdeflow.tasks.pdes.spectral1d import PeriodicSpectral1D


class Advection(PeriodicSpectral1D):
    r"""Linear advection on a periodic interval, batched over samples.

    .. math::

        \partial_t u + c \, \partial_x u = 0, \qquad x \in [0, \ell), \; t > 0,

    with periodic boundary conditions :math:`u(0, t) = u(\ell, t)`; the solution is the
    translation :math:`u(x, t) = u_0(x - c t)`. Symbols: ``u`` is the state of shape
    (batch, 1, n_x) sampled at ``x``; :math:`c` is ``c`` (units length/time, either sign), one
    value for the batch or one per sample; :math:`\ell` is ``length``; the time step is ``dt``.
    The default ``length = 1`` is the 1D advection setting of PDEBench (Takamoto et al. 2022,
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
    stable and exact in time), so ``max_stable_dt`` is infinite and there is no CFL check;
    ``dt`` only sets the spacing of the recorded frames.

    Construction is ``PDE``'s: ``Advection(n_x, c=..., dt=..., length=...)``.
    """

    # PDEBench's horizon is 2; by t = 1 the fastest samples have crossed the domain 4 times,
    # the slowest moved a tenth of it.
    info = PDEInfo(
        name="advection",
        description="linear advection u_t + c u_x = 0 (exact propagator)",
        fields={"u": "concentration"},
        coefficients={"c": Coefficient((-100.0, 100.0), "length/time", ("uniform", 0.1, 4.0))},
        defaults=Defaults(
            n=128, length=1.0, t_end=1.0, dt=0.01, initial_condition={"kind": "modes"}
        ),
    )
    _dealias_factor = 2

    @staticmethod
    def _operators(k: torch.Tensor, params: dict[str, torch.Tensor]) -> tuple[torch.Tensor, None]:
        return -1j * params["c"] * k, None
