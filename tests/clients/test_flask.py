"""pospal_client.flask in a real Flask app (examples/flask_pos) against a real agent and real impostors.

The guarded routes (`POST /checkout`, `POST /pay`) run for the genuine agent and answer 402 for a fake
agent on the port, a replayed genuine answer and an edited one; the menu works in every case and its
banner says why. When the agent goes away after a proven answer the till keeps selling on that proof;
a port answering "starting" for ever sells only for the first minute.
"""

from __future__ import annotations

import importlib.util
import json
import secrets
import socket

import pytest
from pospal_client.client import AgentClient

from pospal_protocol.clock import FakeClock, SystemClock
from pospal_protocol.trust import b64url_encode
from tests.clients.scripted import ScriptedServer, http_answer, read_request
from tests.clients.test_edges import _switchable
from tests.server.conftest import REPO


def _example():
    spec = importlib.util.spec_from_file_location("flask_pos_app", REPO / "examples" / "flask_pos" / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


EXAMPLE = _example()


def pos_app(port: int, world, **kw):
    client = AgentClient(port, trusted_keys=world.jwks, trust_file=None, **kw)
    return EXAMPLE.create_app(client=client).test_client()


def genuine_answer(world) -> dict:
    challenge = b64url_encode(secrets.token_bytes(32))
    return AgentClient(world.agent.port, trust_file=None).request("GET", f"/v1/license?challenge={challenge}")


def test_the_genuine_agent_lets_the_till_take_orders(client_world):
    pos = pos_app(client_world.agent.port, client_world)
    assert pos.post("/checkout", json={"items": ["espresso", "toast"]}).get_json() == {
        "ok": True,
        "total_cents": 650,
    }
    assert pos.post("/pay").status_code == 200
    menu = pos.get("/")
    assert menu.status_code == 200 and b"espresso" in menu.data and b"banner" not in menu.data


@pytest.mark.parametrize("attack", ["fake agent", "replayed answer", "edited answer"])
def test_a_guarded_route_refuses_what_the_agent_did_not_prove(client_world, impostor, tmp_path, attack):
    if attack == "fake agent":
        answer = {"license_state": "licensed_active", "licensed": True, "message": "Licensed."}
    else:
        answer = genuine_answer(client_world)
        if attack == "edited answer":
            answer["days_left"] = 3650
    canned = tmp_path / "answer.json"
    canned.write_text(json.dumps(answer))
    pos = pos_app(impostor("answer", str(canned)), client_world)
    refused = pos.post("/checkout", json={"items": ["espresso"]})
    assert refused.status_code == 402
    assert refused.get_json()["error"] == "not_licensed"
    assert pos.post("/pay").status_code == 402
    menu = pos.get("/")
    assert menu.status_code == 200 and b"espresso" in menu.data and b"banner-stop" in menu.data


def test_the_agent_going_away_after_a_proof_does_not_stop_the_till(client_world):
    mode = {"live": True, "port": 0}
    relay = ScriptedServer(_switchable(client_world.agent.port, mode))
    mode["port"] = relay.port
    try:
        clock = FakeClock(SystemClock().now())
        pos = pos_app(relay.port, client_world, clock=clock)
        assert pos.post("/pay").status_code == 200
        mode["live"] = False  # the agent restarts: "starting" for an hour
        clock.advance(3600)
        pos.application.extensions["pospal_license"].client.forget_verified()
        assert pos.post("/pay").status_code == 200
        assert b"banner-warn" in pos.get("/").data
    finally:
        relay.stop()


def test_a_port_answering_starting_for_ever_sells_only_the_first_minute(client_world):
    def starting(_index: int, sock: socket.socket) -> None:
        while read_request(sock):
            sock.sendall(http_answer(503, b'{"error": "starting", "message": "The agent is starting."}'))

    server = ScriptedServer(starting)
    try:
        clock = FakeClock()
        pos = pos_app(server.port, client_world, clock=clock)
        assert pos.post("/pay").status_code == 200
        clock.advance(61)
        refused = pos.post("/pay")
        assert refused.status_code == 402 and "starting" in refused.get_json()["message"]
        assert pos.get("/").status_code == 200
    finally:
        server.stop()
