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

Any exception rolls the whole transaction back; the event is recorded as failed (`processed_at` stays
empty, `error` says why) and the route answers 500, so the provider delivers it again.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from server.billing.base import (
    FAILED_PAYMENT_STATUSES,
    LIVE_STATUSES,
    BillingProvider,
    ProviderSubscription,
    subscription_id_of,
)
from server.clock import Clock
from server.db import Database
from server.errors import BillingError
from server.licensing import PAYMENT_GRACE, ensure_license_for_subscription, record_audit
from server.models import Checkout, Customer, StripeEvent, Subscription
from server.outbox import enqueue
from server.reminders import format_day

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
ENDED_STATUSES = frozenset({"canceled", "incomplete_expired"})
MANAGE_PATH = "/billing/manage"


@dataclass(frozen=True)
class WebhookContext:
    """What event handling needs besides the session and the provider."""

    clock: Clock
    public_url: str
    system_admin_email: str | None = None

    @property
    def manage_url(self) -> str:
        """The page (email code, then Customer Portal) linked from billing emails."""
        return f"{self.public_url}{MANAGE_PATH}"


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
    row = sync_subscription(
        session,
        provider,
        subscription_id,
        ctx,
        now,
        event=event,
        customer_hint=checkout.customer_id if checkout else None,
    )
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


def sync_subscription(
    session: Session,
    provider: BillingProvider,
    subscription_id: str,
    ctx: WebhookContext,
    now: datetime,
    *,
    event: Mapping[str, Any] | None = None,
    customer_hint: str | None = None,
) -> Subscription:
    """Bring our mirror of one subscription to the provider's current state; announce transitions."""
    # Lock our row first, then fetch: two concurrent events for one subscription are serialised, and
    # the one that commits last also fetched last.
    row = session.scalars(
        select(Subscription)
        .where(Subscription.provider_subscription_id == subscription_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).first()
    current = provider.fetch_subscription(subscription_id)
    before: _Snapshot | None = None
    if row is None:
        row = _insert_subscription(session, provider, current, customer_hint, now)
        if row.status != "":
            # Another transaction created it first (PostgreSQL); we now hold its lock, so fetch again
            # (theirs may have fetched after us) and treat this as an update.
            before = _Snapshot.of(row)
            current = provider.fetch_subscription(subscription_id)
    else:
        before = _Snapshot.of(row)
    _apply(row, current, event, now)
    session.flush()
    customer = session.get(Customer, row.customer_id)
    assert customer is not None
    license_ = ensure_license_for_subscription(session, row, now)
    after = _Snapshot.of(row)
    if before != after:
        record_audit(
            session,
            actor=f"webhook:{event.get('id') if event else 'sync'}",
            action="subscription.synced",
            license_id=license_.id,
            detail={
                "status": row.status,
                "quantity": row.quantity,
                "before": before.status if before else None,
            },
            at=now,
        )
    _announce(session, customer, row, before, after, ctx, now)
    return row


def _insert_subscription(
    session: Session,
    provider: BillingProvider,
    current: ProviderSubscription,
    customer_hint: str | None,
    now: datetime,
) -> Subscription:
    """Create our mirror row; if a concurrent event created it first, return that row, locked.

    Our new row starts with an empty status, so the caller can tell "created here" from "found".
    """
    customer = _resolve_customer(session, provider, current, customer_hint, now)
    row = Subscription(
        customer_id=customer.id,
        provider=provider.name,
        provider_subscription_id=current.id,
        status="",
        quantity=current.quantity,
        cancel_at_period_end=False,
        updated_at=now,
        provider_updated=0,
    )
    try:
        with session.begin_nested():
            session.add(row)
    except IntegrityError:
        existing = session.scalars(
            select(Subscription)
            .where(Subscription.provider_subscription_id == current.id)
            .with_for_update()
            .execution_options(populate_existing=True)
        ).one()
        return existing
    return row


def _resolve_customer(
    session: Session,
    provider: BillingProvider,
    current: ProviderSubscription,
    customer_hint: str | None,
    now: datetime,
) -> Customer:
    candidates = [customer_hint, current.metadata.get("pospal_customer_id")]
    for customer_id in candidates:
        if customer_id:
            found = session.get(Customer, customer_id)
            if found is not None:
                if found.stripe_customer_id is None:
                    found.stripe_customer_id = current.customer_id
                return found
    found = session.scalars(
        select(Customer).where(Customer.stripe_customer_id == current.customer_id)
    ).first()
    if found is not None:
        return found
    # A subscription made outside our checkout (Dashboard, API): adopt the customer by email.
    email = provider.fetch_customer_email(current.customer_id)
    if not email:
        raise BillingError(f"subscription {current.id} has a customer without email")
    email = email.strip().lower()
    found = session.scalars(select(Customer).where(Customer.email == email)).first()
    if found is None:
        created = Customer(email=email, stripe_customer_id=current.customer_id, locale="en", created_at=now)
        try:
            with session.begin_nested():
                session.add(created)
            return created
        except IntegrityError:
            # A concurrent event adopted the same customer first.
            found = session.scalars(select(Customer).where(Customer.email == email)).one()
    if found.stripe_customer_id is None:
        found.stripe_customer_id = current.customer_id
    return found


def _dt(ts: int | None) -> datetime | None:
    return datetime.fromtimestamp(ts, UTC) if ts else None


def _apply(
    row: Subscription, current: ProviderSubscription, event: Mapping[str, Any] | None, now: datetime
) -> None:
    row.status = current.status
    row.quantity = max(1, current.quantity)
    row.current_period_end = _dt(current.current_period_end)
    row.cancel_at_period_end = current.cancel_at_period_end
    row.cancel_at = _dt(current.cancel_at) or (
        row.current_period_end if current.cancel_at_period_end else None
    )
    if current.status in FAILED_PAYMENT_STATUSES:
        if row.first_failed_at is None:
            # The payment grace starts at the failure, not at our (possibly delayed) delivery.
            failed_at = now
            if event and event.get("type") == "invoice.payment_failed" and event.get("created"):
                failed_at = min(now, _dt(int(event["created"])) or now)
            row.first_failed_at = failed_at
    else:
        row.first_failed_at = None
    row.updated_at = now
    created = int(event.get("created") or 0) if event else 0
    row.provider_updated = max(row.provider_updated or 0, created)


@dataclass(frozen=True)
class _Snapshot:
    status: str
    quantity: int
    cancel_at_period_end: bool
    cancel_at: datetime | None
    first_failed_at: datetime | None
    current_period_end: datetime | None

    @classmethod
    def of(cls, row: Subscription) -> _Snapshot:
        return cls(
            row.status,
            row.quantity,
            bool(row.cancel_at_period_end),
            row.cancel_at,
            row.first_failed_at,
            row.current_period_end,
        )


def _announce(
    session: Session,
    customer: Customer,
    row: Subscription,
    before: _Snapshot | None,
    after: _Snapshot,
    ctx: WebhookContext,
    now: datetime,
) -> None:
    """Queue the emails this transition calls for; each key names the transition, so once only."""

    def send(template: str, key: str, context: Mapping[str, Any]) -> None:
        enqueue(session, customer.email, template, customer.locale, context, key, now=now)

    was_live = before is not None and before.status in LIVE_STATUSES
    if after.status in ("active", "trialing") and not was_live:
        send(
            "welcome",
            f"welcome:{row.id}",
            {"name": customer.name or customer.email, "seats": row.quantity, "manage_url": ctx.manage_url},
        )
    if after.first_failed_at is not None and (before is None or before.first_failed_at is None):
        send(
            "payment_failed",
            f"payment-failed:{row.id}:{int(after.first_failed_at.timestamp())}",
            {"portal_url": ctx.manage_url, "grace_days": PAYMENT_GRACE.days},
        )
    if (
        before is not None
        and before.first_failed_at is not None
        and after.first_failed_at is None
        and after.status in ("active", "trialing")
    ):
        send("payment_recovered", f"payment-recovered:{row.id}:{int(before.first_failed_at.timestamp())}", {})
    ending = after.cancel_at if after.status in LIVE_STATUSES else None
    if ending is not None and (before is None or before.cancel_at != after.cancel_at):
        send(
            "subscription_ending",
            f"ending:{row.id}:{int(ending.timestamp())}",
            {"ends_on": format_day(ending), "portal_url": ctx.manage_url},
        )
    if after.status in ENDED_STATUSES and was_live:
        send("subscription_cancelled", f"cancelled:{row.id}", {})


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
