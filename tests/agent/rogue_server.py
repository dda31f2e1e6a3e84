"""RogueServer: the attacker's "20-line local server" that answers every trial, activation and refresh with
a token of its choosing (an old genuine one, or one signed by the attacker's own key), for the tamper tests.

`answer(path, nonce)` returns the JSON body; `requests` records (path, nonce) of what the agent sent.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class RogueServer:
    """A threaded HTTP server on 127.0.0.1 and a free port; `stop()` it (or use it as a context manager)."""

    def __init__(self, answer: Callable[[str, str], dict[str, Any]]) -> None:
        self.answer = answer
        self.requests: list[tuple[str, str]] = []
        rogue = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                nonce = self.headers.get("X-POSPal-Nonce", "")
                rogue.requests.append((self.path, nonce))
                body = json.dumps(rogue.answer(self.path, nonce)).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)

    def __enter__(self) -> RogueServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
