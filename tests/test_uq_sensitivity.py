"""Tests of pdeflow.tasks.uq sensitivity analysis: Morris screening, Sobol' index maps of fields,
and polynomial chaos expansions, each against analytic indices or an independent computation."""

import logging
import warnings

import chaospy
import numpy as np
import pytest
from SALib.analyze import sobol as salib_sobol

from pdeflow.tasks.uq import (
    FieldSobol,
    MorrisScreening,
    PolynomialChaos,
    SobolAnalysis,
    field_sobol,
)

Z95 = 1.959963984540054

# ---------------------------------------------------------------- test functions


def _sobol_g(U, a):
    """Sobol' g-function on [0, 1]^d (Saltelli & Sobol' 1995)."""
    return np.prod((np.abs(4.0 * U - 2.0) + a) / (1.0 + a), axis=1)


def _sobol_g_total_indices(a):
    """ST_i = V_i prod_{j != i} (1 + V_j) / V with V_i = 1 / (3 (1 + a_i)^2)."""
    partial = 1.0 / (3.0 * (1.0 + a) ** 2)
    total_variance = np.prod(1.0 + partial) - 1.0
    return partial * np.prod(1.0 + partial) / (1.0 + partial) / total_variance


ISHIGAMI_A, ISHIGAMI_B = 7.0, 0.1
ISHIGAMI_BOUNDS = np.array([[-np.pi, np.pi]] * 3)


def _ishigami(X):
    a, b = ISHIGAMI_A, ISHIGAMI_B
    return np.sin(X[:, 0]) + a * np.sin(X[:, 1]) ** 2 + b * X[:, 2] ** 4 * np.sin(X[:, 0])


def _ishigami_exact():
    """Mean, variance, S1 and ST of the Ishigami function with X_i ~ U(-pi, pi)."""
    a, b, pi = ISHIGAMI_A, ISHIGAMI_B, np.pi
    v1 = 0.5 * (1.0 + b * pi**4 / 5.0) ** 2
    v2 = a**2 / 8.0
    v13 = 8.0 * b**2 * pi**8 / 225.0  # b^2 pi^8 (1/18 - 1/50)
    variance = v1 + v2 + v13
    assert variance == pytest.approx(a**2 / 8 + b * pi**4 / 5 + b**2 * pi**8 / 18 + 0.5)
    s1 = np.array([v1, v2, 0.0]) / variance
    st = np.array([v1 + v13, v2, v13]) / variance
    return a / 2.0, variance, s1, st


# Fields over x in [0, 2 pi], with a ~ U(1, 3), b ~ U(0, 1) independent.
X_GRID = np.linspace(0.0, 2.0 * np.pi, 33)
AB_BOUNDS = np.array([[1.0, 3.0], [0.0, 1.0]])
MEAN_A, MEAN_B, VAR_A, VAR_B = 2.0, 0.5, 4.0 / 12.0, 1.0 / 12.0


def _additive_field(X):
    """u(x; a, b) = a sin(x) + b, shape (n, 33)."""
    return X[:, :1] * np.sin(X_GRID) + X[:, 1:2]


def _interaction_field(X):
    """w(x; a, b) = a sin(x) + b + a b cos(x), shape (n, 33)."""
    a, b = X[:, :1], X[:, 1:2]
    return a * np.sin(X_GRID) + b + a * b * np.cos(X_GRID)


def _additive_exact():
    """S_a(x) = sin^2 Var(a) / (sin^2 Var(a) + Var(b)); S_b = 1 - S_a; ST = S1."""
    part_a = np.sin(X_GRID) ** 2 * VAR_A
    return np.array([part_a, np.full_like(part_a, VAR_B)]) / (part_a + VAR_B)


def _interaction_exact():
    """With a = E a + alpha, b = E b + beta: w = const + alpha (sin + E b cos)
    + beta (1 + E a cos) + alpha beta cos, three orthogonal terms. Returns S1 (2, 33) and
    S_ab (33,); ST_i = S1_i + S_ab."""
    s, c = np.sin(X_GRID), np.cos(X_GRID)
    parts = np.array([VAR_A * (s + MEAN_B * c) ** 2, VAR_B * (1.0 + MEAN_A * c) ** 2])
    part_ab = VAR_A * VAR_B * c**2
    variance = parts.sum(axis=0) + part_ab
    return parts / variance, part_ab / variance


# ---------------------------------------------------------------- Morris screening


def test_morris_linear_function_has_exact_effects():
    bounds = np.array([[0.0, 1.0], [-2.0, 2.0], [10.0, 15.0], [0.0, 3.0]])
    c = np.array([3.0, -1.5, 0.4, 0.0])  # the last parameter does not enter
    screen = MorrisScreening(n_trajectories=10, seed=3)
    X = screen.design(bounds)
    assert X.shape == (10 * 5, 4)
    assert np.all((X >= bounds[:, 0]) & (X <= bounds[:, 1]))
    assert screen.fit(X, X @ c) is screen
    ranges = bounds[:, 1] - bounds[:, 0]
    # EE_i = c_i (hi_i - lo_i) on every path, up to the round-off of one subtraction of
    # numbers of size ~|f| <= 20: 1e-12 is ~50 ulps of it.
    np.testing.assert_allclose(screen.mu_star_, np.abs(c) * ranges, rtol=0, atol=1e-12)
    np.testing.assert_allclose(screen.mu_, c * ranges, rtol=0, atol=1e-12)
    np.testing.assert_allclose(screen.sigma_, 0.0, atol=1e-12)
    assert screen.mu_star_[3] == 0.0 and screen.sigma_[3] == 0.0
    np.testing.assert_allclose(screen.mu_star_conf_, 0.0, atol=1e-12)
    assert screen.n_params_ == 4 and screen.n_trajectories_ == 10

    # Vector output, one column analysed at a time: shape (n_params, *out_shape).
    Y = np.stack([X @ c, -2.0 * (X @ c), X[:, 0] * X[:, 1]], axis=1)
    screen.fit(X, Y)
    assert screen.mu_star_.shape == (4, 3) and screen.sigma_.shape == (4, 3)
    np.testing.assert_allclose(screen.mu_star_[:, 1], 2 * np.abs(c) * ranges, atol=1e-12)
    # x0 x1 is not additive: its effects vary along the paths (sigma > 0) and x2, x3 do not enter.
    assert np.all(screen.sigma_[:2, 2] > 0.1) and np.all(screen.mu_star_[2:, 2] == 0.0)


@pytest.mark.parametrize("seed", range(3))
def test_morris_ranks_the_g_function_like_its_total_indices(seed):
    a = np.array([0.0, 1.0, 4.5, 9.0, 99.0, 99.0])
    total = _sobol_g_total_indices(a)  # 0.79, 0.24, 0.034, 0.010, 1e-4, 1e-4
    screen = MorrisScreening(n_trajectories=30, seed=seed)
    U = screen.design(6)
    assert U.shape == (30 * 7, 6) and np.all((U >= 0) & (U <= 1))
    screen.fit(U, _sobol_g(U, a))
    important = 4  # the two a=99 parameters tie in ST and are ranked only as unimportant
    np.testing.assert_array_equal(
        np.argsort(-screen.mu_star_)[:important], np.argsort(-total)[:important]
    )
    assert screen.mu_star_[4:].max() < screen.mu_star_[3]


def test_morris_design_is_seeded_and_validated():
    screen = MorrisScreening(n_trajectories=5, seed=7)
    np.testing.assert_array_equal(screen.design(3), MorrisScreening(5, seed=7).design(3))
    assert not np.array_equal(screen.design(3), MorrisScreening(5, seed=8).design(3))
    X = screen.design(3)
    with pytest.raises(ValueError, match="one at a time"):
        screen.fit(X[np.random.default_rng(0).permutation(len(X))], X.sum(axis=1))
    with pytest.raises(ValueError, match="Y must have shape"):
        screen.fit(X, X.sum(axis=1)[:-1])
    with pytest.raises(ValueError, match="even"):
        MorrisScreening(num_levels=5).design(3)
    with pytest.raises(ValueError, match="low < high"):
        screen.design([[0.0, 1.0], [2.0, 2.0]])


# ---------------------------------------------------------------- field-wise Sobol' maps

# Tolerance of the index maps at n_base=1024: over 16 independent scramblings the standard
# deviation of every index, at every location of these two fields, is at most 2.8e-3 (S1) and
# 1.5e-3 (ST) (measured; randomised QMC, Owen 1997), so 0.015 is >= 5 standard errors of the
# worst location. The i.i.d. Monte Carlo standard error (bootstrap) is ~0.05: the bootstrap
# intervals are conservative and must cover the error everywhere.
N_BASE, TOL_MAP = 1024, 0.015


def test_field_sobol_additive_field_matches_analytic_maps():
    maps = field_sobol(_additive_field, AB_BOUNDS, N_BASE, seed=0)
    exact = _additive_exact()
    assert maps.S1_.shape == maps.ST_.shape == maps.S1_conf_.shape == (2, 33)
    np.testing.assert_allclose(maps.S1_, exact, atol=TOL_MAP)
    np.testing.assert_allclose(maps.ST_, exact, atol=TOL_MAP)  # no interaction: ST = S1
    np.testing.assert_allclose(maps.ST_ - maps.S1_, 0.0, atol=TOL_MAP)
    assert np.all(np.abs(maps.S1_ - exact) <= maps.S1_conf_ + 1e-12)
    assert np.all(np.abs(maps.ST_ - exact) <= maps.ST_conf_ + 1e-12)
    assert maps.S1_conf_.max() < 0.1  # an interval that covers everything would be useless
    # At x = 0, 2 pi (sin = 0) a does not act: f(A_B^a) = f(A) exactly, so S_a = ST_a = 0.
    assert maps.S1_[0, 0] == 0.0 and maps.ST_[0, 0] == 0.0
    # Generalised indices: sum_x V_i(x) / sum_x V(x).
    part_a = np.sin(X_GRID) ** 2 * VAR_A
    exact_agg = np.array([part_a.sum(), VAR_B * len(X_GRID)]) / (part_a + VAR_B).sum()
    np.testing.assert_allclose(maps.S1_agg_, exact_agg, atol=TOL_MAP)
    np.testing.assert_allclose(maps.ST_agg_, exact_agg, atol=TOL_MAP)
    # Mean field: sin(x) E[a] + E[b], within the CLT half-width (95%, conservative for QMC).
    exact_mean = np.sin(X_GRID) * MEAN_A + MEAN_B
    assert np.all(np.abs(maps.mean_ - exact_mean) <= maps.mean_conf_)
    np.testing.assert_allclose(
        maps.variance_, np.sin(X_GRID) ** 2 * VAR_A + VAR_B, rtol=0.02
    )  # 2 n_base = 2048 scrambled-Sobol' runs estimate a variance to well under 1%


def test_field_sobol_interaction_raises_total_above_first_order():
    maps = field_sobol(_interaction_field, AB_BOUNDS, N_BASE, seed=1)
    s1, s_ab = _interaction_exact()
    np.testing.assert_allclose(maps.S1_, s1, atol=TOL_MAP)
    np.testing.assert_allclose(maps.ST_, s1 + s_ab, atol=TOL_MAP)
    gap = maps.ST_ - maps.S1_  # estimates S_ab(x) for each of a and b
    strong = s_ab > 0.1  # near x = 0, pi, 2 pi, where |cos x| is large
    none = np.abs(np.cos(X_GRID)) < 1e-12  # x = pi/2, 3 pi/2: no interaction there
    assert strong.sum() >= 4 and none.sum() == 2
    assert np.all(gap[:, strong] > 0.1 - TOL_MAP)
    np.testing.assert_allclose(gap[:, none], 0.0, atol=TOL_MAP)
    assert np.all(maps.ST_agg_ > maps.S1_agg_ + 0.01)


def test_field_sobol_equals_salib_at_each_location():
    analysis = FieldSobol(256, seed=4, n_bootstrap=10)
    X = analysis.design(AB_BOUNDS)
    Y = _interaction_field(X)
    analysis.fit(X, Y)
    problem = {"num_vars": 2, "names": ["a", "b"], "bounds": [[0.0, 1.0]] * 2}
    for k in (0, 5, 17, 30):
        ref = salib_sobol.analyze(
            problem, Y[:, k], calc_second_order=False, num_resamples=10, seed=1
        )
        # Same estimators on the same runs; SALib standardises Y first: round-off only.
        np.testing.assert_allclose(analysis.S1_[:, k], ref["S1"], rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(analysis.ST_[:, k], ref["ST"], rtol=1e-10, atol=1e-12)


def test_field_sobol_constant_locations_are_nan_and_fields_keep_their_shape():
    def model(X):  # (n, 4, 5); row 0 does not depend on the parameters
        grid = np.linspace(0.0, 1.0, 20).reshape(4, 5)
        out = X[:, 0, None, None] * grid + X[:, 1, None, None] ** 2 * grid**2
        out[:, 0, 1:] = 3.0  # at [0, 0], grid = 0 makes the output exactly 0 (0 <= 0 case)
        return out

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no division-by-zero warnings on constant locations
        maps = field_sobol(model, AB_BOUNDS, 64, seed=2, n_bootstrap=20)
    assert maps.S1_.shape == maps.ST_conf_.shape == (2, 4, 5)
    assert maps.mean_.shape == maps.constant_.shape == (4, 5)
    expected = np.zeros((4, 5), dtype=bool)
    expected[0] = True
    np.testing.assert_array_equal(maps.constant_, expected)
    assert np.all(np.isnan(maps.S1_[:, expected])) and np.all(np.isnan(maps.ST_conf_[:, expected]))
    assert np.all(np.isfinite(maps.S1_[:, ~expected]))
    assert np.all(np.isfinite(maps.S1_agg_))


def test_field_sobol_design_is_seeded_and_validated():
    analysis = FieldSobol(64, seed=3)
    X = analysis.design(AB_BOUNDS)
    assert X.shape == (64 * 4, 2) and analysis.n_eval(2) == 256
    np.testing.assert_array_equal(X, FieldSobol(64, seed=3).design(AB_BOUNDS))
    first = analysis.fit(X, _additive_field(X)).S1_.copy()
    np.testing.assert_array_equal(first, FieldSobol(64, seed=3).fit(X, _additive_field(X)).S1_)
    shuffled = X[np.random.default_rng(0).permutation(len(X))]
    with pytest.raises(ValueError, match="Saltelli design"):
        analysis.fit(shuffled, _additive_field(shuffled))
    with pytest.raises(ValueError, match="power of 2"):
        FieldSobol(100).design(2)
    with pytest.raises(ValueError, match="non-finite"):
        analysis.fit(X, np.full((len(X), 3), np.nan))


# ---------------------------------------------------------------- polynomial chaos


@pytest.fixture(scope="module")
def ishigami_pce():
    """Degree 12 (455 Legendre terms) fitted to 1024 scrambled-Sobol' runs (~2.3 per term)."""
    pce = PolynomialChaos(ISHIGAMI_BOUNDS, degree=12, seed=0)
    X = pce.design(1024)
    return pce.fit(X, _ishigami(X))


def test_pce_ishigami_moments_and_indices(ishigami_pce):
    mean, variance, s1, st = _ishigami_exact()
    np.testing.assert_allclose(s1, [0.3139, 0.4424, 0.0], atol=1e-4)  # the brief's values
    np.testing.assert_allclose(st, [0.5576, 0.4424, 0.2437], atol=1e-4)
    pce = ishigami_pce
    assert pce.degree_ == 12 and pce.coefficients_.shape == (455,)
    assert abs(pce.mean_ - mean) < 1e-2
    assert abs(pce.variance_ - variance) / variance < 1e-2
    np.testing.assert_allclose(pce.S1_, s1, atol=1e-2)
    np.testing.assert_allclose(pce.ST_, st, atol=1e-2)
    # Indices from the coefficients agree with chaospy's own coefficient-based functions.
    np.testing.assert_allclose(
        pce.S1_, chaospy.FirstOrderSobol(pce.expansion_, pce.coefficients_), atol=1e-12
    )
    np.testing.assert_allclose(
        pce.ST_, chaospy.TotalOrderSobol(pce.expansion_, pce.coefficients_), atol=1e-12
    )
    X_test = np.random.default_rng(5).uniform(-np.pi, np.pi, size=(500, 3))
    rmse = np.sqrt(np.mean((pce.predict(X_test) - _ishigami(X_test)) ** 2))
    assert rmse < 1e-2 * np.sqrt(variance)


def test_pce_agrees_with_monte_carlo_saltelli(ishigami_pce):
    mc = SobolAnalysis(8192, seed=1)
    unit = mc.sample(3)
    mc.analyze(_ishigami(-np.pi + 2.0 * np.pi * unit))
    # The PCE is within 1e-3 of the exact indices; the MC estimates carry their own error, with
    # 95% bootstrap half-widths of ~0.01-0.03 here: agreement within 2 half-widths (~4 SE).
    assert np.all(np.abs(ishigami_pce.S1_ - mc.S1_) <= 2 * mc.S1_conf_)
    assert np.all(np.abs(ishigami_pce.ST_ - mc.ST_) <= 2 * mc.ST_conf_)
    assert mc.S1_conf_.max() < 0.05


def test_pce_cross_validation_picks_the_degree():
    pce = PolynomialChaos(ISHIGAMI_BOUNDS, degree="cv", max_degree=12, seed=0)
    X = pce.design(1024)
    pce.fit(X, _ishigami(X))
    # Smooth but not polynomial: the error keeps falling with the degree until the fit runs out
    # of data, so CV must pick a high degree; the indices then meet the same 1e-2.
    assert pce.degree_ >= 10 and set(pce.cv_errors_) == set(range(13))
    assert pce.cv_errors_[pce.degree_] < 1e-4 < pce.cv_errors_[4]
    _, _, s1, st = _ishigami_exact()
    np.testing.assert_allclose(pce.S1_, s1, atol=1e-2)
    np.testing.assert_allclose(pce.ST_, st, atol=1e-2)

    cubic = PolynomialChaos([[0.0, 1.0], [-1.0, 2.0]], degree="cv", max_degree=6, seed=1)
    Xc = cubic.design(128)
    cubic.fit(Xc, Xc[:, 0] ** 3 - 2.0 * Xc[:, 0] * Xc[:, 1] + 0.5)
    assert cubic.degree_ == 3 and cubic.cv_errors_[2] > 1e-4


def test_pce_vector_output_matches_analytic_field():
    pce = PolynomialChaos(AB_BOUNDS, degree="cv", max_degree=4, seed=2)
    X = pce.design(64)
    pce.fit(X, _interaction_field(X))  # shape (n, r) like POD coefficients, r = 33
    # w is a degree-2 polynomial in (a, b): the expansion reproduces it to round-off.
    assert pce.degree_ == 2
    c, s = np.cos(X_GRID), np.sin(X_GRID)
    np.testing.assert_allclose(pce.mean_, MEAN_A * s + MEAN_B + MEAN_A * MEAN_B * c, atol=1e-10)
    s1, s_ab = _interaction_exact()
    np.testing.assert_allclose(pce.S1_, s1, atol=1e-10)
    np.testing.assert_allclose(pce.ST_, s1 + s_ab, atol=1e-10)
    # Against chaospy's conditional-variance definitions on the fitted polynomial.
    np.testing.assert_allclose(
        pce.S1_, chaospy.Sens_m(pce.polynomial_, pce.distribution_), atol=1e-10
    )
    np.testing.assert_allclose(
        pce.ST_, chaospy.Sens_t(pce.polynomial_, pce.distribution_), atol=1e-10
    )
    X_new = pce.design(16) * 0.99 + 0.005
    assert pce.predict(X_new).shape == (16, 33)
    np.testing.assert_allclose(pce.predict(X_new), _interaction_field(X_new), atol=1e-10)

    additive = PolynomialChaos(AB_BOUNDS, degree=3).fit(X, _additive_field(X))
    np.testing.assert_allclose(additive.mean_, np.sin(X_GRID) * MEAN_A + MEAN_B, atol=1e-10)
    np.testing.assert_allclose(additive.variance_, s**2 * VAR_A + VAR_B, atol=1e-10)
    np.testing.assert_allclose(additive.S1_, _additive_exact(), atol=1e-10)


def test_pce_with_normal_inputs():
    # y = x0 + x0 x1 with x ~ N(0, 1) iid (Hermite chaos): mean 0, Var = 1 + 1, S1 = (1/2, 0),
    # ST = (1, 1/2).
    dist = chaospy.J(chaospy.Normal(0.0, 1.0), chaospy.Normal(0.0, 1.0))
    pce = PolynomialChaos(dist, degree=2, seed=3)
    X = pce.design(32)
    pce.fit(X, X[:, 0] + X[:, 0] * X[:, 1])
    assert abs(pce.mean_) < 1e-10 and pce.variance_ == pytest.approx(2.0, abs=1e-10)
    np.testing.assert_allclose(pce.S1_, [0.5, 0.0], atol=1e-10)
    np.testing.assert_allclose(pce.ST_, [1.0, 0.5], atol=1e-10)


def test_pce_validation_and_zero_variance():
    pce = PolynomialChaos(AB_BOUNDS, degree=2)
    X = pce.design(8)
    fitted = pce.fit(X, np.stack([X[:, 0], np.full(len(X), 2.0)], axis=1))
    assert fitted is pce
    assert np.all(np.isnan(pce.S1_[:, 1])) and pce.mean_[1] == pytest.approx(2.0)
    with pytest.raises(ValueError, match="more than the"):
        PolynomialChaos(AB_BOUNDS, degree=5).fit(X, X[:, 0])
    with pytest.raises(ValueError, match="degree must be"):
        PolynomialChaos(AB_BOUNDS, degree="auto").fit(X, X[:, 0])
    with pytest.raises(ValueError, match="X must be"):
        pce.fit(X[:, :1], X[:, 0])
    np.testing.assert_array_equal(X, PolynomialChaos(AB_BOUNDS, degree=2).design(8))


def test_chaospy_leaves_the_root_logger_alone():
    """chaospy's import calls logging.basicConfig(filename=os.devnull); that hid every stage
    warning from the CLI (Prefect then left its console handler out)."""
    import subprocess
    import sys

    code = (
        "import logging; from pdeflow.tasks.uq.pce import chaospy_module; chaospy_module(); "
        "root = logging.getLogger(); print(root.handlers, root.level)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["[]", str(logging.WARNING)], out.stdout + out.stderr
