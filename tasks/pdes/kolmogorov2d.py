"""Kolmogorov flow: the 2D Navier-Stokes solver with its sinusoidal forcing and drag switched on."""

from __future__ import annotations

import math
from typing import ClassVar

import torch

from pdeflow.tasks.pdes.navier_stokes2d import CFL_MAX, IC_SPEED_BOUND, NavierStokes2D, _validate_n
from pdeflow.tasks.pdes.spectral1d import Coefficient, per_sample, validate_positive

DEFAULT_AMPLITUDE = 0.1
DEFAULT_DRAG = 0.1
DEFAULT_WAVENUMBER = 4


def _one_value(name: str, value: Coefficient, bounds: tuple[float, float]) -> float:
    """A coefficient that must be the same for the whole batch, as a float in ``bounds``."""
    values = per_sample(name, value, positive=False)
    if not bool((values == values[0]).all()):
        raise ValueError(
            f"{name} takes one value for the whole batch (set it under constants), got {value!r}"
        )
    low, high = bounds
    first = float(values[0])
    if not low <= first <= high:
        raise ValueError(f"{name} must lie in [{low:g}, {high:g}], got {first:g}")
    return first


def _smallest(value: float | tuple[float, float]) -> float:
    return float(per_sample("nu", value, positive=True).min())


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

    Only ``nu`` may differ between the samples of a batch; ``forcing_amplitude`` and ``drag``
    are one value per batch (a generate config sets them under ``constants``).

    Stability limit: ``max_stable_dt`` bounds the speed by the initial state's bound plus
    :math:`F / (\mu + \nu k_1^2)`, :math:`k_1 = 2\pi/\ell`. The energy balance
    :math:`\tfrac12 \tfrac{d}{dt}\langle|\mathbf u|^2\rangle = F \langle u_x \sin k_f y\rangle
    - \nu \langle|\nabla \mathbf u|^2\rangle - \mu\langle|\mathbf u|^2\rangle` with Poincare's
    inequality bounds the forced rms speed by :math:`F / (\sqrt 2 (\mu + \nu k_1^2))`, and the
    laminar state's peak speed :math:`F / (\mu + \nu k_f^2)` lies below the bound; local
    peaks of the turbulent state are not bounded rigorously, so the per-frame CFL check of the
    rollout stays the guard.

    Args:
        n: Grid points per side, even and >= 8.
        dt: Time step > 0.
        length: Side > 0. Defaults to 1.0.
        device: Torch device. Defaults to ``"cpu"``.
        dtype: ``torch.float32`` or ``torch.float64`` (default).
        nu: Viscosity in ``parameter_ranges["nu"]``, a scalar or one per sample.
        forcing_amplitude: :math:`F` in ``parameter_ranges``, one value. Defaults to 0.1.
        drag: :math:`\mu` in ``parameter_ranges``, one value. Defaults to 0.1.
        forcing_wavenumber: Integer :math:`k_f \ell / 2\pi` with ``3 * it < n``. Defaults to 4.
        cfl_max: Largest Courant number a rollout accepts. Defaults to ``CFL_MAX`` = 0.7.

    Raises:
        ValueError: If an argument is outside its valid range; the message names it.
    """

    name: ClassVar[str] = "kolmogorov_2d"
    description: ClassVar[str] = (
        "2D Navier-Stokes, vorticity form, Kolmogorov forcing F sin(k_f y) and drag, periodic"
    )
    parameter_names: ClassVar[tuple[str, ...]] = ("nu", "forcing_amplitude", "drag")
    parameter_ranges: ClassVar[dict[str, tuple[float, float]]] = {
        "nu": (1e-6, 10.0),
        "forcing_amplitude": (0.0, 10.0),
        "drag": (0.0, 10.0),
    }
    default_parameters: ClassVar[dict[str, tuple[str, float, float]]] = {
        "nu": ("loguniform", 1e-4, 1e-3)
    }
    # One value per batch: a generate config may fix them (constants) but not sample them.
    batch_constants: ClassVar[dict[str, float]] = {
        "forcing_amplitude": DEFAULT_AMPLITUDE,
        "drag": DEFAULT_DRAG,
    }
    # max_stable_dt(64, 1.0) = 0.0075 at nu = 1e-4.
    default_dt: ClassVar[float] = 0.005

    def __init__(
        self,
        n: int,
        *,
        dt: float,
        length: float = 1.0,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float64,
        nu: Coefficient,
        forcing_amplitude: Coefficient = DEFAULT_AMPLITUDE,
        drag: Coefficient = DEFAULT_DRAG,
        forcing_wavenumber: int = DEFAULT_WAVENUMBER,
        cfl_max: float = CFL_MAX,
    ) -> None:
        ranges = self.parameter_ranges
        super().__init__(
            n,
            dt=dt,
            length=length,
            device=device,
            dtype=dtype,
            nu=nu,
            forcing="kolmogorov",
            forcing_amplitude=_one_value(
                "forcing_amplitude", forcing_amplitude, ranges["forcing_amplitude"]
            ),
            forcing_wavenumber=forcing_wavenumber,
            drag=_one_value("drag", drag, ranges["drag"]),
            cfl_max=cfl_max,
        )

    @classmethod
    def max_stable_dt(
        cls,
        n: int,
        length: float,
        u_max: float | None = None,
        cfl_max: float = CFL_MAX,
        **coefficients: float | tuple[float, float],
    ) -> float:
        """Largest ``dt`` of the explicit advection: ``cfl_max * dx / u_max``.

        Args:
            n: Grid points per side, even and >= 8.
            length: Side > 0.
            u_max: Bound on the speed (> 0). ``None``: ``IC_SPEED_BOUND * length`` plus the
                forced bound ``F / (drag + nu k_1^2)`` of the class docstring.
            cfl_max: Courant limit (> 0). Defaults to ``CFL_MAX`` = 0.7.
            coefficients: ``nu`` (value or range; the smallest counts, default: the low end of
                ``default_parameters``), ``forcing_amplitude`` and ``drag`` (value or range;
                the largest amplitude and smallest drag count, default: ``batch_constants``).

        Returns:
            The step size bound, in time units.
        """
        _validate_n(n)
        validate_positive("length", length)
        unknown = set(coefficients) - set(cls.parameter_names)
        if unknown:
            raise ValueError(
                f"unknown coefficients {sorted(unknown)}; valid: {cls.parameter_names}"
            )
        if u_max is None:
            nu = _smallest(coefficients.get("nu", cls.default_parameters["nu"][1]))
            amp = coefficients.get("forcing_amplitude", cls.batch_constants["forcing_amplitude"])
            amp = float(per_sample("forcing_amplitude", amp, positive=False).abs().max())
            drag = coefficients.get("drag", cls.batch_constants["drag"])
            drag = float(per_sample("drag", drag, positive=False).min())
            u_max = IC_SPEED_BOUND * length + amp / (drag + nu * (2 * math.pi / length) ** 2)
        return NavierStokes2D.max_stable_dt(n, length, u_max, cfl_max)

    @classmethod
    def resolution_warning(
        cls,
        n: int,
        length: float,
        nu: float | tuple[float, float] | None = None,
        **_: float | tuple[float, float],
    ) -> str | None:
        """``NavierStokes2D.resolution_warning`` at the smallest ``nu``; forcing may need more."""
        return super().resolution_warning(n, length, nu)
