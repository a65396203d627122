"""What the CLI prints while it runs and when it fails, with stderr a pipe (CI, nohup, Slurm).

The progress interval is set to 0.3 s here (``$PDEFLOW_PROGRESS_INTERVAL``, 10 s by default).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.cli_helpers import PDEFLOW, cli
from tests.conftest import ROOT, TINY

EXECUTABLE = ROOT / "tests" / "configs" / "custom_executable.yaml"


def _stream(args: list[str], env: dict) -> tuple[list[tuple[str, bool]], int]:
    """Run ``pdeflow ARGS`` with stderr a pipe; each stderr line with whether the process was
    still running when the line arrived, and the exit status."""
    proc = subprocess.Popen(
        [*PDEFLOW, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env
    )
    lines = []
    for line in proc.stderr:
        lines.append((line.rstrip("\n"), proc.poll() is None))
    return lines, proc.wait(timeout=300)


def test_without_a_terminal_progress_lines_arrive_while_the_run_goes(prefect_api, runs_dir):
    env = {**os.environ, "PDEFLOW_PROGRESS_INTERVAL": "0.3"}
    args = ["run", "pipeline", "--config", str(TINY), "--set", "store=cli-progress"]
    lines, code = _stream(args, env)
    text = "\n".join(line for line, _ in lines)
    assert code == 0, text
    assert "Traceback" not in text and "━" not in text  # no bars drawn into a pipe
    live = [line for line, running in lines if running]
    stamp = r"^\d\d:\d\d:\d\d "
    for stage, unit in [("generate", "blocks"), ("train", "epochs"), ("quantify", "steps")]:
        ours = [line for line in live if re.match(stamp + stage + ":", line)]
        assert any(f"/{unit} " in line or f" {unit} " in line for line in ours), text
    assert any(re.search(r"generate: 4/4 blocks \(100%\), [\d.]+ samples/s", x) for x in live)
    assert any(re.search(r"train: 2/2 epochs .*loss [\d.e-]+", x) for x in live), text


def test_a_failed_stage_prints_one_message_and_keeps_the_traceback_in_a_file(
    tmp_path, prefect_api, runs_dir
):
    failing = tmp_path / "failing.py"
    failing.write_text(
        "import sys\nprint('fatal: matrix is singular', file=sys.stderr)\nsys.exit(3)\n"
    )
    command = json.dumps([sys.executable, str(failing), "{params}", "{output}"])
    proc = cli("run", "generate", "--config", str(EXECUTABLE), "--set", "store=cli-fails",
               "--set", f"generate.simulator.command={command}", check=False)  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    err = proc.stderr
    assert "Traceback" not in err and err.count("generate failed:") == 1, err
    assert err.count("fatal: matrix is singular") == 1, err
    found = re.search(r"full traceback in (\S+\.log) \(or run with --debug\)", err)
    assert found, err
    saved = Path(found.group(1)).read_text()
    assert "Traceback" in saved and "GenerationError" in saved


def test_debug_shows_the_traceback_once(tmp_path, prefect_api, runs_dir):
    failing = tmp_path / "failing.py"
    failing.write_text("import sys\nsys.exit(3)\n")
    command = json.dumps([sys.executable, str(failing), "{params}", "{output}"])
    proc = cli("--debug", "run", "generate", "--config", str(EXECUTABLE), "--set",
               "store=cli-fails-debug", "--set", f"generate.simulator.command={command}",
               check=False)  # fmt: skip
    assert proc.returncode == 1 and "GenerationError" in proc.stderr, proc.stderr
    assert proc.stderr.count("generate failed:") == 1


def test_no_zarr_traceback_at_interpreter_exit(tmp_path):
    """zarr's own exit hook closes its loop after waiting 0.2 s for the I/O thread; a thread
    still busy then (a loaded machine) made it print "Cannot close a running event loop"."""
    script = textwrap.dedent(
        """
        import sys, time
        import numpy as np, zarr
        from zarr.core import sync
        from pdeflow.tasks.environment import settle_io

        z = zarr.create_array(store={}, shape=(4,), dtype="f4")
        z[:] = np.arange(4)
        sync.loop[0].call_soon_threadsafe(time.sleep, 1.0)  # the loop is busy at exit
        if sys.argv[1] == "settle":
            settle_io()
        """
    )
    path = tmp_path / "exit.py"
    path.write_text(script)
    run = [sys.executable, str(path)]
    raw = subprocess.run([*run, "raw"], capture_output=True, text=True, timeout=60)
    assert "Cannot close a running event loop" in raw.stderr  # the failure this guards against
    settled = subprocess.run([*run, "settle"], capture_output=True, text=True, timeout=60)
    assert settled.returncode == 0 and settled.stderr == "", settled.stderr


@pytest.mark.parametrize(
    ("command", "heavy"),
    [
        ("show", "('prefect', 'distributed', 'sklearn', 'torch', 'zarr', 'xarray')"),
        # verify reads chunks (zarr's codecs) but none of the stage science: it started in
        # 2.1 s when it imported the stage classes, 0.37 s with the demo store checked now.
        ("verify", "('prefect', 'distributed', 'sklearn', 'torch', 'scipy')"),
    ],
)
def test_show_and_verify_import_no_dask_prefect_or_torch(runs_dir, command, heavy):
    # `show` reads the store's JSON records: importing any of these would cost it its start-up
    # time (zarr alone is 0.3-0.5 s on 2 cores; storage imports it lazily, as it does torch).
    code = (
        "import sys; from pdeflow.flows import cli; "
        f"sys.argv = ['pdeflow', '{command}', 'no-such-store']\n"
        "try:\n    cli.app()\nexcept SystemExit:\n    pass\n"
        f"print(sorted(m for m in {heavy} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout + out.stderr


@pytest.mark.parametrize(
    ("command", "says"),
    [
        # A stationary problem's pipeline is generate and reduce; darcy_2d's random input
        # field is no parameter, so its reduce stage refuses.
        ("pipeline", "error: reduce: darcy_2d is stationary"),
        ("train", "error: train: darcy_2d is stationary"),
    ],
)
def test_a_stationary_pde_reaching_train_is_one_message(runs_dir, command, says):
    """The issue's case: darcy_2d through the pipeline printed a 66-line traceback twice."""
    proc = cli("run", command, "--set", "store=darcy-pipe",
               "--set", "generate={pde: darcy_2d, n_samples: 16}", check=False)  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith(says), lines[0]
    assert not (runs_dir / "darcy-pipe").exists()
