"""bench/lb_proxy.py: round-robin per request, bodies relayed intact, dead instances skipped, 502 at the end.

Upstreams are small stdlib HTTP/1.1 servers on loopback that say which one answered.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from bench.lb_proxy import RunningProxy, start_in_thread


def _upstream(name: str, *, close_after_each: bool = False) -> ThreadingHTTPServer:
    """A keep-alive server echoing name, method, path, body and X-Forwarded-For as JSON.

    `/chunked` answers with a chunked body. With `close_after_each` it drops the connection after every
    answer without saying so, like a server whose keep-alive timeout just ran out.
    """

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode() if length else ""
            payload = {
                "name": name,
                "method": self.command,
                "path": self.path,
                "body": body,
                "xff": self.headers.get("X-Forwarded-For"),
                "proxy_port": self.client_address[1],  # which of the proxy's upstream connections
            }
            data = json.dumps(payload).encode()
            self.send_response(201 if self.command == "POST" else 200)
            self.send_header("Content-Type", "application/json")
            if self.path == "/chunked":
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for start in range(0, len(data), 7):
                    piece = data[start : start + 7]
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                self.wfile.write(b"0\r\n\r\n")
            else:
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            if close_after_each:
                self.close_connection = True

        do_GET = do_POST = _answer

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def make_proxy() -> Iterator[Callable[..., RunningProxy]]:
    """Factory: a proxy in front of the given upstream servers or ports; everything stopped after."""
    started: list[Any] = []

    def make(*upstreams: ThreadingHTTPServer | int) -> RunningProxy:
        addresses = []
        for upstream in upstreams:
            if isinstance(upstream, int):
                addresses.append(("127.0.0.1", upstream))
            else:
                started.append(upstream)
                addresses.append(("127.0.0.1", upstream.server_address[1]))
        proxy = start_in_thread(addresses)
        started.append(proxy)
        return proxy

    yield make
    for item in started:
        if isinstance(item, RunningProxy):
            item.stop()
        else:
            item.shutdown()
            item.server_close()


def test_each_request_goes_to_the_next_instance_over_one_client_connection(make_proxy) -> None:
    proxy = make_proxy(_upstream("a"), _upstream("b"))
    with httpx.Client(base_url=proxy.url, timeout=10) as client:
        answers = [client.post("/v1/refresh", content=f"body-{n}") for n in range(6)]
    assert [r.status_code for r in answers] == [201] * 6
    assert [r.json()["name"] for r in answers] == ["a", "b"] * 3
    assert [r.json()["body"] for r in answers] == [f"body-{n}" for n in range(6)]
    assert {r.json()["xff"] for r in answers} == {"127.0.0.1"}
    assert proxy.proxy.counts == [3, 3]
    assert proxy.proxy.client_connections == 1  # all six came over the client's one keep-alive connection
    # ...and the proxy kept one connection open to each instance, reusing it for that instance's three.
    for name in ("a", "b"):
        assert len({r.json()["proxy_port"] for r in answers if r.json()["name"] == name}) == 1


def test_a_chunked_answer_is_relayed_whole(make_proxy) -> None:
    proxy = make_proxy(_upstream("a"))
    with httpx.Client(base_url=proxy.url, timeout=10) as client:
        first, second = client.get("/chunked"), client.get("/after")
    assert first.json()["path"] == "/chunked"
    assert second.json()["path"] == "/after"


def test_an_instance_that_dropped_its_idle_connection_still_gets_the_next_request(make_proxy) -> None:
    proxy = make_proxy(_upstream("a", close_after_each=True))
    with httpx.Client(base_url=proxy.url, timeout=10) as client:
        answers = [client.post("/v1/refresh", content=str(n)) for n in range(5)]
    assert [(r.status_code, r.json()["body"]) for r in answers] == [(201, str(n)) for n in range(5)]


def test_a_dead_instance_is_skipped_and_502_when_none_answers(make_proxy) -> None:
    proxy = make_proxy(_closed_port(), _upstream("b"))
    with httpx.Client(base_url=proxy.url, timeout=10) as client:
        assert [client.get("/health").json()["name"] for _ in range(4)] == ["b"] * 4
    dead = make_proxy(_closed_port(), _closed_port())
    response = httpx.get(f"{dead.url}/health", timeout=10)
    assert response.status_code == 502
    assert response.json()["error"] == "bad_gateway"
