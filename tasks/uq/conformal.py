"""Split-conformal prediction bands for whole fields.

A surrogate predicts a whole field per sample; a band is useful when it covers the whole field at
once. The nonconformity score of a sample is therefore the largest scaled error over its field,
and the band is the prediction plus or minus the conformal quantile of these scores times the
scale: a simultaneous band. Split conformal prediction (Vovk, Gammerman & Shafer 2005; Lei,
G'Sell, Rinaldo, Tibshirani & Wasserman 2018) guarantees for exchangeable calibration and test
samples that a new sample's whole field lies inside the band with probability

    1 - alpha <= P(covered) <= 1 - alpha + 1 / (n_cal + 1),

the upper bound holding when the scores have no ties. Given one calibration set, the coverage of
new samples is random too: it follows Beta(k, n_cal + 1 - k) with
``k = ceil((n_cal + 1)(1 - alpha))`` (Vovk 2012, "Conditional validity of inductive conformal
predictors").
"""

from __future__ import annotations

import math

import numpy as np


def conformal_rank(n_cal: int, alpha: float) -> int:
    """Rank ``k = ceil((n_cal + 1)(1 - alpha))`` of the calibration score used as the quantile.

    Args:
        n_cal: Number of calibration samples.
        alpha: Miscoverage level in (0, 1).

    Returns:
        The rank k (1-based); it may exceed ``n_cal``, in which case no finite band is valid.
    """
    # A decimal alpha is inexact in binary: (99 + 1) * (1 - 0.1) must give rank 90, not 91.
    return math.ceil(round((n_cal + 1) * (1 - alpha), 9))


def min_calibration_size(alpha: float) -> int:
    """Smallest ``n_cal`` for which ``conformal_rank(n_cal, alpha) <= n_cal``."""
    n = max(1, math.floor((1 - alpha) / alpha) - 1)
    while conformal_rank(n, alpha) > n:
        n += 1
    return n


class SplitConformal:
    """Split-conformal simultaneous band for fields (Vovk et al. 2005; Lei et al. 2018).

    Score of sample i: ``s_i = max over the field of |true_i - pred_i| / scale``. The band for a
    new prediction is ``pred +- quantile_ * scale_``, where ``quantile_`` is the k-th smallest
    calibration score, ``k = ceil((n_cal + 1)(1 - alpha))``. A scale that follows where the
    surrogate errs (e.g. the per-location residual standard deviation on a held-out validation
    set, not the calibration set) makes the band narrow where the surrogate is good; any fixed
    positive scale keeps the guarantee.

    Args:
        alpha: Miscoverage level in (0, 1); the band covers a whole field with probability
            at least ``1 - alpha``.

    Attributes:
        quantile_: The conformal quantile of the scores (in units of the scale).
        n_cal_: Number of calibration samples.
        scale_: Scale broadcast to the field shape, shape ``(...)``.
        scores_: Calibration scores, shape ``(n_cal,)``.
    """

    def __init__(self, alpha: float = 0.1) -> None:
        self.alpha = alpha

    def fit(
        self, pred_cal: np.ndarray, true_cal: np.ndarray, scale: np.ndarray | None = None
    ) -> SplitConformal:
        """Calibrate on held-out predictions.

        Args:
            pred_cal: Predicted fields, shape ``(n_cal, ...)``.
            true_cal: True fields, same shape.
            scale: Positive finite per-location scale broadcastable to the field shape ``(...)``,
                or None for 1 everywhere.

        Returns:
            self.

        Raises:
            ValueError: If alpha is not in (0, 1), shapes disagree, the scale is not positive,
                or ``n_cal`` is too small for alpha (the message gives the minimum).
        """
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")
        pred_cal, true_cal = _check_pair(pred_cal, true_cal)
        n_cal, field_shape = pred_cal.shape[0], pred_cal.shape[1:]
        rank = conformal_rank(n_cal, self.alpha)
        if rank > n_cal:
            raise ValueError(
                f"n_cal={n_cal} calibration samples are too few for alpha={self.alpha}: the "
                f"conformal rank ceil((n_cal + 1)(1 - alpha))={rank} exceeds n_cal, so no finite "
                f"band has the guarantee; use at least n_cal={min_calibration_size(self.alpha)}"
            )
        self.scale_ = _check_scale(scale, field_shape)
        self.n_cal_ = n_cal
        self.scores_ = _scores(pred_cal, true_cal, self.scale_)
        self.quantile_ = float(np.partition(self.scores_, rank - 1)[rank - 1])
        return self

    def predict_band(self, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Band around new predictions.

        Args:
            pred: Predicted fields, shape ``(m, ...)`` with the calibration field shape.

        Returns:
            ``(lower, upper)``, each of shape ``(m, ...)``.
        """
        pred = np.asarray(pred, dtype=float)
        self._check_field(pred)
        half_width = self.quantile_ * self.scale_
        return pred - half_width, pred + half_width

    def coverage(self, pred: np.ndarray, true: np.ndarray) -> float:
        """Fraction of samples whose whole field lies inside the band.

        Args:
            pred: Predicted fields, shape ``(m, ...)``.
            true: True fields, same shape.

        Returns:
            Coverage in [0, 1].
        """
        pred, true = _check_pair(pred, true)
        self._check_field(pred)
        # Compared as scores, the same quantity that was calibrated, so a sample exactly on the
        # band's edge counts as covered without depending on rounding in pred +- q * scale.
        return float(np.mean(_scores(pred, true, self.scale_) <= self.quantile_))

    def pointwise_coverage(self, pred: np.ndarray, true: np.ndarray) -> float:
        """Fraction of all field points (over all samples) inside the band.

        Args:
            pred: Predicted fields, shape ``(m, ...)``.
            true: True fields, same shape.

        Returns:
            Coverage in [0, 1]; at least :meth:`coverage`.
        """
        pred, true = _check_pair(pred, true)
        self._check_field(pred)
        return float(np.mean(np.abs(true - pred) / self.scale_ <= self.quantile_))

    def _check_field(self, pred: np.ndarray) -> None:
        if not hasattr(self, "quantile_"):
            raise RuntimeError("SplitConformal is not fitted: call fit first")
        if pred.shape[1:] != self.scale_.shape:
            raise ValueError(
                f"field shape {pred.shape[1:]} differs from the calibration {self.scale_.shape}"
            )


def resplit_coverage(
    pred: np.ndarray,
    true: np.ndarray,
    n_cal: int,
    n_repeats: int,
    rng: np.random.Generator,
    alpha: float,
    scale: np.ndarray | None = None,
) -> np.ndarray:
    """Test coverage of split-conformal bands over random calibration/test splits of one pool.

    Each repeat draws a random permutation of the pool, calibrates on its first ``n_cal``
    samples and measures the whole-field coverage on the rest. Averaged over all splits the
    coverage equals ``k / (n_cal + 1)`` exactly for tie-free exchangeable scores, whatever the
    pool, so this checks a surrogate's calibration without fresh simulations.

    Args:
        pred: Predicted fields of the pool, shape ``(n, ...)``.
        true: True fields, same shape.
        n_cal: Calibration samples per split, ``1 <= n_cal < n``.
        n_repeats: Number of random splits, >= 1.
        rng: Source of the splits.
        alpha: Miscoverage level in (0, 1).
        scale: As in :meth:`SplitConformal.fit`.

    Returns:
        Test coverage of each split, shape ``(n_repeats,)``.
    """
    pred, true = _check_pair(pred, true)
    n = pred.shape[0]
    if not 1 <= n_cal < n:
        raise ValueError(f"n_cal must be in [1, n - 1] = [1, {n - 1}], got {n_cal}")
    if n_repeats < 1:
        raise ValueError(f"n_repeats must be >= 1, got {n_repeats}")
    out = np.empty(n_repeats)
    for r in range(n_repeats):
        order = rng.permutation(n)
        cal, test = order[:n_cal], order[n_cal:]
        model = SplitConformal(alpha).fit(pred[cal], true[cal], scale)
        out[r] = model.coverage(pred[test], true[test])
    return out


def _check_pair(pred: np.ndarray, true: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, true = np.asarray(pred, dtype=float), np.asarray(true, dtype=float)
    if pred.shape != true.shape:
        raise ValueError(f"pred and true shapes differ: {pred.shape} vs {true.shape}")
    if pred.ndim == 0 or pred.shape[0] == 0:
        raise ValueError("pred and true must have shape (n, ...) with n >= 1")
    return pred, true


def _check_scale(scale: np.ndarray | None, field_shape: tuple[int, ...]) -> np.ndarray:
    if scale is None:
        return np.ones(field_shape)
    scale = np.asarray(scale, dtype=float)
    try:
        scale = np.broadcast_to(scale, field_shape)
    except ValueError:
        raise ValueError(
            f"scale of shape {scale.shape} does not broadcast to the field shape {field_shape}"
        ) from None
    if not np.all(np.isfinite(scale) & (scale > 0)):
        raise ValueError("scale must be finite and > 0 everywhere")
    return scale


def _scores(pred: np.ndarray, true: np.ndarray, scale: np.ndarray) -> np.ndarray:
    errors = np.abs(true - pred) / scale
    return errors.reshape(errors.shape[0], -1).max(axis=1)
