"""The tray's channel to the license service: framing, the caller's credential, and what a caller may do.

The tray (one per logged-in session) reaches the service over a local channel whose server knows who is
calling, from the OS: a Unix domain socket checked with SO_PEERCRED (`agent.link.unixchannel`) or a Windows
named pipe checked by impersonating the client (`agent.link.winpipe`). This module is the part both share.

**Frames.** Each message is a 4-byte big-endian length and that many bytes of UTF-8 JSON (at most
`MAX_FRAME`). A request is `{"method", "path", "body", "credential"}`, with the local API's methods and
paths (`agent.localapi.api`); an answer is `{"status", "body"}`, the body being what the local API would
answer.

**Caller and credential.** The transport hands `ChannelServer.handle` a `Caller`: the OS account (`uid:1000`
or a Windows SID) and its login session (Linux audit session id, Windows session id; None when the OS has
none). `POST hello` gives the caller a credential bound to that account and session; every other request
must carry it, and one presented by another account or session is refused (401 `wrong_caller`), as is an
unknown one after a service restart (401 `credential_unknown`: the tray says hello again).

**The owner's proof stays in its session.** The owner's routes (billing, removing another terminal, choosing
the terminals that keep seats, adding this terminal to the subscription, renaming another terminal) are
refused here, locally, with 403 `owner_proof_required` unless *this credential* proved the owner's e-mail
(`POST /v1/owner`) within `OWNER_GRANT_S`. The server remembers a proof per machine key, so without this
a waiter in a second session could spend the owner's money within the 15 minutes after the owner proved
it in the first.
"""

from __future__ import annotations

import json
import logging
import secrets
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from agent import errors
from agent.localapi.httpd import ApiError, error_for

log = logging.getLogger(__name__)

MAX_FRAME = 1 << 20
# The server's own proof lasts 15 minutes; the local grant never outlives it.
OWNER_GRANT_S = 15 * 60.0
# Enough for every session of a shared till; the oldest credential goes first.
MAX_CREDENTIALS = 64
HELLO = ("POST", "hello")
OWNER = ("POST", "/v1/owner")
# Routes only the owner may use from an activated PC (server/authority.py).
OWNER_ROUTES = frozenset(
    {
        ("POST", "/v1/portal"),
        ("POST", "/v1/terminals/remove"),
        ("POST", "/v1/terminals/keep"),
        ("POST", "/v1/terminals/add"),
    }
)
# Removing or renaming a terminal with the owner's e-mail and code in the body is proven by that code
# itself, at the server; no other owner route reads a code from its body.
CODE_PROVEN = frozenset({("POST", "/v1/terminals/remove"), ("POST", "/v1/terminals/rename")})
# Renaming is the owner's only when it names another terminal than this PC.
RENAME = ("POST", "/v1/terminals/rename")
_LENGTH = struct.Struct(">I")


@dataclass(frozen=True)
class Caller:
    """Who is on the other end, as the OS says: `user` ("uid:1000", a SID), `session`, `pid`."""

    user: str
    session: str | None = None
    pid: int | None = None


class Stream(Protocol):
    """A connected byte stream (a socket, a pipe handle wrapped by its transport)."""

    def recv_exact(self, n: int) -> bytes:
        """Exactly `n` bytes, or b"" at a clean end of stream; raises OSError."""
        ...

    def send_all(self, data: bytes) -> None:
        """Write all of `data`; raises OSError."""
        ...

    def close(self) -> None:
        """Close the stream (never raises)."""
        ...


class ChannelError(errors.LocalApiError):
    """A malformed frame on the channel."""


def encode(obj: Mapping[str, Any]) -> bytes:
    """One frame: the length, then the compact JSON."""
    data = json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    if len(data) > MAX_FRAME:
        raise ChannelError("the message is too large for the channel", code="payload_too_large")
    return _LENGTH.pack(len(data)) + data


def read_frame(stream: Stream) -> dict[str, Any] | None:
    """The next frame's JSON object, or None at the end of the stream. Raises `ChannelError`, OSError."""
    head = stream.recv_exact(_LENGTH.size)
    if not head:
        return None
    (size,) = _LENGTH.unpack(head)
    if size > MAX_FRAME:
        raise ChannelError("a frame over the channel's limit", code="payload_too_large")
    data = stream.recv_exact(size) if size else b""
    if len(data) != size:
        raise ChannelError("the channel closed inside a frame", code="bad_request")
    try:
        obj = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ChannelError("a frame that is not JSON", code="bad_json") from exc
    if not isinstance(obj, dict):
        raise ChannelError("a frame that is not a JSON object", code="bad_json")
    return obj


class Route(Protocol):
    """What the channel needs of a local API route (`agent.localapi.api.Route`)."""

    @property
    def handler(self) -> Callable[[dict[str, Any]], tuple[int, Any]]:
        """`handler(body) -> (status, answer)`."""
        ...


@dataclass
class _Credential:
    user: str
    session: str | None
    owner_until: float = 0.0


class ChannelServer:
    """Answers the channel's requests with the local API's routes, for callers the OS identified.

    `routes` is `LocalApi.routes` (so both doors validate and answer alike); `monotonic` is injectable
    for the owner grant's expiry.
    """

    def __init__(
        self,
        routes: Mapping[tuple[str, str], Route],
        *,
        version: str = "",
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._routes = routes
        self._version = version
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._credentials: OrderedDict[str, _Credential] = OrderedDict()

    def serve(self, stream: Stream, caller: Caller) -> None:
        """Answer frames on one connection until it ends (or sends garbage, which ends it)."""
        while True:
            try:
                request = read_frame(stream)
            except ChannelError as exc:
                stream.send_all(encode(_error(400, exc.code, exc.message)))
                return
            if request is None:
                return
            stream.send_all(encode(self.handle(request, caller)))

    def handle(self, request: Mapping[str, Any], caller: Caller) -> dict[str, Any]:
        """The answer to one request from `caller`: `{"status", "body"}`."""
        method, path = request.get("method"), request.get("path")
        body = request.get("body") or {}
        if not isinstance(method, str) or not isinstance(path, str) or not isinstance(body, dict):
            return _error(400, "bad_request", "A request needs a method, a path and an object body.")
        if (method, path) == HELLO:
            return {"status": 200, "body": self._hello(caller)}
        try:
            credential = self._check(request.get("credential"), caller)
            route = self._routes.get((method, path))
            if route is None:
                raise ApiError(404, "not_found", "No such route.")
            proven_by_code = (method, path) in CODE_PROVEN and bool(body.get("email") and body.get("code"))
            if self._owners_only(method, path, body) and not proven_by_code and not self._owner(credential):
                raise ApiError(
                    403,
                    "owner_proof_required",
                    "Only the owner can do this: prove the owner's e-mail in this window first.",
                )
            status, answer = route.handler(body)
            if (method, path) == OWNER:
                self._grant_owner(credential)
        except Exception as exc:
            err = error_for(exc)
            if err.code == "internal":
                log.exception("channel request %s %s failed", method, path)
            return _error(err.status, err.code, err.message, err.extra)
        if isinstance(answer, bytes):
            answer = json.loads(answer)
        return {"status": status, "body": answer}

    def _hello(self, caller: Caller) -> dict[str, Any]:
        credential = secrets.token_urlsafe(32)
        with self._lock:
            self._credentials[credential] = _Credential(caller.user, caller.session)
            while len(self._credentials) > MAX_CREDENTIALS:
                self._credentials.popitem(last=False)
        log.info("tray connected: %s, session %s, pid %s", caller.user, caller.session, caller.pid)
        return {
            "credential": credential,
            "user": caller.user,
            "session": caller.session,
            "version": self._version,
        }

    def _check(self, credential: Any, caller: Caller) -> str:
        if not isinstance(credential, str):
            raise ApiError(401, "credential_required", "Say hello first.")
        with self._lock:
            held = self._credentials.get(credential)
        if held is None:
            raise ApiError(401, "credential_unknown", "The service does not know this credential; say hello.")
        if (held.user, held.session) != (caller.user, caller.session):
            log.warning(
                "refused a credential of %s (session %s) presented by %s (session %s, pid %s)",
                held.user,
                held.session,
                caller.user,
                caller.session,
                caller.pid,
            )
            raise ApiError(401, "wrong_caller", "This credential belongs to another user or session.")
        return credential

    def _owners_only(self, method: str, path: str, body: Mapping[str, Any]) -> bool:
        if (method, path) in OWNER_ROUTES:
            return True
        if (method, path) != RENAME or not body.get("machine_id"):
            return False
        return body.get("machine_id") != self._own_machine_id()

    def _own_machine_id(self) -> str | None:
        route = self._routes.get(("GET", "/v1/license"))
        if route is None:
            return None
        _status, answer = route.handler({})
        data = json.loads(answer) if isinstance(answer, bytes) else answer
        return data.get("machine_id") if isinstance(data, dict) else None

    def _owner(self, credential: str) -> bool:
        with self._lock:
            held = self._credentials.get(credential)
            return held is not None and held.owner_until > self._monotonic()

    def _grant_owner(self, credential: str) -> None:
        with self._lock:
            held = self._credentials.get(credential)
            if held is not None:
                held.owner_until = self._monotonic() + OWNER_GRANT_S


def _error(status: int, code: str, message: str, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    return {"status": status, "body": {"error": code, "message": message, **dict(extra or {})}}


class Hosted(Protocol):
    """A listening channel transport."""

    def stop(self) -> None:
        """Stop listening and close every connection."""
        ...


def host(settings: Any, routes: Mapping[tuple[str, str], Route], version: str = "") -> Hosted | None:
    """Serve the tray's channel beside the local API: the named pipe on Windows, else the socket in
    `settings.runtime_dir`. None (logged) when it cannot be hosted: the POS's answer must not depend on it."""
    import sys

    server = ChannelServer(routes, version=version)
    try:
        if sys.platform == "win32":
            from agent.link import winpipe

            return winpipe.PipeChannel(server).start()
        from agent.link import unixchannel

        channel = unixchannel.UnixChannel(settings.runtime_dir or unixchannel.DEFAULT_RUNTIME_DIR, server)
        log.info("tray channel listening on %s", channel.path)
        return channel.start()
    except (OSError, errors.Error) as exc:
        log.error("cannot serve the tray's channel: %s", getattr(exc, "message", exc))
        return None
