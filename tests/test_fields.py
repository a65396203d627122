"""Seeded random fields: design spectrum over many seeds, supports, levels, seeding, validation."""

from __future__ import annotations

import contextlib
import math

import numpy as np
import pytest
import torch

from pdeflow.tasks.fields import (
    fourier_series,
    gaussian_random_field,
    grf_mode_variance,
    lognormal_field,
    seeded_samples,
    step_function,
)

GENERATORS = {
    "fourier_series": lambda shape, seeds: fourier_series(shape, 2.0, seeds),
    "gaussian_random_field": lambda shape, seeds: gaussian_random_field(shape, 2.0, seeds),
    "lognormal_field": lambda shape, seeds: lognormal_field(shape, 2.0, seeds),
    "step_function": lambda shape, seeds: step_function(shape, 2.0, seeds, levels=(3.0, 12.0)),
}

FFT_NAMES = ("fft", "ifft", "rfft", "irfft", "fft2", "ifft2", "rfft2", "irfft2")
FFT_NAMES += ("fftn", "ifftn", "rfftn", "irfftn")


@contextlib.contextmanager
def fft_input_shapes(monkeypatch: pytest.MonkeyPatch):
    """Record the input shape of every ``numpy.fft`` and ``torch.fft`` call inside the block.

    Yields a set of shapes. A generator that transforms each sample by itself runs the same
    shapes for a batch as for one sample; one that transforms the batch shows its batch size,
    on every CPU, even where batched and single transforms happen to round alike.
    """
    shapes: set[tuple[int, ...]] = set()
    with monkeypatch.context() as patch:
        for module in (np.fft, torch.fft):
            for name in FFT_NAMES:

                def spy(x, *args, _call=getattr(module, name), **kwargs):
                    shapes.add(tuple(np.shape(x)))
                    return _call(x, *args, **kwargs)

                patch.setattr(module, name, spy)
        yield shapes


def _coefficients(u: np.ndarray) -> np.ndarray:
    """Fourier-series coefficients ``u_hat_k`` (DFT / N) of samples (n, *shape), rfftn layout."""
    axes = tuple(range(1, u.ndim))
    return np.fft.rfftn(u, axes=axes) / math.prod(u.shape[1:])


@pytest.mark.parametrize(
    ("shape", "length", "alpha", "tau", "sigma"),
    [((16, 12), 2.0, 2.0, 3.0, 1.0), ((64,), 1.0, 1.5, 7.0, 4.0)],
)
def test_grf_matches_design_spectrum(shape, length, alpha, tau, sigma):
    m = 400
    u = gaussian_random_field(shape, length, np.arange(m), alpha, tau, sigma)
    var = grf_mode_variance(shape, length, alpha, tau, sigma)
    coef = _coefficients(u)
    live = var > 0
    ratio = (np.abs(coef) ** 2)[:, live] / var[live]
    # |u_hat_k|^2 / var_k is Exp(1) per mode and sample (complex normal), so the mean over m
    # samples has standard deviation 1 / sqrt(m) = 0.05. At 5 sigma a wrong normalisation by
    # 25% shows, while the chance that any of the ~100 modes strays is below 1e-4 (the Gamma
    # tail at 5 sigma for m = 400 is ~1e-6 per mode).
    assert np.abs(ratio.mean(axis=0) - 1).max() < 5 / math.sqrt(m)
    # Real and imaginary parts carry equal variance: E[xi^2] = 0, with E|xi^2|^2 = 2, so the
    # mean of xi^2 over m samples has standard deviation sqrt(2 / m) per mode.
    xi2 = coef[:, live] ** 2 / var[live]
    assert np.abs(xi2.mean(axis=0)).max() < 5 * math.sqrt(2 / m)
    # Mean and Nyquist modes are exactly zero by construction (rounding of the FFTs only).
    assert np.abs(coef[:, ~live]).max() < 1e-12 * np.abs(coef).max()
    # The pointwise variance is the sum of the mode variances (both halves of the rfft
    # layout): over 400 samples x N points the estimate is within a few percent (correlated
    # points, so the effective count is smaller; 15% is > 5 standard errors measured).
    full = 2 * var.sum() - var[..., 0].sum()
    assert abs(u.var() / full - 1) < 0.15


def test_grf_mean_and_lognormal():
    seeds = np.array([3, 1, 4])
    g = gaussian_random_field((8, 8), 1.0, seeds, mean=2.5)
    # The mean mode is set exactly; only rounding of the inverse FFT remains.
    assert np.allclose(g.mean(axis=(1, 2)), 2.5, atol=1e-13)
    logn = lognormal_field((8, 8), 1.0, seeds, mean=2.5)
    assert np.array_equal(logn, np.exp(g))
    assert (logn > 0).all()


@pytest.mark.parametrize("name", sorted(GENERATORS))
@pytest.mark.parametrize(
    "shape", [(24,), (30,), (12, 10), (24, 24), (32, 32)], ids=lambda s: "x".join(map(str, s))
)
def test_samples_bitwise_equal_alone_and_in_any_batch(name, shape, monkeypatch):
    gen = GENERATORS[name]
    seeds = [8, 9, 8, 3]
    with fft_input_shapes(monkeypatch) as batch_ffts:
        batch = gen(shape, np.array(seeds))
    assert batch.shape == (4, *shape) and batch.dtype == np.float64
    with fft_input_shapes(monkeypatch) as single_ffts:
        alone = {s: gen(shape, [s])[0] for s in set(seeds)}
    # No tolerance: a sample is the same bits alone, at any position, in a batch of any size.
    for i, s in enumerate(seeds):
        np.testing.assert_array_equal(batch[i], alone[s])
    np.testing.assert_array_equal(gen(shape, [1, 2, 4, 5, 6, 9])[-1], batch[1])
    assert not np.array_equal(batch[0], batch[1])
    # By construction: every transform sees one sample, never the batch.
    assert batch_ffts == single_ffts


def test_seeded_samples_gives_each_seed_a_fresh_generator():
    starts = []

    def draw(rng):
        starts.append(rng.bit_generator.state["state"]["state"])
        return rng.standard_normal((2, 3))

    out = seeded_samples(np.array([5, 6, 5]), (2, 3), draw)
    assert out.shape == (3, 2, 3) and out.dtype == np.float64
    assert starts[0] == starts[2] != starts[1]
    np.testing.assert_array_equal(out[1], np.random.default_rng(6).standard_normal((2, 3)))
    assert seeded_samples([], (4,), draw).shape == (0, 4)


@pytest.mark.parametrize("shape", [(32,), (16, 16)])
def test_fourier_series_support_and_amplitude(shape):
    k_max = 3
    u = fourier_series(shape, 3.0, np.arange(50), n_waves=1, k_max=k_max, amplitude=(0.5, 2.0))
    coef = _coefficients(u)
    freqs = np.meshgrid(
        *[np.abs(np.fft.fftfreq(n, 1.0 / n)) for n in shape[:-1]],
        np.arange(shape[-1] // 2 + 1),
        indexing="ij",
    )
    inside = np.all([(f >= 1) & (f <= k_max) for f in freqs], axis=0)
    # Integer wavenumbers on the grid: the DFT is exact, so energy outside the allowed
    # components is rounding only.
    assert np.abs(coef[:, ~inside]).max() < 1e-12
    # One wave A sin(...) has two coefficients of modulus A / 2 (one in the rfft half in 1D,
    # or a conjugate pair split over the half-plane in 2D): A = 2 max|u_hat|.
    amp = 2 * np.abs(coef).reshape(50, -1).max(axis=1)
    assert ((amp >= 0.5 - 1e-12) & (amp <= 2.0 + 1e-12)).all()


def test_step_function_1d_pieces():
    u = step_function((200,), 1.0, np.arange(30), n_steps=4, levels=(-1.0, 2.0))
    assert ((u >= -1.0) & (u <= 2.0)).all()
    jumps = (np.diff(u, axis=1) != 0).sum(axis=1)
    # n_steps breakpoints make at most n_steps jumps inside the grid (two may share a cell).
    assert (jumps <= 4).all() and jumps.max() == 4


def test_step_function_2d_two_levels_balanced():
    m = 200
    u = step_function((32, 32), 1.0, np.arange(m), levels=(3.0, 12.0))
    assert set(np.unique(u)) == {3.0, 12.0}
    frac = (u == 12.0).mean(axis=(1, 2))
    # The GRF is symmetric, so the high fraction averages 1/2; the tolerance is 5 standard
    # errors of the mean over m independent samples.
    assert abs(frac.mean() - 0.5) < 5 * frac.std() / math.sqrt(m)


@pytest.mark.parametrize(
    ("call", "argument"),
    [
        (lambda: gaussian_random_field((4, 4, 4), 1.0, [0]), "shape"),
        (lambda: gaussian_random_field((0, 4), 1.0, [0]), "shape"),
        (lambda: gaussian_random_field((4,), 0.0, [0]), "length"),
        (lambda: gaussian_random_field((4,), 1.0, [-1]), "seeds"),
        (lambda: gaussian_random_field((4,), 1.0, [0.5]), "seeds"),
        (lambda: gaussian_random_field((4,), 1.0, [[0]]), "seeds"),
        (lambda: gaussian_random_field((4,), 1.0, [0], alpha=0.0), "alpha"),
        (lambda: gaussian_random_field((4,), 1.0, [0], tau=-1.0), "tau"),
        (lambda: gaussian_random_field((4,), 1.0, [0], sigma=0.0), "sigma"),
        (lambda: gaussian_random_field((4,), 1.0, [0], mean=math.nan), "mean"),
        (lambda: fourier_series((8,), 1.0, [0], k_max=0), "k_max"),
        (lambda: fourier_series((8,), 1.0, [0], n_waves=0), "n_waves"),
        (lambda: fourier_series((8,), 1.0, [0], amplitude=(1.0, 0.0)), "amplitude"),
        (lambda: step_function((8,), 1.0, [0], n_steps=0), "n_steps"),
        (lambda: step_function((8,), 1.0, [0], levels=(1.0, 1.0)), "levels"),
    ],
)
def test_invalid_arguments_raise(call, argument):
    with pytest.raises(ValueError, match=argument):
        call()
