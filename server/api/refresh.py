"""`POST /v1/refresh` and `POST /v1/deactivate`: requests signed by a registered machine key.

Refresh is the hot path (every terminal, every 6 hours): one joined read, one nonce insert, one
`last_seen_at` update, then the token is signed outside the transaction so the SQLite write lock is
held as briefly as possible.
"""

from __future__ import annotations

import itertools
import re

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from agent.tokens import encode_token
from server import licensing, nonces
from server.api.deps import Services, check_and_remember, raw_body, services, verify_machine_signature
from server.api.schemas import EmptyRequest, OkAnswer, RefreshRequest, TokenAnswer
from server.errors import BadSignature, UnknownMachine
from server.models import Customer, License, Machine, Subscription

router = APIRouter(prefix="/v1", tags=["machines"])

PURGE_EVERY = 1000
_purge_counter = itertools.count(1)


_MACHINE_ID = re.compile(r"[A-Za-z0-9_]{1,40}")


def machine_id_header(request: Request) -> str:
    """The `X-POSPal-Machine` header, checked for shape; `BadSignature` if absent, 401 if malformed."""
    machine_id = request.headers.get("x-pospal-machine", "")
    if not machine_id:
        raise BadSignature("The request is not signed by a registered machine.")
    if not _MACHINE_ID.fullmatch(machine_id):
        raise UnknownMachine()
    return machine_id


def signed_machine(
    session: Session, request: Request, raw: bytes, svc: Services
) -> tuple[Machine, License | None, Subscription | None, Customer | None]:
    """Load the machine named in `X-POSPal-Machine`, check its signature and nonce; 401/409 otherwise."""
    machine_id = machine_id_header(request)
    bundle = licensing.load_machine(session, machine_id)
    if bundle is None:
        raise UnknownMachine()
    signed = verify_machine_signature(bundle[0].public_key, request, raw)
    check_and_remember(session, signed, bundle[0].id, svc)
    return bundle


@router.post("/refresh", response_model=TokenAnswer)
def refresh(
    body: RefreshRequest,
    request: Request,
    raw: bytes = Depends(raw_body),
    svc: Services = Depends(services),
) -> JSONResponse:
    """Return a fresh token for this machine (a signed revocation if it was deactivated or removed)."""
    machine_id = machine_id_header(request)
    now = svc.clock.now()
    # Not durable: losing the last moments of nonces and last-seen times in a database crash is harmless
    # (a replay inside that window would still need a valid signature and get the same token).
    with svc.db.begin(durable=False) as session:
        state = licensing.load_machine_state(session, machine_id)
        if state is None:
            raise UnknownMachine()
        machine = state.machine
        signed = verify_machine_signature(machine.public_key, request, raw)
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
    # A plain JSONResponse skips re-validating the answer against TokenAnswer (still its documented shape).
    return JSONResponse({"token": encode_token(svc.keys.private_key(kid), kid, claims), "keyset": keyset})


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
