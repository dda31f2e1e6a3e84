"""Mirror one provider subscription into our tables, and announce each state change once.

`sync_subscription` is step 3-5 of webhook handling (see `server.webhooks`): lock our row, re-fetch the
provider's current state, apply it, make sure the license exists, and queue the emails the transition
calls for. Email idempotency keys name the transition (`payment-failed:<sub>:<first failure>`), so the
many events that may report one change announce it once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from protocol.clock import Clock
from server.billing.base import FAILED_PAYMENT_STATUSES, LIVE_STATUSES, BillingProvider, ProviderSubscription
from server.errors import BillingError
from server.licensing import PAYMENT_GRACE, ensure_license_for_subscription, record_audit
from server.models import Customer, Subscription
from server.outbox import enqueue
from server.reminders import format_day

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


def sync_subscription(
    session: Session,
    provider: BillingProvider,
    subscription_id: str,
    ctx: WebhookContext,
    now: datetime,
    *,
    event: Mapping[str, Any] | None = None,
    customer_hint: str | None = None,
) -> tuple[Subscription, ProviderSubscription]:
    """Bring our mirror of one subscription to the provider's current state; announce transitions.

    Returns our row and the provider state it now mirrors.
    """
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
    return row, current


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
