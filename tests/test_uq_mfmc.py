"""Tests of the multifidelity Monte Carlo estimator (pdeflow.tasks.uq.MFMC).

The model family is Gaussian with known moments: inputs ``z ~ N(0, I)``, the high-fidelity model
``f_1 = mu + s z_0`` and low-fidelity models ``f_k = sign_k f_1 + tau_k z_k``, so
``sigma_k^2 = s^2 + tau_k^2`` and ``rho_k = sign_k s / sigma_k`` exactly, and every estimate is a
linear function of Gaussians, hence Gaussian itself: sample variances of replicate estimates
follow a scaled chi-square law, which sets the tolerances. The "exact" pilot whitens its inputs
so that their sample mean is 0 and sample covariance the identity: the pilot statistics then
equal the true ones to round-off, and the allocation can be compared with the closed form.
"""

import math

import numpy as np
import pytest
from scipy import stats

from pdeflow.tasks.uq import MFMC

MU, S = 2.0, 1.5
N_REP = 2000
# Two-sided probability of a false alarm per check: 1e-4, so a correct code fails < 1 in 1000
# runs of this file even with its several statistical checks.
P_TAIL = 5e-5


def gaussian_family(taus, signs=None):
    """Sampler and models ``[f_1, f_2, ...]`` of the Gaussian family, and the true moments."""
    signs = signs or [1] * len(taus)

    def sampler(n, rng):
        return rng.standard_normal((n, len(taus) + 1))

    def high(x):
        return MU + S * x[:, 0]

    def low(k):
        return lambda x: signs[k - 1] * high(x) + taus[k - 1] * x[:, k]

    sigma = np.sqrt(S**2 + np.array([0.0, *taus]) ** 2)
    rho = np.array([1.0, *signs]) * S / sigma
    return sampler, [high] + [low(k) for k in range(1, len(taus) + 1)], sigma, rho


def exact_pilot(models, n_inputs, n=64, seed=0):
    """Pilot outputs on inputs whose sample mean is 0 and sample covariance (ddof=1) is I."""
    z = np.random.default_rng(seed).standard_normal((n, n_inputs))
    z -= z.mean(axis=0)
    chol = np.linalg.cholesky(np.cov(z, rowvar=False))
    z = np.linalg.solve(chol, z.T).T
    return [f(z) for f in models]


def replicate(est, sampler, models, n_rep=N_REP, seed=0):
    seeds = np.random.SeedSequence(seed).spawn(n_rep)
    return np.array([est.estimate(sampler, models, np.random.default_rng(s)) for s in seeds])


def chi2_band(n_rep):
    """Bounds of the ratio (sample variance / variance) of ``n_rep`` Gaussian draws."""
    dof = n_rep - 1
    return stats.chi2.ppf(P_TAIL, dof) / dof, stats.chi2.ppf(1 - P_TAIL, dof) / dof


# Models listed out of order: the least correlated one (rho = 0.8) first, the best (0.95) last.
TAUS = [S * math.sqrt(1 / 0.8**2 - 1), S * math.sqrt(1 / 0.95**2 - 1)]
COSTS = [1.0, 0.001, 0.05]


def test_allocation_equals_the_closed_form():
    sampler, models, sigma, rho = gaussian_family(TAUS)
    budget = 50.0
    est = MFMC().pilot(exact_pilot(models, 3), COSTS).allocate(budget)
    assert est.selected_ == (0, 2, 1) and est.dropped_ == {}
    np.testing.assert_allclose(est.rho_, rho, rtol=1e-12)
    np.testing.assert_allclose(est.sigma_, sigma, rtol=1e-12)

    # Theorem 3.4 of Peherstorfer et al. (2016), models renumbered by decreasing |rho|.
    order = [0, 2, 1]
    w, r2 = np.array(COSTS)[order], np.append(rho[order] ** 2, 0.0)
    ratios = np.sqrt(w[0] * (r2[:-1] - r2[1:]) / (w * (1 - r2[1])))
    m = budget / np.dot(w, ratios) * ratios
    alpha = rho[order] * sigma[0] / sigma[order]
    # Round-off of the whitened pilot (~1e-14) is the only difference from the closed form.
    np.testing.assert_allclose(est.n_samples_continuous_, m, rtol=1e-10)
    np.testing.assert_array_equal(est.n_samples_, np.floor(m))
    np.testing.assert_allclose(est.alpha_, alpha, rtol=1e-10)
    assert est.cost_ == pytest.approx(np.dot(w, np.floor(m))) and est.cost_ <= budget

    # Variance of the rounded allocation, sigma_1^2 sum_k (rho_k^2 - rho_{k+1}^2) / m_k.
    mse_int = sigma[0] ** 2 * np.sum((r2[:-1] - r2[1:]) / np.floor(m))
    assert est.mse_ == pytest.approx(mse_int, rel=1e-10)
    mse_opt = sigma[0] ** 2 / budget * np.sum(np.sqrt(w * (r2[:-1] - r2[1:]))) ** 2
    # Rounding down removes < 1 sample of each m_k >= m_1: the MSE grows by < 1 / (m_1 - 1).
    assert mse_opt <= est.mse_ <= mse_opt * (1 + 1 / (m[0] - 1))
    assert est.n_samples_mc_ == 50
    assert est.mse_mc_ == pytest.approx(sigma[0] ** 2 / 50, rel=1e-10)


@pytest.mark.parametrize("signs", [[1, 1], [-1, 1]])
def test_estimate_is_unbiased(signs):
    sampler, models, _, _ = gaussian_family(TAUS, signs)
    # A small honest pilot: estimated weights are fixed before the estimate's own samples are
    # drawn, so the estimate stays unbiased whatever the pilot's error.
    x = sampler(30, np.random.default_rng(99))
    est = MFMC().pilot([f(x) for f in models], COSTS).allocate(50.0)
    assert np.sign(est.alpha_[2]) == signs[0]
    values = replicate(est, sampler, models)
    standard_error = values.std(ddof=1) / math.sqrt(N_REP)
    assert abs(values.mean() - MU) < 4 * standard_error


def test_trigonometric_family_is_unbiased():
    # f_k = 1 + sin x + eps_k cos(k x), x ~ U(-pi, pi): non-Gaussian outputs, mean exactly 1,
    # rho_k = 1 / sqrt(1 + eps_k^2) by orthogonality of the Fourier modes.
    def sampler(n, rng):
        return rng.uniform(-np.pi, np.pi, n)

    models = [
        lambda x, k=k, e=e: 1 + np.sin(x) + e * np.cos(k * x) for k, e in enumerate([0, 0.3, 0.8])
    ]
    x = sampler(2000, np.random.default_rng(5))
    est = MFMC().pilot([f(x) for f in models], [1.0, 0.02, 0.001]).allocate(40.0)
    expected_rho = 1 / np.sqrt(1 + np.array([0, 0.3, 0.8]) ** 2)
    # Pilot correlations from 2000 samples: standard error (1 - rho^2) / sqrt(n) < 0.02.
    np.testing.assert_allclose(est.rho_, expected_rho, atol=0.03)
    values = replicate(est, sampler, models, seed=1)
    assert abs(values.mean() - 1.0) < 4 * values.std(ddof=1) / math.sqrt(N_REP)


def test_variance_and_reduction_match_prediction():
    sampler, models, sigma, rho = gaussian_family(TAUS)
    budget = 50.0
    est = MFMC().pilot(exact_pilot(models, 3), COSTS).allocate(budget)
    values = replicate(est, sampler, models, seed=2)
    low, high = chi2_band(N_REP)
    assert low < values.var(ddof=1) / est.mse_ < high

    # Plain Monte Carlo at the same cost, replicated the same number of times.
    rng = np.random.default_rng(3)
    mc = models[0](sampler(N_REP * est.n_samples_mc_, rng)).reshape(N_REP, -1).mean(axis=1)
    assert low < mc.var(ddof=1) / est.mse_mc_ < high
    # The ratio of two independent sample variances over its true value is F(R-1, R-1).
    f_ratio = (mc.var(ddof=1) / values.var(ddof=1)) / est.variance_reduction_
    dof = N_REP - 1
    assert stats.f.ppf(P_TAIL, dof, dof) < f_ratio < stats.f.ppf(1 - P_TAIL, dof, dof)

    # Analytic variance reduction at equal cost, (sum_k sqrt(w_k/w_1 (rho_k^2 -
    # rho_{k+1}^2)))^-2, against the prediction of the rounded allocation (< 1/(m_1 - 1) apart).
    order = [0, 2, 1]
    w, r2 = np.array(COSTS)[order], np.append(rho[order] ** 2, 0.0)
    analytic = 1 / np.sum(np.sqrt(w / w[0] * (r2[:-1] - r2[1:]))) ** 2
    assert est.variance_reduction_ == pytest.approx(analytic, rel=1 / (est.n_samples_[0] - 1))
    assert 4 < analytic < 6  # this family's value, 4.9: a real gain, not a degenerate one


def field_family():
    """Fields on 8 points: f_1 = mu(x) + z_0 + x z_1, f_2 = f_1 + (1 - x) z_2 / 2, f_3 = mu + z_0.

    ``f_3`` misses the mode ``x z_1``, so its correlation with ``f_1`` falls along ``x`` and
    per-output weights beat one weight per model.
    """
    grid = np.linspace(0, 1, 8)
    mean = np.sin(np.pi * grid)

    def sampler(n, rng):
        return rng.standard_normal((n, 4))

    def high(z):
        return mean + z[:, :1] + grid * z[:, 1:2]

    models = [high, lambda z: high(z) + 0.5 * (1 - grid) * z[:, 2:3], lambda z: mean + z[:, :1]]
    ones = np.ones_like(grid)
    var = np.array([1 + grid**2, 1 + grid**2 + 0.25 * (1 - grid) ** 2, ones])
    cov = np.array([1 + grid**2, 1 + grid**2, ones])
    return sampler, models, mean, var, cov


@pytest.mark.parametrize("weights", ["total", "per_output"])
def test_field_outputs_variance_and_bias(weights):
    sampler, models, mean, var, cov = field_family()
    est = MFMC(weights=weights).pilot(exact_pilot(models, 4), [1.0, 0.05, 0.002]).allocate(30.0)
    assert est.selected_ == (0, 1, 2)
    # Lemma 3.2 of Peherstorfer et al. (2016) with the object's own weights and counts, and the
    # true moments, component by component: an independent form of the predicted MSE.
    m, alpha = est.n_samples_.astype(float), est.alpha_
    if weights == "total":
        assert alpha.shape == (3,)
        alpha = alpha[:, None] * np.ones_like(mean)
    else:
        assert alpha.shape == (3, 8)
    lemma = var[0] / m[0] + sum(
        (1 / m[k - 1] - 1 / m[k]) * (alpha[k] ** 2 * var[k] - 2 * alpha[k] * cov[k]) for k in (1, 2)
    )
    assert est.mse_ == pytest.approx(lemma.sum(), rel=1e-10)

    values = replicate(est, sampler, models, n_rep=1000, seed=4)
    assert values.shape == (1000, 8)
    errors = ((values - mean) ** 2).sum(axis=1)
    # Mean squared error over 1000 replicates: within 4 standard errors of the prediction, and
    # the mean field within 4 standard errors per component.
    assert abs(errors.mean() - est.mse_) < 4 * errors.std(ddof=1) / math.sqrt(1000)
    assert np.all(np.abs(values.mean(axis=0) - mean) < 4 * values.std(axis=0) / math.sqrt(1000))


def test_per_output_weights_never_worse_than_total():
    _, models, _, _, _ = field_family()
    pilot = exact_pilot(models, 4)
    total = MFMC("total").pilot(pilot, [1.0, 0.05, 0.002]).allocate(30.0)
    per_output = MFMC("per_output").pilot(pilot, [1.0, 0.05, 0.002]).allocate(30.0)
    np.testing.assert_array_equal(total.n_samples_, per_output.n_samples_)
    assert per_output.mse_ < total.mse_


def test_models_violating_the_ordering_conditions_are_dropped():
    # rho = 0.95, 0.9, 0.8; the rho = 0.9 model costs 4x the 0.95 one (cost condition), and a
    # copy of the rho = 0.8 model costs more (a tie in |rho|).
    taus = [S * math.sqrt(1 / r**2 - 1) for r in (0.95, 0.9, 0.8)]
    sampler, models, _, _ = gaussian_family(taus)
    models.append(models[3])
    costs = [1.0, 0.05, 0.2, 0.001, 0.002]
    # Cost condition for (0.95, 0.9, 0.8): w_1/w_2 = 0.25 <= (0.9025 - 0.81)/(0.81 - 0.64) = 0.54.
    est = MFMC().pilot(exact_pilot(models, 4), costs)
    assert est.selected_ == (0, 1, 3)
    assert set(est.dropped_) == {2, 4}
    assert "cost ratio w_1/w_2" in est.dropped_[2]
    assert "not below" in est.dropped_[4]
    est.allocate(20.0)
    assert len(est.n_samples_) == 3
    with pytest.raises(ValueError, match="expected 5 models"):
        est.estimate(sampler, models[:3], 0)


def test_tight_budget_and_batches():
    sampler, models, _, _ = gaussian_family(TAUS)
    est = MFMC().pilot(exact_pilot(models, 3), COSTS).allocate(1.2)
    # m_1 of the optimum is 0.83 < 1: one high-fidelity run, the rest cut to fit.
    assert est.n_samples_continuous_[0] < 1
    assert est.n_samples_[0] == 1 and np.all(np.diff(est.n_samples_) >= 0)
    assert est.cost_ <= 1.2
    big = MFMC().pilot(exact_pilot(models, 3), COSTS).allocate(20.0)
    batched = MFMC(batch_size=7).pilot(exact_pilot(models, 3), COSTS).allocate(20.0)
    # Same samples, sums split differently: equal to round-off.
    assert batched.estimate(sampler, models, 8) == pytest.approx(big.estimate(sampler, models, 8))


def test_clear_errors():
    _, models, _, _ = gaussian_family(TAUS)
    pilot = exact_pilot(models, 3)
    with pytest.raises(RuntimeError, match="call pilot"):
        MFMC().allocate(10.0)
    with pytest.raises(ValueError, match="below one high-fidelity evaluation"):
        MFMC().pilot(pilot, COSTS).allocate(0.5)
    for costs in ([1.0, 0.0, 0.1], [1.0, -0.1, 0.1], [1.0, np.nan, 0.1]):
        with pytest.raises(ValueError, match="costs must be finite and > 0"):
            MFMC().pilot(pilot, costs)
    with pytest.raises(ValueError, match="model 0 outputs are constant"):
        MFMC().pilot([np.full(10, 3.0), pilot[1][:10]], [1.0, 0.1])
    with pytest.raises(ValueError, match="model 1 outputs are constant"):
        MFMC().pilot([pilot[0], np.full_like(pilot[0], 0.1)], [1.0, 0.1])
    with pytest.raises(ValueError, match="weights must be"):
        MFMC(weights="mean").pilot(pilot, COSTS)
    est = MFMC().pilot(pilot, COSTS).allocate(10.0)
    est.pilot(pilot, COSTS)
    assert not hasattr(est, "n_samples_")  # a new pilot clears the old allocation


def test_estimator_variance_at_the_optimal_weights_is_the_allocations_mse():
    # Lemma 3.2 with any weights reduces to the allocation's MSE at alpha_k = cov_k / var_k;
    # both come from the same pilot moments here, so they agree to rounding. Other weights
    # can only be worse (the variance is a convex quadratic in each alpha_k, minimal there).
    from pdeflow.tasks.uq.mfmc import estimator_variance

    rng = np.random.default_rng(3)
    z = rng.standard_normal((3, 400))
    ys = np.stack([2 + 1.5 * z[0], 2 + 1.5 * z[0] + 0.5 * z[1], 1.5 * z[0] + 1.2 * z[2]])
    est = MFMC().pilot(list(ys), [1.0, 0.05, 0.001]).allocate(50.0)
    sel = list(est.selected_)
    exact = estimator_variance(ys[sel], est.n_samples_, est.alpha_)
    assert exact == pytest.approx(est.mse_, rel=1e-10)
    worse = est.alpha_ * np.r_[1.0, np.full(len(sel) - 1, 1.3)]
    assert estimator_variance(ys[sel], est.n_samples_, worse) > exact
