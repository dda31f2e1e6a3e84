"""The local API: guards before routing (table test), JSON errors, CORS for listed origins, endpoints."""

from __future__ import annotations

import http.client
import json
import threading

import pytest

from agent import errors
from agent.control import Checkout, Diagnostics, FingerprintSource, Terminal
from agent.localapi.api import LocalApi
from agent.localapi.httpd import MAX_BODY

TOKEN = "t0k3n-for-tests"
ALLOWED = "http://pos.example"


class StubStatus:
    def __init__(self, state: str = "trial_active", licensed: bool = True) -> None:
        self.state = state
        self.licensed = licensed

    def to_dict(self) -> dict:
        return {"license_state": self.state, "licensed": self.licensed, "reason": None}


class StubControl:
    """An AgentControl that records every call and answers from canned values."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.current = StubStatus()
        self.subscribers: list = []
        self.raise_on_sync: Exception | None = None

    def status(self):
        return self.current

    def subscribe(self, cb):
        self.subscribers.append(cb)
        return lambda: self.subscribers.remove(cb)

    def set_status(self, status) -> None:
        self.current = status
        for cb in list(self.subscribers):
            cb(status)

    def sync_now(self):
        self.calls.append(("sync_now",))
        if self.raise_on_sync:
            raise self.raise_on_sync
        return StubStatus("licensed_active")

    def start_trial(self, email=None):
        self.calls.append(("start_trial",) if email is None else ("start_trial", email))
        return StubStatus("trial_active")

    def request_code(self, email, purpose):
        self.calls.append(("request_code", email, purpose))

    def activate(self, email, code):
        self.calls.append(("activate", email, code))
        return StubStatus("licensed_active")

    def start_checkout(self, email, restaurant_name, quantity=1, new_subscription=False):
        self.calls.append(("start_checkout", email, restaurant_name, quantity))
        return Checkout("cs_1", "http://127.0.0.1:1/sandbox/checkout/cs_1")

    def wait_checkout(self, checkout_id, cancel, poll_s=2.0):
        self.calls.append(("wait_checkout", checkout_id))
        return StubStatus("licensed_active")

    def portal_url(self):
        self.calls.append(("portal_url",))
        return "http://portal.example/s/1"

    def list_terminals(self, email=None, code=None):
        self.calls.append(("list_terminals", email, code))
        return [Terminal("m_1", "Bar", None, None, True)]

    def remove_terminal(self, machine_id, email=None, code=None):
        self.calls.append(("remove_terminal", machine_id, email, code))

    def deactivate(self):
        self.calls.append(("deactivate",))
        return StubStatus("license_missing", False)

    def diagnostics(self):
        self.calls.append(("diagnostics",))
        return Diagnostics((FingerprintSource("machine_id", True, "ab"),), "ok", "/tmp/x", "http://s", "1")


@pytest.fixture
def control() -> StubControl:
    return StubControl()


@pytest.fixture
def api(control):
    server = LocalApi(control, api_token=TOKEN, port=0, allowed_origins=[ALLOWED], poll_interval=0.02).start()
    yield server
    server.stop()


def call(api, method, path, body=None, headers=None, host=None):
    """One request on a fresh connection; returns (status, headers, json-or-None)."""
    conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=5)
    hdrs = {"Host": host if host is not None else f"127.0.0.1:{api.port}"}
    hdrs.update(headers or {})
    if isinstance(body, dict):
        body = json.dumps(body).encode()
        hdrs.setdefault("Content-Type", "application/json")
    try:
        conn.request(method, path, body=body, headers=hdrs)
        resp = conn.getresponse()
        raw = resp.read()
        return resp.status, resp, (json.loads(raw) if raw else None)
    finally:
        conn.close()


AUTH = {"Authorization": f"Bearer {TOKEN}"}

GUARD_CASES = [
    # (id, method, path, host, headers, body, status, error)
    ("evil-host", "GET", "/v1/license", "evil.example:{port}", {}, None, 403, "forbidden_host"),
    ("rebinding-host", "GET", "/v1/license", "127.0.0.1.nip.io:{port}", {}, None, 403, "forbidden_host"),
    ("wrong-port-host", "GET", "/v1/license", "127.0.0.1:1", {}, None, 403, "forbidden_host"),
    ("no-port-host", "GET", "/v1/health", "localhost", {}, None, 403, "forbidden_host"),
    (
        "unlisted-origin",
        "GET",
        "/v1/license",
        None,
        {"Origin": "http://evil.example"},
        None,
        403,
        "forbidden_origin",
    ),
    ("null-origin", "GET", "/v1/license", None, {"Origin": "null"}, None, 403, "forbidden_origin"),
    (
        "referer",
        "GET",
        "/v1/license",
        None,
        {"Referer": "http://evil.example/page"},
        None,
        403,
        "forbidden_referer",
    ),
    (
        "referer-other-than-allowed-origin",
        "GET",
        "/v1/license",
        None,
        {"Origin": ALLOWED, "Referer": "http://evil.example/"},
        None,
        403,
        "forbidden_referer",
    ),
    ("post-no-token", "POST", "/v1/sync", None, {}, None, 401, "unauthorized"),
    (
        "post-wrong-token",
        "POST",
        "/v1/sync",
        None,
        {"Authorization": "Bearer nope"},
        None,
        401,
        "unauthorized",
    ),
    (
        "post-basic-auth",
        "POST",
        "/v1/sync",
        None,
        {"Authorization": f"Basic {TOKEN}"},
        None,
        401,
        "unauthorized",
    ),
    ("diagnostics-no-token", "GET", "/v1/diagnostics", None, {}, None, 401, "unauthorized"),
    (
        "one-mib-body",
        "POST",
        "/v1/sync",
        None,
        {**AUTH, "Content-Type": "application/json"},
        b"{" + b" " * (1024 * 1024) + b"}",
        413,
        "payload_too_large",
    ),
    (
        "malformed-json",
        "POST",
        "/v1/sync",
        None,
        {**AUTH, "Content-Type": "application/json"},
        b'{"a": ',
        400,
        "bad_json",
    ),
    (
        "json-not-object",
        "POST",
        "/v1/sync",
        None,
        {**AUTH, "Content-Type": "application/json"},
        b"[1]",
        400,
        "bad_json",
    ),
    (
        "not-json",
        "POST",
        "/v1/sync",
        None,
        {**AUTH, "Content-Type": "text/plain"},
        b"sync please",
        415,
        "unsupported_media_type",
    ),
    ("unknown-path", "GET", "/v1/secrets", None, {}, None, 404, "not_found"),
    ("wrong-method", "DELETE", "/v1/license", None, AUTH, None, 405, "method_not_allowed"),
]


@pytest.mark.parametrize(
    ("method", "path", "host", "headers", "body", "status", "error"),
    [c[1:] for c in GUARD_CASES],
    ids=[c[0] for c in GUARD_CASES],
)
def test_guard_rejects_before_any_handler_runs(
    api, control, method, path, host, headers, body, status, error
):
    ran = []
    for key, route in api.routes.items():
        route.handler = lambda _body, key=key: ran.append(key) or (200, {"ran": True})
    got, resp, data = call(
        api, method, path, body=body, headers=headers, host=host.format(port=api.port) if host else None
    )
    assert (got, data["error"]) == (status, error)
    assert isinstance(data["message"], str) and data["message"]
    assert resp.getheader("X-Content-Type-Options") == "nosniff"
    assert resp.getheader("Content-Type") == "application/json"
    assert resp.getheader("Access-Control-Allow-Origin") is None
    assert ran == [] and control.calls == []


def test_the_same_requests_pass_when_well_formed(api, control):
    """The guard cases fail for their reason, not because the endpoint is broken."""
    assert call(api, "GET", "/v1/license")[0] == 200
    assert call(api, "GET", "/v1/license", host=f"localhost:{api.port}")[0] == 200
    status, _, data = call(api, "POST", "/v1/sync", headers=AUTH)
    assert (status, data["license_state"]) == (200, "licensed_active")
    status, _, data = call(api, "POST", "/v1/sync", body={}, headers=AUTH)
    assert status == 200
    big_but_ok = {"pad": "x" * (MAX_BODY - 100)}
    assert call(api, "POST", "/v1/sync", body=big_but_ok, headers=AUTH)[0] == 200
    assert control.calls == [("sync_now",)] * 3


def test_license_answers_from_memory_and_follows_status_changes(api, control):
    status, resp, data = call(api, "GET", "/v1/license")
    assert (status, data["license_state"], data["licensed"]) == (200, "trial_active", True)
    assert resp.getheader("Access-Control-Allow-Origin") is None
    control.set_status(StubStatus("license_error", False))
    assert call(api, "GET", "/v1/license")[2]["license_state"] == "license_error"
    assert control.calls == []


def test_health(api):
    status, _, data = call(api, "GET", "/v1/health")
    assert status == 200 and data["ok"] is True and data["version"]


def test_allowed_origin_gets_cors_on_license_only(api, control):
    origin = {"Origin": ALLOWED, "Referer": ALLOWED + "/pos/index.html"}
    status, resp, data = call(api, "GET", "/v1/license", headers=origin)
    assert status == 200 and data["license_state"] == "trial_active"
    assert resp.getheader("Access-Control-Allow-Origin") == ALLOWED
    status, resp, _ = call(api, "OPTIONS", "/v1/license", headers={"Origin": ALLOWED})
    assert status == 204 and resp.getheader("Access-Control-Allow-Methods") == "GET"
    status, resp, _ = call(api, "GET", "/v1/health", headers={"Origin": ALLOWED})
    assert status == 200 and resp.getheader("Access-Control-Allow-Origin") is None
    status, resp, _ = call(api, "POST", "/v1/sync", headers={"Origin": ALLOWED, **AUTH})
    assert status == 200 and resp.getheader("Access-Control-Allow-Origin") is None


def test_keep_alive_serves_many_requests_on_one_connection(api):
    conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=5)
    try:
        for _ in range(50):
            conn.request("GET", "/v1/license", headers={"Host": f"127.0.0.1:{api.port}"})
            resp = conn.getresponse()
            assert resp.status == 200 and json.loads(resp.read())["licensed"] is True
        assert conn.sock is not None  # the same socket served every answer
    finally:
        conn.close()


def test_tray_endpoints_reach_the_control(api, control):
    assert call(api, "POST", "/v1/trial", headers=AUTH)[2]["license_state"] == "trial_active"
    assert call(api, "POST", "/v1/codes", {"email": "a@b.c", "purpose": "portal"}, AUTH)[0] == 202
    assert call(api, "POST", "/v1/activate", {"email": "a@b.c", "code": "123456"}, AUTH)[0] == 200
    assert call(api, "POST", "/v1/checkout", {"email": "a@b.c", "restaurant_name": "Cafe"}, AUTH)[2] == {
        "checkout_id": "cs_1",
        "url": "http://127.0.0.1:1/sandbox/checkout/cs_1",
    }
    waited = call(api, "POST", "/v1/checkout/wait", {"checkout_id": "cs_1", "timeout_s": 5}, AUTH)[2]
    assert waited["complete"] and waited["status"]["license_state"] == "licensed_active"
    assert call(api, "POST", "/v1/portal", headers=AUTH)[2] == {"url": "http://portal.example/s/1"}
    assert call(api, "POST", "/v1/terminals", headers=AUTH)[2]["terminals"][0]["machine_id"] == "m_1"
    assert call(api, "POST", "/v1/terminals/remove", {"machine_id": "m_2"}, AUTH)[2] == {"ok": True}
    assert call(api, "POST", "/v1/deactivate", headers=AUTH)[2]["licensed"] is False
    assert call(api, "GET", "/v1/diagnostics", headers=AUTH)[2]["components"][0]["name"] == "machine_id"
    assert [c[0] for c in control.calls] == [
        "start_trial",
        "request_code",
        "activate",
        "start_checkout",
        "wait_checkout",
        "portal_url",
        "list_terminals",
        "remove_terminal",
        "deactivate",
        "diagnostics",
    ]


def test_trial_passes_its_optional_email_to_the_control(api, control):
    assert call(api, "POST", "/v1/trial", {"email": "owner@cafe.gr"}, AUTH)[0] == 200
    status, _, data = call(api, "POST", "/v1/trial", {"email": 42}, AUTH)
    assert (status, data["error"]) == (422, "invalid_request")
    assert control.calls == [("start_trial", "owner@cafe.gr")]


def test_missing_fields_are_422_and_never_reach_the_control(api, control):
    status, _, data = call(api, "POST", "/v1/activate", {"email": "a@b.c"}, AUTH)
    assert (status, data["error"]) == (422, "invalid_request")
    status, _, data = call(api, "POST", "/v1/checkout", {"email": "a@b.c", "quantity": 0}, AUTH)
    assert (status, data["error"]) == (422, "invalid_request")
    assert control.calls == []


@pytest.mark.parametrize(
    ("exc", "status", "code"),
    [
        (errors.Offline("The server cannot be reached."), 503, "offline"),
        (errors.InvalidInput("'x' is not an email address."), 422, "invalid_request"),
        (errors.ServerRefused("seats_full", "All seats are in use.", {"terminals": []}), 409, "seats_full"),
        (RuntimeError("boom with secret detail"), 500, "internal"),
    ],
)
def test_errors_come_back_as_json_without_tracebacks(api, control, exc, status, code):
    control.raise_on_sync = exc
    got, _, data = call(api, "POST", "/v1/sync", headers=AUTH)
    assert (got, data["error"]) == (status, code)
    assert "Traceback" not in json.dumps(data) and "secret detail" not in json.dumps(data)
    if code != "internal":  # a failed sync still tells the POS app the status it has
        assert data["status"]["license_state"] == "trial_active"


def test_protocol_errors_are_json(api):
    status, resp, data = call(api, "HEAD", "/v1/license")
    assert status == 501 and data is None  # HEAD answers carry no body
    import socket

    with socket.create_connection(("127.0.0.1", api.port), timeout=5) as s:
        s.sendall(b"NONSENSE\r\n\r\n")
        raw = s.recv(4096)
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400") and json.loads(body)["error"] == "bad_request"


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GET /v1/license HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nHost: evil.example\r\n\r\n", 400),
        (b"GET /v1/license HTTP/1.1\r\nHost 127.0.0.1:{port}\r\n\r\n", 400),
        (b"GET /v1/license HTTP/2.0\r\nHost: 127.0.0.1:{port}\r\n\r\n", 505),
        (b"GET /v1/license HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n" + b"X-A: b\r\n" * 101 + b"\r\n", 431),
    ],
    ids=["repeated-host", "header-without-colon", "http-2-line", "too-many-headers"],
)
def test_malformed_requests_are_refused_before_any_handler(api, control, raw, status):
    import socket

    ran = []
    for key, route in api.routes.items():
        route.handler = lambda _body, key=key: ran.append(key) or (200, {})
    with socket.create_connection(("127.0.0.1", api.port), timeout=5) as s:
        s.sendall(raw.replace(b"{port}", str(api.port).encode()))
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += s.recv(4096)
    assert answer.startswith(f"HTTP/1.1 {status}".encode()) and ran == [] and control.calls == []


def test_binds_loopback_only(api):
    assert api._httpd.server_address[0] == "127.0.0.1"


def test_many_concurrent_clients(api):
    failures = []

    def worker():
        conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=5)
        try:
            for _ in range(20):
                conn.request("GET", "/v1/license", headers={"Host": f"127.0.0.1:{api.port}"})
                resp = conn.getresponse()
                if resp.status != 200 or json.loads(resp.read())["license_state"] != "trial_active":
                    failures.append(resp.status)
        except OSError as exc:
            failures.append(exc)
        finally:
            conn.close()

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert failures == []


def test_license_answers_at_once_while_a_sync_hangs_on_a_silent_server(tmp_path):
    """No blocking: the cloud accepts the connection and never answers; the POS still gets its answer."""
    import statistics
    import time

    from agent.cloud.transport import HttpTransport
    from agent.control import InProcessControl
    from agent.core.clock import SystemClock
    from tests.agent.test_e2e import BlackHole, license_latencies
    from tests.agent.test_service import Rig

    hole = BlackHole()
    rig = Rig(tmp_path)
    service = rig.service()
    service.request_code("owner@cafe.example", "activate")
    service.activate("owner@cafe.example", rig.cloud.codes["owner@cafe.example"])
    service.transport = HttpTransport(f"http://127.0.0.1:{hole.port}", SystemClock(), read_timeout=30)
    api = LocalApi(InProcessControl(service), api_token=TOKEN, port=0, poll_interval=0.02).start()
    outcome = []

    def sync():
        try:
            service.sync_now()
        except errors.Error as exc:
            outcome.append(exc)

    syncing = threading.Thread(target=sync, daemon=True)
    try:
        syncing.start()
        assert hole.accepted.wait(10), "the sync never reached the silent server"
        times, bodies = license_latencies(api.port, 100)
        assert syncing.is_alive()  # the sync was hanging the whole time
        started = time.perf_counter()
        status, _, data = call(api, "GET", "/v1/license")
        fresh_connection_ms = (time.perf_counter() - started) * 1000
    finally:
        hole.close()  # the silent server goes away: the hanging sync ends as Offline
        syncing.join(10)
        api.stop()
    print(
        f"sync hanging: median {statistics.median(times):.3f} ms, max {max(times):.3f} ms, "
        f"new connection {fresh_connection_ms:.3f} ms"
    )
    assert len(bodies) == 100  # every answer arrived while the sync hung (latency: bench/local_api.py)
    assert all(b["license_state"] == "licensed_active" and b["licensed"] for b in bodies)
    assert status == 200 and data["licensed"] is True
    assert len(outcome) == 1 and isinstance(outcome[0], errors.Offline)
