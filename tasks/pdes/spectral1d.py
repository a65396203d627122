"""Shared machinery of the 1D periodic pseudo-spectral solvers stepped by ETDRK4.

Every equation here has the semi-discrete form

.. math::

    \\partial_t \\hat u_m = L_m \\hat u_m + G_m \\, \\mathcal F\\!\\left[f(u)\\right]_m,

with a diagonal linear operator :math:`L_m = L(k_m)`, a diagonal multiplier :math:`G_m` (a
derivative such as :math:`-ik/2`, or a rate), and a pointwise nonlinearity ``f`` (for example
:math:`u^2`); ``f`` is ``None`` for linear equations. A subclass supplies ``L`` and ``G`` from
the wavenumbers and its per-sample coefficients, ``f``, and, where an explicit advection term
limits ``dt``, a Courant number. This module turns them into the ETDRK4 scheme of Cox &
Matthews (2002), J. Comput. Phys. 176, 430-455 (see ``pdeflow.tasks.pdes.etdrk4``), with ``G``
folded into the scheme's weights, a Galerkin truncation that dealiases ``f``, and a batched rollout
that checks every frame.
"""

from __future__ import annotations

import math
import numbers
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import ClassVar

import torch

from pdeflow.tasks.pdes.errors import BlowUpError, CFLViolation, check_rollout_counts
from pdeflow.tasks.pdes.etdrk4 import ETDRK4Coefficients, etdrk4_coefficients
from pdeflow.tasks.pdes.immutable import Immutable

# Points on the full contour circle for a complex or positive linear operator: the density of
# pdeflow.tasks.pdes.etdrk4 (32 points on the upper half), which needs the conjugate symmetry
# of real non-positive L to drop the lower half.
N_CONTOUR_COMPLEX = 64

# Distinct values of hL per block of contour evaluations: bounds the (chunk, 64) complex128
# temporaries to 4 MB each.
_CHUNK = 1 << 12

# Where the stability region of classical RK4, which ETDRK4 reduces to for a mode with L = 0,
# meets the axes: |y| <= 2 sqrt(2) on the imaginary axis (advection), y >= -2.7853 on the
# negative real axis (a damping reaction; the real root of 1 + y/2 + y^2/6 + y^3/24 = 0).
# For real hL < 0 the ETDRK4 region contains these intervals (measured on both axes for hL in
# [-1e6, 0]; it widens with |hL|).
RK4_IMAG_LIMIT = 2 * math.sqrt(2)
RK4_REAL_LIMIT = 2.7852935634052813

_WEIGHTS = ("_e", "_e2", "_gq", "_gq2", "_gf1", "_gf2", "_gf3")

Coefficient = float | Sequence[float] | torch.Tensor


def _contour_phis(z: torch.Tensor) -> list[torch.Tensor]:
    """``Q/h, f1/h, f2/h, f3/h`` at complex ``z`` (m,), as means over a unit circle about z.

    The trapezoid rule of Kassam & Trefethen (2005), SIAM J. Sci. Comput. 26(4), 1214-1233, on
    the full circle, because for complex ``z`` the values on the lower half are not the
    conjugates of those on the upper half. The points sit at half-step angles, so none passes
    closer than ``2 sin(pi / 128) ~= 0.05`` to the removable singularity at 0, where the ``1/w^3``
    terms amplify rounding. Measured against 50-digit mpmath for ``|z|`` in [1e-3, 1e5] in all
    directions: <= 5e-11 relative near ``|z| = 1``, <= 2e-15 for other ``|z| < 3``, and growing
    to 3e-11 at ``|Im z| = 1e5``, where :math:`e^z` itself is only known to ``|z| eps``.
    """
    theta = 2 * math.pi * (torch.arange(N_CONTOUR_COMPLEX, dtype=torch.float64) + 0.5)
    roots = torch.polar(torch.ones_like(theta), theta / N_CONTOUR_COMPLEX)
    out: list[list[torch.Tensor]] = [[], [], [], []]
    for chunk in torch.split(z, _CHUNK):
        w = chunk[:, None] + roots
        ew, ew2 = torch.exp(w), torch.exp(w / 2)
        w3 = w**3
        terms = (
            (ew2 - 1) / w,
            (-4 - w + ew * (4 - 3 * w + w * w)) / w3,
            (2 + w + ew * (w - 2)) / w3,
            (-4 - 3 * w - w * w + ew * (4 - w)) / w3,
        )
        for acc, term in zip(out, terms, strict=True):
            acc.append(term.mean(dim=1))
    return [torch.cat(acc) for acc in out]


def etdrk4_coefficients_complex(linear: torch.Tensor, dt: float) -> ETDRK4Coefficients:
    """ETDRK4 coefficients for any diagonal operator: complex, or real with positive entries.

    Entries that are real and <= 0 go to ``pdeflow.tasks.pdes.etdrk4.etdrk4_coefficients``; the
    others (the dispersive :math:`i k^3` of KdV, the unstable band :math:`k^2 - k^4 > 0` of
    Kuramoto-Sivashinsky) to a contour mean over the full circle (see ``_contour_phis``).

    Args:
        linear: Diagonal of ``L``, any shape, real or complex, finite; units 1/time.
        dt: Step size ``h`` > 0, in time units.

    Returns:
        The six coefficients, complex128 on the CPU, each with the shape of ``linear``.
    """
    if not bool(torch.isfinite(linear).all()):
        raise ValueError("linear must be finite")
    flat = linear.detach().to(device="cpu", dtype=torch.complex128).reshape(-1)
    z = dt * flat
    regular = (flat.imag == 0) & (flat.real <= 0)
    coef = [torch.zeros_like(z) for _ in range(6)]
    coef[0], coef[1] = torch.exp(z), torch.exp(z / 2)
    if bool(regular.any()):
        real = etdrk4_coefficients(flat.real[regular], dt, dtype=torch.float64)
        for i in range(2, 6):
            coef[i][regular] = real[i].to(torch.complex128)
    if not bool(regular.all()):
        pairs = torch.stack([z.real[~regular], z.imag[~regular]], dim=1)
        # Samples sharing a coefficient repeat values of hL: evaluate each once.
        unique, inverse = torch.unique(pairs, dim=0, return_inverse=True)
        phis = _contour_phis(torch.complex(unique[:, 0], unique[:, 1]))
        for i, phi in enumerate(phis, start=2):
            coef[i][~regular] = dt * phi[inverse]
    return ETDRK4Coefficients(*(c.reshape(linear.shape) for c in coef))


def validate_grid(n_x: int, length: float) -> None:
    """Raise ValueError unless ``n_x`` is an even integer >= 8 and ``length`` finite and > 0."""
    if isinstance(n_x, bool) or not isinstance(n_x, numbers.Integral) or n_x < 8 or n_x % 2:
        raise ValueError(f"n_x must be an even integer >= 8, got {n_x!r}")
    validate_positive("length", length)


def validate_positive(name: str, value: float, *, allow_inf: bool = False) -> None:
    """Raise ValueError naming ``name`` unless ``value`` is a real number > 0 (finite)."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and value > 0
    if not ok or (not allow_inf and not math.isfinite(value)):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


def per_sample(name: str, value: Coefficient, *, positive: bool) -> torch.Tensor:
    """Validate a coefficient given once or per sample; float64 CPU tensor of shape (n,)."""
    try:
        values = torch.as_tensor(value, dtype=torch.float64, device="cpu").detach().reshape(-1)
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(
            f"{name} must be a number or a sequence of numbers, got {value!r}"
        ) from err
    ok = torch.isfinite(values) & (values > 0) if positive else torch.isfinite(values)
    if values.numel() == 0 or not bool(ok.all()):
        bound = " and > 0" if positive else ""
        raise ValueError(
            f"{name} must be finite{bound} (one value, or one per sample), got {value!r}"
        )
    return values


class PeriodicSpectral1D(Immutable, ABC):
    """Base class: a 1D periodic pseudo-spectral PDE, ETDRK4 in time, immutable, batched.

    Subclasses set the class attributes and implement ``_operators`` (and ``_pointwise`` and
    ``_courant`` where they apply); their ``__init__`` names the coefficients and calls this one.
    The state is projected onto the kept modes ``_dealias_factor * m < n_x`` before the first
    step, so every later frame lies in their span: the scheme leaves the cut modes at zero.

    Args:
        n_x: Number of grid points, even and >= 8.
        dt: Time step > 0, in time units.
        length: Domain length > 0.
        device: Torch device of all tensors.
        dtype: ``torch.float32`` or ``torch.float64`` for the state.
        coefficients: Each of ``parameter_names`` mapped to a scalar or one value per sample.
        cfl_max: Largest Courant number a rollout accepts (``math.inf`` disables the check);
            only for subclasses that define ``_courant``, else ``None``.
    """

    name: ClassVar[str]
    parameter_names: ClassVar[tuple[str, ...]]
    # Coefficients that must be > 0 (the others need only be finite).
    _positive: ClassVar[frozenset[str]] = frozenset()
    # Modes with _dealias_factor * m >= n_x are cut: 3 is Orszag's 2/3 rule for a quadratic f,
    # 4 the 1/2 rule for a cubic one, 2 drops only the Nyquist mode, 1 keeps every mode.
    _dealias_factor: ClassVar[int] = 3

    def __init__(
        self,
        n_x: int,
        *,
        dt: float,
        length: float,
        device: str | torch.device,
        dtype: torch.dtype,
        coefficients: Mapping[str, Coefficient],
        cfl_max: float | None = None,
    ) -> None:
        validate_grid(n_x, length)
        params, n_batch = self._coefficients(coefficients)
        validate_positive("dt", dt)
        if cfl_max is not None:
            validate_positive("cfl_max", cfl_max, allow_inf=True)
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
        device = torch.device(device)
        complex_dtype = torch.complex64 if dtype == torch.float32 else torch.complex128

        n_modes = n_x // 2 + 1
        k = (2 * math.pi / length) * torch.arange(n_modes, dtype=torch.float64)
        keep = self._dealias_factor * torch.arange(n_modes) < n_x
        linear, gain = self._operators(k, {name: p[:, None] for name, p in params.items()})
        tensors = dict(params, k=k, x=torch.arange(n_x, dtype=torch.float64) * (length / n_x))
        tensors["_keep"] = keep.to(torch.complex128)[None]
        tensors.update(self._weights(linear, None if gain is None else gain * keep, float(dt)))
        state: dict[str, object] = {
            name: t.to(device=device, dtype=complex_dtype if t.is_complex() else dtype)
            for name, t in tensors.items()
        }
        state.update(n_x=int(n_x), dt=float(dt), length=float(length), dx=float(length) / n_x)
        state.update(device=device, dtype=dtype, _n_batch=n_batch)
        if cfl_max is not None:
            state["cfl_max"] = float(cfl_max)
        for name, value in state.items():
            object.__setattr__(self, name, value)

    @classmethod
    def _coefficients(
        cls, coefficients: Mapping[str, Coefficient]
    ) -> tuple[dict[str, torch.Tensor], int]:
        """Validated float64 coefficients, each of shape (1,) or (batch,), and the batch size."""
        params = {
            name: per_sample(name, coefficients[name], positive=name in cls._positive)
            for name in cls.parameter_names
        }
        sizes = {name: p.numel() for name, p in params.items() if p.numel() > 1}
        first, first_size = next(iter(sizes.items()), (None, 1))
        for name, size in sizes.items():
            if size != first_size:
                raise ValueError(
                    f"{name} has {size} per-sample values but {first} has {first_size}"
                )
        return params, first_size

    @staticmethod
    def _weights(
        linear: torch.Tensor, gain: torch.Tensor | None, dt: float
    ) -> dict[str, torch.Tensor]:
        """ETDRK4 weights with the multiplier ``gain`` folded in, complex128.

        Folding saves a complex multiply per nonlinear evaluation. Complex although sometimes
        real: real * complex promotes elementwise, measured 1.5x slower in the Burgers solver.
        Without a nonlinear term only ``_e`` is needed, and ETDRK4 reduces to the exact
        :math:`e^{hL}`.
        """
        if gain is None:
            return {"_e": torch.exp(dt * linear.to(torch.complex128))}
        coef = etdrk4_coefficients_complex(linear, dt)
        gain = gain.to(torch.complex128)
        return {
            "_e": coef.e,
            "_e2": coef.e2,
            "_gq": gain * coef.q,
            "_gq2": 2 * gain * coef.q,
            "_gf1": gain * coef.f1,
            "_gf2": 2 * gain * coef.f2,
            "_gf3": gain * coef.f3,
        }

    @staticmethod
    @abstractmethod
    def _operators(
        k: torch.Tensor, params: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``L`` of shape (n, n_modes) and ``G`` of shape (n', n_modes) or ``None``.

        Args:
            k: Wavenumbers ``2 pi m / length``, shape (n_modes,), float64.
            params: Each coefficient as a float64 column of shape (1, 1) or (batch, 1).
        """

    _pointwise = None  # f(u) on a (batch, n_x) state; may work in place. None: linear PDE.
    _courant = None  # Courant number of each sample of a (batch, n_x) state, or None.

    def __repr__(self) -> str:
        parts = [f"n_x={self.n_x}"]
        for name in self.parameter_names:
            values = getattr(self, name).tolist()
            parts.append(f"{name}={values[0] if len(values) == 1 else f'<{len(values)} values>'}")
        parts += [f"dt={self.dt}", f"length={self.length}", f"device='{self.device}'"]
        parts.append(f"dtype={self.dtype}")
        if hasattr(self, "cfl_max"):
            parts.append(f"cfl_max={self.cfl_max}")
        return f"{type(self).__name__}({', '.join(parts)})"

    def _check_state(self, u: torch.Tensor, name: str) -> torch.Tensor:
        """Validate a (batch, n_x) state against this solver and cast it to its dtype/device."""
        if not isinstance(u, torch.Tensor) or u.ndim != 2 or u.shape[1] != self.n_x:
            shape = tuple(u.shape) if isinstance(u, torch.Tensor) else type(u).__name__
            raise ValueError(f"{name} must be a tensor of shape (batch, {self.n_x}), got {shape}")
        if u.is_complex():
            raise ValueError(f"{name} must be real, got {u.dtype}")
        if self._n_batch > 1 and u.shape[0] != self._n_batch:
            raise ValueError(
                f"{name} has batch {u.shape[0]} but the coefficients have {self._n_batch} "
                "per-sample values"
            )
        return u.to(device=self.device, dtype=self.dtype)

    def _nonlinear(self, v: torch.Tensor) -> torch.Tensor:
        """Spectrum of f(u), (batch, n_modes); ``G`` and dealiasing are in the weights."""
        return torch.fft.rfft(self._pointwise(torch.fft.irfft(v, n=self.n_x)))

    def _step_hat(self, v: torch.Tensor) -> torch.Tensor:
        """One ETDRK4 step in Fourier space; ``v`` and the result have shape (batch, n_modes)."""
        if self._pointwise is None:
            return self._e * v
        # In place where an operand is dead: fewer fresh (batch, n_modes) arrays per step.
        e, e2, gq, gq2, gf1, gf2, gf3 = (getattr(self, name) for name in _WEIGHTS)
        nv = self._nonlinear(v)
        e2v = e2 * v
        a = torch.addcmul(e2v, gq, nv)
        na = self._nonlinear(a)
        nb = self._nonlinear(e2v.addcmul_(gq, na))
        nc = self._nonlinear(a.mul_(e2).addcmul_(gq2, nb).addcmul_(gq, nv, value=-1))
        out = e * v
        return out.addcmul_(gf1, nv).addcmul_(gf2, na.add_(nb)).addcmul_(gf3, nc)

    def step(self, u: torch.Tensor) -> torch.Tensor:
        """Advance the batch by one time step ``dt``, after projecting onto the kept modes.

        Args:
            u: State of shape (batch, n_x), real; cast to the solver's dtype and device.

        Returns:
            The state at ``t + dt``, shape (batch, n_x), solver dtype.
        """
        u = self._check_state(u, "u")
        v = torch.fft.rfft(u).mul_(self._keep)
        return torch.fft.irfft(self._step_hat(v), n=self.n_x)

    def _check_frame(self, u: torch.Tensor, time: float) -> None:
        """Raise if any sample of a (batch, n_x) frame is non-finite or above ``cfl_max``."""
        finite = torch.isfinite(u).all(dim=-1)
        if not bool(finite.all()):
            raise BlowUpError(torch.nonzero(~finite).flatten().tolist(), time)
        if self._courant is None:
            return
        cfl = self._courant(u)
        over = cfl > self.cfl_max
        if bool(over.any()):
            raise CFLViolation(
                torch.nonzero(over).flatten().tolist(), time, cfl[over].tolist(), self.cfl_max
            )

    def rollout(self, u0: torch.Tensor, n_frames: int, steps_per_frame: int) -> torch.Tensor:
        """Integrate a batch and record ``n_frames`` frames, ``steps_per_frame`` steps apart.

        Every frame, ``u0`` included, is checked: all values finite and, for equations with an
        explicit advection term, each sample's Courant number at most ``cfl_max``.

        Args:
            u0: Initial state of shape (batch, n_x), real.
            n_frames: Number of frames to return (>= 1), frame 0 being ``u0``.
            steps_per_frame: Time steps between frames (>= 1); frame ``f`` is at time
                ``f * steps_per_frame * dt``.

        Returns:
            Trajectory of shape (batch, n_frames, n_x), solver dtype and device.

        Raises:
            BlowUpError: If a frame has non-finite values; ``samples`` lists the batch indices.
            CFLViolation: If a frame exceeds ``cfl_max``; ``samples`` lists the batch indices.
        """
        u0 = self._check_state(u0, "u0")
        check_rollout_counts(n_frames, steps_per_frame)
        frames = torch.empty(
            (u0.shape[0], n_frames, self.n_x), dtype=self.dtype, device=self.device
        )
        frames[:, 0] = u0
        self._check_frame(u0, 0.0)
        v = torch.fft.rfft(u0).mul_(self._keep)
        for frame in range(1, n_frames):
            for _ in range(steps_per_frame):
                v = self._step_hat(v)
            frames[:, frame] = torch.fft.irfft(v, n=self.n_x)
            self._check_frame(frames[:, frame], frame * steps_per_frame * self.dt)
        return frames
