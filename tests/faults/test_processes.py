"""Processes: simulators end with pdeflow, servers listen on loopback only, and two runs never
compute the same store at once."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

from pdeflow.storage import RunStore
from pdeflow.storage.fsio import TMP_MARK
from pdeflow.tasks.config import load_config
from pdeflow.tasks.stages import run_stage
from tests.cli_helpers import PDEFLOW, cli, kill_when
from tests.conftest import ROOT
from tests.fault_sims import solves_per_block
from tests.stage_helpers import complete_blocks

pytestmark = pytest.mark.faults
EXECUTABLE = ROOT / "tests" / "configs" / "custom_executable.yaml"
CUSTOM = ROOT / "tests" / "configs" / "custom_python.yaml"
LOOPBACK = {"127.0.0.1", "::1"}


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_executable_simulators_die_with_a_killed_pdeflow(tmp_path, prefect_api):
    pids = tmp_path / "pids"
    pids.mkdir()
    sim = tmp_path / "sleepy.py"
    sim.write_text(textwrap.dedent(f"""
        import json, os, sys, time
        sample = json.load(open(sys.argv[1]))["sample"]
        open(os.path.join({str(pids)!r}, str(sample)), "w").write(str(os.getpid()))
        time.sleep(120)
    """))  # fmt: skip
    command = json.dumps([sys.executable, str(sim), "{params}", "{output}"])
    args = ["run", "generate", "--config", str(EXECUTABLE), "--set", "store=orphans"]
    args += ["--set", f"generate.simulator.command={command}"]
    kill_when(args, lambda: len(list(pids.iterdir())) >= 2)
    started = [int(p.read_text()) for p in pids.iterdir() if p.read_text()]
    assert started
    deadline = time.monotonic() + 15
    while any(_alive(p) for p in started) and time.monotonic() < deadline:
        time.sleep(0.2)
    survivors = [p for p in started if _alive(p)]
    for pid in survivors:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert not survivors, f"simulators outlived pdeflow: {survivors}"


def _faulting_args(store: str, files, extra=()) -> list[str]:
    over = [
        f"store={store}",
        "generate.n_samples=32",
        "generate.block_size=8",
        "generate.simulator.target=tests.fault_sims:heat_rod_with_faults",
        f"generate.simulator.options.log={files / 'log'}",
        f"generate.simulator.options.marker={files / 'marker'}",
        *extra,
    ]
    return ["run", "generate", "--config", str(CUSTOM), *sum((["--set", o] for o in over), [])]


def _listening(root: psutil.Process) -> list[tuple[str, str, int]]:
    out = []
    for proc in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            for conn in proc.net_connections(kind="inet"):
                if conn.status == psutil.CONN_LISTEN:
                    out.append((proc.name(), conn.laddr.ip, conn.laddr.port))
    return out


def test_every_server_of_a_real_run_listens_on_loopback(tmp_path):
    # The default path of `pdeflow run`: its own ephemeral Prefect server, a local Dask
    # cluster with its dashboard; blocks held (never released: the run is killed at the end)
    # so that it can be watched however slowly a loaded machine brings everything up.
    hold = {"action": "hold", "until": str(tmp_path / "never")}
    (tmp_path / "marker").write_text(json.dumps(hold))
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    proc = subprocess.Popen(
        [*PDEFLOW, *_faulting_args("listen", tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,
    )
    try:
        root, deadline, seen = psutil.Process(proc.pid), time.monotonic() + 180, []
        while time.monotonic() < deadline and proc.poll() is None:
            seen = _listening(root)
            # The ephemeral server, the scheduler, its dashboard and the workers are up once a
            # block has been solved (the log has a line).
            if (tmp_path / "log").is_file() and len(seen) >= 4:
                break
            time.sleep(0.5)
        assert proc.poll() is None, proc.stderr.read().decode()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert len(seen) >= 4, seen
    assert {ip for _, ip, _ in seen} <= LOOPBACK, seen


def test_a_second_run_on_a_busy_store_is_refused_and_no_block_is_solved_twice(
    tmp_path, prefect_api, runs_dir
):
    # The first run's blocks wait until the test releases them, so it is still computing
    # while both others start and are refused, however slowly a loaded machine starts them.
    release = tmp_path / "release"
    (tmp_path / "marker").write_text(json.dumps({"action": "hold", "until": str(release)}))
    first = subprocess.Popen([*PDEFLOW, *_faulting_args("busy", tmp_path)],
                             stderr=subprocess.PIPE, text=True)  # fmt: skip
    path = runs_dir / "busy"
    deadline = time.monotonic() + 120
    while not (tmp_path / "log").is_file() and time.monotonic() < deadline:
        time.sleep(0.2)
    # The same config, and another config, while the first still computes: both refused.
    racers = [
        subprocess.Popen(
            [*PDEFLOW, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )  # fmt: skip
        for args in (
            _faulting_args("busy", tmp_path),
            _faulting_args("busy", tmp_path, ["generate.seed=7"]),
        )  # fmt: skip
    ]
    same, other = (subprocess.CompletedProcess(r.args, r.wait(300), *r.communicate())
                   for r in racers)  # fmt: skip
    assert first.poll() is None, "the first run ended before the others were refused"
    release.touch()
    first.wait(timeout=300)
    assert first.returncode == 0, first.stderr.read()
    assert same.returncode == 2 and "is in use by another pdeflow run" in same.stderr
    # Another config is refused by the record of the running one (checked first) or the lock.
    assert other.returncode == 2 and "Traceback" not in other.stderr + same.stderr
    assert "different config" in other.stderr or "in use" in other.stderr
    store = RunStore(path)
    seeds = store.read_coords(["seed"])[:, 0]
    seed_block = {int(s): i // 8 for i, s in enumerate(seeds)}
    assert solves_per_block(tmp_path / "log", seed_block) == dict.fromkeys(range(4), 1)
    assert complete_blocks(path) == [0, 1, 2, 3]
    # Once the first run is done, the other config is refused for its settings, still exit 2.
    later = cli(*_faulting_args("busy", tmp_path, ["generate.seed=7"]), check=False)
    assert later.returncode == 2 and "different config" in later.stderr


def test_temporary_files_of_a_killed_run_are_gone_once_the_next_run_starts(tmp_path, client):
    store = RunStore.named("leftovers")
    with store.lock():
        pass
    stray = [
        store.path / "u" / "c" / f"{TMP_MARK}3.123.beef",
        store.unit_dir("train", "model") / "checkpoints" / f"{TMP_MARK}epoch-000002.pt.7.dead",
        store.meta / "tmp" / "block-2" / "pdeflow-sample17-x" / "params.json",
    ]
    for path in stray:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"left by a kill")
    cfg = load_config(ROOT / "tests" / "configs" / "tiny.yaml", ["store=leftovers"])
    run_stage("generate", cfg, client=client)
    assert not [p for p in stray if p.exists()]
    assert not [p for p in store.path.rglob("*") if TMP_MARK in p.name]
