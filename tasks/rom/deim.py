r"""Discrete empirical interpolation (DEIM) of a nonlinear term from a few of its values.

Chaturantabut & Sorensen (2010), "Nonlinear model reduction via discrete empirical
interpolation", SIAM J. Sci. Comput. 32(5), 2737-2764. Given an orthonormal basis ``U`` of
``m`` nonlinear-term snapshots (a POD), DEIM picks ``m`` grid points ``p`` greedily (their
Algorithm 1) and approximates a vector ``f`` from its values there:

.. math::

    \hat f = U (P^T U)^{-1} P^T f, \qquad
    \| f - \hat f \|_2 \le \| (P^T U)^{-1} \|_2 \, \| (I - U U^T) f \|_2

(their Lemma 3.2). The interpolation is exact on the span of ``U``, and the factor
:math:`\|(P^T U)^{-1}\|_2 \ge 1` measures how much DEIM loses over the best approximation.

As everywhere in ``pdeflow.tasks.rom``, bases are stored as rows: ``modes`` of shape
(m, n_features) is :math:`U^T`, and :math:`P^T U` is ``modes[:, points].T``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["deim_error_factor", "deim_indices", "deim_interpolate"]


def _check_modes(modes: np.ndarray) -> np.ndarray:
    modes = np.asarray(modes, dtype=np.float64)
    if modes.ndim != 2 or not 1 <= modes.shape[0] <= modes.shape[1]:
        raise ValueError(
            f"modes must have shape (m, n_features) with 1 <= m <= n_features, got {modes.shape}"
        )
    if not np.all(np.isfinite(modes)):
        raise ValueError("modes contain NaN or inf")
    return modes


def _check_points(modes: np.ndarray, points: np.ndarray) -> np.ndarray:
    points = np.asarray(points)
    m, n = modes.shape
    if (
        points.shape != (m,)
        or not np.issubdtype(points.dtype, np.integer)
        or np.any(points < 0)
        or np.any(points >= n)
        or len(np.unique(points)) != m
    ):
        raise ValueError(f"points must be {m} distinct integers in [0, {n - 1}], got {points!r}")
    return points


def deim_indices(modes: np.ndarray) -> np.ndarray:
    """The DEIM interpolation points of a basis (Chaturantabut & Sorensen 2010, Algorithm 1).

    The first point is where the first mode is largest in magnitude; point ``l`` is where the
    residual of interpolating mode ``l`` from modes ``0 .. l-1`` at the points so far is
    largest. The residual vanishes at the chosen points, so no point repeats while the modes
    are linearly independent.

    Args:
        modes: Basis as rows, shape (m, n_features), linearly independent (e.g. POD modes).

    Returns:
        Grid indices, int64 of shape (m,), in the order chosen.

    Raises:
        ValueError: ``modes`` is not a finite (m, n) array with ``m <= n``, or its rows are
            linearly dependent (a zero residual leaves no point to pick).
    """
    modes = _check_modes(modes)
    m = modes.shape[0]
    points = np.empty(m, dtype=np.int64)
    points[0] = np.argmax(np.abs(modes[0]))
    for j in range(1, m):
        basis = modes[:j]
        coef = np.linalg.solve(basis[:, points[:j]].T, modes[j, points[:j]])
        residual = modes[j] - coef @ basis
        points[j] = np.argmax(np.abs(residual))
        # A residual at the rounding level of the mode means mode j lies in the span of the
        # earlier ones: its argmax would be noise, and P^T U singular.
        if np.abs(residual[points[j]]) <= 1e-12 * np.abs(modes[j]).max():
            raise ValueError(f"modes are linearly dependent: row {j} is in the span of 0..{j - 1}")
    return points


def deim_interpolate(modes: np.ndarray, points: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The DEIM approximation ``U (P^T U)^{-1} f_p`` from values at the points.

    Args:
        modes: Basis as rows, shape (m, n_features).
        points: Interpolation points, shape (m,), from :func:`deim_indices`.
        values: The function at ``points``, shape (..., m).

    Returns:
        The approximation on the whole grid, shape (..., n_features).
    """
    modes = _check_modes(modes)
    points = _check_points(modes, points)
    values = np.asarray(values, dtype=np.float64)
    if values.shape[-1:] != points.shape:
        raise ValueError(f"values must have shape (..., {len(points)}), got {values.shape}")
    coef = np.linalg.solve(modes[:, points].T, values.reshape(-1, len(points)).T).T
    return (coef @ modes).reshape(*values.shape[:-1], modes.shape[1])


def deim_error_factor(modes: np.ndarray, points: np.ndarray) -> float:
    """``||(P^T U)^{-1}||_2``, the DEIM error bound's factor (Lemma 3.2), >= 1 for orthonormal U.

    Args:
        modes: Orthonormal basis as rows, shape (m, n_features).
        points: Interpolation points, shape (m,).

    Returns:
        The factor, ``1 / sigma_min(P^T U)``; ``inf`` when ``P^T U`` is singular.
    """
    modes = _check_modes(modes)
    points = _check_points(modes, points)
    smallest = np.linalg.svd(modes[:, points], compute_uv=False)[-1]
    return float(np.inf if smallest == 0 else 1.0 / smallest)
