"""Bring-your-own simulators: the examples against independent references, failure isolation,
settings validation."""

from __future__ import annotations

import os
import pickle
import shlex
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
from scipy.integrate import solve_ivp

from pdeflow.tasks.simulators import (
    ExecutableSimulator,
    PythonSimulator,
    SimulationError,
    get_simulator,
)
from pdeflow.tasks.simulators.examples import reaction_diffusion as rd

HEAT = "pdeflow.tasks.simulators.examples.heat_rod:heat_rod"
RD_MODULE = "pdeflow.tasks.simulators.examples.reaction_diffusion"
HEAT_PARAMS = {
    "alpha": np.array([0.02, 0.05, 0.1]),
    "t_left": np.array([300.0, 310.0, 295.0]),
    "t_right": np.array([280.0, 320.0, 295.0]),
}
SEEDS = np.array([11, 12, 13], dtype=np.uint64)
IDS = np.array([10, 11, 12])


def heat_sim(n_x=64, n_frames=21, t_end=1.0, dtype="float64") -> PythonSimulator:
    opts = {"n_x": n_x, "n_frames": n_frames, "t_end": t_end}
    return PythonSimulator(HEAT, (n_frames, 1, n_x), ("T",), dtype=dtype, options=opts)


def rd_sim(n_x=64, n_frames=11, **kw) -> ExecutableSimulator:
    cmd = [sys.executable, "-m", RD_MODULE, "{params}", "{output}", "--n-x", str(n_x)]
    cmd += ["--n-frames", str(n_frames), "--t-end", "2.0", "--length", "10.0"]
    return ExecutableSimulator(cmd, (n_frames, 1, n_x), ("u",), dtype="float64", **kw)


# -- the Python example --------------------------------------------------------------------------


def fd_heat(n_x: int, t: np.ndarray, alpha: float, t_left: float, t_right: float, u0: np.ndarray):
    """Method of lines, second-order differences, exact in time via the eigendecomposition of
    the (symmetric) difference matrix: an independent reference with error O(dx^2)."""
    dx = 1.0 / (n_x - 1)
    m = n_x - 2
    a = alpha / dx**2 * (np.diag(-2.0 * np.ones(m)) + np.eye(m, k=1) + np.eye(m, k=-1))
    b = np.zeros(m)
    b[0], b[-1] = alpha / dx**2 * t_left, alpha / dx**2 * t_right
    u_ss = np.linalg.solve(a, -b)
    lam, vec = np.linalg.eigh(a)
    w0 = vec.T @ (u0[1:-1] - u_ss)
    inner = u_ss + (vec * np.exp(np.outer(t, lam))[:, None, :]) @ w0  # (T, m)
    return np.concatenate([np.full((len(t), 1), t_left), inner, np.full((len(t), 1), t_right)], 1)


def test_heat_rod_shape_boundaries_and_steady_state():
    out = heat_sim().run(HEAT_PARAMS, SEEDS, IDS)
    assert out.shape == (3, 21, 1, 64) and out.dtype == np.float64
    # Boundary values are exact: sin(k pi) is ~1e-16 times the amplitude.
    np.testing.assert_allclose(
        out[:, :, 0, 0], HEAT_PARAMS["t_left"][:, None] + 0 * out[:, :, 0, 0]
    )
    np.testing.assert_allclose(
        out[:, :, 0, -1], HEAT_PARAMS["t_right"][:, None] + 0 * out[:, :, 0, 0]
    )
    late = heat_sim(t_end=60.0).run(HEAT_PARAMS, SEEDS, IDS)[:, -1, 0]
    x = np.linspace(0.0, 1.0, 64)
    steady = HEAT_PARAMS["t_left"][:, None] + np.outer(
        HEAT_PARAMS["t_right"] - HEAT_PARAMS["t_left"], x
    )
    # The slowest mode decays as exp(-alpha pi^2 t) = exp(-0.02 * 9.87 * 60) ~ 7e-6 of its size.
    np.testing.assert_allclose(late, steady, atol=1e-4)


def test_heat_rod_converges_to_finite_differences_at_second_order():
    errors, spacings = [], []
    for n_x in (33, 65, 129):
        sim = heat_sim(n_x=n_x, dtype="float64")
        out = sim.run(HEAT_PARAMS, SEEDS, IDS)[:, :, 0]
        t = np.linspace(0.0, 1.0, 21)
        err = 0.0
        for i in range(3):
            p = {k: v[i] for k, v in HEAT_PARAMS.items()}
            ref = fd_heat(n_x, t, p["alpha"], p["t_left"], p["t_right"], out[i, 0])
            err = max(err, np.abs(out[i] - ref).max())
        errors.append(err)
        spacings.append(1.0 / (n_x - 1))
    slope = np.polyfit(np.log(spacings), np.log(errors), 1)[0]
    # Central differences are second order: the log-log slope must be 2 +- 0.3.
    assert abs(slope - 2.0) < 0.3, (slope, errors)


def test_heat_rod_is_deterministic_given_parameters_and_seed():
    sim = heat_sim(dtype="float32")
    first, second = sim.run(HEAT_PARAMS, SEEDS, IDS), sim.run(HEAT_PARAMS, SEEDS, IDS)
    np.testing.assert_array_equal(first, second)
    other = sim.run(HEAT_PARAMS, SEEDS + np.uint64(100), IDS)
    assert not np.allclose(first[:, 0], other[:, 0])


# -- the executable example ----------------------------------------------------------------------


def test_reaction_diffusion_executable_matches_solve_ivp():
    params = {"diffusivity": np.array([0.1, 0.4]), "rate": np.array([1.0, 0.5])}
    seeds = np.array([3, 4], dtype=np.uint64)
    out = rd_sim(max_parallel=2).run(params, seeds, np.array([0, 1]))
    assert out.shape == (2, 11, 1, 64) and out.dtype == np.float64
    dx, t = 10.0 / 64, np.linspace(0.0, 2.0, 11)
    for i in range(2):
        d, r = params["diffusivity"][i], params["rate"][i]
        ref = solve_ivp(
            lambda _t, u, d=d, r=r: rd.rhs(u, d, r, dx),
            (0.0, 2.0),
            out[i, 0, 0],
            method="DOP853",
            t_eval=t,
            rtol=1e-11,
            atol=1e-12,
        )
        # Same semi-discretization, so only time-stepping differs: RK4's global error is
        # O(dt^4), measured <= 7e-8 for D in [0.05, 0.5], r in [0.01, 2] on this grid; the
        # reference is 1e-11 accurate. 1e-6 leaves room and still catches a first- or
        # second-order scheme (errors ~1e-3 to 1e-5 at these steps).
        assert np.abs(out[i, :, 0] - ref.y.T).max() < 1e-6
    # Periodic Fisher-KPP conserves nothing but stays within [0, max(1, max u0)].
    assert out.min() >= 0.0 and out.max() <= max(1.0, out[:, 0].max()) + 1e-12


def test_reaction_diffusion_is_deterministic_given_parameters_and_seed(tmp_path):
    params = {"diffusivity": np.array([0.2]), "rate": np.array([1.5])}
    via_process = rd_sim().run(params, np.array([9], dtype=np.uint64), np.array([0]))[0]
    in_process = rd.simulate(0.2, 1.5, 9, n_x=64, n_frames=11, t_end=2.0, length=10.0)
    np.testing.assert_array_equal(via_process, in_process)
    other = rd.simulate(0.2, 1.5, 10, n_x=64, n_frames=11, t_end=2.0, length=10.0)
    assert not np.allclose(in_process, other)


# -- failure isolation: Python callables ---------------------------------------------------------


def per_sample(params: dict, seed: int) -> np.ndarray:
    return np.full((2, 1, 3), 1.0 / (params["a"] - 2.0))  # ZeroDivisionError at a == 2


def test_python_per_sample_exception_fails_only_that_sample():
    sim = PythonSimulator(per_sample, (2, 1, 3), ("u",), vectorized=False)
    with pytest.raises(SimulationError) as info:
        sim.run({"a": np.array([0.0, 2.0, 3.0])}, SEEDS, IDS)
    err = info.value
    assert set(err.failures) == {11} and "ZeroDivisionError" in err.failures[11]
    assert "sample 11" in str(err) and "1 of 3 samples failed" in str(err)
    np.testing.assert_array_equal(err.ok, [True, False, True])
    np.testing.assert_allclose(err.partial[[0, 2], 0, 0, 0], [-0.5, 1.0])
    assert np.isnan(err.partial[1]).all()


def test_python_vectorized_nan_row_fails_only_that_sample():
    def fn(params, seeds):
        out = np.ones((len(seeds), 2, 1, 3))
        out[1, 1, 0, 2] = np.nan
        return out

    with pytest.raises(SimulationError) as info:
        PythonSimulator(fn, (2, 1, 3), ("u",)).run({"a": np.zeros(3)}, SEEDS, IDS)
    assert list(info.value.failures) == [11]
    assert "non-finite" in info.value.failures[11] and "frame 1" in info.value.failures[11]
    assert (info.value.partial[[0, 2]] == 1).all()


def test_python_vectorized_exception_or_bad_batch_fails_every_sample():
    def boom(params, seeds):
        raise RuntimeError("mesh generation failed")

    with pytest.raises(SimulationError) as info:
        PythonSimulator(boom, (2, 1, 3), ("u",)).run({}, SEEDS, IDS)
    assert info.value.failures == dict.fromkeys(
        IDS.tolist(), "RuntimeError: mesh generation failed"
    )
    with pytest.raises(SimulationError, match=r"returned shape \(2, 2, 1, 3\)"):
        PythonSimulator(lambda p, s: np.ones((2, 2, 1, 3)), (2, 1, 3), ("u",)).run({}, SEEDS, IDS)


def test_simulation_error_pickles_with_failures_and_results():
    with pytest.raises(SimulationError) as info:
        PythonSimulator(per_sample, (2, 1, 3), ("u",), vectorized=False).run(
            {"a": np.array([2.0, 0.0, 2.0])}, SEEDS, IDS
        )
    copy = pickle.loads(pickle.dumps(info.value))
    assert copy.failures == info.value.failures and set(copy.failures) == {10, 12}
    np.testing.assert_array_equal(copy.partial, info.value.partial)
    np.testing.assert_array_equal(copy.ok, [False, True, False])
    assert str(copy) == str(info.value)


# -- failure isolation: executables --------------------------------------------------------------

FAKE = textwrap.dedent(
    """
    import json, sys, time
    import numpy as np
    spec = json.load(open(sys.argv[1]))
    mode, value, out = int(spec["parameters"]["mode"]), spec["parameters"]["value"], sys.argv[2]
    if mode == 1:
        print("step 99: residual 1e+30", file=sys.stderr)
        print("boom: solver diverged", file=sys.stderr)
        sys.exit(3)
    if mode == 2:
        time.sleep(30)
    if mode == 7:  # a long stderr naming this sample's own directory, then exit 4
        print("reading", sys.argv[1], file=sys.stderr)
        for i in range(12):
            print(f"log line {i}", file=sys.stderr)
        print("x" * 1000, file=sys.stderr)
        print("fatal: out of memory", file=sys.stderr)
        sys.exit(4)
    if mode == 3:
        np.save(out, np.zeros((2, 1, 5)))
    elif mode == 4:
        a = np.full((3, 1, 4), value)
        a[2, 0, 1] = np.nan
        np.save(out, a)
    elif mode == 6:
        open(out, "wb").write(b"not a npy file")
    elif mode != 5:
        np.save(out, np.full((3, 1, 4), value))
    """
)
FAILURES = {
    1: ["command `", "` failed with exit code 3", "boom: solver diverged", "residual 1e+30"],
    2: ["timed out after 1 s"],
    3: ["wrong output shape: expected (3, 1, 4), got (2, 1, 5)"],
    4: ["1 non-finite values", "frame 2"],
    5: ["wrote no output.npy"],
    6: ["cannot read output.npy"],
}


@pytest.fixture
def fake(tmp_path) -> Path:
    path = tmp_path / "fake_sim.py"
    path.write_text(FAKE)
    return path


def fake_sim(script: Path, **kw) -> ExecutableSimulator:
    cmd = [sys.executable, str(script), "{params}", "{output}"]
    return ExecutableSimulator(cmd, (3, 1, 4), ("u",), **kw)


@pytest.mark.parametrize("mode", sorted(FAILURES))
def test_executable_failure_is_isolated_to_its_sample(fake, mode):
    sim = fake_sim(fake, timeout_s=1.0, max_parallel=3)
    params = {"mode": np.array([0.0, mode, 0.0]), "value": np.array([1.0, 2.0, 3.0])}
    with pytest.raises(SimulationError) as info:
        sim.run(params, SEEDS, IDS)
    err = info.value
    assert list(err.failures) == [11]
    for text in FAILURES[mode]:
        assert text in err.failures[11], err.failures[11]
    np.testing.assert_array_equal(err.ok, [True, False, True])
    assert (err.partial[0] == 1.0).all() and (err.partial[2] == 3.0).all()
    assert np.isnan(err.partial[1]).all()


def test_executable_keeps_failed_directories_only_when_asked(fake, tmp_path, monkeypatch):
    params = {"mode": np.array([0.0, 1.0]), "value": np.array([1.0, 2.0])}
    monkeypatch.chdir(tmp_path)  # a relative workdir must work from the sample's own cwd
    for keep in (False, True):
        scratch = tmp_path / f"scratch-{keep}"
        scratch.mkdir()
        sim = fake_sim(fake, workdir=scratch.name, keep_failed=keep)
        with pytest.raises(SimulationError) as info:
            sim.run(params, SEEDS[:2], IDS[:2])
        left = list(scratch.iterdir())
        if not keep:
            assert left == []
            continue
        assert len(left) == 1 and str(left[0]) in info.value.failures[11]
        assert "boom" in (left[0] / "stderr.log").read_text()
        spec = (left[0] / "params.json").read_text()
        assert '"sample": 11' in spec and '"seed": 12' in spec and '"mode": 1.0' in spec


# -- failure messages: short and complete -------------------------------------------------------


def block_failure(fake: Path, modes: list[int], **kw) -> SimulationError:
    sim = fake_sim(fake, max_parallel=4, **kw)
    n = len(modes)
    params = {"mode": np.array(modes, dtype=float), "value": np.ones(n)}
    with pytest.raises(SimulationError) as info:
        sim.run(params, np.arange(n, dtype=np.uint64), np.arange(n))
    return info.value


def test_a_block_failing_alike_gives_one_short_message(fake, tmp_path):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    err = block_failure(fake, [7] * 16, keep_failed=True, workdir=str(scratch))
    lines = str(err).splitlines()
    assert len(lines) <= 12, str(err)
    assert lines[0] == "16 of 16 samples failed:"
    # One kind of failure, although every reason names its own sample's directory.
    command = f"`{shlex.join([sys.executable, str(fake)])} {{params}} {{output}}`"
    assert lines[1].startswith(f"  samples 0-15 (16 of 16): command {command} failed with exit")
    assert "exit code 4 (files kept in " in lines[1] and str(scratch) in lines[1]
    # The last 5 lines of stderr, each cut to ~200 characters.
    assert [line.strip()[:14] for line in lines[2:]] == [
        "| log line 9",
        "| log line 10",
        "| log line 11",
        "| xxxxxxxxxxxx",
        "| fatal: out o",
    ]
    assert max(len(line) for line in lines[2:]) <= 210
    # The full reasons stay on the error, per sample.
    assert len(err.failures) == 16 and not err.ok.any()
    for i, reason in err.failures.items():
        assert f"pdeflow-sample{i}-" in reason and "log line 0" in reason
        assert "x" * 1000 in reason and "fatal: out of memory" in reason
    assert str(pickle.loads(pickle.dumps(err))) == str(err)


def test_mixed_failures_are_grouped_and_the_rest_counted(fake):
    # 8 x exit 4, 3 x exit 3, 2 x wrong shape, 1 x no output, 1 x unreadable output, 1 success.
    modes = [7] * 8 + [1] * 3 + [3, 3, 5, 6, 0]
    err = block_failure(fake, modes)
    lines = str(err).splitlines()
    assert len(lines) <= 12, str(err)
    assert lines[0] == "15 of 16 samples failed:"
    heads = [line for line in lines if not line.startswith("    ")]
    assert heads[1].startswith("  samples 0-7 (8 of 16): command `") and "exit code 4" in heads[1]
    assert heads[2].startswith("  samples 8, 9, 10 (3 of 16): command `")
    assert heads[2].endswith("failed with exit code 3; last lines of stderr:")
    assert heads[3] == (
        "  samples 11, 12 (2 of 16): wrong output shape: expected (3, 1, 4), got (2, 1, 5)"
    )
    assert heads[4] == "  ... and 2 more kinds of failure in 2 samples (13, 14)"
    # The most common kind keeps 5 lines of stderr, the next the 2 its program wrote.
    assert [line[:16] for line in lines[2:7]] == [
        "    | log line 9",
        "    | log line 1",
        "    | log line 1",
        "    | xxxxxxxxxx",
        "    | fatal: out",
    ]
    assert lines[8:10] == ["    | step 99: residual 1e+30", "    | boom: solver diverged"]
    assert len(err.failures) == 15 and err.ok.tolist() == [False] * 15 + [True]


def test_failure_message_without_batch_size_or_detail():
    reasons = {i: f"RuntimeError: kind {i % 5}" for i in range(20)}
    message = str(SimulationError(reasons))
    assert message.splitlines() == [
        "20 samples failed:",
        "  samples 0, 5, 10, 15 (4): RuntimeError: kind 0",
        "  samples 1, 6, 11, 16 (4): RuntimeError: kind 1",
        "  samples 2, 7, 12, 17 (4): RuntimeError: kind 2",
        "  ... and 2 more kinds of failure in 8 samples (3, 4, 8, 9, 13, 14, 18, 19)",
    ]


# -- simulator processes do not outlive pdeflow -------------------------------------------------

SLEEPER = textwrap.dedent(
    """
    import os, subprocess, sys, time
    pid_file, mode = sys.argv[1], sys.argv[2]
    pids = [os.getpid()]
    if mode == "grandchild":
        # In this program's process group: only a kill of the whole group reaches it.
        pids.append(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]).pid)
    with open(pid_file + ".tmp", "w") as fh:
        fh.write(" ".join(map(str, pids)))
    os.replace(pid_file + ".tmp", pid_file)  # atomic: the test never reads half a file
    time.sleep(60)
    """
)
DRIVER = textwrap.dedent(
    """
    import os, sys, threading, time
    import numpy as np
    from pdeflow.tasks.simulators import ExecutableSimulator

    sleeper, pid_file, mode, end = sys.argv[1:5]
    cmd = [sys.executable, sleeper, pid_file, mode, "{params}", "{output}"]
    sim = ExecutableSimulator(cmd, (1, 1, 1), ("u",), timeout_s=120.0)
    ids = np.zeros(1, dtype=np.int64)
    if end == "killed":
        sim.run({}, ids.astype(np.uint64), ids)  # the test SIGKILLs this process meanwhile
    # A daemon thread, as Dask runs tasks: the interpreter's exit does not wait for it.
    threading.Thread(target=sim.run, args=({}, ids.astype(np.uint64), ids), daemon=True).start()
    while not os.path.exists(pid_file):
        time.sleep(0.05)
    if end == "raise":
        raise RuntimeError("the driver failed")
    sys.exit(0)
    """
)


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs; a zombie (dead, not yet reaped by its new parent) does not."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _survivors(pids: list[int], within_s: float) -> list[int]:
    deadline = time.monotonic() + within_s
    while (alive := [p for p in pids if _alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    return alive


def _start_driver(tmp_path: Path, mode: str, end: str) -> tuple[subprocess.Popen, list[int]]:
    """The driver process and the pids its simulator wrote (simulator first, then grandchild)."""
    sleeper, pid_file = tmp_path / "sleeper.py", tmp_path / "pids"
    sleeper.write_text(SLEEPER)
    args = [sys.executable, "-c", DRIVER, str(sleeper), str(pid_file), mode, end]
    driver = subprocess.Popen(args, cwd=tmp_path, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60.0  # generous: a loaded machine imports numpy slowly
    while not pid_file.exists():
        if driver.poll() is not None:
            pytest.fail(f"driver exited early:\n{driver.stderr.read().decode()}")
        if time.monotonic() > deadline:
            driver.kill()
            pytest.fail("the simulator never wrote its pid file")
        time.sleep(0.05)
    return driver, [int(p) for p in pid_file.read_text().split()]


def _end(driver: subprocess.Popen, pids: list[int]) -> None:
    """Leave nothing behind, whatever the test found."""
    driver.kill()
    driver.wait()
    driver.stderr.close()
    for pid in pids:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_executable_simulator_dies_when_pdeflow_is_sigkilled(tmp_path):
    driver, pids = _start_driver(tmp_path, "alone", "killed")
    try:
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=30)
        # The parent-death signal: no code of the driver runs after SIGKILL.
        assert _survivors(pids, within_s=5.0) == []
    finally:
        _end(driver, pids)


@pytest.mark.parametrize("end", ["raise", "exit"])
def test_driver_exit_kills_the_simulators_whole_process_group(tmp_path, end):
    driver, pids = _start_driver(tmp_path, "grandchild", end)
    try:
        assert driver.wait(timeout=30) == (1 if end == "raise" else 0)
        # The grandchild has no parent-death signal: only the exit hook's group kill ends it.
        assert _survivors(pids, within_s=5.0) == []
    finally:
        _end(driver, pids)


# -- settings ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"output_shape": (3, 1)}, "output_shape"),
        ({"output_shape": (3, 0, 4)}, "output_shape"),
        ({"output_shape": (3, 1, 4.5)}, "output_shape"),
        ({"fields": ("u", "v")}, "fields has 2 names"),
        ({"fields": "u"}, "fields"),
        ({"dtype": "int8"}, "dtype"),
        ({"target": "pdeflow.tasks.simulators.examples.heat_rod"}, "package.module:function"),
        ({"target": "pdeflow.tasks.simulators.no_such_module:f"}, "cannot import module"),
        ({"target": "pdeflow.tasks.simulators.examples.heat_rod:nope"}, "has no attribute 'nope'"),
        ({"target": "pdeflow.tasks.simulators.examples.heat_rod:N_MODES"}, "not a callable"),
        ({"target": 3}, "target"),
        ({"vectorized": "yes"}, "vectorized"),
        ({"options": [1, 2]}, "options"),
    ],
)
def test_python_simulator_rejects_bad_settings(kwargs, match):
    settings = {"target": HEAT, "output_shape": (3, 1, 4), "fields": ("u",), **kwargs}
    with pytest.raises(ValueError, match=match):
        PythonSimulator(**settings)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"command": []}, "non-empty list"),
        ({"command": "python sim.py"}, "non-empty list"),
        ({"command": ["no-such-program-pdeflow", "{params}"]}, r"command\[0\]"),
        ({"command": [sys.executable, "{param}"]}, "unknown placeholder"),
        ({"command": [sys.executable, 3]}, "only strings"),
        ({"timeout_s": 0}, "timeout_s"),
        ({"timeout_s": float("inf")}, "timeout_s"),
        ({"timeout_s": "10"}, "timeout_s"),
        ({"max_parallel": 0}, "max_parallel"),
        ({"max_parallel": 2.0}, "max_parallel"),
        ({"workdir": "/no/such/dir/pdeflow"}, "workdir"),
        ({"keep_failed": 1}, "keep_failed"),
        ({"output_shape": (3, 1, 4, 4, 4, 4)}, "output_shape"),
    ],
)
def test_executable_simulator_rejects_bad_settings(kwargs, match):
    settings = {
        "command": [sys.executable, "-m", RD_MODULE, "{params}", "{output}"],
        "output_shape": (3, 1, 4),
        "fields": ("u",),
        **kwargs,
    }
    with pytest.raises(ValueError, match=match):
        ExecutableSimulator(**settings)


def test_bad_batch_inputs_are_rejected_before_anything_runs():
    calls = []
    sim = PythonSimulator(lambda p, s: calls.append(1), (2, 1, 3), ("u",))
    bad = [
        ({"a": np.zeros(2)}, SEEDS, IDS, r"params\['a'\]"),
        ({}, np.array([1.5, 2.0, 3.0]), IDS, "seeds"),
        ({}, np.array([-1, 2, 3]), IDS, "seeds"),
        ({}, SEEDS, IDS[:2], "sample_ids"),
    ]
    for params, seeds, ids, match in bad:
        with pytest.raises(ValueError, match=match):
            sim.run(params, seeds, ids)
    assert calls == []


def test_registry_and_pickling_for_dask_transport():
    assert get_simulator("python") is PythonSimulator
    assert get_simulator("executable") is ExecutableSimulator
    with pytest.raises(ValueError, match="valid: python, executable"):
        get_simulator("fortran")
    sim = pickle.loads(pickle.dumps(heat_sim(n_x=16, n_frames=3)))
    assert sim.run(HEAT_PARAMS, SEEDS, IDS).shape == (3, 3, 1, 16)
    exe = pickle.loads(pickle.dumps(rd_sim()))
    assert exe.command[2] == RD_MODULE and exe.timeout_s == 600.0
