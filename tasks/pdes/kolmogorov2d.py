"""Kolmogorov flow: the 2D Navier-Stokes solver with its sinusoidal forcing and drag switched on."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import torch

from pdeflow.tasks.pdes.base import PDE, Bound, Coefficient, Grid, largest, smallest
from pdeflow.tasks.pdes.navier_stokes2d import NavierStokes2D

DEFAULT_AMPLITUDE = 0.1
DEFAULT_DRAG = 0.1
DEFAULT_WAVENUMBER = 4


class KolmogorovFlow2D(NavierStokes2D):
    r"""Forced 2D turbulence: ``NavierStokes2D`` with ``forcing="kolmogorov"``, batched.

    .. math::

        \partial_t \omega + \mathbf u \cdot \nabla \omega = \nu \Delta \omega
        - F k_f \cos(k_f y) - \mu \omega, \qquad -\Delta \psi = \omega,

    on the periodic square :math:`[0, \ell)^2`: the curl of the body force
    :math:`F \sin(k_f y)\,\hat x` with :math:`k_f = 2\pi\,` ``forcing_wavenumber`` :math:`/\ell`,
    and linear drag :math:`\mu` (``drag``, 1/time) that lets the flow reach a statistically
    steady state. Symbols, discretisation (Fourier pseudo-spectral, 2/3 rule, ETDRK4) and the
    Courant limit :math:`C = \max|\mathbf u|\,\Delta t / \Delta x \le 3/\pi` are those of
    ``NavierStokes2D``. Defaults: ``F`` = 0.1, :math:`k_f \ell / 2\pi` = 4 and
    :math:`\mu` = 0.1 on the unit square; wavenumber 4 and drag 0.1 are those of Kochkov et
    al. (2021), PNAS 118, e2101784118 (there with amplitude 1 on :math:`[0, 2\pi)^2`).

    Only ``nu`` may differ between the samples of a batch; ``forcing_amplitude`` (:math:`F`,
    length/time^2) and ``drag`` are coefficients with one value per run (a generate config sets
    them under ``constants``), float64 tensors of shape (1,).

    Stability limit: ``max_stable_dt`` bounds the speed by the initial state's bound plus
    :math:`F / (\mu + \nu k_1^2)`, :math:`k_1 = 2\pi/\ell`. The energy balance
    :math:`\tfrac12 \tfrac{d}{dt}\langle|\mathbf u|^2\rangle = F \langle u_x \sin k_f y\rangle
    - \nu \langle|\nabla \mathbf u|^2\rangle - \mu\langle|\mathbf u|^2\rangle` with Poincare's
    inequality bounds the forced rms speed by :math:`F / (\sqrt 2 (\mu + \nu k_1^2))`, and the
    laminar state's peak speed :math:`F / (\mu + \nu k_f^2)` lies below the bound; local
    peaks of the turbulent state are not bounded rigorously, so the per-frame CFL check of the
    rollout stays the guard.

    Construction is ``PDE``'s (``grid``, ``dt``, ``length``, ``device``, ``dtype``, ``cfl_max``
    and the coefficients ``nu``, ``forcing_amplitude``, ``drag``) plus one option.

    Args:
        forcing_wavenumber: Integer :math:`k_f \ell / 2\pi` with ``3 * it < n``. Defaults to 4.
        **kwargs: ``PDE``'s arguments.

    Raises:
        ValueError: If an argument is outside its valid range; the message names it.
    """

    info = replace(
        NavierStokes2D.info,
        name="kolmogorov_2d",
        description=(
            "2D Navier-Stokes, vorticity form, Kolmogorov forcing F sin(k_f y) and drag, periodic"
        ),
        coefficients={
            "nu": replace(
                NavierStokes2D.info.coefficients["nu"], sample=("loguniform", 1e-4, 1e-3)
            ),
            "forcing_amplitude": Coefficient(
                (0.0, 10.0), "length/time^2", value=DEFAULT_AMPLITUDE, per_run=True
            ),
            "drag": Coefficient((0.0, 10.0), "1/time", value=DEFAULT_DRAG, per_run=True),
        },
        # max_stable_dt = 0.0075 on the default grid at nu = 1e-4 (NavierStokes2D's grid, side,
        # horizon and frames).
        defaults=replace(NavierStokes2D.info.defaults, dt=0.005),
    )

    def __init__(
        self, grid: Grid | int, *, forcing_wavenumber: int = DEFAULT_WAVENUMBER, **kwargs: Any
    ) -> None:
        # The forcing amplitude and drag are coefficients here, so PDE's __init__ takes them.
        object.__setattr__(self, "forcing", "kolmogorov")
        object.__setattr__(self, "forcing_wavenumber", forcing_wavenumber)
        PDE.__init__(self, grid, **kwargs)

    def _forcing_constants(self, params: dict[str, torch.Tensor]) -> tuple[float, float]:
        return float(params["forcing_amplitude"][0]), float(params["drag"][0])

    @classmethod
    def _speed_bound(
        cls, grid: Grid, coefficients: Mapping[str, Bound], u_max: float | None
    ) -> float:
        """``NavierStokes2D``'s bound of the initial state plus the forced ``F / (mu + nu k_1^2)``.

        The largest amplitude, smallest drag and smallest ``nu`` of the bounds count.
        """
        nu = smallest(coefficients["nu"])
        forced = largest(coefficients["forcing_amplitude"]) / (
            smallest(coefficients["drag"]) + nu * (2 * math.pi / grid.length) ** 2
        )
        return super()._speed_bound(grid, coefficients, u_max) + forced
