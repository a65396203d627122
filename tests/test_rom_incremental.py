"""Incremental POD: an update from new snapshots alone against a full recompute on all of them.

The truncated update is checked against the bounds it records. ``gram_error_bound_`` (delta)
bounds the spectral norm of the difference between the exact Gram matrix ``X_c^T X_c`` and the
one of the kept factors, a positive semi-definite difference. Hence, with ``s`` the exact and
``t`` the updated singular values and ``r`` the POD rank:

* Weyl: ``0 <= s_i^2 - t_i^2 <= delta``, so ``|s_i - t_i| / s_i <= delta / s_i^2``;
* Davis-Kahan sin-theta: ``sin(largest principal angle of the r leading modes)
  <= delta / (s_r^2 - t_{r+1}^2)``;
* a held-out snapshot's squared relative projection error changes by at most that sine.

Each test also checks that the bound is tight enough to mean something (the tolerance it
implies is below the truncation tolerance ``sqrt(1 - energy)``), so that a loose bound cannot
pass a wrong update.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy.linalg import subspace_angles
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from pdeflow.tasks.pdes import Burgers
from pdeflow.tasks.rom.incremental import IncrementalPOD, brand_update
from pdeflow.tasks.rom.pod import POD

ENERGY = 0.9999
# Rounding of the Gram matrices compared, relative to s_1^2: a few hundred float64 operations
# per entry (eps ~ 2.2e-16) through QR and SVD; 1e-12 leaves three orders of headroom.
GRAM_ROUND = 1e-12


def _synthetic(n: int, n_features: int, seed: int, noise: float = 1e-6) -> np.ndarray:
    """Snapshots ``3 + c @ phi + noise``, shape (n, n_features), with coefficient std 0.8^j.

    The min(60, n_features) orthonormal modes ``phi`` and the geometric spectrum give a sample
    spectrum close to ``sqrt(n) 0.8^j``: energy 0.9999 needs ~21 modes, with relative gaps of
    ~36% between them.
    """
    rng = np.random.default_rng(seed)
    n_modes = min(60, n_features)
    sig = 0.8 ** np.arange(n_modes)
    phi = np.linalg.qr(rng.standard_normal((n_features, n_modes)))[0].T
    coeffs = rng.standard_normal((n, n_modes)) * sig
    return 3.0 + coeffs @ phi + noise * rng.standard_normal((n, n_features))


def _burgers(n_samples: int, seed: int) -> np.ndarray:
    """Burgers trajectories (n_x = 64, 11 frames to t = 1) as snapshots (n_samples * 11, 64).

    Random band-limited initial states (modes 1-3) and viscosities log-uniform in [0.05, 0.5],
    as in the demo; dt = 0.01 is well inside the stability limit for max|u0| <= 1.5.
    """
    rng = np.random.default_rng(seed)
    nu = np.exp(rng.uniform(np.log(0.05), np.log(0.5), n_samples))
    x = np.arange(64) * (2 * math.pi / 64)
    k = np.arange(1, 4)
    amp = rng.uniform(-0.5, 0.5, (n_samples, 3, 2))
    u0 = amp[..., 0] @ np.cos(np.outer(k, x)) + amp[..., 1] @ np.sin(np.outer(k, x))
    n_threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny FFTs: threads only wait for each other on shared cores
    try:
        out = Burgers(64, nu=nu.tolist(), dt=0.01).rollout(torch.from_numpy(u0[:, None]), 11, 10)
    finally:
        torch.set_num_threads(n_threads)
    return out.numpy().reshape(-1, 64)


def _relative_errors(modes: np.ndarray, mean: np.ndarray, held: np.ndarray) -> np.ndarray:
    """Squared relative projection error of each centred held-out snapshot, shape (n,)."""
    centred = held - mean
    residual = centred - (centred @ modes.T) @ modes
    return np.sum(residual**2, axis=1) / np.sum(centred**2, axis=1)


def _check_against_full(inc: IncrementalPOD, X: np.ndarray, held: np.ndarray) -> float:
    """Assert the bounds of the module docstring against a full POD of ``X``; the sine bound."""
    full = POD(energy=inc.energy, center=inc.center).fit(X)
    s, t, delta = full.singular_values_, inc.singular_values_, inc.gram_error_bound_
    r = full.rank_
    # The mean is a running average of the blocks' means: rounding only (1e-12 of its size).
    assert np.max(np.abs(inc.mean_ - full.mean_)) <= 1e-12 * np.max(np.abs(X))
    # The total energy is accumulated from the data, so it is exact up to rounding.
    assert inc.total_energy_ == pytest.approx(full.total_energy_, rel=1e-12)
    assert inc.total_energy_ == pytest.approx(np.sum(t**2) + inc.discarded_energy_, rel=1e-12)
    assert inc.rank_ == r and len(t) > r
    slack = GRAM_ROUND * s[0] ** 2
    # Weyl: the update underestimates each s_i^2 by at most delta.
    assert np.all(s[: len(t)] ** 2 - t**2 >= -slack)
    assert np.all(s[: len(t)] ** 2 - t**2 <= delta + slack)
    np.testing.assert_array_less(np.abs(s[:r] - t[:r]) / s[:r], (delta + slack) / s[:r] ** 2)
    # Davis-Kahan: the leading r modes. A bound of 1 or more would say nothing.
    sine_bound = (delta + slack) / (s[r - 1] ** 2 - t[r] ** 2)
    sine = np.sin(np.max(subspace_angles(inc.modes_[:r].T, full.modes_.T)))
    assert sine <= sine_bound < 1, (sine, sine_bound)
    # Held-out snapshots: ||(P - P_inc) y|| <= sin(largest angle) ||y|| bounds the change of
    # each relative projection error (1e-12: rounding of errors ~1e-2). The truncation
    # tolerance sqrt(1 - energy) is the relative error the energy target allows; the update
    # must stay within it of the full recompute.
    pod = inc.to_pod()
    e_inc = np.sqrt(_relative_errors(pod.modes_, pod.mean_, held))
    e_full = np.sqrt(_relative_errors(full.modes_, full.mean_, held))
    assert np.max(np.abs(e_inc - e_full)) <= sine + 1e-12
    assert sine < math.sqrt(1 - inc.energy)
    return sine_bound


@pytest.mark.parametrize("buffer", [5, 10])
def test_synthetic_update_matches_full_recompute(buffer):
    X = _synthetic(640, 300, seed=0)
    old, new, held = X[:480], X[480:540], X[540:]
    inc = IncrementalPOD(energy=ENERGY, buffer=buffer, block_size=64).fit(old).partial_fit(new)
    assert inc.n_seen_ == 540
    bound = _check_against_full(inc, X[:540], held)
    # The buffer is what keeps the update accurate: the largest cut s^2 is ~0.8^(2 buffer)
    # of s_r^2 (0.11 for five modes, 0.012 for ten), and the Davis-Kahan bound with it
    # (measured 0.135 and 0.015). Without a buffer the measured sine was 4e-2, above the
    # truncation tolerance 1e-2, so the buffer is needed to pass.
    assert bound < (0.03 if buffer == 10 else 0.3)


def test_burgers_update_matches_full_recompute():
    X = _burgers(70, seed=1)
    old, new, held = X[: 48 * 11], X[48 * 11 : 54 * 11], X[54 * 11 :]
    inc = IncrementalPOD(energy=ENERGY, buffer=10, block_size=128).fit(old).partial_fit(new)
    _check_against_full(inc, X[: 54 * 11], held)


def test_gram_error_bound_holds_and_difference_is_psd():
    X = _synthetic(400, 120, seed=2)
    inc = IncrementalPOD(energy=0.999, buffer=3, block_size=40).fit(X)
    centred = X - X.mean(axis=0)
    diff = centred.T @ centred - (inc.modes_.T * inc.singular_values_**2) @ inc.modes_
    eigs = np.linalg.eigvalsh(diff)
    scale = inc.singular_values_[0] ** 2
    # Truncation removes positive semi-definite terms only; rounding is GRAM_ROUND * s_1^2.
    assert eigs[0] >= -GRAM_ROUND * scale
    assert eigs[-1] <= inc.gram_error_bound_ + GRAM_ROUND * scale
    # The bound must be near tight (measured 1.9x the norm), and the trace is what was cut.
    assert inc.gram_error_bound_ <= 10 * eigs[-1]
    assert np.trace(diff) == pytest.approx(inc.discarded_energy_, rel=1e-8)


# Tall, short-wide, and narrow (kept modes plus block >= n_features: the QR-free path).
@pytest.mark.parametrize(("n", "n_features", "block"), [(300, 60, 16), (50, 200, 7), (400, 30, 40)])
def test_untruncated_update_equals_full_svd(n, n_features, block):
    rng = np.random.default_rng(3)
    rank = min(25, n - 1)
    # Exact low rank with a well-separated spectrum (1 .. 0.1): the modes are well defined.
    coeffs = rng.standard_normal((n, rank)) * np.geomspace(1, 0.1, rank)
    X = 1.5 + coeffs @ np.linalg.qr(rng.standard_normal((n_features, rank)))[0].T
    inc = IncrementalPOD(energy=1.0, buffer=n_features, block_size=block).fit(X)
    _, s, vt = np.linalg.svd(X - X.mean(axis=0), full_matrices=False)
    # The directions of the zero singular values are rounding: only the rank real ones stay.
    assert len(inc.singular_values_) == rank
    # Backward-stable QR and SVD per block: errors ~ n_blocks * eps * s_1 / gap ~ 1e-13.
    np.testing.assert_allclose(inc.singular_values_, s[:rank], rtol=1e-10)
    pod = POD.from_svd(s, vt, X.mean(axis=0), rank=rank)
    np.testing.assert_allclose(inc.modes_, pod.modes_, atol=1e-10)
    assert inc.gram_error_bound_ < 1e-20 * s[0] ** 2


def test_many_small_updates():
    X = _synthetic(420, 150, seed=4)
    inc = IncrementalPOD(energy=ENERGY, buffer=10).fit(X[:3])
    for start in range(3, 360, 3):
        inc.partial_fit(X[start : start + 3])
    assert inc.n_seen_ == 360
    # Orthonormality survives 119 updates: the QR of [V, rows] re-orthogonalises every time.
    gram = inc.modes_ @ inc.modes_.T
    assert np.max(np.abs(gram - np.eye(len(gram)))) < 1e-13
    _check_against_full(inc, X[:360], X[360:])


def test_uncentred():
    X = _synthetic(400, 100, seed=5)
    inc = IncrementalPOD(energy=ENERGY, center=False, block_size=32).fit(X[:250])
    inc.partial_fit(X[250:350])
    assert np.all(inc.mean_ == 0)
    # The mean is then the first mode and takes most of the energy: total = ||X||_F^2.
    assert inc.total_energy_ == pytest.approx(np.sum(X[:350] ** 2), rel=1e-12)
    _check_against_full(inc, X[:350], X[350:])


def test_from_pod_and_from_svd_then_update():
    X = _synthetic(640, 300, seed=6)
    old, new, held = X[:480], X[480:540], X[540:]
    # from_pod: the POD keeps its rank only, so the update starts without a buffer.
    inc = IncrementalPOD.from_pod(POD(energy=0.99999).fit(old), n_seen=480, energy=ENERGY)
    _check_against_full(inc.partial_fit(new), X[:540], held)
    # from_svd of a partial spectrum (a randomized SVD's): the missing energy is discarded.
    mean = old.mean(axis=0)
    _, s, vt = np.linalg.svd(old - mean, full_matrices=False)
    total = float(np.sum(s**2))
    inc = IncrementalPOD.from_svd(s[:40], vt[:40], mean, 480, total, energy=ENERGY)
    assert len(inc.singular_values_) == inc.rank_ + 10
    assert inc.discarded_energy_ == pytest.approx(np.sum(s[inc.rank_ + 10 :] ** 2), rel=1e-12)
    assert inc.gram_error_bound_ == s[inc.rank_ + 10] ** 2
    _check_against_full(inc.partial_fit(new), X[:540], held)


def test_round_trip_and_to_pod():
    X = _synthetic(300, 80, seed=7)
    inc = IncrementalPOD(energy=0.999, max_rank=6, buffer=4, block_size=50).fit(X[:250])
    arrays, attrs = inc.to_arrays()
    again = IncrementalPOD.from_arrays(dict(arrays), json.loads(json.dumps(attrs)))
    assert again.get_params() == inc.get_params()
    for name in ("rank_", "energy_", "n_seen_", "total_energy_", "discarded_energy_"):
        assert getattr(again, name) == getattr(inc, name), name
    inc.partial_fit(X[250:])
    again.partial_fit(X[250:])
    np.testing.assert_array_equal(again.modes_, inc.modes_)
    pod = inc.to_pod()
    # max_rank caps the POD rank (0.999 needs 11 modes here); the buffer stays above it.
    assert pod.rank_ == inc.rank_ == 6 and len(inc.singular_values_) == 10
    assert pod.energy_ == pytest.approx(np.sum(inc.singular_values_[:6] ** 2) / inc.total_energy_)
    np.testing.assert_array_equal(pod.modes_, inc.modes_[:6])
    assert clone(inc).get_params() == inc.get_params()


class _RowReader:
    """An on-disk-like array: records the rows each read asks for."""

    def __init__(self, data: np.ndarray):
        self.data, self.shape, self.reads = data, data.shape, []

    def __getitem__(self, rows: slice) -> np.ndarray:
        self.reads.append(rows.stop - rows.start)
        return self.data[rows]


def test_reads_blocks_of_an_array_like():
    X = _synthetic(200, 70, seed=11)
    reader = _RowReader(X)
    inc = IncrementalPOD(block_size=32).fit(reader)
    # Only block_size rows are read at a time, and the result is the in-memory fit's.
    assert max(reader.reads) == 32 and sum(reader.reads) == 200
    np.testing.assert_array_equal(inc.modes_, IncrementalPOD(block_size=32).fit(X).modes_)
    # The default block: max(n_kept, 2**20 // n_features, 16) rows, here all 200 at once.
    reader.reads.clear()
    IncrementalPOD().fit(reader)
    assert reader.reads == [200]


def test_single_snapshot_then_more():
    X = _synthetic(50, 30, seed=8)
    inc = IncrementalPOD().fit(X[:1])
    assert len(inc.singular_values_) == 0 and inc.rank_ == 0
    with pytest.raises(ValueError, match="no energy"):
        inc.to_pod()
    inc.partial_fit(X[1:])
    s = np.linalg.svd(X - X.mean(axis=0), compute_uv=False)
    np.testing.assert_allclose(inc.singular_values_[:5], s[:5], rtol=1e-10)


@pytest.mark.parametrize("n_rows", [5, 15])
def test_brand_update_of_empty_basis_is_svd(n_rows):
    # 5 rows of 12 features take the QR path, 15 the narrow one (k + p >= n_features).
    rows = np.random.default_rng(9).standard_normal((n_rows, 12))
    s, wt, q = brand_update(np.zeros(0), np.zeros((0, 12)), rows.copy())
    assert (q is None) == (n_rows >= 12)
    np.testing.assert_allclose(s, np.linalg.svd(rows, compute_uv=False), rtol=1e-13)
    vt = wt if q is None else wt @ q.T
    # Same Gram matrix (hence right singular vectors), and orthonormal rows; rounding only.
    np.testing.assert_allclose((vt.T * s**2) @ vt, rows.T @ rows, atol=1e-13 * s[0] ** 2)
    np.testing.assert_allclose(vt @ vt.T, np.eye(len(vt)), atol=1e-14)


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        ({"energy": 0.0}, "energy"),
        ({"energy": 1.5}, "energy"),
        ({"max_rank": 0}, "max_rank"),
        ({"buffer": -1}, "buffer"),
        ({"buffer": 2.5}, "buffer"),
        ({"block_size": 0}, "block_size"),
        ({"center": "yes"}, "center"),
    ],
)
def test_bad_settings(settings, match):
    with pytest.raises(ValueError, match=match):
        IncrementalPOD(**settings).fit(np.ones((4, 3)))


def test_bad_input():
    X = _synthetic(20, 10, seed=10)
    with pytest.raises(ValueError, match="X must be"):
        IncrementalPOD().fit(X[0])
    with pytest.raises(ValueError, match="X must be"):
        IncrementalPOD().fit(X[:0])
    bad = X.copy()
    bad[7, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        IncrementalPOD(block_size=4).fit(bad)
    inc = IncrementalPOD().fit(X)
    with pytest.raises(ValueError, match="10 features"):
        inc.partial_fit(np.ones((3, 11)))
    with pytest.raises(NotFittedError):
        IncrementalPOD().to_pod()
    _, s, vt = np.linalg.svd(X - X.mean(axis=0), full_matrices=False)
    with pytest.raises(ValueError, match="center"):
        IncrementalPOD.from_svd(s, vt, None, 20, center=True)
    with pytest.raises(ValueError, match="total_energy"):
        IncrementalPOD.from_svd(s, vt, X.mean(axis=0), 20, total_energy=1e-3)
    with pytest.raises(ValueError, match="n_seen"):
        IncrementalPOD.from_svd(s, vt, X.mean(axis=0), 0)
    with pytest.raises(ValueError, match="sorted"):
        IncrementalPOD.from_svd(s[::-1], vt, X.mean(axis=0), 20)
    arrays, attrs = inc.to_arrays()
    with pytest.raises(ValueError, match="mean"):
        IncrementalPOD.from_arrays({**arrays, "mean": np.zeros(3)}, attrs)
