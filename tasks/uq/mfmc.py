"""Multifidelity Monte Carlo (MFMC) estimation of an expected output (Peherstorfer et al. 2016).

A high-fidelity model ``f_1`` (the PDE solver) and cheaper low-fidelity models ``f_2, ..., f_K``
(a ROM, a surrogate) are evaluated on nested input samples: the first ``m_1`` samples are shared
by all models, model ``k`` runs on the first ``m_k``, ``m_1 <= m_2 <= ... <= m_K``. The estimate

    s = y_1(m_1) + sum_{k=2}^K alpha_k (y_k(m_k) - y_k(m_{k-1})),

with ``y_k(m)`` the mean of model ``k`` over the first ``m`` samples, is unbiased for
``E[f_1]`` whatever the low-fidelity models' biases, and its variance is (Lemma 3.2 of the paper;
the nesting makes the cross terms between low-fidelity models vanish)

    Var s = sigma_1^2 / m_1 + sum_{k>=2} (1/m_{k-1} - 1/m_k)
                (alpha_k^2 sigma_k^2 - 2 alpha_k rho_k sigma_1 sigma_k),

``sigma_k^2`` the variance of ``f_k`` and ``rho_k`` its correlation with ``f_1``. It separates in
the ``alpha_k``, each minimised by ``alpha_k = rho_k sigma_1 / sigma_k`` for any allocation,
which turns it into ``Var s = sigma_1^2 sum_{k=1}^K (rho_k^2 - rho_{k+1}^2) / m_k`` (``rho_1 = 1``,
``rho_{K+1} = 0``). Minimising that at the cost ``sum_k w_k m_k = p`` gives the paper's
Theorem 3.4, valid when the models satisfy its ordering conditions.

References:
    Peherstorfer, B., Willcox, K. & Gunzburger, M. (2016). Optimal model management for
    multifidelity Monte Carlo estimation. SIAM Journal on Scientific Computing 38(5),
    A3163-A3194.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np

# Algorithm 1 of the paper searches every subset of the low-fidelity models: 2^15 subsets at most.
MAX_MODELS = 16
_ALLOCATION = (
    "budget_",
    "n_samples_",
    "n_samples_continuous_",
    "alpha_",
    "cost_",
    "mse_",
    "n_samples_mc_",
    "mse_mc_",
    "variance_reduction_",
)


class MFMC:
    """Multifidelity Monte Carlo estimator of ``E[f_1]`` (Peherstorfer, Willcox & Gunzburger 2016).

    Usage: ``MFMC().pilot(outputs, costs).allocate(budget).estimate(sampler, models, rng)``.

    Vector (field) outputs: the allocation always minimises the summed MSE over the output
    components, ``E ||s - E f_1||^2``. With ``weights="total"`` one weight per model multiplies
    every component; the paper's scalar theory then applies exactly to that summed MSE with
    ``sigma_k^2 = tr Cov(f_k)`` and ``rho_k sigma_1 sigma_k = tr Cov(f_1, f_k)`` (``|rho_k| <= 1``
    by Cauchy-Schwarz), so allocation, weights and predicted MSE are the paper's optimum. With
    ``weights="per_output"`` each component gets its own ``alpha_k(x) = Cov(f_1(x), f_k(x)) /
    Var f_k(x)`` (0 where ``f_k(x)`` is constant), which for the given allocation is the
    optimum component by component, so its MSE is never above the ``"total"`` one; the
    allocation still comes from the totals. Components are summed as they are: rescale outputs
    with different units first. For scalar outputs the two coincide.

    Args:
        weights: ``"total"`` (one control-variate weight per model) or ``"per_output"`` (one per
            model and output component).
        batch_size: Largest number of samples passed to a model in one call by :meth:`estimate`
            (``None``: all of a model's samples at once).

    Attributes:
        n_models_: Number of models given to :meth:`pilot`, the high-fidelity one first.
        n_pilot_: Number of pilot samples.
        output_shape_: Shape of one model output, ``()`` for scalars.
        costs_: Cost of one evaluation of each model, shape ``(n_models,)``.
        var_: Pilot variances per output component, shape ``(n_models, *output_shape)``.
        cov_: Pilot covariances with the high-fidelity model per component, same shape.
        sigma_: Standard deviations ``sqrt(tr Cov f_k)``, shape ``(n_models,)``.
        rho_: Correlations with the high-fidelity model, shape ``(n_models,)``, ``rho_[0] = 1``.
        selected_: Indices of the models used, by decreasing ``|rho|``; ``selected_[0] = 0``.
        dropped_: ``{index: reason}`` for every low-fidelity model left out.
        budget_: Budget of the last :meth:`allocate`, in the units of ``costs``.
        n_samples_: Integer sample counts ``m_k`` of the selected models, non-decreasing; a
            model whose count equals its predecessor's adds nothing and is not run.
        n_samples_continuous_: The real-valued optimum ``m_k = r_k m_1`` before rounding.
        alpha_: Weights of the selected models, shape ``(n_selected,)`` (``"total"``) or
            ``(n_selected, *output_shape)`` (``"per_output"``); ``alpha_[0] = 1``.
        cost_: Cost of the rounded allocation, ``<= budget_``.
        mse_: Predicted MSE (variance) of the estimate with ``n_samples_``, summed over
            components.
        n_samples_mc_: High-fidelity samples plain Monte Carlo affords: ``floor(budget / w_1)``.
        mse_mc_: Predicted MSE of plain Monte Carlo at that count, ``tr Cov(f_1) / n``.
        variance_reduction_: ``mse_mc_ / mse_``; above 1 when MFMC is the better buy.
    """

    def __init__(
        self, weights: Literal["total", "per_output"] = "total", batch_size: int | None = None
    ) -> None:
        self.weights = weights
        self.batch_size = batch_size

    def pilot(self, outputs: Sequence[np.ndarray], costs: Sequence[float]) -> MFMC:
        """Estimate variances and correlations on shared pilot samples and select the models.

        The models are sorted by decreasing ``|rho_k|``; among the subsets that contain the
        high-fidelity model and satisfy Theorem 3.4's conditions,

            1 = |rho_1| > |rho_2| > ... > |rho_K| > 0,
            w_{k-1} / w_k > (rho_{k-1}^2 - rho_k^2) / (rho_k^2 - rho_{k+1}^2),  k = 2..K,

        the one with the least MSE per budget, ``(sum_k sqrt(w_k (rho_k^2 - rho_{k+1}^2)))^2``,
        is kept (the paper's Algorithm 1, an exhaustive search). An earlier allocation is cleared.

        Args:
            outputs: One array per model, the high-fidelity model first, each of shape
                ``(n_pilot, *output_shape)``, row ``i`` the output on the same input sample
                ``i`` for every model; ``n_pilot >= 2``.
            costs: Cost of one evaluation of each model (e.g. seconds), all > 0.

        Returns:
            self.

        Raises:
            ValueError: On mismatched shapes or lengths, fewer than 2 pilot samples, more than
                ``MAX_MODELS`` models, non-finite outputs, non-positive or non-finite costs,
                or a model whose outputs are constant over the pilot samples.
        """
        self._check_settings()
        ys, costs = _check_pilot(outputs, costs)
        for name in _ALLOCATION:
            self.__dict__.pop(name, None)
        stacked = np.stack(ys)  # (n_models, n_pilot, *output_shape)
        centred = stacked - stacked.mean(axis=1, keepdims=True)
        n_pilot = stacked.shape[1]
        self.var_ = (centred**2).sum(axis=1) / (n_pilot - 1)
        self.cov_ = (centred * centred[:1]).sum(axis=1) / (n_pilot - 1)
        total_var = self.var_.reshape(len(ys), -1).sum(axis=1)
        total_cov = self.cov_.reshape(len(ys), -1).sum(axis=1)
        self.sigma_ = np.sqrt(total_var)
        # Cauchy-Schwarz bounds |rho| by 1; the clip removes the rounding beyond it.
        self.rho_ = np.clip(total_cov / (self.sigma_[0] * self.sigma_), -1.0, 1.0)
        self.rho_[0] = 1.0
        self.n_models_, self.n_pilot_ = len(ys), n_pilot
        self.output_shape_ = stacked.shape[2:]
        self.costs_ = costs
        self.selected_, self.dropped_ = _select(self.rho_**2, costs)
        return self

    def allocate(self, budget: float) -> MFMC:
        """Optimal sample counts and weights for a budget (Theorem 3.4), rounded down.

        With the selected models renumbered ``1..K`` by decreasing ``|rho|``:

            r_k = sqrt(w_1 (rho_k^2 - rho_{k+1}^2) / (w_k (1 - rho_2^2))),   r_1 = 1,
            m_1 = p / (sum_k w_k r_k),   m_k = r_k m_1,   alpha_k = rho_k sigma_1 / sigma_k,
            MSE = sigma_1^2 / p (sum_k sqrt(w_k (rho_k^2 - rho_{k+1}^2)))^2,

        (the denominator ``1 - rho_2^2`` holds the first low-fidelity model's correlation, as
        ``r_1 = 1`` requires). The counts are rounded down, which keeps the order and the cost;
        if that leaves ``m_1 = 0`` (a budget for less than the optimal mix), ``m_1 = 1`` and
        the low-fidelity counts are cut, the last (least correlated) model's first, until the
        cost fits.
        ``mse_`` is the variance of the rounded allocation, ``sigma_1^2 (1/m_1 - sum_{k>=2}
        (1/m_{k-1} - 1/m_k) rho_k^2)`` (summed per component with ``"per_output"``).

        Args:
            budget: Total cost ``p`` to spend, in the units of ``costs``, ``>= w_1``.

        Returns:
            self.

        Raises:
            RuntimeError: If :meth:`pilot` has not run.
            ValueError: If the budget is not finite or below one high-fidelity evaluation.
        """
        if not hasattr(self, "selected_"):
            raise RuntimeError("MFMC has no pilot statistics: call pilot first")
        sel = np.asarray(self.selected_)
        w = self.costs_[sel]
        if not np.isfinite(budget) or budget < w[0]:
            raise ValueError(
                f"budget {budget} is below one high-fidelity evaluation (cost {w[0]:g})"
            )
        rho2 = np.append(self.rho_[sel] ** 2, 0.0)
        r = np.sqrt(w[0] * (rho2[:-1] - rho2[1:]) / (w * (1.0 - rho2[1])))
        self.n_samples_continuous_ = r * budget / (w @ r)
        self.n_samples_ = _round_counts(self.n_samples_continuous_, w, budget)
        self.cost_ = _cost(self.n_samples_, w)
        var, cov = self.var_[sel], self.cov_[sel]
        if self.weights == "total":
            var, cov = var.reshape(len(sel), -1).sum(axis=1), cov.reshape(len(sel), -1).sum(axis=1)
        self.alpha_ = np.divide(cov, var, out=np.zeros_like(cov), where=var > 0)
        self.alpha_[0] = 1.0
        self.mse_ = _mse(var, cov, self.n_samples_)
        self.n_samples_mc_ = int(math.floor(budget / w[0]))
        self.mse_mc_ = float(self.sigma_[0] ** 2 / self.n_samples_mc_)
        self.variance_reduction_ = self.mse_mc_ / self.mse_
        self.budget_ = float(budget)
        return self

    def estimate(
        self,
        sampler: Callable[[int, np.random.Generator], np.ndarray],
        models: Sequence[Callable[[np.ndarray], np.ndarray]],
        rng: np.random.Generator | int | None = None,
    ) -> np.ndarray:
        """Draw the nested samples, run each selected model on its count, combine the means.

        Args:
            sampler: ``sampler(n, rng)`` returns ``n`` independent input samples, shape
                ``(n, ...)``; called once, with ``n = max(n_samples_)``.
            models: The same models as in :meth:`pilot`, in its order; ``models[k](x)`` maps
                inputs ``(m, ...)`` to outputs ``(m, *output_shape)``. Dropped models and
                models whose count equals their predecessor's are not called.
            rng: Generator or seed of the sampler's draws.

        Returns:
            The MFMC estimate of ``E[f_1]``, shape ``output_shape_`` (a numpy float for scalars).

        Raises:
            RuntimeError: If :meth:`allocate` has not run.
            ValueError: If ``models`` has the wrong length or a sampler or model returns the
                wrong shape or non-finite values.
        """
        if not hasattr(self, "n_samples_"):
            raise RuntimeError("MFMC has no allocation: call pilot, then allocate")
        if len(models) != self.n_models_:
            raise ValueError(f"expected {self.n_models_} models as in pilot, got {len(models)}")
        m = self.n_samples_
        x = sampler(int(m[-1]), np.random.default_rng(rng))
        if len(x) != m[-1]:
            raise ValueError(f"sampler returned {len(x)} samples, asked for {m[-1]}")
        s = self._means(models[0], x, 0, m[0])[1]
        for j in range(1, len(m)):
            if m[j] > m[j - 1]:
                head, full = self._means(models[self.selected_[j]], x, m[j - 1], m[j])
                s = s + self.alpha_[j] * (full - head)
        return s

    def _means(self, model: Callable, x: np.ndarray, m_head: int, m: int) -> tuple:
        """Means of ``model`` over the first ``m_head`` and the first ``m`` rows of ``x``."""
        step = self.batch_size or m
        total = np.zeros(self.output_shape_)
        head = None
        for start in range(0, m, step):
            stop = min(start + step, m)
            y = np.asarray(model(x[start:stop]), dtype=np.float64)
            if y.shape != (stop - start, *self.output_shape_) or not np.all(np.isfinite(y)):
                raise ValueError(
                    f"a model returned shape {y.shape} or non-finite values for "
                    f"{stop - start} inputs; expected finite {(stop - start, *self.output_shape_)}"
                )
            if start <= m_head < stop:
                head = (total + y[: m_head - start].sum(axis=0)) / max(m_head, 1)
            total = total + y.sum(axis=0)
        return head, total / m

    def _check_settings(self) -> None:
        if self.weights not in ("total", "per_output"):
            raise ValueError(f"weights must be 'total' or 'per_output', got {self.weights!r}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size must be None or >= 1, got {self.batch_size}")


def _check_pilot(outputs: Sequence[np.ndarray], costs: Sequence[float]) -> tuple:
    ys = [np.asarray(y, dtype=np.float64) for y in outputs]
    costs = np.asarray(costs, dtype=np.float64)
    if len(ys) < 1 or costs.shape != (len(ys),):
        raise ValueError(f"need one cost per model: {len(ys)} outputs, costs {costs.shape}")
    if len(ys) > MAX_MODELS:
        raise ValueError(f"at most {MAX_MODELS} models (exhaustive selection), got {len(ys)}")
    if not np.all(np.isfinite(costs) & (costs > 0)):
        raise ValueError(f"costs must be finite and > 0, got {costs}")
    if ys[0].ndim == 0 or ys[0].shape[0] < 2:
        raise ValueError("pilot outputs must have shape (n_pilot, ...) with n_pilot >= 2")
    for k, y in enumerate(ys):
        if y.shape != ys[0].shape:
            raise ValueError(f"model {k} outputs have shape {y.shape}, model 0 {ys[0].shape}")
        if not np.all(np.isfinite(y)):
            raise ValueError(f"model {k} has non-finite pilot outputs")
        if np.all(y == y[0]):
            raise ValueError(
                f"model {k} outputs are constant over the {len(y)} pilot samples: its variance "
                "and correlation are undefined"
                + (" (a constant high-fidelity output needs no Monte Carlo)" if k == 0 else "")
            )
    return ys, costs


def _conditions(order: Sequence[int], rho2: np.ndarray, w: np.ndarray) -> str | None:
    """Why the models ``order`` (``order[0] = 0``) break Theorem 3.4's conditions, or None."""
    r2 = np.append(rho2[list(order)], 0.0)
    for j in range(1, len(order)):
        a, b = order[j - 1], order[j]
        if r2[j] == 0:
            return f"model {b} is uncorrelated with the high-fidelity model (rho = 0)"
        if not r2[j - 1] > r2[j]:
            return f"|rho| of model {b} ({math.sqrt(r2[j]):.6g}) is not below model {a}'s"
    for j in range(1, len(order)):
        a, b = order[j - 1], order[j]
        lhs, rhs = w[a] / w[b], (r2[j - 1] - r2[j]) / (r2[j] - r2[j + 1])
        if not lhs > rhs:
            c = order[j + 1] if j + 1 < len(order) else None
            after = f"rho_{c}^2" if c is not None else "0"
            return (
                f"cost ratio w_{a}/w_{b} = {lhs:.4g} <= (rho_{a}^2 - rho_{b}^2)/(rho_{b}^2 - "
                f"{after}) = {rhs:.4g}"
            )
    return None


def _cost_mse(order: Sequence[int], rho2: np.ndarray, w: np.ndarray) -> float:
    """MSE times budget over ``sigma_1^2`` of the optimal allocation over ``order``."""
    r2 = np.append(rho2[list(order)], 0.0)
    return float(np.sum(np.sqrt(w[list(order)] * (r2[:-1] - r2[1:]))) ** 2)


def _select(rho2: np.ndarray, w: np.ndarray) -> tuple[tuple[int, ...], dict[int, str]]:
    """Algorithm 1 of Peherstorfer et al. (2016): the admissible subset of least MSE."""
    low = sorted(range(1, len(w)), key=lambda k: (-rho2[k], k))
    best, best_value = (0,), _cost_mse((0,), rho2, w)
    for size in range(1, len(low) + 1):
        for subset in itertools.combinations(low, size):
            order = (0, *subset)
            if _conditions(order, rho2, w) is None:
                value = _cost_mse(order, rho2, w)
                if value < best_value:
                    best, best_value = order, value
    dropped = {}
    for k in low:
        if k in best:
            continue
        order = tuple(sorted((*best, k), key=lambda i: (-rho2[i], i)))
        reason = _conditions(order, rho2, w)
        if reason is None:
            reason = (
                f"admissible with the selection, but its MSE x budget / sigma_1^2 would be "
                f"{_cost_mse(order, rho2, w):.4g}, not below {best_value:.4g}"
            )
        dropped[k] = f"with models {list(order)}: {reason}"
    return best, dropped


def _round_counts(m: np.ndarray, w: np.ndarray, budget: float) -> np.ndarray:
    """Integer counts ``1 <= m_1 <= m_2 <= ...`` of cost ``<= budget``, near ``m``."""
    counts = np.floor(m).astype(np.int64)
    counts[0] = max(counts[0], 1)
    counts = np.maximum.accumulate(counts)
    for k in range(len(counts) - 1, 0, -1):
        excess = _cost(counts, w) - budget
        if excess <= 0:
            break
        # The models after k are already cut to k's count (not run) and follow it down.
        cut = math.ceil(excess / w[k] - 1e-9)  # 0.1 / 0.05 is 2.0000000000000004
        counts[k:] = max(counts[k] - cut, counts[k - 1])
        while _cost(counts, w) > budget and counts[k] > counts[k - 1]:  # float rounding
            counts[k:] -= 1
    return counts


def _cost(counts: np.ndarray, w: np.ndarray) -> float:
    """Cost of an allocation; a model with its predecessor's count is not run."""
    active = np.concatenate([[True], counts[1:] > counts[:-1]])
    return float(np.sum(w[active] * counts[active]))


def _mse(var: np.ndarray, cov: np.ndarray, counts: np.ndarray) -> float:
    """``sum(var_1 / m_1 - sum_{k>=2} (1/m_{k-1} - 1/m_k) cov_k^2 / var_k)`` over components."""
    explained = np.divide(cov**2, var, out=np.zeros_like(cov), where=var > 0)
    inv = 1.0 / counts.astype(np.float64)
    gain = (inv[:-1] - inv[1:]).reshape((-1,) + (1,) * (var.ndim - 1))
    return float(np.sum(var[0] * inv[0] - np.sum(gain * explained[1:], axis=0)))


def estimator_variance(outputs: np.ndarray, counts: np.ndarray, alpha: np.ndarray) -> float:
    """Lemma 3.2's variance of the MFMC estimator with given counts and weights, under the
    moments of paired samples: ``Var s = sigma_1^2 / m_1 + sum_{k>=2} (1/m_{k-1} - 1/m_k)
    (alpha_k^2 sigma_k^2 - 2 alpha_k cov_k)`` (the module docstring). ``_mse`` is its value at
    the optimal weights; this one holds for any weights, e.g. ones fixed from a pilot and
    judged on a larger sample.

    Args:
        outputs: scalar outputs of the selected models on the same inputs, (K, n), the
            high-fidelity model first.
        counts: nested sample counts ``m_1 <= ... <= m_K``, (K,).
        alpha: control-variate weights, (K,); ``alpha[0]`` is not used.
    """
    ys = np.asarray(outputs, dtype=np.float64)
    m = np.asarray(counts, dtype=np.float64)
    centred = ys - ys.mean(axis=1, keepdims=True)
    var = (centred**2).sum(axis=1) / (ys.shape[1] - 1)
    cov = (centred * centred[0]).sum(axis=1) / (ys.shape[1] - 1)
    out = var[0] / m[0]
    for j in range(1, len(m)):
        if m[j] > m[j - 1]:
            a = alpha[j]
            out += (1 / m[j - 1] - 1 / m[j]) * (a * a * var[j] - 2 * a * cov[j])
    return float(out)
