"""Issue 28's client cases, each test named after its attack (real agent, real impostor processes, and
scripted loopback servers for the slow and huge answers).

1. An answer relayed from a PC of another OS (no component names in common) was believed: nothing was
   compared, and "unknown is never different" turned into a yes. The POS now requires a decided match
   (`pospal_protocol.fingerprint.proves_same_machine`).
2. A 1-byte-per-second answer held `verified_license(timeout=2)` for 25 s and more, `wait_ready` too, and a
   second POS thread behind it; a 300 MiB answer took the POS to 630 MiB. Every call now has one total
   deadline, answers are capped at 256 KiB, and no lock is held across the network.
3. A process answering `503 starting` for ever kept README's loop selling. Past `starting_limit_s` only the
   last proven answer, until its token's next change, may sell.
"""

from __future__ import annotations

import json
import socket
import threading
import tracemalloc
from datetime import timedelta

import pytest
from pospal_client.client import AgentClient

from agent.errors import AgentStarting, AgentUnavailable, BadProof, OtherMachine
from pospal_protocol.clock import FakeClock, SystemClock
from pospal_protocol.fingerprint import current, hash_component
from tests.clients.scripted import ScriptedServer, http_answer, read_request

WINDOWS_PC = {
    name: hash_component(name, f"WINDOWS-{name}".upper())
    for name in ("machine_guid", "smbios_uuid", "baseboard_serial", "bios_serial")
}
NOT_LICENSED = json.dumps({"license_state": "license_missing", "licensed": False}).encode()


@pytest.fixture
def scripted():
    servers: list[ScriptedServer] = []

    def start(script) -> int:
        server = ScriptedServer(script)
        servers.append(server)
        return server.port

    yield start
    for server in servers:
        server.stop()


# -- case 1 ---------------------------------------------------------------------------------------------


def test_an_answer_relayed_to_a_pos_on_another_os_is_not_a_sale(client_world, impostor):
    relay = impostor("proxy", str(client_world.agent.port))
    pos = AgentClient(
        relay, trusted_keys=client_world.jwks, trust_file=None, fingerprinter=lambda: WINDOWS_PC
    )
    with pytest.raises(OtherMachine):
        pos.verified_license()
    assert pos.can_sell() is False


def test_an_answer_relayed_to_a_pc_sharing_one_component_name_is_not_a_sale(client_world, impostor):
    relay = impostor("proxy", str(client_world.agent.port))
    mine = current().hashes()
    one = {**WINDOWS_PC, **{k: v for k, v in list(mine.items())[:1]}}  # a MAC in common, say
    pos = AgentClient(relay, trusted_keys=client_world.jwks, trust_file=None, fingerprinter=lambda: one)
    with pytest.raises(OtherMachine):
        pos.verified_license()


def test_the_same_relay_to_this_pc_is_still_the_genuine_agent(client_world, impostor):
    relay = impostor("proxy", str(client_world.agent.port))
    pos = AgentClient(relay, trusted_keys=client_world.jwks, trust_file=None)
    assert pos.verified_license()["licensed"] is True


# -- case 2 ---------------------------------------------------------------------------------------------


def _drip(sent: list[int], stop: threading.Event, seconds: int = 30, asked: threading.Event | None = None):
    """A script that answers one byte per second (at most `seconds` bytes), counting what it sent."""
    answer = http_answer(200, NOT_LICENSED)

    def script(_index: int, sock: socket.socket) -> None:
        read_request(sock)
        if asked is not None:
            asked.set()
        for byte in answer[:seconds]:
            sock.sendall(bytes([byte]))
            sent.append(1)
            if stop.wait(1.0):
                return

    return script


def test_a_one_byte_per_second_answer_ends_at_the_call_deadline(scripted):
    sent: list[int] = []
    stop = threading.Event()
    port = scripted(_drip(sent, stop))
    try:
        with pytest.raises(AgentUnavailable, match="in time"):
            AgentClient(port, timeout=1.0, trust_file=None).verified_license()
        # It gave up while the drip was still on its first bytes, not at the end of the answer.
        assert len(sent) <= 3
    finally:
        stop.set()


def test_wait_ready_against_a_dripping_port_ends_at_its_timeout(scripted):
    sent: list[int] = []
    stop = threading.Event()
    port = scripted(_drip(sent, stop))
    try:
        with pytest.raises(AgentUnavailable):
            AgentClient(port, timeout=2.0, trust_file=None).wait_ready(timeout=1.5)
        assert len(sent) <= 4
    finally:
        stop.set()


def test_a_stuck_call_does_not_hold_up_another_pos_thread(scripted):
    stop = threading.Event()
    asked = threading.Event()
    drip = _drip([], stop, asked=asked)

    def script(index: int, sock: socket.socket) -> None:
        if index == 0:
            drip(index, sock)
        else:
            read_request(sock)
            sock.sendall(http_answer(200, NOT_LICENSED))

    port = scripted(script)
    pos = AgentClient(port, timeout=20.0, trust_file=None)

    def stuck() -> None:
        with pytest.raises(AgentUnavailable):
            pos.verified_license()

    first = threading.Thread(target=stuck)
    first.start()
    try:
        assert asked.wait(10)  # the first thread's request is in, and its answer drips
        assert pos.verified_license()["licensed"] is False  # the second thread got its answer...
        assert first.is_alive()  # ...while the first was still stuck on the drip
    finally:
        stop.set()
        first.join(30)


@pytest.mark.parametrize("announced", [True, False], ids=["content-length", "until-close"])
def test_a_300_mib_answer_is_refused_without_reading_it(scripted, announced):
    size = 300 * 1024 * 1024
    sent: list[int] = []

    def script(_index: int, sock: socket.socket) -> None:
        read_request(sock)
        head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        head += f"Content-Length: {size}\r\n\r\n" if announced else "Connection: close\r\n\r\n"
        sock.sendall(head.encode() + b'{"licensed": true, "pad": "')
        chunk = b"x" * 65536
        for _ in range(size // len(chunk)):
            sock.sendall(chunk)
            sent.append(len(chunk))

    port = scripted(script)
    tracemalloc.start()
    try:
        with pytest.raises(BadProof, match="larger"):
            AgentClient(port, timeout=10.0, trust_file=None).verified_license()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * 1024 * 1024
    assert sum(sent) < size


# -- case 3 ---------------------------------------------------------------------------------------------


def _starting(_index: int, sock: socket.socket) -> None:
    body = json.dumps({"error": "starting", "message": "The agent is starting.", "retry_after": 1}).encode()
    while read_request(sock):
        sock.sendall(http_answer(503, body))


def test_a_port_answering_starting_for_ever_stops_selling_past_the_limit(scripted):
    clock = FakeClock()
    pos = AgentClient(scripted(_starting), trust_file=None, clock=clock, starting_limit_s=60)
    assert pos.can_sell() is True  # the agent at Windows login: do not stop the till
    clock.advance(59)
    assert pos.can_sell() is True
    clock.advance(2)
    assert pos.can_sell() is False
    with pytest.raises(AgentStarting):
        pos.verified_license()


def _switchable(target_port: int, mode: dict):
    """Relay to the genuine agent while mode["live"], else answer 503 starting (the agent is gone)."""

    def script(_index: int, sock: socket.socket) -> None:
        while request := read_request(sock):
            if not mode["live"]:
                _starting_once(sock)
                continue
            # A fresh upstream connection per request: the agent's answer ends when it closes.
            request = request.replace(
                b"Host: 127.0.0.1:%d" % mode["port"], b"Host: 127.0.0.1:%d" % target_port
            )
            request = request.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1)
            with socket.create_connection(("127.0.0.1", target_port), timeout=5) as upstream:
                upstream.sendall(request)
                answer = b""
                while chunk := upstream.recv(65536):
                    answer += chunk
            sock.sendall(answer.replace(b"Connection: close\r\n", b""))

    return script


def _starting_once(sock: socket.socket) -> None:
    body = json.dumps({"error": "starting", "message": "The agent is starting."}).encode()
    sock.sendall(http_answer(503, body))


def test_starting_after_a_proven_answer_sells_only_until_that_answer_ends(client_world, scripted):
    mode = {"live": True, "port": 0}
    port = scripted(_switchable(client_world.agent.port, mode))
    mode["port"] = port
    clock = FakeClock(SystemClock().now())
    pos = AgentClient(port, trusted_keys=client_world.jwks, trust_file=None, clock=clock, starting_limit_s=60)
    assert pos.can_sell() is True  # proven by the genuine agent
    mode["live"] = False
    pos.forget_verified()
    clock.advance(3600)  # an hour of "starting": far past the limit, still within the proven token
    assert pos.can_sell() is True
    clock.advance(timedelta(days=15).total_seconds())  # past the token's lease: nothing proven holds
    assert pos.can_sell() is False


def test_a_removed_till_gets_no_sale_from_starting(scripted):
    clock = FakeClock()
    answers = iter([http_answer(200, NOT_LICENSED)])

    def script(_index: int, sock: socket.socket) -> None:
        while read_request(sock):
            sock.sendall(next(answers, None) or http_answer(503, b'{"error": "starting"}'))

    pos = AgentClient(scripted(script), trust_file=None, clock=clock, starting_limit_s=60)
    assert pos.can_sell() is False  # proven: not licensed (the owner removed this till)
    pos.forget_verified()
    clock.advance(3600)
    assert pos.can_sell() is False
