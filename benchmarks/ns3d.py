"""Measurement: steps per second of the 3D Navier-Stokes solver against a plain numpy version.

Both integrate the same problem with the same scheme: the velocity form with the nonlinear term
``P(u x omega)`` (Leray projection, 2/3-rule cube truncation) and IF-RK4 in time, on 64^3,
batch 2, float32, ``nu`` = 0.02, from the solver's own initial state. The numpy baseline below
is a straightforward transcription with ``numpy.fft`` (batched over samples and components, no
work buffers). Before any time is reported the two trajectories are compared: relative L2
difference after ``N_STEPS`` steps below ``AGREE`` (float32 round-off).

Timing alternates the two, one timed call of ``N_STEPS`` steps each per round after a warm-up
(FFT plans, first-touch pages), and reports the median per-round time; pdeflow at one and at two
torch threads (numpy's FFT is single-threaded either way).

Run alone: ``.venv/bin/python -m benchmarks.ns3d``.
"""

from __future__ import annotations

import math
import statistics

import numpy as np
import torch

from benchmarks.common import Result, timed
from pdeflow.tasks.pdes.base import Grid
from pdeflow.tasks.pdes.navier_stokes3d import NavierStokes3D

N, BATCH, NU, DT = 64, 2, 0.02, 0.01
N_STEPS = 4
AGREE = 1e-4  # float32 FFTs of O(1) data over a few steps differ by ~1e-6 relative
AXES = (-3, -2, -1)


class NumpyNS3D:
    """The solver's scheme in plain numpy: IF-RK4 on the projected, truncated spectra."""

    def __init__(self, n: int, length: float, nu: float, dt: float, dtype=np.float32) -> None:
        m = np.fft.fftfreq(n, 1.0 / n)
        mx, my, mz = m[:, None, None], m[None, :, None], np.arange(n // 2 + 1.0)[None, None, :]
        keep = (3 * np.abs(mx) < n) & (3 * np.abs(my) < n) & (3 * mz < n)
        scale = 2 * math.pi / length
        self.k = [scale * mx, scale * my, scale * mz]
        k2 = sum(k**2 for k in self.k)
        cdtype = np.complex64 if dtype == np.float32 else np.complex128
        self.inv_k2 = np.where(keep & (k2 > 0), 1 / np.where(k2 > 0, k2, 1), 0).astype(cdtype)
        # The nonlinear term drops k = 0 (the mean is conserved); the start keeps the mean.
        self.keep_nl = (keep & (k2 > 0)).astype(cdtype)
        self.keep = keep.astype(cdtype)
        self.e2 = np.exp(-0.5 * nu * dt * k2).astype(cdtype)
        self.k = [k.astype(cdtype) for k in self.k]
        self.n, self.dt, self.dtype = n, dt, dtype

    def project(self, f: np.ndarray, keep: np.ndarray) -> np.ndarray:
        """Leray projection of spectra (batch, 3, n, n, n // 2 + 1), times the mask ``keep``."""
        div = sum(self.k[i] * f[:, i] for i in range(3)) * self.inv_k2
        return keep * f - np.stack([k * div for k in self.k], axis=1)

    def nonlinear(self, v: np.ndarray) -> np.ndarray:
        kx, ky, kz = self.k
        w = 1j * np.stack(
            [ky * v[:, 2] - kz * v[:, 1], kz * v[:, 0] - kx * v[:, 2], kx * v[:, 1] - ky * v[:, 0]],
            axis=1,
        )
        s = (self.n,) * 3
        u = np.fft.irfftn(v, s=s, axes=AXES).astype(self.dtype)
        om = np.fft.irfftn(w, s=s, axes=AXES).astype(self.dtype)
        cross = np.cross(u, om, axis=1)
        return self.project(np.fft.rfftn(cross, axes=AXES).astype(v.dtype), self.keep_nl)

    def run(self, u: np.ndarray, n_steps: int) -> np.ndarray:
        h, e2 = self.dt, self.e2
        v = self.project(np.fft.rfftn(u, axes=AXES).astype(self.e2.dtype), self.keep)
        for _ in range(n_steps):
            k1 = self.nonlinear(v)
            k2 = self.nonlinear(e2 * (v + h / 2 * k1))
            k3 = self.nonlinear(e2 * v + h / 2 * k2)
            k4 = self.nonlinear(e2 * (e2 * v + h * k3))
            v = e2 * (e2 * (v + h / 6 * k1) + h / 3 * (k2 + k3)) + h / 6 * k4
        return np.fft.irfftn(v, s=(self.n,) * 3, axes=AXES).astype(self.dtype)


def _torch_run(pde: NavierStokes3D, u0: torch.Tensor) -> torch.Tensor:
    return pde.rollout(u0, 2, N_STEPS)[:, -1]


def compare(threads: int, rounds: int) -> tuple[list[float], list[float], float]:
    """Per-round seconds of ``N_STEPS`` steps (pdeflow, numpy) and their relative L2 gap."""
    grid = Grid.uniform(N, 2 * math.pi, 3)
    u0 = NavierStokes3D.initial_condition(grid, range(BATCH), dtype=torch.float32)
    pde = NavierStokes3D(grid, dt=DT, nu=NU, dtype=torch.float32)
    base = NumpyNS3D(N, 2 * math.pi, NU, DT)
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        ours, theirs = _torch_run(pde, u0).double(), torch.from_numpy(base.run(u0.numpy(), N_STEPS))
        gap = ((ours - theirs.double()).norm() / ours.norm()).item()
        if not gap < AGREE:
            raise AssertionError(f"pdeflow and numpy disagree: relative L2 {gap:.3g} >= {AGREE}")
        t_ours, t_theirs = [], []
        for _ in range(rounds):
            t_ours.append(timed(lambda: _torch_run(pde, u0))[0])
            t_theirs.append(timed(lambda: base.run(u0.numpy(), N_STEPS))[0])
    finally:
        torch.set_num_threads(saved)
    return t_ours, t_theirs, gap


def measure(quick: bool) -> list[Result]:
    """Rows: pdeflow's steps/s at one and two threads, each against the numpy baseline."""
    rounds = 2 if quick else 3
    rows = []
    for threads in (1, 2):
        t_ours, t_theirs, gap = compare(threads, rounds)
        ours, theirs = N_STEPS / statistics.median(t_ours), N_STEPS / statistics.median(t_theirs)
        rows.append(
            Result(
                name=f"NS3D 64^3, B={BATCH}, float32, {threads} thread(s)",
                value=ours,
                unit="steps/s",
                stat=f"median of {rounds}, alternating",
                reference=theirs,
                reference_label="plain numpy.fft, same scheme (single-threaded)",
                details={
                    "seconds_pdeflow": t_ours,
                    "seconds_numpy": t_theirs,
                    "rel_l2_gap": gap,
                    "steps": N_STEPS,
                    "nu": NU,
                    "dt": DT,
                },
            )
        )
    return rows


if __name__ == "__main__":
    for row in measure(quick=False):
        print(
            f"{row.name}: pdeflow {row.value:.2f} steps/s, numpy {row.reference:.2f} steps/s, "
            f"ratio {row.ratio:.2f}, rel L2 gap {row.details['rel_l2_gap']:.2g}"
        )
