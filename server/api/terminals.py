"""`POST /v1/terminals`, `/v1/terminals/remove` and `/v1/portal`: owner actions on a license.

Each accepts either a request signed by a machine of the license, or `{email, code}` proving the
owner's email. An email address alone is never enough (the old system's portal links were).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Request
from sqlalchemy import select
from sqlalchemy.orm import Session

from server import codes, licensing
from server.api.deps import Services, has_machine_headers, limit_code_guesses, raw_body, services
from server.api.refresh import signed_machine
from server.api.schemas import (
    OkAnswer,
    PortalAnswer,
    PortalRequest,
    ProofRequest,
    RemoveTerminalRequest,
    Terminal,
    TerminalsAnswer,
)
from server.errors import ApiError, BadCode, InvalidRequest, NoSubscription, NotFound
from server.models import Customer, License, Machine

router = APIRouter(prefix="/v1", tags=["terminals"])


@dataclass
class Owner:
    """Who is asking: the customer, their license (if any), and the asking machine (if signed)."""

    customer: Customer
    license: License | None
    machine_id: str | None


def _owner(
    session: Session,
    request: Request,
    raw: bytes,
    body: ProofRequest,
    svc: Services,
    code_id: int | None,
) -> Owner:
    now = svc.clock.now()
    if has_machine_headers(request.headers):
        machine, license_, _sub, customer = signed_machine(session, request, raw, svc)
        if license_ is None or customer is None or machine.deactivated_at is not None:
            raise NoSubscription("This computer is not activated on a subscription.")
        return Owner(customer, license_, machine.id)
    if code_id is None or not body.email:
        raise BadCode("Sign the request from an activated computer, or give the email and its code.")
    customer = session.scalars(
        select(Customer).where(Customer.email == codes.normalize_email(body.email))
    ).first()
    if customer is None:
        raise NoSubscription()
    license_ = (
        licensing.live_license_for_customer(session, customer.id, now)
        or session.scalars(
            select(License)
            .where(License.customer_id == customer.id, License.status == "active")
            .order_by(License.created_at.desc())
        ).first()
    )
    return Owner(customer, license_, None)


def _prove(
    request: Request, body: ProofRequest, svc: Services, purposes: tuple[str, ...], allow_used: bool
) -> int | None:
    if has_machine_headers(request.headers):
        return None
    if not body.email or not body.code:
        raise BadCode("Sign the request from an activated computer, or give the email and its code.")
    return codes.prove_email(
        svc.db,
        email=body.email,
        code=body.code,
        purposes=purposes,
        now=svc.clock.now(),
        secret=svc.secret,
        allow_used=allow_used,
    )


@router.post("/terminals", response_model=TerminalsAnswer, dependencies=[Depends(limit_code_guesses)])
def list_terminals(
    body: ProofRequest,
    request: Request,
    raw: bytes = Depends(raw_body),
    svc: Services = Depends(services),
) -> TerminalsAnswer:
    """The license's active terminals, oldest first."""
    code_id = _prove(request, body, svc, codes.TERMINAL_PURPOSES, allow_used=True)
    with svc.db.transaction() as session:
        owner = _owner(session, request, raw, body, svc, code_id)
        if owner.license is None:
            raise NoSubscription()
        return TerminalsAnswer(
            terminals=[
                Terminal(
                    machine_id=m.id,
                    terminal_name=m.terminal_name,
                    activated_at=m.activated_at,
                    last_seen=m.last_seen_at,
                    this_machine=m.id == owner.machine_id,
                )
                for m in licensing.active_machines(session, owner.license.id)
            ]
        )


@router.post("/terminals/remove", response_model=OkAnswer, dependencies=[Depends(limit_code_guesses)])
def remove_terminal(
    body: RemoveTerminalRequest,
    request: Request,
    raw: bytes = Depends(raw_body),
    svc: Services = Depends(services),
) -> OkAnswer:
    """Free one terminal's seat; that PC's next refresh gets a signed `revoked` token."""
    code_id = _prove(request, body, svc, codes.TERMINAL_PURPOSES, allow_used=True)
    now = svc.clock.now()
    with svc.db.transaction() as session:
        owner = _owner(session, request, raw, body, svc, code_id)
        machine = session.get(Machine, body.machine_id)
        if owner.license is None or machine is None or machine.license_id != owner.license.id:
            raise NotFound("No terminal with this id on your subscription.")
        if machine.deactivated_at is None:
            actor = f"machine:{owner.machine_id}" if owner.machine_id else f"owner:{owner.customer.id}"
            licensing.release_machine(
                session, machine, owner.customer, now, actor=actor, action="machine.removed"
            )
    return OkAnswer()


@router.post("/portal", response_model=PortalAnswer, dependencies=[Depends(limit_code_guesses)])
def portal(
    body: PortalRequest,
    request: Request,
    raw: bytes = Depends(raw_body),
    svc: Services = Depends(services),
) -> PortalAnswer:
    """A one-time billing portal URL for the proven customer."""
    return_url = _return_url(body.return_url, svc)
    code_id = _prove(request, body, svc, ("portal",), allow_used=False)
    with svc.db.transaction() as session:
        owner = _owner(session, request, raw, body, svc, code_id)
        if code_id is not None:
            codes.consume(session, code_id, svc.clock.now())
        customer_ref = owner.customer.stripe_customer_id
    if not customer_ref:
        raise NoSubscription()
    if svc.billing is None:
        raise ApiError("Billing is not available on this server.", status=503, code="billing_unavailable")
    return PortalAnswer(url=svc.billing.create_portal_session(customer_ref, return_url))


def _return_url(value: str | None, svc: Services) -> str:
    """Only this server or a configured origin may be a return target (no open redirect)."""
    default = f"{svc.settings.public_url}/portal/return"
    if not value:
        return default
    parts = urlsplit(value)
    origin = f"{parts.scheme}://{parts.netloc}"
    allowed = {svc.settings.public_url.rstrip("/"), *svc.settings.allowed_origins}
    if parts.scheme not in ("http", "https") or origin not in {
        urlsplit(a)._replace(path="").geturl() for a in allowed
    }:
        raise InvalidRequest("return_url must point at this server or an allowed origin.")
    return value
