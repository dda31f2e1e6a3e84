"""agent.client against a real local API server (with a stub agent behind it) and against dead ports."""

from __future__ import annotations

import socket
import threading

import pytest

from agent import client as client_mod
from agent.api import LocalApi
from agent.client import AgentClient
from agent.errors import AgentUnavailable, LocalApiError
from tests.agent.test_api import TOKEN, StubControl, StubStatus


@pytest.fixture
def control():
    return StubControl()


@pytest.fixture
def api(control):
    server = LocalApi(control, api_token=TOKEN, port=0, poll_interval=0.02).start()
    yield server
    server.stop()


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_license_health_and_sync(api, control):
    c = AgentClient(api.port)
    try:
        assert c.license()["license_state"] == "trial_active"
        assert c.health()["ok"] is True
        assert c.is_licensed() is True
        assert c.sync(TOKEN)["license_state"] == "licensed_active"
        control.set_status(StubStatus("trial_expired", False))
        assert c.license()["licensed"] is False and c.is_licensed() is False
    finally:
        c.close()
    assert client_mod.license(api.port)["license_state"] == "trial_expired"
    assert client_mod.health(api.port)["ok"] is True
    assert client_mod.sync(TOKEN, api.port)["license_state"] == "licensed_active"


def test_sync_without_the_token_is_refused_with_the_api_code(api, control):
    with pytest.raises(LocalApiError) as info:
        AgentClient(api.port).sync()
    assert (info.value.status, info.value.code) == (401, "unauthorized")
    assert control.calls == []


def test_no_agent_raises_agent_unavailable_and_is_not_licensed():
    c = AgentClient(_dead_port(), timeout=1)
    with pytest.raises(AgentUnavailable):
        c.license()
    assert c.is_licensed() is False


def test_an_agent_that_never_answers_times_out():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        c = AgentClient(listener.getsockname()[1], timeout=0.2)
        with pytest.raises(AgentUnavailable, match="did not answer in time"):
            c.license()


def test_reconnects_after_the_agent_restarted(control):
    first = LocalApi(control, api_token=TOKEN, port=0, poll_interval=0.02).start()
    port = first.port
    c = AgentClient(port)
    assert c.license()["licensed"] is True
    first.stop()
    second = LocalApi(control, api_token=TOKEN, port=port, poll_interval=0.02).start()
    try:
        # The old keep-alive socket is dead; the client notices and reconnects once.
        assert c.license()["licensed"] is True
        assert c.sync(TOKEN)["license_state"] == "licensed_active"
    finally:
        c.close()
        second.stop()


def test_each_thread_has_its_own_connection(api):
    c = AgentClient(api.port)
    results = []

    def poll():
        results.extend(c.license()["licensed"] for _ in range(10))
        c.close()

    threads = [threading.Thread(target=poll) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert results == [True] * 40


def test_port_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("POSPAL_AGENT_PORT", "7999")
    assert AgentClient().port == 7999
    monkeypatch.setenv("POSPAL_AGENT_PORT", "junk")
    assert AgentClient().port == 7421
