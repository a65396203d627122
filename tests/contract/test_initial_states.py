"""Every PDE's own seeded initial state is the same bits alone as in any batch, on any CPU.

Sample ``i`` is built from ``seeds[i]`` alone (random coefficient fields included), so it can be
regenerated alone, bitwise, whatever block or batch first produced it.
"""

from __future__ import annotations

import typing

import numpy as np
import pytest
import torch

from pdeflow.tasks.pdes import PDES, get_pde
from pdeflow.tasks.pdes.base import Grid
from pdeflow.tasks.problems import PdeProblem
from tests.test_fields import fft_input_shapes

DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]


def _seeded_initial_states() -> list:
    """(name, options) for each PDE with its own seeded initial state, one per choice of each
    ``Literal`` option (Darcy's two permeability kinds); the defaults where it has none."""
    cases = []
    for name in PDES:
        problem = PdeProblem(name)
        if not hasattr(problem.cls, "initial_condition"):
            continue  # generic families only: pdeflow.tasks.fields (tests/test_fields.py)
        hints = typing.get_type_hints(problem.cls.initial_condition)
        choices = [
            {option: value}
            for option in problem.initial_options()
            if typing.get_origin(hints.get(option)) is typing.Literal
            for value in typing.get_args(hints[option])
        ]
        for options in choices or [{}]:
            label = "-".join([name, *map(str, options.values())])
            cases.append(pytest.param(name, options, id=label))
    return cases


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize(("name", "options"), _seeded_initial_states())
def test_initial_state_bitwise_equal_alone_and_in_any_batch(
    name, options, dtype, device, monkeypatch
):
    cls = get_pde(name)
    info = cls.info

    def states(n: int, seeds: list[int]) -> torch.Tensor:
        grid = Grid.uniform(n, info.defaults.length, info.dim)
        where = torch.device(device)
        return cls.initial_condition(grid, np.array(seeds), dtype=dtype, device=where, **options)

    seeds = [8, 9, 8, 3]
    # Where batched FFTs round differently depends on the CPU and size: on the AMD EPYC with
    # MKL 2024.2 these tests were written on, torch's rfft2 of (4, 24, 24) differed from its
    # (1, 24, 24) slices in the last bit (up to 8.9e-16) while 32 agreed; 32 differed on other
    # x86 machines. The FFT shapes below catch a batched transform on any CPU. 3D states are
    # checked at 16 and 24 points per axis (a 32^3 draw is slow on one core).
    for n in (16, 24) if info.dim == 3 else (24, 32):
        with fft_input_shapes(monkeypatch) as batch_ffts:
            batch = states(n, seeds)
        assert batch.dtype == dtype and batch.device.type == device
        assert batch.shape == (4, len(info.fields), *(n,) * info.dim)
        with fft_input_shapes(monkeypatch) as single_ffts:
            alone = {s: states(n, [s])[0] for s in set(seeds)}
        # No tolerance: any sample can be regenerated alone, bitwise, from its seed.
        for i, s in enumerate(seeds):
            assert torch.equal(batch[i], alone[s]), f"n={n}: sample {i} (seed {s})"
        assert torch.equal(states(n, [1, 2, 4, 5, 6, 9])[-1], batch[1]), f"n={n}: seed 9"
        # By construction: every transform sees one sample, never the batch.
        assert batch_ffts == single_ffts
