"""Damaged stores: truncated, overwritten and deleted chunks, a missing manifest, a template
write stopped at every instant, a deleted record. Each is detected, reported, and recomputed
exactly, never taken for finished work."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import xarray as xr

from pdeflow.storage import RunStore, StageNotReady
from pdeflow.tasks.config import load_config
from pdeflow.tasks.stages import run_stage
from pdeflow.tasks.stages.verify import repair, verify_store
from tests.cli_helpers import cli
from tests.conftest import TINY
from tests.stage_helpers import block_files, complete_blocks, generate

pytestmark = pytest.mark.faults
SMALL = ["generate.n_samples=32", "generate.block_size=8", "generate.chunk_size=8"]


@pytest.fixture(scope="module")
def reference(client):
    cfg = load_config(TINY, ["store=corrupt-reference", *SMALL])
    generate(cfg, client)
    return RunStore.named(cfg.store).path


def _copy(reference, runs_dir, name: str):
    shutil.copytree(reference, runs_dir / name)
    return load_config(TINY, [f"store={name}", *SMALL]), runs_dir / name


def _chunk(path, block: int):
    return path / "u" / "c" / str(block) / "0" / "0"  # chunk = block here (8 samples each)


def _damage(path) -> None:
    """Block 1 truncated, block 2 overwritten in place (a large finite value), block 3 gone."""
    with open(_chunk(path, 1), "r+b") as fh:
        fh.truncate(1000)
    with open(_chunk(path, 2), "r+b") as fh:
        fh.seek(4000)
        fh.write(np.float32(2.4e24).tobytes())
    _chunk(path, 3).unlink()


def test_damaged_chunks_are_named_refused_downstream_and_recomputed(reference, runs_dir):
    cfg, path = _copy(reference, runs_dir, "corrupt-chunks")
    _damage(path)
    # verify names every damaged block and file, and exits 1.
    proc = cli("verify", cfg.store, check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    out = proc.stdout
    assert "NOT intact" in out and "generate  damaged" in out
    assert "block 1: u/c/1/0/0: wrong size" in out and "block 2: u/c/2/0/0: wrong CRC32" in out
    assert "block 3: u/c/3/0/0: missing" in out
    # Training refuses the damaged data before anything starts (no 2.4e24 loss "completed").
    proc = cli("run", "train", "--config", str(TINY), "--set", f"store={cfg.store}",
               *sum((["--set", s] for s in SMALL), []), check=False)  # fmt: skip
    assert proc.returncode == 2 and "generate in store 'corrupt-chunks' is damaged" in proc.stderr
    assert "Traceback" not in proc.stderr and RunStore(path).record("train") is None
    # A re-run of generate recomputes exactly the damaged blocks and says which.
    proc = cli("run", "generate", "--config", str(TINY), "--set", f"store={cfg.store}",
               *sum((["--set", s] for s in SMALL), []))  # fmt: skip
    assert "3 damaged block(s) are recomputed" in proc.stderr
    rec = RunStore(path).record("generate")
    assert rec.details["blocks_computed_last_run"] == 3
    assert rec.details["blocks_repaired_last_run"] == [1, 2, 3]
    np.testing.assert_array_equal(xr.open_zarr(path).u.values, xr.open_zarr(reference).u.values)
    assert block_files(path) == block_files(reference)
    with RunStore(path).lock():
        assert verify_store(RunStore(path))["ok"]


def test_verify_repair_reopens_damaged_blocks_and_stages(reference, runs_dir, client):
    cfg, path = _copy(reference, runs_dir, "corrupt-repair")
    store = RunStore(path)
    run_stage("train", cfg)
    model = next(r for r in store.record("train").artifacts if r.endswith("model.pt"))
    with open(path / model, "r+b") as fh:
        fh.seek(200)
        fh.write(b"\x00" * 8)
    _damage(path)
    with store.lock():
        verdict = verify_store(store)
        assert not verdict["ok"] and sorted(verdict["blocks"]["damaged"]) == [1, 2, 3]
        assert verdict["stages"]["train"]["verdict"] == "damaged"
        actions = repair(store, verdict)
    assert len(actions) == 3  # the blocks, generate's record, train's record
    assert complete_blocks(path) == [0] and store.record("generate").status == "failed"
    assert store.record("train").status == "failed"
    with pytest.raises(StageNotReady, match="generate is failed"):
        run_stage("train", cfg)
    assert generate(cfg, client).computed == 3
    # The model is re-saved from the last checkpoint, not retrained: 0 epochs.
    assert run_stage("train", cfg).computed == 0
    with store.lock():
        assert verify_store(store)["ok"]


def test_a_missing_manifest_means_nothing_is_complete(reference, runs_dir, client):
    cfg, path = _copy(reference, runs_dir, "corrupt-manifest")
    shutil.rmtree(path / "_pdeflow" / "manifest")
    with pytest.raises(StageNotReady, match=r"blocks \[0, 1, 2, 3\] of 4 are not complete"):
        run_stage("train", cfg)
    summary = generate(cfg, client)
    assert summary.computed == 4 and summary.metrics["blocks_complete"] == 4
    assert block_files(path) == block_files(reference)


@pytest.mark.parametrize("fault", ["coordinate", "marker"])
def test_a_damaged_template_of_a_finished_store_is_rebuilt_without_solving(
    reference, runs_dir, client, fault
):
    cfg, path = _copy(reference, runs_dir, f"corrupt-template-{fault}")
    if fault == "coordinate":
        with open(path / "nu" / "c" / "0", "r+b") as fh:  # a stored parameter changed
            fh.write(b"\x00\x00\x00\x00")
    else:
        (path / "_pdeflow" / "store.json").unlink()  # the marker lost
    summary = generate(cfg, client)
    assert summary.computed == 0, "the blocks verify: none is solved again"
    if fault == "coordinate":
        assert any("template file nu/c/0" in note for note in summary.notes)
    store = RunStore(path)
    assert store.template_problems() == [] and store.verify() == {}
    xr.testing.assert_identical(xr.open_zarr(path), xr.open_zarr(reference))


class Crash(BaseException):
    """What a kill does to the code after it: nothing more runs."""


def _crash_after(monkeypatch, n: int) -> None:
    """Let ``n`` renames into the store (file writes becoming visible) happen, then crash at
    the next one. Renames inside the scratch directory are not counted: the next run deletes
    it whole, so a crash between two of them is a crash before the first rename out of it."""
    real, count = os.replace, [0]

    def replace(src, dst):
        if "/_pdeflow/tmp/" not in str(dst):
            if count[0] == n:
                raise Crash(f"crash before rename {n}")
            count[0] += 1
        return real(src, dst)

    monkeypatch.setattr(os, "replace", replace)


def test_a_template_write_stopped_at_any_instant_is_finished_by_the_next_run(
    runs_dir, client, monkeypatch
):
    from pdeflow.tasks import datasets

    # One block of a small grid: each of the many tries solves in a fraction of a second.
    one_block = ["generate.n_samples=8", "generate.block_size=8", "generate.chunk_size=8"]
    base = load_config(TINY, ["store=x", *one_block, "generate.n_x=32"])
    ref = load_config(TINY, ["store=corrupt-template-ref", *one_block, "generate.n_x=32"])
    generate(ref, client)
    reference = RunStore.named(ref.store).path
    n_renames, k = None, 0
    while n_renames is None or k <= n_renames:
        store = RunStore.named(f"corrupt-template-{k}")
        _crash_after(monkeypatch, k)
        try:
            with store.lock():
                store.write_template(datasets.template(base.generate))
            n_renames = k  # no crash: every rename of the template happened
        except Crash:
            pass
        monkeypatch.undo()
        if n_renames is None or k < n_renames:
            # The store is not taken for a dataset: no layout, no complete block.
            assert store.layout() is None or store.template_problems()
        cfg = base.model_copy(update={"store": store.name})
        assert generate(cfg, client).computed == 1, f"stopped after {k} renames"
        assert block_files(store.path) == block_files(reference)
        ref = xr.open_zarr(reference)
        xr.testing.assert_identical(xr.open_zarr(store.path).drop_attrs(), ref.drop_attrs())
        k += 1
    assert n_renames >= 15  # the template is many files: every one of the stops was tried


def test_a_deleted_record_is_recreated_even_with_a_warm_prefect_cache(prefect_api, runs_dir):
    from pdeflow.flows.stages import data_generation

    cfg = load_config(TINY, ["store=corrupt-record", *SMALL, "cluster.n_workers=1"])
    first = data_generation(config=cfg)
    assert first["computed"] == 4
    record = RunStore.named(cfg.store).meta / "stages" / "generate.json"
    saved = json.loads(record.read_text())
    record.unlink()
    again = data_generation(config=cfg)
    # The store, not a cached result, decides: the blocks verify, so none is solved again, and
    # the record is written anew.
    assert again["computed"] == 0 and record.is_file()
    rec = json.loads(record.read_text())
    assert rec["status"] == "complete" and rec["outputs"] == saved["outputs"]
