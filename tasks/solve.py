"""One batch of a generate config: initial states, coefficients, and the solve itself.

Used by the generate stage (a block per Dask task) and by quantify (the solver's Monte Carlo and
Sobol' samples). Trajectories are ``(sample, time, channel, *space)`` in ``gen.dtype``. The
config's problem (``gen.problem``: a registered PDE or the user's simulator) does the solving.
"""

from __future__ import annotations

import numpy as np
import torch

from pdeflow.tasks import fields
from pdeflow.tasks.config import GenerateConfig


def grid_coords(gen: GenerateConfig) -> list[np.ndarray]:
    """Coordinates of each spatial axis, as the problem places its grid points."""
    return gen.problem.coordinates(gen)


def space_shape(gen: GenerateConfig) -> tuple[int, ...]:
    """Grid points per spatial axis of every stored field."""
    return tuple(gen.grid)


def coefficients(gen: GenerateConfig, params: np.ndarray) -> dict[str, np.ndarray]:
    """Every PDE coefficient per sample: sampled columns and constants, each shape (n,)."""
    out = {name: params[:, j] for j, name in enumerate(gen.coefficient_specs)}
    out.update({name: np.full(len(params), value) for name, value in gen.constants.items()})
    return out


def initial_state(
    gen: GenerateConfig, params: np.ndarray, seeds: np.ndarray, device, dtype
) -> torch.Tensor:
    """Initial states of a batch, shape (n, channel, *space), from parameters and seeds.

    Every operation is per sample (elementwise, or a reduction over one sample's own values),
    so a sample's state does not depend on the batch it is computed in.
    """
    ic, length, shape = gen.initial_condition, gen.domain_length, tuple(gen.grid)
    if ic.kind == "pde":
        coefs = coefficients(gen, params)
        return gen.problem.own_initial_state(gen, seeds, coefs, device, dtype)
    if ic.kind == "modes":
        # numpy's sin on the grid: the same bits whatever torch's thread count; each sample's
        # state is then a sum of its own amplitudes times these waves, in the same order.
        amp = np.asarray(params[:, -len(gen.modes) :], dtype=np.float64)
        axes = np.meshgrid(*grid_coords(gen), indexing="ij")
        values = np.zeros((len(params), *shape))
        for j, k in enumerate(gen.modes):
            wave = np.ones(shape)
            for axis in axes:
                wave = wave * np.sin(2 * np.pi * k * axis / length)
            values += amp[:, j].reshape(-1, *([1] * len(shape))) * wave
    else:
        values = _random_field(gen, shape, seeds)
    if ic.rescale == "unit":
        flat = values.reshape(len(values), -1)
        low, high = flat.min(axis=1), flat.max(axis=1)
        span = np.where(high > low, high - low, 1.0)
        values = ((flat - low[:, None]) / span[:, None]).reshape(values.shape)
    return torch.as_tensor(values[:, None], dtype=dtype, device=device)


def _random_field(gen: GenerateConfig, shape: tuple[int, ...], seeds: np.ndarray) -> np.ndarray:
    ic, length = gen.initial_condition, gen.domain_length
    if ic.kind == "fourier":
        amplitude = (ic.amplitude.low, ic.amplitude.high)
        return fields.fourier_series(
            shape, length, seeds, n_waves=ic.n_waves, k_max=ic.k_max, amplitude=amplitude
        )
    if ic.kind == "grf":
        return fields.gaussian_random_field(
            shape, length, seeds, alpha=ic.alpha, tau=ic.tau, sigma=ic.sigma
        )
    levels = (ic.amplitude.low, ic.amplitude.high)
    return fields.step_function(shape, length, seeds, n_steps=ic.n_steps, levels=levels)


def solve_parameters(
    gen: GenerateConfig,
    params: np.ndarray,
    seeds: np.ndarray,
    sample_ids: np.ndarray | None = None,
    workdir: str | None = None,
) -> np.ndarray:
    """Solve one batch; shape (n, n_frames, channel, *space), in ``gen.dtype``.

    Args:
        workdir: where an executable simulator makes its per-sample directories (default: the
            system's temporary directory).

    Raises:
        BlowUpError: non-finite values or a CFL violation, naming the batch rows.
        SimulationError: a user simulator failed for some samples (``pde: custom``).
    """
    return gen.problem.solve(gen, params, seeds, sample_ids, workdir)
