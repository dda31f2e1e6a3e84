"""Billing webhooks: verify, dedupe, re-fetch from the provider, then apply and write the outbox briefly.

The route (`server.api.billing`) verifies the signature over the raw body and hands the event to
`process_event`:

1. **Dedupe, early:** an event already processed is answered at once, without calling the provider.
2. **Re-fetch** from the provider, outside any database transaction (`prefetch`): the subscription,
   the invoice (does its payment wait for 3-D Secure?), the customer (`customer.updated`), a disputed
   charge's customer. Payloads are only a hint (they may be old, or old-shaped, as localstripe's are);
   the provider's current state is the truth, so applying events in any order converges on it. A slow
   provider (the SDK may wait 80 s and retry twice) never holds the database's write lock.
3. **Apply**, in one short transaction (`handle_billing_event`): claim the event id (the
   `stripe_events` primary key is the lock, on any number of servers), write `subscriptions` and the
   license, audit, and **write the outbox** with idempotency keys derived from the state transition,
   so a transition is announced once however many events report it.

The subscription half lives in `server.billing.sync`. Any exception rolls the transaction back; the
event is recorded as failed (`processed_at` stays empty, `error` says why) and the route answers 500,
so the provider delivers it again.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from server.billing.base import (
    LIVE_STATUSES,
    BillingProvider,
    ProviderCustomer,
    ProviderSubscription,
    subscription_id_of,
)
from server.billing.sync import (
    MANAGE_PATH,
    FetchedState,
    WebhookContext,
    fetch_subscription_state,
    sync_subscription,
)
from server.db import Database
from server.errors import BillingError, NotAdopted
from server.licensing import record_audit
from server.models import Checkout, Customer, StripeEvent
from server.outbox import enqueue

__all__ = [
    "MANAGE_PATH",
    "Prefetched",
    "WebhookContext",
    "handle_billing_event",
    "mark_checkout_expired",
    "prefetch",
    "process_event",
]

log = logging.getLogger("pospal.webhooks")

SUBSCRIPTION_EVENTS = frozenset(
    {
        "checkout.session.completed",
        "invoice.paid",
        "invoice.payment_succeeded",
        "invoice.payment_failed",
        "invoice.payment_action_required",
        "payment_intent.requires_action",
        "customer.subscription.created",
        "customer.subscription.updated",
        "customer.subscription.deleted",
        # A subscription whose status became `paused` (a trial that ended without a card) and back.
        "customer.subscription.paused",
        "customer.subscription.resumed",
    }
)
FLAGGED_EVENTS = frozenset({"charge.refunded", "charge.dispute.created"})
CUSTOMER_EVENTS = frozenset({"customer.updated"})


@dataclass(frozen=True)
class Prefetched:
    """What the provider said about an event's objects, fetched before the write transaction.

    `subscription` for subscription events (None when the event concerns no subscription), `customer`
    for `customer.updated`, `charge_customer` for a dispute (which names only its charge).
    """

    subscription: FetchedState | None = None
    customer: ProviderCustomer | None = None
    charge_customer: str | None = None


def prefetch(
    db: Database | None, event: Mapping[str, Any], provider: BillingProvider, now: datetime
) -> Prefetched:
    """Ask the provider about the event's objects; no database transaction is open meanwhile."""
    event_type = str(event.get("type") or "")
    obj = (event.get("data") or {}).get("object") or {}
    if event_type in SUBSCRIPTION_EVENTS:
        invoice_id = str(obj["id"]) if obj.get("object") == "invoice" and obj.get("id") else None
        subscription_id = subscription_id_of(event)
        if event_type == "payment_intent.requires_action" and obj.get("id"):
            invoice_id = provider.invoice_of_payment(str(obj["id"]))
            if invoice_id:
                subscription_id = provider.fetch_invoice(invoice_id).subscription_id
        if subscription_id is None:
            return Prefetched()
        knows = None if db is None else (lambda current: _knows_customer(db, current))
        return Prefetched(
            subscription=fetch_subscription_state(
                provider, subscription_id, now, invoice_id=invoice_id, knows_customer=knows
            )
        )
    if event_type in CUSTOMER_EVENTS and obj.get("id"):
        return Prefetched(customer=provider.fetch_customer(str(obj["id"])))
    if event_type == "charge.dispute.created" and not _customer_of(obj) and obj.get("charge"):
        charge = obj["charge"]
        charge_id = str(charge.get("id") if isinstance(charge, Mapping) else charge)
        try:
            return Prefetched(charge_customer=provider.customer_of_charge(charge_id))
        except BillingError as exc:
            # The alert matters more than its customer line: record it, naming the charge.
            log.warning("dispute_charge_unknown", extra={"charge": charge_id, "error": str(exc)})
    return Prefetched()


def _knows_customer(db: Database, current: ProviderSubscription) -> bool:
    """True when we can name this subscription's customer without asking the provider for its e-mail."""
    ours = current.metadata.get("pospal_customer_id")
    with db.read() as connection:
        found = connection.execute(
            select(Customer.id).where(
                or_(Customer.stripe_customer_id == current.customer_id, Customer.id == (ours or ""))
            )
        ).first()
    return found is not None


def _already_processed(db: Database, event_id: str) -> bool:
    with db.read() as connection:
        found = connection.execute(
            select(StripeEvent.processed_at).where(StripeEvent.event_id == event_id)
        ).first()
    return found is not None and found[0] is not None


def process_event(
    db: Database, event: Mapping[str, Any], provider: BillingProvider, ctx: WebhookContext
) -> str:
    """Handle one verified event: fetch from the provider, then one short write transaction.

    On failure the error is recorded on the event and re-raised (the route answers 5xx, Stripe retries).
    """
    try:
        if _already_processed(db, str(event["id"])):
            return "duplicate"
        fetched = prefetch(db, event, provider, ctx.clock.now())
        with db.transaction() as session:
            return handle_billing_event(session, event, provider, ctx, fetched=fetched)
    except Exception as exc:
        log.error(
            "webhook_failed",
            extra={"event_id": event.get("id"), "type": event.get("type"), "error": type(exc).__name__},
        )
        _record_failure(db, event, ctx, f"{type(exc).__name__}: {exc}")
        raise


def handle_billing_event(
    session: Session,
    event: Mapping[str, Any],
    provider: BillingProvider,
    ctx: WebhookContext,
    *,
    fetched: Prefetched | None = None,
) -> str:
    """Apply one verified event inside the caller's transaction, from what `prefetch` fetched.

    Without `fetched` the provider is asked here (tests and tools that hold a session already).
    Returns "duplicate" (already processed), "processed", or "ignored" (a type we do not act on, still
    recorded so it is not handled twice).
    """
    event_id = str(event["id"])
    event_type = str(event.get("type") or "")
    now = ctx.clock.now()
    record = _claim_event(session, event, now)
    if record.processed_at is not None:
        return "duplicate"
    if fetched is None:
        fetched = prefetch(None, event, provider, now)
    outcome = "processed"
    if event_type in SUBSCRIPTION_EVENTS:
        _apply_subscription_event(session, event, provider, ctx, now, fetched)
    elif event_type in CUSTOMER_EVENTS:
        outcome = _customer_updated(session, event, fetched, now)
    elif event_type in FLAGGED_EVENTS:
        _flag(session, record, event, ctx, now, fetched)
    else:
        outcome = "ignored"
    record.processed_at = now
    record.error = None
    log.info("webhook_processed", extra={"event_id": event_id, "type": event_type, "outcome": outcome})
    return outcome


def _insert(session: Session) -> Any:
    return postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert


def _claim_event(session: Session, event: Mapping[str, Any], now: datetime) -> StripeEvent:
    values = {
        "event_id": str(event["id"]),
        "type": str(event.get("type") or "")[:64],
        "received_at": now,
        "payload": dict(event),
        "flagged": False,
    }
    session.execute(_insert(session)(StripeEvent).values(**values).on_conflict_do_nothing())
    record = session.scalars(
        select(StripeEvent)
        .where(StripeEvent.event_id == values["event_id"])
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one()
    return record


def _record_failure(db: Database, event: Mapping[str, Any], ctx: WebhookContext, error: str) -> None:
    try:
        with db.transaction() as session:
            record = _claim_event(session, event, ctx.clock.now())
            if record.processed_at is None:
                record.error = error[:2000]
    except Exception:  # the failure is already logged; the redelivery will try again
        log.exception("webhook_failure_not_recorded")


def _apply_subscription_event(
    session: Session,
    event: Mapping[str, Any],
    provider: BillingProvider,
    ctx: WebhookContext,
    now: datetime,
    fetched: Prefetched,
) -> None:
    obj = (event.get("data") or {}).get("object") or {}
    checkout = None
    if event.get("type") == "checkout.session.completed":
        checkout = _find_checkout(session, obj)
    if fetched.subscription is None:
        # A one-off invoice or a checkout without a subscription: nothing to mirror.
        return
    try:
        row, current = sync_subscription(
            session,
            provider,
            fetched.subscription.subscription.id,
            ctx,
            now,
            event=event,
            customer_hint=checkout.customer_id if checkout else None,
            fetched=fetched.subscription,
        )
    except NotAdopted as exc:
        # Another product's subscription on the same Stripe account: recorded as handled, not mirrored.
        log.info("subscription_not_adopted", extra={"event_id": event.get("id"), "reason": str(exc)})
        return
    if checkout is None and current.metadata.get("pospal_checkout_id"):
        # A payment that completed later (e.g. after 3-D Secure) still finishes the agent's checkout.
        checkout = session.get(Checkout, current.metadata["pospal_checkout_id"], with_for_update=True)
    if checkout is not None and checkout.status != "complete" and row.status in LIVE_STATUSES:
        checkout.status = "complete"
        checkout.completed_at = now
        if checkout.customer_id is None:
            checkout.customer_id = row.customer_id


def _find_checkout(session: Session, obj: Mapping[str, Any]) -> Checkout | None:
    reference = obj.get("client_reference_id")
    if reference:
        found = session.get(Checkout, str(reference), with_for_update=True)
        if found is not None:
            return found
    if obj.get("id"):
        return session.scalars(
            select(Checkout).where(Checkout.provider_session_id == str(obj["id"])).with_for_update()
        ).first()
    return None


def _customer_of(obj: Mapping[str, Any]) -> str | None:
    value = obj.get("customer")
    if isinstance(value, Mapping):
        value = value.get("id")
    return str(value) if value else None


def _customer_updated(session: Session, event: Mapping[str, Any], fetched: Prefetched, now: datetime) -> str:
    """Follow an e-mail changed in the portal or Dashboard, so codes and receipts reach the owner."""
    current = fetched.customer
    if current is None or current.deleted or not current.email:
        return "ignored"
    ours = session.scalars(
        select(Customer).where(Customer.stripe_customer_id == current.id).with_for_update()
    ).first()
    email = current.email.strip().lower()
    if ours is None or ours.email == email:
        return "ignored"
    taken = session.scalars(
        select(Customer.id).where(Customer.email == email, Customer.id != ours.id)
    ).first()
    actor = f"webhook:{event.get('id')}"
    if taken is not None:
        # Two of our customers would share an address: an operator merges them, we do not guess.
        log.warning("customer_email_conflict", extra={"customer_id": ours.id, "other": taken})
        record_audit(
            session,
            actor=actor,
            action="customer.email_conflict",
            detail={"customer_id": ours.id, "other": taken},
            at=now,
        )
        return "ignored"
    record_audit(
        session,
        actor=actor,
        action="customer.email_changed",
        detail={"customer_id": ours.id, "from": ours.email, "to": email},
        at=now,
    )
    ours.email = email
    return "processed"


def _flag(
    session: Session,
    record: StripeEvent,
    event: Mapping[str, Any],
    ctx: WebhookContext,
    now: datetime,
    fetched: Prefetched,
) -> None:
    """Record a refund or dispute for the operator; the license is left alone (a person decides)."""
    obj = (event.get("data") or {}).get("object") or {}
    record.flagged = True
    # A dispute names its charge, not the customer: `prefetch` asked the charge.
    provider_customer = _customer_of(obj) or fetched.charge_customer
    customer = None
    if provider_customer:
        customer = session.scalars(
            select(Customer).where(Customer.stripe_customer_id == str(provider_customer))
        ).first()
    amount = obj.get("amount_refunded") or obj.get("amount") or 0
    currency = str(obj.get("currency") or "eur").upper()
    detail = {
        "event_type": event.get("type"),
        "event_id": event.get("id"),
        "customer_email": customer.email if customer else str(provider_customer or "unknown"),
        "amount": f"{int(amount) / 100:.2f} {currency}",
        "detail": str(obj.get("reason") or obj.get("id") or ""),
    }
    record_audit(session, actor=f"webhook:{event.get('id')}", action="billing.flagged", detail=detail, at=now)
    if ctx.system_admin_email:
        enqueue(
            session,
            ctx.system_admin_email,
            "admin_flag",
            "en",
            detail,
            f"admin-flag:{event.get('id')}",
            now=now,
        )
    else:
        log.warning("billing_flagged_no_admin_email", extra={"event_id": event.get("id")})


def mark_checkout_expired(session: Session, checkout_id: str) -> None:
    """Mark an open checkout expired (the buyer cancelled); complete ones are left alone."""
    session.execute(
        update(Checkout)
        .where(Checkout.id == checkout_id, Checkout.status == "open")
        .values(status="expired")
        .execution_options(synchronize_session=False)
    )
