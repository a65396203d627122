"""Tests of pdeflow.tasks.rom: POD against exact low-rank matrices, the ROM against an analytic
family."""

import inspect

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError
from threadpoolctl import threadpool_limits

from pdeflow.tasks.rom import (
    APPROXIMATIONS,
    POD,
    REDUCTIONS,
    ReducedOrderModel,
    fix_signs,
    get_approximation,
    get_reduction,
    select_rank,
)

# Noise-free data drive the GP noise level to its lower bound and the amplitude towards the flat
# limit, which sklearn reports as ConvergenceWarning; that is expected here, not a failure.
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread():
    # The matrices here are tiny; on a loaded 2-core machine OpenBLAS's thread hand-off made a
    # 275 x 64 SVD take ~1 s instead of ~4 ms.
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def _orthonormal(rng, n_rows, n_cols, avoid_ones=False):
    """Random (n_rows, n_cols) matrix with orthonormal columns, optionally orthogonal to ones."""
    extra = 1 if avoid_ones else 0
    a = rng.standard_normal((n_rows, n_cols + extra))
    if avoid_ones:
        a[:, 0] = 1.0
    q, _ = np.linalg.qr(a)
    return q[:, extra:]


# --- 1. POD of an exactly rank-5 matrix ------------------------------------------------------


@pytest.mark.parametrize("center", [False, True])
def test_pod_recovers_exact_rank_five(center):
    rng = np.random.default_rng(0)
    sigma = np.array([10.0, 5.0, 2.0, 1.0, 0.5])
    # Columns of U orthogonal to ones give X zero column means, so with centring the SVD of
    # X + offset must see exactly X again.
    u = _orthonormal(rng, 60, 5, avoid_ones=center)
    v = _orthonormal(rng, 40, 5)
    x = (u * sigma) @ v.T
    offset = rng.standard_normal(40) if center else np.zeros(40)

    pod = POD(energy=1 - 1e-12, center=center).fit(x + offset)

    # The 6th singular value is round-off, ~1e-15 * 10, so its energy share is ~1e-30.
    assert pod.rank_ == 5
    # A backward-stable SVD perturbs X by ~eps * ||X|| ~ 1e-15 relative, so 1e-12 leaves a factor
    # ~1000 for the constants in the bounds (Weyl's inequality for the singular values).
    np.testing.assert_allclose(pod.singular_values_[:5], sigma, rtol=1e-12)
    assert pod.singular_values_[5] < 1e-12 * sigma[0]
    np.testing.assert_allclose(pod.mean_, offset, atol=1e-12)
    np.testing.assert_allclose(pod.modes_ @ pod.modes_.T, np.eye(5), atol=1e-12)
    # Distinct singular values make each mode unique up to sign: it must be +-v_k.
    np.testing.assert_allclose(np.abs(pod.modes_ @ v), np.eye(5), atol=1e-10)
    assert pod.projection_error(x + offset) < 1e-12
    assert pod.energy_ == pytest.approx(1.0, abs=1e-12)
    coefficients = pod.transform(x + offset)
    assert coefficients.shape == (60, 5)
    np.testing.assert_allclose(pod.inverse_transform(coefficients), x + offset, atol=1e-12)


def test_pod_truncation_error_matches_discarded_singular_values():
    # Eckart-Young: the rank-r truncation error of an uncentred POD is sqrt(sum_{k>r} s_k^2).
    rng = np.random.default_rng(1)
    sigma = 2.0 ** -np.arange(8)
    x = (_orthonormal(rng, 30, 8) * sigma) @ _orthonormal(rng, 20, 8).T
    pod = POD(rank=3, center=False).fit(x)
    expected = np.sqrt(np.sum(sigma[3:] ** 2) / np.sum(sigma**2))
    assert pod.projection_error(x) == pytest.approx(expected, rel=1e-10)
    assert pod.energy_ == pytest.approx(1 - expected**2, rel=1e-12)


# --- 2. rank selection ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("energy", "rank"), [(0.3, 1), (0.6, 1), (0.7, 2), (0.9, 2), (0.95, 3), (1.0, 3)]
)
def test_select_rank_on_designed_spectrum(energy, rank):
    # Energy shares 0.6, 0.3, 0.1.
    assert select_rank(np.sqrt([0.6, 0.3, 0.1]), energy) == rank


def test_select_rank_meets_exact_targets_despite_rounding():
    # Ten equal energy shares of 0.1: rank r captures exactly r / 10, but the floating-point
    # cumulative sum falls an ulp short at r = 8, 9 and 10.
    singular_values = np.full(10, np.sqrt(0.1))
    assert [select_rank(singular_values, r / 10) for r in range(1, 11)] == list(range(1, 11))


@pytest.mark.parametrize("energy", [0.5, 0.9, 0.99, 0.999, 0.9999])
def test_select_rank_on_geometric_spectrum(energy):
    # s_k = q^k: captured fraction (1 - q^(2r)) / (1 - q^(2n)), solved for the smallest r.
    q, n = 0.8, 60
    total = 1 - q ** (2 * n)
    analytic = int(np.ceil(np.log(1 - energy * total) / np.log(q**2)))
    assert select_rank(q ** np.arange(n), energy) == analytic


@pytest.mark.parametrize("energy", [0.0, -0.1, 1.0 + 1e-9, 2.0, np.nan])
def test_invalid_energy_raises(energy):
    with pytest.raises(ValueError, match="energy"):
        select_rank(np.array([3.0, 2.0, 1.0]), energy)
    with pytest.raises(ValueError, match="energy"):
        POD(energy=energy).fit(np.random.default_rng(0).standard_normal((5, 4)))


def test_invalid_rank_and_spectrum_raise():
    x = np.random.default_rng(0).standard_normal((5, 4))
    with pytest.raises(ValueError, match="rank"):
        POD(rank=6).fit(x)
    with pytest.raises(ValueError, match="non-increasing"):
        select_rank(np.array([1.0, 2.0]), 0.9)


# --- 3. sign convention and from_svd ------------------------------------------------------------


def test_fix_signs_makes_largest_entry_positive():
    vt = np.array([[0.1, -0.9, 0.3], [0.6, 0.2, -0.5]])
    fixed = fix_signs(vt)
    np.testing.assert_array_equal(fixed, [[-0.1, 0.9, -0.3], [0.6, 0.2, -0.5]])
    np.testing.assert_array_equal(fix_signs(-vt), fixed)


def test_modes_do_not_depend_on_snapshot_order_or_sign():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((50, 30)) @ np.diag(np.linspace(3.0, 0.1, 30))
    reference = POD(rank=10).fit(x)
    permuted = POD(rank=10).fit(x[rng.permutation(50)])
    negated = POD(rank=10).fit(-x)
    # Same subspace from a reordered matrix agrees to round-off; without the sign convention
    # about half the rows would differ by a factor -1.
    np.testing.assert_allclose(permuted.modes_, reference.modes_, atol=1e-10)
    np.testing.assert_allclose(negated.modes_, reference.modes_, atol=1e-10)


def test_from_svd_equals_fit():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((200, 25)) @ np.diag(2.0 ** -np.arange(25)) + 1.0
    fitted = POD(energy=0.999).fit(x)
    # Emulate a tall-skinny QR done elsewhere: X - mean = QR, then the SVD of the small R, with
    # arbitrary signs on the singular vectors.
    mean = x.mean(axis=0)
    _, r = np.linalg.qr(x - mean)
    _, s, vt = np.linalg.svd(r)
    vt *= rng.choice([-1.0, 1.0], size=(vt.shape[0], 1))
    built = POD.from_svd(s, vt, mean, energy=0.999)
    assert built.rank_ == fitted.rank_
    assert built.energy_ == pytest.approx(fitted.energy_, rel=1e-12)
    np.testing.assert_allclose(built.singular_values_, fitted.singular_values_, rtol=1e-10)
    np.testing.assert_allclose(built.modes_, fitted.modes_, atol=1e-10)
    np.testing.assert_allclose(built.transform(x), fitted.transform(x), atol=1e-10)
    with pytest.raises(ValueError, match="orthonormal"):
        POD.from_svd(s, 2 * vt, mean, rank=3)


# --- 4. ROM on an analytic parametric family ---------------------------------------------------

N_X, N_TIME, N_WAVES = 64, 11, 16
X_GRID = 2 * np.pi * np.arange(N_X) / N_X
T_GRID = np.linspace(0.0, 2.0, N_TIME)
BOUNDS = np.array([[0.01, 0.1], [0.0, 1.0]])  # viscosity nu, amplitude of sin(2x)


def heat_family(params):
    """Exact solution of u_t = nu u_xx on [0, 2 pi), periodic, shape (n, N_TIME, N_X).

    u(x, 0) = sum_k sin(k x) / k^2 + a sin(2 x) for k = 1..16, so every Fourier mode decays as
    exp(-nu k^2 t): the POD spectrum decays fast but not in finitely many modes on the grid.
    """
    k = np.arange(1, N_WAVES + 1)
    amplitudes = np.tile(1.0 / k**2, (len(params), 1))
    amplitudes[:, 1] += params[:, 1]
    decay = np.exp(-params[:, 0, None, None] * k**2 * T_GRID[None, :, None])
    return np.einsum("ntk,kx->ntx", amplitudes[:, None, :] * decay, np.sin(np.outer(k, X_GRID)))


def latin_hypercube(n, seed):
    """Latin hypercube design (McKay et al. 1979) in BOUNDS, shape (n, 2).

    Written out because scipy's LatinHypercube renamed its seed argument within the supported
    scipy range (>= 1.12).
    """
    rng = np.random.default_rng(seed)
    strata = np.column_stack([rng.permutation(n) for _ in range(len(BOUNDS))])
    unit = (strata + rng.random((n, len(BOUNDS)))) / n
    return BOUNDS[:, 0] + unit * (BOUNDS[:, 1] - BOUNDS[:, 0])


@pytest.fixture(scope="module")
def heat_data():
    train, test = latin_hypercube(100, seed=0), latin_hypercube(40, seed=1)
    return train, heat_family(train), test, heat_family(test)


def _regression_errors(rom, params, trajectories):
    """Per-sample coefficient error of the ROM relative to ||u||, shape (n,)."""
    snapshots = trajectories.reshape(-1, N_X)
    exact = rom.reduction_.transform(snapshots).reshape(len(params), N_TIME, -1)
    error = rom.predict_coefficients(params) - exact
    norms = np.linalg.norm(trajectories.reshape(len(params), -1), axis=1)
    return np.linalg.norm(error.reshape(len(params), -1), axis=1) / norms


@pytest.mark.parametrize("name", ["rbf", "gpr"])
def test_rom_on_heat_family(heat_data, name):
    train, u_train, test, u_test = heat_data
    rom = ReducedOrderModel(POD(energy=1 - 1e-7), get_approximation(name)()).fit(train, u_train)
    errors = rom.relative_errors(test, u_test)
    floor = rom.projection_errors(u_test)
    regression = _regression_errors(rom, test, u_test)

    # Pythagoras: the prediction lies in the affine POD space and the projection residual is
    # orthogonal to it, so error^2 = floor^2 + regression^2 exactly, and error >= floor.
    np.testing.assert_allclose(errors**2, floor**2 + regression**2, rtol=1e-8)
    assert np.all(errors >= floor)
    assert 1e-6 < floor.mean() < 1e-3  # rank 6 of 16 waves: a real, small truncation floor
    # Tolerance: predicting the mean training trajectory is the zeroth-order model (error ~0.19);
    # a smooth interpolant on fill distance h ~ n^(-1/2) = 0.1 should gain at least a factor
    # h^2 = 1e-2 on it. Measured: RBF 4.9e-4, GPR 4.56e-5, floor 4.45e-5.
    baseline = np.linalg.norm((u_test - u_train.mean(axis=0)).reshape(40, -1), axis=1)
    baseline /= np.linalg.norm(u_test.reshape(40, -1), axis=1)
    assert errors.mean() < baseline.mean() * 1e-2


def test_rbf_regression_error_converges(heat_data):
    _, _, test, u_test = heat_data
    means = {}
    for n in (25, 400):
        errors = []
        # A single design is noisy (one 25 -> 100 step gained only 1.8x), so average three.
        for seed in range(3):
            train = latin_hypercube(n, seed=seed)
            rom = ReducedOrderModel(POD(energy=1 - 1e-7), get_approximation("rbf")())
            rom.fit(train, heat_family(train))
            errors.append(_regression_errors(rom, test, u_test).mean())
        means[n] = np.mean(errors)
    # Thin-plate splines converge at least like h for smooth targets (native-space bound) and
    # like h^2 or better in practice; 16x the samples quarters h, so we require a factor > 4.
    # Measured: 1.6e-3 -> 5.0e-5 (factor ~33).
    assert means[400] < means[25] / 4


def test_fit_coefficients_matches_fit(heat_data):
    train, u_train, test, _ = heat_data
    snapshots = u_train.reshape(-1, N_X)
    pod = POD(energy=1 - 1e-7).fit(snapshots)
    coefficients = pod.transform(snapshots).reshape(len(train), N_TIME, pod.rank_)
    approximation = get_approximation("rbf")()
    out_of_core = ReducedOrderModel(pod, approximation).fit_coefficients(train, coefficients)
    in_core = ReducedOrderModel(POD(energy=1 - 1e-7), approximation).fit(train, u_train)
    np.testing.assert_allclose(out_of_core.predict(test), in_core.predict(test), atol=1e-12)
    with pytest.raises(ValueError, match="rank"):
        ReducedOrderModel(pod, approximation).fit_coefficients(train, coefficients[..., :-1])
    with pytest.raises(NotFittedError):
        ReducedOrderModel(POD(), approximation).fit_coefficients(train, coefficients)


# --- 5. scikit-learn contract over every registry entry -------------------------------------


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(ValueError, match="pod"):
        get_reduction("svd")
    with pytest.raises(ValueError, match="gpr, nn, rbf"):
        get_approximation("kriging")


def _check_settings_only(estimator):
    """__init__ stores exactly its arguments, none of them learned state."""
    names = set(inspect.signature(type(estimator).__init__).parameters) - {"self"}
    assert set(vars(estimator)) == names
    return dict(vars(estimator))


def _check_learned_state(estimator, settings):
    """fit left the settings alone and added only attributes ending in '_'."""
    learned = {k: v for k, v in vars(estimator).items() if k not in settings}
    assert learned and all(k.endswith("_") and not k.startswith("_") for k in learned)
    assert {k: vars(estimator)[k] for k in settings} == settings
    return learned


@pytest.mark.parametrize("name", sorted(REDUCTIONS))
def test_reduction_contract(name):
    x = np.random.default_rng(4).standard_normal((30, 12))
    reduction = get_reduction(name)()
    settings = _check_settings_only(reduction)
    with pytest.raises(NotFittedError):
        reduction.transform(x)
    assert reduction.fit(x) is reduction
    learned = _check_learned_state(reduction, settings)
    assert reduction.transform(x).shape == (30, reduction.rank_)
    assert reduction.inverse_transform(reduction.transform(x)).shape == x.shape
    again = get_reduction(name)().fit(x)
    for key, value in learned.items():
        np.testing.assert_array_equal(vars(again)[key], value)


def _smooth_outputs(params):
    return np.column_stack(
        [np.sin(3 * params[:, 0]) * params[:, 1], np.exp(-params[:, 0]), params[:, 1] ** 2]
    )


@pytest.mark.parametrize("name", sorted(APPROXIMATIONS))
def test_approximation_contract(name):
    rng = np.random.default_rng(5)
    params, new = rng.uniform(size=(20, 2)), rng.uniform(size=(7, 2))
    outputs = _smooth_outputs(params)
    approximation = get_approximation(name)()
    settings = _check_settings_only(approximation)
    with pytest.raises(NotFittedError):
        approximation.predict(new)
    assert approximation.fit(params, outputs) is approximation
    _check_learned_state(approximation, settings)
    prediction = approximation.predict(new)
    assert prediction.shape == (7, 3)
    again = get_approximation(name)().fit(params, outputs).predict(new)
    np.testing.assert_array_equal(again, prediction)
    # The unit-cube scaling makes the model blind to each parameter's units: rescaling a
    # parameter changes the scaled inputs only by round-off. RBF then agrees to ~1e-15
    # (measured 7e-16). The GP re-optimises its hyperparameters near the flat limit, where the
    # likelihood is a shallow ridge and L-BFGS stops at a tolerance, so round-off moves its
    # prediction by ~6e-7 (measured) on these O(1) outputs. The network's L-BFGS follows
    # another path from rescaled inputs that differ by round-off: 2.4e-3 measured.
    tolerance = {"rbf": 1e-12, "gpr": 1e-4, "nn": 1e-2}[name]
    scale, shift = np.array([0.09, 1e3]), np.array([0.01, -5.0])
    rescaled = get_approximation(name)().fit(params * scale + shift, outputs)
    np.testing.assert_allclose(rescaled.predict(new * scale + shift), prediction, atol=tolerance)


@pytest.mark.parametrize("name", sorted(APPROXIMATIONS))
def test_rom_contract(name):
    params = latin_hypercube(12, seed=2)
    trajectories = heat_family(params)
    reduction, approximation = POD(rank=4), get_approximation(name)()
    rom = ReducedOrderModel(reduction, approximation)
    settings = _check_settings_only(rom)
    with pytest.raises(NotFittedError):
        rom.predict(params)
    assert rom.fit(params, trajectories) is rom
    _check_learned_state(rom, settings)
    # The constructor arguments stay unfitted: the ROM fits copies.
    _check_settings_only(reduction)
    _check_settings_only(approximation)
    assert rom.predict(params[:3]).shape == (3, N_TIME, N_X)
    assert rom.predict_coefficients(params[:3]).shape == (3, N_TIME, 4)
    assert rom.relative_errors(params, trajectories).shape == (12,)
    again = ReducedOrderModel(POD(rank=4), get_approximation(name)()).fit(params, trajectories)
    np.testing.assert_array_equal(again.predict(params), rom.predict(params))


# --- 6. Random initial states as inputs, energy under a cap, baselines -------------------------


def random_start_family(nu, amplitudes):
    """Heat equation from u0 = sum_k c_k sin(k x), k = 1..3; c drawn per sample, not a parameter."""
    k = np.arange(1, 4)
    decay = np.exp(-nu[:, None, None] * k**2 * T_GRID[None, :, None])
    return np.einsum("ntk,kx->ntx", amplitudes[:, None, :] * decay, np.sin(np.outer(k, X_GRID)))


def test_rom_with_initial_state_inputs_predicts_what_parameters_alone_cannot():
    rng = np.random.default_rng(0)
    nu_train, nu_test = rng.uniform(0.01, 0.1, (60, 1)), rng.uniform(0.01, 0.1, (20, 1))
    u_train = random_start_family(nu_train[:, 0], rng.uniform(-1, 1, (60, 3)))
    u_test = random_start_family(nu_test[:, 0], rng.uniform(-1, 1, (20, 3)))
    alone = ReducedOrderModel(POD(energy=1 - 1e-10), get_approximation("rbf")())
    alone = alone.fit(nu_train, u_train)
    both = ReducedOrderModel(POD(energy=1 - 1e-10), get_approximation("rbf")(), POD(rank=3))
    both = both.fit(nu_train, u_train)
    assert both.uses_initial_state and not alone.uses_initial_state
    # The field is a smooth function of (nu, c) but not of nu: measured 2.42 against 0.016.
    assert alone.relative_errors(nu_test, u_test).mean() > 0.5
    assert both.relative_errors(nu_test, u_test).mean() < 0.05
    np.testing.assert_allclose(both.predict(nu_test, u_test[:, 0])[:, 0], u_test[:, 0], atol=1e-8)
    with pytest.raises(ValueError, match="initial_states"):
        both.predict(nu_test)
    # Coefficients computed elsewhere give the same model.
    snaps = u_train.reshape(-1, N_X)
    again = ReducedOrderModel(both.reduction_, get_approximation("rbf")(), both.initial_reduction_)
    again.fit_coefficients(
        nu_train,
        both.reduction_.transform(snaps).reshape(60, N_TIME, -1),
        both.initial_reduction_.transform(u_train[:, 0]),
    )
    np.testing.assert_allclose(
        again.predict(nu_test, u_test[:, 0]), both.predict(nu_test, u_test[:, 0])
    )
    with pytest.raises(ValueError, match="initial_coefficients"):
        again.fit_coefficients(nu_train, both.reduction_.transform(snaps).reshape(60, N_TIME, -1))


def test_energy_counts_the_singular_values_not_computed():
    s = np.array([4.0, 2.0, 1.0])
    # 21 of the energy is in the three computed values, 4 more in values never computed.
    assert POD.from_svd(s, np.eye(3), None, rank=2, total_energy=25.0).energy_ == pytest.approx(0.8)
    assert select_rank(s, 0.8, total_energy=25.0) == 2
    assert select_rank(s, 0.9, total_energy=25.0) == 3  # unreachable: every computed mode


def test_rank_cap_and_baseline_warnings_give_the_numbers_and_the_cause():
    from pdeflow.tasks.config import PipelineConfig, ReduceConfig
    from pdeflow.tasks.stages.reduce import baseline_warning, rank_cap_warning

    s = 0.5 ** np.arange(12)
    pod = POD.from_svd(s, np.eye(12), None, rank=3)
    capped = rank_cap_warning(ReduceConfig(max_rank=3, energy=0.99999), pod)
    assert f"{pod.energy_:.6g}" in capped and "reduce.energy=0.99999" in capped
    assert "reduce.max_rank=3" in capped and "needs 9 modes" in capped
    assert rank_cap_warning(ReduceConfig(max_rank=3, energy=0.9), pod) is None
    assert rank_cap_warning(ReduceConfig(max_rank=8, energy=0.99999), pod) is None

    cfg = PipelineConfig()
    m = {
        "rom_rel_error_mean": 1.47,
        "pod_projection_error_mean": 0.13,
        "baseline_mean_rel_error_mean": 1.01,
        "initial_modes": 0,
    }
    loses = baseline_warning(m, cfg, random_initial=True, n_train=300)
    assert "1.47 is no better than predicting zero" in loses
    assert "drawn at random" in loses and "reduce.initial_modes" in loses
    assert baseline_warning({**m, "rom_rel_error_mean": 0.6}, cfg, True, 300) is None
    mean_wins = baseline_warning({**m, "baseline_mean_rel_error_mean": 0.4}, cfg, False, 300)
    assert "the training mean field (error 0.4)" in mean_wins and "generate.n_samples" in mean_wins
