"""Owner routes on a license: prove the owner, list, remove, keep and rename terminals, the billing portal.

Anyone at an activated terminal (a machine-signed request) may list the license's terminals. Whatever
frees a seat or reaches billing needs the owner (server/authority.py): the request carries
`{email, code}`, or it is signed by a machine on which the owner proved their email with
`POST /v1/owner` within the last 15 minutes. A machine signature alone gets 403 `owner_proof_required`;
an email alone gets 401. Removing the asking machine itself is its own deactivation and needs no proof.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Request
from sqlalchemy import select
from sqlalchemy.orm import Session

from server import authority, codes, fleet, licensing, seats
from server.api.deps import (
    Services,
    check_and_remember,
    has_machine_headers,
    limit_code_guesses,
    limit_per_ip,
    parse_public_key,
    public_key_owner,
    raw_body,
    services,
    verify_machine_signature,
)
from server.api.refresh import signed_machine
from server.api.schemas import (
    KeepTerminalsRequest,
    OwnerProofAnswer,
    OwnerProofRequest,
    PortalAnswer,
    PortalRequest,
    ProofRequest,
    RemoveAnswer,
    RemoveTerminalRequest,
    RenameTerminalRequest,
    Terminal,
    TerminalsAnswer,
)
from server.errors import ApiError, BadCode, BillingError, InvalidRequest, NoSubscription, NotFound
from server.models import Customer, License, LoginCode, Machine

router = APIRouter(prefix="/v1", tags=["terminals"])

OWNER_ROUTES_PER_HOUR_PER_IP = 120
# Listing (read-only) takes any of these codes, spent or not; removing and keeping take an unspent owner's
# code and spend it, and removing also an unspent activation code for the seat its activation needs
# (server/codes.py: one purpose, one use).
_TERMINAL_CODES = codes.TERMINAL_PURPOSES + authority.PROOF_PURPOSES
_REMOVE_CODES = (*authority.PROOF_PURPOSES, "activate")
_NO_PROOF = "Sign the request from an activated computer, or give the email and its code."


@dataclass
class Owner:
    """Who is asking: the customer, their license (if any), the asking machine (if signed), and
    whether the owner's authority is proven (a code with the request, or a remembered proof)."""

    customer: Customer
    license: License | None
    machine_id: str | None
    proven: bool

    def require_proof(self) -> None:
        """403 `owner_proof_required` unless the owner is proven."""
        if not self.proven:
            raise authority.OwnerProofRequired()

    @property
    def actor(self) -> str:
        """The audit actor."""
        return f"machine:{self.machine_id}" if self.machine_id else f"owner:{self.customer.id}"


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
        proven = authority.holds(session, customer.id, machine.public_key, now)
        return Owner(customer, license_, machine.id, proven)
    if code_id is None or not body.email:
        raise BadCode(_NO_PROOF)
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
    return Owner(customer, license_, None, True)


def _prove(
    request: Request, body: ProofRequest, svc: Services, purposes: tuple[str, ...], allow_used: bool
) -> int | None:
    limit_per_ip(request, svc, "owner", OWNER_ROUTES_PER_HOUR_PER_IP)
    if has_machine_headers(request.headers):
        return None
    if not body.email or not body.code:
        raise BadCode(_NO_PROOF)
    return codes.prove_email(
        svc.db,
        email=body.email,
        code=body.code,
        purposes=purposes,
        now=svc.clock.now(),
        secret=svc.secret,
        allow_used=allow_used,
    )


@router.post("/owner", response_model=OwnerProofAnswer, dependencies=[Depends(limit_code_guesses)])
def prove_owner(
    body: OwnerProofRequest,
    request: Request,
    raw: bytes = Depends(raw_body),
    svc: Services = Depends(services),
) -> OwnerProofAnswer:
    """Prove the owner's email on this machine; owner actions from it are allowed for 15 minutes.

    Signed by a registered machine (`X-POSPal-Machine`), or by the key in `machine_public_key` for a
    PC that is not activated yet (buying, adding itself). The code is spent.
    """
    limit_per_ip(request, svc, "owner", OWNER_ROUTES_PER_HOUR_PER_IP)
    public_key = None
    if not has_machine_headers(request.headers):
        if not body.machine_public_key:
            raise InvalidRequest("Sign the request, with machine_public_key when not activated.")
        public_key = parse_public_key(body.machine_public_key)
        signed = verify_machine_signature(public_key, request, raw)
    now = svc.clock.now()
    code_id = codes.prove_email(
        svc.db,
        email=body.email,
        code=body.code,
        purposes=authority.PROOF_PURPOSES,
        now=now,
        secret=svc.secret,
    )
    with svc.db.transaction() as session:
        if public_key is None:
            machine = signed_machine(session, request, raw, svc)[0]
            public_key = machine.public_key
        else:
            check_and_remember(session, signed, public_key_owner(public_key), svc)
        customer = session.scalars(select(Customer).where(Customer.email == body.email)).first()
        if customer is None:
            raise BadCode()
        codes.consume(session, code_id, now)
        expires = authority.remember(session, customer.id, public_key, now)
        licensing.record_audit(
            session,
            actor=f"key:{public_key_owner(public_key)}",
            action="owner.proven",
            detail={"customer_id": customer.id},
            at=now,
        )
    return OwnerProofAnswer(expires_at=expires)


@router.post("/terminals", response_model=TerminalsAnswer, dependencies=[Depends(limit_code_guesses)])
def list_terminals(
    body: ProofRequest,
    request: Request,
    raw: bytes = Depends(raw_body),
    svc: Services = Depends(services),
) -> TerminalsAnswer:
    """The license's terminals: active ones (holding seats) first, then inactive ones and why."""
    code_id = _prove(request, body, svc, _TERMINAL_CODES, allow_used=True)
    with svc.db.transaction() as session:
        if code_id is not None and not _lists_once_spent(session, code_id):
            raise BadCode()
        owner = _owner(session, request, raw, body, svc, code_id)
        if owner.license is None:
            raise NoSubscription()
        return _answer(session, svc, owner.license, owner.machine_id)


def _lists_once_spent(session: Session, code_id: int) -> bool:
    """Whether this code may list terminals: unspent, or a `terminals` code its own removal spent (the CLI
    lists after removing). A spent activation or owner's code lists nothing."""
    row = session.get(LoginCode, code_id)
    return row is not None and (row.used_at is None or row.purpose == "terminals")


def _answer(session: Session, svc: Services, license_: License, machine_id: str | None) -> TerminalsAnswer:
    now = svc.clock.now()
    idle = seats.idle_after(svc.settings.seat_idle_days)
    rows = []
    bound = sorted(seats.bound_machines(session, license_.id), key=lambda m: (m.activated_at, m.id))
    held = seats.removed_file_holders(session, license_.id, now)
    versions = fleet.versions_of(session, [m.id for m in (*bound, *held)])
    for m in bound:
        active, reason = seats.describe(m, now, idle)
        rows.append(
            Terminal(
                machine_id=m.id,
                terminal_name=m.terminal_name,
                activated_at=m.activated_at,
                last_seen=m.last_seen_at,
                this_machine=m.id == machine_id,
                active=active,
                reason=reason,
                seat_held_until=m.offline_until if seats.file_running(m, now) else None,
                agent_version=versions.get(m.id),
            )
        )
    for m in held:
        rows.append(
            Terminal(
                machine_id=m.id,
                terminal_name=m.terminal_name,
                activated_at=m.activated_at,
                last_seen=m.last_seen_at,
                this_machine=m.id == machine_id,
                active=True,
                reason="removed_offline_license",
                seat_held_until=m.offline_until,
                agent_version=versions.get(m.id),
            )
        )
    rows.sort(key=lambda t: not t.active)  # stable: active ones first, each group oldest first
    return TerminalsAnswer(terminals=rows, seats=seats.seat_count(session, license_, now))


@router.post(
    "/terminals/remove",
    response_model=RemoveAnswer,
    response_model_exclude_none=True,
    dependencies=[Depends(limit_code_guesses)],
)
def remove_terminal(
    body: RemoveTerminalRequest,
    request: Request,
    raw: bytes = Depends(raw_body),
    svc: Services = Depends(services),
) -> RemoveAnswer:
    """Free one terminal's seat (the owner's; a machine may remove itself); it then gets `revoked`.

    A terminal licensed by file cannot be told: it is removed, but keeps its seat until its file ends
    unless its deactivation file is uploaded on `/offline` (`seat_held_until`, `message`).
    """
    code_id = _prove(request, body, svc, _REMOVE_CODES, allow_used=False)
    now = svc.clock.now()
    with svc.db.transaction() as session:
        owner = _owner(session, request, raw, body, svc, code_id)
        machine = session.get(Machine, body.machine_id)
        if owner.license is None or machine is None or machine.license_id != owner.license.id:
            raise NotFound("No terminal with this id on your subscription.")
        if machine.id != owner.machine_id:
            owner.require_proof()
        if code_id is not None:
            _spend_for_removal(session, svc, owner.license, code_id, now)
        if machine.deactivated_at is None:
            seats.lock_license(session, owner.license.id)
            licensing.release_machine(
                session, machine, owner.customer, now, actor=owner.actor, action="machine.removed"
            )
            session.flush()
            seats.reconcile(session, owner.license, now, actor=owner.actor)
        if seats.file_running(machine, now) and machine.offline_until is not None:
            return RemoveAnswer(seat_held_until=machine.offline_until, message=file_seat_message(machine))
    return RemoveAnswer()


def _spend_for_removal(session: Session, svc: Services, license_: License, code_id: int, now) -> None:
    """Spend the code that removes a terminal; an activation code only frees the seat its activation needs.

    An owner's code is spent here. An activation code is left for its activation (which spends it), so it
    may remove a terminal only while no seat is free: once its one seat is free, it removes no more.
    """
    if codes.purpose_of(session, code_id) != "activate":
        codes.consume(session, code_id, now)
        return
    seats.lock_license(session, license_.id)
    idle = seats.idle_after(svc.settings.seat_idle_days)
    if len(seats.free_seats(session, license_, now, idle)) < (seats.seat_count(session, license_, now) or 0):
        raise BadCode(
            "A seat is free already: this activation code activates a terminal. To remove more, use a "
            "code asked for managing terminals."
        )


def file_seat_message(machine: Machine) -> str:
    """What the owner is told about a removed terminal whose license file still runs."""
    until = machine.offline_until.strftime("%Y-%m-%d") if machine.offline_until else "?"
    return (
        f'"{machine.terminal_name or machine.id}" is licensed by file until {until} and cannot be told it '
        "was removed: it keeps taking orders, and its seat stays taken, until then. To free the seat now, "
        "make a deactivation file on that terminal and upload it on the Activation by file page."
    )


@router.post("/terminals/keep", response_model=TerminalsAnswer, dependencies=[Depends(limit_code_guesses)])
def keep_terminals(
    body: KeepTerminalsRequest,
    request: Request,
    raw: bytes = Depends(raw_body),
    svc: Services = Depends(services),
) -> TerminalsAnswer:
    """The owner chooses which terminals keep their seats; the others (beyond the quantity) stop."""
    code_id = _prove(request, body, svc, authority.PROOF_PURPOSES, allow_used=False)
    now = svc.clock.now()
    with svc.db.transaction() as session:
        owner = _owner(session, request, raw, body, svc, code_id)
        owner.require_proof()
        if owner.license is None:
            raise NoSubscription()
        if code_id is not None:
            codes.consume(session, code_id, now)
        seats.lock_license(session, owner.license.id)
        count = seats.seat_count(session, owner.license, now)
        if count is None:
            raise NoSubscription()
        known = {m.id for m in seats.bound_machines(session, owner.license.id)}
        chosen = list(dict.fromkeys(body.machine_ids))
        if any(mid not in known for mid in chosen):
            raise NotFound("No terminal with this id on your subscription.")
        if len(chosen) > count:
            raise InvalidRequest(
                f"Your subscription has {count} seat(s): choose at most {count} terminal(s)."
            )
        seats.reconcile(session, owner.license, now, keep=chosen, actor=owner.actor)
        session.flush()
        return _answer(session, svc, owner.license, owner.machine_id)


@router.post("/terminals/rename", response_model=TerminalsAnswer, dependencies=[Depends(limit_code_guesses)])
def rename_terminal(
    body: RenameTerminalRequest,
    request: Request,
    raw: bytes = Depends(raw_body),
    svc: Services = Depends(services),
) -> TerminalsAnswer:
    """Give one terminal of the license a new name: the owner's list, the e-mails and its next token say it.

    A machine renames itself with its signature alone (the till's own name). Another terminal needs the
    owner: a proof remembered on the asking machine, or an unspent owner's code, which this spends.
    """
    code_id = _prove(request, body, svc, authority.PROOF_PURPOSES, allow_used=False)
    now = svc.clock.now()
    with svc.db.transaction() as session:
        owner = _owner(session, request, raw, body, svc, code_id)
        machine = session.get(Machine, body.machine_id)
        if owner.license is None or machine is None or machine.license_id != owner.license.id:
            raise NotFound("No terminal with this id on your subscription.")
        if machine.id != owner.machine_id:
            owner.require_proof()
        if code_id is not None:
            codes.consume(session, code_id, now)
        if machine.terminal_name != body.terminal_name:
            licensing.record_audit(
                session,
                actor=owner.actor,
                action="machine.renamed",
                license_id=owner.license.id,
                machine_id=machine.id,
                detail={"from": machine.terminal_name, "to": body.terminal_name},
                at=now,
            )
            machine.terminal_name = body.terminal_name
        session.flush()
        return _answer(session, svc, owner.license, owner.machine_id)


@router.post("/portal", response_model=PortalAnswer, dependencies=[Depends(limit_code_guesses)])
def portal(
    body: PortalRequest,
    request: Request,
    raw: bytes = Depends(raw_body),
    svc: Services = Depends(services),
) -> PortalAnswer:
    """A one-time billing portal URL for the proven customer; a given code is spent once it exists."""
    return_url = _return_url(body.return_url, svc)
    code_id = _prove(request, body, svc, ("portal", "owner"), allow_used=False)
    with svc.db.transaction() as session:
        owner = _owner(session, request, raw, body, svc, code_id)
        owner.require_proof()
        customer_ref = owner.customer.stripe_customer_id
    if not customer_ref:
        raise NoSubscription()
    if svc.billing is None:
        raise ApiError("Billing is not available on this server.", status=503, code="billing_unavailable")
    try:
        url = svc.billing.create_portal_session(
            customer_ref, return_url, **({"locale": body.locale} if body.locale else {})
        )
    except BillingError:
        raise ApiError(
            "The payment provider is not reachable. Try again in a minute.",
            status=503,
            code="billing_unavailable",
        ) from None
    if code_id is not None:
        # Spent only now: a provider refusal above leaves the owner's code usable for a retry.
        with svc.db.transaction() as session:
            codes.consume(session, code_id, svc.clock.now())
    return PortalAnswer(url=url)


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
