"""Error metrics for predicted fields, in numpy: the surrogate metric set of PDEBench and The Well.

Inputs follow the project layout ``(sample, time, channel, *space)`` with ``n_space_dims``
trailing spatial axes; the per-entry metrics accept any leading axes ``(*leading, *space)`` and
return one value per leading index (per (sample, time, channel) for a trajectory). All reductions
are done in float64 and return float64 arrays. ``metric_table`` aggregates them over the predicted
frames, for a model and for the persistence baseline.

Sources: PDEBench (Takamoto et al. 2022, "PDEBench: An Extensive Benchmark for Scientific Machine
Learning"): RMSE, nRMSE, max error, cRMSE, bRMSE, fRMSE; The Well (Ohana et al. 2024, "The Well: a
Large-Scale Collection of Diverse Physics Simulations for Machine Learning"): VRMSE.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from numpy.typing import ArrayLike

from pdeflow.tasks.metrics_spectral import (
    FRMSE_BANDS,
    I_HIGH,
    I_LOW,
    band_means,
    radial_error_spectrum,
)

#: Floor on the reference norm. It only matters for an all-zero reference: an exact prediction
#: then scores 0 instead of nan, and a wrong one a huge finite value instead of inf. It is far
#: below the norm of any field stored in float32 or float64 that is not identically zero.
EPS = 1e-30
#: The Well's ``eps`` in VRMSE, added to the variance of the reference (its reference code
#: computes VRMSE as NRMSE with ``norm_mode="std"`` and ``eps=1e-7``).
VRMSE_EPS = 1e-7


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


def _space_axes(pred: np.ndarray, n_space_dims: int) -> tuple[int, ...]:
    if n_space_dims < 1 or n_space_dims > pred.ndim:
        raise ValueError(f"n_space_dims={n_space_dims} does not fit pred.ndim={pred.ndim}")
    return tuple(range(-n_space_dims, 0))


def _trajectories(
    pred: ArrayLike, true: ArrayLike, n_space_dims: int
) -> tuple[np.ndarray, np.ndarray]:
    pred, true = _pair(pred, true)
    if n_space_dims < 1 or pred.ndim != 3 + n_space_dims:
        raise ValueError(
            f"expected (sample, time, channel, *space) with {n_space_dims} spatial axes, "
            f"got shape {pred.shape}"
        )
    return pred, true


def _check_n_input(n_input: int, n_times: int, minimum: int) -> None:
    if not minimum <= n_input < n_times:
        raise ValueError(
            f"n_input={n_input} must be in [{minimum}, {n_times}): at least one predicted frame"
        )


def rmse(pred: ArrayLike, true: ArrayLike, n_space_dims: int = 1) -> np.ndarray:
    """Root mean squared error over space (PDEBench's RMSE, Takamoto et al. 2022).

    ``rmse = sqrt(mean_x (pred - true)^2)``, the mean over the ``N`` grid points of the
    trailing ``n_space_dims`` axes.

    Args:
        pred: Prediction ``(*leading, *space)``.
        true: Reference of the same shape.
        n_space_dims: Number of trailing spatial axes.

    Returns:
        float64 array of shape ``leading``, in the units of the inputs.
    """
    pred, true = _pair(pred, true)
    return np.sqrt(np.mean((pred - true) ** 2, axis=_space_axes(pred, n_space_dims)))


def crmse(pred: ArrayLike, true: ArrayLike, n_space_dims: int = 1) -> np.ndarray:
    """Conserved-quantity error of PDEBench (cRMSE, Takamoto et al. 2022), per entry.

    The conserved quantity is the spatial mean ``<u> = (1/|Omega|) int_Omega u dx``, on the grid
    ``(1/N) sum_x u(x)`` (PDEBench: the sum over the grid divided by ``N``). Per entry the value is
    ``|<pred> - <true>|``; cRMSE proper is the RMS of that over samples,
    ``sqrt(mean_s (<pred>_s - <true>_s)^2)``, which ``metric_table`` takes before averaging
    over time and channels, as PDEBench does.

    Args:
        pred: Prediction ``(*leading, *space)``.
        true: Reference of the same shape.
        n_space_dims: Number of trailing spatial axes.

    Returns:
        float64 array of shape ``leading``, in the units of the inputs.
    """
    pred, true = _pair(pred, true)
    return np.abs(np.mean(pred - true, axis=_space_axes(pred, n_space_dims)))


def _boundary_mask(space: tuple[int, ...]) -> np.ndarray:
    mask = np.zeros(space, dtype=bool)
    for axis in range(len(space)):
        edge = [slice(None)] * len(space)
        for end in (0, -1):
            edge[axis] = end
            mask[tuple(edge)] = True
    return mask


def brmse(pred: ArrayLike, true: ArrayLike, n_space_dims: int = 1) -> np.ndarray:
    """Boundary RMSE of PDEBench (bRMSE, Takamoto et al. 2022).

    ``brmse = sqrt(mean_{x in B} (pred - true)^2)`` over the boundary set ``B``: the grid points
    whose index is first or last along at least one spatial axis, each counted once.

    - 1D ``(nx,)``: the two end points, ``|B| = 2``.
    - 2D ``(nx, ny)``: the perimeter ring (rows ``x=0``, ``x=-1``, columns ``y=0``, ``y=-1``),
      ``|B| = 2 nx + 2 ny - 4``; PDEBench divides by ``2 nx + 2 ny`` and counts the 4 corners
      twice.
    - 3D ``(nx, ny, nz)``: the six faces, ``|B| = nx ny nz - (nx-2)(ny-2)(nz-2)``; PDEBench
      counts edges twice and corners three times.

    An axis with fewer than 3 points has no interior, so every point on it is a boundary point.

    Args:
        pred: Prediction ``(*leading, *space)``.
        true: Reference of the same shape.
        n_space_dims: Number of trailing spatial axes.

    Returns:
        float64 array of shape ``leading``, in the units of the inputs.
    """
    pred, true = _pair(pred, true)
    axes = _space_axes(pred, n_space_dims)
    mask = _boundary_mask(pred.shape[axes[0] :])
    return np.sqrt(np.mean(((pred - true) ** 2)[..., mask], axis=-1))


def vrmse(
    pred: ArrayLike,
    true: ArrayLike,
    n_space_dims: int = 1,
    eps: float = VRMSE_EPS,
    ddof: int = 0,
) -> np.ndarray:
    """Variance-scaled RMSE of The Well (VRMSE, Ohana et al. 2024).

    ``vrmse = sqrt( mean_x (pred - true)^2 / (var_x(true) + eps) )`` over space, per entry, with
    ``var_x(true) = sum_x (true - mean_x true)^2 / (N - ddof)``. Predicting the spatial mean of
    the reference scores ``sqrt(var / (var + eps))``, i.e. 1 up to ``eps``.

    The paper's formula divides by ``N`` (``ddof=0``, the default); The Well's code takes
    ``torch.std(y) ** 2``, which divides by ``N - 1``: pass ``ddof=1`` to reproduce its numbers
    exactly (they differ by the factor ``sqrt((N - 1) / N)``). ``eps`` is The Well's 1e-7 and is
    added to the variance, so a reference with variance near or below 1e-7 (a nearly uniform
    field) is scored against ``eps`` instead.

    Args:
        pred: Prediction ``(*leading, *space)``.
        true: Reference of the same shape.
        n_space_dims: Number of trailing spatial axes.
        eps: Added to the variance, in the squared units of the inputs.
        ddof: Delta degrees of freedom of the variance (0 or 1).

    Returns:
        float64 array of shape ``leading``; dimensionless.
    """
    pred, true = _pair(pred, true)
    axes = _space_axes(pred, n_space_dims)
    mse = np.mean((pred - true) ** 2, axis=axes)
    return np.sqrt(mse / (np.var(true, axis=axes, ddof=ddof) + eps))


def error_spectrum(
    pred: ArrayLike,
    true: ArrayLike,
    n_space_dims: int = 1,
    domain_lengths: float | Sequence[float] = 1.0,
) -> np.ndarray:
    """Radially binned Fourier amplitude of the error, the per-bin quantity of PDEBench's fRMSE.

    ``E_b = (prod_d L_d / N) sqrt( sum_{k: floor(|k|) = b} |F[pred - true]_k|^2 )`` for
    ``b = 0 .. min_d(n_d) // 2``, with ``F`` the unnormalised FFT over space, ``|k|`` the radial
    integer wavenumber and each conjugate pair ``{k, -k}`` counted once; in 1D exactly PDEBench's
    ``|rfft(pred - true)_k| * L / N``. PDEBench's 2D/3D loop visits only ``0 <= k_d < n_d / 2``
    and so misses mixed-sign modes such as ``(1, -1)`` and the last bin; both count here. Details
    in :mod:`pdeflow.tasks.metrics_spectral`.

    Args:
        pred: Prediction ``(*leading, *space)``.
        true: Reference of the same shape.
        n_space_dims: Number of trailing spatial axes.
        domain_lengths: Domain length per spatial axis, or one for all.

    Returns:
        float64 array ``(*leading, min(space) // 2 + 1)``, in the units of the inputs times the
        domain volume.
    """
    pred, true = _pair(pred, true)
    _space_axes(pred, n_space_dims)
    return radial_error_spectrum(pred - true, n_space_dims, domain_lengths)


def frmse(
    pred: ArrayLike,
    true: ArrayLike,
    n_space_dims: int = 1,
    domain_lengths: float | Sequence[float] = 1.0,
    i_low: int = I_LOW,
    i_high: int = I_HIGH,
) -> np.ndarray:
    """Fourier-space RMSE of PDEBench in low, mid and high bands (fRMSE, Takamoto et al. 2022).

    ``frmse_band = mean_{b in band} E_b`` with ``E_b`` from :func:`error_spectrum`. The bands are
    PDEBench's (``iLow=4``, ``iHigh=12``): low = bins 0-3, mid = bins 4-11, high = bins 12 to
    ``min(space) // 2``, where bin ``b`` holds the modes with ``floor(|k|) = b`` (``|k|`` along
    the axis in 1D, radial in 2D/3D). A band the grid does not reach is ``nan``. Per entry;
    ``metric_table`` takes PDEBench's aggregate (RMS of ``E_b`` over samples, then the band mean,
    then the mean over time and channels).

    Known answers: an offset ``c`` gives low = ``c prod L / 4``, mid = high = 0; a mode
    ``A cos(2 pi k.x / L)`` with ``floor(|k|)`` in band ``m`` gives ``A prod L / (2 n_m)`` in that
    band (``n_m`` its number of bins; twice that for a self-conjugate mode such as the 1D Nyquist
    mode) and 0 in the others.

    Args:
        pred: Prediction ``(*leading, *space)``.
        true: Reference of the same shape.
        n_space_dims: Number of trailing spatial axes.
        domain_lengths: Domain length per spatial axis, or one for all.
        i_low: First bin of the mid band.
        i_high: First bin of the high band.

    Returns:
        float64 array ``(*leading, 3)``: low, mid, high (the order of ``FRMSE_BANDS``).
    """
    return band_means(error_spectrum(pred, true, n_space_dims, domain_lengths), i_low, i_high)


def rollout_curve(
    pred: ArrayLike,
    true: ArrayLike,
    metric: Callable[..., np.ndarray] = nrmse,
    n_input: int = 1,
    n_space_dims: int = 1,
) -> np.ndarray:
    """Per-time-step error curve of a rollout, averaged over samples and channels.

    ``curve[t - n_input] = mean_{s, c} metric(pred, true)[s, t, c]`` for the predicted frames
    ``t = n_input .. T-1``. The first ``n_input`` frames are the model's inputs, exact by
    construction, and are never counted (PDEBench issue #41: its rollout errors once averaged the
    initial frames in).

    Args:
        pred: Predicted trajectories ``(sample, time, channel, *space)``.
        true: Reference trajectories of the same shape.
        metric: Per-entry metric called as ``metric(pred, true, n_space_dims=n_space_dims)``,
            returning ``(sample, time, channel, *extra)``, e.g. ``rmse``, ``vrmse`` or ``frmse``.
        n_input: Number of input frames at the start of each trajectory, ``0 <= n_input < T``.
        n_space_dims: Number of trailing spatial axes.

    Returns:
        float64 array ``(T - n_input, *extra)``.
    """
    pred, true = _trajectories(pred, true, n_space_dims)
    _check_n_input(n_input, true.shape[1], minimum=0)
    values = np.asarray(
        metric(pred[:, n_input:], true[:, n_input:], n_space_dims=n_space_dims), dtype=np.float64
    )
    return np.mean(values, axis=(0, 2))


def persistence(true: ArrayLike, n_input: int = 1) -> np.ndarray:
    """Persistence baseline: every predicted frame is the last input frame.

    ``baseline[:, t] = true[:, t]`` for the inputs ``t < n_input`` and ``true[:, n_input - 1]``
    for ``t >= n_input``. A surrogate that does not beat it has learned no dynamics.

    Args:
        true: Reference trajectories ``(sample, time, channel, *space)``.
        n_input: Number of input frames, ``1 <= n_input < T``.

    Returns:
        float64 array of the shape of ``true``.
    """
    true = np.asarray(true, dtype=np.float64)
    if true.ndim < 4:
        raise ValueError(f"expected (sample, time, channel, *space), got shape {true.shape}")
    _check_n_input(n_input, true.shape[1], minimum=1)
    baseline = np.repeat(true[:, n_input - 1 : n_input], true.shape[1], axis=1)
    baseline[:, :n_input] = true[:, :n_input]
    return baseline


def _aggregate_scores(
    pred: np.ndarray,
    true: np.ndarray,
    n_space_dims: int,
    domain_lengths: float | Sequence[float],
) -> dict[str, float]:
    space = _space_axes(pred, n_space_dims)
    scores = {
        "rmse": float(np.mean(rmse(pred, true, n_space_dims))),
        "nrmse": float(np.mean(nrmse(pred, true, n_space_dims))),
        "max_error": float(np.mean(np.max(max_error(pred, true, axes=space), axis=0))),
        "crmse": float(np.mean(np.sqrt(np.mean(crmse(pred, true, n_space_dims) ** 2, axis=0)))),
        "brmse": float(np.mean(brmse(pred, true, n_space_dims))),
        "vrmse": float(np.mean(vrmse(pred, true, n_space_dims))),
    }
    spectrum = error_spectrum(pred, true, n_space_dims, domain_lengths)
    bands = band_means(np.sqrt(np.mean(spectrum**2, axis=0)))
    for i, band in enumerate(FRMSE_BANDS):
        scores[f"frmse_{band}"] = float(np.mean(bands[..., i]))
    return scores


def metric_table(
    pred: ArrayLike,
    true: ArrayLike,
    n_input: int = 1,
    n_space_dims: int = 1,
    domain_lengths: float | Sequence[float] = 1.0,
) -> dict[str, dict[str, float]]:
    """All metrics of this module for a model and for the persistence baseline.

    Only the predicted frames ``t >= n_input`` are scored. Aggregation over
    (sample, time, channel) follows PDEBench (``metric_func``): rmse, nrmse, brmse and vrmse are
    the mean of the per-entry values; max_error is the max over space and samples, then the mean
    over time and channels; crmse is the RMS over samples of the spatial-mean error, then the
    mean over time and channels; fRMSE takes the RMS of ``E_b`` over samples, the band means, then
    the mean over time and channels (entries ``frmse_low``, ``frmse_mid``, ``frmse_high``; ``nan``
    for a band the grid does not reach).

    Args:
        pred: Predicted trajectories ``(sample, time, channel, *space)``; its first ``n_input``
            frames are ignored.
        true: Reference trajectories of the same shape.
        n_input: Number of input frames, ``1 <= n_input < T`` (persistence needs one).
        n_space_dims: Number of trailing spatial axes.
        domain_lengths: Domain length per spatial axis (or one for all), for fRMSE.

    Returns:
        ``{metric_name: {"model": value, "persistence": value}}`` with float values, for
        ``rmse, nrmse, max_error, crmse, brmse, vrmse, frmse_low, frmse_mid, frmse_high``.
    """
    pred, true = _trajectories(pred, true, n_space_dims)
    _check_n_input(n_input, true.shape[1], minimum=1)
    target = true[:, n_input:]
    model = _aggregate_scores(pred[:, n_input:], target, n_space_dims, domain_lengths)
    baseline = persistence(true, n_input)[:, n_input:]
    base = _aggregate_scores(baseline, target, n_space_dims, domain_lengths)
    return {name: {"model": model[name], "persistence": base[name]} for name in model}
