r"""Heat conduction in a rod with fixed end temperatures: an exact, vectorized Python simulator.

.. math::

    \partial_t T = \alpha \, \partial_{xx} T, \quad x \in [0, L], \qquad
    T(0, t) = T_\mathrm{left}, \quad T(L, t) = T_\mathrm{right},

    T(x, 0) = T_\mathrm{left} + (T_\mathrm{right} - T_\mathrm{left}) \frac{x}{L}
              + \sum_{k=1}^{K} c_k \sin\frac{k \pi x}{L}.

The exact solution decays every sine mode towards the linear steady profile:
:math:`T = T_\mathrm{left} + (T_\mathrm{right} - T_\mathrm{left}) x / L
+ \sum_k c_k e^{-\alpha (k\pi/L)^2 t} \sin(k\pi x/L)`. The initial perturbation is the sample's
randomness: :math:`c_k \sim \mathcal N(0, (\sigma / k)^2)` drawn from
``numpy.random.default_rng(seed)``, so a sample is fixed by its parameters and seed.

Use it as a :class:`~pdeflow.tasks.simulators.PythonSimulator`::

    PythonSimulator(
        "pdeflow.tasks.simulators.examples.heat_rod:heat_rod",
        output_shape=(21, 1, 64),   # (n_frames, 1, n_x), matching the options below
        fields=("T",),
        options={"n_x": 64, "n_frames": 21, "t_end": 1.0, "length": 1.0},
    )

with sampled parameters ``alpha`` (diffusivity, m^2/s, > 0), ``t_left`` and ``t_right`` (end
temperatures, K). Units are SI: x in m, t in s.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

PARAMETERS = ("alpha", "t_left", "t_right")
N_MODES = 8  # sine modes in the random initial perturbation


def grid(n_x: int, n_frames: int, t_end: float, length: float) -> tuple[np.ndarray, np.ndarray]:
    """Nodes ``x`` (n_x,), both ends included, in m; frame times ``t`` (n_frames,) in s."""
    return np.linspace(0.0, length, n_x), np.linspace(0.0, t_end, n_frames)


def perturbation(seed: int, sigma: float) -> np.ndarray:
    """Sine amplitudes ``c_k``, k = 1..N_MODES, in K: shape (N_MODES,)."""
    k = np.arange(1, N_MODES + 1)
    return np.random.default_rng(int(seed)).standard_normal(N_MODES) * sigma / k


def heat_rod(
    params: Mapping[str, np.ndarray],
    seeds: np.ndarray,
    *,
    n_x: int = 64,
    n_frames: int = 21,
    t_end: float = 1.0,
    length: float = 1.0,
    sigma: float = 1.0,
) -> np.ndarray:
    """Exact temperature of a batch of rods.

    Args:
        params: ``alpha`` (m^2/s, > 0), ``t_left`` and ``t_right`` (K), each of shape (n,).
        seeds: Per-sample seeds, shape (n,), for the initial perturbation.
        n_x: Grid nodes, ends included, >= 3.
        n_frames: Saved frames from t = 0 to ``t_end``, >= 1.
        t_end: Final time in s, > 0.
        length: Rod length L in m, > 0.
        sigma: Scale of the initial perturbation in K, >= 0.

    Returns:
        Temperature in K, shape (n, n_frames, 1, n_x), float64.

    Raises:
        KeyError: A parameter is missing (the message lists the required ones).
        ValueError: A setting or parameter outside its valid range.
    """
    missing = [p for p in PARAMETERS if p not in params]
    if missing:
        raise KeyError(f"missing parameters {missing}; heat_rod needs {list(PARAMETERS)}")
    if n_x < 3 or n_frames < 1 or not t_end > 0 or not length > 0 or not sigma >= 0:
        raise ValueError(
            "need n_x >= 3, n_frames >= 1, t_end > 0, length > 0, sigma >= 0; got "
            f"{n_x=}, {n_frames=}, {t_end=}, {length=}, {sigma=}"
        )
    alpha = np.asarray(params["alpha"], dtype=np.float64)
    if not (alpha > 0).all():
        raise ValueError(f"alpha must be > 0 m^2/s, got {alpha[~(alpha > 0)]}")
    t_left = np.asarray(params["t_left"], dtype=np.float64)
    t_right = np.asarray(params["t_right"], dtype=np.float64)
    x, t = grid(n_x, n_frames, t_end, length)
    wavenumber = np.arange(1, N_MODES + 1) * np.pi / length  # (K,)
    modes = np.sin(wavenumber[:, None] * x[None, :])  # (K, n_x)
    amps = np.stack([perturbation(s, sigma) for s in seeds])  # (n, K)
    decay = np.exp(-alpha[:, None, None] * wavenumber**2 * t[None, :, None])  # (n, T, K)
    steady = t_left[:, None] + (t_right - t_left)[:, None] * x[None, :] / length  # (n, n_x)
    u = steady[:, None, :] + np.einsum("ntk,nk,kx->ntx", decay, amps, modes)
    return u[:, :, None, :]
