"""The temporary Prefect server ``pdeflow run`` starts before its own imports
(``flows.temporary_server``): it answers on loopback, yields to a configured server, says why
it did not start, and is gone after ``stop``."""

from __future__ import annotations

import os
import signal

import psutil
import pytest

from pdeflow.flows.temporary_server import ServerStartError, TemporaryServer


@pytest.fixture
def no_api(monkeypatch, tmp_path):
    """No configured server: a fresh Prefect home, no PREFECT_API_URL."""
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect"))
    monkeypatch.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def test_the_server_answers_on_loopback_and_is_gone_after_stop(no_api):
    server = TemporaryServer.launch()
    try:
        url = server.settle()
        assert url == f"http://127.0.0.1:{server.port}/api"
        assert os.environ["PREFECT_API_URL"] == url  # the flow's client finds it
        server.wait_ready()
        listening = {
            c.laddr.ip
            for c in psutil.Process(server.proc.pid).net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN
        }
        assert listening == {"127.0.0.1"}
    finally:
        server.stop()
    assert server.proc.poll() is not None
    assert "PREFECT_API_URL" not in os.environ


def test_a_configured_server_is_used_and_nothing_is_started(no_api, monkeypatch):
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    assert TemporaryServer.launch() is None
    # A profile or setting that turns the temporary server off: the bootstrap exits at once.
    monkeypatch.delenv("PREFECT_API_URL")
    monkeypatch.setenv("PREFECT_SERVER_EPHEMERAL_ENABLED", "false")
    server = TemporaryServer.launch()
    assert server.settle() is None
    assert server.proc.poll() is not None  # ended, not left running
    assert "PREFECT_API_URL" not in os.environ
    server.wait_ready()  # nothing to wait for


def test_a_server_that_dies_is_reported_with_its_status(no_api):
    server = TemporaryServer.launch()
    try:
        assert server.settle() is not None
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait()
        with pytest.raises(ServerStartError, match=r"exited with status -9 before answering"):
            server.wait_ready(timeout=30)
    finally:
        server.stop()


def test_runs_on_the_temporary_server_send_no_heartbeats_and_skip_the_version_check():
    from prefect.settings import (
        PREFECT_CLIENT_SERVER_VERSION_CHECK_ENABLED,
        PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
        get_current_settings,
        temporary_settings,
    )

    from pdeflow.flows.temporary_server import temporary_server_settings

    served = {
        PREFECT_FLOWS_HEARTBEAT_FREQUENCY: 30,
        PREFECT_CLIENT_SERVER_VERSION_CHECK_ENABLED: True,
    }
    with temporary_settings(updates=served):
        with temporary_server_settings():
            inside = get_current_settings()
            assert inside.flows.heartbeat_frequency is None
            assert inside.client.server_version_check_enabled is False
        after = get_current_settings()  # the settings of anything else are left alone
        assert after.flows.heartbeat_frequency == 30
        assert after.client.server_version_check_enabled is True
