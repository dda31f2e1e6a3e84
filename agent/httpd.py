"""The local API's HTTP/1.1 server: a lean request parser, the guards, routing and JSON errors.

`agent.api.LocalApi` owns the routes and what they answer; this module owns the wire: parsing the
request line and headers (refusing repeated Host/Content-Length and over-long lines), the guard chain
run before routing (see `agent.api`), bodies (Content-Length, size, JSON object), keep-alive with
TCP_NODELAY, and turning every failure into a JSON error answer instead of a traceback.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from agent import errors

if TYPE_CHECKING:
    from agent.api import LocalApi

log = logging.getLogger("agent.api")

MAX_BODY = 64 * 1024

# The server's error codes keep their HTTP meaning when the local API passes them on.
_REFUSED_STATUS = {
    "invalid_request": 422,
    "bad_signature": 401,
    "unknown_machine": 401,
    "replay": 409,
    "bad_code": 401,
    "code_expired": 401,
    "too_many_attempts": 429,
    "rate_limited": 429,
    "seats_full": 409,
    "not_found": 404,
    "no_subscription": 404,
}


class ApiError(Exception):
    """An error answer: HTTP `status`, JSON `{"error": code, "message": message, **extra}`."""

    def __init__(self, status: int, code: str, message: str, extra: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = dict(extra or {})

    def body(self) -> bytes:
        """The JSON error body."""
        return dumps({"error": self.code, "message": self.message, **self.extra})


def dumps(obj: Any) -> bytes:
    """Compact UTF-8 JSON bytes."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def origin_of(url: str) -> str | None:
    """`scheme://host[:port]` of a URL, or None when it has none."""
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc}"


def response(status: int, body: bytes, extra: str = "", close: bool = False) -> bytes:
    """A complete HTTP/1.1 answer with a JSON body (`extra`: more header lines, each ending in CRLF)."""
    reason = HTTPStatus(status).phrase
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "X-Content-Type-Options: nosniff\r\n"
        "Cache-Control: no-store\r\n"
        f"{extra}"
        f"{'Connection: close' + chr(13) + chr(10) if close else ''}"
        "\r\n"
    )
    return head.encode("latin-1") + body


def error_for(exc: BaseException) -> ApiError:
    """Map an exception raised by the agent to the JSON error the local API answers with."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, errors.ServerRefused):
        return ApiError(_REFUSED_STATUS.get(exc.code, 400), exc.code, exc.message, exc.extra)
    if isinstance(exc, errors.Offline):
        return ApiError(503, "offline", exc.message)
    if isinstance(exc, errors.InvalidInput):
        return ApiError(422, "invalid_request", exc.message)
    if isinstance(exc, errors.TokenInvalid):
        return ApiError(502, "token_invalid", exc.message)
    if isinstance(exc, errors.Error):
        return ApiError(500, "agent_error", exc.message)
    return ApiError(500, "internal", "The agent hit an unexpected error; see agent.log.")


class Server(ThreadingHTTPServer):
    """The listening socket: one thread per connection, exclusive port use on Windows."""

    daemon_threads = True
    # On Windows SO_REUSEADDR lets another process bind the same port; ask for exclusive use instead.
    allow_reuse_address = os.name != "nt"
    api: LocalApi  # set by LocalApi

    def server_bind(self) -> None:
        if os.name == "nt" and hasattr(socket, "SO_EXCLUSIVEADDRUSE"):
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_EXCLUSIVEADDRUSE, 1)
        super().server_bind()


class _Headers(dict):
    """Request headers by lower-cased name; `get` is case-insensitive like `email.message.Message`'s."""

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        return super().get(name.lower(), default)


# A repeated one of these is refused outright: two Hosts or two lengths are how requests get smuggled.
_SINGLE_HEADERS = frozenset({"host", "content-length", "authorization", "origin", "referer",
                             "transfer-encoding", "content-type"})
_MAX_HEADERS = 100
_MAX_LINE = 65536


class RequestHandler(BaseHTTPRequestHandler):
    """One connection: lean header parsing, the guards, routing to `server.api.routes`, JSON errors."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    # Idle keep-alive connections are dropped after this, so their threads end.
    timeout = 60
    server: Server

    def parse_request(self) -> bool:
        """Parse the request line and headers (a lean replacement of the base class's email-parser path,
        which costs more than the whole answer on the hot path). Returns False after sending an error."""
        self.command = ""
        self.request_version = "HTTP/0.9"
        self.close_connection = True
        line = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")
        self.requestline = line
        parts = line.split(" ")
        if len(parts) != 3 or not parts[1].startswith("/"):
            self.send_error(400, "Malformed request line.")
            return False
        self.command, self.path, self.request_version = parts
        if self.request_version not in ("HTTP/1.1", "HTTP/1.0"):
            self.send_error(505, "Only HTTP/1.0 and HTTP/1.1 are supported.")
            return False
        headers = _Headers()
        for _ in range(_MAX_HEADERS + 1):
            raw = self.rfile.readline(_MAX_LINE + 1)
            if len(raw) > _MAX_LINE:
                self.send_error(431, "A header line is too long.")
                return False
            if raw in (b"\r\n", b"\n", b""):
                break
            name, sep, value = raw.decode("iso-8859-1").partition(":")
            if not sep or not name or name != name.strip() or " " in name:
                self.send_error(400, "Malformed header.")
                return False
            key = name.lower()
            value = value.strip()
            if key in headers:
                if key in _SINGLE_HEADERS:
                    self.send_error(400, f"Repeated {name} header.")
                    return False
                value = f"{headers[key]}, {value}"
            headers[key] = value
        else:
            self.send_error(431, "Too many headers.")
            return False
        self.headers = headers  # type: ignore[assignment]
        connection = headers.get("connection", "").lower()
        if "close" in connection:
            self.close_connection = True
        elif self.request_version == "HTTP/1.1" or "keep-alive" in connection:
            self.close_connection = False
        if headers.get("expect", "").lower() == "100-continue" and self.request_version == "HTTP/1.1":
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        return True

    def do_GET(self) -> None:  # noqa: N802 (BaseHTTPRequestHandler's naming)
        self._handle("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._handle("POST")

    def do_OPTIONS(self) -> None:  # noqa: N802
        self._handle("OPTIONS")

    def do_PUT(self) -> None:  # noqa: N802
        self._handle("PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self._handle("DELETE")

    def do_PATCH(self) -> None:  # noqa: N802
        self._handle("PATCH")

    def _handle(self, method: str) -> None:
        api = self.server.api
        self._body_read = False
        headers = self.headers
        try:
            origin = self._guard(api, method)
            path = self.path.split("?", 1)[0]
            cors = ""
            if origin is not None and path == "/v1/license":
                cors = f"Access-Control-Allow-Origin: {origin}\r\nVary: Origin\r\n"
                if method == "OPTIONS":
                    self._write(
                        response(204, b"", cors + "Access-Control-Allow-Methods: GET\r\n"
                                      "Access-Control-Max-Age: 600\r\n")
                    )
                    return
            route = api.routes.get((method, path))
            if route is None:
                if any(p == path for (_m, p) in api.routes):
                    raise ApiError(405, "method_not_allowed", f"{method} is not allowed on {path}.")
                raise ApiError(404, "not_found", f"No endpoint {path}.")
            if route.auth and method != "POST" and not api.token_ok(headers.get("Authorization")):
                raise ApiError(401, "unauthorized", "This endpoint needs the agent's bearer token.")
            if route.handler == api._get_license and not cors:
                # The hot path: the whole answer is already bytes.
                self._write(api._license_response)
                return
            body = self._read_json() if method == "POST" else {}
            status, result = route.handler(body)
            payload = result if isinstance(result, bytes) else dumps(result)
            self._write(response(status, payload, cors))
        except Exception as exc:  # every failure becomes a JSON error, never a traceback
            err = error_for(exc)
            if err.code == "internal":
                log.exception("local API handler failed")
            close = not self._body_read and method == "POST"
            self._write(response(err.status, err.body(), close=close))
            if close:
                self.close_connection = True
                self._linger()

    def _guard(self, api: LocalApi, method: str) -> str | None:
        """Run the guards that come before routing; returns the allowed Origin, if any."""
        headers = self.headers
        if headers.get("Host") not in api.valid_hosts:
            raise ApiError(403, "forbidden_host", "Requests must be addressed to 127.0.0.1 or localhost.")
        origin = headers.get("Origin")
        if origin is not None and origin.rstrip("/") not in api.allowed_origins:
            raise ApiError(403, "forbidden_origin", "Browser requests from this origin are not allowed.")
        referer = headers.get("Referer")
        if referer is not None and (origin is None or origin_of(referer) != origin.rstrip("/")):
            raise ApiError(403, "forbidden_referer", "Requests from web pages are not allowed.")
        if method not in ("GET", "OPTIONS") and not api.token_ok(headers.get("Authorization")):
            raise ApiError(401, "unauthorized", "This request needs the agent's bearer token.")
        return origin

    def _read_json(self) -> dict[str, Any]:
        headers = self.headers
        if headers.get("Transfer-Encoding"):
            raise ApiError(411, "length_required", "Send the body with a Content-Length.")
        raw_len = headers.get("Content-Length", "0")
        try:
            length = int(raw_len)
        except ValueError as exc:
            raise ApiError(400, "bad_request", "Content-Length is not a number.") from exc
        if length < 0:
            raise ApiError(400, "bad_request", "Content-Length is negative.")
        if length > MAX_BODY:
            raise ApiError(413, "payload_too_large", f"Bodies are limited to {MAX_BODY} bytes.")
        if length == 0:
            self._body_read = True
            return {}
        ctype = (headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
        if ctype != "application/json":
            raise ApiError(415, "unsupported_media_type", "Bodies must be application/json.")
        raw = self.rfile.read(length)
        self._body_read = True
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ApiError(400, "bad_json", "The body is not valid JSON.") from exc
        if not isinstance(body, dict):
            raise ApiError(400, "bad_json", "The body must be a JSON object.")
        return body

    def _write(self, data: bytes) -> None:
        self.wfile.write(data)

    def _linger(self) -> None:
        """Drain (briefly, boundedly) a body we refused, so closing does not reset the connection before
        the client has read our answer."""
        try:
            self.connection.shutdown(socket.SHUT_WR)
            self.connection.settimeout(1.0)
            for _ in range(64):
                if not self.connection.recv(65536):
                    break
        except OSError:
            pass

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Protocol-level errors (bad request line, unknown method) as JSON too, then close."""
        status = code if code in HTTPStatus._value2member_map_ else 400
        err = ApiError(status, "bad_request", message or HTTPStatus(status).phrase)
        self.close_connection = True
        try:
            self._write(response(status, err.body(), close=True))
        except OSError:
            pass

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Successful requests are not logged: the POS polls often and the log must stay small."""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (base class signature)
        """Route the base class's messages (timeouts, parse errors) to logging at debug level."""
        log.debug("local API: " + format, *args)
