"""Shared machinery of the 1D periodic pseudo-spectral solvers stepped by ETDRK4.

Every equation here has the semi-discrete form

.. math::

    \\partial_t \\hat u_m = L_m \\hat u_m + G_m \\, \\mathcal F\\!\\left[f(u)\\right]_m,

with a diagonal linear operator :math:`L_m = L(k_m)`, a diagonal multiplier :math:`G_m` (a
derivative such as :math:`-ik/2`, or a rate), and a pointwise nonlinearity ``f`` (for example
:math:`u^2`); ``f`` is ``None`` for linear equations. A subclass supplies ``L`` and ``G`` from
the wavenumbers and its per-sample coefficients, ``f``, and, where an explicit advection term
limits ``dt``, a Courant number. This module turns them into the ETDRK4 scheme of Cox &
Matthews (2002), J. Comput. Phys. 176, 430-455 (see ``pdeflow.tasks.pdes.etdrk4``), with ``G``
folded into the scheme's weights and a Galerkin truncation that dealiases ``f``; the batched
rollout and its frame checks are ``pdeflow.tasks.pdes.base.PDE``'s.
"""

from __future__ import annotations

import math
import numbers
from abc import abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import torch

from pdeflow.tasks.pdes.base import PDE, CoefficientValue
from pdeflow.tasks.pdes.etdrk4 import ETDRK4Coefficients, etdrk4_coefficients
from pdeflow.tasks.pdes.semidiscrete import SemiDiscrete, Term, affine_terms, check_polynomial

# Points on the full contour circle for a complex or positive linear operator: the density of
# pdeflow.tasks.pdes.etdrk4 (32 points on the upper half), which needs the conjugate symmetry
# of real non-positive L to drop the lower half.
N_CONTOUR_COMPLEX = 64

# Distinct values of hL per block of contour evaluations: bounds the (chunk, 64) complex128
# temporaries to 4 MB each.
_CHUNK = 1 << 12

# Where the stability region of classical RK4, which ETDRK4 reduces to for a mode with L = 0,
# meets the axes: |y| <= 2 sqrt(2) on the imaginary axis (advection), y >= -2.7853 on the
# negative real axis (a damping reaction; the real root of 1 + y/2 + y^2/6 + y^3/24 = 0).
# For real hL < 0 the ETDRK4 region contains these intervals (measured on both axes for hL in
# [-1e6, 0]; it widens with |hL|).
RK4_IMAG_LIMIT = 2 * math.sqrt(2)
RK4_REAL_LIMIT = 2.7852935634052813

_WEIGHTS = ("_e", "_e2", "_gq", "_gq2", "_gf1", "_gf2", "_gf3")

# A coefficient's value, once or per sample (the name the 2D solvers import).
Coefficient = CoefficientValue


def _contour_phis(z: torch.Tensor) -> list[torch.Tensor]:
    """``Q/h, f1/h, f2/h, f3/h`` at complex ``z`` (m,), as means over a unit circle about z.

    The trapezoid rule of Kassam & Trefethen (2005), SIAM J. Sci. Comput. 26(4), 1214-1233, on
    the full circle, because for complex ``z`` the values on the lower half are not the
    conjugates of those on the upper half. The points sit at half-step angles, so none passes
    closer than ``2 sin(pi / 128) ~= 0.05`` to the removable singularity at 0, where the ``1/w^3``
    terms amplify rounding. Measured against 50-digit mpmath for ``|z|`` in [1e-3, 1e5] in all
    directions: <= 5e-11 relative near ``|z| = 1``, <= 2e-15 for other ``|z| < 3``, and growing
    to 3e-11 at ``|Im z| = 1e5``, where :math:`e^z` itself is only known to ``|z| eps``.
    """
    theta = 2 * math.pi * (torch.arange(N_CONTOUR_COMPLEX, dtype=torch.float64) + 0.5)
    roots = torch.polar(torch.ones_like(theta), theta / N_CONTOUR_COMPLEX)
    out: list[list[torch.Tensor]] = [[], [], [], []]
    for chunk in torch.split(z, _CHUNK):
        w = chunk[:, None] + roots
        ew, ew2 = torch.exp(w), torch.exp(w / 2)
        w3 = w**3
        terms = (
            (ew2 - 1) / w,
            (-4 - w + ew * (4 - 3 * w + w * w)) / w3,
            (2 + w + ew * (w - 2)) / w3,
            (-4 - 3 * w - w * w + ew * (4 - w)) / w3,
        )
        for acc, term in zip(out, terms, strict=True):
            acc.append(term.mean(dim=1))
    return [torch.cat(acc) for acc in out]


def etdrk4_coefficients_complex(linear: torch.Tensor, dt: float) -> ETDRK4Coefficients:
    """ETDRK4 coefficients for any diagonal operator: complex, or real with positive entries.

    Entries that are real and <= 0 go to ``pdeflow.tasks.pdes.etdrk4.etdrk4_coefficients``; the
    others (the dispersive :math:`i k^3` of KdV, the unstable band :math:`k^2 - k^4 > 0` of
    Kuramoto-Sivashinsky) to a contour mean over the full circle (see ``_contour_phis``).

    Args:
        linear: Diagonal of ``L``, any shape, real or complex, finite; units 1/time.
        dt: Step size ``h`` > 0, in time units.

    Returns:
        The six coefficients, complex128 on the CPU, each with the shape of ``linear``.
    """
    if not bool(torch.isfinite(linear).all()):
        raise ValueError("linear must be finite")
    flat = linear.detach().to(device="cpu", dtype=torch.complex128).reshape(-1)
    z = dt * flat
    regular = (flat.imag == 0) & (flat.real <= 0)
    coef = [torch.zeros_like(z) for _ in range(6)]
    coef[0], coef[1] = torch.exp(z), torch.exp(z / 2)
    if bool(regular.any()):
        real = etdrk4_coefficients(flat.real[regular], dt, dtype=torch.float64)
        for i in range(2, 6):
            coef[i][regular] = real[i].to(torch.complex128)
    if not bool(regular.all()):
        pairs = torch.stack([z.real[~regular], z.imag[~regular]], dim=1)
        # Samples sharing a coefficient repeat values of hL: evaluate each once.
        unique, inverse = torch.unique(pairs, dim=0, return_inverse=True)
        phis = _contour_phis(torch.complex(unique[:, 0], unique[:, 1]))
        for i, phi in enumerate(phis, start=2):
            coef[i][~regular] = dt * phi[inverse]
    return ETDRK4Coefficients(*(c.reshape(linear.shape) for c in coef))


def validate_positive(name: str, value: float, *, allow_inf: bool = False) -> None:
    """Raise ValueError naming ``name`` unless ``value`` is a real number > 0 (finite)."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and value > 0
    if not ok or (not allow_inf and not math.isfinite(value)):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


def per_sample(name: str, value: Coefficient, *, positive: bool) -> torch.Tensor:
    """Validate a coefficient given once or per sample; float64 CPU tensor of shape (n,)."""
    try:
        values = torch.as_tensor(value, dtype=torch.float64, device="cpu").detach().reshape(-1)
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(
            f"{name} must be a number or a sequence of numbers, got {value!r}"
        ) from err
    ok = torch.isfinite(values) & (values > 0) if positive else torch.isfinite(values)
    if values.numel() == 0 or not bool(ok.all()):
        bound = " and > 0" if positive else ""
        raise ValueError(
            f"{name} must be finite{bound} (one value, or one per sample), got {value!r}"
        )
    return values


def modes_initial_condition(amplitude: float) -> dict:
    """The generate config's ``modes`` family: a_k uniform in [-amplitude, amplitude], k = 1-3.

    Its bound ``max|u0| <= 3 amplitude`` is what the stability check then uses.
    """
    spec = {"distribution": "uniform", "low": -amplitude, "high": amplitude}
    return {"kind": "modes", "modes": (1, 2, 3), "amplitude": spec}


def state_bound(u_max: float | None) -> float:
    """The bound on ``|u|`` a stability limit uses: ``u_max``, or 1 without one.

    The 1D solvers have no initial state of their own; ``u_max`` is None only for an initial
    family without a bound (a Gaussian random field), whose default amplitude is 1.
    """
    return 1.0 if u_max is None else float(u_max)


class PeriodicSpectral1D(PDE):
    """Base class: a 1D periodic pseudo-spectral PDE, ETDRK4 in time, immutable, batched.

    A subclass sets ``info`` and implements ``_operators`` (and ``_pointwise`` and ``_courant``
    where they apply); construction, checks and the rollout are ``PDE``'s. The state, of shape
    (batch, 1, n), is projected onto the kept modes ``_dealias_factor * m < n`` before the first
    step, so every later frame lies in their span: the scheme leaves the cut modes at zero.

    Attributes (besides ``PDE``'s):
        x: Grid points ``i * dx``, shape (n,), solver dtype.
        k: Wavenumbers ``2 pi m / length``, ``m = 0 .. n // 2``, shape (n // 2 + 1,).
    """

    # Modes with _dealias_factor * m >= n are cut: 3 is Orszag's 2/3 rule for a quadratic f,
    # 4 the 1/2 rule for a cubic one, 2 drops only the Nyquist mode, 1 keeps every mode.
    _dealias_factor: ClassVar[int] = 3

    _pointwise = None  # f(u) on a (batch, n) state; may work in place. None: linear PDE.
    # f as polynomial coefficients in increasing powers, for ``semi_discrete`` (checked there
    # against ``_pointwise``); None: not declared, and a nonlinear PDE has no semi-discrete form.
    _polynomial: ClassVar[tuple[float, ...] | None] = None
    # Power of a coefficient inside the factor L and G are affine in, where it is not 1.
    _affine_powers: ClassVar[Mapping[str, float]] = {}

    def _setup(self, params: dict[str, torch.Tensor]) -> dict[str, Any]:
        n_modes = self.n // 2 + 1
        k = (2 * math.pi / self.length) * torch.arange(n_modes, dtype=torch.float64)
        keep = self._dealias_factor * torch.arange(n_modes) < self.n
        linear, gain = self._operators(k, {name: p[:, None] for name, p in params.items()})
        x = torch.from_numpy(self.coordinates(self.grid)[0])
        tensors = dict(k=k, x=x, _keep=keep.to(torch.complex128)[None])
        tensors.update(self._weights(linear, None if gain is None else gain * keep, self.dt))
        return tensors

    @staticmethod
    def _weights(
        linear: torch.Tensor, gain: torch.Tensor | None, dt: float
    ) -> dict[str, torch.Tensor]:
        """ETDRK4 weights with the multiplier ``gain`` folded in, complex128.

        Folding saves a complex multiply per nonlinear evaluation. Complex although sometimes
        real: real * complex promotes elementwise, measured 1.5x slower in the Burgers solver.
        Without a nonlinear term only ``_e`` is needed, and ETDRK4 reduces to the exact
        :math:`e^{hL}`.
        """
        if gain is None:
            return {"_e": torch.exp(dt * linear.to(torch.complex128))}
        coef = etdrk4_coefficients_complex(linear, dt)
        gain = gain.to(torch.complex128)
        return {
            "_e": coef.e,
            "_e2": coef.e2,
            "_gq": gain * coef.q,
            "_gq2": 2 * gain * coef.q,
            "_gf1": gain * coef.f1,
            "_gf2": 2 * gain * coef.f2,
            "_gf3": gain * coef.f3,
        }

    def semi_discrete(self) -> SemiDiscrete:
        """This solver's equation as ``du/dt = L u + B g(u)``, with its coefficient values.

        The terms are the solver's own: ``_operators`` at its wavenumbers split into affine
        terms (``pdeflow.tasks.pdes.semidiscrete.affine_terms``), ``B = G`` times the
        dealiasing mask as in the ETDRK4 weights, and ``g = f`` (``_polynomial``, checked
        against ``_pointwise``), so an intrusive reduced model projects the equations the
        data came from.

        Raises:
            ValueError: A nonlinear PDE without ``_polynomial``, or operators that are not
                affine in the coefficients' ``_affine_powers``.
        """
        if self._pointwise is not None:
            if self._polynomial is None:
                raise ValueError(
                    f"{self.info.name} declares no _polynomial: it has no semi-discrete form"
                )
            check_polynomial(
                lambda u: self._pointwise(torch.from_numpy(u)[None])[0].numpy(), self._polynomial
            )
        names = tuple(self.info.coefficients)
        n_modes = self.n // 2 + 1
        k = (2 * math.pi / self.length) * torch.arange(n_modes, dtype=torch.float64)
        keep = self._dealias_factor * np.arange(n_modes) < self.n
        coefficients = {c: getattr(self, c).double().cpu().numpy() for c in names}
        checks = tuple({c: float(v[i]) for c, v in coefficients.items()} for i in (0, -1))

        def part(index: int):
            def operator(values: dict[str, float]) -> np.ndarray:
                params = {c: torch.tensor([[v]], dtype=torch.float64) for c, v in values.items()}
                out = self._operators(k, params)[index]
                return np.broadcast_to(out.numpy(), (1, n_modes)).astype(np.complex128)[0]

            return operator

        linear = affine_terms(part(0), names, self._affine_powers, checks)
        gain = ()
        if self._pointwise is not None:
            gain = affine_terms(part(1), names, self._affine_powers, checks)
            gain = tuple(Term(t.powers, t.multiplier * keep) for t in gain)
        return SemiDiscrete(
            name=self.info.name,
            n=self.n,
            length=self.length,
            keep=keep,
            linear=linear,
            gain=gain,
            polynomial=tuple(float(c) for c in self._polynomial or ()),
            coefficients=coefficients,
        )

    @staticmethod
    @abstractmethod
    def _operators(
        k: torch.Tensor, params: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``L`` of shape (n, n_modes) and ``G`` of shape (n', n_modes) or ``None``.

        Args:
            k: Wavenumbers ``2 pi m / length``, shape (n_modes,), float64.
            params: Each coefficient as a float64 column of shape (1, 1) or (batch, 1).
        """

    def _nonlinear(self, v: torch.Tensor) -> torch.Tensor:
        """Spectrum of f(u), (batch, n_modes); ``G`` and dealiasing are in the weights."""
        return torch.fft.rfft(self._pointwise(torch.fft.irfft(v, n=self.n)))

    def _step_hat(self, v: torch.Tensor) -> torch.Tensor:
        """One ETDRK4 step in Fourier space; ``v`` and the result have shape (batch, n_modes)."""
        if self._pointwise is None:
            return self._e * v
        # In place where an operand is dead: fewer fresh (batch, n_modes) arrays per step.
        e, e2, gq, gq2, gf1, gf2, gf3 = (getattr(self, name) for name in _WEIGHTS)
        nv = self._nonlinear(v)
        e2v = e2 * v
        a = torch.addcmul(e2v, gq, nv)
        na = self._nonlinear(a)
        nb = self._nonlinear(e2v.addcmul_(gq, na))
        nc = self._nonlinear(a.mul_(e2).addcmul_(gq2, nb).addcmul_(gq, nv, value=-1))
        out = e * v
        return out.addcmul_(gf1, nv).addcmul_(gf2, na.add_(nb)).addcmul_(gf3, nc)

    def _start(self, u: torch.Tensor) -> torch.Tensor:
        return torch.fft.rfft(u[:, 0]).mul_(self._keep)

    def _advance(self, s: torch.Tensor, n_steps: int) -> torch.Tensor:
        for _ in range(n_steps):
            s = self._step_hat(s)
        return s

    def _frame(self, s: torch.Tensor) -> torch.Tensor:
        return torch.fft.irfft(s, n=self.n)[:, None]
