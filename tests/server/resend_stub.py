"""A local stand-in for Resend's `POST /emails`, with Resend's idempotency behaviour.

A repeated `Idempotency-Key` is answered with the first result and is not delivered again, as Resend
does. `lose_replies` makes the stub deliver a message and then answer 500 (a reply lost on the way
back), which is exactly the case idempotency keys exist for. `script` holds answers to give, in order,
before any delivery (status, body, headers): a 401 for a revoked key, a 429 with `retry-after`.
"""

from __future__ import annotations

import json
import secrets
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class ResendStub:
    """Deliveries (one per distinct key), every request seen, and failure knobs."""

    url: str = ""
    delivered: list[dict[str, Any]] = field(default_factory=list)
    requests: list[tuple[dict[str, str], dict[str, Any]]] = field(default_factory=list)
    by_key: dict[str, str] = field(default_factory=dict)
    lose_replies: int = 0
    fail_next: int = 0
    script: list[tuple[int, dict[str, Any], dict[str, str]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handle(
        self, headers: dict[str, str], body: dict[str, Any]
    ) -> tuple[int, dict[str, Any]] | tuple[int, dict[str, Any], dict[str, str]]:
        """Deliver (once per key) and answer like Resend."""
        with self.lock:
            self.requests.append((headers, body))
            if self.script:
                return self.script.pop(0)
            if headers.get("authorization", "") != "Bearer re_test_key":
                return 401, {"name": "missing_api_key", "message": "bad key"}
            if self.fail_next > 0:
                self.fail_next -= 1
                return 503, {"name": "internal_server_error", "message": "try later"}
            key = headers.get("idempotency-key")
            if key and key in self.by_key:
                return 200, {"id": self.by_key[key]}
            email_id = secrets.token_hex(8)
            self.delivered.append({"id": email_id, "key": key, **body})
            if key:
                self.by_key[key] = email_id
            if self.lose_replies > 0:
                self.lose_replies -= 1
                return 500, {"name": "internal_server_error", "message": "reply lost"}
            return 200, {"id": email_id}


def start_resend_stub() -> tuple[ResendStub, ThreadingHTTPServer]:
    """Start the stub on 127.0.0.1 and a free port; the caller must `shutdown()` the server."""
    stub = ResendStub()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            extra: dict[str, str] = {}
            if self.path != "/emails":
                status, answer = 404, {"name": "not_found"}
            else:
                reply = stub.handle({k.lower(): v for k, v in self.headers.items()}, body)
                status, answer = reply[0], reply[1]
                extra = reply[2] if len(reply) > 2 else {}  # type: ignore[misc]
            data = json.dumps(answer).encode()
            self.send_response(status)
            for name, value in extra.items():
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    stub.url = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, name="resend-stub", daemon=True).start()
    return stub, server
