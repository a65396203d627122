"""Radially binned error spectra and the Fourier-band reduction of PDEBench's fRMSE, in numpy.

The lower layer of :mod:`pdeflow.tasks.metrics`: these functions take an error field
``err = pred - true`` that the caller has already checked (same shapes, float64). The public
entry points that take ``pred`` and ``true`` are ``metrics.error_spectrum`` and ``metrics.frmse``.

Convention (PDEBench, Takamoto et al. 2022, "PDEBench: An Extensive Benchmark for Scientific
Machine Learning", ``metric_func`` in ``pdebench/models/metrics.py``): the per-bin value is

    E_b = (prod_d L_d / N) * sqrt( sum_{k in bin b} |hat(err)_k|^2 )

with ``hat(err) = fftn(err)`` over the spatial axes (unnormalised forward transform),
``N = prod_d n_d`` grid points, ``L_d`` the domain lengths and the bin of an integer wavenumber
vector ``k`` equal to ``floor(|k|)``, ``|k| = sqrt(sum_d k_d^2)``. Each conjugate pair
``{k, -k}`` of a real field is counted once (self-conjugate ``k``, those with every component 0
or the Nyquist index, count once too). Band values are the plain mean of ``E_b`` over the bins
of the band.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: PDEBench's band edges, ``metric_func(..., iLow=4, iHigh=12)``: the bands are the bin slices
#: ``[:4]`` (low: bins 0-3), ``[4:12]`` (mid: bins 4-11) and ``[12:]`` (high: bins 12 to the last).
I_LOW = 4
I_HIGH = 12
#: Names of the three bands, in the order of the last axis of ``band_means``.
FRMSE_BANDS = ("low", "mid", "high")


def _lengths(domain_lengths: float | Sequence[float], n_space_dims: int) -> np.ndarray:
    lengths = np.asarray(domain_lengths, dtype=np.float64)
    if lengths.ndim > 1 or (lengths.ndim == 1 and lengths.size != n_space_dims):
        raise ValueError(
            f"domain_lengths must be a number or {n_space_dims} numbers, got {domain_lengths!r}"
        )
    lengths = np.broadcast_to(lengths, (n_space_dims,))
    if not np.all(np.isfinite(lengths) & (lengths > 0)):
        raise ValueError(f"domain_lengths must be positive and finite, got {domain_lengths!r}")
    return lengths


def _radial_bins(space: tuple[int, ...]) -> np.ndarray:
    """``floor(|k|)`` of the signed integer wavenumber at each grid point, shape ``space``."""
    ks = np.meshgrid(*[np.fft.fftfreq(n, d=1.0 / n) for n in space], indexing="ij")
    k2 = np.rint(sum(k**2 for k in ks)).astype(np.int64)
    # sqrt is correctly rounded, so perfect squares land exactly on their integer root.
    return np.floor(np.sqrt(k2)).astype(np.int64)


def _pair_weights(space: tuple[int, ...]) -> np.ndarray:
    """1 where ``k == -k`` (mod the grid) on every axis, else 1/2; shape ``space``.

    For a real field ``|hat(err)_k| = |hat(err)_{-k}|``, so summing ``w_k |hat(err)_k|^2`` over
    the full spectrum counts each conjugate pair once. In 1D this is exactly the ``rfft`` half
    spectrum PDEBench uses.
    """
    self_conj = np.ones(space, dtype=bool)
    for axis, n in enumerate(space):
        idx = np.arange(n)
        on_axis = (idx == 0) | (2 * idx == n)
        self_conj &= on_axis.reshape([n if a == axis else 1 for a in range(len(space))])
    return np.where(self_conj, 1.0, 0.5)


def radial_error_spectrum(
    err: np.ndarray, n_space_dims: int, domain_lengths: float | Sequence[float] = 1.0
) -> np.ndarray:
    """Radially binned Fourier amplitude ``E_b`` of an error field (formula in the module doc).

    Bins run over ``b = 0 .. min_d(n_d) // 2``: in 1D every ``rfft`` mode is its own bin, as in
    PDEBench. Modes with ``floor(|k|)`` beyond the last bin (the corners of a 2D/3D spectrum) are
    left out, as in PDEBench.

    Args:
        err: Real error field ``(*leading, *space)``, float64.
        n_space_dims: Number of trailing spatial axes.
        domain_lengths: Domain length per spatial axis (one number for all axes), in the units of
            the grid; the result scales with their product.

    Returns:
        float64 array ``(*leading, min(space) // 2 + 1)``, in the units of ``err`` times the
        domain volume.
    """
    lengths = _lengths(domain_lengths, n_space_dims)
    space = err.shape[-n_space_dims:]
    n_bins = min(space) // 2 + 1
    spec = np.fft.fftn(err, axes=tuple(range(-n_space_dims, 0)))
    power = (spec.real**2 + spec.imag**2) * _pair_weights(space)
    flat = power.reshape(*err.shape[:-n_space_dims], -1)
    bins = _radial_bins(space).ravel()
    keep = np.flatnonzero(bins < n_bins)
    order = keep[np.argsort(bins[keep], kind="stable")]
    sorted_bins = bins[order]
    # Every bin b <= min(space) // 2 holds at least the axis mode (b, 0, ...), so no slice of
    # reduceat is empty (an empty one would return a single element instead of 0).
    starts = np.searchsorted(sorted_bins, np.arange(n_bins))
    sums = np.add.reduceat(flat[..., order], starts, axis=-1)
    return np.sqrt(sums) * float(np.prod(lengths)) / float(np.prod(space))


def band_means(spectrum: np.ndarray, i_low: int = I_LOW, i_high: int = I_HIGH) -> np.ndarray:
    """Mean of a binned spectrum over PDEBench's low, mid and high bands.

    Bands are the bin slices ``[0, i_low)``, ``[i_low, i_high)`` and ``[i_high, n_bins)``. A band
    with no bins (a grid too coarse to reach it, e.g. high with ``min(space) // 2 < i_high``) is
    ``nan``: the metric is not defined there, and 0 would read as a perfect score.

    Args:
        spectrum: Binned spectrum ``(*leading, n_bins)``.
        i_low: First bin of the mid band.
        i_high: First bin of the high band.

    Returns:
        float64 array ``(*leading, 3)``: low, mid, high.
    """
    if not 0 < i_low < i_high:
        raise ValueError(f"band edges must satisfy 0 < i_low < i_high, got {i_low}, {i_high}")
    n_bins = spectrum.shape[-1]
    out = np.full((*spectrum.shape[:-1], 3), np.nan)
    for i, (lo, hi) in enumerate(((0, i_low), (i_low, i_high), (i_high, n_bins))):
        if min(hi, n_bins) > lo:
            out[..., i] = np.mean(spectrum[..., lo:hi], axis=-1)
    return out
