"""The infer stage on a real store: delayed acceptance and Metropolis on the solver, resumed after
a SIGKILL, observations from a file, and bad input refused before any compute.

The samplers' own validation (the linear-Gaussian posterior, calibration over 50 trials, exact
resume of one chain) is in tests/test_uq_mcmc.py; here the stage wiring is checked.
"""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import xarray as xr

from pdeflow.storage import RunStore
from pdeflow.tasks.config import load_config
from pdeflow.tasks.stages import require_ready, run_stage
from pdeflow.tasks.stages.infer import segment_path
from pdeflow.tasks.stages.infer_observations import load_observations
from tests.cli_helpers import cli, kill_when
from tests.conftest import TINY
from tests.stage_helpers import generate, reduce
from tests.stage_process import COMMAND as STAGE_PROCESS

# Small chains: 2 per method, 40 burn-in steps and 80 kept, saved every 20 steps (6 segments).
CHAINS = [
    "infer.n_chains=2",
    "infer.burn_in=40",
    "infer.n_steps=80",
    "infer.checkpoint_every=20",
]


def _cfg(store: str, *more: str):
    return load_config(TINY, [f"store={store}", *CHAINS, *more])


@pytest.fixture(scope="module")
def upstream(client, runs_dir):
    """A tiny store with generate and reduce complete; tests copy it under their own names."""
    cfg = _cfg("infer-upstream")
    generate(cfg, client)
    reduce(cfg, client)
    return runs_dir / cfg.store


def _copy(upstream, runs_dir, name: str):
    shutil.copytree(upstream, runs_dir / name)
    return runs_dir / name


def test_both_samplers_run_and_the_posterior_holds_the_truth(upstream, runs_dir, client):
    _copy(upstream, runs_dir, "infer-basic")
    cfg = _cfg("infer-basic")
    summary = run_stage("infer", cfg, client=client)
    m = summary.metrics
    assert summary.computed == summary.total == 2 * 2 * 6
    # Metropolis calls the solver at every proposal inside the prior's support; delayed
    # acceptance only at those the ROM lets through, and never more often.
    assert m["mh_solver_calls_per_step"] <= 1.0
    # Each solver call is a proposal the ROM passed: calls = screen acceptance x the kept steps
    # inside the prior's support (2 chains x 80 steps at most).
    assert 0 < m["da_solver_calls"] <= m["da_screen_acceptance"] * 160 + 1e-9
    assert m["da_solver_calls"] < m["mh_solver_calls"]
    assert 0 < m["da_acceptance"] <= m["da_screen_acceptance"] <= 1
    ds = xr.open_zarr(runs_dir / "infer-basic", group="infer")
    assert ds["draws"].shape == (2, 2, 80, 4)  # method, chain, kept draw, parameter
    assert list(ds["method"].values) == ["da", "mh"]
    names = list(cfg.generate.parameter_names)
    truth = np.asarray(ds.attrs["truth"])
    draws = ds["draws"].values.reshape(2, -1, 4)
    for k in range(2):
        mean, sd = draws[k].mean(axis=0), draws[k].std(axis=0)
        # 2% noise on 32 sensors pins the parameters: the posterior is narrow and centred on
        # the truth up to the noise's pull; 5 posterior sds (plus 1% of the prior range, for
        # a short chain's spread estimate) is far outside what a correct sampler produces.
        spans = np.array([s.high - s.low for s in cfg.generate.parameter_specs])
        assert np.all(np.abs(mean - truth) < 5 * sd + 0.01 * spans), (names, mean, truth, sd)
    # The record names every parameter's interval and whether it covers the truth.
    for n in names:
        assert m[f"{n}_q05"] <= m[f"{n}_mean"] <= m[f"{n}_q95"]
        assert isinstance(m[f"{n}_covered"], bool)
    # A second run finds everything done.
    again = run_stage("infer", cfg, client=client)
    assert again.computed == 0


def test_observations_from_a_file_give_the_synthetic_run_bit_for_bit(
    upstream, runs_dir, client, tmp_path
):
    """A CSV of the synthetic observations (same values, same noise) is the same likelihood, so
    the chains are the same: the file's reading, frame matching and interpolation are exact."""
    _copy(upstream, runs_dir, "infer-synthetic")
    _copy(upstream, runs_dir, "infer-file")
    fixed = ["infer.noise_std=0.01", "infer.baseline=false"]
    synthetic = _cfg("infer-synthetic", *fixed)
    obs = load_observations(synthetic, RunStore(runs_dir / "infer-synthetic"))
    gen = synthetic.generate
    times = obs.frames * gen.t_end / (gen.n_frames - 1)
    rows = ["t,x,value"] + [
        f"{float(t)!r},{float(x)!r},{float(v)!r}"
        for t, x, v in zip(times, obs.points[:, 0], obs.values, strict=True)
    ]
    csv = tmp_path / "obs.csv"
    csv.write_text("\n".join(rows) + "\n")
    sample = f"infer.sample={obs.sample}"
    from_file = _cfg("infer-file", *fixed, "infer.observations=file", f"infer.file={csv}", sample)
    run_stage("infer", synthetic, client=client)
    run_stage("infer", from_file, client=client)
    a = xr.open_zarr(runs_dir / "infer-synthetic", group="infer")["draws"].values
    b = xr.open_zarr(runs_dir / "infer-file", group="infer")["draws"].values
    np.testing.assert_array_equal(a, b)


def _segments(path, cfg) -> dict:
    store = RunStore(path)
    out = {}
    for m in cfg.infer.methods:
        for c in range(cfg.infer.n_chains):
            for s in range(cfg.infer.n_segments):
                p = segment_path(store, m, c, s)
                if p.exists():
                    out[p] = (os.stat(p).st_ino, os.stat(p).st_mtime_ns)
    return out


def test_sigkill_then_rerun_resumes_every_chain_after_its_last_segment(
    upstream, runs_dir, client, tmp_path
):
    """The stage's process group (the stage and its Dask workers) killed once some segments
    are saved; the rerun leaves them untouched, runs the rest, and the draws equal an
    uninterrupted run's."""
    slow = ["infer.n_steps=160"]  # 10 segments per chain: seconds of work left at the kill
    _copy(upstream, runs_dir, "infer-reference")
    _copy(upstream, runs_dir, "infer-killed")
    cfg = _cfg("infer-killed", *slow)
    path = runs_dir / cfg.store
    total = len(cfg.infer.methods) * cfg.infer.n_chains * cfg.infer.n_segments

    def some_saved() -> bool:
        return 4 <= len(_segments(path, cfg)) <= total // 2

    config = tmp_path / "config.json"
    config.write_text(cfg.model_dump_json())
    kill_when(["infer", str(config)], some_saved, freeze=True, command=STAGE_PROCESS)
    saved = _segments(path, cfg)
    assert 4 <= len(saved) < total
    assert RunStore(path).record("infer").status == "running"
    run_stage("infer", cfg, client=client)
    record = RunStore(path).record("infer")
    assert record.status == "complete"
    after = _segments(path, cfg)
    assert len(after) == total
    assert {p: after[p] for p in saved} == saved  # no saved segment was rewritten
    run_stage("infer", _cfg("infer-reference", *slow), client=client)
    killed = xr.open_zarr(path, group="infer")["draws"].values
    reference = xr.open_zarr(runs_dir / "infer-reference", group="infer")["draws"].values
    np.testing.assert_array_equal(killed, reference)


@pytest.mark.parametrize(
    ("setting", "words"),
    [
        (["infer.sample=100000"], ["infer.sample", "holds samples 0.."]),
        (["infer.n_sensors=65"], ["infer.n_sensors", "64 points"]),
        (["infer.n_times=11"], ["infer.n_times", "at most 10"]),
        (["infer.observations=file", "infer.file=/nonexistent.csv"], ["infer.file", "not exist"]),
        (["infer.screen=none", "infer.baseline=false"], ["infer.screen", "baseline"]),
    ],
)
def test_bad_settings_are_refused_by_the_precheck(upstream, runs_dir, setting, words):
    """What `pdeflow run` checks before anything starts (the CLI's exit 2 is tested below)."""
    from pdeflow.tasks.config import ConfigError

    name = f"infer-bad-{abs(hash(tuple(setting))) % 10**8}"
    _copy(upstream, runs_dir, name)
    with pytest.raises((ValueError, ConfigError)) as err:
        require_ready(_cfg(name, *setting), ("infer",), overwrite=False)
    for w in words:
        assert w in str(err.value), err.value
    assert RunStore(runs_dir / name).record("infer") is None


def test_a_bad_file_names_the_column(upstream, runs_dir, tmp_path):
    path = _copy(upstream, runs_dir, "infer-bad-file")
    csv = tmp_path / "bad.csv"

    def refusal(text: str) -> str:
        csv.write_text(text)
        proc = cli(
            "run", "infer", "--config", str(TINY), "--set", "store=infer-bad-file",
            "--set", "infer.observations=file", "--set", f"infer.file={csv}", check=False,
        )  # fmt: skip
        assert proc.returncode == 2, proc.stderr
        assert "Traceback" not in proc.stderr
        return proc.stderr

    assert "lacks the column(s) ['x']" in refusal("t,position,value\n0.1,0.5,1.0\n")
    # 0.15 is not a saved frame time (every 0.1)
    assert "t = 0.15 is not a saved frame time" in refusal("t,x,value\n0.15,0.5,1.0\n")
    assert RunStore(path).record("infer") is None
    assert not (path / "_pdeflow" / "work" / "infer").exists()
