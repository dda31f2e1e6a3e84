"""Impostors of the agent for tests, each run as its own process on 127.0.0.1 (the attacks of issue 19).

    python -m tests.agent.impostor answer FILE PORT   # answer FILE's JSON to every request
    python -m tests.agent.impostor proxy TARGET PORT  # forward every request to 127.0.0.1:TARGET

`answer` is the five-line fake agent ("licensed: true" to everything), and, given a genuine answer
captured earlier, the replay. `proxy` forwards to a genuine agent on another machine, rewriting the Host
header as an attacker would, so the agent's Host guard passes.
"""

from __future__ import annotations

import sys
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def main(argv: list[str]) -> None:
    """Run the impostor named by argv until killed."""
    mode, arg, port = argv[0], argv[1], int(argv[2])

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802
            if mode == "answer":
                status, body = 200, Path(arg).read_bytes()
            else:
                req = urllib.request.Request(
                    f"http://127.0.0.1:{arg}{self.path}", headers={"Host": f"127.0.0.1:{arg}"}
                )
                try:
                    with urllib.request.urlopen(req, timeout=5) as resp:  # noqa: S310 (loopback only)
                        status, body = resp.status, resp.read()
                except urllib.error.HTTPError as exc:
                    status, body = exc.code, exc.read()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


if __name__ == "__main__":
    main(sys.argv[1:])
