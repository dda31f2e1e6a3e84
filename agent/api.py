"""The local HTTP API on 127.0.0.1 that POS apps (and a separate tray process) read the license from.

Guards run before routing, in this order, so no handler ever sees a rejected request (the shape of
tailscale's `localapi.ServeHTTP`):

1. Host must be `127.0.0.1:PORT` or `localhost:PORT` (DNS rebinding)          -> 403 forbidden_host
2. Origin must be absent or listed in POSPAL_AGENT_ALLOWED_ORIGINS            -> 403 forbidden_origin
3. Referer must be absent (or match an allowed Origin, which browsers send)   -> 403 forbidden_referer
4. POST (and GET /v1/diagnostics) needs `Authorization: Bearer <api-token>`   -> 401 unauthorized
5. Route and method                                                           -> 404 / 405
6. Body: Content-Length required, <= 64 KiB, application/json, a JSON object  -> 411 / 413 / 415 / 400

`GET /v1/license` answers from a pre-serialised response swapped in on every status change, so it never
touches the network or takes a lock. A listed origin gets CORS on that endpoint only. Every answer is
JSON and carries `X-Content-Type-Options: nosniff`.

Endpoints (POST bodies are JSON objects; all POSTs and `GET /v1/diagnostics` need the bearer token):

    GET  /v1/license            LicenseStatus.to_dict()
    GET  /v1/health             {"ok": true, "version"}
    GET  /v1/diagnostics        Diagnostics.to_dict()
    POST /v1/sync               {} -> status; on failure the error body also carries "status"
    POST /v1/trial              {email?} -> status (email: the trial-ending reminder goes there)
    POST /v1/codes              {email, purpose} -> 202 {"sent": true}
    POST /v1/activate           {email, code} -> status
    POST /v1/checkout           {email, restaurant_name, quantity?} -> {checkout_id, url}
    POST /v1/checkout/wait      {checkout_id, poll_s?, timeout_s?} -> {"complete": bool, "status": status}
    POST /v1/portal             {} -> {url}
    POST /v1/terminals          {email?, code?} -> {"terminals": [Terminal.to_dict()]}
    POST /v1/terminals/remove   {machine_id, email?, code?} -> {"ok": true}
    POST /v1/deactivate         {} -> status

Errors are `{"error": code, "message": text, ...}`: the guards' own codes, `offline` (503), or the
server's refusal passed on with its code (e.g. `seats_full`, 409, with `terminals`).
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import socket
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from agent import __version__, errors

if TYPE_CHECKING:
    from agent.control import AgentControl

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024
# A wait on a checkout is bounded so a forgotten request cannot pin a thread for ever.
CHECKOUT_WAIT_DEFAULT_S = 900.0
CHECKOUT_WAIT_MAX_S = 3600.0

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
        return _dumps({"error": self.code, "message": self.message, **self.extra})


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


Handler = Callable[[dict[str, Any]], tuple[int, Any]]


@dataclass
class Route:
    """One endpoint: `handler(body) -> (status, json_obj)`; `auth` says whether it needs the bearer token."""

    handler: Handler
    auth: bool


def _origin_of(url: str) -> str | None:
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc}"


class LocalApi:
    """The local API server: owns the listening socket, the guard chain and the route table.

    `routes` maps `(method, path)` to a `Route`; tests swap handlers to prove guards run first.
    """

    def __init__(
        self,
        control: AgentControl,
        *,
        api_token: str,
        port: int = 7421,
        allowed_origins: Iterable[str] = (),
        version: str = __version__,
        poll_interval: float = 0.5,
    ) -> None:
        self.control = control
        self._poll_interval = poll_interval
        self._api_token = api_token.encode("ascii")
        self.allowed_origins = frozenset(o.rstrip("/") for o in allowed_origins if o)
        self.version = version
        self._httpd = _Server(("127.0.0.1", port), _RequestHandler)
        self._httpd.api = self
        self.port = int(self._httpd.server_address[1])
        self.valid_hosts = frozenset({f"127.0.0.1:{self.port}", f"localhost:{self.port}"})
        self._thread: threading.Thread | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._license_body = b"{}"
        self._license_response = b""
        self._health_response = self._response(200, _dumps({"ok": True, "version": version}))
        self.routes: dict[tuple[str, str], Route] = {
            ("GET", "/v1/license"): Route(self._get_license, auth=False),
            ("GET", "/v1/health"): Route(self._get_health, auth=False),
            ("GET", "/v1/diagnostics"): Route(self._get_diagnostics, auth=True),
            ("POST", "/v1/sync"): Route(self._post_sync, auth=True),
            ("POST", "/v1/trial"): Route(self._post_trial, auth=True),
            ("POST", "/v1/codes"): Route(self._post_codes, auth=True),
            ("POST", "/v1/activate"): Route(self._post_activate, auth=True),
            ("POST", "/v1/checkout"): Route(self._post_checkout, auth=True),
            ("POST", "/v1/checkout/wait"): Route(self._post_checkout_wait, auth=True),
            ("POST", "/v1/portal"): Route(self._post_portal, auth=True),
            ("POST", "/v1/terminals"): Route(self._post_terminals, auth=True),
            ("POST", "/v1/terminals/remove"): Route(self._post_terminals_remove, auth=True),
            ("POST", "/v1/deactivate"): Route(self._post_deactivate, auth=True),
        }
        self.publish(control.status())

    # -- lifecycle -------------------------------------------------------------------------------------

    def start(self) -> LocalApi:
        """Serve in a daemon thread and follow the agent's status changes; returns self."""
        self._unsubscribe = self.control.subscribe(self.publish)
        self.publish(self.control.status())
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, args=(self._poll_interval,), name="pospal-local-api",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._unsubscribe:
            self._unsubscribe()
            self._unsubscribe = None
        if self._thread:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._httpd.server_close()

    def publish(self, status: Any) -> None:
        """Swap in the pre-serialised `GET /v1/license` answer for `status` (called on every change)."""
        body = _dumps(status.to_dict())
        # One reference assignment each: readers see the old or the new answer, never a mix.
        self._license_body = body
        self._license_response = self._response(200, body)

    # -- helpers used by the request handler -----------------------------------------------------------

    def token_ok(self, header: str | None) -> bool:
        """Whether an Authorization header carries this agent's bearer token (constant-time compare)."""
        if not header or not header.startswith("Bearer "):
            return False
        return hmac.compare_digest(header[7:].strip().encode("ascii", "replace"), self._api_token)

    @staticmethod
    def _response(status: int, body: bytes, extra: str = "", close: bool = False) -> bytes:
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

    # -- handlers --------------------------------------------------------------------------------------

    def _get_license(self, _body: dict[str, Any]) -> tuple[int, Any]:
        return 200, self._license_body

    def _get_health(self, _body: dict[str, Any]) -> tuple[int, Any]:
        return 200, {"ok": True, "version": self.version}

    def _get_diagnostics(self, _body: dict[str, Any]) -> tuple[int, Any]:
        return 200, self.control.diagnostics().to_dict()

    def _post_sync(self, _body: dict[str, Any]) -> tuple[int, Any]:
        try:
            return 200, self.control.sync_now().to_dict()
        except errors.Error as exc:
            # The POS app still gets the status it can keep working with, next to the reason.
            err = error_for(exc)
            err.extra["status"] = self.control.status().to_dict()
            raise err from exc

    def _post_trial(self, body: dict[str, Any]) -> tuple[int, Any]:
        return 200, self.control.start_trial(_opt_str(body, "email")).to_dict()

    def _post_codes(self, body: dict[str, Any]) -> tuple[int, Any]:
        purpose = _opt_str(body, "purpose") or "activate"
        if purpose not in ("activate", "portal", "terminals"):
            raise ApiError(422, "invalid_request", "purpose must be activate, portal or terminals.")
        self.control.request_code(_req_str(body, "email"), purpose)
        return 202, {"sent": True}

    def _post_activate(self, body: dict[str, Any]) -> tuple[int, Any]:
        return 200, self.control.activate(_req_str(body, "email"), _req_str(body, "code")).to_dict()

    def _post_checkout(self, body: dict[str, Any]) -> tuple[int, Any]:
        quantity = body.get("quantity", 1)
        if not isinstance(quantity, int) or isinstance(quantity, bool) or not 1 <= quantity <= 100:
            raise ApiError(422, "invalid_request", "quantity must be a whole number from 1 to 100.")
        checkout = self.control.start_checkout(
            _req_str(body, "email"), _opt_str(body, "restaurant_name") or "", quantity
        )
        return 200, checkout.to_dict()

    def _post_checkout_wait(self, body: dict[str, Any]) -> tuple[int, Any]:
        timeout = _opt_num(body, "timeout_s", CHECKOUT_WAIT_DEFAULT_S)
        poll = _opt_num(body, "poll_s", 2.0)
        cancel = threading.Event()
        timer = threading.Timer(min(max(timeout, 0.0), CHECKOUT_WAIT_MAX_S), cancel.set)
        timer.daemon = True
        timer.start()
        try:
            status = self.control.wait_checkout(_req_str(body, "checkout_id"), cancel, max(poll, 0.05))
            # The wait only returns before its timeout when the checkout completed and activated.
            complete = not cancel.is_set()
        finally:
            timer.cancel()
        return 200, {"complete": complete, "status": status.to_dict()}

    def _post_portal(self, _body: dict[str, Any]) -> tuple[int, Any]:
        return 200, {"url": self.control.portal_url()}

    def _post_terminals(self, body: dict[str, Any]) -> tuple[int, Any]:
        terminals = self.control.list_terminals(_opt_str(body, "email"), _opt_str(body, "code"))
        return 200, {"terminals": [t.to_dict() for t in terminals]}

    def _post_terminals_remove(self, body: dict[str, Any]) -> tuple[int, Any]:
        self.control.remove_terminal(
            _req_str(body, "machine_id"), _opt_str(body, "email"), _opt_str(body, "code")
        )
        return 200, {"ok": True}

    def _post_deactivate(self, _body: dict[str, Any]) -> tuple[int, Any]:
        return 200, self.control.deactivate().to_dict()


def _req_str(body: Mapping[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ApiError(422, "invalid_request", f"'{key}' is required.")
    return value.strip()


def _opt_str(body: Mapping[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ApiError(422, "invalid_request", f"'{key}' must be a string.")
    return value.strip() or None


def _opt_num(body: Mapping[str, Any], key: str, default: float) -> float:
    value = body.get(key, default)
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ApiError(422, "invalid_request", f"'{key}' must be a number.")
    return float(value)


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


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # On Windows SO_REUSEADDR lets another process bind the same port; ask for exclusive use instead.
    allow_reuse_address = os.name != "nt"
    api: LocalApi

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


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    # Idle keep-alive connections are dropped after this, so their threads end.
    timeout = 60
    server: _Server

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
                        api._response(204, b"", cors + "Access-Control-Allow-Methods: GET\r\n"
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
            payload = result if isinstance(result, bytes) else _dumps(result)
            self._write(api._response(status, payload, cors))
        except Exception as exc:  # every failure becomes a JSON error, never a traceback
            err = error_for(exc)
            if err.code == "internal":
                log.exception("local API handler failed")
            close = not self._body_read and method == "POST"
            self._write(api._response(err.status, err.body(), close=close))
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
        if referer is not None and (origin is None or _origin_of(referer) != origin.rstrip("/")):
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
            self._write(LocalApi._response(status, err.body(), close=True))
        except OSError:
            pass

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Successful requests are not logged: the POS polls often and the log must stay small."""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (base class signature)
        """Route the base class's messages (timeouts, parse errors) to logging at debug level."""
        log.debug("local API: " + format, *args)
