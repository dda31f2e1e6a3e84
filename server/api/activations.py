"""`POST /v1/activations`: bind this machine to a customer's license, within the subscription's seats.

Proof is an emailed code or a completed checkout started by this same machine key. A machine already
bound to the license just gets a fresh token (activation is idempotent). Beyond the seats the answer
is 409 `seats_full` listing the active terminals, so the owner can remove one.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from sqlalchemy import select

from server import codes, fingerprints, licensing
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
    signed = verify_machine_signature(public_key, request, raw)
    fingerprints.check_complete(body.fingerprint)
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
        _lock_license(session, license_)
        machine = session.scalars(select(Machine).where(Machine.public_key == public_key)).first()
        already = machine is not None and machine.license_id == license_.id and machine.deactivated_at is None
        if not already:
            active = licensing.active_machines(session, license_.id)
            if len(active) >= _seats(session, license_, now):
                raise SeatsFull([licensing.terminal_summary(m) for m in active])
        if code_id is not None:
            codes.consume(session, code_id, now)
        if machine is None:
            machine = Machine(public_key=public_key, activated_at=now)
            session.add(machine)
        if not already:
            machine.activated_at = now
        machine.license_id = license_.id
        machine.deactivated_at = None
        machine.fingerprint = dict(body.fingerprint)
        machine.terminal_name = body.terminal_name or machine.terminal_name
        machine.last_seen_at = now
        session.flush()
        if not already:
            licensing.record_audit(
                session,
                actor=f"machine:{machine.id}",
                action="machine.activated",
                license_id=license_.id,
                machine_id=machine.id,
                detail={"terminal_name": machine.terminal_name, "via": "code" if code_id else "checkout"},
                at=now,
            )
            _notify(session, customer, machine, now)
        claims = licensing.claims_for_machine(session, machine, now)
        return ActivationAnswer(
            token=svc.keys.sign(session, claims),
            keyset=svc.keys.keyset_for(session, body.known_kids, now),
            machine_id=machine.id,
            license_id=license_.id,
        )


def _customer(session, body: ActivationRequest, public_key: str) -> Customer:
    customer = session.scalars(select(Customer).where(Customer.email == body.email)).first()
    if body.checkout_id and not body.code:
        checkout = session.get(Checkout, body.checkout_id)
        # The checkout proves the email only to the machine that started it.
        if checkout is None or checkout.machine_public_key != public_key:
            raise NotFound("No checkout with this id was started by this computer.")
        if checkout.status != "complete":
            raise ApiError("The checkout is not paid yet.", status=409, code="checkout_incomplete")
        if checkout.customer_id is not None:
            customer = session.get(Customer, checkout.customer_id)
    if customer is None:
        raise NoSubscription()
    return customer


def _seats(session, license_: License, now) -> int:
    subscription = (
        session.get(licensing.Subscription, license_.subscription_id) if license_.subscription_id else None
    )
    return int(licensing.subscription_state(license_, subscription, now).get("seats") or 0)


def _lock_license(session, license_: License) -> None:
    """Serialise activations of one license so two PCs cannot take the last seat at once.

    PostgreSQL: a row lock. SQLite: every transaction already holds the write lock (BEGIN IMMEDIATE).
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(License.id).where(License.id == license_.id).with_for_update())


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
