"""HTTP/1.1 to the agent's local API under one total deadline and a size cap, on plain sockets.

`http.client` times out each read, not the call: an answer sent one byte a second never trips a 2 s
timeout, and it reads whatever length the other side announces into memory. Here every exchange has a
deadline for the whole call (connect, send, every read) and an answer larger than `limit` bytes is
refused as soon as that is known (an announced length over it, or more bytes than it arriving), so a
300 MiB answer costs at most `limit` bytes of memory. Only what the agent sends is understood: a
status line, headers, and a `Content-Length` body (or a body to the connection's close); chunked
transfer is refused.

One `Connection` belongs to one thread (the client keeps one per thread), so a stuck call holds no lock
another thread needs.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass

MAX_HEAD_BYTES = 16 * 1024
_RECV = 65536


class WireError(Exception):
    """Base of this module's failures."""


class Timeout(WireError):
    """The whole exchange did not finish before its deadline."""


class Closed(WireError):
    """The peer closed the connection before any byte of an answer (a kept-alive connection gone idle)."""


class Cut(WireError):
    """The peer closed the connection in the middle of an answer."""


class TooLarge(WireError):
    """The answer is larger than the cap."""


class Malformed(WireError):
    """The answer is not HTTP/1.x as the agent speaks it."""


@dataclass(frozen=True)
class Answer:
    """One HTTP answer: its status, lower-cased headers and body."""

    status: int
    headers: dict[str, str]
    body: bytes


class Connection:
    """A keep-alive connection to `host:port`, reconnected when needed."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._sock: socket.socket | None = None

    @property
    def is_open(self) -> bool:
        """Whether a socket from an earlier exchange is kept alive."""
        return self._sock is not None

    def close(self) -> None:
        """Close the socket, if any."""
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None

    def exchange(self, request: bytes, deadline: float, limit: int) -> Answer:
        """Send `request` and read one answer, all before `deadline` (`time.monotonic()` seconds).

        Raises `Timeout`, `Closed`, `Cut`, `TooLarge`, `Malformed`, or `OSError` (refused, reset); on any of
        them the connection is closed.
        """
        try:
            return self._exchange(request, deadline, limit)
        except BaseException:
            self.close()
            raise

    def _exchange(self, request: bytes, deadline: float, limit: int) -> Answer:
        if self._sock is None:
            self._sock = socket.create_connection((self.host, self.port), timeout=_left(deadline))
            self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock = self._sock
        sock.settimeout(_left(deadline))
        sock.sendall(request)
        buf = bytearray()
        while True:
            end = buf.find(b"\r\n\r\n")
            if end >= 0:
                break
            if len(buf) > MAX_HEAD_BYTES:
                raise TooLarge("the answer's head is too large")
            chunk = _recv(sock, deadline)
            if not chunk:
                if not buf:
                    raise Closed("closed before answering")
                raise Cut("closed inside the answer's head")
            buf += chunk
        status, headers, http10 = _parse_head(bytes(buf[:end]))
        body = buf[end + 4 :]
        if "transfer-encoding" in headers:
            raise Malformed("chunked answers are not understood")
        length_text = headers.get("content-length")
        closing = http10 or headers.get("connection", "").lower() == "close"
        if length_text is None:
            # The body runs to the connection's close, capped.
            while True:
                if len(body) > limit:
                    raise TooLarge("the answer is too large")
                chunk = _recv(sock, deadline)
                if not chunk:
                    break
                body += chunk
            self.close()
            return Answer(status, headers, bytes(body))
        if not length_text.isascii() or not length_text.isdigit() or len(length_text) > 12:
            raise Malformed("the answer's Content-Length is malformed")
        length = int(length_text)
        if length > limit:
            raise TooLarge("the answer is too large")
        while len(body) < length:
            chunk = _recv(sock, deadline, length - len(body))
            if not chunk:
                raise Cut("closed inside the answer's body")
            body += chunk
        if len(body) > length:
            raise Malformed("more bytes than the answer's Content-Length")
        if closing:
            self.close()
        return Answer(status, headers, bytes(body))


def _left(deadline: float) -> float:
    # Real time, not an injected clock: this bounds a socket call, it judges no license.
    left = deadline - time.monotonic()
    if left <= 0:
        raise Timeout("the deadline passed")
    return left


def _recv(sock: socket.socket, deadline: float, most: int = _RECV) -> bytes:
    sock.settimeout(_left(deadline))
    try:
        return sock.recv(min(most, _RECV))
    except TimeoutError as exc:
        raise Timeout("the deadline passed") from exc


def _parse_head(head: bytes) -> tuple[int, dict[str, str], bool]:
    """(status, lower-cased headers, whether it is HTTP/1.0) of an answer's head."""
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError as exc:  # pragma: no cover - latin-1 decodes any byte
        raise Malformed("undecodable head") from exc
    lines = text.split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or parts[0] not in ("HTTP/1.1", "HTTP/1.0") or not parts[1].isdigit():
        raise Malformed("not an HTTP/1.x status line")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            raise Malformed("malformed header line")
        key = name.strip().lower()
        if key in headers:
            raise Malformed(f"repeated {key} header")
        headers[key] = value.strip()
    return int(parts[1]), headers, parts[0] == "HTTP/1.0"
