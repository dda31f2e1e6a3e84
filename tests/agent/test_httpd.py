"""The local API's wire under attack: each test is named after the attack it holds off (issue 12, item 5).

Each runs a real `LocalApi` (stub agent behind it) on a free port and attacks it over real sockets: a flood
of idle connections, a header dripped one byte at a time, fat heads, a GET whose body hides a second
request, Content-Length tricks. The deadlines are shortened through the module's settings so the tests
stay quick; the figures under a 2,000-connection flood are in bench/local_api.py.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time

import pytest

from agent.localapi import httpd, httploop
from agent.localapi.api import LocalApi
from tests.agent.test_api import AUTH, TOKEN, StubControl, StubStatus


@pytest.fixture
def api():
    server = LocalApi(StubControl(), api_token=TOKEN, port=0, poll_interval=0.02).start()
    yield server
    server.stop()


def _host(api) -> bytes:
    return f"Host: 127.0.0.1:{api.port}\r\n".encode()


_leftover: dict[int, bytes] = {}


def _read_answer(sock: socket.socket, timeout: float = 5) -> tuple[int, dict]:
    """One Content-Length framed answer: (status, JSON body); bytes of the next answer are kept."""
    sock.settimeout(timeout)
    buf = _leftover.pop(id(sock), b"")
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed after {buf!r}")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    length = int(
        next(
            line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
        )
    )
    while len(rest) < length:
        rest += sock.recv(65536)
    _leftover[id(sock)] = rest[length:]
    return int(head.split(b" ")[1]), (json.loads(rest[:length]) if length else {})


def _closed_within(sock: socket.socket, seconds: float) -> bool:
    """Whether the peer closes `sock` within `seconds` (reading and dropping whatever it sends)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        sock.settimeout(max(0.01, end - time.monotonic()))
        try:
            if not sock.recv(65536):
                return True
        except TimeoutError:
            return False
        except OSError:
            return True
    return False


def _count_closed(socks: list[socket.socket], seconds: float) -> int:
    """How many of `socks` the peer closes within `seconds` (one wait for all of them)."""
    import selectors

    sel = selectors.DefaultSelector()
    for s in socks:
        sel.register(s, selectors.EVENT_READ)
    closed = 0
    end = time.monotonic() + seconds
    while sel.get_map() and time.monotonic() < end:
        for key, _ in sel.select(max(0.01, end - time.monotonic())):
            try:
                data = key.fileobj.recv(65536)
            except OSError:
                data = b""
            if not data:
                sel.unregister(key.fileobj)
                closed += 1
    sel.close()
    return closed


def _license(conn: http.client.HTTPConnection, port: int) -> int:
    conn.request("GET", "/v1/license", headers={"Host": f"127.0.0.1:{port}"})
    resp = conn.getresponse()
    resp.read()
    return resp.status


def test_idle_connection_flood_bounded_threads(api, monkeypatch):
    """300 idle connections: the threads stay bounded, the ones past the cap are refused, the POS's own
    keep-alive connection keeps its answers, and a POS reconnecting takes the slot of an idle one."""
    monkeypatch.setattr(httploop, "PRESSURE_IDLE_S", 0.2)
    api._httpd.max_connections = 200
    pos = http.client.HTTPConnection("127.0.0.1", api.port, timeout=5)
    assert _license(pos, api.port) == 200
    threads_before = threading.active_count()
    flood = []
    try:
        for _ in range(300):
            flood.append(socket.create_connection(("127.0.0.1", api.port), timeout=5))
        answers = [_license(pos, api.port) for _ in range(20)]
        assert answers == [200] * 20
        # Connections past the cap were told "busy" and closed (or made room), not given a thread each.
        assert _count_closed(flood, 3) >= 100
        assert api._httpd.connections <= 200
        assert threading.active_count() <= threads_before + httploop.WORKERS
        time.sleep(0.3)  # past PRESSURE_IDLE_S: the idle flood connections may now be dropped for a newcomer
        fresh = http.client.HTTPConnection("127.0.0.1", api.port, timeout=5)
        assert _license(fresh, api.port) == 200
        fresh.close()
    finally:
        pos.close()
        for s in flood:
            s.close()


def test_slow_header_drip_hits_request_deadline(api, monkeypatch):
    """A header dripped a byte at a time is cut at the whole-request deadline, however steady the drip."""
    monkeypatch.setattr(httploop, "REQUEST_DEADLINE_S", 0.6)
    with socket.create_connection(("127.0.0.1", api.port), timeout=5) as s:
        s.sendall(b"GET /v1/license HTTP/1.1\r\n" + _host(api))
        started = time.monotonic()
        closed = False
        for _ in range(60):  # 60 bytes at 50 ms: 3 s of drip, each byte well inside any per-read timeout
            try:
                s.sendall(b"X")
            except OSError:
                closed = True
                break
            if _closed_within(s, 0.05):
                closed = True
                break
        assert closed, "the dripping connection outlived the whole-request deadline"
        assert time.monotonic() - started < 2.5


def test_idle_fresh_connection_hits_request_deadline(api, monkeypatch):
    """A connection that sends nothing at all is closed at the request deadline too."""
    monkeypatch.setattr(httploop, "REQUEST_DEADLINE_S", 0.3)
    with socket.create_connection(("127.0.0.1", api.port), timeout=5) as s:
        assert _closed_within(s, 3)


def test_get_with_body_is_not_parsed_as_next_request(api):
    """A GET's body that looks like a request is read as body, not served as the next request."""
    hidden = b"GET /v1/diagnostics HTTP/1.1\r\n" + _host(api) + b"\r\n"
    with socket.create_connection(("127.0.0.1", api.port), timeout=5) as s:
        s.sendall(
            b"GET /v1/license HTTP/1.1\r\n"
            + _host(api)
            + f"Content-Length: {len(hidden)}\r\n\r\n".encode()
            + hidden
            + b"GET /v1/health HTTP/1.1\r\n"
            + _host(api)
            + b"\r\n"
        )
        status, first = _read_answer(s)
        assert status == 200 and first["license_state"] == "trial_active"
        status, second = _read_answer(s)
        assert status == 200 and second["ok"] is True  # the health request, not the hidden one
        s.settimeout(0.3)
        with pytest.raises(TimeoutError):
            s.recv(1)  # and nothing more: the hidden request was never answered


@pytest.mark.parametrize("value", ["+2", "-1", " 2x", "0x2", "2 2", "\u0662", "1e3", "99999999999"])
def test_plus_content_length_refused(api, value):
    """Content-Length must be plain ASCII digits (and within the body cap): `+2` and friends get 400/413."""
    with socket.create_connection(("127.0.0.1", api.port), timeout=5) as s:
        s.sendall(
            b"POST /v1/sync HTTP/1.1\r\n"
            + _host(api)
            + f"Authorization: Bearer {TOKEN}\r\n".encode()
            + b"Content-Type: application/json\r\nContent-Length: "
            + value.encode("utf-8")
            + b"\r\n\r\n{}"
        )
        status, body = _read_answer(s)
        assert status in (400, 413) and body["error"] in ("bad_request", "payload_too_large")
        assert _closed_within(s, 3)


def test_chunked_body_refused(api):
    """Transfer-Encoding cannot frame a request here: 411 and the connection closes."""
    with socket.create_connection(("127.0.0.1", api.port), timeout=5) as s:
        s.sendall(
            b"POST /v1/sync HTTP/1.1\r\n" + _host(api) + b"Transfer-Encoding: chunked\r\n\r\n"
            b"2\r\n{}\r\n0\r\n\r\n"
        )
        status, body = _read_answer(s)
        assert (status, body["error"]) == (411, "length_required")
        assert _closed_within(s, 3)


def test_fat_header_flood_is_refused_before_buffering(api):
    """Twenty unfinished requests with fat headers: each is cut at the head cap with 431, nothing kept."""
    socks = [socket.create_connection(("127.0.0.1", api.port), timeout=5) for _ in range(20)]
    try:
        for s in socks:
            fat = b"X-Fat: " + b"a" * (httpd.MAX_HEAD + 10)
            s.sendall(b"GET /v1/license HTTP/1.1\r\n" + _host(api) + fat)
        for s in socks:
            status, body = _read_answer(s)
            assert (status, body["error"]) == (431, "headers_too_large")
            assert _closed_within(s, 3)
    finally:
        for s in socks:
            s.close()


def test_oversized_body_is_refused_without_reading_it(api):
    with socket.create_connection(("127.0.0.1", api.port), timeout=5) as s:
        s.sendall(
            b"POST /v1/sync HTTP/1.1\r\n"
            + _host(api)
            + f"Authorization: Bearer {TOKEN}\r\n".encode()
            + b"Content-Type: application/json\r\n"
            + f"Content-Length: {httpd.MAX_BODY + 1}\r\n\r\n".encode()
        )
        status, body = _read_answer(s)
        assert (status, body["error"]) == (413, "payload_too_large")


def test_blocked_handlers_never_stall_the_license_answer(api):
    """POSTs that hang (a sync on a dead network) fill the worker pool, never the POS's answer."""
    release = threading.Event()
    api.routes[("POST", "/v1/sync")].handler = lambda _body: (release.wait(10), (200, {"ok": True}))[1]
    pos = http.client.HTTPConnection("127.0.0.1", api.port, timeout=5)
    assert _license(pos, api.port) == 200  # the server is up, its worker pool started
    threads_before = threading.active_count()
    posts = []
    try:
        for _ in range(httploop.WORKERS + 4):
            s = socket.create_connection(("127.0.0.1", api.port), timeout=5)
            s.sendall(
                b"POST /v1/sync HTTP/1.1\r\n"
                + _host(api)
                + f"Authorization: Bearer {TOKEN}\r\nContent-Length: 0\r\n\r\n".encode()
            )
            posts.append(s)
        assert [_license(pos, api.port) for _ in range(10)] == [200] * 10
        pos.close()
        assert threading.active_count() <= threads_before
        release.set()
        assert all(_read_answer(s)[0] == 200 for s in posts)
    finally:
        release.set()
        for s in posts:
            s.close()


def test_pipelined_requests_are_answered_in_order(api):
    with socket.create_connection(("127.0.0.1", api.port), timeout=5) as s:
        s.sendall(
            (b"GET /v1/health HTTP/1.1\r\n" + _host(api) + b"\r\n") * 3
            + b"POST /v1/sync HTTP/1.1\r\n"
            + _host(api)
            + f"Authorization: {AUTH['Authorization']}\r\n\r\n".encode()
            + b"GET /v1/license HTTP/1.1\r\n"
            + _host(api)
            + b"\r\n"
        )
        answers = [_read_answer(s) for _ in range(5)]
    assert [a[1].get("ok") for a in answers[:3]] == [True] * 3
    assert answers[3][1]["license_state"] == "licensed_active"
    assert answers[4][1]["license_state"] == "trial_active"


def test_a_client_that_reads_slowly_gets_the_whole_answer_and_blocks_nobody(api):
    """An answer bigger than the socket buffers is written as the client reads, while others are served."""
    api.routes[("GET", "/v1/diagnostics")].handler = lambda _body: (200, {"pad": "x" * 4_000_000})
    with socket.socket() as slow:
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.connect(("127.0.0.1", api.port))
        auth = f"Authorization: Bearer {TOKEN}\r\n\r\n".encode()
        slow.sendall(b"GET /v1/diagnostics HTTP/1.1\r\n" + _host(api) + auth)
        pos = http.client.HTTPConnection("127.0.0.1", api.port, timeout=5)
        assert [_license(pos, api.port) for _ in range(5)] == [200] * 5  # the loop is not stuck on `slow`
        pos.close()
        status, body = _read_answer(slow, timeout=10)
    assert status == 200 and len(body["pad"]) == 4_000_000


def test_dripping_connections_at_the_cap_make_room_for_the_pos(api, monkeypatch):
    """At the cap, slow-loris connections that keep dripping still give way to a POS that asks at once."""
    monkeypatch.setattr(httploop, "PRESSURE_IDLE_S", 0.2)
    api._httpd.max_connections = 5
    drips = [socket.create_connection(("127.0.0.1", api.port), timeout=5) for _ in range(5)]
    try:
        for s in drips:
            s.sendall(b"GET /v1/license HTTP/1.1\r\n")
        for _ in range(4):  # keep dripping past the 0.2 s a request may take under pressure
            time.sleep(0.1)
            for s in drips:
                s.sendall(b"X")
        pos = http.client.HTTPConnection("127.0.0.1", api.port, timeout=5)
        assert [_license(pos, api.port) for _ in range(3)] == [200] * 3
        pos.close()
        assert _count_closed(drips, 2) >= 1
    finally:
        for s in drips:
            s.close()


def test_a_kept_alive_pos_connection_survives_a_connection_flood(api, monkeypatch):
    """Issue 28, case 4: a POS's kept-alive connection, silent between orders for longer than the
    pressure threshold, keeps its answers while a flood of connections that never finish a request holds
    the agent at its cap: the flood is dropped or refused, never the POS."""
    monkeypatch.setattr(httploop, "PRESSURE_IDLE_S", 0.2)
    monkeypatch.setattr(httploop, "PRESSURE_KEEPALIVE_S", 0.2)
    api._httpd.max_connections = 20
    request = b"GET /v1/license HTTP/1.1\r\n" + _host(api) + b"\r\n"
    pos = socket.create_connection(("127.0.0.1", api.port), timeout=5)
    flood: list[socket.socket] = []
    stop = threading.Event()

    def flooder() -> None:
        end = time.monotonic() + 10
        while not stop.is_set() and time.monotonic() < end:
            s = socket.socket()
            s.settimeout(0.2)
            try:
                s.connect(("127.0.0.1", api.port))
                s.sendall(b"GET /v1/license HTTP/1.1\r\nX-Slow: ")
            except OSError:
                s.close()
                continue
            flood.append(s)
            if len(flood) > 100:
                flood.pop(0).close()

    thread = threading.Thread(target=flooder, daemon=True)
    try:
        pos.sendall(request)
        assert _read_answer(pos)[0] == 200
        time.sleep(0.4)  # the POS between orders: silent past PRESSURE_KEEPALIVE_S
        thread.start()
        time.sleep(0.4)  # the flood is at the cap
        answers = []
        for _ in range(5):
            pos.sendall(request)
            answers.append(_read_answer(pos)[0])
            time.sleep(0.3)  # silent again past the threshold, the flood still on
        assert answers == [200] * 5
        assert api._httpd.connections <= 20
    finally:
        stop.set()
        thread.join(5)
        pos.close()
        for s in flood:
            s.close()


def test_the_pos_s_repeated_request_follows_status_changes_and_guards(api):
    """The POS's usual request, answered from the read once seen, still follows each status change; the
    same request with another Host, an Origin or a Referer still meets its guard."""
    request = b"GET /v1/license HTTP/1.1\r\n" + _host(api) + b"\r\n"
    pos = socket.create_connection(("127.0.0.1", api.port), timeout=5)
    try:
        states = []
        for state in ("trial_active", "licensed_active", "unlicensed"):
            api.control.set_status(StubStatus(state))
            for _ in range(2):
                pos.sendall(request)
                states.append(_read_answer(pos)[1]["license_state"])
        assert states == ["trial_active"] * 2 + ["licensed_active"] * 2 + ["unlicensed"] * 2
    finally:
        pos.close()
    for extra, status in (
        (b"Referer: http://evil.example/\r\n", 403),
        (b"Origin: http://evil.example\r\n", 403),
    ):
        with socket.create_connection(("127.0.0.1", api.port), timeout=5) as s:
            s.sendall(b"GET /v1/license HTTP/1.1\r\n" + _host(api) + extra + b"\r\n")
            assert _read_answer(s)[0] == status
    with socket.create_connection(("127.0.0.1", api.port), timeout=5) as s:
        s.sendall(b"GET /v1/license HTTP/1.1\r\nHost: evil.example\r\n\r\n")
        assert _read_answer(s)[0] == 403


def test_a_hand_over_answers_what_was_accepted_and_leaves_new_connections_in_the_backlog(api):
    """Before a swap (agent.selfupdate.launched): a connection already accepted whose request arrives
    during the hand-over is answered, not reset; an idle kept-alive one is closed at once; a connection
    made during it is not accepted but waits in the listening socket's backlog, request and all, for the
    next version (here: taken from the socket by hand)."""
    request = b"GET /v1/license HTTP/1.1\r\n" + _host(api) + b"\r\n"
    kept = socket.create_connection(("127.0.0.1", api.port))
    kept.sendall(request)
    assert _read_answer(kept)[0] == 200
    fresh = socket.create_connection(("127.0.0.1", api.port))
    end = time.monotonic() + 5
    while api._httpd.connections < 2 and time.monotonic() < end:
        time.sleep(0.01)
    assert api._httpd.connections == 2  # both accepted; `fresh` has sent nothing yet
    result: list[bool] = []
    handing = threading.Thread(target=lambda: result.append(api.hand_over(3.0)))
    handing.start()
    late = None
    try:
        assert _closed_within(kept, 2.0)  # between requests: closed at once
        late = socket.create_connection(("127.0.0.1", api.port))
        late.sendall(request)
        fresh.sendall(request)
        status, body = _read_answer(fresh)
        assert status == 200 and body["license_state"]
        assert _closed_within(fresh, 2.0)  # answered, then closed: nothing of it is left to reset
        handing.join(5)
        assert result == [True] and api._httpd.connections == 0
        late.settimeout(0.3)
        with pytest.raises(TimeoutError):
            late.recv(1)  # the old version never took it
        listener = api._httpd.socket
        listener.settimeout(2)
        taken, _ = listener.accept()  # what the next version's accept gets
        with taken:
            taken.settimeout(2)
            assert taken.recv(4096) == request
    finally:
        for s in (kept, fresh, late):
            if s is not None:
                s.close()
