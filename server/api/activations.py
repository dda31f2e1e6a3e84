"""`POST /v1/activations`: bind this machine to a customer's license, within the subscription's seats.

Proof is an emailed code or a completed checkout started by this same machine key. A machine already
bound to the license just gets a fresh token (activation is idempotent). Beyond the seats the answer
is 409 `seats_full` listing the terminals holding the seats, so the owner can remove one; a terminal
unseen for `POSPAL_SEAT_IDLE_DAYS` gives its seat up first (server/seats.py).
"""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Depends, Request
from sqlalchemy import select
from sqlalchemy.orm import Session

from server import codes, fingerprints, licensing, seats
from server.api.deps import (
    Services,
    check_and_remember,
    limit_code_guesses,
    limit_per_ip,
    parse_public_key,
    public_key_owner,
    raw_body,
    services,
    verify_machine_signature,
)
from server.api.schemas import ActivationAnswer, ActivationRequest
from server.errors import ApiError, InvalidRequest, NoSubscription, NotFound, SeatsFull
from server.models import Checkout, Customer, License, Machine

router = APIRouter(prefix="/v1", tags=["activations"])

ACTIVATIONS_PER_HOUR_PER_IP = 60


@router.post("/activations", response_model=ActivationAnswer, dependencies=[Depends(limit_code_guesses)])
def activate(
    body: ActivationRequest,
    request: Request,
    raw: bytes = Depends(raw_body),
    svc: Services = Depends(services),
) -> ActivationAnswer:
    """Activate this machine on the customer's license and return its token."""
    public_key = parse_public_key(body.machine_public_key)
    fingerprints.check_complete(body.fingerprint)
    signed = verify_machine_signature(public_key, request, raw)
    now = svc.clock.now()
    limit_per_ip(request, svc, "activations", ACTIVATIONS_PER_HOUR_PER_IP)
    if not body.code and not body.checkout_id:
        raise InvalidRequest("Give the emailed code, or the id of the finished checkout.")
    code_id = None
    if body.code:
        code_id = codes.prove_email(
            svc.db, email=body.email, code=body.code, purposes=("activate",), now=now, secret=svc.secret
        )
    with svc.db.transaction() as session:
        check_and_remember(session, signed, public_key_owner(public_key), svc)
        customer = _customer(session, body, public_key)
        license_ = licensing.live_license_for_customer(session, customer.id, now)
        if license_ is None:
            raise NoSubscription()
        return bind_machine(
            session,
            svc,
            customer,
            license_,
            public_key,
            body,
            now,
            via="code" if code_id else "checkout",
            code_id=code_id,
            nonce=signed.nonce,
        )


def bind_machine(
    session,
    svc: Services,
    customer: Customer,
    license_: License,
    public_key: str,
    body: ActivationRequest,
    now,
    *,
    via: str,
    code_id: int | None = None,
    nonce: str | None = None,
    notify: bool = True,
) -> ActivationAnswer:
    """Bind the machine with `public_key` to `license_` if a seat is free (idle ones are freed first).

    Shared by activation and "add this terminal". `nonce` (the signed request's) goes in the token as
    its `rn` claim. Raises `SeatsFull` listing the terminals that hold
    the seats, so the owner can remove one. `notify=False`: the caller sends its own e-mail instead of
    `terminal_added` (the old POSPal's take-over).
    """
    seats.lock_license(session, license_.id)
    machine = session.scalars(select(Machine).where(Machine.public_key == public_key)).first()
    bound = machine is not None and machine.license_id == license_.id and machine.deactivated_at is None
    holding = bound and machine is not None and machine.seat_state is None
    if not holding:
        _require_free_seat(session, svc, license_, machine, now)
    if code_id is not None:
        codes.consume(session, code_id, now)
    machine = _bound_machine(session, machine, license_, public_key, body, now, rebind=not bound)
    if not holding:
        licensing.record_audit(
            session,
            actor=f"machine:{machine.id}",
            action="machine.activated",
            license_id=license_.id,
            machine_id=machine.id,
            detail={"terminal_name": machine.terminal_name, "via": via},
            at=now,
        )
    if not bound and notify:
        _notify(session, customer, machine, now)
    claims = licensing.claims_for_machine(session, machine, now)
    return ActivationAnswer(
        # `rn`: the token answers this signed request only (the agent refuses a replayed one).
        token=svc.keys.sign(session, {**claims, "rn": nonce} if nonce else claims),
        keyset=svc.keys.keyset_for(session, body.known_kids, now),
        machine_id=machine.id,
        license_id=license_.id,
    )


def _require_free_seat(
    session: Session, svc: Services, license_: License, machine: Machine | None, now: datetime
) -> None:
    """Raise `SeatsFull` (listing the holders) unless a seat is free for `machine` (idle ones free first)."""
    idle = seats.idle_after(svc.settings.seat_idle_days)
    others = [
        m for m in seats.free_seats(session, license_, now, idle) if machine is None or m.id != machine.id
    ]
    if len(others) >= (seats.seat_count(session, license_, now) or 0):
        raise SeatsFull([licensing.terminal_summary(m) for m in others])


def _bound_machine(
    session: Session,
    machine: Machine | None,
    license_: License,
    public_key: str,
    body: ActivationRequest,
    now: datetime,
    *,
    rebind: bool,
) -> Machine:
    """Create or update the machine row so it holds a seat of `license_` with this request's
    fingerprint and name; `rebind` (not bound to this license before) restarts its activation date."""
    if machine is None:
        machine = Machine(public_key=public_key, activated_at=now)
        session.add(machine)
    if rebind:
        machine.activated_at = now
    machine.license_id = license_.id
    machine.deactivated_at = None
    machine.seat_state = None
    machine.fingerprint = dict(body.fingerprint)
    machine.terminal_name = body.terminal_name or machine.terminal_name
    machine.last_seen_at = now
    session.flush()
    return machine


def _customer(session, body: ActivationRequest, public_key: str) -> Customer:
    customer = session.scalars(select(Customer).where(Customer.email == body.email)).first()
    if body.checkout_id and not body.code:
        checkout = session.get(Checkout, body.checkout_id)
        # The checkout proves the email only to the machine that started it.
        if checkout is None or checkout.machine_public_key != public_key:
            raise NotFound("No checkout with this id was started by this computer.")
        if checkout.status != "complete":
            raise ApiError("The checkout is not paid yet.", code="checkout_incomplete")
        if checkout.customer_id is not None:
            customer = session.get(Customer, checkout.customer_id)
    if customer is None:
        raise NoSubscription()
    return customer


def _notify(session, customer: Customer, machine: Machine, now) -> None:
    from server import outbox

    outbox.enqueue(
        session,
        customer.email,
        "terminal_added",
        customer.locale,
        {"terminal_name": machine.terminal_name or machine.id, "when": now.strftime("%Y-%m-%d %H:%M UTC")},
        f"terminal-added:{machine.id}:{int(now.timestamp())}",
        now=now,
    )
