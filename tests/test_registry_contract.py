"""One contract over the whole PDE registry, through the path the generate stage solves by.

For every registered PDE (1D and 2D, time-dependent and steady): the trajectory has the layout
(sample, time, channel, *space) in the requested dtype and device, the same seeds give the same
data, a batch equals its samples solved one by one, and a non-finite state is detected and
reported with the sample that holds it, never returned.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pdeflow.tasks.config import load_config
from pdeflow.tasks.generate import coefficients, initial_state, solve_parameters, to_physical
from pdeflow.tasks.pdes import BlowUpError
from pdeflow.tasks.problems import all_entries, solve
from pdeflow.tasks.sampling import sample_seeds, sample_unit

from tests.conftest import TINY
from tests.test_generate_pdes import _small

N_BATCH = 3
DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]


def _config(entry, dtype: str, device: str):
    over = [*_small(entry), f"generate.dtype={dtype}", f"generate.device={device}"]
    return load_config(TINY, over).generate


def _design(gen, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    unit = sample_unit("random", N_BATCH, len(gen.parameter_names), seed)
    return to_physical(gen, unit), sample_seeds(seed, np.arange(N_BATCH))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("entry", all_entries(), ids=lambda e: e.name)
def test_layout_dtype_device_and_seed_determinism(entry, dtype, device):
    gen = _config(entry, dtype, device)
    params, seeds = _design(gen)
    traj = solve_parameters(gen, params, seeds)
    frames = 1 if entry.stationary else gen.n_frames
    shape = (N_BATCH, frames, len(entry.fields), *(gen.n_x,) * entry.dim)
    assert traj.shape == shape and traj.dtype == np.dtype(dtype)
    assert np.isfinite(traj).all()
    # Same seeds and parameters: the same bits, whatever ran in between.
    other_params, other_seeds = _design(gen, seed=1)
    solve_parameters(gen, other_params, other_seeds)
    np.testing.assert_array_equal(solve_parameters(gen, params, seeds), traj)
    # Samples are independent: a batch equals its rows solved alone. float64 round-off of
    # batched FFTs and reductions differs from single-sample calls by a few ulps.
    single = np.concatenate(
        [solve_parameters(gen, params[i : i + 1], seeds[i : i + 1]) for i in range(N_BATCH)]
    )
    rtol = 1e-4 if dtype == "float32" else 1e-10
    scale = np.abs(traj).max()
    np.testing.assert_allclose(single, traj, rtol=0, atol=rtol * scale)


@pytest.mark.parametrize("entry", all_entries(), ids=lambda e: e.name)
def test_non_finite_state_is_reported_with_its_sample(entry):
    gen = _config(entry, "float64", "cpu")
    params, seeds = _design(gen)
    u0 = initial_state(gen, params, seeds, torch.device("cpu"), torch.float64)
    u0[1].view(-1)[5] = float("nan")
    with pytest.raises((BlowUpError, ValueError)) as info:
        solve(
            gen.entry,
            n=gen.n_x,
            length=gen.domain_length,
            dt=gen.internal_dt,
            n_frames=gen.n_frames,
            steps_per_frame=gen.steps_per_frame,
            coefficients=coefficients(gen, params),
            u0=u0,
            device=torch.device("cpu"),
            dtype=torch.float64,
        )
    if isinstance(info.value, BlowUpError):
        assert info.value.samples == [1]
    else:  # a steady solve refuses the state as input, before any work, naming the sample
        assert "finite" in str(info.value) and "samples [1]" in str(info.value)
