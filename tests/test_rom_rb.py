"""The thermal block and its certified reduced basis: truth, affine assembly, rigour, exactness.

Everything runs at n = 32 cells per side (1,088 unknowns with the interface faces) or smaller;
the figures at n = 128 are in benchmarks/rom_rb.py.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from pdeflow.tasks.pdes import Darcy2D, ThermalBlock2x2, ThermalBlock3x2, get_pde
from pdeflow.tasks.pdes.thermal_block import affine_operator, block_index, solve_truth
from pdeflow.tasks.rom.rb import ReducedBasis
from pdeflow.tasks.rom.rb_affine import dual_norm_gram, residual_dual_norms

N = 32
N_BASIS = 12


@pytest.fixture(scope="module")
def operator():
    return affine_operator((2, 2), N)


@pytest.fixture(scope="module")
def fitted(operator):
    fit_mu = np.random.default_rng(1).uniform(0.1, 1.0, (8, 4))
    return ReducedBasis(n_basis=N_BASIS, tol=1e-9, training_size=300, seed=0).fit(
        fit_mu, operator=operator
    )


@pytest.fixture(scope="module")
def test_set(operator):
    mu = np.random.default_rng(2).uniform(0.1, 1.0, (200, 4))
    return mu, solve_truth(operator, mu)


def _x_norms(operator, e: np.ndarray) -> np.ndarray:
    x = operator.assemble(operator.mu_ref)
    return np.sqrt(np.einsum("pi,pi->p", e, (x @ e.T).T))


# --- the truth ----------------------------------------------------------------------------


def _direct_matrix(a: np.ndarray, mean: str) -> scipy.sparse.csr_matrix:
    """The 5-point matrix for cell permeability ``a`` (n, n), assembled cell by cell: the
    harmonic (Darcy2D) or arithmetic mean on interior faces, ``2 a`` on boundary faces."""
    n = a.shape[0]
    rows, cols, vals = [], [], []
    for i in range(n):
        for j in range(n):
            k, diag = i * n + j, 0.0
            for ii, jj in ((i - 1, j), (i + 1, j), (i, j - 1), (i, j + 1)):
                if 0 <= ii < n and 0 <= jj < n:
                    p, q = a[i, j], a[ii, jj]
                    t = 2 * p * q / (p + q) if mean == "harmonic" else (p + q) / 2
                    rows.append(k), cols.append(ii * n + jj), vals.append(-t)
                else:
                    t = 2 * a[i, j]
                diag += t
            rows.append(k), cols.append(k), vals.append(diag)
    return scipy.sparse.csr_matrix((np.array(vals) * n**2, (rows, cols)), shape=(n * n, n * n))


def test_affine_terms_sum_to_a_direct_assembly():
    # sum_q mu_q A_q with the interface-face unknowns eliminated (Schur complement) must be
    # the harmonic-mean matrix assembled directly from the cell permeabilities, and the
    # arithmetic variant the arithmetic-mean matrix, entry by entry (sums of a few O(n^2)
    # terms: 1e-12 of the largest entry is round-off with a 1e3 margin).
    n, mu = 12, np.random.default_rng(3).uniform(0.1, 1.0, 6)
    op = affine_operator((3, 2), n)
    a, k = op.assemble(mu).toarray(), n * n
    schur = a[:k, :k] - a[:k, k:] @ np.linalg.solve(a[k:, k:], a[k:, :k])
    cells = mu[block_index((3, 2), n)]
    direct = _direct_matrix(cells, "harmonic").toarray()
    np.testing.assert_allclose(schur, direct, rtol=0, atol=1e-12 * np.abs(direct).max())
    arith = affine_operator((3, 2), n, interface="arithmetic").assemble(mu).toarray()
    direct = _direct_matrix(cells, "arithmetic").toarray()
    np.testing.assert_allclose(arith, direct, rtol=0, atol=1e-12 * np.abs(direct).max())
    for term in op.matrices:  # each term symmetric positive semi-definite (min-theta needs it)
        dense = term.toarray()
        assert np.array_equal(dense, dense.T)
        assert np.linalg.eigvalsh(dense).min() > -1e-12 * np.abs(dense).max()


def test_the_pde_solves_darcy2d_with_a_blockwise_permeability():
    # The cell values are Darcy2D's harmonic-mean scheme exactly (independent code, with its
    # own assembly): equal to round-off of two sparse LU solves (measured 1.7e-14).
    mu = np.random.default_rng(4).uniform(0.1, 1.0, (3, 4))
    pde = ThermalBlock2x2(N, **{f"mu_{q + 1}": mu[:, q] for q in range(4)})
    u = pde.rollout(ThermalBlock2x2.initial_condition(pde.grid, [0, 1, 2]))[:, 0, 0].numpy()
    a = torch.from_numpy(mu[:, block_index((2, 2), N)])
    ref = Darcy2D(N, beta=1.0, method="direct").solve(a).numpy()
    np.testing.assert_allclose(u, ref, rtol=0, atol=1e-12 * np.abs(ref).max())
    # The reduced basis reduces this same truth: the operator's solve, bit for bit.
    truth = solve_truth(affine_operator((2, 2), N), mu)[:, : N * N]
    np.testing.assert_array_equal(u.reshape(3, -1), truth)


def test_grid_not_divisible_by_the_blocks_is_refused():
    with pytest.raises(ValueError, match="grid: n must be divisible by the block counts 3"):
        ThermalBlock3x2(16, **{f"mu_{q + 1}": 0.5 for q in range(6)})
    assert get_pde("thermal_block_3x2").info.defaults.n % 6 == 0
    assert get_pde("thermal_block_2x2").info.defaults.n == 128


def test_lift_recovers_the_interface_values(operator, test_set):
    mu, truth = test_set
    lifted = operator.lift(mu[:5], truth[:5, : operator.n_outputs])
    np.testing.assert_allclose(lifted, truth[:5], rtol=0, atol=1e-12 * np.abs(truth).max())


# --- the reduced basis ----------------------------------------------------------------------


def test_the_bound_holds_with_effectivity_between_1_and_the_contrast(fitted, operator, test_set):
    # Delta = ||r||_X' / alpha_LB >= ||e||_X (coercivity), and ||r||_X' <= gamma ||e||_X with
    # gamma <= max_q mu_q (continuity), so 1 <= Delta / ||e||_X <= max mu / min mu, for every
    # parameter and every N. At N <= 12 the errors are >= 1e-6 relative, far above round-off,
    # so no slack is needed on either side.
    mu, truth = test_set
    contrast = mu.max(axis=1) / mu.min(axis=1)
    for n in range(1, fitted.n_basis_ + 1):
        err = fitted.energy_errors(mu, truth, n_basis=n, relative=False)
        eff = fitted.error_bound(mu, n_basis=n) / err
        assert eff.min() >= 1.0 and np.all(eff <= contrast), (n, eff.min(), eff.max())
    rel = fitted.energy_errors(mu, truth)
    assert np.all(fitted.error_estimate(mu) >= rel * (1 - fitted.error_estimate(mu)))


def test_galerkin_energy_error_never_grows_with_n(fitted, operator, test_set):
    # Galerkin minimises the A(mu)-energy norm of the error over the span, and the spans are
    # nested: the error in that norm is non-increasing in N for every mu (up to round-off).
    mu, truth = test_set
    prev = np.inf
    for n in range(1, fitted.n_basis_ + 1):
        c = fitted.solve_reduced(mu, n_basis=n)
        e = truth - c @ fitted.basis_[:, :n].T
        energy = np.array([ei @ (operator.assemble(m) @ ei) for ei, m in zip(e, mu, strict=True)])
        assert np.all(energy <= prev * (1 + 1e-10)), n
        prev = energy


def test_exact_at_a_basis_parameter(fitted, operator):
    # u(mu_n) lies in the span: the Galerkin solution equals it to the round-off of the LU
    # solve and the projection (measured <= 1.2e-14 relative), and so does the bound (measured
    # <= 3.5e-14; the textbook Gram form gives up to 1.9e-8 here, its cancellation floor).
    mu = fitted.basis_parameters_
    truth = solve_truth(operator, mu)
    assert fitted.energy_errors(mu, truth).max() < 1e-12
    assert fitted.error_estimate(mu).max() < 1e-12


def test_the_dual_norm_matches_the_full_residual(fitted, operator, test_set):
    # ||r||_X' from the reduced factor against sqrt(r^T X^{-1} r) from the full residual
    # vector, at N = 12 where ||r|| >= 5e-4 ||f||_X': measured 6e-13 apart (1e-9 leaves 1e3).
    # The Gram form theta^T G theta, 4e-10 apart here, must at least agree to 1e-6; its floor
    # of ~1e-8 ||f||_X' shows at smaller residuals (test_exact_at_a_basis_parameter).
    mu = test_set[0][:20]
    c = fitted.solve_reduced(mu)
    x = operator.assemble(operator.mu_ref).tocsc()
    full = []
    for m, ci in zip(mu, c, strict=True):
        r = operator.rhs - operator.assemble(m) @ (fitted.basis_ @ ci)
        full.append(np.sqrt(r @ scipy.sparse.linalg.spsolve(x, r)))
    stable = residual_dual_norms(mu, c, fitted.residual_factor_)
    np.testing.assert_allclose(stable, full, rtol=1e-9)
    np.testing.assert_allclose(dual_norm_gram(mu, c, fitted.residual_factor_), full, rtol=1e-6)


def test_greedy_max_bound_decreases_and_the_sets_stay_orthonormal(fitted, operator):
    errors = fitted.greedy_errors_
    assert errors.shape == (fitted.n_basis_,) and fitted.basis_parameters_.shape == (N_BASIS, 4)
    # Measured non-increasing here (the max of the bound need not fall every step in theory),
    # from 8.3 to 1.4e-2 over 12 steps: 1e-2 of the first leaves a 5x margin.
    assert np.all(np.diff(errors) <= 0) and errors[-1] < 1e-2 * errors[0]
    x = operator.assemble(operator.mu_ref)
    gram = fitted.basis_.T @ (x @ fitted.basis_)
    np.testing.assert_allclose(gram, np.eye(N_BASIS), rtol=0, atol=1e-12)
    np.testing.assert_allclose(fitted.basis_gram_, gram, rtol=0, atol=1e-13)


def test_stops_at_tol_and_seeds_repeat(operator):
    a = ReducedBasis(n_basis=30, tol=1e-2, training_size=100, seed=5).fit(
        np.empty((0, 4)), operator=operator
    )
    assert a.greedy_errors_[-1] <= 1e-2 < a.greedy_errors_[-2] and a.n_basis_ < 30
    b = ReducedBasis(n_basis=30, tol=1e-2, training_size=100, seed=5).fit(
        np.empty((0, 4)), operator=operator
    )
    np.testing.assert_array_equal(a.basis_parameters_, b.basis_parameters_)
    assert a.training_size_ == 100


def test_online_never_touches_a_full_size_array(fitted, operator, test_set):
    mu = test_set[0][:10]
    arrays, attrs = fitted.to_arrays()
    sizes = {operator.n_dofs, operator.n_outputs}
    for name, value in arrays.items():
        if name != "basis":
            assert not sizes & set(value.shape), (name, value.shape)
    online = ReducedBasis.from_arrays({**arrays, "basis": np.zeros((0, 0))}, attrs)
    np.testing.assert_array_equal(online.error_estimate(mu), fitted.error_estimate(mu))
    np.testing.assert_array_equal(online.solve_reduced(mu), fitted.solve_reduced(mu))
    assert online.operator_ is None


def test_round_trip_and_clone(fitted, test_set):
    mu = test_set[0][:10]
    arrays, attrs = fitted.to_arrays()
    json.dumps(attrs)
    back = ReducedBasis.from_arrays(*fitted.to_arrays())
    np.testing.assert_allclose(back.predict(mu), fitted.predict(mu), rtol=0, atol=1e-12)
    np.testing.assert_array_equal(back.error_estimate(mu), fitted.error_estimate(mu))
    np.testing.assert_array_equal(back.greedy_errors_, fitted.greedy_errors_)
    assert back.predict(mu).shape == (10, 1, N * N)
    assert back.get_params() == fitted.get_params()
    fresh = clone(fitted)
    assert fresh.get_params() == fitted.get_params() and not hasattr(fresh, "basis_")


def test_bad_input_is_refused(fitted, operator):
    mu = np.full((2, 4), 0.5)
    with pytest.raises(NotFittedError):
        ReducedBasis().predict(mu)
    bad_settings = [("n_basis", 0), ("tol", 1.5), ("training_size", -1), ("seed", 0.5)]
    for name, value in bad_settings:
        with pytest.raises(ValueError, match=name):
            ReducedBasis(**{name: value}).fit(mu, operator=operator)
    with pytest.raises(ValueError, match="operator"):
        ReducedBasis().fit(mu)
    with pytest.raises(ValueError, match="params must have shape"):
        fitted.predict(np.full((2, 3), 0.5))
    with pytest.raises(ValueError, match="params must be finite and > 0"):
        fitted.error_estimate(np.array([[0.5, 0.5, 0.0, 0.5]]))
    with pytest.raises(ValueError, match="trajectories must have shape"):
        ReducedBasis().fit(mu, np.zeros((2, 1, 5)), operator=operator)
    with pytest.raises(ValueError, match=r"n_basis must be an integer in \[1, 12\]"):
        fitted.predict(mu, n_basis=13)
    with pytest.raises(ValueError, match="truth must have shape"):
        fitted.energy_errors(mu, np.zeros((2, 7)))
