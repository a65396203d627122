"""Exact solutions used to validate the PDE solvers."""

from __future__ import annotations

import math

import numpy as np


def cole_hopf_burgers(
    x: np.ndarray, t: float, nu: float, a0: float, b: dict[int, float]
) -> np.ndarray:
    r"""Exact periodic solution of viscous Burgers by the Cole-Hopf transform.

    Solves :math:`u_t + (u^2/2)_x = \nu u_{xx}` on :math:`[0, 2\pi)` with periodic boundary
    conditions. With :math:`u = -2\nu\,\phi_x / \phi` the equation becomes the heat equation
    :math:`\phi_t = \nu \phi_{xx}` (Hopf 1950, Comm. Pure Appl. Math. 3, 201-230; Cole 1951,
    Quart. Appl. Math. 9, 225-236), solved here by

    .. math::

        \phi(x, t) = a_0 + \sum_k b_k e^{-\nu k^2 t} \cos(k x), \qquad
        u(x, t) = \frac{2\nu \sum_k k\, b_k e^{-\nu k^2 t} \sin(k x)}{\phi(x, t)}.

    Args:
        x: Points in space, any shape (the solution is :math:`2\pi`-periodic), length units.
        t: Time >= 0.
        nu: Viscosity > 0.
        a0: Mean of :math:`\phi`; must exceed :math:`\sum_k |b_k|` so that :math:`\phi > 0`
            for all ``x`` and ``t``.
        b: Cosine amplitudes of :math:`\phi` keyed by integer wavenumber ``k >= 1``.

    Returns:
        ``u(x, t)``, float64, same shape as ``x``.

    Raises:
        ValueError: If ``nu <= 0``, ``t < 0``, a key of ``b`` is not an integer >= 1, or
            ``a0 <= sum |b_k|``.
    """
    if not (math.isfinite(nu) and nu > 0):
        raise ValueError(f"nu must be a finite number > 0, got {nu!r}")
    if not (math.isfinite(t) and t >= 0):
        raise ValueError(f"t must be a finite number >= 0, got {t!r}")
    if any(isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1 for k in b):
        raise ValueError(f"keys of b must be integer wavenumbers >= 1, got {list(b)}")
    if not a0 > sum(abs(v) for v in b.values()):
        raise ValueError(f"a0 must exceed sum(|b_k|) so that phi > 0, got a0={a0!r}, b={b!r}")
    x = np.asarray(x, dtype=np.float64)
    phi = np.full_like(x, float(a0))
    minus_phi_x = np.zeros_like(x)
    for k, bk in b.items():
        amp = bk * math.exp(-nu * k * k * t)
        phi += amp * np.cos(k * x)
        minus_phi_x += k * amp * np.sin(k * x)
    return 2.0 * nu * minus_phi_x / phi
