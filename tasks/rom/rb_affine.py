"""The offline and online linear algebra of the certified reduced basis (``rb.py``).

Offline, everything is of the truth's size ``n_dofs``: X-orthonormal sets (the basis, and an
orthonormal basis of the residual's Riesz representers), one sparse LU of the energy-norm
matrix ``X = A(mu_ref)``, and the projections that give the reduced quantities. Online,
everything is of the reduced size: the RB solve in O(N^3) and the residual's dual norm in
O(Q^2 N^2), independent of ``n_dofs``.

The dual norm is computed the numerically stable way of Buhr, Engwer, Ohlberger & Rave (2014,
"A numerically stable a posteriori error estimator for reduced basis approximations of
elliptic equations", 11th WCCM): the Riesz representers ``R_k`` of ``f`` and of every
``A_q v_n`` are orthonormalised in the X inner product, ``R_k = sum_j Z_j C_jk``, so that
``||r(mu)||_X' = ||C theta(mu)||_2``, a Euclidean norm of a short vector. The textbook form
``theta^T G theta`` with the Gram matrix ``G = C^T C`` subtracts numbers of size
``||f||_X'^2`` to get ``||r||^2``, which loses every digit below about ``1e-8 ||f||_X'``
(the square root of the machine epsilon); the stable form keeps them down to about
``1e-15 ||f||_X'``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse.linalg

__all__ = [
    "OfflineState",
    "XOrthonormalSet",
    "coercivity_lower_bound",
    "dual_norm_gram",
    "residual_dual_norms",
    "residual_weights",
    "solve_reduced",
]


class XOrthonormalSet:
    """A growing set of vectors orthonormal in the inner product ``(u, v)_X = u^T X v``.

    Gram-Schmidt with one re-orthogonalisation ("twice is enough": Giraud, Langou & Rozloznik
    2005, Comput. Math. Appl. 50), so the set stays orthonormal to round-off however nearly
    dependent the added vectors are.

    Args:
        x: The SPD matrix ``X`` (n_dofs, n_dofs), scipy sparse.
        capacity: Most vectors the set will hold.
        drop: A vector whose part orthogonal to the set has X-norm below ``drop`` times its
            own X-norm is in the span already and is not added. The default 1e-10 sits above
            the round-off floor of the X inner product (measured: remainders of exactly
            dependent representers at 1e-12 to 5e-12 of their norm for 16,640 unknowns;
            normalising one of those cost 1e-7 of orthogonality, and 1e-1 a few steps on);
            a dropped remainder changes ``||r||_X'`` by at most 1e-10 of that term.

    Attributes:
        vectors: (capacity, n_dofs); the first ``size`` rows are the set (rows, so that the
            set is one contiguous block for the BLAS products).
        x_vectors: The rows times ``X``, so inner products need no further sparse product.
        size: Number of vectors held.
    """

    def __init__(self, x: Any, capacity: int, drop: float = 1e-10) -> None:
        n = x.shape[0]
        self.x, self.drop, self.size = x, drop, 0
        self.vectors = np.zeros((capacity, n))
        self.x_vectors = np.zeros((capacity, n))

    def add(self, block: np.ndarray) -> np.ndarray:
        """Orthogonalise the rows of ``block`` (k, n_dofs) against the set, then one by one
        against each other, adding each normalised remainder that is not negligible.

        The set is read twice per block, not per vector (block classical Gram-Schmidt, run
        twice): the products are matrix-matrix, and memory traffic drops k-fold.

        Returns:
            Coefficients ``C`` (size after the call, k) with ``block ~ C.T @ vectors[:size]``.
        """
        w = np.array(np.atleast_2d(block), dtype=np.float64)
        m0, k = self.size, len(w)
        norms = np.sqrt(np.maximum(np.einsum("ij,ij->i", w, (self.x @ w.T).T), 0.0))
        coef = np.zeros((m0 + k, k))
        for _ in range(2):
            c = self.x_vectors[:m0] @ w.T
            w -= c.T @ self.vectors[:m0]
            coef[:m0] += c
        for j in range(k):
            m = self.size
            for _ in range(2):
                c = self.x_vectors[m0:m] @ w[j]
                w[j] -= c @ self.vectors[m0:m]
                coef[m0:m, j] += c
            xw = self.x @ w[j]
            norm = np.sqrt(max(w[j] @ xw, 0.0))
            if norm > self.drop * norms[j] and m < self.vectors.shape[0]:
                self.vectors[m] = w[j] / norm
                self.x_vectors[m] = xw / norm
                coef[m, j] = norm
                self.size = m + 1
        return coef[: self.size]


class OfflineState:
    """The greedy's growing reduced quantities for an affine operator (see ``rb.py``).

    Args:
        operator: ``matrices`` (Q scipy sparse (n_dofs, n_dofs)), ``rhs`` (n_dofs,),
            ``mu_ref`` (Q,), ``assemble(mu)`` and ``solve(mu)``, as
            ``pdeflow.tasks.pdes.thermal_block.AffineOperator``.
        capacity: Largest basis size ``N``.

    Attributes:
        basis: X-orthonormal basis, ``basis.vectors[:N]`` (N, n_dofs).
        matrices: ``V^T A_q V``, (Q, capacity, capacity), leading (Q, N, N) filled.
        rhs: ``V^T f``, (capacity,).
        gram: ``V^T X V``, (capacity, capacity) (the identity to round-off).
        factor: ``C``, (1 + Q capacity, 1 + Q capacity); column ``k`` holds the coordinates of
            the ``k``-th Riesz representer (``f``, then ``A_q v_n`` for n, q in that order)
            on the X-orthonormal residual basis.
    """

    def __init__(self, operator: Any, capacity: int) -> None:
        q = len(operator.matrices)
        self.operator, self.n_terms = operator, q
        self.x = operator.assemble(operator.mu_ref)
        self.x_lu = scipy.sparse.linalg.splu(self.x.tocsc(), permc_spec="MMD_AT_PLUS_A")
        self.basis = XOrthonormalSet(self.x, capacity)
        self.residual = XOrthonormalSet(self.x, 1 + q * capacity)
        self.matrices = np.zeros((q, capacity, capacity))
        self.rhs = np.zeros(capacity)
        self.gram = np.zeros((capacity, capacity))
        self.factor = np.zeros((1 + q * capacity, 1 + q * capacity))
        self._add_representers(0, operator.rhs[None])

    @property
    def size(self) -> int:
        """Current basis size ``N``."""
        return self.basis.size

    def _add_representers(self, column: int, functionals: np.ndarray) -> None:
        """Riesz representers ``X^{-1} g`` of the rows of ``functionals`` (k, n_dofs) into
        the residual set; their coordinates become columns ``column .. column + k - 1``."""
        riesz = self.x_lu.solve(np.ascontiguousarray(functionals.T)).T
        coef = self.residual.add(riesz)
        self.factor[: coef.shape[0], column : column + coef.shape[1]] = coef

    def truth(self, mu: np.ndarray) -> np.ndarray:
        """The truth solution ``A(mu)^{-1} f`` (n_dofs,): the operator's own solve."""
        return self.operator.solve(mu)

    def add_snapshot(self, u: np.ndarray) -> bool:
        """Add a snapshot to the basis and update every reduced quantity.

        Returns:
            False (and nothing changes) when ``u`` lies in the basis' span already.
        """
        n = self.size
        self.basis.add(u)
        if self.size == n:
            return False
        v = self.basis.vectors[n]
        vs = self.basis.vectors[: n + 1]
        av = np.stack([a @ v for a in self.operator.matrices])
        column = av @ vs.T
        self.matrices[:, : n + 1, n] = column
        self.matrices[:, n, : n + 1] = column
        self._add_representers(1 + n * self.n_terms, av)
        self.rhs[n] = v @ self.operator.rhs
        column = self.basis.x_vectors[: n + 1] @ v
        self.gram[: n + 1, n] = column
        self.gram[n, : n + 1] = column
        return True

    def reduced(self) -> dict[str, np.ndarray]:
        """The online arrays at the current size (see ``ReducedBasis.to_arrays``)."""
        n, k = self.size, 1 + self.n_terms * self.size
        return {
            "reduced_matrices": self.matrices[:, :n, :n].copy(),
            "reduced_rhs": self.rhs[:n].copy(),
            "basis_gram": self.gram[:n, :n].copy(),
            "residual_factor": self.factor[: self.residual.size, :k].copy(),
        }


def solve_reduced(mu: np.ndarray, matrices: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """Galerkin RB solutions: ``(sum_q mu_q A_q^N) c = f^N`` for each row of ``mu``.

    Args:
        mu: Parameters (n, Q).
        matrices: ``A_q^N = V^T A_q V``, (Q, N, N).
        rhs: ``f^N = V^T f``, (N,).

    Returns:
        Coefficients ``c`` (n, N); O(Q N^2 + N^3) per row.
    """
    a = np.einsum("pq,qij->pij", mu, matrices)
    b = np.broadcast_to(rhs, (len(mu), rhs.size))[..., None]
    return np.linalg.solve(a, b)[..., 0]


def residual_weights(mu: np.ndarray, c: np.ndarray) -> np.ndarray:
    """``theta(mu)`` (n, 1 + Q N): the residual ``f - sum_{q,n} mu_q c_n A_q v_n`` as
    weights of its terms, ``f`` first, then ``n``-major, ``q``-minor."""
    terms = -(c[:, :, None] * mu[:, None, :]).reshape(len(mu), -1)
    return np.concatenate([np.ones((len(mu), 1)), terms], axis=1)


def residual_dual_norms(mu: np.ndarray, c: np.ndarray, factor: np.ndarray) -> np.ndarray:
    """``||r(mu)||_X'`` (n,) as ``||C theta(mu)||_2`` (stable; Buhr et al. 2014).

    Args:
        mu: Parameters (n, Q).
        c: RB coefficients (n, N).
        factor: ``C`` (M, >= 1 + Q N); its first ``1 + Q N`` columns are used.
    """
    theta = residual_weights(mu, c)
    return np.linalg.norm(theta @ factor[:, : theta.shape[1]].T, axis=1)


def dual_norm_gram(mu: np.ndarray, c: np.ndarray, factor: np.ndarray) -> np.ndarray:
    """The textbook ``sqrt(theta^T G theta)``, ``G = C^T C`` (n,): kept to measure the
    cancellation the stable form avoids (negative round-off clipped to 0)."""
    theta = residual_weights(mu, c)
    f = factor[:, : theta.shape[1]]
    gram = f.T @ f
    return np.sqrt(np.maximum(np.einsum("pi,ij,pj->p", theta, gram, theta), 0.0))


def coercivity_lower_bound(mu: np.ndarray, mu_ref: np.ndarray) -> np.ndarray:
    """The min-theta bound ``alpha_LB(mu) = min_q mu_q / mu_ref_q`` (n,).

    Valid for ``A(mu) = sum_q mu_q A_q`` with every ``A_q`` positive semi-definite and
    ``X = A(mu_ref)``: ``v^T A(mu) v >= min_q (mu_q / mu_ref_q) v^T X v`` (Prud'homme et al.
    2002, J. Fluids Eng. 124; Rozza, Huynh & Patera 2008, section 4.2).
    """
    return np.min(mu / mu_ref, axis=1)
