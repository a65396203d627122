"""Tests of pdeflow.tasks.uq: streaming moments, split-conformal field bands, Sobol' indices."""

from fractions import Fraction

import numpy as np
import pytest
from scipy import stats

from pdeflow.tasks.uq import (
    RunningMoments,
    SobolAnalysis,
    SplitConformal,
    compare_fields,
    quantiles,
    resplit_coverage,
)
from pdeflow.tasks.uq.conformal import conformal_rank, min_calibration_size

# ---------------------------------------------------------------- Monte Carlo moments


def _random_splits(rng, n, n_batches):
    cuts = np.sort(rng.integers(0, n + 1, size=n_batches - 1))
    return np.split(np.arange(n), cuts)  # may contain empty batches, which must be no-ops


@pytest.mark.parametrize("seed", range(5))
def test_running_moments_match_numpy_over_random_batch_splits(seed):
    rng = np.random.default_rng(seed)
    data = 3.0 + 2.0 * rng.standard_normal((500, 4, 6))
    moments = RunningMoments()
    for batch in _random_splits(rng, 500, 7):
        assert moments.update(data[batch]) is moments
    assert moments.n_ == 500
    # Pairwise updates in float64 agree with numpy's two-pass result to a few ulps x log(n).
    np.testing.assert_allclose(moments.mean_, data.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(moments.std_, data.std(axis=0, ddof=1), rtol=1e-12)


def test_running_moments_merge_equals_one_pass():
    rng = np.random.default_rng(1)
    data = 1e6 + rng.standard_normal((300, 8))  # large offset: where naive sums of x^2 fail
    workers = [RunningMoments().update(data[idx]) for idx in _random_splits(rng, 300, 4)]
    total = RunningMoments()
    for worker in workers:
        assert total.merge(worker) is total
    total.merge(RunningMoments())  # an empty worker changes nothing
    assert total.n_ == 300
    np.testing.assert_allclose(total.mean_, data.mean(axis=0), rtol=1e-12)
    # The spread is 1e-6 of the mean: relative accuracy of the std is ~1e-16 * 1e6 at best.
    np.testing.assert_allclose(total.std_, data.std(axis=0, ddof=1), rtol=1e-8)


def test_running_moments_edge_cases():
    moments = RunningMoments().update(np.ones((1, 3), dtype=np.float32))
    assert moments.mean_.dtype == np.float64
    assert np.all(np.isnan(moments.std_))  # ddof=1 with one sample, as numpy
    with pytest.raises(ValueError, match="sample shape"):
        moments.update(np.ones((2, 4)))


def test_quantiles_and_compare_fields():
    values = np.arange(101.0)
    np.testing.assert_allclose(quantiles(values, [0.0, 0.05, 0.5, 0.95, 1.0]), [0, 5, 50, 95, 100])
    assert quantiles(np.ones((10, 2, 3)), [0.1, 0.9]).shape == (2, 2, 3)
    with pytest.raises(ValueError, match="probabilities"):
        quantiles(values, [1.5])
    b = np.linspace(1.0, 2.0, 50).reshape(5, 10)
    assert compare_fields(1.03 * b, b) == pytest.approx(0.03, rel=1e-12)
    with pytest.raises(ValueError, match="zero"):
        compare_fields(b, np.zeros_like(b))


# ---------------------------------------------------------------- split conformal

ALPHA, N_CAL, N_TEST, N_SEEDS = 0.1, 100, 500, 200
SHAPE = (12, 10)
GRID_X, GRID_Y = np.meshgrid(
    np.linspace(0, 1, SHAPE[0]), np.linspace(0, 1, SHAPE[1]), indexing="ij"
)
SIGMA = 0.05 + 0.5 * GRID_X * GRID_Y  # surrogate error grows towards one corner


def _pool(rng, n):
    """Exchangeable (pred, true) fields with errors heteroscedastic in space and across samples."""
    amplitudes = rng.standard_normal((n, 3, 1, 1))
    modes = np.stack(
        [np.sin((k + 1) * np.pi * GRID_X) * np.cos(k * np.pi * GRID_Y) for k in range(3)]
    )
    true = (amplitudes * modes).sum(axis=1)
    per_sample = np.exp(0.3 * rng.standard_normal((n, 1, 1)))
    noise = SIGMA * per_sample * rng.standard_t(df=5, size=(n, *SHAPE))  # heavy tails
    return true + noise, true


@pytest.fixture(scope="module", params=[None, "sigma"])
def single_split_coverages(request):
    scale = SIGMA if request.param == "sigma" else None
    coverages = np.empty(N_SEEDS)
    for seed in range(N_SEEDS):
        pred, true = _pool(np.random.default_rng(seed), N_CAL + N_TEST)
        model = SplitConformal(ALPHA).fit(pred[:N_CAL], true[:N_CAL], scale)
        coverages[seed] = model.coverage(pred[N_CAL:], true[N_CAL:])
    return coverages


def _theory():
    """Test coverage of one split: BetaBinomial(N_TEST, k, N_CAL + 1 - k) / N_TEST (Vovk 2012)."""
    k = conformal_rank(N_CAL, ALPHA)
    return stats.betabinom(N_TEST, k, N_CAL + 1 - k)


def test_mean_coverage_over_seeds_within_conformal_bounds(single_split_coverages):
    # The mean of N_SEEDS independent coverages has standard error sd / sqrt(N_SEEDS), sd from
    # the exact beta-binomial law (~0.032, so the error is ~0.0023); 4 standard errors leave a
    # false-alarm rate below 1e-4, while a band 2% short of nominal (8.7 errors) still fails.
    tol = 4 * _theory().std() / N_TEST / np.sqrt(N_SEEDS)
    mean = single_split_coverages.mean()
    assert 1 - ALPHA - tol <= mean <= 1 - ALPHA + 1 / (N_CAL + 1) + tol


def _discrete_ks_pvalue(sample_counts, dist):
    """KS p-value against a discrete law; conservative (the continuous null bounds it)."""
    support = np.arange(N_TEST + 1)
    empirical = np.searchsorted(np.sort(sample_counts), support, side="right") / sample_counts.size
    statistic = np.abs(empirical - dist.cdf(support)).max()
    return stats.kstwo.sf(statistic, sample_counts.size)


def test_single_split_coverage_follows_beta_binomial(single_split_coverages):
    counts = np.rint(single_split_coverages * N_TEST).astype(int)
    # Significance 0.001: each split's coverage is consistent with the exact law ...
    assert _discrete_ks_pvalue(counts, _theory()) > 1e-3
    # ... and the test has power: a plain binomial (ignoring that the band itself is random,
    # sd 0.013 instead of 0.032) is rejected.
    k = conformal_rank(N_CAL, ALPHA)
    assert _discrete_ks_pvalue(counts, stats.binom(N_TEST, k / (N_CAL + 1))) < 1e-3


def test_band_matches_coverage_and_scale_narrows_it():
    pred, true = _pool(np.random.default_rng(1000), 2000)
    plain = SplitConformal(ALPHA).fit(pred[:1000], true[:1000])
    scaled = SplitConformal(ALPHA).fit(pred[:1000], true[:1000], SIGMA)
    lower, upper = scaled.predict_band(pred[1000:])
    assert lower.shape == upper.shape == (1000, *SHAPE)
    inside = np.all((true[1000:] >= lower) & (true[1000:] <= upper), axis=(1, 2))
    assert inside.mean() == scaled.coverage(pred[1000:], true[1000:])
    assert scaled.pointwise_coverage(pred[1000:], true[1000:]) >= inside.mean()
    # With errors 11x larger in one corner a constant-width band is as wide as that corner
    # everywhere; scaled by SIGMA it is 5x narrower in the quiet corner and narrower on average
    # (mean width ratio measured 0.66 with this seed).
    plain_width = 2 * plain.quantile_ * plain.scale_
    scaled_width = 2 * scaled.quantile_ * scaled.scale_
    assert scaled_width[0, 0] < 0.25 * plain_width[0, 0]
    assert scaled_width.mean() < 0.8 * plain_width.mean()
    assert scaled.n_cal_ == 1000 and scaled.scale_.shape == SHAPE


def test_conformal_rank_is_exact():
    for alpha in (0.1, 0.05, 0.2, 0.01, 0.3):
        exact = 1 - Fraction(str(alpha))
        for n in range(1, 400):
            expected = -((-(n + 1) * exact.numerator) // exact.denominator)  # exact ceiling
            assert conformal_rank(n, alpha) == expected
    assert min_calibration_size(0.1) == 9 and min_calibration_size(0.05) == 19


def test_too_small_calibration_set_raises():
    pred, true = _pool(np.random.default_rng(0), 8)
    with pytest.raises(ValueError, match=r"n_cal=8 .*alpha=0.1.*at least n_cal=9"):
        SplitConformal(0.1).fit(pred, true)
    SplitConformal(0.1).fit(*_pool(np.random.default_rng(0), 9))  # the minimum works


@pytest.mark.parametrize("alpha", [0.0, 1.0, -0.1])
def test_bad_alpha_raises(alpha):
    with pytest.raises(ValueError, match="alpha"):
        SplitConformal(alpha).fit(*_pool(np.random.default_rng(0), 50))


def test_bad_scale_raises():
    pred, true = _pool(np.random.default_rng(0), 50)
    with pytest.raises(ValueError, match="> 0"):
        SplitConformal().fit(pred, true, np.zeros(SHAPE))
    with pytest.raises(ValueError, match="broadcast"):
        SplitConformal().fit(pred, true, np.ones(7))


def test_resplit_coverage_average_is_nominal():
    pred, true = _pool(np.random.default_rng(7), 1000)
    coverages = resplit_coverage(pred, true, 100, 200, np.random.default_rng(8), ALPHA, SIGMA)
    assert coverages.shape == (200,)
    # Averaged over all splits of a pool the coverage is exactly k / (n_cal + 1) = 0.901; 200
    # repeats of sd ~0.031 leave a standard error of ~0.0022, so +-0.02 is ~9 of them.
    assert abs(coverages.mean() - (1 - ALPHA)) <= 0.02
    same = resplit_coverage(pred, true, 100, 200, np.random.default_rng(8), ALPHA, SIGMA)
    np.testing.assert_array_equal(coverages, same)


# ---------------------------------------------------------------- Sobol' indices

ISHIGAMI_S1 = np.array([0.313905, 0.442411, 0.0])
ISHIGAMI_ST = np.array([0.557589, 0.442411, 0.243684])
# Six indices checked at once: Bonferroni at family-wise level 0.001 needs z = 3.77 per index,
# i.e. 3.77 / 1.96 = 1.92 half-widths of the returned 95% intervals.
CI_FACTOR = stats.norm.isf(0.001 / 12) / stats.norm.isf(0.025)


def _ishigami(x, a=7.0, b=0.1):
    return np.sin(x[:, 0]) + a * np.sin(x[:, 1]) ** 2 + b * x[:, 2] ** 4 * np.sin(x[:, 0])


@pytest.fixture(scope="module")
def ishigami():
    analysis = SobolAnalysis(4096, seed=0)
    u = analysis.sample(3)
    assert u.shape == (4096 * 5, 3)
    return analysis, analysis.analyze(_ishigami(-np.pi + 2 * np.pi * u))


def test_ishigami_indices_within_confidence_intervals(ishigami):
    analysis, result = ishigami
    for key, truth in (("S1", ISHIGAMI_S1), ("ST", ISHIGAMI_ST)):
        # The intervals must be informative for this to test anything.
        assert np.all(result[f"{key}_conf"] < 0.06)
        assert np.all(np.abs(result[key] - truth) <= CI_FACTOR * result[f"{key}_conf"])
        # The bootstrap treats rows as i.i.d. and so overstates the error of scrambled Sobol'
        # points roughly tenfold: measured errors are <= 0.0022 over seeds 0-4 (NOTES: 0.002).
        assert np.all(np.abs(result[key] - truth) <= 0.005)
        np.testing.assert_array_equal(getattr(analysis, f"{key}_"), result[key])


def test_ishigami_interaction_is_detected(ishigami):
    _, result = ishigami
    # x1 and x3 interact (b x3^4 sin x1): ST - S1 = 0.244 must exceed both half-widths.
    gap = result["ST"] - result["S1"]
    assert np.all(gap[[0, 2]] > result["ST_conf"][[0, 2]] + result["S1_conf"][[0, 2]])


def test_additive_function_has_total_equal_first_order():
    coefficients = np.array([1.0, 2.0, 0.5, 0.0])
    analysis = SobolAnalysis(2048, seed=3)
    u = analysis.sample(4)
    result = analysis.analyze(u @ coefficients + 0.3 * np.sin(2 * np.pi * u[:, 0]))
    # Without interactions ST_i = S1_i. The two estimates are correlated (same runs); the sum of
    # their 95% half-widths bounds the half-width of their difference whatever the correlation.
    tol = result["S1_conf"] + result["ST_conf"]
    assert np.all(np.abs(result["ST"] - result["S1"]) <= tol)
    # Analytic: Var(c x) = c^2/12, Var(0.3 sin 2 pi x) = 0.045, Cov(x, sin 2 pi x) = -1/(2 pi).
    v0 = 1 / 12 + 0.045 - 0.3 / np.pi
    variances = np.array([v0, 4 / 12, 0.25 / 12, 0.0])
    np.testing.assert_allclose(result["S1"], variances / variances.sum(), atol=0.01)


def test_second_order_index_of_ishigami():
    analysis = SobolAnalysis(1024, calc_second_order=True, seed=1)
    u = analysis.sample(3)
    assert u.shape == (1024 * 8, 3)
    result = analysis.analyze(_ishigami(-np.pi + 2 * np.pi * u))
    # S13 = ST3 = 0.243684 analytically, S12 = S23 = 0.
    truth = np.array([0.0, 0.243684, 0.0])
    estimate = result["S2"][[0, 0, 1], [1, 2, 2]]
    conf = result["S2_conf"][[0, 0, 1], [1, 2, 2]]
    assert np.all(np.abs(estimate - truth) <= CI_FACTOR * conf)


@pytest.mark.parametrize("n_base", [1000, 0, 1, 4096.0])
def test_bad_n_base_raises(n_base):
    with pytest.raises(ValueError, match="power of 2"):
        SobolAnalysis(n_base).sample(3)


def test_wrong_output_length_raises():
    analysis = SobolAnalysis(64)
    y = np.ones(len(analysis.sample(3)))
    with pytest.raises(ValueError, match="len"):
        analysis.analyze(y[:-1])
    with pytest.raises(ValueError, match="non-finite"):
        analysis.analyze(np.full_like(y, np.nan))


def test_same_seed_same_indices():
    def run(seed):
        analysis = SobolAnalysis(256, seed=seed)
        return analysis.analyze(_ishigami(-np.pi + 2 * np.pi * analysis.sample(3)))

    first, second, other = run(5), run(5), run(6)
    for key in ("S1", "ST", "S1_conf", "ST_conf"):
        np.testing.assert_array_equal(first[key], second[key])
    assert not np.array_equal(first["S1"], other["S1"])
