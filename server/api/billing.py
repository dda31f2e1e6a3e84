"""Billing routes: checkout create and status, the Stripe webhook, sandbox pages, success/cancel pages.

`POST /v1/checkout` records the buyer's machine (so a paid checkout can activate it without a code),
reuses a returning customer's provider customer, and opens a provider checkout whose success and cancel
pages are served here. An address that already is a customer (it has had a license) needs the owner's
proof on the buying machine (server/authority.py): without it nothing is created or changed on that
customer (no rename), and the provider session is only ever opened for the proven customer. An address
that never bought may retry its checkout without a code, but a retry renames nothing. A proven customer
with a live subscription gets 409 `subscription_exists` unless they ask for a second subscription: "add
this terminal" (`POST /v1/terminals/add`) raises the quantity of the one they have instead, prorated, with
the price previewed first. `POST /v1/webhooks/stripe` verifies the signature over the raw body before
anything else and answers 400 without touching the database when it fails; processing errors answer 500 so
the provider delivers the event again.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Literal
from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from server import authority, licensing, seats
from server.api import billing_pages as pages
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
    RestaurantName,
    TerminalName,
)
from server.billing.base import CheckoutRequest, QuantityPreview
from server.billing.sandbox import CHECKOUT_ACTIONS, SUBSCRIPTION_ACTIONS, SandboxBilling
from server.billing.sync import FetchedState, fetch_subscription_state, sync_subscription
from server.errors import ApiError, BillingError, NoSubscription, NotFound, WebhookSignatureInvalid
from server.models import Checkout, Customer, License, Subscription
from server.webhooks import MANAGE_PATH, WebhookContext, mark_checkout_expired, process_event

log = logging.getLogger("pospal.billing")
router = APIRouter(tags=["billing"])

CHECKOUTS_PER_HOUR_PER_IP = 20
CHECKOUTS_PER_HOUR_PER_EMAIL = 10
# Stripe expires an unpaid Checkout Session after 24 hours; so do we.
CHECKOUT_LIFETIME = timedelta(hours=24)
MAX_TERMINALS = 100


class BillingUnavailable(ApiError):
    """The payment provider could not be reached or refused the request."""

    code = "billing_unavailable"
    default_message = "The payment provider is not reachable. Try again in a minute."


class CheckoutCreate(BaseModel):
    """Start buying POSPal for `quantity` terminals from this machine."""

    model_config = ConfigDict(extra="ignore")

    email: Email
    restaurant_name: RestaurantName
    quantity: Annotated[int, Field(ge=1, le=MAX_TERMINALS)] = 1
    fingerprint: Fingerprint
    machine_public_key: PublicKey
    terminal_name: TerminalName | None = None
    locale: Locale | None = None
    # A proven customer who already has a live subscription gets a second one only when asking for it.
    new_subscription: bool = False


class SubscriptionExists(ApiError):
    """The proven customer already subscribes: add this terminal to that subscription instead."""

    code = "subscription_exists"
    default_message = (
        "This email already has a POSPal subscription. Add this terminal to it instead of buying again."
    )


class AddTerminalRequest(BaseModel):
    """Add this PC to the owner's subscription: preview first (`confirm` false), then confirm."""

    model_config = ConfigDict(extra="ignore")

    email: Email
    confirm: bool = False
    # The quantity the preview showed; a confirm that would now need another quantity is refused.
    expected_quantity: Annotated[int, Field(ge=1, le=MAX_TERMINALS)] | None = None
    fingerprint: Fingerprint
    machine_public_key: PublicKey
    terminal_name: TerminalName | None = None
    known_kids: Annotated[list[Kid], Field(max_length=32)] = []


class AddTerminalAnswer(BaseModel):
    """The price of adding this terminal (minor units, charged now, prorated); the token once confirmed."""

    quantity_now: int
    quantity_new: int
    amount_due: int
    currency: str
    period_end: int | None = None
    token: str | None = None
    keyset: str | None = None
    machine_id: str | None = None
    license_id: str | None = None


class CheckoutAnswer(BaseModel):
    """Open `url` in a browser, then poll `GET /v1/checkout/{checkout_id}`."""

    checkout_id: str
    url: str


class CheckoutStatus(BaseModel):
    """Where a checkout stands: activate with `checkout_id` once it is "complete"."""

    status: Literal["open", "complete", "expired"]


def _context(svc: Services) -> WebhookContext:
    return WebhookContext(
        clock=svc.clock,
        public_url=svc.settings.public_url,
        system_admin_email=svc.settings.system_admin_email,
        adoptable_prices=svc.settings.adoptable_prices(),
    )


@router.post("/v1/checkout", response_model=CheckoutAnswer)
def create_checkout(
    body: CheckoutCreate,
    request: Request,
    raw: bytes = Depends(raw_body),
    svc: Services = Depends(services),
) -> CheckoutAnswer:
    """Open a subscription checkout for this machine, signed by the key in `machine_public_key`.

    The signature proves the caller holds the key the paid license will be bound to, and its nonce
    makes a replayed request fail instead of opening a second checkout.
    """
    public_key = parse_public_key(body.machine_public_key)
    signed = verify_machine_signature(public_key, request, raw)
    now = svc.clock.now()
    limit_per_ip(request, svc, "checkout", CHECKOUTS_PER_HOUR_PER_IP)
    svc.limiter.hit(f"checkout:email:{body.email}", CHECKOUTS_PER_HOUR_PER_EMAIL, 3600, now.timestamp())
    checkout_id = f"chk_{secrets.token_urlsafe(24)}"
    with svc.db.transaction() as session:
        check_and_remember(session, signed, public_key_owner(public_key), svc)
        customer = _checkout_customer(session, body, public_key, now)
        session.flush()
        customer_id, known_provider_id = customer.id, customer.stripe_customer_id
        session.add(_checkout_row(checkout_id, customer_id, body, public_key, now))
    try:
        provider_customer = _provider_customer(svc, body, customer_id, known_provider_id)
        opened = svc.billing.create_checkout(
            _provider_request(svc, body, checkout_id, customer_id, provider_customer)
        )
    except BillingError as exc:
        log.error("checkout_provider_failed", extra={"checkout_id": checkout_id, "error": str(exc)})
        raise BillingUnavailable() from None
    with svc.db.transaction() as session:
        row = session.get(Checkout, checkout_id)
        assert row is not None
        row.provider_session_id = opened.id
    return CheckoutAnswer(checkout_id=checkout_id, url=opened.url)


def _checkout_customer(session: Session, body: CheckoutCreate, public_key: str, now: datetime) -> Customer:
    """The customer this checkout buys for: a new row for a new address; an existing customer only with
    the owner's proof on this machine (then renamed); an address that never bought, unchanged."""
    customer = session.scalars(select(Customer).where(Customer.email == body.email)).first()
    if customer is None:
        customer = Customer(
            email=body.email, name=body.restaurant_name, created_at=now, locale=body.locale or "en"
        )
        session.add(customer)
    elif _has_bought(session, customer.id) or authority.holds(session, customer.id, public_key, now):
        # An address alone changes nothing on an existing customer: the owner proves it first.
        authority.require(session, customer.id, public_key, now)
        if not body.new_subscription and licensing.live_license_for_customer(session, customer.id, now):
            raise SubscriptionExists()
        customer.name = body.restaurant_name
        if body.locale:
            customer.locale = body.locale
    # else: an address that never bought (an earlier checkout left unpaid, a retry after a lost answer)
    # may check out again without a code, but changes nothing on that row (no rename).
    return customer


def _checkout_row(
    checkout_id: str, customer_id: str, body: CheckoutCreate, public_key: str, now: datetime
) -> Checkout:
    """Our record of the checkout: the machine a paid checkout will activate without a code."""
    return Checkout(
        id=checkout_id,
        customer_id=customer_id,
        status="open",
        quantity=body.quantity,
        machine_public_key=public_key,
        fingerprint=dict(body.fingerprint),
        terminal_name=body.terminal_name,
        created_at=now,
    )


def _provider_customer(
    svc: Services, body: CheckoutCreate, customer_id: str, known_provider_id: str | None
) -> str:
    """The provider's customer for ours (found or created outside any transaction), stored once."""
    provider_customer: str = svc.billing.find_or_create_customer(
        body.email, body.restaurant_name, known_provider_id
    )
    if provider_customer == known_provider_id:
        return provider_customer
    with svc.db.transaction() as session:
        customer = session.get(Customer, customer_id, with_for_update=True)
        assert customer is not None
        if customer.stripe_customer_id is None:
            customer.stripe_customer_id = provider_customer
        # A concurrent checkout may have stored one first: use that, so one customer stays one.
        return customer.stripe_customer_id


def _provider_request(
    svc: Services, body: CheckoutCreate, checkout_id: str, customer_id: str, provider_customer: str
) -> CheckoutRequest:
    """The provider checkout session to open, returning the buyer to this server's pages."""
    public = svc.settings.public_url
    return CheckoutRequest(
        customer_id=provider_customer,
        email=body.email,
        quantity=body.quantity,
        client_reference_id=checkout_id,
        success_url=f"{public}/billing/success?checkout_id={checkout_id}",
        cancel_url=f"{public}/billing/cancel?checkout_id={checkout_id}",
        metadata={"pospal_checkout_id": checkout_id, "pospal_customer_id": customer_id},
        locale=body.locale or "en",
    )


@dataclass(frozen=True)
class _Seat:
    """What "add this terminal" read under the license lock: the provider's id and the quantities."""

    provider_id: str
    license_id: str
    quantity_now: int
    wanted: int


@router.post("/v1/terminals/add", response_model=AddTerminalAnswer)
def add_terminal(
    body: AddTerminalRequest,
    request: Request,
    raw: bytes = Depends(raw_body),
    svc: Services = Depends(services),
) -> AddTerminalAnswer:
    """Add this PC to the proven owner's subscription: quantity +1 (only if no seat is free), prorated.

    Without `confirm` it only previews the charge. With it, the provider changes the quantity (invoiced
    now), our mirror follows, and this PC is activated: the answer carries its token. No provider call
    runs inside a database transaction.
    """
    public_key = parse_public_key(body.machine_public_key)
    signed = verify_machine_signature(public_key, request, raw)
    now = svc.clock.now()
    limit_per_ip(request, svc, "checkout", CHECKOUTS_PER_HOUR_PER_IP)
    with svc.db.transaction() as session:
        check_and_remember(session, signed, public_key_owner(public_key), svc)
        license_, subscription, wanted = _needed_quantity(session, svc, body.email, public_key, now)
        seat = _Seat(subscription.provider_subscription_id, license_.id, subscription.quantity, wanted)
    try:
        preview, fetched = _quote_or_change(svc, body, seat, now)
    except BillingError as exc:
        log.error("quantity_provider_failed", extra={"license_id": seat.license_id, "error": str(exc)})
        raise BillingUnavailable() from None
    answer = AddTerminalAnswer(**preview.__dict__)
    if not body.confirm:
        return answer
    with svc.db.transaction() as session:
        bound = _activate_added(session, svc, body, public_key, seat, fetched, signed.nonce, now)
    return answer.model_copy(update=bound.model_dump())


def _quote_or_change(
    svc: Services, body: AddTerminalRequest, seat: _Seat, now: datetime
) -> tuple[QuantityPreview, FetchedState | None]:
    """With the provider, outside any transaction: the preview, or (`confirm`) the quantity change and
    the subscription's state fetched after it, as webhooks fetch first."""
    if seat.wanted <= seat.quantity_now:
        return QuantityPreview(seat.quantity_now, seat.quantity_now, 0, "eur"), None
    if not body.confirm:
        return svc.billing.preview_quantity(seat.provider_id, seat.wanted), None
    if body.expected_quantity is not None and body.expected_quantity != seat.wanted:
        raise ApiError(
            "The terminals changed meanwhile. Look at the new price and confirm again.",
            code="quantity_changed",
            quantity_new=seat.wanted,
        )
    svc.billing.update_quantity(seat.provider_id, seat.wanted, f"{seat.license_id}-{seat.wanted}")
    fetched = fetch_subscription_state(svc.billing, seat.provider_id, now)
    return QuantityPreview(seat.quantity_now, seat.wanted, 0, "eur"), fetched


def _activate_added(
    session: Session,
    svc: Services,
    body: AddTerminalRequest,
    public_key: str,
    seat: _Seat,
    fetched: FetchedState | None,
    nonce: str,
    now: datetime,
) -> ActivationAnswer:
    """In one short transaction: mirror the new quantity (audited), then bind this PC to the license."""
    if fetched is not None:
        sync_subscription(session, svc.billing, seat.provider_id, _context(svc), now, fetched=fetched)
        licensing.record_audit(
            session,
            actor=f"key:{public_key_owner(public_key)}",
            action="subscription.quantity_changed",
            license_id=seat.license_id,
            detail={"from": seat.quantity_now, "to": seat.wanted, "why": "add_terminal"},
            at=now,
        )
    license_, _subscription, _wanted = _needed_quantity(session, svc, body.email, public_key, now)
    customer = session.get(Customer, license_.customer_id)
    assert customer is not None
    activation = ActivationRequest(
        email=body.email,
        fingerprint=body.fingerprint,
        machine_public_key=public_key,
        terminal_name=body.terminal_name,
        known_kids=body.known_kids,
    )
    return bind_machine(
        session, svc, customer, license_, public_key, activation, now, via="add_terminal", nonce=nonce
    )


def _has_bought(session, customer_id: str) -> bool:
    """Whether the customer ever had a license (a paid subscription or an operator grant)."""
    return session.scalar(select(License.id).where(License.customer_id == customer_id).limit(1)) is not None


def _needed_quantity(session, svc: Services, email: str, public_key: str, now) -> tuple:
    """(license, subscription, quantity needed so this machine has a seat), for the proven owner only."""
    customer = session.scalars(select(Customer).where(Customer.email == email)).first()
    if customer is None:
        raise NoSubscription()
    authority.require(session, customer.id, public_key, now)
    license_ = licensing.live_license_for_customer(session, customer.id, now)
    subscription = (
        session.get(Subscription, license_.subscription_id) if license_ and license_.subscription_id else None
    )
    if license_ is None or subscription is None:
        raise NoSubscription()
    seats.lock_license(session, license_.id)
    idle = seats.idle_after(svc.settings.seat_idle_days)
    holding = seats.free_seats(session, license_, now, idle)
    mine = [m for m in holding if m.public_key == public_key]
    return license_, subscription, max(subscription.quantity, len(holding) + (0 if mine else 1))


@router.get("/v1/checkout/{checkout_id}", response_model=CheckoutStatus)
def checkout_status(checkout_id: str, svc: Services = Depends(services)) -> CheckoutStatus:
    """Report whether a checkout is still open, complete (activate now) or expired."""
    with svc.db.transaction() as session:
        row = session.get(Checkout, checkout_id[:64])
        if row is None:
            raise NotFound("No such checkout.")
        if row.status == "complete":
            return CheckoutStatus(status="complete")
        if row.status == "open" and row.created_at + CHECKOUT_LIFETIME >= svc.clock.now():
            return CheckoutStatus(status="open")
    return CheckoutStatus(status="expired")


@router.post("/v1/webhooks/stripe", responses={400: {"description": "signature rejected"}})
def stripe_webhook(
    request: Request, raw: bytes = Depends(raw_body), svc: Services = Depends(services)
) -> JSONResponse:
    """Receive a provider event: verify the raw-body signature, then process it in one transaction."""
    try:
        event = svc.billing.verify_webhook(raw, request.headers.get("stripe-signature"))
    except WebhookSignatureInvalid as exc:
        log.warning("webhook_rejected", extra={"reason": str(exc)[:200]})
        return JSONResponse(
            {"error": "bad_signature", "message": "Webhook signature rejected."}, status_code=400
        )
    try:
        outcome = process_event(svc.db, event, svc.billing, _context(svc))
    except Exception:
        return JSONResponse(
            {"error": "processing_failed", "message": "The event was not processed; deliver it again."},
            status_code=500,
        )
    return JSONResponse({"received": True, "outcome": outcome})


# -- pages served to the buyer's browser --------------------------------------------------------------


def _locale(request: Request) -> str:
    return "el" if request.headers.get("accept-language", "").lower().startswith("el") else "en"


@router.get("/billing/success", response_class=HTMLResponse, include_in_schema=False)
def checkout_success(request: Request) -> HTMLResponse:
    """Where the provider sends the buyer after paying."""
    if _locale(request) == "el":
        return HTMLResponse(
            pages.message(
                "Η πληρωμή ολοκληρώθηκε",
                "Ευχαριστούμε! Μπορείτε να κλείσετε αυτό το παράθυρο: το POSPal License Agent ενεργοποιεί "
                "αυτόν τον υπολογιστή μόνο του.",
            )
        )
    return HTMLResponse(
        pages.message(
            "Payment complete",
            "Thank you! You can close this window: the POSPal License Agent activates this PC by itself.",
        )
    )


@router.get("/billing/cancel", response_class=HTMLResponse, include_in_schema=False)
def checkout_cancel(
    request: Request, checkout_id: str = "", svc: Services = Depends(services)
) -> HTMLResponse:
    """Where the provider sends a buyer who went back: the agent stops waiting on that checkout."""
    if checkout_id:
        with svc.db.transaction() as session:
            mark_checkout_expired(session, checkout_id[:64])
    if _locale(request) == "el":
        return HTMLResponse(pages.message("Η αγορά ακυρώθηκε", "Δεν έγινε καμία χρέωση."))
    return HTMLResponse(pages.message("Checkout cancelled", "Nothing was charged."))


@router.get("/portal/return", response_class=HTMLResponse, include_in_schema=False)
def portal_return(request: Request) -> HTMLResponse:
    """Where the Customer Portal sends the owner back to (the default `return_url`)."""
    if _locale(request) == "el":
        text = "Μπορείτε να κλείσετε αυτό το παράθυρο."
        return HTMLResponse(pages.message("Οι αλλαγές αποθηκεύτηκαν", text))
    return HTMLResponse(pages.message("Billing updated", "You can close this window."))


@router.get(MANAGE_PATH, response_class=HTMLResponse, include_in_schema=False)
def manage_billing(request: Request) -> HTMLResponse:
    """The page billing emails link to: prove the email with a code, then open the Customer Portal."""
    return HTMLResponse(pages.manage(_locale(request)))


def _sandbox(svc: Services) -> SandboxBilling:
    if not isinstance(svc.billing, SandboxBilling):
        raise NotFound("Sandbox billing is not enabled on this server.")
    return svc.billing


def _form(raw: bytes) -> dict[str, str]:
    parsed = parse_qs(raw.decode("utf-8", "replace")[:4096])
    return {k: v[0] for k, v in parsed.items() if v}


def _run_sandbox_action(svc: Services, sandbox: SandboxBilling, object_id: str, action: str) -> None:
    # The events go through the same processing as a verified Stripe webhook.
    for event in sandbox.apply_action(object_id, action):
        process_event(svc.db, event, sandbox, _context(svc))


@router.get("/sandbox/checkout/{checkout_id}", response_class=HTMLResponse)
def sandbox_checkout_page(checkout_id: str, svc: Services = Depends(services)) -> HTMLResponse:
    """The sandbox checkout page: "Pay", "Fail payment", "Cancel"; after paying, subscription controls."""
    sandbox = _sandbox(svc)
    data = sandbox.get(checkout_id[:64], "checkout")
    sub = sandbox.get(data["subscription"], "subscription") if data.get("subscription") else None
    return HTMLResponse(pages.sandbox_checkout(checkout_id, data, sub))


@router.post("/sandbox/checkout/{checkout_id}", include_in_schema=False)
def sandbox_checkout_action(
    checkout_id: str, raw: bytes = Depends(raw_body), svc: Services = Depends(services)
) -> RedirectResponse:
    """Apply a button of the sandbox checkout page, then go where Stripe would send the buyer."""
    sandbox = _sandbox(svc)
    form = _form(raw)
    action = form.get("action", "")
    data = sandbox.get(checkout_id[:64], "checkout")
    if action in CHECKOUT_ACTIONS:
        _run_sandbox_action(svc, sandbox, checkout_id, action)
        if action == "pay" and data["status"] == "open":
            return RedirectResponse(data["success_url"], status_code=303)
        if action == "cancel" and data["status"] == "open":
            return RedirectResponse(data["cancel_url"], status_code=303)
    elif action in SUBSCRIPTION_ACTIONS and form.get("subscription_id") == data.get("subscription"):
        _run_sandbox_action(svc, sandbox, str(data["subscription"]), action)
    else:
        raise NotFound("Unknown sandbox action.")
    return RedirectResponse(f"/sandbox/checkout/{checkout_id}", status_code=303)


@router.get("/sandbox/portal/{portal_id}", response_class=HTMLResponse, include_in_schema=False)
def sandbox_portal_page(portal_id: str, svc: Services = Depends(services)) -> HTMLResponse:
    """The sandbox Customer Portal page."""
    sandbox = _sandbox(svc)
    portal = sandbox.get(portal_id[:64], "portal")
    customer = sandbox.get(portal["customer"], "customer")
    subs = sandbox.subscriptions_of(portal["customer"])
    return HTMLResponse(
        pages.sandbox_portal(
            portal_id, str(customer.get("email") or ""), subs, portal.get("return_url") or ""
        )
    )


@router.post("/sandbox/portal/{portal_id}", include_in_schema=False)
def sandbox_portal_action(
    portal_id: str, raw: bytes = Depends(raw_body), svc: Services = Depends(services)
) -> RedirectResponse:
    """Apply a subscription button of the sandbox portal (only to this customer's subscriptions)."""
    sandbox = _sandbox(svc)
    portal = sandbox.get(portal_id[:64], "portal")
    form = _form(raw)
    owned = {sid for sid, _ in sandbox.subscriptions_of(portal["customer"])}
    if form.get("action") not in SUBSCRIPTION_ACTIONS or form.get("subscription_id") not in owned:
        raise NotFound("Unknown sandbox action.")
    _run_sandbox_action(svc, sandbox, form["subscription_id"], form["action"])
    return RedirectResponse(f"/sandbox/portal/{portal_id}", status_code=303)
