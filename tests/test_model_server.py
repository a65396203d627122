"""``pdeflow serve-model``: a store's solver, surrogate and ROM over UM-Bridge, against the same
models called in process, the gradient against finite differences, and the refusals."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time

import numpy as np
import pytest

from tests.cli_helpers import PDEFLOW, cli
from tests.conftest import TINY

# Smaller than tiny.yaml: seconds for all three stages, so the file stays fast.
SMALL = [
    "store=serve-model",
    "generate.n_samples=32",
    "generate.n_x=32",
    "generate.n_frames=6",
    "generate.t_end=0.5",
    "train.epochs=1",
    "reduce.max_rank=8",
]


@pytest.fixture(scope="module")
def finished(runs_dir):
    """A store with generate, train and reduce complete, called directly on in-process Dask."""
    from distributed import Client

    from pdeflow.storage import RunStore
    from pdeflow.tasks.config import load_config
    from tests.stage_helpers import generate, reduce, train

    cfg = load_config(TINY, SMALL)
    with Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=":0") as c:
        generate(cfg, c)
        train(cfg)
        reduce(cfg, c)
    return cfg, RunStore.named(cfg.store)


@pytest.fixture(scope="module")
def served(finished):
    """The three models and the surrogate's QoI on one server at a free port of 127.0.0.1."""
    from pdeflow.tasks.model_server import InputError, build_model
    from pdeflow.tasks.umbridge_server import ModelServer

    _, store = finished
    models = [build_model(store, kind) for kind in ("solver", "surrogate", "rom")]
    energy = build_model(store, "surrogate", qoi="final_energy")
    energy.name = "surrogate_energy"
    with ModelServer([*models, energy], "127.0.0.1", 0, input_errors=(InputError,)) as server:
        yield server.url


def _client(url: str, name: str):
    import umbridge

    return umbridge.HTTPModel(url, name)


def _stored(finished, index: int):
    cfg, store = finished
    params = store.read_coords(cfg.generate.parameter_names)[index]
    return params, store.read_samples(np.array([index]))[0]


def test_the_surrogate_answers_as_its_rollout_from_the_stored_first_frame(finished, served):
    """The report's path (``load_surrogate``, ``rollout`` from the stored frame and the stored
    unit-cube parameters), in process, against the served field at a test sample."""
    import torch

    from pdeflow.tasks.stages.models import load_surrogate, unit_parameters
    from pdeflow.tasks.surrogates.training import rollout

    cfg, store = finished
    k = int(store.sample_indices("test")[0])
    params, truth = _stored(finished, k)
    model = load_surrogate(cfg, store)
    u0 = torch.as_tensor(truth[None, 0], dtype=torch.float32)
    p = torch.as_tensor(unit_parameters(store, cfg, [k]), dtype=torch.float32)
    expected = rollout(model, u0, p, truth.shape[0] - 1).numpy()[0]
    client = _client(served, "surrogate")
    assert client.get_input_sizes() == [4] and client.get_output_sizes() == [truth.size]
    got = np.asarray(client([params.tolist()])[0]).reshape(truth.shape)
    # The served initial state is drawn from the parameters (modes amplitudes): bit for bit the
    # stored first frame. Then the same float32 network steps, one sample at a time instead
    # of a batch: equal to float32 round-off.
    np.testing.assert_array_equal(got[0], truth[0])
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6 * np.abs(expected).max())
    (energy,) = _client(served, "surrogate_energy")([params.tolist()])[0]
    assert energy == pytest.approx(0.5 * np.mean(expected[-1].astype(np.float64) ** 2), rel=1e-6)


def test_the_solver_and_the_rom_answer_as_when_called_directly(finished, served):
    from pdeflow.tasks.solve import solve_parameters
    from pdeflow.tasks.stages.models import load_rom, unit_parameters

    cfg, store = finished
    k = int(store.sample_indices("test")[1])
    params, truth = _stored(finished, k)
    seeds = store.read_coords(["seed"])[k : k + 1, 0]
    direct = solve_parameters(cfg.generate, params[None], seeds)[0]
    solver = np.asarray(_client(served, "solver")([params.tolist()])[0]).reshape(truth.shape)
    np.testing.assert_array_equal(solver, direct)
    # The generate stage solved this sample in a block of 16; per-sample arithmetic is the same.
    np.testing.assert_allclose(solver, truth, rtol=1e-5, atol=1e-6 * np.abs(truth).max())
    rom = load_rom(cfg, store)
    flat = rom.predict(unit_parameters(store, cfg, [k]), truth[None, 0].reshape(1, -1))
    served_rom = np.asarray(_client(served, "rom")([params.tolist()])[0])
    np.testing.assert_allclose(served_rom, flat.reshape(-1), rtol=1e-6, atol=1e-9)
    for name in ("solver", "rom"):
        client = _client(served, name)
        assert client.supports_evaluate() and not client.supports_gradient()
        assert not client.supports_apply_jacobian()


def _interior(cfg) -> np.ndarray:
    """A point well inside the design (every step of the differences stays in range)."""
    specs, where = cfg.generate.parameter_specs, (0.3, 0.7, 0.4, 0.55)
    return np.array([s.low + f * (s.high - s.low) for s, f in zip(specs, where, strict=True)])


def test_the_surrogate_gradient_and_jacobian_match_central_differences(finished, served):
    """Central differences of the served values, step 1e-2 of each parameter's range.

    The network runs in float32: a served value carries about 1e-7 relative rounding, which a
    difference over 2e-2 of the range turns into about 1e-5 of a typical derivative; the
    truncation error (step squared) is about 1e-4. Measured: every component within 4e-4 of
    the differences. A tolerance of 1e-2 per component leaves a margin of 25 and fails a
    missing or wrong factor of the chain rule: the log-uniform nu enters through its CDF,
    d unit / d nu = 1 / (nu ln 5) (a uniform CDF in its place is 11 % off), and the mode
    amplitudes through the initial state (without it the gradient is 100 % off).
    """
    cfg, _ = finished
    x = _interior(cfg)
    steps = 1e-2 * np.array([s.high - s.low for s in cfg.generate.parameter_specs])
    energy, field = _client(served, "surrogate_energy"), _client(served, "surrogate")
    assert energy.supports_gradient() and field.supports_apply_jacobian()
    jac = _central_differences(field, x, steps)  # (n_out, n_params)
    sens = np.random.default_rng(0).standard_normal(jac.shape[0])
    grad = np.asarray(field.gradient(0, 0, [x.tolist()], sens.tolist()))
    np.testing.assert_allclose(grad, sens @ jac, rtol=1e-2)
    for j, column in enumerate(jac.T):  # J e_j, one column at a time
        vec = np.eye(len(x))[j]
        jv = np.asarray(field.apply_jacobian(0, 0, [x.tolist()], vec.tolist()))
        assert np.linalg.norm(jv - column) <= 1e-2 * np.linalg.norm(column), j
    # Reverse and forward mode agree to float32 round-off: sens . (J vec) = (J^T sens) . vec.
    vec = np.array([0.5, -1.0, 0.25, 2.0])
    jv = np.asarray(field.apply_jacobian(0, 0, [x.tolist()], vec.tolist()))
    assert sens @ jv == pytest.approx(grad @ vec, rel=1e-4)
    q_fd = _central_differences(energy, x, steps)[0]
    q_grad = np.asarray(energy.gradient(0, 0, [x.tolist()], [1.0]))
    np.testing.assert_allclose(q_grad, q_fd, rtol=1e-2)
    (q_jv,) = energy.apply_jacobian(0, 0, [x.tolist()], vec.tolist())
    assert q_jv == pytest.approx(q_grad @ vec, rel=1e-4)


def _central_differences(model, x: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """d output / d x of a served model, (n_out, n_params), by central differences."""
    columns = []
    for j, h in enumerate(steps):
        e = np.zeros_like(x)
        e[j] = h
        up, down = (np.asarray(model([p.tolist()])[0]) for p in (x + e, x - e))
        columns.append((up - down) / (2 * h))
    return np.stack(columns, axis=1)


@pytest.mark.parametrize(
    ("point", "message"),
    [
        ([0.2, 0.1, 0.0], "expected 4 parameters (nu, a1, a2, a3), got 3"),
        ([0.9, 0.1, 0.0, 0.0], "parameter nu = 0.9 is outside the design's range [0.1, 0.5]"),
    ],
    ids=["length", "range"],
)
def test_a_bad_input_is_refused_with_the_parameter_and_its_range(served, point, message):
    for name in ("solver", "surrogate", "rom"):
        client = _client(served, name)
        with pytest.raises(Exception, match="InvalidInput") as err:
            client([point])
        assert message in str(err.value)
    with pytest.raises(Exception, match="outside the design's range"):
        _client(served, "surrogate").gradient(0, 0, [[0.2, 0.1, 0.0, 0.7]], [1.0] * 192)


def test_not_a_number_is_refused(finished):
    # HTTP clients refuse to send NaN (it is not JSON), so the check is called in process.
    from pdeflow.tasks.model_server import InputError, build_model

    with pytest.raises(InputError, match="parameter a2 = nan is outside the design's range"):
        build_model(finished[1], "solver").check([[0.2, 0.1, float("nan"), 0.0]])


def test_a_store_without_the_stage_is_refused(tmp_path):
    from pdeflow.storage import RunStore, StageNotReady
    from pdeflow.tasks.model_server import build_model

    with pytest.raises(StageNotReady, match="no complete train stage"):
        build_model(RunStore(tmp_path), "surrogate")
    with pytest.raises(ValueError, match="unknown QoI 'energy'; valid: \\['final_energy'\\]"):
        build_model(RunStore(tmp_path), "rom", qoi="energy")


def test_the_cli_refuses_a_bad_store_and_stops_on_ctrl_c(finished):
    proc = cli("serve-model", "no-such-store", "--model", "rom", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "no pdeflow store" in proc.stderr
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = ["serve-model", str(finished[1].path), "--model", "solver", "--port", str(port)]
    server = subprocess.Popen(
        [*PDEFLOW, *args], stderr=subprocess.PIPE, text=True, env=os.environ | {"COLUMNS": "400"}
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                client = _client(url, "solver")
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, server.stderr.read()
                time.sleep(0.1)
        assert client.get_output_sizes() == [6 * 32]
    finally:
        server.send_signal(signal.SIGINT)
        _, err = server.communicate(timeout=30)
    assert server.returncode == 0 and "Traceback" not in err, err
    assert f"at {url}" in err and "initial state: the modes initial state" in err
    assert err.rstrip().endswith("stopped")
