"""A Prefect server started as the README says refuses anonymous API calls and is local only."""

from __future__ import annotations

import socket

import psutil
import pytest

from tests.e2e.prefect_server import prefect_server, request

AUTH = ("admin", "secret")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    # No UI and no background services: the test is about the API's front door, and both add
    # seconds to the start.
    with prefect_server(
        tmp_path_factory.mktemp("auth-server"),
        "--no-ui",
        "--no-services",
        PREFECT_SERVER_API_AUTH_STRING=":".join(AUTH),
    ) as url:
        yield url


@pytest.mark.parametrize(
    ("method", "path"), [("GET", "/api/admin/version"), ("POST", "/api/flows/filter")], ids=str
)
def test_api_needs_basic_auth(server, method, path):
    assert request(server + path, method) == 401
    assert request(server + path, method, auth=("admin", "wrong")) == 401
    assert request(server + path, method, auth=AUTH) == 200


def test_server_listens_on_loopback_only(server):
    port = int(server.rsplit(":", 1)[1])
    listening = {
        conn.laddr.ip
        for conn in psutil.net_connections(kind="inet")
        if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port
    }
    assert listening == {"127.0.0.1"}
    # The machine's other addresses must not reach it.
    others = [
        addr.address
        for addrs in psutil.net_if_addrs().values()
        for addr in addrs
        if addr.family == socket.AF_INET and not addr.address.startswith("127.")
    ]
    for address in others:
        with pytest.raises(OSError), socket.create_connection((address, port), timeout=2):
            pass


@pytest.mark.parametrize("auth", [None, "admin:wrong"], ids=["no-auth", "wrong-auth"])
def test_serve_names_the_missing_credentials(server, auth):
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    from pdeflow.flows.serve import ServeError, check_server

    settings = {PREFECT_API_URL: f"{server}/api", PREFECT_API_AUTH_STRING: auth}
    with (
        temporary_settings(settings),
        pytest.raises(ServeError, match="PREFECT_API_AUTH_STRING"),
    ):
        check_server()
    with temporary_settings({**settings, PREFECT_API_AUTH_STRING: ":".join(AUTH)}):
        assert check_server() == f"{server}/api"
