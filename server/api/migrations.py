"""`POST /v1/migrations`: an old POSPal till takes its first terminal on the imported subscription.

The old app kept the owner's e-mail and the old server's `unlock_token` on the PC. That token is a
permanent bearer secret (made with `Math.random`, never rotated), so it buys exactly one thing, once:
this PC's first terminal on the subscription `pospal-server import-pospal1` brought over, with no
checkout. It is accepted

- only inside `POSPAL_MIGRATION_WINDOW` (403 `migration_closed` outside it, or when unset);
- once per customer: after that, 409 `migration_used` (later PCs prove the owner's e-mail with a code),
  except to the PC that took over, asking again with the same machine key while it still holds its
  terminal (its answer was lost): it gets its answer again, with no second e-mail;
- within per-address and per-e-mail limits that count every attempt, so a wrong token is counted
  against the address; a wrong e-mail or token is 401 `migration_refused` and changes nothing.

The owner gets `pospal1_takeover` in the language the till sent, naming the PC that took over.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from pydantic import Field, StringConstraints
from sqlalchemy import select

from server import fingerprints, licensing, outbox
from server.api.activations import bind_machine
from server.api.deps import (
    Services,
    check_and_remember,
    limit_per_ip,
    parse_public_key,
    public_key_owner,
    raw_body,
    services,
    verify_machine_signature,
)
from server.api.schemas import (
    ActivationAnswer,
    ActivationRequest,
    Email,
    Fingerprint,
    Kid,
    Locale,
    PublicKey,
    TerminalName,
    _Body,
)
from server.errors import ApiError, NoSubscription
from server.models import Customer, Machine, Pospal1Import
from server.pospal1 import token_hash

router = APIRouter(prefix="/v1", tags=["migrations"])

ATTEMPTS_PER_HOUR_PER_IP = 5
ATTEMPTS_PER_HOUR_PER_EMAIL = 10
UnlockToken = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


class MigrationRequest(_Body):
    """This PC's machine key and fingerprint, and what the old app kept: the e-mail and unlock token."""

    email: Email
    unlock_token: UnlockToken
    fingerprint: Fingerprint
    machine_public_key: PublicKey
    terminal_name: TerminalName | None = None
    known_kids: Annotated[list[Kid], Field(max_length=32)] = []
    locale: Locale | None = None


class MigrationClosed(ApiError):
    """The operator's migration window is not open."""

    code = "migration_closed"
    default_message = "Moving an old POSPal license is not open now. Activate with an e-mailed code."


class MigrationRefused(ApiError):
    """The e-mail and unlock token do not match an imported customer."""

    code = "migration_refused"
    default_message = (
        "This e-mail and the old POSPal unlock key do not match. Activate with an e-mailed code."
    )


class MigrationUsed(ApiError):
    """The old token has already moved one PC; the rest join with the owner's proof."""

    code = "migration_used"
    default_message = (
        "The old POSPal unlock key has already moved a computer to the new POSPal. "
        "Add this one with a code sent to the owner's e-mail."
    )


@router.post("/migrations", response_model=ActivationAnswer)
def migrate(
    body: MigrationRequest,
    request: Request,
    raw: bytes = Depends(raw_body),
    svc: Services = Depends(services),
) -> ActivationAnswer:
    """Exchange the old e-mail and unlock token for this PC's first terminal on the imported license."""
    public_key = parse_public_key(body.machine_public_key)
    fingerprints.check_complete(body.fingerprint)
    signed = verify_machine_signature(public_key, request, raw)
    now = svc.clock.now()
    window = svc.settings.migration_window
    if window is None or not window[0] <= now < window[1]:
        raise MigrationClosed()
    limit_per_ip(request, svc, "migrations", ATTEMPTS_PER_HOUR_PER_IP)
    svc.limiter.hit(f"migrations:email:{body.email}", ATTEMPTS_PER_HOUR_PER_EMAIL, 3600, now.timestamp())
    with svc.db.transaction() as session:
        check_and_remember(session, signed, public_key_owner(public_key), svc)
        customer = session.scalars(select(Customer).where(Customer.email == body.email)).first()
        imported = (
            session.scalars(
                select(Pospal1Import).where(Pospal1Import.customer_id == customer.id).with_for_update()
            ).first()
            if customer is not None
            else None
        )
        stored = imported.token_hash if imported is not None else None
        # Compared in constant time, and a hash is compared even without a customer: same work either way.
        matches = hmac.compare_digest(stored or "0" * 64, token_hash(body.unlock_token))
        if customer is None or imported is None or stored is None or not matches:
            raise MigrationRefused()
        # The PC that took over asking again (its answer was lost: a cut line, a server killed after the
        # commit) is the same machine key, still bound: it gets its answer again, nothing more.
        again = imported.used_at is not None and _still_bound(session, imported.used_machine_id, public_key)
        if imported.used_at is not None and not again:
            raise MigrationUsed()
        license_ = licensing.live_license_for_customer(session, customer.id, now)
        if license_ is None:
            raise NoSubscription()
        activation = ActivationRequest(
            email=body.email,
            fingerprint=body.fingerprint,
            machine_public_key=body.machine_public_key,
            terminal_name=body.terminal_name,
            known_kids=body.known_kids,
        )
        answer = bind_machine(
            session,
            svc,
            customer,
            license_,
            public_key,
            activation,
            now,
            via="pospal1",
            nonce=signed.nonce,
            notify=False,
        )
        if again:
            return answer
        imported.used_at = now
        imported.used_machine_id = answer.machine_id
        if body.locale:
            customer.locale = body.locale  # the old server never knew the owner's language; the till does
        outbox.enqueue(
            session,
            customer.email,
            "pospal1_takeover",
            customer.locale,
            {
                "terminal_name": body.terminal_name or answer.machine_id,
                "when": now.strftime("%Y-%m-%d %H:%M UTC"),
            },
            f"pospal1-takeover:{customer.id}",
            now=now,
        )
        return answer


def _still_bound(session, machine_id: str | None, public_key: str) -> bool:
    """Whether `machine_id` (the PC the old token moved) has `public_key` and still holds its terminal."""
    if machine_id is None:
        return False
    machine = session.get(Machine, machine_id)
    return (
        machine is not None
        and machine.public_key == public_key
        and machine.deactivated_at is None
        and machine.license_id is not None
    )
