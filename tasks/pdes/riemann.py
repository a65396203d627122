r"""Exact solution of the Riemann problem of the 1D Euler equations for an ideal gas.

The reference against which ``CompressibleEuler1D`` is validated (Toro, *Riemann Solvers and
Numerical Methods for Fluid Dynamics*, 3rd ed. 2009, chapter 4): two constant states
:math:`W_L = (\rho_L, u_L, p_L)` for :math:`x < x_0` and :math:`W_R` for :math:`x > x_0` at
:math:`t = 0` evolve into a self-similar solution :math:`W((x - x_0)/t)` made of a left wave
(shock or rarefaction), a contact at the star velocity :math:`u_*` and a right wave. The star
pressure :math:`p_*` is the root of

.. math::

    f(p) = f_L(p) + f_R(p) + u_R - u_L = 0,

with :math:`f_K` the shock (Rankine-Hugoniot) branch for :math:`p > p_K` and the rarefaction
(isentropic) branch otherwise, found by Newton's method (Toro eqs. 4.5-4.7, 4.44-4.46); the
solution is then sampled at :math:`\xi = (x - x_0)/t` (Toro section 4.5). Pure numpy, float64.
"""

from __future__ import annotations

import math

import numpy as np

State = tuple[float, float, float]


def _f_and_slope(p: float, state: State, gamma: float) -> tuple[float, float]:
    """Toro's pressure function f_K(p) and its derivative for one side (eqs. 4.6, 4.7, 4.37)."""
    rho, _, p_k = state
    c = math.sqrt(gamma * p_k / rho)
    if p > p_k:
        a = 2.0 / ((gamma + 1.0) * rho)
        b = (gamma - 1.0) / (gamma + 1.0) * p_k
        root = math.sqrt(a / (p + b))
        return (p - p_k) * root, root * (1.0 - (p - p_k) / (2.0 * (b + p)))
    ratio = p / p_k
    f = 2.0 * c / (gamma - 1.0) * (ratio ** ((gamma - 1.0) / (2.0 * gamma)) - 1.0)
    return f, ratio ** (-(gamma + 1.0) / (2.0 * gamma)) / (rho * c)


def star_state(
    left: State, right: State, gamma: float, tol: float = 1e-14, max_iter: int = 100
) -> tuple[float, float]:
    """Pressure and velocity ``(p_*, u_*)`` between the two nonlinear waves.

    Args:
        left, right: Primitive states ``(rho, u, p)`` with ``rho, p > 0``.
        gamma: Ratio of specific heats > 1.
        tol: Relative change of ``p`` at which Newton's iteration stops.
        max_iter: Newton iterations allowed.

    Raises:
        ValueError: If the states generate vacuum or Newton's method does not converge.
    """
    c_l = math.sqrt(gamma * left[2] / left[0])
    c_r = math.sqrt(gamma * right[2] / right[0])
    du = right[1] - left[1]
    if 2.0 * (c_l + c_r) / (gamma - 1.0) <= du:
        raise ValueError("the Riemann problem generates vacuum (Toro eq. 4.40)")
    # Two-rarefaction guess (Toro eq. 4.46): exact when both waves are rarefactions, and a
    # positive start that Newton's iteration on the convex f never leaves.
    z = (gamma - 1.0) / (2.0 * gamma)
    p = ((c_l + c_r - 0.5 * (gamma - 1.0) * du) / (c_l / left[2] ** z + c_r / right[2] ** z)) ** (
        1.0 / z
    )
    for _ in range(max_iter):
        f_l, d_l = _f_and_slope(p, left, gamma)
        f_r, d_r = _f_and_slope(p, right, gamma)
        p_new = max(p - (f_l + f_r + du) / (d_l + d_r), 1e-300)
        change = 2.0 * abs(p_new - p) / (p_new + p)
        p = p_new
        if change < tol:
            f_l, _ = _f_and_slope(p, left, gamma)
            f_r, _ = _f_and_slope(p, right, gamma)
            return p, 0.5 * (left[1] + right[1]) + 0.5 * (f_r - f_l)
    raise ValueError(f"Newton's iteration for p_* did not converge in {max_iter} steps")


def _side(xi: np.ndarray, state: State, p_star: float, u_star: float, gamma: float, sign: float):
    """(rho, u, p) at speeds ``xi`` on one side of the contact; ``sign`` -1 left, +1 right.

    Written for the left side (Toro section 4.5.1); the right side is its mirror image
    ``x -> -x``, ``u -> -u`` (section 4.5.2), applied through ``sign``.
    """
    rho_k, u_k, p_k = state[0], sign * -state[1], state[2]
    xi, u_s = sign * -xi, sign * -u_star
    c_k = math.sqrt(gamma * p_k / rho_k)
    ratio = p_star / p_k
    g6 = (gamma - 1.0) / (gamma + 1.0)
    outside = np.full_like(xi, rho_k), np.full_like(xi, u_k), np.full_like(xi, p_k)
    if ratio > 1.0:  # shock
        speed = u_k - c_k * math.sqrt(((gamma + 1.0) * ratio + gamma - 1.0) / (2.0 * gamma))
        rho_s = rho_k * (ratio + g6) / (g6 * ratio + 1.0)
        star = xi > speed
        rho = np.where(star, rho_s, outside[0])
        u = np.where(star, u_s, outside[1])
        p = np.where(star, p_star, outside[2])
    else:  # rarefaction: head, tail and the fan between them
        head, tail = u_k - c_k, u_s - c_k * ratio ** ((gamma - 1.0) / (2.0 * gamma))
        bracket = 2.0 / (gamma + 1.0) + g6 / c_k * (u_k - xi)
        fan = bracket ** (2.0 / (gamma - 1.0))
        rho = np.where(xi <= head, rho_k, np.where(xi > tail, rho_k * ratio ** (1 / gamma), 0.0))
        u = np.where(xi <= head, u_k, np.where(xi > tail, u_s, 0.0))
        p = np.where(xi <= head, p_k, np.where(xi > tail, p_star, 0.0))
        inside = (xi > head) & (xi <= tail)
        rho = np.where(inside, rho_k * fan, rho)
        u = np.where(inside, 2.0 / (gamma + 1.0) * (c_k + 0.5 * (gamma - 1.0) * u_k + xi), u)
        p = np.where(inside, p_k * bracket ** (2.0 * gamma / (gamma - 1.0)), p)
    return rho, sign * -u, p


def exact_riemann(
    x: np.ndarray, t: float, left: State, right: State, gamma: float, x0: float = 0.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Density, velocity and pressure of the exact Riemann solution at points ``x``, time ``t``.

    Args:
        x: Positions, any shape, in length units.
        t: Time > 0.
        left, right: Primitive states ``(rho, u, p)`` left and right of ``x0`` at ``t = 0``.
        gamma: Ratio of specific heats > 1.
        x0: Position of the initial jump.

    Returns:
        ``(rho, u, p)``, each float64 of the shape of ``x``.
    """
    if not t > 0:
        raise ValueError(f"t must be > 0, got {t!r}")
    p_star, u_star = star_state(left, right, gamma)
    xi = (np.asarray(x, dtype=np.float64) - x0) / t
    lw = _side(xi, left, p_star, u_star, gamma, -1.0)
    rw = _side(xi, right, p_star, u_star, gamma, 1.0)
    on_left = xi <= u_star
    return tuple(np.where(on_left, a, b) for a, b in zip(lw, rw, strict=True))
