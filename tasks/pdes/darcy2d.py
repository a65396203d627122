"""Two-dimensional Darcy flow: a stationary elliptic problem, finite volumes, direct or PCG."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any, Literal, NamedTuple

import numpy as np
import scipy.sparse
import scipy.sparse.linalg
import torch

from pdeflow.tasks.fields import grf_mode_variance, lognormal_field, step_function
from pdeflow.tasks.pdes.base import PDE, Coefficient, Defaults, Grid, PDEInfo, as_grid
from pdeflow.tasks.pdes.errors import BlowUpError

Method = Literal["auto", "direct", "cg"]
CoefficientKind = Literal["piecewise", "lognormal"]

# Random permeability (see initial_condition): a GRF with the FNO Darcy spectrum (alpha = 2,
# tau = 3 on the unit square, tau scaling as 1 / length), thresholded to two values (FNO's 3
# and 12 by default; the pdebench-darcy-2d preset uses 0.1 and 1) or exponentiated with a
# pointwise standard deviation of LOGNORMAL_STD in log a.
COEF_ALPHA = 2.0
COEF_TAU = 3.0
PIECEWISE_LEVELS = (3.0, 12.0)
LOGNORMAL_STD = 1.0
DEFAULT_MAX_ITER = 1000
# Largest contrast max(a) / min(a) for which a sample's CG uses the plain Poisson
# preconditioner, whose condition number is at most the contrast (see Darcy2D).
PLAIN_CONTRAST_MAX = 10.0


class CGNotConverged(BlowUpError):
    """Preconditioned conjugate gradients missed ``tol`` within ``max_iter`` iterations.

    Args:
        samples: Batch indices of the samples that did not converge.
        residual: Their relative residuals ``||f - A u|| / ||f||``, in the order of ``samples``.
        max_iter: The iteration limit.
    """

    def __init__(self, samples: Sequence[int], residual: Sequence[float], max_iter: int) -> None:
        self.residual = [float(r) for r in residual]
        self.max_iter = int(max_iter)
        shown = ", ".join(f"{r:.3g}" for r in self.residual)
        super().__init__(
            samples, 0.0, f"CG not converged after {max_iter} iterations (residuals [{shown}])"
        )

    def __reduce__(self):
        return (type(self), (self.samples, self.residual, self.max_iter))


def _dst2(x: torch.Tensor, twiddle: torch.Tensor) -> torch.Tensor:
    """Unnormalised DST-II along the last axis via an FFT of the odd extension.

    :math:`X_{m} = \\sum_{i<n} x_i \\sin(\\pi m (i + 1/2) / n)`, ``m = 1 .. n``; ``twiddle`` is
    :math:`(i/2) e^{-i\\pi m / 2n}`, shape (n,).
    """
    n = x.shape[-1]
    y = torch.fft.rfft(torch.cat([x, -x.flip(-1)], dim=-1), dim=-1)
    return (y[..., 1 : n + 1] * twiddle).real


def _idst2(coef: torch.Tensor, twiddle: torch.Tensor) -> torch.Tensor:
    """Inverse of ``_dst2`` along the last axis; ``twiddle`` is :math:`c_m e^{i\\pi m/2n}`.

    :math:`x_i = \\sum_m c_m X_m \\sin(\\pi m (i + 1/2)/n)`, :math:`c_m = 2/n` (``m < n``) and
    :math:`1/n` (``m = n``): the imaginary part of a length-2n inverse DFT.
    """
    n = coef.shape[-1]
    z = torch.nn.functional.pad(coef * twiddle, (1, 0))
    return (2 * n) * torch.fft.ifft(z, n=2 * n, dim=-1)[..., :n].imag


class _Poisson(NamedTuple):
    """The exact inverse of the constant-coefficient operator: eigenvalues (n, n) and the DST-II
    twiddles (n,) forward and inverse, float64 and complex128 on the solver's device."""

    eig2: torch.Tensor
    tw_fwd: torch.Tensor
    tw_inv: torch.Tensor


class Darcy2D(PDE):
    r"""Steady Darcy flow on the unit square with a homogeneous Dirichlet boundary, batched.

    .. math::

        -\nabla \cdot \left(a(x, y) \nabla u\right) = f \quad \text{in } (0, \ell)^2, \qquad
        u = 0 \text{ on the boundary},

    with :math:`f = \beta` constant (``beta``, one value or one per sample), the setting of
    PDEBench's Darcy data (:math:`\beta \in \{0.01, 0.1, 1, 10, 100\}`). Symbols: ``a`` is the
    permeability (channel ``"a"``) and ``u`` the pressure (channel ``"u"``), both
    non-dimensional (``u`` scales as :math:`\beta \ell^2 / a`), on a cell-centred grid of
    ``n x n`` cells with centres :math:`x_i = (i + 1/2) h`, :math:`h = \ell / n`; axis -2 is
    ``x``, axis -1 is ``y``.

    Discretisation: finite volumes with the 5-point stencil. The flux through an interior face
    uses the harmonic mean :math:`2 a_L a_R / (a_L + a_R)` of the two cells (exact for a
    coefficient constant on each cell, so jumps on faces keep second order); a boundary face
    sits :math:`h/2` from its cell centre, giving the flux :math:`2 a_i u_i / h`. The matrix is
    symmetric positive definite and an M-matrix (so ``f > 0`` gives ``u > 0``); the error is
    :math:`O(h^2)` for smooth ``a`` and for ``a`` with jumps on cell faces.

    Solvers: ``"direct"`` assembles each sample's CSR matrix and factorises it with SuperLU
    (``scipy.sparse.linalg.splu``) on the CPU; ``"cg"`` runs preconditioned conjugate gradients
    in torch on ``device``, batched over samples, in float64. The preconditioner inverts
    :math:`-\Delta_h`, the constant-coefficient operator of this same grid, exactly by a DST-II
    in each direction (eigenvectors :math:`\sin(\pi m (i + 1/2)/n)`, eigenvalues
    :math:`4 \sin^2(\pi m / 2n) / h^2`). For a sample whose contrast
    :math:`\max a / \min a` is at most ``PLAIN_CONTRAST_MAX`` = 10 it is used as is: the
    preconditioned spectrum lies in :math:`[\min a, \max a]`, so the condition number is at
    most the contrast whatever ``n`` (the 3/12 fields of the FNO Darcy set: 4, measured 22-25
    iterations to 1e-10 for n = 32 to 128). Otherwise it is diagonally scaled,
    :math:`D^{-1/2} (-\Delta_h)^{-1} D^{-1/2}` with :math:`D = \operatorname{diag}(a)`, which
    tracks smooth high-contrast fields (lognormal, std 1 in log a: measured 25-32 iterations
    for n = 32 to 128, against 60-230 unscaled) but degrades at jumps (40-127 on the 3/12
    fields). ``"auto"`` is direct on the CPU and CG elsewhere.

    Stability limit: none; the problem is stationary (``max_stable_dt`` is ``math.inf``, and
    ``resolution_warning`` is ``None``: the coefficient is generated on the grid, so no
    physical scale lies below it, and the scheme's O(h^2) error holds at every ``n``).
    ``rollout`` returns one frame ``[a, u]``, solving for the permeability in channel 0.

    Args:
        grid: A ``Grid`` (square, >= 4 cells per side, any parity) or the cells per side.
        method: ``"auto"`` (default), ``"direct"`` or ``"cg"``.
        tol: CG stopping rule ``||f - A u|| / ||f|| <= tol``, in (0, 1). Defaults to 1e-10.
        max_iter: CG iteration limit >= 1. Defaults to ``DEFAULT_MAX_ITER`` = 1000.
        **kwargs: ``length`` (default 1.0), ``device``, ``dtype`` (of the results), ``beta``
            (in [1e-3, 1e3], one value or one per sample) and ``dt`` (accepted for the common
            signature and unused); see ``pdeflow.tasks.pdes.base.PDE``.

    Attributes:
        method, tol, max_iter: The constructor arguments (``method`` resolved from ``"auto"``).
        h: Cell size ``length / n``.
        x, y: Cell centres, shape (n,), ``dtype`` (``coordinates``).

    Raises:
        ValueError: If an argument is outside its valid range; the message names it.
    """

    # Stationary: one frame, no time stepping; t_end and dt only fill the common fields.
    info = PDEInfo(
        name="darcy_2d",
        dim=2,
        description="2D steady Darcy flow -div(a grad u) = beta, u = 0 on the edge",
        fields={"a": "1 (permeability)", "u": "beta * length^2 / a"},
        coefficients={"beta": Coefficient((1e-3, 1e3), "1", sample=("loguniform", 0.01, 100.0))},
        defaults=Defaults(n=64, length=1.0, t_end=0.0, dt=1.0, n_frames=1),
        boundary="Dirichlet u = 0",
        stationary=True,
        coordinate_offset=0.5,
    )
    even_grid = False
    min_points = 4

    def __init__(
        self,
        grid: Grid | int,
        *,
        method: Method = "auto",
        tol: float = 1e-10,
        max_iter: int = DEFAULT_MAX_ITER,
        **kwargs: Any,
    ) -> None:
        if method not in ("auto", "direct", "cg"):
            raise ValueError(f"method must be 'auto', 'direct' or 'cg', got {method!r}")
        if isinstance(tol, bool) or not isinstance(tol, numbers.Real) or not 0 < tol < 1:
            raise ValueError(f"tol must be a number in (0, 1), got {tol!r}")
        if isinstance(max_iter, bool) or not isinstance(max_iter, numbers.Integral) or max_iter < 1:
            raise ValueError(f"max_iter must be an integer >= 1, got {max_iter!r}")
        if method == "auto":
            method = "direct" if torch.device(kwargs.get("device", "cpu")).type == "cpu" else "cg"
        for key, value in (("method", method), ("tol", float(tol)), ("max_iter", int(max_iter))):
            object.__setattr__(self, key, value)
        super().__init__(grid, **kwargs)

    def _setup(self, params: dict[str, torch.Tensor]) -> dict[str, Any]:
        n, h = self.n, self.dx
        m = torch.arange(1, n + 1, dtype=torch.float64)
        eig = (4 / h**2) * torch.sin(math.pi * m / (2 * n)) ** 2
        weight = torch.full_like(m, 2.0 / n)
        weight[-1] = 1.0 / n
        angle = math.pi * m / (2 * n)
        # A tuple, not tensors: the base would cast tensors to the solver's dtype, and CG
        # runs in float64 whatever the dtype of the results.
        poisson = _Poisson(
            (eig[:, None] + eig[None, :]).to(self.device),
            (0.5j * torch.exp(-1j * angle)).to(self.device),
            (weight * torch.exp(1j * angle)).to(self.device),
        )
        x, y = (torch.from_numpy(c) for c in self.coordinates(self.grid))
        return {"h": h, "x": x, "y": y, "_poisson": poisson}

    @classmethod
    def initial_condition(
        cls,
        grid: Grid,
        seeds: Sequence[int] | np.ndarray,
        *,
        dtype: torch.dtype = torch.float64,
        device: str | torch.device = "cpu",
        coefficient: CoefficientKind = "piecewise",
        levels: Sequence[float] = PIECEWISE_LEVELS,
    ) -> torch.Tensor:
        """Random permeability in channel 0, zeros in channel 1 (the unknown ``u``).

        ``"piecewise"``: ``pdeflow.tasks.fields.step_function`` in 2D, ``levels[1]`` where a GRF
        (``alpha = 2``, ``tau = 3 / length``) is >= 0 and ``levels[0]`` elsewhere (12 and 3 by
        default, as in FNO's Darcy data). ``"lognormal"``:
        ``pdeflow.tasks.fields.lognormal_field`` with the same spectrum, ``sigma`` set so ``log a``
        has pointwise standard deviation ``LOGNORMAL_STD`` = 1. The GRFs are periodic; only their
        pattern is used on the non-periodic square. Each permeability is drawn and transformed by
        itself (``pdeflow.tasks.fields.seeded_samples``), so it is bitwise the same alone as at
        any position of any batch, in either dtype: batch-invariant by construction.

        Args:
            grid: The grid (square).
            seeds: Integer seeds >= 0, shape (batch,); sample ``i`` depends on ``seeds[i]`` only.
            dtype: Returned dtype. Defaults to ``torch.float64``.
            device: Returned device. Defaults to ``"cpu"``.
            coefficient: ``"piecewise"`` (default) or ``"lognormal"``.
            levels: The two values ``(low, high)`` of a piecewise field, both > 0 with
                low < high. Defaults to ``PIECEWISE_LEVELS`` = (3.0, 12.0).

        Returns:
            Tensor of shape (batch, 2, n, n): ``a`` (> 0) and zeros.
        """
        grid = as_grid(grid, None, cls.info.dim, cls.info.defaults.length)
        shape, length = grid.shape, grid.length
        tau = COEF_TAU / length
        if coefficient == "piecewise":
            low, high = (float(v) for v in levels)
            if not 0 < low < high:
                raise ValueError(f"levels must be (low, high) with 0 < low < high, got {levels!r}")
            a = step_function(shape, length, seeds, levels=(low, high), alpha=COEF_ALPHA, tau=tau)
        elif coefficient == "lognormal":
            half = grf_mode_variance(shape, length, alpha=COEF_ALPHA, tau=tau)
            # Pointwise variance at sigma = 1: the sum over all modes, i.e. twice the rfft half
            # minus its m_y = 0 column, which holds its own conjugates (Nyquist modes are 0).
            var = 2 * half.sum() - half[:, 0].sum()
            sigma = LOGNORMAL_STD / math.sqrt(var)
            a = lognormal_field(shape, length, seeds, alpha=COEF_ALPHA, tau=tau, sigma=sigma)
        else:
            raise ValueError(f"coefficient must be 'piecewise' or 'lognormal', got {coefficient!r}")
        out = np.stack([a, np.zeros_like(a)], axis=1)
        return torch.from_numpy(out).to(device=device, dtype=dtype)

    # --- the linear algebra -------------------------------------------------------------------

    def _check_inputs(
        self, a: torch.Tensor, f: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Validate ``a`` and ``f``; float64 tensors (batch, n, n) on ``device``."""
        shape = (self.n, self.n)
        if not isinstance(a, torch.Tensor) or a.ndim != 3 or tuple(a.shape[1:]) != shape:
            got = tuple(a.shape) if isinstance(a, torch.Tensor) else type(a).__name__
            raise ValueError(f"a must be a tensor of shape (batch, {self.n}, {self.n}), got {got}")
        if a.is_complex():
            raise ValueError(f"a must be real, got {a.dtype}")
        a = a.to(device=self.device, dtype=torch.float64)
        bad = (~(torch.isfinite(a) & (a > 0))).flatten(1).any(dim=1)
        if bool(bad.any()):
            rows = bad.nonzero().flatten().tolist()
            raise ValueError(f"a must be real, finite and > 0 everywhere; not so in samples {rows}")
        n_batch = a.shape[0]
        if f is None:
            if self.beta.numel() > 1 and self.beta.numel() != n_batch:
                raise ValueError(f"a has batch {n_batch} but beta has {self.beta.numel()} values")
            beta = self.beta.to(self.device)[:, None, None]
            return a, beta.expand(n_batch, *shape).contiguous()
        if not isinstance(f, torch.Tensor) or tuple(f.shape) != tuple(a.shape):
            got = tuple(f.shape) if isinstance(f, torch.Tensor) else type(f).__name__
            raise ValueError(f"f must be a tensor of the shape of a, {tuple(a.shape)}, got {got}")
        f = f.to(device=self.device, dtype=torch.float64)
        if not bool(torch.isfinite(f).all()):
            raise ValueError("f must be finite")
        return a, f

    @staticmethod
    def _face_coefficients(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Face coefficients, (batch, n + 1, n) along x and (batch, n, n + 1) along y.

        Harmonic means of the two cells inside; ``2 a`` of the cell on the boundary, whose face
        lies half a cell away. The flux through a face is this times the difference of ``u``
        across it (0 outside) over ``h``.
        """
        tx = torch.cat(
            [2 * a[:, :1], 2 * a[:, :-1] * a[:, 1:] / (a[:, :-1] + a[:, 1:]), 2 * a[:, -1:]], dim=1
        )
        ty = torch.cat(
            [
                2 * a[:, :, :1],
                2 * a[:, :, :-1] * a[:, :, 1:] / (a[:, :, :-1] + a[:, :, 1:]),
                2 * a[:, :, -1:],
            ],
            dim=2,
        )
        return tx, ty

    def _apply(self, tx: torch.Tensor, ty: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """``A u`` for u (batch, n, n): minus the divergence of the face fluxes over h^2."""
        flux_x = tx * torch.diff(u, dim=1, prepend=u[:, :1] * 0, append=u[:, :1] * 0)
        flux_y = ty * torch.diff(u, dim=2, prepend=u[:, :, :1] * 0, append=u[:, :, :1] * 0)
        return (torch.diff(flux_x, dim=1) + torch.diff(flux_y, dim=2)).div_(-(self.h**2))

    def _poisson_inverse(self, r: torch.Tensor) -> torch.Tensor:
        """Exact inverse of the constant-coefficient (a = 1) operator, by DST-II both ways."""
        eig2, fwd, inv = self._poisson
        spec = _dst2(_dst2(r, fwd).transpose(1, 2), fwd) / eig2
        return _idst2(_idst2(spec, inv).transpose(1, 2), inv)

    def solve_cg(
        self, a: torch.Tensor, f: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Preconditioned conjugate gradients, batched, in float64 on ``device``.

        Args:
            a: Permeability, shape (batch, n, n), > 0.
            f: Forcing field (batch, n, n); ``None`` uses the constant ``beta``.

        Returns:
            ``u`` (batch, n, n) in ``dtype``, and the iterations of each sample, (batch,) int64.

        Raises:
            CGNotConverged: If a sample misses ``tol`` within ``max_iter`` iterations.
        """
        a, f = self._check_inputs(a, f)
        tx, ty = self._face_coefficients(a)
        contrast = a.flatten(1).amax(dim=1) / a.flatten(1).amin(dim=1)
        plain = (contrast <= PLAIN_CONTRAST_MAX)[:, None, None]
        scale = torch.where(plain, 1.0, a.rsqrt())

        def precondition(r: torch.Tensor) -> torch.Tensor:
            return scale * self._poisson_inverse(scale * r)

        u = torch.zeros_like(f)
        r = f.clone()
        norm_f = f.flatten(1).norm(dim=1)
        z = precondition(r)
        p = z.clone()
        rz = (r * z).sum(dim=(1, 2))
        iterations = torch.zeros(f.shape[0], dtype=torch.int64, device=self.device)
        residual = torch.ones_like(norm_f)
        active = norm_f > 0
        for _ in range(self.max_iter):
            if not bool(active.any()):
                break
            ap = self._apply(tx, ty, p)
            alpha = torch.where(active, rz / (p * ap).sum(dim=(1, 2)), 0.0)[:, None, None]
            u.addcmul_(alpha, p)
            r.addcmul_(alpha, ap, value=-1)
            residual = torch.where(active, r.flatten(1).norm(dim=1) / norm_f, residual)
            iterations += active
            active &= residual > self.tol
            z = precondition(r)
            rz_new = (r * z).sum(dim=(1, 2))
            beta = torch.where(active, rz_new / rz, 0.0)[:, None, None]
            p = z.addcmul_(beta, p)
            rz = rz_new
        if bool(active.any()):
            bad = torch.nonzero(active).flatten()
            raise CGNotConverged(bad.tolist(), residual[bad].tolist(), self.max_iter)
        return u.to(self.dtype), iterations

    def solve_direct(self, a: torch.Tensor, f: torch.Tensor | None = None) -> torch.Tensor:
        """Sparse LU (SuperLU, ``scipy.sparse.linalg.splu``), one factorisation per sample.

        Args:
            a: Permeability, shape (batch, n, n), > 0.
            f: Forcing field (batch, n, n); ``None`` uses the constant ``beta``.

        Returns:
            ``u`` of shape (batch, n, n), ``dtype``, on ``device``.
        """
        a, f = self._check_inputs(a, f)
        tx, ty = (t.cpu().numpy() for t in self._face_coefficients(a))
        rhs = f.cpu().numpy()
        n = self.n
        out = np.empty_like(rhs)
        for i in range(rhs.shape[0]):
            diag = (tx[i, :-1] + tx[i, 1:] + ty[i, :, :-1] + ty[i, :, 1:]).ravel()
            off_y = -ty[i, :, 1:].copy()
            off_y[:, -1] = 0.0  # no coupling across the end of a row of the flattened grid
            off_x = -tx[i, 1:-1].ravel()
            matrix = (
                scipy.sparse.diags(
                    [diag, off_y.ravel()[:-1], off_y.ravel()[:-1], off_x, off_x],
                    [0, 1, -1, n, -n],
                    format="csc",
                )
                / self.h**2
            )
            out[i] = scipy.sparse.linalg.splu(matrix).solve(rhs[i].ravel()).reshape(n, n)
        return torch.from_numpy(out).to(device=self.device, dtype=self.dtype)

    def solve(self, a: torch.Tensor, f: torch.Tensor | None = None) -> torch.Tensor:
        """Solve :math:`-\\nabla\\cdot(a \\nabla u) = f` with ``method``.

        Args:
            a: Permeability, shape (batch, n, n), real, finite and > 0.
            f: Forcing field of shape (batch, n, n); ``None`` (default) uses ``beta``.

        Returns:
            ``u`` of shape (batch, n, n), ``dtype``, on ``device``.

        Raises:
            ValueError: If ``a`` or ``f`` has the wrong shape or invalid values.
            CGNotConverged: If CG misses ``tol`` within ``max_iter`` iterations.
        """
        if self.method == "direct":
            return self.solve_direct(a, f)
        return self.solve_cg(a, f)[0]

    def _start(self, u: torch.Tensor) -> torch.Tensor:
        return u

    def _advance(self, s: torch.Tensor, n_steps: int) -> torch.Tensor:
        """Solve for the permeability in channel 0: (batch, 2, n, n) -> ``[a, u]``."""
        return torch.stack([s[:, 0], self.solve(s[:, 0])], dim=1)

    def _frame(self, s: torch.Tensor) -> torch.Tensor:
        return s
