"""`POST /v1/refresh` and `POST /v1/deactivate`: requests signed by a registered machine key.

Refresh is the hot path (every terminal, every 6 hours): one joined read, the signature check, one
nonce insert and one `last_seen_at` update, then the token is signed outside the transaction.
`server.api.refresh_fast.RefreshFastPath` answers well-formed refreshes before FastAPI's routing, with
the same `check_refresh` / `token_parts` / `signed_answer` steps and the writes batched; the route
here stays for the OpenAPI schema, for requests the fast path hands back, and for the rare refresh
that re-binds a fingerprint (it writes an audit row).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import nacl.bindings
import nacl.exceptions
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from sqlalchemy import Connection
from sqlalchemy.orm import Session

from pospal_protocol.errors import KeyInvalid, RequestSignatureInvalid
from pospal_protocol.signatures import SignedRequest, verify_request_signature
from pospal_protocol.tokens import encode_token
from pospal_protocol.trust import decode_public_key
from server import binding, fingerprints, licensing, machines, nonces, seats
from server.api.deps import Services, check_and_remember, raw_body, services, verify_machine_signature
from server.api.schemas import EmptyRequest, OkAnswer, RefreshRequest, TokenAnswer
from server.db import session_of
from server.errors import BadSignature, UnknownMachine
from server.models import Customer, License, Machine, Subscription
from server.refresh_writes import SeenWrite

router = APIRouter(prefix="/v1", tags=["machines"])

PURGE_EVERY = 1000
_purge_counter = itertools.count(1)


# The app's answer to a value the database cannot store (server.app's DataError handler says the same).
UNSTORABLE = {"error": "invalid_request", "message": "The request holds a value that cannot be stored."}

_MACHINE_ID = re.compile(r"[A-Za-z0-9_]{1,40}")

# Machine public keys decoded before, by their stored text: decoding costs about as much as the rest of
# the request's checks together. The text is read from the database on every refresh, so a machine
# whose key changed is checked against its new key; the cache only skips re-decoding the same bytes.
_PUBLIC_KEYS: dict[str, Ed25519PublicKey] = {}
MAX_PUBLIC_KEYS = 50_000


class SodiumVerifiedKey(Ed25519PublicKey):
    """A machine's Ed25519 public key whose `verify` runs on libsodium (PyNaCl) instead of OpenSSL.

    The signature check is most of a refresh's own CPU, and libsodium's Ed25519 verification takes about
    half of OpenSSL's time here. It is the same RFC 8032 check, and a stricter one: libsodium also refuses
    small-order keys and R points, which no agent's generated key is. Decoding (`decode_public_key`) and
    every other method stay OpenSSL's, on the wrapped key.
    """

    __slots__ = ("_key", "_raw")

    def __init__(self, key: Ed25519PublicKey) -> None:
        self._key = key
        self._raw = key.public_bytes_raw()

    def verify(self, signature: Any, data: Any) -> None:
        """Raise `InvalidSignature` unless `signature` (64 bytes) signs `data` under this key."""
        signature, data = bytes(signature), bytes(data)
        # libsodium takes signature and message as one buffer: a signature of another length would
        # shift the split, so it is refused here, as OpenSSL refuses it.
        if len(signature) != nacl.bindings.crypto_sign_BYTES:
            raise InvalidSignature()
        try:
            nacl.bindings.crypto_sign_open(signature + data, self._raw)
        except nacl.exceptions.BadSignatureError:
            raise InvalidSignature() from None

    def public_bytes(self, encoding: Any, format: Any) -> bytes:  # noqa: A002 - the base class's name
        """The wrapped key's bytes."""
        return self._key.public_bytes(encoding, format)

    def public_bytes_raw(self) -> bytes:
        """The raw 32 bytes of the key."""
        return self._raw

    def __eq__(self, other: object) -> bool:
        if isinstance(other, SodiumVerifiedKey):
            return self._raw == other._raw
        return isinstance(other, Ed25519PublicKey) and other.public_bytes_raw() == self._raw

    def __hash__(self) -> int:
        return hash(self._raw)

    def __copy__(self) -> SodiumVerifiedKey:
        return self

    def __deepcopy__(self, memo: dict) -> SodiumVerifiedKey:
        return self


def public_key_of(text: str) -> Ed25519PublicKey:
    """The Ed25519 key a machine row stores as `text` (decoded once per process); `KeyInvalid` if bad.

    Checked with libsodium (`SodiumVerifiedKey`).
    """
    key = _PUBLIC_KEYS.get(text)
    if key is None:
        key = SodiumVerifiedKey(decode_public_key(text))
        if len(_PUBLIC_KEYS) >= MAX_PUBLIC_KEYS:
            _PUBLIC_KEYS.clear()  # a bound on memory: keys are decoded again as machines refresh
        _PUBLIC_KEYS[text] = key
    return key


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


@dataclass
class CheckedRefresh:
    """A refresh whose machine, signature and timestamp check out; nothing written yet."""

    state: machines.MachineState
    signed: SignedRequest
    now: datetime
    # The presented fingerprint when it conflicts with the binding (server.binding decides), else None.
    rebind: dict[str, Any] | None
    # The binding with a replaced weak part (a new NIC's MAC), stored as is; else None.
    heal: dict[str, Any] | None = None

    def write(self) -> SeenWrite:
        """The refresh's nonce and last-seen write (batched by the fast path)."""
        nonce, timestamp = self.signed.nonce, self.signed.timestamp
        return SeenWrite(nonce, self.state.machine.id, nonces.expiry(timestamp, self.now), self.now)


def check_refresh(
    connection: Session | Connection,
    body: RefreshRequest,
    method: str,
    path: str,
    headers: Mapping[str, str],
    raw: bytes,
    now: datetime,
) -> CheckedRefresh:
    """Load the machine, then `check_state`. Reads only; raises `ApiError`s for the caller to answer."""
    state = machines.load_machine_state(connection, machine_id_header(headers))
    if state is None:
        raise UnknownMachine()
    return check_state(state, body, method, path, headers, raw, now)


def check_state(
    state: machines.MachineState,
    body: RefreshRequest,
    method: str,
    path: str,
    headers: Mapping[str, str],
    raw: bytes,
    now: datetime,
) -> CheckedRefresh:
    """Check a loaded machine's signature and timestamp, and see whether its binding needs healing.

    The nonce is not stored yet. Raises `ApiError`s for the caller to answer.
    """
    machine = state.machine
    try:
        signed = verify_request_signature(public_key_of(machine.public_key), method, path, headers, raw)
    except (RequestSignatureInvalid, KeyInvalid):
        raise BadSignature() from None
    nonces.check_timestamp(signed.timestamp, now)
    presented = dict(body.fingerprint)
    fingerprints.check_known(presented)
    # A fingerprint that conflicts with the binding goes to its rules (server.binding): re-bind, keep, clone.
    rebind = presented if presented and binding.conflicts(machine.fingerprint, presented) else None
    heal = binding.healed(machine.fingerprint or {}, presented) if presented and rebind is None else None
    return CheckedRefresh(state, signed, now, rebind, heal)


def token_parts(
    svc: Services,
    connection: Session | Connection,
    state: machines.MachineState,
    now: datetime,
    known_kids: Iterable[str],
) -> tuple[str, dict[str, Any], str | None]:
    """(kid, claims, key-set document) of the token answering for `state`; reads only, signs nothing."""
    claims = state.claims(now)
    kid = svc.keys.current_kid(connection)
    return kid, claims, svc.keys.keyset_for(connection, known_kids, now)


def signed_answer(svc: Services, parts: tuple[str, dict[str, Any], str | None], nonce: str) -> dict[str, Any]:
    """The refresh answer: the token signed with key `kid`, and the key-set document if any.

    The token carries the signed request's `nonce` as its `rn` claim: it answers this request only, so
    an old token replayed to the agent (by a fake server, say) is refused.
    """
    kid, claims, keyset = parts
    claims = {**claims, "rn": nonce}
    return {"token": encode_token(svc.keys.private_key(kid), kid, claims), "keyset": keyset}


def refresh_answer(
    svc: Services, body: RefreshRequest, method: str, path: str, headers: Mapping[str, str], raw: bytes
) -> dict[str, Any]:
    """The whole refresh in one transaction: check, store the nonce, heal the binding, then sign.

    The FastAPI route's way, and the fast path's for the rare refresh that re-binds a fingerprint.
    """
    now = svc.clock.now()
    # Not durable: losing the last moments of nonces and last-seen times in a database crash is harmless
    # (a replay inside that window would still need a valid signature and get the same token).
    with svc.db.begin(durable=False) as session:
        checked = check_refresh(session, body, method, path, headers, raw, now)
        machine = checked.state.machine
        nonces.remember(session, checked.signed.nonce, machine.id, checked.signed.timestamp, now)
        verdict = binding.KEEP
        if checked.heal is not None:
            verdict = binding.Verdict(bind=checked.heal)
            machine.fingerprint = checked.heal
            licensing.record_audit(
                session,
                actor=f"machine:{machine.id}",
                action="machine.fingerprint_healed",
                license_id=machine.license_id,
                machine_id=machine.id,
                detail={"components": sorted(fingerprints.WEAK & set(checked.heal))},
                at=now,
            )
        if checked.rebind is not None:
            with session_of(session) as orm:
                verdict = binding.observe(orm, machine, checked.rebind, now)
                orm.flush()
            if verdict.bind is not None:
                machine.fingerprint = verdict.bind
        machines.touch_machine(session, machine.id, now, verdict.bind)
        if machine.seat_state is not None:
            idle = seats.idle_after(svc.settings.seat_idle_days)
            machine.seat_state = seats.reseat(session, machine.id, now, idle)
        parts = token_parts(svc, session, checked.state, now, body.known_kids)
        if verdict.clone:  # bound to exactly what differs, so that computer's agent says machine_changed
            parts = (parts[0], {**parts[1], "fp": verdict.token_fp}, parts[2])
    if next(_purge_counter) % PURGE_EVERY == 0:
        with svc.db.transaction() as session:
            nonces.purge_expired(session, now)
    return signed_answer(svc, parts, checked.signed.nonce)


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
        # The till's own signed deactivation is its proof: a license file it held no longer holds a seat.
        machine.offline_until = None
        if machine.deactivated_at is None:
            licensing.release_machine(
                session, machine, customer, now, actor=f"machine:{machine.id}", action="machine.deactivated"
            )
    return OkAnswer()
