"""HttpTransport against a scripted local HTTP server: signing, error mapping, retries, clock skew."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.cloud.transport import HttpTransport, MachineIdentity
from agent.core.clock import FakeClock
from agent.errors import Offline, ServerRefused
from pospal_protocol.signatures import verify_request_signature


class Scripted:
    """A local server answering from a script of (status, body, headers); records every request."""

    def __init__(self):
        self.script: list[tuple[int, object, dict]] = []
        self.requests: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                outer.requests.append(
                    {"method": self.command, "path": self.path, "headers": dict(self.headers), "body": body}
                )
                status, payload, headers = outer.script.pop(0) if outer.script else (200, {"ok": True}, {})
                raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            do_GET = do_POST = _answer

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Scripted()
    yield s
    s.close()


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def identity():
    return MachineIdentity(Ed25519PrivateKey.generate(), "m_123")


def test_refresh_is_signed_so_the_server_can_verify_it(server, clock, identity):
    server.script.append((200, {"token": "t"}, {}))
    t = HttpTransport(server.url, clock)
    assert t.refresh(identity, {"fingerprint": {"a": "b"}, "known_kids": []}) == {"token": "t"}
    req = server.requests[0]
    signed = verify_request_signature(
        identity.private_key.public_key(), "POST", "/v1/refresh", req["headers"], req["body"]
    )
    assert signed.machine_id == "m_123" and signed.timestamp == int(clock.now().timestamp())
    assert json.loads(req["body"]) == {"fingerprint": {"a": "b"}, "known_kids": []}


def test_trial_start_carries_no_machine_header(server, clock):
    t = HttpTransport(server.url, clock)
    t.start_trial(MachineIdentity(Ed25519PrivateKey.generate()), {"fingerprint": {}})
    headers = {k.lower(): v for k, v in server.requests[0]["headers"].items()}
    assert "x-pospal-machine" not in headers and "x-pospal-signature" in headers


@pytest.mark.parametrize(
    ("status", "body", "headers", "code", "extra"),
    [
        (
            409,
            {"error": "seats_full", "message": "All seats in use.", "terminals": [{"machine_id": "m_1"}]},
            {},
            "seats_full",
            {"terminals": [{"machine_id": "m_1"}]},
        ),
        (
            429,
            {"error": "rate_limited", "message": "Slow down."},
            {"Retry-After": "120"},
            "rate_limited",
            {"retry_after": 120},
        ),
        (404, b"<html>not found</html>", {}, "http_404", {}),
    ],
)
def test_4xx_become_server_refused_with_code_and_extra(
    server, clock, identity, status, body, headers, code, extra
):
    server.script.append((status, body, headers))
    with pytest.raises(ServerRefused) as info:
        HttpTransport(server.url, clock).refresh(identity, {})
    assert info.value.code == code and info.value.extra == extra and info.value.message


@pytest.mark.parametrize(
    ("status", "body"),
    [(500, {"error": "internal"}), (502, b"bad gateway"), (200, b"not json"), (200, b"[1, 2]")],
)
def test_5xx_and_garbled_answers_are_offline(server, clock, identity, status, body):
    server.script.append((status, body, {}))
    with pytest.raises(Offline):
        HttpTransport(server.url, clock).refresh(identity, {})


def test_posts_are_not_retried_but_gets_are(server, clock, identity):
    t = HttpTransport(server.url, clock)
    server.script.append((503, b"", {}))
    with pytest.raises(Offline):
        t.refresh(identity, {})
    assert len(server.requests) == 1
    server.script += [(503, b"", {}), (200, {"status": "complete"}, {})]
    assert t.checkout_status("chk_1") == "complete"
    assert [r["method"] for r in server.requests[1:]] == ["GET", "GET"]


def test_a_refused_timestamp_is_re_signed_with_the_server_time_once(server, clock, identity):
    server_time = int(clock.now().timestamp()) + 2 * 86400  # this PC's clock is 2 days behind
    server.script += [
        (409, {"error": "replay", "message": "too old", "server_time": server_time}, {}),
        (200, {"token": "t"}, {}),
    ]
    t = HttpTransport(server.url, clock)
    assert t.refresh(identity, {}) == {"token": "t"}
    retried = server.requests[1]["headers"]
    assert abs(int(retried["X-POSPal-Timestamp"]) - server_time) <= 1
    assert retried["X-POSPal-Nonce"] != server.requests[0]["headers"]["X-POSPal-Nonce"]
    # Later requests use the learned offset straight away.
    t.refresh(identity, {})
    assert len(server.requests) == 3


def test_a_real_replay_is_not_retried(server, clock, identity):
    now = int(clock.now().timestamp())
    server.script.append((409, {"error": "replay", "message": "seen", "server_time": now}, {}))
    with pytest.raises(ServerRefused) as info:
        HttpTransport(server.url, clock).refresh(identity, {})
    assert info.value.code == "replay" and len(server.requests) == 1


def test_unreachable_server_is_offline(clock, identity):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(Offline, match="cannot be reached"):
        HttpTransport(f"http://127.0.0.1:{port}", clock).refresh(identity, {})


def test_a_server_that_never_answers_times_out(clock, identity):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        t = HttpTransport(f"http://127.0.0.1:{listener.getsockname()[1]}", clock, read_timeout=0.3)
        started = time.monotonic()
        with pytest.raises(Offline, match="did not answer in time"):
            t.refresh(identity, {})
        assert time.monotonic() - started < 5  # bounded by the read timeout, not hanging


def test_requests_are_counted_by_endpoint(server, clock, identity):
    t = HttpTransport(server.url, clock)
    server.script += [(200, {"token": "t"}, {}), (200, {"status": "open"}, {}), (200, {"status": "open"}, {})]
    t.refresh(identity, {})
    t.checkout_status("chk_a")
    t.checkout_status("chk_b")
    assert t.requests_made == {"/v1/refresh": 1, "/v1/checkout/{id}": 2}


@pytest.fixture(params=["fake-cloud", "real-server"])
def terminal(request, tmp_path):
    """(service, pay(checkout), code_for(email)) on FakeCloud or on the real server app over HTTP."""
    if request.param == "fake-cloud":
        from tests.agent.test_service import Rig

        rig = Rig(tmp_path)
        return rig.service(), lambda co: rig.cloud.pay(co.checkout_id), lambda email: rig.cloud.codes[email]
    from tests.agent.conftest import emailed_code, pay
    from tests.agent.test_time_rules import World

    world = World(request.getfixturevalue("inproc_server"), tmp_path)
    return (
        world.service(),
        lambda co: pay(co.url),
        lambda email: emailed_code(world.server.env["POSPAL_DATABASE_URL"], email),
    )


def test_fake_cloud_behaves_like_the_real_server(terminal):
    """The same flow gives the same states on FakeCloud and on the real server (keeps the fake honest)."""
    import threading as th

    service, pay_checkout, code_for = terminal
    email = "conformance@cafe.example"
    assert service.start_trial().license_state == "trial_active"
    checkout = service.start_checkout(email, "Cafe", 1)
    pay_checkout(checkout)
    assert service.wait_checkout(checkout.checkout_id, th.Event(), 0.05).license_state == "licensed_active"
    assert service.sync_now().license_state == "licensed_active"
    [me] = service.list_terminals()
    assert me.this_machine and me.machine_id == service.status().machine_id
    service.request_code(email, "activate")
    wrong = f"{(int(code_for(email)) + 1) % 10**6:06d}"
    with pytest.raises(ServerRefused) as info:
        service.activate(email, wrong)
    assert info.value.code == "bad_code"
    assert service.deactivate().license_state == "license_missing"
    with pytest.raises(ServerRefused):
        service.deactivate()
