"""Exact solutions used to validate the PDE solvers."""

from __future__ import annotations

import math

import numpy as np
from scipy import optimize, special


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


def _check_time(t: float) -> None:
    if not (math.isfinite(t) and t >= 0):
        raise ValueError(f"t must be a finite number >= 0, got {t!r}")


def _check_positive(name: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


def kdv_soliton(
    x: np.ndarray,
    t: float,
    c: float,
    beta: float = 1.0,
    x0: float = 0.0,
    length: float | None = None,
) -> np.ndarray:
    r"""One-soliton solution of the Korteweg-de Vries equation.

    Solves :math:`u_t + 6 u u_x + \beta u_{xxx} = 0` on the real line (Korteweg & de Vries
    1895, Phil. Mag. 39, 422-443) by

    .. math::

        u(x, t) = \frac{c}{2} \operatorname{sech}^2\!\Big(\frac{1}{2}\sqrt{c/\beta}\,
        (x - c t - x_0)\Big),

    which follows from the standard form (:math:`\beta = 1`) by scaling ``x`` and ``t`` by
    :math:`\sqrt\beta`. With ``length`` the distance to the crest is taken to the nearest
    periodic image, which is exact on a periodic domain up to the tail
    :math:`2 c\, e^{-\sqrt{c/\beta}\, \ell / 2}` at the far side.

    Args:
        x: Points in space, any shape, length units.
        t: Time >= 0.
        c: Speed > 0 (the amplitude is ``c / 2``).
        beta: Dispersion coefficient > 0. Defaults to 1.0.
        x0: Crest position at ``t = 0``. Defaults to 0.0.
        length: Period of the domain, or ``None`` (default) for the real line.

    Returns:
        ``u(x, t)``, float64, same shape as ``x``.

    Raises:
        ValueError: If ``t < 0`` or ``c``, ``beta`` or ``length`` is not > 0.
    """
    _check_time(t)
    _check_positive("c", c)
    _check_positive("beta", beta)
    xi = np.asarray(x, dtype=np.float64) - c * t - x0
    if length is not None:
        _check_positive("length", length)
        xi = (xi + length / 2) % length - length / 2
    return 0.5 * c / np.cosh(0.5 * math.sqrt(c / beta) * xi) ** 2


def logistic(t: float, u0: float, rho: float) -> float:
    r"""Uniform solution of Fisher-KPP, :math:`u' = \rho u (1 - u)` (Verhulst 1838).

    .. math::

        u(t) = \frac{u_0 e^{\rho t}}{1 - u_0 + u_0 e^{\rho t}}.

    Args:
        t: Time >= 0.
        u0: Initial value in [0, 1] (outside it the solution can blow up in finite time).
        rho: Growth rate > 0.

    Returns:
        ``u(t)``.

    Raises:
        ValueError: If ``t < 0``, ``rho <= 0`` or ``u0`` is outside [0, 1].
    """
    _check_time(t)
    _check_positive("rho", rho)
    if not 0 <= u0 <= 1:
        raise ValueError(f"u0 must be in [0, 1], got {u0!r}")
    growth = math.exp(rho * t)
    return u0 * growth / (1 - u0 + u0 * growth)


def allen_cahn_uniform(t: float, u0: float) -> float:
    r"""Uniform solution of Allen-Cahn, :math:`u' = u - u^3`.

    .. math::

        u(t) = \frac{u_0}{\sqrt{u_0^2 + (1 - u_0^2) e^{-2t}}},

    from the Bernoulli substitution :math:`w = u^{-2}`, :math:`w' = 2 - 2w`.

    Args:
        t: Time >= 0.
        u0: Initial value, finite.

    Returns:
        ``u(t)``.

    Raises:
        ValueError: If ``t < 0`` or ``u0`` is not finite.
    """
    _check_time(t)
    if not math.isfinite(u0):
        raise ValueError(f"u0 must be finite, got {u0!r}")
    return u0 / math.sqrt(u0 * u0 + (1 - u0 * u0) * math.exp(-2 * t))


def fisher_kpp_wave(x: np.ndarray, t: float, nu: float, rho: float, x0: float = 0.0) -> np.ndarray:
    r"""Travelling front of Fisher-KPP found by Ablowitz & Zeppetella (1979).

    Solves :math:`u_t = \nu u_{xx} + \rho u (1 - u)` on the real line (Bull. Math. Biol. 41,
    835-840; there for :math:`\nu = \rho = 1`, scaled here by :math:`x \sqrt{\rho/\nu}`,
    :math:`\rho t`) by the front from 1 (left) to 0 (right)

    .. math::

        u(x, t) = \Big(1 + e^{\kappa (x - s t - x_0)}\Big)^{-2}, \qquad
        \kappa = \sqrt{\rho / (6\nu)}, \quad s = 5 \sqrt{\nu\rho/6},

    the one closed-form front, for the speed :math:`5/\sqrt 6` above the minimal
    :math:`2\sqrt{\nu\rho}`.

    Args:
        x: Points in space, any shape, length units.
        t: Time >= 0.
        nu: Diffusivity > 0.
        rho: Growth rate > 0.
        x0: Position at ``t = 0`` where ``u = 1/4``. Defaults to 0.0.

    Returns:
        ``u(x, t)``, float64, same shape as ``x``.

    Raises:
        ValueError: If ``t < 0`` or ``nu`` or ``rho`` is not > 0.
    """
    _check_time(t)
    _check_positive("nu", nu)
    _check_positive("rho", rho)
    kappa, speed = math.sqrt(rho / (6 * nu)), 5 * math.sqrt(nu * rho / 6)
    xi = kappa * (np.asarray(x, dtype=np.float64) - speed * t - x0)
    # exp overflows to inf for xi > 709, where u is 0 to double precision anyway.
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(xi)) ** 2


def allen_cahn_periodic_front(x: np.ndarray, eps: float, length: float) -> np.ndarray:
    r"""Stationary periodic solution of Allen-Cahn with one pair of fronts per period.

    Solves :math:`\varepsilon^2 u_{xx} + u - u^3 = 0` with period ``length`` by the Jacobi
    elliptic function (substitute :math:`\operatorname{sn}'' = -(1 + m)\operatorname{sn}
    + 2 m \operatorname{sn}^3`)

    .. math::

        u(x) = \sqrt{\frac{2m}{1 + m}} \operatorname{sn}\!\Big(\frac{x}{\varepsilon\sqrt{1+m}}
        \,\Big|\, m\Big), \qquad K(m) \sqrt{1 + m} = \frac{\ell}{4 \varepsilon},

    whose period :math:`4 K(m) \varepsilon \sqrt{1+m}` is ``length``. It rises through 0 at
    ``x = 0`` and falls through 0 at ``x = length / 2``; as :math:`\varepsilon / \ell \to 0`,
    ``m -> 1`` and near each zero it tends to the front :math:`\pm\tanh(x / (\sqrt 2
    \varepsilon))`, from which it differs by :math:`O(e^{-\ell / (2\sqrt 2 \varepsilon)})`.

    Accuracy: ``scipy.special.ellipj`` loses digits as ``m -> 1``; against 40-digit mpmath it
    measured 2e-13 at ``1 - m = 2.4e-4`` (``eps = 0.2``, ``length = 2 pi``) and 2e-11 at
    ``1 - m = 6e-6`` (``eps = 0.15``).

    Args:
        x: Points in space, any shape, length units.
        eps: Interface width, ``0 < eps < length / (2 pi)`` (for larger ``eps`` only ``u = 0``
            and ``u = +-1`` are periodic and stationary).
        length: Period > 0.

    Returns:
        ``u(x)``, float64, same shape as ``x``.

    Raises:
        ValueError: If ``length`` is not > 0 or ``eps`` is outside its range.
    """
    _check_positive("length", length)
    if not (math.isfinite(eps) and 0 < eps < length / (2 * math.pi)):
        raise ValueError(f"eps must be in (0, length / (2 pi)), got {eps!r}")
    target = length / (4 * eps)

    def mismatch(p: float) -> float:  # p = 1 - m keeps digits as m -> 1
        return float(special.ellipkm1(p)) * math.sqrt(2 - p) - target

    if mismatch(1e-300) <= 0:  # K(m) grows only like -log(1 - m) / 2
        raise ValueError(f"eps must be above ~length / 1960 to be represented, got {eps!r}")
    p = optimize.brentq(mismatch, 1e-300, 1.0, xtol=1e-300, rtol=4 * np.finfo(float).eps)
    m = 1.0 - p
    sn = special.ellipj(np.asarray(x, dtype=np.float64) / (eps * math.sqrt(1 + m)), m)[0]
    return math.sqrt(2 * m / (1 + m)) * sn
