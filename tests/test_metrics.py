"""Surrogate metrics (pdeflow.tasks.metrics) on fields whose answer is known by hand.

Tolerances: every expected value is exact arithmetic on float64 data, so the only error is
round-off of sums and FFTs over at most 32**2 points, ~1e-15 relative; 1e-12 leaves three orders
of margin and still fails on any wrong factor. vrmse checks that involve The Well's eps=1e-7 use a
tolerance of 1e-6, above eps / var with var ~ 1.
"""

from __future__ import annotations

import numpy as np
import pytest

from pdeflow.tasks.metrics import (
    FRMSE_BANDS,
    VRMSE_EPS,
    brmse,
    crmse,
    error_spectrum,
    frmse,
    max_error,
    metric_table,
    nrmse,
    persistence,
    relative_l2,
    rmse,
    rollout_curve,
    vrmse,
)

ATOL = 1e-12
# Spatial grids per dimension: 1D and 2D reach the high band (min(n) // 2 = 16 >= 12);
# the 3D grid stops at bin 4, so its high band is undefined (nan).
GRIDS = {1: (32,), 2: (32, 24), 3: (8, 8, 8)}
LAYOUT = (2, 3, 2)  # (sample, time, channel)


def _field(rng: np.random.Generator, space: tuple[int, ...]) -> np.ndarray:
    return rng.normal(size=(*LAYOUT, *space))


def _mode(space: tuple[int, ...], k: tuple[int, ...], amp: float, phase: float) -> np.ndarray:
    """``amp * cos(2 pi k.x + phase)`` on the unit grid ``x_d = i_d / n_d``."""
    coords = np.meshgrid(*[np.arange(n) / n for n in space], indexing="ij")
    return amp * np.cos(2 * np.pi * sum(kd * x for kd, x in zip(k, coords, strict=True)) + phase)


@pytest.mark.parametrize("n_space_dims", [1, 2, 3])
def test_constant_offset_gives_hand_values(n_space_dims: int) -> None:
    rng = np.random.default_rng(0)
    space = GRIDS[n_space_dims]
    true = _field(rng, space)
    c = 0.37
    pred = true + c
    axes = tuple(range(-n_space_dims, 0))
    rms_true = np.sqrt(np.mean(true**2, axis=axes))
    var_true = np.var(true, axis=axes)
    for fn in (rmse, crmse, brmse):
        out = fn(pred, true, n_space_dims)
        assert out.shape == LAYOUT and out.dtype == np.float64
        np.testing.assert_allclose(out, c, rtol=0, atol=ATOL)
    np.testing.assert_allclose(nrmse(pred, true, n_space_dims), c / rms_true, rtol=ATOL)
    np.testing.assert_allclose(max_error(pred, true, axes=axes), c, rtol=0, atol=ATOL)
    np.testing.assert_allclose(
        vrmse(pred, true, n_space_dims), c / np.sqrt(var_true + VRMSE_EPS), rtol=ATOL
    )
    # Mode 0 holds the whole error: E_0 = c * prod(L), and the low band averages 4 bins.
    lengths = (2.0, 3.0, 0.5)[:n_space_dims]
    bands = frmse(pred, true, n_space_dims, domain_lengths=lengths)
    assert bands.shape == (*LAYOUT, 3)
    np.testing.assert_allclose(bands[..., 0], c * np.prod(lengths) / 4, rtol=ATOL)
    np.testing.assert_allclose(bands[..., 1], 0.0, atol=ATOL)
    if n_space_dims < 3:
        np.testing.assert_allclose(bands[..., 2], 0.0, atol=ATOL)
    else:
        assert np.all(np.isnan(bands[..., 2]))


# (k, bin, band index, bins in that band, self-conjugate) on the 1D grid of 32 points:
# bins 0..16, low = 0-3, mid = 4-11, high = 12-16.
MODES_1D = [((2,), 2, 0, 4, False), ((7,), 7, 1, 8, False), ((13,), 13, 2, 5, False)]
MODES_1D += [((16,), 16, 2, 5, True)]  # Nyquist: cos(pi j) is its own conjugate
# On the 32 x 24 grid: bins 0..12, so the high band is bin 12 alone.
MODES_2D = [
    ((1, 1), 1, 0, 4, False),
    ((3, 4), 5, 1, 8, False),
    ((3, -4), 5, 1, 8, False),  # mixed signs, the quadrant PDEBench's 2D loop never visits
    ((12, 0), 12, 2, 1, False),
    ((0, 12), 12, 2, 1, True),  # Nyquist along y (n_y = 24)
]
MODES_3D = [((1, 2, 2), 3, 0, 4, False), ((4, 0, 0), 4, 1, 1, True)]


@pytest.mark.parametrize(
    ("space", "mode"),
    [(GRIDS[1], m) for m in MODES_1D]
    + [(GRIDS[2], m) for m in MODES_2D]
    + [(GRIDS[3], m) for m in MODES_3D],
)
def test_single_fourier_mode_lands_in_its_band(space, mode) -> None:
    k, bin_index, band, n_band, self_conjugate = mode
    n_space_dims = len(space)
    rng = np.random.default_rng(1)
    true = _field(rng, space)
    amp = 0.8
    phase = 0.0 if self_conjugate else 0.3  # a Nyquist cosine with a phase loses amplitude
    pred = true + _mode(space, k, amp, phase)
    # A real mode puts |F_k| = amp N / 2 at k and at -k; counted once per pair, E = amp / 2.
    # A self-conjugate mode is one coefficient of size amp N, so E = amp.
    expected_bin = amp if self_conjugate else amp / 2
    spectrum = error_spectrum(pred, true, n_space_dims)
    assert spectrum.shape == (*LAYOUT, min(space) // 2 + 1)
    expected = np.zeros(spectrum.shape[-1])
    expected[bin_index] = expected_bin
    np.testing.assert_allclose(spectrum, np.broadcast_to(expected, spectrum.shape), atol=ATOL)
    bands = frmse(pred, true, n_space_dims)
    for i in range(3):
        if np.isnan(bands[..., i]).all():
            assert i == 2 and n_space_dims == 3  # the 8**3 grid has no high band
            continue
        want = expected_bin / n_band if i == band else 0.0
        np.testing.assert_allclose(bands[..., i], want, rtol=0, atol=ATOL)


def test_error_spectrum_1d_matches_pdebench_rfft_formula() -> None:
    # Independent computation: PDEBench's 1D fRMSE bin value is |rfft(err)_k| * L / nx.
    rng = np.random.default_rng(2)
    true, pred = _field(rng, (32,)), _field(rng, (32,))
    length = 2.5
    want = np.abs(np.fft.rfft(pred - true, axis=-1)) * length / 32
    got = error_spectrum(pred, true, 1, domain_lengths=length)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=ATOL)


def test_metric_table_frmse_aggregates_like_pdebench_1d() -> None:
    # PDEBench: sqrt(mean over samples |rfft err|^2) * L / nx, band means over [:4], [4:12],
    # [12:], then the mean over time and channel; computed here from rfft directly.
    rng = np.random.default_rng(3)
    true, pred = _field(rng, (32,)), _field(rng, (32,))
    n_input = 1
    err_f = np.abs(np.fft.rfft(pred[:, n_input:] - true[:, n_input:], axis=-1))
    per_mode = np.sqrt(np.mean(err_f**2, axis=0)) / 32
    want = [per_mode[..., :4].mean(), per_mode[..., 4:12].mean(), per_mode[..., 12:].mean()]
    table = metric_table(pred, true, n_input=n_input, n_space_dims=1)
    for band, value in zip(FRMSE_BANDS, want, strict=True):
        np.testing.assert_allclose(table[f"frmse_{band}"]["model"], value, rtol=1e-12)


def test_vrmse_of_the_spatial_mean_is_one() -> None:
    rng = np.random.default_rng(4)
    true = _field(rng, GRIDS[2])
    pred = np.broadcast_to(true.mean(axis=(-2, -1), keepdims=True), true.shape)
    np.testing.assert_allclose(vrmse(pred, true, 2), 1.0, rtol=0, atol=1e-6)
    # With eps = 0 the ratio is exact; ddof=1 (The Well's torch.std) scales by sqrt((N-1)/N).
    n = np.prod(GRIDS[2])
    np.testing.assert_allclose(vrmse(pred, true, 2, eps=0.0), 1.0, atol=ATOL)
    np.testing.assert_allclose(
        vrmse(pred, true, 2, eps=0.0, ddof=1), np.sqrt((n - 1) / n), atol=ATOL
    )


@pytest.mark.parametrize(
    ("space", "n_boundary"),
    [((7,), 2), ((6, 5), 2 * 6 + 2 * 5 - 4), ((4, 5, 6), 4 * 5 * 6 - 2 * 3 * 4)],
)
def test_brmse_sees_the_boundary_only(space: tuple[int, ...], n_boundary: int) -> None:
    n_space_dims = len(space)
    rng = np.random.default_rng(5)
    true = _field(rng, space)
    interior = tuple(slice(1, -1) for _ in space)
    inside = np.zeros(space)
    inside[interior] = 1.0
    # Interior-only error: invisible to brmse, visible to rmse.
    pred = true + 2.0 * inside
    np.testing.assert_allclose(brmse(pred, true, n_space_dims), 0.0, atol=ATOL)
    assert np.all(rmse(pred, true, n_space_dims) > 0)
    # Boundary-only error e on every boundary point: brmse = e exactly.
    pred = true + 0.5 * (1.0 - inside)
    np.testing.assert_allclose(brmse(pred, true, n_space_dims), 0.5, atol=ATOL)
    # One corner wrong by 1: the corner is one of |B| points, counted once.
    pred = true.copy()
    pred[(..., *(0 for _ in space))] += 1.0
    np.testing.assert_allclose(brmse(pred, true, n_space_dims), np.sqrt(1 / n_boundary), atol=ATOL)


def test_crmse_is_blind_to_zero_mean_error_and_rms_over_samples() -> None:
    rng = np.random.default_rng(6)
    true = _field(rng, GRIDS[1])
    pred = true + _mode(GRIDS[1], (3,), 1.0, 0.2)  # zero spatial mean
    np.testing.assert_allclose(crmse(pred, true, 1), 0.0, atol=ATOL)
    assert np.all(rmse(pred, true, 1) > 0.5)
    # Per-sample offsets c_s: the table's cRMSE is the RMS over samples, sqrt(mean c_s^2).
    offsets = np.array([0.3, 0.4])
    pred = true + offsets[:, None, None, None]
    table = metric_table(pred, true, n_input=1, n_space_dims=1)
    np.testing.assert_allclose(table["crmse"]["model"], np.sqrt(np.mean(offsets**2)), rtol=1e-12)
    # max_error: max over space and samples, then the mean over time and channel.
    np.testing.assert_allclose(table["max_error"]["model"], 0.4, rtol=1e-12)
    np.testing.assert_allclose(table["rmse"]["model"], offsets.mean(), rtol=1e-12)


def test_rollout_curve_excludes_input_frames() -> None:
    rng = np.random.default_rng(7)
    n_times = 5
    true = rng.normal(size=(2, n_times, 2, 16))
    pred = true.copy()
    pred[:, :2] += 10.0  # wrong input frames, exact predictions
    curve = rollout_curve(pred, true, n_input=2)
    assert curve.shape == (n_times - 2,)
    np.testing.assert_array_equal(curve, 0.0)
    # Error c * t at frame t: the rmse curve over the predicted frames is c * t, t >= n_input.
    c = 0.1
    pred = true + c * np.arange(n_times)[None, :, None, None]
    curve = rollout_curve(pred, true, metric=rmse, n_input=1)
    np.testing.assert_allclose(curve, c * np.arange(1, n_times))
    assert rollout_curve(pred, true, metric=frmse, n_input=1).shape == (n_times - 1, 3)
    np.testing.assert_allclose(
        rollout_curve(pred, true, metric=rmse, n_input=0), c * np.arange(n_times)
    )


def test_persistence_baseline() -> None:
    rng = np.random.default_rng(8)
    base = rng.normal(size=(2, 1, 2, 32))
    steady = np.repeat(base, 4, axis=1)  # constant in time
    table = metric_table(steady + 0.2, steady, n_input=1, n_space_dims=1)
    assert set(table) == {
        "rmse",
        "nrmse",
        "max_error",
        "crmse",
        "brmse",
        "vrmse",
        *(f"frmse_{b}" for b in FRMSE_BANDS),
    }
    for name, row in table.items():
        assert isinstance(row["persistence"], float) and isinstance(row["model"], float)
        assert row["persistence"] == 0.0, name
        assert row["model"] > 0.0 or name in ("frmse_mid", "frmse_high"), name
    # Linear drift true = f + t c: persistence from the last input n_input - 1 is off by
    # (t - n_input + 1) c at frame t.
    c, n_input, n_times = 0.05, 2, 6
    drift = base + c * np.arange(n_times)[None, :, None, None]
    held = persistence(drift, n_input=n_input)
    np.testing.assert_array_equal(held[:, :n_input], drift[:, :n_input])
    np.testing.assert_array_equal(held[:, n_input:], np.repeat(drift[:, 1:2], 4, axis=1))
    table = metric_table(drift, drift, n_input=n_input, n_space_dims=1)
    assert all(row["model"] == 0.0 for row in table.values())
    want = c * np.mean(np.arange(1, n_times - n_input + 1))
    np.testing.assert_allclose(table["rmse"]["persistence"], want, rtol=1e-12)
    np.testing.assert_allclose(table["crmse"]["persistence"], want, rtol=1e-12)


def test_existing_metrics_unchanged() -> None:
    rng = np.random.default_rng(9)
    true, pred = _field(rng, (16,)), _field(rng, (16,))
    want = np.linalg.norm(pred - true, axis=-1) / np.linalg.norm(true, axis=-1)
    np.testing.assert_allclose(nrmse(pred, true), want, rtol=1e-12)
    np.testing.assert_allclose(relative_l2(pred, true, axes=-1), want, rtol=1e-12)
    assert max_error(pred, true) == np.max(np.abs(pred - true))


def test_shape_checks_raise() -> None:
    rng = np.random.default_rng(10)
    true = _field(rng, (16,))
    for fn in (rmse, nrmse, crmse, brmse, vrmse, frmse, error_spectrum):
        with pytest.raises(ValueError, match="shapes differ"):
            fn(true[:, :, :1], true, 1)
        with pytest.raises(ValueError, match="n_space_dims"):
            fn(true, true, 0)
    with pytest.raises(ValueError, match="shapes differ"):
        max_error(true[:1], true)
    with pytest.raises(ValueError, match="shapes differ"):
        metric_table(true[:1], true)
    with pytest.raises(ValueError, match="spatial axes"):
        metric_table(true, true, n_space_dims=2)  # (S, T, C, X) is not a 2D layout
    with pytest.raises(ValueError, match="spatial axes"):
        rollout_curve(true[0], true[0])
    with pytest.raises(ValueError, match="n_input"):
        metric_table(true, true, n_input=0)  # persistence needs an input frame
    with pytest.raises(ValueError, match="n_input"):
        rollout_curve(true, true, n_input=3)  # T = 3: nothing left to score
    with pytest.raises(ValueError, match="n_input"):
        persistence(true, n_input=3)
    with pytest.raises(ValueError, match="domain_lengths"):
        frmse(true, true, 1, domain_lengths=(1.0, 2.0))
    with pytest.raises(ValueError, match="domain_lengths"):
        frmse(true, true, 1, domain_lengths=-1.0)
    with pytest.raises(ValueError, match="band edges"):
        frmse(true, true, 1, i_low=5, i_high=5)
