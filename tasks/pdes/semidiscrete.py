r"""The semi-discrete form of a 1D periodic pseudo-spectral PDE, for intrusive reduced models.

A solver of ``pdeflow.tasks.pdes.spectral1d`` integrates, on the span of its kept Fourier modes,

.. math::

    \frac{du}{dt} = L u + B\, g(u), \qquad
    L = \sum_q \theta_q(\mu) L_q, \quad B = \sum_q \theta_q(\mu) B_q,

where each :math:`L_q`, :math:`B_q` is a Fourier multiplier on the periodic grid (a diagonal
operator on the ``rfft`` modes: a derivative, a rate), each factor :math:`\theta_q(\mu)` a
monomial :math:`\prod_c \mu_c^{p_c}` of the coefficients, and ``g`` a polynomial applied point
by point. Burgers has :math:`L = \nu \partial_{xx}`, :math:`B = -\tfrac12 \partial_x` and
:math:`g(u) = u^2`; Allen-Cahn :math:`L = \varepsilon^2 \partial_{xx}`, ``B`` the identity and
:math:`g(u) = u - u^3`. ``B`` includes the solver's dealiasing: it zeroes the cut modes, so the
state never leaves the kept span.

A reduced model turns each term into a small matrix once (apply the multiplier to the basis),
keeps one matrix per factor so that a new parameter needs no full-size work, and samples ``g`` at
a few points (DEIM) because it is pointwise.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

__all__ = ["SemiDiscrete", "Term", "affine_terms", "check_polynomial"]

# Relative mismatch above which the affine model of an operator, or the polynomial of a
# nonlinearity, is rejected: both reproduce the solver's own formulas, which differ from them
# by rounding only (a few ulps of the largest entry); a wrong power or coefficient gives O(1).
_MATCH_TOL = 1e-12
# Values of the factors theta at which an affine model is checked (besides the instance's own
# coefficients): generic, neither 0 nor 1, distinct per coefficient, so that a wrong power or
# a product of two coefficients shows.
_PROBES = (0.37, 1.9, 0.011)


@dataclass(frozen=True)
class Term:
    """One affine term: the monomial ``prod_c coefficient_c ** powers[c]`` times a multiplier.

    Attributes:
        powers: Power of each coefficient in the factor; empty for a constant term.
        multiplier: Fourier multiplier on the ``rfft`` modes, complex128 of shape (n_modes,),
            units 1/time for ``L`` (that of the operator once the factor is applied).
    """

    powers: Mapping[str, float]
    multiplier: np.ndarray

    def factor(self, coefficients: Mapping[str, np.ndarray]) -> np.ndarray:
        """The factor for each sample, shape (n,) float64 (1.0 for a constant term).

        Args:
            coefficients: Each coefficient named in ``powers``, shape (n,) or scalar.
        """
        out = np.ones(1)
        for name, power in self.powers.items():
            out = out * np.asarray(coefficients[name], dtype=np.float64).reshape(-1) ** power
        return out


@dataclass(frozen=True)
class SemiDiscrete:
    """``du/dt = L u + B g(u)`` on a periodic grid of ``n`` points (module docstring).

    Attributes:
        name: The PDE's registry name.
        n: Grid points; the state is (..., n), float64.
        length: Side of the periodic domain.
        keep: Kept ``rfft`` modes, bool (n_modes,): the state lies in their span.
        linear: Terms of ``L``.
        gain: Terms of ``B`` (zero on the cut modes); empty for a linear PDE.
        polynomial: ``g(u) = sum_j polynomial[j] u^j``; empty for a linear PDE.
        coefficients: The solver instance's coefficient values, each float64 (1,) or (batch,).
    """

    name: str
    n: int
    length: float
    keep: np.ndarray
    linear: tuple[Term, ...]
    gain: tuple[Term, ...]
    polynomial: tuple[float, ...]
    coefficients: Mapping[str, np.ndarray]

    @property
    def n_modes(self) -> int:
        return self.n // 2 + 1

    @property
    def is_linear(self) -> bool:
        return not self.polynomial

    def multiplier(
        self, terms: tuple[Term, ...], coefficients: Mapping[str, np.ndarray] | None = None
    ) -> np.ndarray:
        """Sum of ``terms`` at ``coefficients``: complex128 (n, n_modes), n samples (or 1).

        Args:
            terms: ``self.linear`` or ``self.gain``.
            coefficients: Values per coefficient, scalar or (n,); those not given are the
                instance's.
        """
        values = {**self.coefficients, **(coefficients or {})}
        out = np.zeros((1, self.n_modes), dtype=np.complex128)
        for term in terms:
            out = out + term.factor(values)[:, None] * term.multiplier
        return out

    def apply(self, multiplier: np.ndarray, u: np.ndarray) -> np.ndarray:
        """A multiplier (n_modes,) or (batch, n_modes) applied to real states (..., n)."""
        return np.fft.irfft(multiplier * np.fft.rfft(u, axis=-1), n=self.n, axis=-1)

    def apply_transpose(self, multiplier: np.ndarray, u: np.ndarray) -> np.ndarray:
        """The transpose (real adjoint) of ``apply(multiplier, .)`` applied to states (..., n).

        ``apply`` is a real circulant matrix ``C``; ``C^T`` is the circulant of the conjugate
        of the spectrum of its first column. That spectrum, not ``multiplier``, is used: the
        real inverse FFT drops the imaginary part of a multiplier at ``k = 0`` and Nyquist.
        """
        first = self.apply(multiplier, np.eye(1, self.n)[0])
        return self.apply(np.conj(np.fft.rfft(first)), u)

    def pointwise(self, u: np.ndarray) -> np.ndarray:
        """``g(u)`` by Horner's rule, same shape as ``u``; zeros for a linear PDE."""
        out = np.zeros_like(u, dtype=np.float64)
        for c in reversed(self.polynomial):
            out = out * u + c
        return out

    def dealias(self, u: np.ndarray) -> np.ndarray:
        """Project states (..., n) onto the kept modes, as the solver does before its first step."""
        return self.apply(self.keep.astype(np.complex128), u)

    def rhs(self, u: np.ndarray, coefficients: Mapping[str, np.ndarray] | None = None):
        """``L u + B g(u)`` for states projected onto the kept modes; the shape of ``u``.

        Args:
            u: States, shape (batch, n) or (n,).
            coefficients: As in :meth:`multiplier`, scalar or one per state.
        """
        u = self.dealias(np.asarray(u, dtype=np.float64))
        out = self.apply(self.multiplier(self.linear, coefficients), u)
        if not self.is_linear:
            out = out + self.apply(self.multiplier(self.gain, coefficients), self.pointwise(u))
        return out[0] if u.ndim == 1 and len(out) == 1 else out


def affine_terms(
    operator: Callable[[dict[str, float]], np.ndarray],
    names: tuple[str, ...],
    powers: Mapping[str, float],
    checks: tuple[dict[str, float], ...] = (),
) -> tuple[Term, ...]:
    """The terms of an operator affine in ``theta_c = mu_c ** powers[c]`` (default power 1).

    The constant term is the operator at every ``theta = 0``, the term of ``c`` the operator at
    ``theta_c = 1`` (the others 0) minus the constant; zero terms are dropped. The model is then
    checked at probe values and at ``checks`` (e.g. the instance's coefficients).

    Args:
        operator: Coefficient values -> multiplier, complex (n_modes,).
        names: Every coefficient the operator may read.
        powers: Power of a coefficient inside ``theta`` where it is not 1 (``eps``: 2).
        checks: Further coefficient values at which the model must match.

    Raises:
        ValueError: The operator is not affine in the ``theta``: the message names the PDE's
            ``_affine_powers`` to fix.
    """
    power = {c: float(powers.get(c, 1.0)) for c in names}
    zero = {c: 0.0 for c in names}
    base = operator(zero)
    terms = [Term({}, base)] if np.any(base) else []
    for c in names:
        part = operator({**zero, c: 1.0}) - base
        if np.any(part):
            terms.append(Term({c: power[c]}, part))
    probe = {c: _PROBES[i % len(_PROBES)] ** (1 / power[c]) for i, c in enumerate(names)}
    for values in (probe, *checks):
        model = sum((t.factor(values) * t.multiplier for t in terms), np.zeros_like(base))
        exact = operator(values)
        scale = max(np.abs(exact).max(), np.abs(model).max(), 1e-300)
        if np.abs(model - exact).max() > _MATCH_TOL * scale:
            raise ValueError(
                f"operator is not affine in {power} (coefficient powers); declare the right "
                "powers in the PDE's _affine_powers"
            )
    return tuple(terms)


def check_polynomial(pointwise: Callable[[np.ndarray], np.ndarray], polynomial: tuple) -> None:
    """Raise ValueError unless ``pointwise`` equals the polynomial on test values in [-2, 2]."""
    u = np.linspace(-2.0, 2.0, 41)
    expected = np.polynomial.polynomial.polyval(u, np.asarray(polynomial, dtype=np.float64))
    got = pointwise(u.copy())
    scale = np.abs(expected).max()
    if np.abs(got - expected).max() > _MATCH_TOL * max(scale, 1.0):
        raise ValueError(f"_polynomial {tuple(polynomial)} does not match the solver's _pointwise")
