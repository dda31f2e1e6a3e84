"""server.bodylimit: every route's body limit holds for declared and chunked bodies (413, no more read)."""

from __future__ import annotations

import json
import select
import socket
import time
from urllib.parse import urlsplit

import pytest

from server.bodylimit import DEFAULT_LIMIT, limit_for


def _rss_kib(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.parametrize("db_backend", ["sqlite"], indirect=True)
def test_chunked_200mib_body_gets_413(start_server):
    server = start_server()
    url = urlsplit(server.url)
    rss_before = _rss_kib(server.process.pid)
    chunk = b"x" * (16 * 1024)
    frame = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    total = 200 * 1024 * 1024
    sent = 0
    answer = b""
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/codes HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        deadline = time.monotonic() + 60
        # Paced, so the answer is read before more is sent (data the server never reads would make its
        # close a reset, which can swallow the answer on the client's side).
        while sent < total and time.monotonic() < deadline:
            if select.select([sock], [], [], 0.02)[0]:
                break
            sock.sendall(frame)
            sent += len(chunk)
        sock.settimeout(10)
        while True:  # the whole answer: the server closes the connection after it
            part = sock.recv(65536)
            if not part:
                break
            answer += part
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), answer[:200]
    assert json.loads(body) == {"error": "too_large", "message": "The request body is too large."}
    # The server stopped reading long before the end, and its memory did not grow by the body.
    assert sent < total
    assert _rss_kib(server.process.pid) - rss_before < 64 * 1024
    # And it still answers.
    import httpx

    assert httpx.get(f"{server.url}/health", timeout=5).status_code == 200


def test_declared_body_over_the_limit_gets_413_before_reading(client):
    response = client.post(
        "/v1/codes", content=b"x" * (DEFAULT_LIMIT + 1), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert response.json() == {"error": "too_large", "message": "The request body is too large."}


def test_chunked_body_over_the_limit_gets_413(client):
    def chunks():
        for _ in range(40):
            yield b"x" * 4096

    response = client.post("/v1/trials", content=chunks(), headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert response.json()["error"] == "too_large"


def test_body_under_the_limit_is_read_whole(client):
    def chunks():
        yield b'{"email": "owner@cafe.gr", '
        yield b'"purpose": "activate"}'

    response = client.post("/v1/codes", content=chunks(), headers={"Content-Type": "application/json"})
    assert response.status_code == 202


def test_every_route_has_a_limit_and_webhooks_get_more(app):
    paths = {path for path, ops in app.openapi()["paths"].items() if "post" in ops}
    assert "/v1/refresh" in paths and "/v1/terminals/remove" in paths
    assert all(0 < limit_for(path) <= 1024 * 1024 for path in paths)
    assert limit_for("/v1/webhooks/stripe") > limit_for("/v1/codes") == DEFAULT_LIMIT
