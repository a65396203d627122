"""Incremental POD: update a stored basis from new snapshots alone, without the old ones.

When a store grows by new samples, the POD of all snapshots can be updated from the old basis
(its modes, singular values and mean) and the new snapshots, at a cost proportional to the new
snapshots. The update is Brand's low-rank modification of the thin SVD (Brand 2006, "Fast
low-rank modifications of the thin singular value decomposition", Linear Algebra Appl. 415),
for the right singular vectors of a matrix that grows by rows, with the mean updated as in
incremental PCA (Ross, Lim, Lin & Yang 2008, "Incremental learning for robust visual tracking",
Int. J. Comput. Vision 77, section 3.1).

Snapshot matrices are ``(n_snapshots, n_features)``, modes are rows, as in
:mod:`pdeflow.tasks.rom.pod`. Writing the centred old snapshots as ``A = U diag(s) V^T`` and the
new block as ``B`` (``b`` rows, mean ``m_b``), the centred union has the same Gram matrix, hence
the same singular values and right singular vectors, as the short matrix

    Z = [diag(s) V^T;  B - m_b;  sqrt(n_a b / (n_a + b)) (m_a - m_b)]

whose last row accounts for the shift of the mean. ``U`` is never needed. One Householder QR of
``[V, Z_new^T]`` (features by ``k + b + 1``) gives an orthonormal basis ``Q`` of all rows of ``Z``
and re-orthonormalises ``V`` on the way; the small matrix ``Z Q`` comes out of the triangular
factor, and its SVD rotates ``Q`` into the new modes. The cost per block is
``O(n_features (k + b)^2)``, whatever the number of snapshots seen before. On narrow snapshots
(``k + b >= n_features``) ``Q`` would span every feature; the SVD then comes from the triangular
factor of ``Z`` itself, at ``O(n_features^2 (k + b))`` per block.

Truncation keeps the rank the energy target needs plus ``buffer`` modes, so that directions just
below the cut, which later snapshots may strengthen, are not lost. What is cut is recorded:
``discarded_energy_`` (its sum of squares, so that captured-energy fractions count it as missed)
and ``gram_error_bound_``, which bounds ``||X_c^T X_c - V diag(s^2) V^T||_2`` for the centred
snapshots ``X_c``: every truncation removes a positive semi-definite term whose norm is the
largest squared singular value it drops, and later updates are exact. By Weyl's inequality each
kept ``s_i^2`` is then within that bound below the exact one, and by the Davis-Kahan sin-theta
theorem the leading ``r`` modes are within ``arcsin(bound / gap_r)`` of the exact ones, with
``gap_r = s_r^2 - t_{r+1}^2`` (``s`` exact, ``t`` updated singular values).
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError

from pdeflow.tasks.rom.pod import POD, fix_signs, select_rank, thin_svd

__all__ = ["IncrementalPOD", "brand_update"]

_EPS = np.finfo(float).eps


def brand_update(
    singular_values: np.ndarray, modes: np.ndarray, rows: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Thin SVD of ``[diag(s) V^T; rows]`` from that of the top block (Brand 2006, section 2).

    Args:
        singular_values: ``s``, shape ``(k,)``, non-negative.
        modes: ``V^T``, orthonormal rows, shape ``(k, n_features)``; ``k`` may be 0.
        rows: New rows, shape ``(p, n_features)``, ``p >= 1``.

    Returns:
        ``(s_new, wt, q)``: all singular values of the stacked matrix, shape ``(m,)`` with
        ``m = min(n_features, k + p)``, non-increasing; and the new modes in factored form,
        ``V_new^T = wt @ q.T`` with ``wt`` shape ``(m, m)`` and ``q`` shape ``(n_features, m)``,
        so that a caller forms only the rows it keeps. ``q`` is None when ``k + p >=
        n_features``: then ``V_new^T = wt``.
    """
    k, n_features = modes.shape
    if k + rows.shape[0] >= n_features:
        # Narrow snapshots: Q would span all of R^n_features, so skip it. The triangular factor
        # of the stack has its Gram matrix; its SVD (n_features^2 per row, no left vectors)
        # costs about half what forming Q and the small matrix's left vectors would.
        stack = np.concatenate([modes * singular_values[:, None], rows])
        r = scipy.linalg.qr(stack, mode="r", overwrite_a=True, check_finite=False)[0]
        s_new, wt = thin_svd(r)
        return s_new, wt, None
    # One QR of [V, rows^T] orthonormalises the rows' residual against V and V itself together,
    # so rounding in V does not accumulate over many updates.
    q, t = scipy.linalg.qr(
        np.concatenate([modes, rows]).T, mode="economic", overwrite_a=True, check_finite=False
    )
    # V = Q T[:, :k] and rows^T = Q T[:, k:], so [diag(s) V^T; rows] Q = [T[:, :k] diag(s),
    # T[:, k:]]^T: the small matrix comes from the triangular factor, with no n_features product.
    small = np.concatenate([t[:, :k] * singular_values, t[:, k:]], axis=1).T
    s_new, wt = thin_svd(small)
    return s_new, wt, q


def _check_settings(est: IncrementalPOD) -> None:
    energy = est.energy
    if not (isinstance(energy, (int, float)) and 0.0 < energy <= 1.0):
        raise ValueError(f"energy must satisfy 0 < energy <= 1, got {energy!r}")
    for name, low, optional in (
        ("max_rank", 1, True),
        ("buffer", 0, False),
        ("block_size", 1, True),
    ):
        value = getattr(est, name)
        if value is None and optional:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            bound = f"an integer >= {low}" + (" or None" if optional else "")
            raise ValueError(f"{name} must be {bound}, got {value!r}")
    if not isinstance(est.center, (bool, np.bool_)):
        raise ValueError(f"center must be True or False, got {est.center!r}")


def _block(X, start: int, stop: int, n_features: int) -> np.ndarray:
    block = np.asarray(X[start:stop], dtype=float)
    if block.ndim != 2 or block.shape[1] != n_features:
        raise ValueError(f"X must have shape (n, {n_features}), got a block of {block.shape}")
    if not np.all(np.isfinite(block)):
        raise ValueError(f"X contains NaN or inf in rows {start}..{stop - 1}")
    return block


class IncrementalPOD(BaseEstimator):
    """POD updated block by block from new snapshots (Brand 2006; Ross et al. 2008).

    Args:
        energy: Fraction of the snapshot energy the POD rank must capture, ``0 < energy <= 1``.
        max_rank: Upper bound on the POD rank, or None for no bound.
        buffer: Modes kept beyond the POD rank (``>= 0``) so that later updates stay accurate;
            the discarded energy, and the error bounds, shrink as it grows.
        center: Subtract the (running) mean snapshot.
        block_size: Rows per update (``>= 1``); working memory is
            ``O((block_size + n_kept) * n_features)`` floats. None: ``max(n_kept,
            2**20 // n_features, 16)``. An update costs ``~4 n_features (n_kept + b)^2`` flops
            per block of ``b`` rows while ``n_kept + b < n_features``, least per row at
            ``b = n_kept``; on narrow snapshots (``n_features`` below that)
            ``~2 n_features^2 (n_kept + b)`` plus an ``n_features``-square SVD, less per row the
            taller the block, and the second term lets the block grow there up to 8 MiB.

    Attributes:
        modes_: Kept modes as orthonormal rows, shape ``(n_kept, n_features)``, with
            ``n_kept <= rank_ + buffer``.
        singular_values_: Their singular values, shape ``(n_kept,)``, non-increasing.
        mean_: Mean of every snapshot seen, shape ``(n_features,)``; zeros without ``center``.
        n_seen_: Number of snapshots seen.
        total_energy_: Squared Frobenius norm of every (centred) snapshot seen, kept or not.
        discarded_energy_: The part of ``total_energy_`` the kept modes lost to truncation.
        gram_error_bound_: Bound on the spectral norm of ``X_c^T X_c`` minus
            ``modes_.T @ diag(s**2) @ modes_`` (module docstring).
        rank_: POD rank: the energy target's (``total_energy_`` in the denominator), capped by
            ``max_rank`` and by ``n_kept``.
        energy_: Energy fraction the ``rank_`` leading modes capture.
        n_features_in_: Number of features.

    Example:
        >>> ipod = IncrementalPOD(energy=0.9999, buffer=10).fit(X_old)   # (n, n_features)
        >>> ipod.partial_fit(X_new)          # costs O(len(X_new)), not O(len(X_old))
        >>> pod = ipod.to_pod()              # a tasks.rom.pod.POD with rank_ modes
    """

    def __init__(
        self,
        energy: float = 0.9999,
        max_rank: int | None = None,
        buffer: int = 10,
        center: bool = True,
        block_size: int | None = None,
    ):
        self.energy = energy
        self.max_rank = max_rank
        self.buffer = buffer
        self.center = center
        self.block_size = block_size

    def fit(self, X) -> IncrementalPOD:
        """Forget any state and fit on ``X`` block by block.

        Args:
            X: Snapshots, shape ``(n_snapshots, n_features)``: a numpy array or any array that
                slices by rows into one (a Dask or Zarr array is read one block at a time).

        Returns:
            self, fitted.
        """
        for name in ("modes_", "n_seen_"):
            self.__dict__.pop(name, None)
        return self.partial_fit(X)

    def partial_fit(self, X) -> IncrementalPOD:
        """Update the POD with new snapshots, as if it had been fitted on all of them.

        Args:
            X: New snapshots, shape ``(n_new, n_features)``, ``n_new >= 1`` (as in :meth:`fit`).

        Returns:
            self, updated.
        """
        _check_settings(self)
        shape = getattr(X, "shape", None)
        if shape is None or len(shape) != 2 or shape[0] < 1 or shape[1] < 1:
            raise ValueError(f"X must be a non-empty (n_snapshots, n_features) array, got {shape}")
        if not hasattr(self, "modes_"):
            self._set_state(np.zeros(0), np.zeros((0, shape[1])), np.zeros(shape[1]), 0, 0.0)
        elif shape[1] != self.n_features_in_:
            raise ValueError(f"X must have {self.n_features_in_} features, got {shape[1]}")
        start = 0
        while start < shape[0]:
            stop = min(start + self._block_rows(), shape[0])
            self._update(_block(X, start, stop, shape[1]))
            start = stop
        self.modes_ = fix_signs(self.modes_)
        self._set_rank()
        return self

    def _block_rows(self) -> int:
        if self.block_size is not None:
            return self.block_size
        return max(self.modes_.shape[0], 2**20 // self.n_features_in_, 16)

    def _update(self, block: np.ndarray) -> None:
        n_a, n_b = self.n_seen_, block.shape[0]
        rows = block
        if self.center:
            mean_b = block.mean(axis=0)
            rows = block - mean_b
            if n_a > 0:
                # The mean-shift row (Ross et al. 2008) makes the Gram matrix of the stack equal
                # the one of the union centred at its new mean.
                shift = np.sqrt(n_a * n_b / (n_a + n_b)) * (self.mean_ - mean_b)
                rows = np.concatenate([rows, shift[None]])
            self.mean_ = self.mean_ + (n_b / (n_a + n_b)) * (mean_b - self.mean_)
        self.n_seen_ = n_a + n_b
        self.total_energy_ += float(np.sum(rows**2))
        s, wt, q = brand_update(self.singular_values_, self.modes_, rows)
        keep = self._truncate(s, max(self.n_features_in_, len(rows) + len(self.modes_)))
        self.singular_values_ = s[:keep]
        self.modes_ = wt[:keep] if q is None else wt[:keep] @ q.T

    def _truncate(self, s: np.ndarray, size: int) -> int:
        """Rows to keep of ``s``; records what the rest drop. ``size`` scales the noise floor."""
        # Singular values below the rounding of the factorisation carry no direction.
        n_real = int(np.sum(s > s[0] * _EPS * size)) if s.size and s[0] > 0 else 0
        keep = 0
        if n_real:
            rank = select_rank(s[:n_real], self.energy, self.total_energy_)
            if self.max_rank is not None:
                rank = min(rank, self.max_rank)
            keep = min(rank + self.buffer, n_real)
        dropped = s[keep:]
        self.discarded_energy_ += float(np.sum(dropped**2))
        self.gram_error_bound_ += float(dropped[0] ** 2) if dropped.size else 0.0
        return keep

    def _set_rank(self) -> None:
        s = self.singular_values_
        if s.size == 0:
            self.rank_, self.energy_ = 0, 0.0
            return
        rank = select_rank(s, self.energy, self.total_energy_)
        self.rank_ = min(rank, self.max_rank or rank)
        self.energy_ = float(np.sum(s[: self.rank_] ** 2) / self.total_energy_)

    def _set_state(self, s, modes, mean, n_seen, total, discarded=0.0, bound=0.0) -> None:
        self.singular_values_ = s
        self.modes_ = modes
        self.mean_ = mean
        self.n_seen_ = int(n_seen)
        self.total_energy_ = float(total)
        self.discarded_energy_ = float(discarded)
        self.gram_error_bound_ = float(bound)
        self.n_features_in_ = modes.shape[1]

    @classmethod
    def from_svd(
        cls,
        singular_values: np.ndarray,
        vt: np.ndarray,
        mean: np.ndarray | None,
        n_seen: int,
        total_energy: float | None = None,
        **settings,
    ) -> IncrementalPOD:
        """Start from a thin SVD of the centred snapshots computed elsewhere (e.g. by TSQR).

        Args:
            singular_values: Leading singular values, shape ``(n_singular,)``, non-increasing.
            vt: Their right singular vectors as orthonormal rows, shape
                ``(n_vectors, n_features)``, ``1 <= n_vectors <= n_singular``.
            mean: The mean that was subtracted, shape ``(n_features,)``; None if not centred
                (then ``center`` must be False).
            n_seen: Number of snapshots behind the SVD, ``>= 1``.
            total_energy: Squared Frobenius norm of the centred snapshots, ``>= sum(s**2)``,
                when only the leading singular values were computed; default ``sum(s**2)``.
            **settings: The estimator's settings (``energy``, ``max_rank``, ``buffer``,
                ``center``, ``block_size``); ``center`` defaults to ``mean is not None``.

        Returns:
            A fitted IncrementalPOD keeping ``rank_ + buffer`` of the given modes at most.
        """
        settings.setdefault("center", mean is not None)
        est = cls(**settings)
        _check_settings(est)
        s, vt, mean, total = _checked_svd(singular_values, vt, mean, n_seen, total_energy)
        if est.center != (mean is not None):
            raise ValueError(f"center={est.center!r} needs mean {'given' if est.center else None}")
        mean = np.zeros(vt.shape[1]) if mean is None else mean
        est._set_state(np.zeros(0), vt[:0], mean, n_seen, total)
        keep = est._truncate(s[: vt.shape[0]], max(vt.shape))
        unknown = max(total - float(np.sum(s**2)), 0.0)
        # Singular values given without vectors, and those never computed (a randomized SVD's
        # tail, ``unknown``), are truncated too; the largest of them is s[keep] or below s[-1].
        tail = s[max(keep, vt.shape[0]) :]
        est.discarded_energy_ += float(np.sum(tail**2)) + unknown
        if keep == vt.shape[0]:
            est.gram_error_bound_ += float(tail[0] ** 2) if tail.size else min(s[-1] ** 2, unknown)
        est.singular_values_, est.modes_ = s[:keep], fix_signs(vt[:keep])
        est._set_rank()
        return est

    @classmethod
    def from_pod(
        cls, pod: POD, n_seen: int, total_energy: float | None = None, **settings
    ) -> IncrementalPOD:
        """Start from a fitted :class:`~pdeflow.tasks.rom.pod.POD` (its ``rank_`` modes).

        The POD keeps no modes beyond its rank, so the updates start without a buffer: the
        energy beyond ``rank_`` counts as discarded. :meth:`from_svd` keeps one.

        Args:
            pod: A fitted POD.
            n_seen: Number of snapshots it was fitted on, ``>= 1``.
            total_energy: Squared Frobenius norm of its centred snapshots; default
                ``pod.total_energy_``.
            **settings: As in :meth:`from_svd`; ``center`` defaults to the POD's.

        Returns:
            A fitted IncrementalPOD.
        """
        if not hasattr(pod, "modes_"):
            raise NotFittedError("pod is not fitted; call its 'fit' or 'from_svd' first")
        total = pod.total_energy_ if total_energy is None else total_energy
        mean = pod.mean_ if pod.center else None
        return cls.from_svd(pod.singular_values_, pod.modes_, mean, n_seen, total, **settings)

    def to_pod(self) -> POD:
        """The POD of every snapshot seen, ``rank_`` modes, for the rest of the ROM code.

        Returns:
            A fitted :class:`~pdeflow.tasks.rom.pod.POD` whose ``energy_`` and
            ``total_energy_`` count the discarded energy as not captured.
        """
        self._check_fitted()
        mean = self.mean_ if self.center else None
        s, total = self.singular_values_, self.total_energy_
        return POD.from_svd(s, self.modes_, mean, rank=self.rank_, energy=self.energy,
                            total_energy=total)  # fmt: skip

    def _check_fitted(self) -> None:
        if not hasattr(self, "modes_"):
            raise NotFittedError("This IncrementalPOD is not fitted yet; call 'fit' first.")
        if self.singular_values_.size == 0:
            raise ValueError("the snapshots seen carry no energy (all equal to their mean)")

    def to_arrays(self) -> tuple[dict[str, np.ndarray], dict]:
        """The state a later update needs, as named arrays and JSON-able attributes.

        Returns:
            ``(arrays, attrs)``: arrays ``modes`` ``(n_kept, n_features)``, ``singular_values``
            ``(n_kept,)``, ``mean`` ``(n_features,)``; attrs ``n_seen``, ``total_energy``,
            ``discarded_energy``, ``gram_error_bound`` and ``settings`` (the constructor's).
        """
        if not hasattr(self, "modes_"):
            raise NotFittedError("This IncrementalPOD is not fitted yet; call 'fit' first.")
        arrays = {
            "modes": self.modes_,
            "singular_values": self.singular_values_,
            "mean": self.mean_,
        }
        attrs = {
            "n_seen": self.n_seen_,
            "total_energy": self.total_energy_,
            "discarded_energy": self.discarded_energy_,
            "gram_error_bound": self.gram_error_bound_,
            "settings": {k: _plain(v) for k, v in self.get_params().items()},
        }
        return arrays, attrs

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], attrs: dict) -> IncrementalPOD:
        """Restore the estimator that :meth:`to_arrays` described, without refitting."""
        est = cls(**attrs["settings"])
        _check_settings(est)
        modes = np.asarray(arrays["modes"], dtype=float)
        s = np.asarray(arrays["singular_values"], dtype=float)
        mean = np.asarray(arrays["mean"], dtype=float)
        if modes.ndim != 2 or s.shape != (modes.shape[0],) or mean.shape != (modes.shape[1],):
            raise ValueError(
                "arrays must hold modes (k, n_features), singular_values (k,) and mean "
                f"(n_features,), got {modes.shape}, {s.shape} and {mean.shape}"
            )
        names = ("n_seen", "total_energy", "discarded_energy", "gram_error_bound")
        est._set_state(s, modes, mean, *(attrs[name] for name in names))
        est._set_rank()
        return est


def _plain(value):
    """A setting as a JSON-able Python scalar."""
    return value.item() if isinstance(value, np.generic) else value


def _checked_svd(singular_values, vt, mean, n_seen, total_energy):
    s = np.asarray(singular_values, dtype=float)
    vt = np.asarray(vt, dtype=float)
    if s.ndim != 1 or s.size == 0 or not np.all(np.isfinite(s)) or np.any(s < 0):
        raise ValueError("singular_values must be a non-empty 1-D array of finite values >= 0")
    if np.any(np.diff(s) > 0):
        raise ValueError("singular_values must be sorted in non-increasing order")
    if vt.ndim != 2 or not 1 <= vt.shape[0] <= s.size:
        raise ValueError(f"vt must have shape (n_vectors <= {s.size}, n_features), got {vt.shape}")
    if mean is not None:
        mean = np.asarray(mean, dtype=float)
        if mean.shape != (vt.shape[1],):
            raise ValueError(f"mean must have shape ({vt.shape[1]},), got {mean.shape}")
    if isinstance(n_seen, bool) or not isinstance(n_seen, (int, np.integer)) or n_seen < 1:
        raise ValueError(f"n_seen must be an integer >= 1, got {n_seen!r}")
    total = float(np.sum(s**2)) if total_energy is None else float(total_energy)
    if not np.isfinite(total) or total < np.sum(s**2) * (1 - 1e-12):
        raise ValueError(f"total_energy must be >= sum(singular_values**2), got {total_energy!r}")
    return s, vt, mean, max(total, float(np.sum(s**2)))
