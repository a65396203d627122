"""Seeded random fields on periodic grids: initial conditions and coefficients for the PDEs.

Every generator takes ``seeds``, an integer array of shape (n,), and builds sample ``i`` from
``numpy.random.default_rng(int(seeds[i]))`` alone, through ``seeded_samples``: its random draws,
FFTs, reductions and normalisations run on that one sample, in arrays of its own shape, so a
sample is bitwise the same alone, at any position, in a batch of any size (batch-invariant by
construction). Grids are ``shape = (n_x,)`` or ``(n_x, n_y)`` points
``x_j = j * length / n_x`` on the periodic domain :math:`[0, \\ell)^d`; axis 0 of a sample is
``x``, axis 1 is ``y``. All results are float64 numpy arrays of shape ``(n, *shape)``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable, Sequence

import numpy as np

Shape = Sequence[int]
Draw = Callable[[np.random.Generator], np.ndarray]


def _validate_shape(shape: Shape) -> tuple[int, ...]:
    try:
        dims = tuple(shape)
    except TypeError:
        raise ValueError(f"shape must be a tuple of 1 or 2 grid sizes, got {shape!r}") from None
    ok = len(dims) in (1, 2) and all(
        isinstance(d, numbers.Integral) and not isinstance(d, bool) and d >= 1 for d in dims
    )
    if not ok:
        raise ValueError(f"shape must be a tuple of 1 or 2 integers >= 1, got {shape!r}")
    return tuple(int(d) for d in dims)


def _validate_seeds(seeds: Sequence[int] | np.ndarray) -> np.ndarray:
    values = np.asarray(seeds)
    if values.ndim != 1 or not (values.size == 0 or np.issubdtype(values.dtype, np.integer)):
        raise ValueError(f"seeds must be a 1D array of integers >= 0, got {seeds!r}")
    if values.size and values.min() < 0:
        raise ValueError(f"seeds must be integers >= 0, got minimum {values.min()}")
    return values


def _validate_real(name: str, value: float, *, low: float | None = None, strict: bool = True):
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if strict else value >= low
    if not ok:
        bound = "" if low is None else f" {'>' if strict else '>='} {low:g}"
        raise ValueError(f"{name} must be a finite number{bound}, got {value!r}")


def _validate_interval(name: str, interval: tuple[float, float], *, strict: bool) -> None:
    try:
        low, high = (float(v) for v in interval)
    except (TypeError, ValueError):
        raise ValueError(
            f"{name} must be a pair (low, high) of numbers, got {interval!r}"
        ) from None
    ordered = low < high if strict else low <= high
    if not (math.isfinite(low) and math.isfinite(high) and ordered):
        relation = "<" if strict else "<="
        raise ValueError(f"{name} must be finite with low {relation} high, got {interval!r}")


def seeded_samples(seeds: Iterable[int], shape: Shape, draw: Draw) -> np.ndarray:
    """Stack ``draw(numpy.random.default_rng(int(seed)))`` over ``seeds``, one sample per call.

    The one loop behind every seeded generator here and the PDEs' initial states: ``draw``
    sees one generator and returns one sample, so its FFTs and reductions never see the batch.
    A batched FFT is not batch-invariant: MKL and pocketfft pick kernels and blockings by batch
    size (measured on an AMD EPYC with MKL 2024.2: ``torch.fft.rfft2`` of (4, 24, 24) and of
    its (1, 24, 24) slices differ by up to 8.9e-16 in float64), and a reduction over the batch
    mixes samples outright.

    Args:
        seeds: Integer seeds, length n; each is converted with ``int``.
        shape: Shape of one sample.
        draw: Builds one sample of ``shape`` from its generator.

    Returns:
        Samples of shape ``(n, *shape)``, float64.
    """
    seeds = [int(seed) for seed in seeds]
    out = np.empty((len(seeds), *shape))
    for i, seed in enumerate(seeds):
        out[i] = draw(np.random.default_rng(seed))
    return out


def _grid(shape: tuple[int, ...], length: float) -> list[np.ndarray]:
    """Coordinates ``j * length / n`` of each axis, broadcastable to ``shape``."""
    axes = []
    for axis, n in enumerate(shape):
        view = [1] * len(shape)
        view[axis] = n
        axes.append((np.arange(n) * (length / n)).reshape(view))
    return axes


def fourier_series(
    shape: Shape,
    length: float,
    seeds: Sequence[int] | np.ndarray,
    n_waves: int = 2,
    k_max: int = 4,
    amplitude: tuple[float, float] = (0.0, 1.0),
) -> np.ndarray:
    """Sums of random sine waves, the family PDEBench describes for its 1D initial conditions.

    .. math::

        u(x) = \\sum_{j=1}^{n_{waves}} A_j \\sin\\left(\\frac{2\\pi\\, k_j \\cdot x}{\\ell}
        + \\phi_j\\right),

    with integer wavenumbers whose components are uniform in ``1 .. k_max`` (in 2D each
    component gets a random sign), :math:`A_j \\sim U(\\text{amplitude})` and
    :math:`\\phi_j \\sim U(0, 2\\pi)`. Each sample draws, per wave, its wavenumber components,
    then (2D) their signs, then ``A``, then :math:`\\phi`.

    Args:
        shape: Grid ``(n_x,)`` or ``(n_x, n_y)``, sizes >= 1.
        length: Domain side :math:`\\ell > 0`.
        seeds: Integer seeds >= 0, shape (n,).
        n_waves: Number of waves >= 1. Defaults to 2.
        k_max: Largest wavenumber component >= 1. Defaults to 4.
        amplitude: ``(low, high)`` of the uniform amplitude, low <= high. Defaults to (0, 1).

    Returns:
        Samples of shape ``(n, *shape)``, float64, in the unit of ``amplitude``.

    Raises:
        ValueError: If an argument is outside its range; the message names it.
    """
    dims = _validate_shape(shape)
    _validate_real("length", length, low=0.0)
    seeds = _validate_seeds(seeds)
    for name, value in (("n_waves", n_waves), ("k_max", k_max)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    _validate_interval("amplitude", amplitude, strict=False)
    coords = _grid(dims, float(length))

    def draw(rng: np.random.Generator) -> np.ndarray:
        u = np.zeros(dims)
        for _ in range(n_waves):
            k = rng.integers(1, k_max, size=len(dims), endpoint=True).astype(np.float64)
            if len(dims) == 2:
                k *= rng.choice((-1.0, 1.0), size=2)
            amp = rng.uniform(*amplitude)
            phase = rng.uniform(0.0, 2 * math.pi)
            arg = sum(kj * xj for kj, xj in zip(k, coords, strict=True))
            u += amp * np.sin((2 * math.pi / length) * arg + phase)
        return u

    return seeded_samples(seeds, dims, draw)


def grf_mode_variance(
    shape: Shape, length: float, alpha: float = 2.0, tau: float = 3.0, sigma: float = 1.0
) -> np.ndarray:
    """Variance :math:`E|\\hat u_k|^2` of each Fourier coefficient of the periodic GRF.

    For the layout of ``numpy.fft.rfftn`` on ``shape``: :math:`\\lambda_k / \\ell^d` with
    :math:`\\lambda_k = \\sigma^2 (|2\\pi k/\\ell|^2 + \\tau^2)^{-\\alpha}` (see
    ``gaussian_random_field``), and 0 for the mean mode and every Nyquist mode.

    Args:
        shape: Grid ``(n_x,)`` or ``(n_x, n_y)``.
        length: Domain side :math:`\\ell > 0`.
        alpha: Smoothness exponent > 0. Defaults to 2.0.
        tau: Inverse correlation length >= 0, in 1/length. Defaults to 3.0.
        sigma: Scale > 0, in field units times length^(d/2 - alpha). Defaults to 1.0.

    Returns:
        Array of the rfftn shape: ``shape`` with its last size ``n // 2 + 1``; float64.
    """
    dims = _validate_shape(shape)
    _validate_real("length", length, low=0.0)
    _validate_real("alpha", alpha, low=0.0)
    _validate_real("tau", tau, low=0.0, strict=False)
    _validate_real("sigma", sigma, low=0.0)
    freqs = [np.fft.fftfreq(n, 1.0 / n) for n in dims[:-1]]
    freqs.append(np.arange(dims[-1] // 2 + 1, dtype=np.float64))
    grids = np.meshgrid(*freqs, indexing="ij")
    k2 = sum((2 * math.pi / length * m) ** 2 for m in grids)
    nyquist = np.zeros(k2.shape, dtype=bool)
    for m, n in zip(grids, dims, strict=True):
        nyquist |= (n % 2 == 0) & (np.abs(m) == n // 2)
    with np.errstate(divide="ignore"):
        var = sigma**2 * (k2 + tau**2) ** (-alpha) / length ** len(dims)
    var[nyquist] = 0.0
    var[(0,) * len(dims)] = 0.0
    return var


def gaussian_random_field(
    shape: Shape,
    length: float,
    seeds: Sequence[int] | np.ndarray,
    alpha: float = 2.0,
    tau: float = 3.0,
    sigma: float = 1.0,
    mean: float = 0.0,
) -> np.ndarray:
    """Periodic Gaussian random field, covariance :math:`\\sigma^2(-\\Delta + \\tau^2)^{-\\alpha}`.

    The spectrum of the FNO Darcy (:math:`\\alpha = 2, \\tau = 3`) and Navier-Stokes
    (:math:`\\alpha = 2.5, \\tau = 7`) data of Li et al. (2021), "Fourier neural operator for
    parametric PDEs", ICLR. Normalisation: on :math:`[0, \\ell)^d` with the orthonormal basis
    :math:`\\varphi_k = \\ell^{-d/2} e^{2\\pi i k \\cdot x / \\ell}`, the covariance operator has
    eigenvalues :math:`\\lambda_k = \\sigma^2 (|2\\pi k / \\ell|^2 + \\tau^2)^{-\\alpha}`, and

    .. math::

        u(x) = m + \\sum_{k \\ne 0} \\sqrt{\\lambda_k}\\, \\xi_k \\varphi_k(x), \\qquad
        \\xi_{-k} = \\bar\\xi_k, \\; E\\,\\xi_k = 0, \\; E|\\xi_k|^2 = 1,

    complex standard normal :math:`\\xi_k`: the Fourier coefficients
    :math:`\\hat u_k = \\ell^{-d} \\int u\\, e^{-2\\pi i k \\cdot x / \\ell} dx` have variance
    :math:`\\lambda_k / \\ell^d` (``grf_mode_variance``) and the pointwise variance is
    :math:`\\ell^{-d} \\sum_{k \\ne 0} \\lambda_k`. The mean mode is ``mean`` exactly. The series
    is truncated to the modes the grid carries, :math:`|k_i| < n_i / 2`: Nyquist modes are zero,
    so grid values are exact samples of a band-limited field. Drawn as the filtered white noise
    of ``rng.standard_normal(shape)``, whose DFT has exactly the required statistics; each
    sample is drawn and transformed by itself (``seeded_samples``), so it is batch-invariant.

    Args:
        shape: Grid ``(n_x,)`` or ``(n_x, n_y)``, sizes >= 1.
        length: Domain side :math:`\\ell > 0`.
        seeds: Integer seeds >= 0, shape (n,).
        alpha: Smoothness exponent > 0; samples are in :math:`H^s` for :math:`s < \\alpha - d/2`.
            Defaults to 2.0.
        tau: Inverse correlation length >= 0, in 1/length. Defaults to 3.0.
        sigma: Scale > 0, in field units times length^(d/2 - alpha). Defaults to 1.0.
        mean: Value of the mean mode. Defaults to 0.0.

    Returns:
        Samples of shape ``(n, *shape)``, float64.

    Raises:
        ValueError: If an argument is outside its range; the message names it.
    """
    draw = _grf_draw(shape, length, alpha, tau, sigma, mean)
    return seeded_samples(_validate_seeds(seeds), _validate_shape(shape), draw)


def _grf_draw(
    shape: Shape, length: float, alpha: float, tau: float, sigma: float, mean: float
) -> Draw:
    """One sample of ``gaussian_random_field`` from a generator; arguments checked once."""
    var = grf_mode_variance(shape, length, alpha, tau, sigma)
    dims = _validate_shape(shape)
    _validate_real("mean", mean)
    # DFT of unit white noise: E|W_k|^2 = N, so W_k / sqrt(N) is xi_k; u_j = N ifft(u_hat)_j.
    gain = np.sqrt(var * math.prod(dims))
    axes = tuple(range(len(dims)))

    def draw(rng: np.random.Generator) -> np.ndarray:
        spectrum = np.fft.rfftn(rng.standard_normal(dims), axes=axes) * gain
        return np.fft.irfftn(spectrum, s=dims, axes=axes) + mean

    return draw


def lognormal_field(
    shape: Shape,
    length: float,
    seeds: Sequence[int] | np.ndarray,
    alpha: float = 2.0,
    tau: float = 3.0,
    sigma: float = 1.0,
    mean: float = 0.0,
) -> np.ndarray:
    """``exp`` of ``gaussian_random_field`` with the same arguments: a positive field.

    Each sample is drawn, transformed and exponentiated by itself, so it is batch-invariant.

    Returns:
        Samples of shape ``(n, *shape)``, float64, all > 0.
    """
    grf = _grf_draw(shape, length, alpha, tau, sigma, mean)
    return seeded_samples(_validate_seeds(seeds), _validate_shape(shape), lambda r: np.exp(grf(r)))


def step_function(
    shape: Shape,
    length: float,
    seeds: Sequence[int] | np.ndarray,
    n_steps: int = 4,
    levels: tuple[float, float] = (0.0, 1.0),
    *,
    alpha: float = 2.0,
    tau: float = 3.0,
) -> np.ndarray:
    """Piecewise-constant random fields.

    1D: ``n_steps`` breakpoints uniform in :math:`(0, \\ell)`, sorted, split the grid into
    ``n_steps + 1`` pieces, each with a value uniform in ``levels`` (drawn in that order; the
    field generally jumps at the periodic wrap too). 2D: the two-valued field ``levels[1]``
    where a ``gaussian_random_field(alpha, tau)`` is >= 0 and ``levels[0]`` elsewhere: FNO's
    Darcy permeability (12 and 3) for ``levels=(3, 12)``, PDEBench's for ``levels=(0.1, 1)``;
    ``n_steps`` is unused. Each sample is built by itself, so it is batch-invariant.

    Args:
        shape: Grid ``(n_x,)`` or ``(n_x, n_y)``, sizes >= 1.
        length: Domain side :math:`\\ell > 0`.
        seeds: Integer seeds >= 0, shape (n,).
        n_steps: Number of 1D breakpoints >= 1. Defaults to 4.
        levels: ``(low, high)`` with low < high: the value range (1D) or the two values (2D).
            Defaults to (0, 1).
        alpha: Smoothness exponent of the thresholded 2D field. Defaults to 2.0.
        tau: Inverse correlation length of the thresholded 2D field. Defaults to 3.0.

    Returns:
        Samples of shape ``(n, *shape)``, float64.

    Raises:
        ValueError: If an argument is outside its range; the message names it.
    """
    dims = _validate_shape(shape)
    _validate_real("length", length, low=0.0)
    seeds = _validate_seeds(seeds)
    if isinstance(n_steps, bool) or not isinstance(n_steps, numbers.Integral) or n_steps < 1:
        raise ValueError(f"n_steps must be an integer >= 1, got {n_steps!r}")
    _validate_interval("levels", levels, strict=True)
    low, high = (float(v) for v in levels)
    if len(dims) == 2:
        grf = _grf_draw(dims, length, alpha, tau, 1.0, 0.0)
        return seeded_samples(seeds, dims, lambda rng: np.where(grf(rng) >= 0, high, low))
    x = _grid(dims, float(length))[0]

    def draw(rng: np.random.Generator) -> np.ndarray:
        breaks = np.sort(rng.uniform(0.0, length, size=n_steps))
        values = rng.uniform(low, high, size=n_steps + 1)
        return values[np.searchsorted(breaks, x, side="right")]

    return seeded_samples(seeds, dims, draw)
