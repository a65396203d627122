"""Acquisition functions for active learning: which simulations to run next.

An active-learning campaign fits a model on the simulations so far, scores a pool of candidate
parameters (points of the unit cube) by how much the model would gain from each, and runs the
best batch. Two scores are offered:

- :func:`gp_variance`: the posterior variance of a Gaussian process (Sacks, Welch, Mitchell &
  Wynn 1989, "Design and analysis of computer experiments", Stat. Sci. 4; the "ALM" criterion of
  MacKay 1992, "Information-based objective functions for active data selection", Neural Comput.
  4). On POD coefficients the variances, summed, estimate the squared field-space error of the
  ROM (the modes are orthonormal). For a fixed kernel this variance does not depend on the
  outputs, only on where the simulations are: the outputs enter through the fitted
  hyperparameters alone (length scale per parameter, amplitude), so it spreads points out
  anisotropically rather than chasing the region where the function is hardest.
- :func:`ensemble_disagreement`: the spread of a committee's predictions ("query by committee",
  Seung, Opper & Sompolinsky 1992; by bagging, Abe & Mamitsuka 1998). It depends on the outputs,
  so it is larger where the members disagree because the function is hard there.

Batches are chosen greedily by :func:`select_batch`: for a GP each pick conditions the GP on a
"fantasy" observation there (exact for the variance, which does not depend on the value; the
"kriging believer" of Ginsbourger, Le Riche & Carraro 2010), and for a committee the scores are
damped around each pick (local penalisation, Gonzalez, Dai, Hennig & Lawrence 2016, AISTATS).

Parameters live in the unit cube ``[0, 1]^n_params`` (``pdeflow.tasks.design.to_unit``); arrays
are ``(n_candidates, n_params)``. The GP view reuses the project's ROM classes: a
``ReducedOrderModel`` whose approximation is ``pdeflow.tasks.rom.GPR`` (its fitted
``gp_``, ``scaler_`` and ``varying_``), a bare ``GPR``, or a scikit-learn
``GaussianProcessRegressor``.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.linalg
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import Sum, WhiteKernel

from pdeflow.tasks.sampling import sample_unit

__all__ = [
    "GPView",
    "candidate_pool",
    "committee_predictions",
    "conditioned_variance",
    "ensemble_disagreement",
    "gp_variance",
    "gp_view",
    "select_batch",
]


def _positive_int(value, name: str, minimum: int = 1) -> int:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _points(candidates, name: str = "candidates") -> np.ndarray:
    points = np.asarray(candidates, dtype=float)
    if points.ndim != 2 or points.shape[0] == 0:
        raise ValueError(f"{name} must have shape (n, n_params) with n >= 1, got {points.shape}")
    if not np.all(np.isfinite(points)):
        raise ValueError(f"{name} must be finite")
    return points


def candidate_pool(n_params: int, n: int, seed: int) -> np.ndarray:
    """Candidate points in the unit cube: a scrambled Sobol' sequence (Owen scrambling).

    Reuses ``pdeflow.tasks.sampling.sample_unit("sobol", ...)`` (``scipy.stats.qmc.Sobol``), so a
    pool is the same points as a Sobol' design of the same seed: give the pool its own seed.

    Args:
        n_params: Dimension of the cube, >= 1.
        n: Number of candidates, >= 1 (a power of 2 keeps Sobol's balance properties).
        seed: Seed of the scramble, >= 0; the same seed gives the same pool.

    Returns:
        Points in ``[0, 1)^n_params``, shape ``(n, n_params)``.
    """
    n_params = _positive_int(n_params, "n_params")
    n = _positive_int(n, "n")
    seed = _positive_int(seed, "seed", minimum=0)
    return sample_unit("sobol", n, n_params, seed)


def ensemble_disagreement(predictions) -> np.ndarray:
    """Disagreement of a committee: the members' variance, averaged over output dimensions.

    ``d_i = mean_j var_k(y_kij)`` with the unbiased (``ddof=1``) variance over members. On POD
    coefficients of orthonormal modes, ``d_i * n_outputs`` is the committee's estimate of the
    squared field-space error, so the mean ranks candidates as that estimate does.

    Args:
        predictions: Shape ``(n_members, n, ...)``, ``n_members >= 2``; trailing axes are output
            dimensions (none for a scalar output).

    Returns:
        Disagreement per candidate, shape ``(n,)``, >= 0.
    """
    pred = np.asarray(predictions, dtype=float)
    if pred.ndim < 2 or pred.shape[0] < 2 or pred.shape[1] == 0:
        raise ValueError(
            "predictions must have shape (n_members, n, ...) with n_members >= 2 and n >= 1, "
            f"got {pred.shape}"
        )
    if not np.all(np.isfinite(pred)):
        raise ValueError("predictions must be finite")
    spread = pred.reshape(pred.shape[0], pred.shape[1], -1).var(axis=0, ddof=1)
    return spread.mean(axis=1)


def committee_predictions(
    fit: Callable[[np.ndarray, np.ndarray], Callable[[np.ndarray], np.ndarray]],
    params,
    outputs,
    candidates,
    n_members: int = 5,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Predictions of a delete-a-group jackknife committee (query by bagging, Abe & Mamitsuka
    1998, without the duplicate rows that a bootstrap gives an interpolating model).

    The training rows are shuffled and split into ``n_members`` groups; member ``k`` is fitted
    on every group but the ``k``-th.

    Args:
        fit: ``fit(params, outputs)`` returns a predictor ``predict(candidates) -> (n, ...)``.
        params: Training inputs, shape ``(n_train, n_params)``.
        outputs: Training outputs, shape ``(n_train, ...)``.
        candidates: Shape ``(n, n_params)``.
        n_members: Committee size, ``2 <= n_members <= n_train``.
        rng: Randomness of the split; default ``numpy.random.default_rng(0)``.

    Returns:
        Shape ``(n_members, n, ...)``, for :func:`ensemble_disagreement`.
    """
    params = _points(params, "params")
    outputs = np.asarray(outputs, dtype=float)
    if len(outputs) != len(params):
        raise ValueError(f"outputs must have {len(params)} rows like params, got {outputs.shape}")
    n_members = _positive_int(n_members, "n_members", minimum=2)
    if n_members > len(params):
        raise ValueError(f"n_members must be <= n_train = {len(params)}, got {n_members}")
    rng = np.random.default_rng(0) if rng is None else rng
    groups = np.array_split(rng.permutation(len(params)), n_members)
    candidates = _points(candidates)
    members = []
    for group in groups:
        keep = np.setdiff1d(np.arange(len(params)), group)
        members.append(np.asarray(fit(params[keep], outputs[keep])(candidates), dtype=float))
    return np.stack(members)


@dataclass(frozen=True)
class GPView:
    """What the variance of a fitted GP needs, in the GP's own input and output scaling.

    Attributes:
        gp: The fitted ``GaussianProcessRegressor`` (None when no output varies).
        transform: Map from unit-cube parameters to the GP's inputs.
        weight: ``sum_j std_j^2`` over the GP's outputs (``normalize_y`` scales), the factor that
            turns the normalised variance into the summed variance of every output.
        noise: Variance of an observation in normalised units (fitted ``WhiteKernel`` plus
            ``alpha``), the variance that conditioning leaves at a picked point.
    """

    gp: GaussianProcessRegressor | None
    transform: Callable[[np.ndarray], np.ndarray]
    weight: float
    noise: float

    def _latent(self, a: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
        kernel = self.gp.kernel_
        if isinstance(kernel, Sum) and isinstance(kernel.k2, WhiteKernel):
            kernel = kernel.k1
        elif isinstance(kernel, Sum) and isinstance(kernel.k1, WhiteKernel):
            kernel = kernel.k2
        return kernel(a, b) if b is not None else kernel.diag(a)

    def posterior(self, candidates: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """GP inputs ``x`` (n, d), ``v = L^-1 k(X_train, x)`` (n_train, n) and the posterior
        latent variances (n,), all normalised."""
        x = self.transform(candidates)
        v = scipy.linalg.solve_triangular(self.gp.L_, self._latent(self.gp.X_train_, x), lower=True)
        return x, v, np.maximum(self._latent(x) - np.einsum("ij,ij->j", v, v), 0.0)

    def column(self, x: np.ndarray, v: np.ndarray, index: int) -> np.ndarray:
        """Posterior latent covariance between ``x`` and ``x[index]``, shape (n,)."""
        return self._latent(x, x[index : index + 1])[:, 0] - v.T @ v[:, index]


def _noise(gp: GaussianProcessRegressor) -> float:
    kernel, white = gp.kernel_, 0.0
    if isinstance(kernel, Sum):
        for part in (kernel.k1, kernel.k2):
            if isinstance(part, WhiteKernel):
                white = float(part.noise_level)
    return white + float(np.max(gp.alpha))


def gp_view(model) -> GPView:
    """The GP inside a fitted model, with its input map and output weights.

    Args:
        model: A fitted ``ReducedOrderModel`` whose approximation is ``pdeflow.tasks.rom.GPR``
            (without an initial-state reduction), a fitted ``GPR``, or a fitted scikit-learn
            ``GaussianProcessRegressor`` (inputs used as given).

    Returns:
        A :class:`GPView`.
    """
    approximation = getattr(model, "approximation_", model)
    if getattr(model, "initial_reduction_", None) is not None:
        raise ValueError("model: a ROM with an initial-state reduction is not supported")
    if isinstance(approximation, GaussianProcessRegressor):
        gp, transform = approximation, (lambda p: p)
    elif hasattr(approximation, "gp_") and hasattr(approximation, "scaler_"):
        gp, transform = approximation.gp_, approximation.scaler_
    else:
        raise ValueError(
            "model must be a fitted ReducedOrderModel with a GPR approximation, a fitted GPR or "
            f"a fitted GaussianProcessRegressor, got {type(model).__name__}"
        )
    if gp is None:
        return GPView(None, transform, 0.0, 0.0)
    if not hasattr(gp, "L_"):
        raise ValueError("model: its GaussianProcessRegressor is not fitted")
    # normalize_y=True stores each output's scale; scikit-learn keeps it in a private attribute.
    scale = np.atleast_1d(np.asarray(getattr(gp, "_y_train_std", 1.0), dtype=float))
    n_outputs = 1 if gp.y_train_.ndim == 1 else gp.y_train_.shape[1]
    weight = float(np.sum(np.broadcast_to(scale, (n_outputs,)) ** 2))
    return GPView(gp, transform, weight, _noise(gp))


def gp_variance(model, candidates) -> np.ndarray:
    """Posterior variance of a GP, summed over its outputs: an estimate of squared error.

    For a ROM ``u(mu) ~ mean + sum_r c_r(mu) phi_r`` with orthonormal POD modes ``phi_r``, the
    GP's outputs are the coefficients of every mode at every time, and
    ``E||u_rom - u||^2 = sum_{t,r} var(c_{t,r}) + (projection error)``: the sum of the output
    variances, each in its own unit (the ``normalize_y`` scale squared), estimates the squared
    field-space L2 error of the trajectory (Guo & Hesthaven 2018, CMAME 341). The variance is
    that of the latent function, without the fitted observation noise.

    Args:
        model: See :func:`gp_view`.
        candidates: Unit-cube parameters, shape ``(n, n_params)``.

    Returns:
        Summed variance per candidate, shape ``(n,)``, >= 0, in squared output units.
    """
    view = model if isinstance(model, GPView) else gp_view(model)
    candidates = _points(candidates)
    if view.gp is None:
        return np.zeros(len(candidates))
    return view.weight * view.posterior(candidates)[2]


def _condition(view: GPView, pool: np.ndarray, batch: int, picks=None, weights=None):
    # Pivoted-Cholesky form of sequential conditioning: after picks i_1..i_m the posterior
    # covariance is S - sum_k g_k g_k^T with g = (S[:, i] - sum g g[i]) / sqrt(S[i, i] + noise),
    # so each pick costs one column of S instead of the whole (n, n) matrix.
    x, v, variance = view.posterior(pool)
    factors: list[np.ndarray] = []
    picked: list[int] = []
    for step in range(batch):
        if picks is None:
            score = variance.copy() if weights is None else variance * weights
            score[picked] = -np.inf
            i = int(np.argmax(score))
        else:
            i = int(picks[step])
        column = view.column(x, v, i) - sum(g * g[i] for g in factors)
        g = column / np.sqrt(max(column[i], 0.0) + view.noise)
        variance = np.maximum(variance - g * g, 0.0)
        factors.append(g)
        picked.append(i)
    return np.array(picked, dtype=int), variance


def conditioned_variance(model, candidates, picked) -> np.ndarray:
    """:func:`gp_variance` after conditioning the GP on observations at ``candidates[picked]``.

    The fantasy update that :func:`select_batch` makes after each pick, exposed so that it can
    be checked against a GP refitted (same kernel) on the training points plus the picks.

    Args:
        model: See :func:`gp_view`.
        candidates: Unit-cube parameters, shape ``(n, n_params)``.
        picked: Indices into ``candidates``, shape ``(m,)``, each in ``[0, n)``.

    Returns:
        Summed variance per candidate, shape ``(n,)``.
    """
    view = model if isinstance(model, GPView) else gp_view(model)
    candidates = _points(candidates)
    picked = np.asarray(picked, dtype=int).reshape(-1)
    if np.any(picked < 0) or np.any(picked >= len(candidates)):
        raise ValueError(f"picked must index candidates, in [0, {len(candidates)})")
    if view.gp is None:
        return np.zeros(len(candidates))
    return view.weight * _condition(view, candidates, len(picked), picked)[1]


def _greedy_penalised(
    pool: np.ndarray, scores: np.ndarray, batch: int, length_scale: float
) -> np.ndarray:
    score = scores.astype(float).copy()
    picked: list[int] = []
    for _ in range(batch):
        masked = score.copy()
        masked[picked] = -np.inf
        i = int(np.argmax(masked))
        picked.append(i)
        distance2 = np.sum((pool - pool[i]) ** 2, axis=1)
        score *= 1.0 - np.exp(-0.5 * distance2 / length_scale**2)
    return np.array(picked)


def select_batch(
    pool,
    batch: int,
    *,
    model=None,
    scores=None,
    weights=None,
    length_scale: float | None = None,
) -> np.ndarray:
    """Greedy batch of ``batch`` distinct candidates; give ``model`` or ``scores``.

    With ``model`` (a GP, see :func:`gp_view`) each pick is the candidate of largest posterior
    variance, and the GP is then conditioned on an observation there (its variance does not
    depend on the observed value, so this fantasy update is exact; Ginsbourger et al. 2010):
    the variance near a pick drops to the noise level and the batch spreads out. ``weights``
    multiply the variance per candidate without entering the conditioning, e.g.
    ``1 / ||predicted trajectory||^2`` so that the score estimates the squared *relative* error
    when that is the metric.

    With ``scores`` (e.g. :func:`ensemble_disagreement`; there is no model to condition) each
    pick multiplies the scores by ``1 - exp(-|x - x_pick|^2 / (2 l^2))`` (local penalisation,
    Gonzalez et al. 2016): zero at the pick, untouched beyond a few ``l``.

    Args:
        pool: Candidates in the unit cube, shape ``(n, n_params)``.
        batch: Points to pick, ``1 <= batch <= n``.
        model: A fitted GP model, or None.
        scores: Acquisition scores of the pool, shape ``(n,)``, >= 0, or None.
        weights: Positive factors on the GP variance, shape ``(n,)``, or None (all 1). Used
            with ``model`` only.
        length_scale: ``l`` of the penalty, > 0, in unit-cube units; default
            ``0.25 * batch ** (-1 / n_params)``, a quarter of the spacing of ``batch`` points
            spread over the whole cube: a batch spread evenly must not be forced, and a batch
            that belongs in a hard corner must still fit there (with half the spacing, a 1D
            batch of 4 damped a whole half of the interval and was pushed out of it). Used with
            ``scores`` only.

    Returns:
        Indices into ``pool`` in the order picked, shape ``(batch,)``.
    """
    pool = _points(pool, "pool")
    batch = _positive_int(batch, "batch")
    if batch > len(pool):
        raise ValueError(f"batch must be <= the pool size {len(pool)}, got {batch}")
    if (model is None) == (scores is None):
        raise ValueError("give exactly one of model (a GP) or scores (e.g. a disagreement)")
    if model is not None:
        view = model if isinstance(model, GPView) else gp_view(model)
        if view.gp is None:
            raise ValueError("model: no output varies, so its GP variance cannot rank the pool")
        if weights is not None:
            weights = np.asarray(weights, dtype=float)
            if weights.shape != (len(pool),) or not np.all(np.isfinite(weights) & (weights > 0)):
                raise ValueError(f"weights must be finite, > 0 and of shape ({len(pool)},)")
        return _condition(view, pool, batch, weights=weights)[0]
    scores = np.asarray(scores, dtype=float)
    if scores.shape != (len(pool),) or not np.all(np.isfinite(scores)) or np.any(scores < 0):
        raise ValueError(f"scores must be finite, >= 0 and of shape ({len(pool)},)")
    if length_scale is None:
        length_scale = 0.25 * batch ** (-1.0 / pool.shape[1])
    if not (np.isfinite(length_scale) and length_scale > 0):
        raise ValueError(f"length_scale must be > 0, got {length_scale!r}")
    return _greedy_penalised(pool, scores, batch, float(length_scale))
