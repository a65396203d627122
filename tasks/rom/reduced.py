r"""Integrating a reduced system :math:`a' = A a + W g(\Phi a)` frame by frame, with checks.

``A`` (r, r) and ``W`` (r, m) are per sample (a parameter's reduced operators), :math:`\Phi`
(m, r) the basis at the ``m`` points where the polynomial ``g`` is evaluated (DEIM points, or
the whole grid). Two integrators: ETDRK4 with the linear part exact
(``pdeflow.tasks.rom.exponential``), on a fixed step, and ``scipy``'s adaptive BDF with the
exact Jacobian :math:`A + W\, \mathrm{diag}(g'(\Phi a))\, \Phi`. Either stops with
``BlowUpError`` as soon as a saved frame is non-finite or has grown past ``GROWTH_LIMIT`` times
its start, instead of returning garbage.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.integrate import solve_ivp

from pdeflow.tasks.pdes import BlowUpError
from pdeflow.tasks.rom.exponential import etdrk4_step, etdrk4_weights

__all__ = ["BDF_RTOL", "GROWTH_LIMIT", "INTEGRATORS", "ReducedSystem", "integrate"]

INTEGRATORS = ("etdrk4", "bdf")
# A reduced state whose norm grows past this multiple of its start has blown up: the PDEs here
# obey maximum principles or decay, and their data cannot grow 1000-fold.
GROWTH_LIMIT = 1e3
# Relative tolerance of the BDF integrator: far below the ROM errors (>= 1e-6), so a comparison
# with ETDRK4 measures the latter's time error.
BDF_RTOL = 1e-10


@dataclass(frozen=True)
class ReducedSystem:
    """``a' = A a + W g(Phi a)`` for n samples (module docstring).

    Attributes:
        linear: ``A``, (n, r, r), 1/time.
        gain: ``W``, (n, r, m), or None for a linear system.
        at_points: ``Phi``, (m, r).
        polynomial: ``g(u) = sum_j polynomial[j] u^j``, (d + 1,).
    """

    linear: np.ndarray
    gain: np.ndarray | None
    at_points: np.ndarray
    polynomial: np.ndarray

    def nonlinear(self) -> Callable[[np.ndarray], np.ndarray]:
        """``a -> g(Phi a)``, states (n, r) to (n, m)."""
        phi_t = np.ascontiguousarray(self.at_points.T)
        *low, top = (float(c) for c in self.polynomial)

        def g(a: np.ndarray) -> np.ndarray:
            u = a @ phi_t
            # Horner's rule from the leading coefficient, skipping zero ones: fewer array
            # operations per step (u^2 takes two), whose overhead dominates at these sizes.
            out = top * u if low else np.full_like(u, top)
            for j, c in enumerate(reversed(low)):
                if c != 0:
                    out = out + c
                if j < len(low) - 1:
                    out = out * u
            return out

        return g

    def jacobian(self, sample: int, a: np.ndarray) -> np.ndarray:
        """``A + W diag(g'(Phi a)) Phi`` of one sample at a state (r,); (r, r)."""
        if self.gain is None:
            return self.linear[sample]
        poly = np.polynomial.polynomial
        slope = poly.polyval(self.at_points @ a, poly.polyder(self.polynomial))
        return self.linear[sample] + (self.gain[sample] * slope) @ self.at_points


def _check_growth(a: np.ndarray, start: np.ndarray, time: float, label: str) -> None:
    norm = np.linalg.norm(a, axis=1)
    bad = ~np.isfinite(norm) | (norm > GROWTH_LIMIT * start)
    if np.any(bad):
        reason = f"reduced state non-finite or grown > {GROWTH_LIMIT:g}x its start ({label})"
        raise BlowUpError(np.flatnonzero(bad).tolist(), time, reason)


def integrate(
    system: ReducedSystem,
    initial: np.ndarray,
    *,
    method: str,
    h: float,
    steps_per_frame: int,
    n_frames: int,
    floor: float,
    label: str = "",
) -> np.ndarray:
    """Reduced trajectories from initial states, one frame every ``h * steps_per_frame``.

    Args:
        system: The reduced system.
        initial: Initial states, (n, r).
        method: One of ``INTEGRATORS``.
        h: ETDRK4's step (BDF picks its own), time units.
        steps_per_frame: Steps between saved frames.
        n_frames: Frames to return, the first being ``initial``.
        floor: Smallest norm a start counts as in the growth check (a zero start has no scale).
        label: What the blow-up message names (e.g. the ROM's settings).

    Returns:
        (n, n_frames, r) float64; frame ``f`` at time ``f * h * steps_per_frame`` from the start.

    Raises:
        BlowUpError: A frame is non-finite or grew > ``GROWTH_LIMIT`` x its start; names the
            samples and the time from the start.
    """
    start = np.maximum(np.linalg.norm(initial, axis=1), floor)
    run = _etdrk4 if method == "etdrk4" else _bdf
    return run(system, initial, h, steps_per_frame, n_frames, start, label)


def _etdrk4(system, initial, h, steps, n_frames, start, label) -> np.ndarray:
    weights = etdrk4_weights(system.linear, system.gain, h)
    nonlinear = None if system.gain is None else system.nonlinear()
    out = np.empty((len(initial), n_frames, initial.shape[1]))
    out[:, 0] = a = initial
    with np.errstate(all="ignore"):  # a blow-up is reported by _check_growth
        for frame in range(1, n_frames):
            for _ in range(steps):
                a = etdrk4_step(a, weights, nonlinear)
            out[:, frame] = a
            _check_growth(a, start, frame * steps * h, label)
    return out


def _bdf(system, initial, h, steps, n_frames, start, label) -> np.ndarray:
    t_eval = h * steps * np.arange(n_frames)
    nonlinear = None if system.gain is None else system.nonlinear()
    out = np.empty((len(initial), n_frames, initial.shape[1]))
    for s in range(len(initial)):

        def rhs(_t, a, s=s):
            du = system.linear[s] @ a
            return du if nonlinear is None else du + system.gain[s] @ nonlinear(a[None])[0]

        sol = solve_ivp(
            rhs,
            (0.0, t_eval[-1]),
            initial[s],
            method="BDF",
            t_eval=t_eval,
            jac=lambda _t, a, s=s: system.jacobian(s, a),
            rtol=BDF_RTOL,
            atol=BDF_RTOL * start[s],
        )
        if sol.status != 0 or sol.y.shape[1] != n_frames:
            raise BlowUpError([s], float(sol.t[-1]), f"{sol.message} ({label})")
        out[s] = sol.y.T
    for frame in range(n_frames):
        _check_growth(out[:, frame], start, float(t_eval[frame]), label)
    return out
