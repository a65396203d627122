r"""Fisher-KPP reaction-diffusion in 1D: a standalone program for ``ExecutableSimulator``.

Copy this file as the template of your own external simulator. The protocol is all there is to
it: read ``params.json``, compute, write ``output.npy``, exit 0 (anything else fails the sample
and its stderr ends up in the error message). It needs only Python and NumPy, so it runs the same
on a laptop and on a cluster node; an executable in any language works the same way.

Run by hand::

    echo '{"sample": 0, "seed": 7, "parameters": {"diffusivity": 0.1, "rate": 1.0}}' > p.json
    python -m pdeflow.tasks.simulators.examples.reaction_diffusion p.json out.npy --n-x 64

Use from pdeflow::

    ExecutableSimulator(
        ["python", "-m", "pdeflow.tasks.simulators.examples.reaction_diffusion",
         "{params}", "{output}",
         "--n-x", "64", "--n-frames", "21", "--t-end", "2.0", "--length", "10.0"],
        output_shape=(21, 1, 64),
        fields=("u",),
        timeout_s=60,
    )

Equation, on the periodic interval :math:`[0, L)`:

.. math::

    \partial_t u = D \, \partial_{xx} u + r \, u (1 - u),

``u`` a population density (dimensionless, between 0 and about 1), ``D`` the ``diffusivity``
(length^2/time, > 0) and ``r`` the growth ``rate`` (1/time, >= 0), both read from
``params.json``. The initial condition is the sample's randomness: three periodic Gaussian
bumps of width L/20 with centres uniform on [0, L) and heights uniform in [0.2, 1], drawn from
``numpy.random.default_rng(seed)``; the output is fixed by the parameters and the seed.

Space: second-order central differences on ``n_x`` points ``x_i = i L / n_x``. Time: classical
explicit RK4 with an equal number of steps per frame. Stability limit: the stiffest diffusion
eigenvalue is ``-4 D / dx^2`` and RK4 is stable on the negative real axis up to about -2.79, so
``dt <= 0.69 dx^2 / D``. This program takes ``dt <= 0.25 dx^2 / D``, where RK4 still damps the
grid-scale modes close to the exact rate, and ``dt <= 0.02 / r``, so that the time-stepping
error stays below about 1e-7 (RK4's global error scales as dt^4).

Output: ``output.npy``, float64, shape ``(n_frames, 1, n_x)``; frame j at t = j t_end /
(n_frames - 1) (a single frame is the initial condition).
"""

from __future__ import annotations

import argparse
import json
import math
import sys

import numpy as np

PARAMETERS = ("diffusivity", "rate")


def initial_condition(seed: int, x: np.ndarray, length: float) -> np.ndarray:
    """Three periodic Gaussian bumps drawn from ``seed``; shape ``x.shape``."""
    rng = np.random.default_rng(seed)
    centres, heights = rng.uniform(0.0, length, 3), rng.uniform(0.2, 1.0, 3)
    width = length / 20
    u = np.zeros_like(x)
    for c, h in zip(centres, heights, strict=True):
        d = (x - c + length / 2) % length - length / 2  # periodic distance to the centre
        u += h * np.exp(-0.5 * (d / width) ** 2)
    return u


def rhs(u: np.ndarray, diffusivity: float, rate: float, dx: float) -> np.ndarray:
    """Semi-discrete right-hand side ``D u_xx + r u (1 - u)``, periodic; shape of ``u``."""
    lap = (np.roll(u, 1) - 2.0 * u + np.roll(u, -1)) / dx**2
    return diffusivity * lap + rate * u * (1.0 - u)


def simulate(
    diffusivity: float, rate: float, seed: int, n_x: int, n_frames: int, t_end: float, length: float
) -> np.ndarray:
    """Integrate one sample; returns shape (n_frames, 1, n_x), float64."""
    x = np.arange(n_x) * length / n_x
    dx = length / n_x
    u = initial_condition(seed, x, length)
    frames = [u.copy()]
    if n_frames > 1:
        frame_dt = t_end / (n_frames - 1)
        dt_max = 0.25 * dx**2 / diffusivity
        if rate > 0:
            dt_max = min(dt_max, 0.02 / rate)
        steps = max(1, math.ceil(frame_dt / dt_max))
        dt = frame_dt / steps
        for _ in range(n_frames - 1):
            for _ in range(steps):
                k1 = rhs(u, diffusivity, rate, dx)
                k2 = rhs(u + 0.5 * dt * k1, diffusivity, rate, dx)
                k3 = rhs(u + 0.5 * dt * k2, diffusivity, rate, dx)
                k4 = rhs(u + dt * k3, diffusivity, rate, dx)
                u = u + dt / 6.0 * (k1 + 2.0 * k2 + 2.0 * k3 + k4)
            frames.append(u.copy())
    return np.stack(frames)[:, None, :]


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("params", help="path of params.json written by pdeflow")
    parser.add_argument("output", help="path of the .npy file to write")
    parser.add_argument("--n-x", type=int, default=64, help="grid points, >= 4 (default 64)")
    parser.add_argument("--n-frames", type=int, default=21, help="saved frames, >= 1 (default 21)")
    parser.add_argument("--t-end", type=float, default=2.0, help="final time, > 0 (default 2)")
    parser.add_argument("--length", type=float, default=10.0, help="domain length (default 10)")
    args = parser.parse_args(argv)
    if args.n_x < 4 or args.n_frames < 1 or not args.t_end > 0 or not args.length > 0:
        parser.error("need --n-x >= 4, --n-frames >= 1, --t-end > 0, --length > 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    with open(args.params) as fh:
        spec = json.load(fh)
    values = spec["parameters"]
    missing = [p for p in PARAMETERS if p not in values]
    if missing:
        print(f"params.json lacks parameters {missing}; needs {list(PARAMETERS)}", file=sys.stderr)
        return 2
    diffusivity, rate = float(values["diffusivity"]), float(values["rate"])
    if not diffusivity > 0 or not rate >= 0:
        print(f"need diffusivity > 0 and rate >= 0, got {diffusivity}, {rate}", file=sys.stderr)
        return 2
    u = simulate(
        diffusivity, rate, int(spec["seed"]), args.n_x, args.n_frames, args.t_end, args.length
    )
    np.save(args.output, u)
    return 0


if __name__ == "__main__":
    sys.exit(main())
