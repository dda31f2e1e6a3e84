"""A stand-in agent version for the launcher tests under Windows Python: `python fake_agent.py VERSION`.

It takes the launcher's socket (agent.selfupdate.handoff, `socket.fromshare` over stdin), answers
`GET /v1/health` naming VERSION and `GET /v1/license`, and exits 75 (EXIT_SWAP) once the file
`<POSPAL_INSTALL_DIR>/swap-now` names VERSION: the real agent's idle exit, without its license core.
"""

import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the embeddable Python adds no cwd

from agent.selfupdate import handoff  # noqa: E402
from agent.selfupdate.launcher import EXIT_SWAP  # noqa: E402

VERSION = sys.argv[1]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        if self.path == "/v1/health":
            body = {"ok": True, "version": VERSION}
        elif self.path == "/v1/license":
            body = {"license_state": "trial_active", "licensed": True, "machine_id": "m_fake"}
        else:
            self.send_error(404)
            return
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


def main() -> int:
    sock = handoff.take()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler, bind_and_activate=False)
    server.socket.close()
    server.socket = sock
    server.daemon_threads = False  # server_close() below waits for every answer being written
    threading.Thread(target=server.serve_forever, daemon=True).start()
    flag = Path(os.environ["POSPAL_INSTALL_DIR"]) / "swap-now"
    while True:
        try:
            if flag.read_text().strip() == VERSION:
                break
        except OSError:
            pass
        time.sleep(0.05)
    # As the real agent closes its gate and lets running requests finish: stop accepting, answer what was
    # accepted, then exit. The launcher's socket stays open: new connections wait in its backlog.
    server.shutdown()
    server.server_close()
    return EXIT_SWAP


if __name__ == "__main__":
    sys.exit(main())
