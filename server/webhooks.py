"""Billing webhooks: verify, dedupe, re-fetch, apply, write the outbox, all in one transaction.

The route (`server.api.billing`) verifies the signature over the raw body and hands the event to
`process_event`, which runs `handle_billing_event` in one transaction:

1. **Dedupe** on the event id. The `stripe_events` primary key is the lock: a concurrent delivery of
   the same id waits on the first one's insert and then sees it processed, on any number of servers.
2. **Re-fetch** the subscription from the provider, after locking our mirror row. Payloads are only a
   hint (they may be old, or old-shaped, as localstripe's are); the provider's current state is the
   truth, so applying events in any order converges on it.
3. **Apply** it to `subscriptions`, make sure the license exists, audit the change.
4. **Write the outbox**, with idempotency keys derived from the state transition, so a transition is
   announced once however many events report it.

Steps 2 to 4 for subscriptions live in `server.billing.sync`. Any exception rolls the whole
transaction back; the event is recorded as failed (`processed_at` stays
empty, `error` says why) and the route answers 500, so the provider delivers it again.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from server.billing.base import LIVE_STATUSES, BillingProvider, subscription_id_of
from server.billing.sync import MANAGE_PATH, WebhookContext, sync_subscription
from server.db import Database
from server.licensing import record_audit
from server.models import Checkout, Customer, StripeEvent
from server.outbox import enqueue

__all__ = ["MANAGE_PATH", "WebhookContext", "handle_billing_event", "mark_checkout_expired", "process_event"]

log = logging.getLogger("pospal.webhooks")

SUBSCRIPTION_EVENTS = frozenset(
    {
        "checkout.session.completed",
        "invoice.paid",
        "invoice.payment_succeeded",
        "invoice.payment_failed",
        "customer.subscription.created",
        "customer.subscription.updated",
        "customer.subscription.deleted",
    }
)
FLAGGED_EVENTS = frozenset({"charge.refunded", "charge.dispute.created"})


def process_event(
    db: Database, event: Mapping[str, Any], provider: BillingProvider, ctx: WebhookContext
) -> str:
    """Handle one verified event in its own transaction; on failure record the error and re-raise."""
    try:
        with db.transaction() as session:
            return handle_billing_event(session, event, provider, ctx)
    except Exception as exc:
        log.error(
            "webhook_failed",
            extra={"event_id": event.get("id"), "type": event.get("type"), "error": type(exc).__name__},
        )
        _record_failure(db, event, ctx, f"{type(exc).__name__}: {exc}")
        raise


def handle_billing_event(
    session: Session, event: Mapping[str, Any], provider: BillingProvider, ctx: WebhookContext
) -> str:
    """Apply one verified event inside the caller's transaction.

    Returns "duplicate" (already processed), "processed", or "ignored" (a type we do not act on, still
    recorded so it is not handled twice).
    """
    event_id = str(event["id"])
    event_type = str(event.get("type") or "")
    now = ctx.clock.now()
    record = _claim_event(session, event, now)
    if record.processed_at is not None:
        return "duplicate"
    outcome = "processed"
    if event_type in SUBSCRIPTION_EVENTS:
        _apply_subscription_event(session, event, provider, ctx, now)
    elif event_type in FLAGGED_EVENTS:
        _flag(session, record, event, ctx, now)
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
) -> None:
    obj = (event.get("data") or {}).get("object") or {}
    checkout = None
    if event.get("type") == "checkout.session.completed":
        checkout = _find_checkout(session, obj)
    subscription_id = subscription_id_of(event)
    if subscription_id is None:
        # A one-off invoice or a checkout without a subscription: nothing to mirror.
        return
    row, current = sync_subscription(
        session,
        provider,
        subscription_id,
        ctx,
        now,
        event=event,
        customer_hint=checkout.customer_id if checkout else None,
    )
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


def _flag(
    session: Session, record: StripeEvent, event: Mapping[str, Any], ctx: WebhookContext, now: datetime
) -> None:
    """Record a refund or dispute for the operator; the license is left alone (a person decides)."""
    obj = (event.get("data") or {}).get("object") or {}
    record.flagged = True
    provider_customer = obj.get("customer")
    if isinstance(provider_customer, Mapping):
        provider_customer = provider_customer.get("id")
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
