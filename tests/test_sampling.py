"""Tests of pdeflow.tasks.sampling: indexed designs, marginals, per-sample seeds."""

import warnings

import numpy as np
import pytest
from scipy import stats
from scipy.stats import qmc

from pdeflow.tasks.sampling import (
    DESIGNS,
    MARGINALS,
    LogUniform,
    SobolBalanceWarning,
    Uniform,
    sample_seeds,
    sample_unit,
)

EXTENDABLE = ("sobol", "random")


@pytest.mark.parametrize("design", DESIGNS)
def test_design_contract(design):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        points = sample_unit(design, 64, 3, seed=11)
    assert points.shape == (64, 3)
    assert points.dtype == np.float64
    assert np.all((points >= 0) & (points < 1))
    np.testing.assert_array_equal(points, sample_unit(design, 64, 3, seed=11))
    assert not np.allclose(points, sample_unit(design, 64, 3, seed=12))


@pytest.mark.parametrize("design", EXTENDABLE)
def test_extending_equals_tail_of_one_long_call(design):
    whole = sample_unit(design, 128, 4, seed=5)
    head = sample_unit(design, 64, 4, seed=5)
    tail = sample_unit(design, 64, 4, seed=5, start=64)
    # Bitwise: the campaign's earlier samples must not move when it is extended.
    np.testing.assert_array_equal(np.vstack([head, tail]), whole)


@pytest.mark.parametrize("design", EXTENDABLE)
def test_single_point_regenerated_alone(design):
    whole = sample_unit(design, 100, 2, seed=9, start=28)
    for i in (0, 1, 37, 99):
        np.testing.assert_array_equal(sample_unit(design, 1, 2, seed=9, start=28 + i)[0], whole[i])


def test_lhs_has_one_point_per_stratum():
    n = 97
    points = sample_unit("lhs", n, 5, seed=3)
    for column in points.T:
        np.testing.assert_array_equal(np.sort(np.floor(column * n)), np.arange(n))


def test_lhs_cannot_be_extended():
    with pytest.raises(ValueError, match="cannot be extended"):
        sample_unit("lhs", 10, 2, seed=0, start=10)


def test_unknown_design_lists_valid_names():
    with pytest.raises(ValueError, match="sobol, lhs, random"):
        sample_unit("halton", 8, 2, seed=0)


@pytest.mark.parametrize("kwargs", [{"n_samples": 0}, {"n_params": 0}, {"seed": -1}, {"start": -1}])
def test_bad_counts_raise(kwargs):
    args = {"design": "random", "n_samples": 4, "n_params": 2, "seed": 0, **kwargs}
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        sample_unit(**args)


def test_sobol_balance_warning_is_ours_and_only_for_unbalanced_designs():
    with pytest.warns(SobolBalanceWarning, match="power of 2") as record:
        sample_unit("sobol", 100, 2, seed=0)
    assert len(record) == 1  # scipy's own per-call warning is not passed on as well
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sample_unit("sobol", 128, 2, seed=0)
        sample_unit("sobol", 3, 2, seed=0, start=128)  # a block of a larger design


def test_sobol_is_more_uniform_than_random():
    # Centred L2 discrepancy of 256 scrambled Sobol' points is O(log(n)^d / n) against
    # O(n^-1/2) for random points: an order of magnitude apart at n = 256, d = 3.
    sobol = qmc.discrepancy(sample_unit("sobol", 256, 3, seed=1))
    random = qmc.discrepancy(sample_unit("random", 256, 3, seed=1))
    assert sobol < random / 5


@pytest.mark.parametrize("marginal", [Uniform(-2.0, 3.0), LogUniform(1e-4, 10.0)])
def test_marginal_round_trip(marginal):
    u = sample_unit("sobol", 256, 1, seed=4)[:, 0]
    x = marginal.ppf(u)
    assert np.all((x >= marginal.low) & (x <= marginal.high))
    # Round trip through exp/log or an affine map loses a few ulps at most.
    np.testing.assert_allclose(marginal.cdf(x), u, rtol=0, atol=1e-12)
    np.testing.assert_allclose(marginal.ppf(marginal.cdf(x)), x, rtol=1e-12)
    np.testing.assert_allclose(marginal.ppf(np.array([0.0, 1.0])), [marginal.low, marginal.high])
    np.testing.assert_array_equal(marginal.cdf(np.array([-1e9, 1e9])), [0.0, 1.0])


def test_loguniform_log_is_uniform():
    low, high = 1e-3, 10.0
    x = LogUniform(low, high).ppf(sample_unit("random", 2000, 1, seed=3)[:, 0])
    log_range = np.log(high) - np.log(low)
    # KS at significance 0.01 with a fixed seed: log(x) must look uniform ...
    assert stats.kstest(np.log(x), stats.uniform(np.log(low), log_range).cdf).pvalue > 0.01
    # ... and the same test can fail: x itself, 75% of it below 0.1, is far from uniform.
    assert stats.kstest(x, stats.uniform(low, high - low).cdf).pvalue < 1e-6


@pytest.mark.parametrize("cls", MARGINALS.values())
def test_marginal_validation_names_the_field(cls):
    with pytest.raises(ValueError, match="low must be < high"):
        cls(2.0, 1.0)
    with pytest.raises(ValueError, match="finite"):
        cls(0.1, np.inf)


def test_loguniform_needs_positive_low():
    with pytest.raises(ValueError, match="low must be > 0"):
        LogUniform(0.0, 1.0)


def test_marginals_are_frozen():
    with pytest.raises(AttributeError):
        Uniform(0.0, 1.0).low = 3.0  # type: ignore[misc]


def test_sample_seeds_deterministic_distinct_and_regenerable():
    seeds = sample_seeds(42, np.arange(1000))
    assert seeds.dtype == np.uint32 and seeds.shape == (1000,)
    np.testing.assert_array_equal(seeds, sample_seeds(42, np.arange(1000)))
    # 32-bit seeds: a collision among 1000 has probability ~1e-4; with this fixed seed, none.
    assert np.unique(seeds).size == 1000
    np.testing.assert_array_equal(sample_seeds(42, np.array([731, 5])), seeds[[731, 5]])
    assert np.mean(sample_seeds(43, np.arange(1000)) == seeds) < 0.01
    expected = np.random.SeedSequence(42, spawn_key=(7,)).generate_state(1)[0]
    assert seeds[7] == expected


def test_sample_seeds_rejects_negative_indices():
    with pytest.raises(ValueError, match="non-negative"):
        sample_seeds(0, np.array([1, -1]))
