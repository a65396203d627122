"""One contract over every problem: the 17 registered PDEs and the two example simulators.

A new PDE needs one file and one registry line to be tested like the rest. Each keeps its own
exact-solution or order test beside it (tests/test_pdes_*.py); this suite checks what every
problem promises the pipeline:

- the layout ``(sample, time, channel, *grid)`` and dtype, in float32 and float64;
- the same seeds give the same bits, and a sample is the same alone as in a batch;
- an unstable ``dt`` is refused before any compute, naming the setting and a value that passes;
- a non-finite state is reported with the sample that holds it, never returned;
- the card and the ``pdeflow list pdes`` entry are complete;
- the PDE's own-defaults config (``{pde: NAME, n_samples: 16, design: random}``) runs.
"""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import torch

from pdeflow.tasks.config import ConfigError, PipelineConfig, load_config
from pdeflow.tasks.datasets import dataset_card
from pdeflow.tasks.design import to_physical
from pdeflow.tasks.pdes import PDES, BlowUpError, get_pde
from pdeflow.tasks.problems import PdeProblem, all_problems
from pdeflow.tasks.sampling import sample_seeds, sample_unit
from pdeflow.tasks.solve import coefficients, initial_state, solve_parameters
from tests.cli_helpers import cli
from tests.contract.problems import CASES, config, own_defaults

N_BATCH = 3


def _design(gen, n: int = N_BATCH, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    unit = sample_unit("random", n, len(gen.parameter_names), seed)
    return to_physical(gen, unit), sample_seeds(seed, np.arange(n))


def test_the_registry_holds_the_seventeen_pdes():
    dims = [get_pde(name).info.dim for name in PDES]
    assert len(PDES) == 17 and dims.count(1) == 8 and dims.count(2) == 8 and dims.count(3) == 1


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", CASES)
def test_layout_dtype_and_same_seeds_same_bits(case, dtype):
    gen = config(case, dtype=dtype).generate
    params, seeds = _design(gen)
    traj = solve_parameters(gen, params, seeds)
    frames = 1 if gen.problem.stationary else gen.n_frames
    assert traj.shape == (N_BATCH, frames, len(gen.fields), *gen.grid)
    assert traj.dtype == np.dtype(dtype) and np.isfinite(traj).all()
    other_params, other_seeds = _design(gen, seed=1)
    solve_parameters(gen, other_params, other_seeds)
    np.testing.assert_array_equal(solve_parameters(gen, params, seeds), traj)


@pytest.mark.parametrize("case", CASES)
def test_a_sample_is_the_same_alone_as_in_a_batch(case):
    gen = config(case, dtype="float64").generate
    params, seeds = _design(gen)
    batch = solve_parameters(gen, params, seeds)
    single = np.concatenate(
        [solve_parameters(gen, params[i : i + 1], seeds[i : i + 1]) for i in range(N_BATCH)]
    )
    if gen.problem.draws_initial_states:
        # Initial states are batch-invariant by construction: bitwise, no tolerance.
        np.testing.assert_array_equal(single[:, 0], batch[:, 0])
    # Later frames pass through batched FFTs and reductions, whose vectorised kernels may round
    # a batch differently from its rows in the last bit (measured <= 9e-16 relative per
    # transform, AMD EPYC/MKL); 1e-11 of the field's scale leaves a 1e4 margin for the growth
    # of such differences over a few steps, and is far below any physical difference.
    np.testing.assert_allclose(single, batch, rtol=0, atol=1e-11 * np.abs(batch).max())


def _time_dependent_with_limit() -> list:
    cases = []
    for name in PDES:
        gen = config(name).generate
        problem = gen.problem
        limit = math.inf
        if not problem.stationary:
            limit = problem.cls.max_stable_dt(gen.grid_spec, problem.bounds(gen), gen.u_max)
        marks = () if math.isfinite(limit) else pytest.mark.skip(reason=f"{name}: no dt limit")
        cases.append(pytest.param(name, id=name, marks=marks))
    return cases


@pytest.mark.parametrize("name", _time_dependent_with_limit())
def test_an_unstable_dt_is_refused_naming_the_setting_and_a_passing_value(name):
    gen = config(name).generate
    limit = gen.problem.cls.max_stable_dt(gen.grid_spec, gen.problem.bounds(gen), gen.u_max)
    bad = min(10.0, 1.5 * limit)
    # The frame interval must not force the step below the limit by itself.
    with pytest.raises(ValueError, match=r"stability limit") as info:
        config(name, dt=bad, t_end=bad * 2 * 8, n_frames=3)
    passing = float(re.search(r"generate\.dt <= ([0-9.e+-]+)", str(info.value)).group(1))
    assert 0 < passing <= limit
    config(name, dt=passing, t_end=passing * 2 * 8, n_frames=3)


def test_an_unstable_dt_exits_2_from_the_cli(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("generate: {pde: navier_stokes_2d, n_samples: 16, dt: 0.5}\n")
    proc = cli("run", "generate", "--config", str(path), check=False)
    assert proc.returncode == 2, proc.stderr
    assert "generate.dt <=" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("name", list(PDES))
def test_a_non_finite_state_is_reported_with_its_sample(name):
    gen = config(name, dtype="float64").generate
    params, seeds = _design(gen)
    u0 = initial_state(gen, params, seeds, torch.device("cpu"), torch.float64)
    u0[1].view(-1)[5] = float("nan")
    per_run = gen.problem.info.per_run
    coefs = {k: v[:1] if k in per_run else v for k, v in coefficients(gen, params).items()}
    pde = gen.problem.cls(gen.grid_spec, dt=gen.internal_dt, dtype=torch.float64, **coefs)
    frames, steps = (1, 1) if gen.problem.stationary else (gen.n_frames, gen.steps_per_frame)
    with pytest.raises((BlowUpError, ValueError)) as info:
        pde.rollout(u0, frames, steps)
    if isinstance(info.value, BlowUpError):
        assert info.value.samples == [1]
    else:  # a steady solve refuses the state as input, before any work, naming the sample
        assert "finite" in str(info.value) and "samples [1]" in str(info.value)


@pytest.mark.parametrize("case", CASES)
def test_the_card_is_complete(case):
    gen = config(case).generate
    card = dataset_card(gen)
    units = gen.problem.units
    for field in gen.fields:
        assert f"{field} [{units[field]}]" in card
    assert gen.problem.boundary in card and " x ".join(map(str, gen.grid)) in card
    for name in gen.parameter_names:
        assert f"- {name}:" in card


def test_the_list_pdes_entries_are_complete():
    rows = json.loads(cli("list", "pdes", "--json").stdout)
    assert [r["name"] for r in rows] == list(PDES)
    for row, problem in zip(rows, all_problems(), strict=True):
        assert row == json.loads(json.dumps(problem.describe()))
        assert row["fields"] and set(row["units"]) == set(row["fields"]) and row["boundary"]
        assert row["description"] and row["initial_conditions"]
        assert len(row["defaults"]["grid"]) == row["dim"]
        for coef in row["coefficients"].values():
            lo, hi = coef["range"]
            assert lo <= hi and coef["unit"]
            default = coef["default"]
            inside = (
                [default["constant"]]
                if "constant" in default
                else [default["low"], default["high"]]
            )
            assert all(lo <= v <= hi for v in inside)


@pytest.mark.parametrize("name", list(PDES))
def test_the_own_defaults_config_runs(name):
    cfg = PipelineConfig.model_validate({"generate": own_defaults(name)})
    gen = cfg.generate
    assert gen.problem == PdeProblem(name)
    info = gen.problem.info
    assert gen.grid == (info.defaults.n,) * info.dim and gen.dt == info.defaults.dt
    # The first save intervals of two samples at the PDE's own grid, step and initial state:
    # stable, finite, and the stability check passed at load.
    frames = 1 if info.stationary else 3
    t_end = gen.t_end if info.stationary else 2 * gen.t_end / (gen.n_frames - 1)
    short = gen.model_copy(update={"n_frames": frames, "t_end": t_end})
    params, seeds = _design(short, n=2)
    traj = solve_parameters(short, params, seeds)
    assert traj.shape == (2, frames, len(info.fields), *gen.grid) and np.isfinite(traj).all()


def test_explicit_values_still_win_and_are_checked():
    gen = PipelineConfig.model_validate(
        {"generate": {**own_defaults("burgers"), "n_x": 64, "dt": 0.002}}
    ).generate
    assert gen.grid == (64,) and gen.dt == 0.002 and gen.n_x is None
    with pytest.raises(ConfigError, match="grid or its alias"):
        load_config(None, ["generate.grid=[64]", "generate.n_x=64"])


def test_solver_options_reach_the_solver_and_are_checked():
    # Sod's shock tube to t = 0.4: its shock (speed 1.75) leaves [0, 1] through an outflow
    # boundary, so mass changes; periodic boundaries keep it to round-off (the fluxes telescope).
    ic = {"kind": "pde", "options": {"kind": "sod"}}
    mass = {}
    for boundary in ("periodic", "outflow"):
        gen = config(
            "compressible_euler_1d",
            grid=[32],
            t_end=0.4,
            n_frames=3,
            dt=1e-3,
            dtype="float64",
            initial_condition=ic,
            solver_options={"boundary": boundary},
        ).generate
        params, seeds = _design(gen, n=1)
        traj = solve_parameters(gen, params, seeds)
        mass[boundary] = traj[0, :, 0].sum(axis=-1) / 32
    np.testing.assert_allclose(mass["periodic"], mass["periodic"][0], rtol=1e-13)
    assert abs(mass["outflow"][-1] - mass["outflow"][0]) > 1e-3
    with pytest.raises(ValueError, match=r"solver_options.boundary: 'wall' is not one of"):
        config("compressible_euler_1d", solver_options={"boundary": "wall"})
    with pytest.raises(ValueError, match=r"burgers has no option \['boundary'\]"):
        config("burgers", solver_options={"boundary": "outflow"})


@pytest.mark.parametrize("name", ["burgers", "darcy_2d", "fitzhugh_nagumo_2d"])
def test_the_store_says_where_its_grid_points_sit(name):
    from pdeflow.tasks.datasets import coords

    gen = config(name).generate
    points = {c[2]["grid_points"] for axis, c in coords(gen).items() if axis in ("x", "y", "z")}
    offset = gen.problem.info.coordinate_offset
    assert points == {"cell centres" if offset == 0.5 else "periodic nodes"}
