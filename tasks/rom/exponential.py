r"""ETDRK4 for small dense systems ``a' = A a + W n(a)``: the reduced models' time stepper.

The scheme is that of Cox & Matthews (2002), J. Comput. Phys. 176, 430-455, which the 1D
solvers use with a diagonal ``A`` (``pdeflow.tasks.pdes.etdrk4``); here ``A`` is a dense
(r, r) matrix, a Galerkin projection of a stiff operator, and its functions

.. math::

    \varphi_0(z) = e^z, \quad \varphi_1(z) = \frac{e^z - 1}{z}, \quad
    \varphi_2(z) = \frac{e^z - 1 - z}{z^2}, \quad
    \varphi_3(z) = \frac{e^z - 1 - z - z^2/2}{z^3}

come from one matrix exponential of an augmented matrix: for
:math:`M = \begin{pmatrix} hA & I & 0 & 0 \\ 0 & 0 & I & 0 \\ 0 & 0 & 0 & I \\ 0 & 0 & 0 & 0
\end{pmatrix}` the first block row of :math:`e^M` is
:math:`(\varphi_0, \varphi_1, \varphi_2, \varphi_3)(hA)` (Sidje 1998, ACM TOMS 24(1), 130-156,
Theorem 1; Al-Mohy & Higham 2011, SIAM J. Sci. Comput. 33(2), 488-511). ``scipy.linalg.expm``
(scaling and squaring) evaluates it without the cancellation of the closed forms near
:math:`z = 0` that the solvers avoid by contour integrals. With these, the scheme's weights are

.. math::

    Q = \tfrac h2 \varphi_1(hA/2), \quad f_1 = h(\varphi_1 - 3\varphi_2 + 4\varphi_3), \quad
    f_2 = h(\varphi_2 - 2\varphi_3), \quad f_3 = h(4\varphi_3 - \varphi_2),

the closed forms of ``pdeflow.tasks.pdes.etdrk4`` rewritten in :math:`\varphi_k`. The linear
part is integrated exactly, so the step is stable for any ``h`` when ``A`` is dissipative
(a Galerkin projection of diffusion is symmetric negative semi-definite); only the explicit
nonlinear part limits ``h``, as in the solver.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import scipy.linalg

__all__ = ["EtdWeights", "etdrk4_step", "etdrk4_weights", "phi_functions"]


class EtdWeights(NamedTuple):
    """ETDRK4 weights per sample; the nonlinear ones already multiplied by ``W``.

    Attributes:
        e2: :math:`e^{hA/2}`, (n, r, r).
        q: ``Q W``, (n, r, m), time units; None without a nonlinear term.
        last: ``[e^{hA}, f_1 W, 2 f_2 W, f_3 W]`` side by side, (n, r, r + 3m): the final
            stage in one product (``e^{hA}`` alone without a nonlinear term).
    """

    e2: np.ndarray
    q: np.ndarray | None
    last: np.ndarray


def phi_functions(a: np.ndarray, order: int) -> list[np.ndarray]:
    """``[phi_0(a), ..., phi_order(a)]`` of square matrices, by one augmented exponential.

    Args:
        a: Matrices, shape (..., r, r), real and finite.
        order: Highest ``k`` (>= 0).

    Returns:
        ``order + 1`` arrays of the shape of ``a`` (module docstring).
    """
    a = np.asarray(a, dtype=np.float64)
    r = a.shape[-1]
    big = np.zeros((*a.shape[:-2], r * (order + 1), r * (order + 1)))
    big[..., :r, :r] = a
    eye = np.eye(r)
    for k in range(order):
        big[..., k * r : (k + 1) * r, (k + 1) * r : (k + 2) * r] = eye
    top = scipy.linalg.expm(big)[..., :r, :]
    return [top[..., k * r : (k + 1) * r] for k in range(order + 1)]


def etdrk4_weights(linear: np.ndarray, gain: np.ndarray | None, h: float) -> EtdWeights:
    """The ETDRK4 weights of ``a' = A a + W n(a)`` for step ``h``, per sample.

    Args:
        linear: ``A``, shape (n, r, r), units 1/time.
        gain: ``W``, shape (n, r, m), or None without a nonlinear term.
        h: Step > 0, time units.

    Returns:
        The weights (``EtdWeights``).
    """
    if gain is None:
        return EtdWeights(scipy.linalg.expm(h * linear / 2), None, scipy.linalg.expm(h * linear))
    e, p1, p2, p3 = phi_functions(h * linear, 3)
    e2, p1_half = phi_functions(h * linear / 2, 1)
    f1 = h * (p1 - 3 * p2 + 4 * p3)
    f2 = h * (p2 - 2 * p3)
    f3 = h * (4 * p3 - p2)
    last = np.concatenate([e, f1 @ gain, 2 * f2 @ gain, f3 @ gain], axis=-1)
    return EtdWeights(e2, (h / 2) * p1_half @ gain, last)


def _mv(matrices: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """Per-sample products (n, r, m) x (n, m) -> (n, r)."""
    return (matrices @ vectors[..., None])[..., 0]


def etdrk4_step(
    a: np.ndarray, w: EtdWeights, nonlinear: Callable[[np.ndarray], np.ndarray] | None
) -> np.ndarray:
    """One ETDRK4 step (Cox & Matthews 2002) of states ``a`` (n, r).

    Args:
        a: States, shape (n, r).
        w: Weights from :func:`etdrk4_weights`.
        nonlinear: ``n(a)``, (n, r) -> (n, m); None for a linear system.

    Returns:
        The states after one step, shape (n, r).
    """
    if nonlinear is None:
        return _mv(w.last, a)
    na = nonlinear(a)
    e2a = _mv(w.e2, a)
    s1 = e2a + _mv(w.q, na)
    n1 = nonlinear(s1)
    n2 = nonlinear(e2a + _mv(w.q, n1))
    n3 = nonlinear(_mv(w.e2, s1) + _mv(w.q, 2 * n2 - na))
    return _mv(w.last, np.concatenate([a, na, n1 + n2, n3], axis=-1))
