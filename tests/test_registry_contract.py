"""One contract over the whole PDE registry, through the path the generate stage solves by.

For every registered PDE (1D and 2D, time-dependent and steady): the trajectory has the layout
(sample, time, channel, *space) in the requested dtype and device, the same seeds give the same
data, a batch equals its samples solved one by one, a non-finite state is detected and
reported with the sample that holds it, never returned, and a PDE's own seeded initial state
(random coefficient fields included) is the same bits alone as in any batch.
"""

from __future__ import annotations

import typing

import numpy as np
import pytest
import torch

from pdeflow.tasks.config import load_config
from pdeflow.tasks.design import to_physical
from pdeflow.tasks.pdes import BlowUpError
from pdeflow.tasks.problems import (
    all_entries,
    initial_condition_options,
    pde_initial_state,
    solve,
)
from pdeflow.tasks.sampling import sample_seeds, sample_unit
from pdeflow.tasks.solve import coefficients, initial_state, solve_parameters
from tests.conftest import TINY
from tests.test_fields import fft_input_shapes
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


def _seeded_initial_states() -> list:
    """(entry, options) for each PDE with its own seeded initial state, one per choice of each
    ``Literal`` option (Darcy's two permeability kinds); the defaults where it has none."""
    cases = []
    for entry in all_entries():
        if not hasattr(entry.cls, "initial_condition"):
            continue  # 1D PDEs: their states come from pdeflow.tasks.fields (tests/test_fields.py)
        hints = typing.get_type_hints(entry.cls.initial_condition)
        choices = [
            {name: value}
            for name in initial_condition_options(entry)
            if typing.get_origin(hints.get(name)) is typing.Literal
            for value in typing.get_args(hints[name])
        ]
        for options in choices or [{}]:
            label = "-".join([entry.name, *map(str, options.values())])
            cases.append(pytest.param(entry, options, id=label))
    return cases


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize(("entry", "options"), _seeded_initial_states())
def test_initial_state_bitwise_equal_alone_and_in_any_batch(
    entry, options, dtype, device, monkeypatch
):
    def states(n: int, seeds: list[int]) -> torch.Tensor:
        length, where = entry.default_length, torch.device(device)
        return pde_initial_state(
            entry, n, length, np.array(seeds), {}, options, dtype=dtype, device=where
        )

    seeds = [8, 9, 8, 3]
    # Where batched FFTs round differently depends on the CPU and size: on the AMD EPYC with
    # MKL 2024.2 these tests were written on, torch's rfft2 of (4, 24, 24) differed from its
    # (1, 24, 24) slices in the last bit (up to 8.9e-16) while 32 agreed; 32 differed on other
    # x86 machines. The FFT shapes below catch a batched transform on any CPU.
    for n in (24, 32):
        with fft_input_shapes(monkeypatch) as batch_ffts:
            batch = states(n, seeds)
        assert batch.dtype == dtype and batch.device.type == device
        with fft_input_shapes(monkeypatch) as single_ffts:
            alone = {s: states(n, [s])[0] for s in set(seeds)}
        # No tolerance: any sample can be regenerated alone, bitwise, from its seed.
        for i, s in enumerate(seeds):
            assert torch.equal(batch[i], alone[s]), f"n={n}: sample {i} (seed {s})"
        assert torch.equal(states(n, [1, 2, 4, 5, 6, 9])[-1], batch[1]), f"n={n}: seed 9"
        # By construction: every transform sees one sample, never the batch.
        assert batch_ffts == single_ffts
