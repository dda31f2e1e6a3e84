"""The local API's HTTP/1.1 wire format: parsing a request head, the guards, routing, JSON answers.

`agent.localapi.api.LocalApi` owns the routes and what they answer; `agent.localapi.httploop` owns the sockets
(one selector loop, a small worker pool, the connection cap and deadlines); this module owns what is said on
them:

- **Bytes bounded.** Never more than `MAX_HEAD` bytes of request line and headers, and `MAX_BODY` of body,
  are accepted for one request; past that the answer is 431 / 413 and the connection is closed.
- **Framing.** Content-Length must be plain ASCII digits; Transfer-Encoding is refused (411); repeated
  Host/Content-Length/... headers are refused (400).
- **Guards before routing** (see `agent.localapi.api`): Host, Origin, Referer and the bearer token; every
failure
  becomes a JSON error answer, never a traceback. Answers carry `X-Content-Type-Options: nosniff`.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from agent import errors
from pospal_protocol.errors import http_status


class Site(Protocol):
    """What the wire needs from the owner of the routes (`agent.localapi.api.LocalApi` implements it).

    Declared here, so this module depends on no route code and `agent.localapi.api` imports it, never the
    reverse.
    """

    routes: Any  # {(method, path): Route with .handler, .auth, .blocking}
    valid_hosts: Any  # Host header values that pass the DNS-rebinding guard
    allowed_origins: Any  # browser origins allowed CORS on GET /v1/license
    _license_response: bytes  # the hot path: GET /v1/license with no query, as ready bytes

    def token_ok(self, header: str | None) -> bool:
        """Whether an Authorization header carries the agent's bearer token."""
        ...

    def _get_license(self, body: dict[str, Any]) -> Any:
        """The license route's handler (compared by identity to pick the fast path)."""
        ...

    def challenge_response(self, query: str, cors: str, lang: str | None) -> bytes:
        """GET /v1/license?challenge=...: the answer with its token and proof."""
        ...

    def license_answer(self, lang: str | None, cors: str) -> bytes:
        """GET /v1/license in a chosen language (or with CORS)."""
        ...


log = logging.getLogger("agent.localapi.api")

MAX_BODY = 64 * 1024
MAX_HEAD = 16 * 1024
_MAX_HEADERS = 100

# The server's error codes keep their HTTP meaning when the local API passes them on.


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
        return ApiError(http_status(exc.code), exc.code, exc.message, exc.extra)
    if isinstance(exc, errors.Offline):
        return ApiError(503, "offline", exc.message)
    if isinstance(exc, errors.InvalidInput):
        return ApiError(422, "invalid_request", exc.message)
    if isinstance(exc, errors.TokenInvalid):
        return ApiError(502, "token_invalid", exc.message)
    if isinstance(exc, errors.Error):
        return ApiError(500, "agent_error", exc.message)
    return ApiError(500, "internal", "The agent hit an unexpected error; see agent.log.")


class _Headers(dict):
    """Request headers by lower-cased name; `get` is case-insensitive."""

    def get(self, name: str, default: Any = None) -> Any:
        return super().get(name.lower(), default)


# A repeated one of these is refused outright: two Hosts or two lengths are how requests get smuggled.
_SINGLE_HEADERS = frozenset(
    {"host", "content-length", "authorization", "origin", "referer", "transfer-encoding", "content-type"}
)
_METHODS = frozenset({"GET", "POST", "OPTIONS", "PUT", "DELETE", "PATCH"})
_DIGITS = re.compile(r"[0-9]{1,9}")


@dataclass
class Request:
    """One parsed request: method, target (path and query), headers, body bytes, keep-alive wish."""

    method: str
    target: str
    version: str
    headers: _Headers
    body: bytes = b""
    keep_alive: bool = True

    @property
    def path(self) -> str:
        """The target without its query."""
        return self.target.split("?", 1)[0]

    @property
    def query(self) -> str:
        """The raw query string ('' when none)."""
        _, _, query = self.target.partition("?")
        return query


class Refuse(Exception):
    """A request that cannot be framed: answer `status` and close the connection."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def parse_head(head: bytes) -> tuple[Request, int]:
    """Parse a request head (without the final blank line); returns the request and its body length."""
    lines = head.decode("iso-8859-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[1].startswith("/"):
        raise Refuse(400, "Malformed request line.")
    method, target, version = parts
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise Refuse(505, "Only HTTP/1.0 and HTTP/1.1 are supported.")
    if len(lines) - 1 > _MAX_HEADERS:
        raise Refuse(431, "Too many headers.")
    headers = _Headers()
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip() or " " in name:
            raise Refuse(400, "Malformed header.")
        key = name.lower()
        value = value.strip()
        if key in headers:
            if key in _SINGLE_HEADERS:
                raise Refuse(400, f"Repeated {name} header.")
            value = f"{headers[key]}, {value}"
        headers[key] = value
    if method not in _METHODS:
        raise Refuse(501, f"Method {method} is not supported.")
    if "transfer-encoding" in headers:
        raise Refuse(411, "Send the body with a Content-Length.")
    raw_len = headers.get("content-length")
    length = 0
    if raw_len is not None:
        if not _DIGITS.fullmatch(raw_len):
            raise Refuse(400, "Content-Length must be plain digits.")
        length = int(raw_len)
        if length > MAX_BODY:
            raise Refuse(413, f"Bodies are limited to {MAX_BODY} bytes.")
    connection = headers.get("connection", "").lower()
    keep_alive = "close" not in connection and (version == "HTTP/1.1" or "keep-alive" in connection)
    return Request(method, target, version, headers, keep_alive=keep_alive), length


# ------------------------------------------------------------------------------------ request handling


def handle(api: Site, req: Request) -> bytes:
    """Run the guards, route the request and return the whole answer (errors as JSON)."""
    method = req.method
    try:
        origin = _guard(api, req)
        path = req.path
        cors = ""
        if origin is not None and path == "/v1/license":
            cors = f"Access-Control-Allow-Origin: {origin}\r\nVary: Origin\r\n"
            if method == "OPTIONS":
                return response(
                    204, b"", cors + "Access-Control-Allow-Methods: GET\r\nAccess-Control-Max-Age: 600\r\n"
                )
        route = api.routes.get((method, path))
        if route is None:
            if any(p == path for (_m, p) in api.routes):
                raise ApiError(405, "method_not_allowed", f"{method} is not allowed on {path}.")
            raise ApiError(404, "not_found", f"No endpoint {path}.")
        if route.auth and method != "POST" and not api.token_ok(req.headers.get("Authorization")):
            raise ApiError(401, "unauthorized", "This endpoint needs the agent's bearer token.")
        if route.handler == api._get_license:
            query = req.query
            if not query and not cors and "accept-language" not in req.headers:
                return api._license_response  # the hot path: the whole answer is already bytes
            params = parse_qs(query, keep_blank_values=True) if query else {}
            langs = params.get("lang")
            lang = (langs[0] if langs else None) or _accept_language(req.headers.get("accept-language"))
            if "challenge" in params:
                return api.challenge_response(query, cors, lang)
            return api.license_answer(lang, cors)
        body = _json_body(req) if method == "POST" else {}
        status, result = route.handler(body)
        payload = result if isinstance(result, bytes) else dumps(result)
        return response(status, payload, cors)
    except Exception as exc:  # every failure becomes a JSON error, never a traceback
        err = error_for(exc)
        if err.code == "internal":
            log.exception("local API handler failed")
        extra = f"Retry-After: {err.extra['retry_after']}\r\n" if "retry_after" in err.extra else ""
        return response(err.status, err.body(), extra)


def _accept_language(header: str | None) -> str | None:
    """The primary subtag of an Accept-Language header's first range (`el-GR;q=0.9, en` -> `el`)."""
    if not header:
        return None
    first = header.split(",", 1)[0].split(";", 1)[0].strip()
    return first.split("-", 1)[0].lower() or None


def _guard(api: Site, req: Request) -> str | None:
    """Run the guards that come before routing; returns the allowed Origin, if any."""
    headers = req.headers
    if headers.get("Host") not in api.valid_hosts:
        raise ApiError(403, "forbidden_host", "Requests must be addressed to 127.0.0.1 or localhost.")
    origin = headers.get("Origin")
    if origin is not None and origin.rstrip("/") not in api.allowed_origins:
        raise ApiError(403, "forbidden_origin", "Browser requests from this origin are not allowed.")
    referer = headers.get("Referer")
    if referer is not None and (origin is None or origin_of(referer) != origin.rstrip("/")):
        raise ApiError(403, "forbidden_referer", "Requests from web pages are not allowed.")
    if req.method not in ("GET", "OPTIONS") and not api.token_ok(headers.get("Authorization")):
        raise ApiError(401, "unauthorized", "This request needs the agent's bearer token.")
    return origin


def _json_body(req: Request) -> dict[str, Any]:
    if not req.body:
        return {}
    ctype = (req.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
    if ctype != "application/json":
        raise ApiError(415, "unsupported_media_type", "Bodies must be application/json.")
    try:
        body = json.loads(req.body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "bad_json", "The body is not valid JSON.") from exc
    if not isinstance(body, dict):
        raise ApiError(400, "bad_json", "The body must be a JSON object.")
    return body


_REFUSAL_CODES = {
    411: "length_required",
    413: "payload_too_large",
    431: "headers_too_large",
    501: "not_implemented",
    505: "version_not_supported",
}


def refusal(status: int, message: str) -> bytes:
    status = status if status in HTTPStatus._value2member_map_ else 400
    code = _REFUSAL_CODES.get(status, "bad_request")
    return response(status, ApiError(status, code, message).body(), close=True)
