"""Bad input from the command line: one message naming the problem, exit 2, no traceback, and
nothing left behind; a failing simulator explained in a few lines; --overwrite replacing all of
a stage's files."""

from __future__ import annotations

import json
import os
import sys

import pytest

from pdeflow.storage import RunStore
from pdeflow.tasks.config import load_config
from pdeflow.tasks.stages import run_stage
from pdeflow.tasks.stages.models import MODEL
from tests.cli_helpers import cli
from tests.conftest import ROOT, TINY
from tests.stage_helpers import generate, quantify, reduce, train

pytestmark = pytest.mark.faults
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe"
EXECUTABLE = ROOT / "tests" / "configs" / "custom_executable.yaml"


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--config", "{binary}"], ["{binary}", "not UTF-8 text"]),
        (["--config", "{broken}"], ["{broken}", "not valid YAML", "line 2"]),
        (["--set", "generate.n_samples=[1,"], ["--set generate.n_samples=[1,", "not a YAML value"]),
        (["--set", "generate.constants.nu=.nan"], ["generate.constants.nu", "finite number"]),
        (["--set", "store=../outside"], ["store", "runs directory"]),
    ],
    ids=["binary-config", "broken-yaml", "set-not-yaml", "nan-constant", "escape"],
)
def test_bad_input_exits_2_with_one_message(tmp_path, runs_dir, args, named):
    files = {"binary": tmp_path / "logo.png", "broken": tmp_path / "broken.yaml"}
    files["binary"].write_bytes(PNG)
    files["broken"].write_text("generate: {n_samples: 8\n  oops: [\n")
    args = [a.format(**files) for a in args]
    before = sorted(runs_dir.rglob("*")) if runs_dir.exists() else []
    proc = cli("run", "generate", *args, check=False)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.count("error:") == 1
    for fragment in named:
        assert fragment.format(**files) in proc.stderr, proc.stderr
    after = sorted(runs_dir.rglob("*")) if runs_dir.exists() else []
    assert after == before  # nothing half-written


def test_export_to_an_unwritable_path_exits_2(client, tmp_path):
    cfg = load_config(TINY, ["store=export-bad", "generate.n_samples=16", "generate.block_size=16"])
    generate(cfg, client)
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "file").write_text("x")
    out = locked / "file" / "data.hdf5"  # a directory that is a file: cannot be created
    proc = cli("export", cfg.store, str(out), check=False)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and f"export to {out}" in proc.stderr


def test_a_failing_simulator_is_explained_in_under_15_lines(tmp_path, prefect_api):
    failing = tmp_path / "failing.py"
    failing.write_text(
        "import sys\n"
        "for i in range(40):\n"
        "    print(f'solver log line {i}', file=sys.stderr)\n"
        "print('fatal: matrix is singular', file=sys.stderr)\n"
        "sys.exit(3)\n"
    )
    command = json.dumps([sys.executable, str(failing), "{params}", "{output}"])
    proc = cli("run", "generate", "--config", str(EXECUTABLE), "--set", "store=sim-fails",
               "--set", f"generate.simulator.command={command}", check=False)  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    err = proc.stderr.strip().splitlines()
    assert len(err) < 15, proc.stderr
    text = proc.stderr
    assert "Traceback" not in text and "samples 0-7 (8 of 8)" in text
    assert f"{failing.name} {{params}} {{output}}" in text and "exit code 3" in text
    assert "fatal: matrix is singular" in text and "2 of 2 blocks failed" in text


def test_overwrite_removes_every_file_of_the_replaced_stages(client, runs_dir):
    cfg = load_config(TINY, ["store=overwrite-all"])
    generate(cfg, client)
    train(cfg)
    reduce(cfg, client)
    quantify(cfg, client)
    store = RunStore.named(cfg.store)
    with store.lock():
        store.write_plot("training", b"\x89PNG old")
    old_model = store.path / next(r for r in store.record("train").artifacts if MODEL in r)
    changed = cfg.model_copy(update={"train": cfg.train.model_copy(update={"epochs": 1})})
    run_stage("train", changed, overwrite=True)
    # The plots and the quantify results described the old model: gone with it. The new
    # model replaced the old one (written atomically), reduce (independent of train) is kept.
    assert store.plots() == {} and store.record("quantify") is None
    assert not (store.path / "quantify").exists() and store.record("reduce").status == "complete"
    assert old_model.is_file() and store.record("train").config["train"]["epochs"] == 1
    regenerated = changed.model_copy(
        update={"generate": changed.generate.model_copy(update={"seed": 9})}
    )
    run_stage("generate", regenerated, client=client, overwrite=True)
    left = sorted(str(p.relative_to(store.path)) for p in store.path.rglob("*") if p.is_file())
    assert not [p for p in left if p.startswith(("reduce", "_pdeflow/work", "_pdeflow/plots"))]
    assert [r for r in ("generate", "train", "reduce") if store.record(r)] == ["generate"]
    assert os.path.isfile(store.meta / "lock")
