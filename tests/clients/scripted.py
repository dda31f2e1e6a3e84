"""A loopback TCP server whose every connection runs a test's script: slow, huge, or proxying answers.

`ScriptedServer(script)` listens on a free port (or on `port`, to stand in for an agent that was there);
each accepted connection runs `script(index, sock)` in its own thread (index counts connections from 0).
`stop()` closes the listener and every connection and joins the threads. Scripts must be bounded (they
end when the socket errors or their loop count runs out).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable

Script = Callable[[int, socket.socket], None]


def read_request(sock: socket.socket) -> bytes:
    """Read one request head (the client's GETs carry no body)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(4096)
        if not chunk:
            return buf
        buf += chunk
    return buf


class ScriptedServer:
    """See the module docstring."""

    def __init__(self, script: Script, port: int = 0) -> None:
        self._script = script
        self._listener = socket.create_server(("127.0.0.1", port))
        self.port = self._listener.getsockname()[1]
        self._listener.settimeout(0.05)  # so the accept loop sees stop() at once
        self._conns: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._stopped = threading.Event()
        self._accept = threading.Thread(target=self._loop, daemon=True)
        self._accept.start()

    def _loop(self) -> None:
        index = 0
        while not self._stopped.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._conns.append(conn)
            t = threading.Thread(target=self._run, args=(index, conn), daemon=True)
            self._threads.append(t)
            t.start()
            index += 1

    def _run(self, index: int, conn: socket.socket) -> None:
        try:
            self._script(index, conn)
        except OSError:
            pass
        finally:
            conn.close()

    def stop(self) -> None:
        """Close everything and join the threads."""
        self._stopped.set()
        self._listener.close()
        for conn in self._conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()
        self._accept.join(5)
        for t in self._threads:
            t.join(5)


def http_answer(status: int, body: bytes) -> bytes:
    """A complete HTTP/1.1 answer with a Content-Length."""
    reason = {200: "OK", 503: "Service Unavailable"}.get(status, "Status")
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body
