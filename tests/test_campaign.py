"""The campaign on a real store: chosen points become new blocks of the train split, the ROM is
updated incrementally, every round is logged, a SIGKILL resumes at its round, bad settings are
refused before any compute.

The acquisition functions themselves are tested in tests/test_uq_acquisition.py, and how the
strategies compare is measured by benchmarks/campaign.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from pdeflow.storage import ConfigMismatch, RunStore
from pdeflow.tasks.campaign import Campaign, CampaignError, check, read_log, round_config
from pdeflow.tasks.config import load_config
from pdeflow.tasks.design import SPLITS, split_labels, to_physical
from pdeflow.tasks.stages import run_stage
from tests.cli_helpers import cli, kill_when
from tests.conftest import TINY
from tests.stage_helpers import block_files, complete_blocks, generate
from tests.stage_process import COMMAND as STAGE_PROCESS

ROUNDS = ["campaign.budget=32", "campaign.batch=16", "campaign.pool=256"]


def _cfg(store: str, *more: str):
    return load_config(TINY, [f"store={store}", *ROUNDS, *more])


def _in_process(client):
    def run(name, rcfg, first):
        return run_stage(name, rcfg, client=client).model_dump()

    return run


def test_rounds_add_chosen_points_as_train_blocks_and_update_the_rom(client, runs_dir):
    cfg = _cfg("campaign-basic")
    published = []
    out = Campaign(cfg, _in_process(client), lambda c, e: published.append(len(e["rounds"]))).run()
    assert out["stopped"] == "budget" and out["simulations"] == 32 and out["samples"] == 96
    assert [r["simulations"] for r in out["rounds"]] == [0, 16, 32]
    assert published == [1, 2, 3]  # the UI's artifact after every round
    store = RunStore(runs_dir / cfg.store)
    entry = read_log(cfg, store)
    assert entry["point_rounds"] == [1] * 16 + [2] * 16
    # The chosen points are the store's last samples, in the train split.
    gen = round_config(cfg, entry["points"]).generate
    names = list(gen.parameter_names)
    stored = store.read_coords(names, 64, 96)
    np.testing.assert_allclose(stored, to_physical(gen, np.asarray(entry["points"])), rtol=1e-12)
    split = xr.open_zarr(store.path)["split"].values
    assert np.all(split[64:] == SPLITS.index("train"))
    # ... and the design's samples keep their splits, so the held-out test set never changed.
    assert np.array_equal(split[:64], split_labels(cfg.generate))
    assert len(complete_blocks(store.path)) == 6
    basis = store.record("reduce").details["basis"]
    assert basis["incremental"] and basis["added_samples"] > 0  # updated, not refitted
    group = xr.open_zarr(store.path, group="campaign")
    assert group["chosen"].shape == (32, len(names))
    np.testing.assert_array_equal(group["chosen_round"].values, entry["point_rounds"])
    np.testing.assert_allclose(group["error"].values, [r["error"] for r in out["rounds"]])
    # The chosen points differ from one another, and from the design's.
    design = store.read_coords(names, 0, 64)
    assert len({tuple(p) for p in stored}) == 32
    assert not {tuple(p) for p in stored} & {tuple(p) for p in design}
    # Run again: everything is done, nothing is recomputed.
    files = block_files(store.path)
    again = Campaign(cfg, _in_process(client)).run()
    assert again["rounds"] == out["rounds"] and block_files(store.path) == files


def test_a_larger_budget_continues_the_campaign(client, runs_dir):
    cfg = _cfg("campaign-continued", "campaign.budget=16")
    Campaign(cfg, _in_process(client)).run()
    files = block_files(runs_dir / cfg.store)
    out = Campaign(_cfg("campaign-continued"), _in_process(client)).run()
    assert [r["simulations"] for r in out["rounds"]] == [0, 16, 32]
    after = block_files(runs_dir / cfg.store)
    assert {b: after[b] for b in files} == files  # the earlier rounds' blocks untouched


def _log_rounds(path) -> int:
    from pdeflow.storage.fsio import read_json

    try:
        data = read_json(path / "_pdeflow" / "work" / "campaign" / "campaign.json")
    except ValueError:
        return 0
    return len(data["payload"]["points"]) if data else 0


def test_sigkill_mid_campaign_resumes_at_its_round(client, runs_dir, tmp_path):
    """A campaign's process group (it and its Dask workers) killed once the second batch is
    chosen; the rerun solves only the missing blocks and ends with the points, data and errors
    of an uninterrupted campaign."""
    more = ["campaign.budget=48"]
    name = "campaign-killed"
    path = runs_dir / name
    cfg = _cfg(name, *more)
    config = tmp_path / "config.json"
    config.write_text(cfg.model_dump_json())

    def second_batch_chosen() -> bool:
        # ... and the store readable: while generate rewrites the template for the new
        # samples, a store shows no complete block until a run finishes the template.
        try:
            return _log_rounds(path) >= 32 and len(block_files(path)) >= 5
        except Exception:  # the store's files are being written
            return False

    kill_when(["campaign", str(config)], second_batch_chosen, freeze=True, command=STAGE_PROCESS)
    saved = block_files(path)
    assert 5 <= len(saved) < 7
    Campaign(cfg, _in_process(client)).run()
    reference = _cfg("campaign-reference", *more)
    ref = Campaign(reference, _in_process(client)).run()
    entry, ref_entry = (
        read_log(cfg, RunStore(path)),
        read_log(reference, RunStore.named(ref["store"])),
    )
    assert entry["points"] == ref_entry["points"]
    assert [r["error"] for r in entry["rounds"]] == [r["error"] for r in ref_entry["rounds"]]
    after = block_files(path)
    assert {b: after[b] for b in saved} == saved  # no finished block was solved again
    assert after == block_files(runs_dir / "campaign-reference")


@pytest.mark.parametrize(
    ("setting", "words"),
    [
        (["campaign.batch=8"], ["campaign.batch = 8", "block_size (16)"]),
        (["campaign.budget=40"], ["campaign.budget = 40", "block_size"]),
        (["generate.initial_condition.kind=fourier"], ["campaign.acquisition variance"]),
    ],
)
def test_bad_settings_are_refused_by_the_check(setting, words):
    with pytest.raises(CampaignError) as err:
        check(_cfg("campaign-bad", *setting))
    for w in words:
        assert w in str(err.value), err.value


def test_the_cli_refuses_a_bad_campaign_before_any_compute(runs_dir):
    args = ["run", "campaign", "--config", str(TINY), "--set", "store=campaign-bad-cli"]
    proc = cli(*args, *sum((["--set", s] for s in [*ROUNDS, "campaign.batch=8"]), []), check=False)
    assert proc.returncode == 2, proc.stderr
    assert "campaign.batch = 8" in proc.stderr and "Traceback" not in proc.stderr
    assert not (runs_dir / "campaign-bad-cli").exists()


def test_chosen_points_are_only_ever_appended(client):
    cfg = _cfg("campaign-append")
    generate(round_config(cfg, [[0.5, 0.5, 0.5, 0.5]] * 16), client)
    with pytest.raises(ConfigMismatch, match="different config:\n  generate.points"):
        generate(round_config(cfg, [[0.25, 0.5, 0.5, 0.5]] * 16), client)
    with pytest.raises(ValueError, match="points\\[0\\]: must hold 4 numbers in \\(0, 1\\)"):
        round_config(cfg, [[1.5, 0.5, 0.5, 0.5]])
    with pytest.raises(CampaignError, match="generate.points"):
        check(round_config(cfg, [[0.5, 0.5, 0.5, 0.5]] * 16))


def test_with_train_the_surrogate_is_fine_tuned_from_its_checkpoint_each_round(client, runs_dir):
    cfg = _cfg("campaign-train", "campaign.budget=16", "campaign.train=true")
    Campaign(cfg, _in_process(client)).run()
    rec = RunStore(runs_dir / cfg.store).record("train")
    assert rec.status == "complete" and rec.details["warm_started"] is True
    assert rec.config["generate"]["n_samples"] == 80  # trained on the round's samples
