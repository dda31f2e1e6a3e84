"""`POST /v1/refresh` and `POST /v1/deactivate`: requests signed by a registered machine key.

Refresh is the hot path (every terminal, every 6 hours): one joined read, one nonce insert, one
`last_seen_at` update, then the token is signed outside the transaction so the SQLite write lock is
held as briefly as possible. `RefreshFastPath` answers well-formed refreshes before FastAPI's routing;
the route stays for the OpenAPI schema and for requests the fast path hands back.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from sqlalchemy.exc import DataError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers

from agent.errors import KeyInvalid, RequestSignatureInvalid
from agent.tokens import encode_token, verify_request_signature
from server import licensing, nonces
from server.api.deps import Services, check_and_remember, raw_body, services, verify_machine_signature
from server.api.schemas import EmptyRequest, OkAnswer, RefreshRequest, TokenAnswer
from server.errors import ApiError, BadSignature, UnknownMachine
from server.models import Customer, License, Machine, Subscription

router = APIRouter(prefix="/v1", tags=["machines"])

PURGE_EVERY = 1000
_purge_counter = itertools.count(1)


_MACHINE_ID = re.compile(r"[A-Za-z0-9_]{1,40}")


def machine_id_header(headers: Mapping[str, str]) -> str:
    """The `X-POSPal-Machine` header, checked for shape; `BadSignature` if absent, 401 if malformed."""
    machine_id = headers.get("x-pospal-machine", "")
    if not machine_id:
        raise BadSignature("The request is not signed by a registered machine.")
    if not _MACHINE_ID.fullmatch(machine_id):
        raise UnknownMachine()
    return machine_id


def signed_machine(
    session: Session, request: Request, raw: bytes, svc: Services
) -> tuple[Machine, License | None, Subscription | None, Customer | None]:
    """Load the machine named in `X-POSPal-Machine`, check its signature and nonce; 401/409 otherwise."""
    machine_id = machine_id_header(request.headers)
    bundle = licensing.load_machine(session, machine_id)
    if bundle is None:
        raise UnknownMachine()
    signed = verify_machine_signature(bundle[0].public_key, request, raw)
    check_and_remember(session, signed, bundle[0].id, svc)
    return bundle


def refresh_answer(
    svc: Services, body: RefreshRequest, method: str, path: str, headers: Mapping[str, str], raw: bytes
) -> dict[str, Any]:
    """The whole refresh: check the machine's signature and nonce, heal its binding, sign its token.

    Shared by the FastAPI route and `RefreshFastPath`; raises `ApiError`s for the caller to answer.
    """
    machine_id = machine_id_header(headers)
    now = svc.clock.now()
    # Not durable: losing the last moments of nonces and last-seen times in a database crash is harmless
    # (a replay inside that window would still need a valid signature and get the same token).
    with svc.db.begin(durable=False) as session:
        state = licensing.load_machine_state(session, machine_id)
        if state is None:
            raise UnknownMachine()
        machine = state.machine
        try:
            signed = verify_request_signature(machine.public_key, method, path, headers, raw)
        except (RequestSignatureInvalid, KeyInvalid):
            raise BadSignature() from None
        check_and_remember(session, signed, machine.id, svc)
        presented = dict(body.fingerprint)
        rebind = None
        # One replaced part still matches the majority; re-binding to the new set heals the token.
        if (
            presented
            and presented != machine.fingerprint
            and licensing.fingerprint_matches(machine.fingerprint, presented)
        ):
            bound = machine.fingerprint
            changed = sorted(
                name for name in set(bound) | set(presented) if bound.get(name) != presented.get(name)
            )
            machine.fingerprint = rebind = presented
            licensing.record_audit(
                session,
                actor=f"machine:{machine.id}",
                action="machine.fingerprint_rebound",
                license_id=machine.license_id,
                machine_id=machine.id,
                detail={"components": changed},
                at=now,
            )
        licensing.touch_machine(session, machine.id, now, rebind)
        claims = state.claims(now)
        kid = svc.keys.current_kid(session)
        keyset = svc.keys.keyset_for(session, body.known_kids, now)
    if next(_purge_counter) % PURGE_EVERY == 0:
        with svc.db.transaction() as session:
            nonces.purge_expired(session, now)
    return {"token": encode_token(svc.keys.private_key(kid), kid, claims), "keyset": keyset}


@router.post("/refresh", response_model=TokenAnswer)
def refresh(
    body: RefreshRequest,
    request: Request,
    raw: bytes = Depends(raw_body),
    svc: Services = Depends(services),
) -> JSONResponse:
    """Return a fresh token for this machine (a signed revocation if it was deactivated or removed)."""
    # A plain JSONResponse skips re-validating the answer against TokenAnswer (still its documented shape).
    return JSONResponse(refresh_answer(svc, body, request.method, request.url.path, request.headers, raw))


class RefreshFastPath:
    """ASGI middleware answering well-formed `POST /v1/refresh` requests without FastAPI's routing.

    Refresh is most of the server's traffic. Routing, dependency solving, the hop to a worker thread
    and back, and the exception middleware cost several times the refresh's own work, so this answers
    it directly with `refresh_answer`, on the event loop: the database work is a few short statements,
    and on SQLite each process runs one write transaction at a time anyway (`Database.begin`). When
    another thread of the process holds that turn, the refresh waits for it in a worker thread instead.
    Anything it does not fully understand (another content type, a body that fails validation) is
    replayed to the app unchanged, so FastAPI gives its usual answer; `ApiError`s and unstorable
    values get the same JSON answers as the app's exception handlers.
    """

    def __init__(self, app: Any, services: Services, route: Any) -> None:
        self.app = app
        self.services = services
        self.route = route

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        """Answer a refresh here, pass everything else on."""
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or scope["path"] != _REFRESH_PATH
            or not _is_json(scope["headers"])
        ):
            await self.app(scope, receive, send)
            return
        chunks = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        raw = b"".join(chunks)
        try:
            body = RefreshRequest.model_validate_json(raw)
        except ValidationError:
            await self.app(scope, _replay(raw, receive), send)
            return
        scope["route"] = self.route  # what the metrics middleware labels requests by
        headers = Headers(scope=scope)
        status, extra = 200, ()
        try:
            with self.services.db.writes_free() as free:
                if free:
                    answer = refresh_answer(self.services, body, "POST", _REFRESH_PATH, headers, raw)
            if not free:
                # Another thread of this process is writing: wait for it in a worker thread, not here.
                answer = await run_in_threadpool(
                    refresh_answer, self.services, body, "POST", _REFRESH_PATH, headers, raw
                )
        except ApiError as exc:
            status, answer = exc.status, exc.body()
            extra = tuple((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in exc.headers.items())
        except DataError:
            status, answer = 422, UNSTORABLE
        content = json.dumps(answer, ensure_ascii=False, separators=(",", ":")).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-length", str(len(content)).encode()),
                    (b"content-type", b"application/json"),
                    *extra,
                ],
            }
        )
        await send({"type": "http.response.body", "body": content})


_REFRESH_PATH = "/v1/refresh"
# The app's answer to a value the database cannot store (server.app's DataError handler says the same).
UNSTORABLE = {"error": "invalid_request", "message": "The request holds a value that cannot be stored."}


def _is_json(headers: list[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        if name == b"content-type":
            return value.split(b";", 1)[0].strip().lower() == b"application/json"
    return False


def _replay(raw: bytes, receive: Any) -> Any:
    """A `receive` that hands the already-read body over once, then defers to the real one."""
    sent = False

    async def replay() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": raw, "more_body": False}
        return await receive()

    return replay


@router.post("/deactivate", response_model=OkAnswer)
def deactivate(
    body: EmptyRequest,
    request: Request,
    raw: bytes = Depends(raw_body),
    svc: Services = Depends(services),
) -> OkAnswer:
    """Free this machine's seat; its next refresh gets a signed `revoked` token."""
    now = svc.clock.now()
    with svc.db.transaction() as session:
        machine, _license, _sub, customer = signed_machine(session, request, raw, svc)
        if machine.deactivated_at is None:
            licensing.release_machine(
                session, machine, customer, now, actor=f"machine:{machine.id}", action="machine.deactivated"
            )
    return OkAnswer()
