"""What route handlers share: the app's services, the raw body, client address, machine signatures.

`Services` is built once per app by `server.app.create_app` and stored on `app.state.services`.
Handlers reach it through `services(request)`, so tests can build an app with a fake clock and sandbox
billing and nothing reads global state.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from sqlalchemy import Connection
from sqlalchemy.orm import Session

from pospal_protocol.clock import Clock
from pospal_protocol.errors import KeyInvalid, RequestSignatureInvalid
from pospal_protocol.signatures import SignedRequest, verify_request_signature
from pospal_protocol.trust import decode_public_key
from server import nonces
from server.config import Settings
from server.db import Database
from server.errors import BadSignature, InvalidRequest
from server.ratelimit import RateLimiter, ip_bucket
from server.signing import SigningKeys


@dataclass
class Services:
    """Everything a handler may use: settings, database, clock, keys, rate limiter, billing, metrics."""

    settings: Settings
    db: Database
    clock: Clock
    keys: SigningKeys
    limiter: RateLimiter
    secret: bytes
    billing: Any = None
    metrics: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


async def services(request: Request) -> Services:
    """The services of the app serving this request (async: no thread hop just to read app state)."""
    return request.app.state.services


async def raw_body(request: Request) -> bytes:
    """The exact request body bytes (what a machine signature covers)."""
    return await request.body()


def client_ip(request: Request) -> str:
    """The client's address (uvicorn applies trusted proxy headers before we see it)."""
    return request.client.host if request.client else "unknown"


def limit_per_ip(request: Request, svc: Services, name: str, limit: int, window_s: float = 3600) -> None:
    """Count one request of kind `name` for the client's address (IPv6: its /64); 429 past `limit`."""
    svc.limiter.hit(
        f"{name}:ip:{ip_bucket(client_ip(request))}", limit, window_s, svc.clock.now().timestamp()
    )


CODE_GUESSES_PER_HOUR_PER_IP = 30


async def limit_code_guesses(request: Request) -> None:
    """Route dependency: a request that carries an emailed code counts against the address's guesses.

    Shared by every route that takes `{email, code}` (one budget per address across all of them), so a
    guesser cannot spread its tries over several routes.
    """
    try:
        body = json.loads(await request.body() or b"null")
    except (ValueError, UnicodeDecodeError):
        return  # the route answers the malformed body itself
    if isinstance(body, dict) and body.get("code"):
        limit_per_ip(request, request.app.state.services, "code-guess", CODE_GUESSES_PER_HOUR_PER_IP)


def verify_machine_signature(public_key: str, request: Request, body: bytes) -> SignedRequest:
    """Check a request's `X-POSPal-*` signature against `public_key`; `BadSignature` if it fails."""
    try:
        return verify_request_signature(public_key, request.method, request.url.path, request.headers, body)
    except (RequestSignatureInvalid, KeyInvalid):
        raise BadSignature() from None


def check_and_remember(
    session: Session | Connection, signed: SignedRequest, owner: str, svc: Services
) -> None:
    """Refuse a replayed nonce or a stale timestamp (409 `replay`), else store the nonce."""
    nonces.remember(session, signed.nonce, owner, signed.timestamp, svc.clock.now())


def public_key_owner(public_key: str) -> str:
    """A stable short id for a not-yet-registered machine key (nonce bookkeeping)."""
    return "pk_" + hashlib.sha256(public_key.encode()).hexdigest()[:24]


def parse_public_key(value: str) -> str:
    """Validate a base64url raw Ed25519 public key; return it unchanged or raise `InvalidRequest`."""
    try:
        decode_public_key(value)
    except KeyInvalid:
        raise InvalidRequest("machine_public_key is not an Ed25519 public key.") from None
    return value


def has_machine_headers(headers: Mapping[str, str]) -> bool:
    """True when the request claims to be signed by a registered machine."""
    return "x-pospal-machine" in headers
