"""Error metrics for predicted fields, in numpy.

Inputs follow the project layout ``(sample, time, channel, *space)`` (any leading axes work).
All reductions are done in float64 and return float64 arrays.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike

#: Floor on the reference norm. It only matters for an all-zero reference: an exact prediction
#: then scores 0 instead of nan, and a wrong one a huge finite value instead of inf. It is far
#: below the norm of any field stored in float32 or float64 that is not identically zero.
EPS = 1e-30


def _pair(pred: ArrayLike, true: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred, dtype=np.float64)
    true = np.asarray(true, dtype=np.float64)
    # No broadcasting: a (S, T, N) vs (S, T, C, N) mix-up must fail, not average silently.
    if pred.shape != true.shape:
        raise ValueError(f"pred and true shapes differ: {pred.shape} vs {true.shape}")
    return pred, true


def relative_l2(pred: ArrayLike, true: ArrayLike, axes: int | Sequence[int]) -> np.ndarray:
    """Relative L2 error ``||pred - true||_2 / max(||true||_2, EPS)`` reduced over ``axes``.

    Args:
        pred: Prediction, any shape.
        true: Reference, same shape as ``pred``.
        axes: Axis or axes to reduce (negative values count from the end).

    Returns:
        float64 array of the remaining axes (0-d if all are reduced).
    """
    pred, true = _pair(pred, true)
    axes = (axes,) if isinstance(axes, int) else tuple(axes)
    err = np.sqrt(np.sum((pred - true) ** 2, axis=axes))
    ref = np.sqrt(np.sum(true**2, axis=axes))
    return err / np.maximum(ref, EPS)


def nrmse(pred: ArrayLike, true: ArrayLike, n_space_dims: int = 1) -> np.ndarray:
    """Normalised RMSE of PDEBench (Takamoto et al. 2022, "PDEBench: An Extensive Benchmark for
    Scientific Machine Learning"): ``||pred - true||_2 / ||true||_2`` over the spatial axes.

    The RMSE and the RMS of the reference share the grid-size factor, so this is the relative L2
    error per leading index, e.g. per (sample, time, channel) for ``(S, T, C, X)`` input.

    Input or conditioning frames (the initial condition of a rollout, the frames a model is fed)
    must be sliced away by the caller, e.g. ``nrmse(pred[:, 1:], true[:, 1:])``: they are exact
    by construction, and averaging their zeros in would understate the prediction error.

    Args:
        pred: Prediction ``(*leading, *space)``.
        true: Reference of the same shape.
        n_space_dims: Number of trailing spatial axes (1 for x, 2 for x and y, ...).

    Returns:
        float64 array of shape ``leading``; dimensionless.
    """
    if n_space_dims < 1 or n_space_dims > np.ndim(pred):
        raise ValueError(f"n_space_dims={n_space_dims} does not fit pred.ndim={np.ndim(pred)}")
    return relative_l2(pred, true, axes=tuple(range(-n_space_dims, 0)))


def max_error(
    pred: ArrayLike, true: ArrayLike, axes: int | Sequence[int] | None = None
) -> np.ndarray:
    """Maximum absolute error ``max |pred - true|`` over ``axes``.

    Args:
        pred: Prediction, any shape.
        true: Reference, same shape as ``pred``.
        axes: Axis or axes to reduce; ``None`` reduces all.

    Returns:
        float64 array of the remaining axes, in the units of the inputs.
    """
    pred, true = _pair(pred, true)
    axis = axes if axes is None or isinstance(axes, int) else tuple(axes)
    return np.asarray(np.max(np.abs(pred - true), axis=axis))
