"""Mirror one provider subscription into our tables, and announce each state change once.

`fetch_subscription_state` is the provider half (no database): the subscription's current state and,
for an invoice event, the invoice's (does its payment wait for 3-D Secure?). `sync_subscription` is the
database half, run in a short write transaction: lock our row, apply the fetched state, make sure the
license exists, and queue the emails the transition calls for. A fetch older than the one our row
already mirrors (`provider_updated`: when that fetch started) is not applied over it, so two deliveries
racing for one subscription cannot put an old state back. Email idempotency keys name the transition
(`payment-failed:<sub>:<first failure>`), so the many events that may report one change announce it once.

A renewal whose payment waits for the bank's confirmation (SCA) is "payment needs confirming", not
"payment failed": the row keeps the invoice's `hosted_invoice_url` in `payment_action_url`, the token
carries it, and the owner gets `payment_action_required` with that link instead of "update your card".
The 7-day payment grace runs the same way; the first sync after the payment clears it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from pospal_protocol.clock import Clock
from server import seats
from server.billing.base import (
    FAILED_PAYMENT_STATUSES,
    LIVE_STATUSES,
    BillingProvider,
    ProviderInvoice,
    ProviderSubscription,
)
from server.errors import BillingError, NotAdopted
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
    # Only subscriptions of these prices are adopted when no checkout of ours made them (None: any).
    adoptable_prices: frozenset[str] | None = None

    @property
    def manage_url(self) -> str:
        """The page (email code, then Customer Portal) linked from billing emails."""
        return f"{self.public_url}{MANAGE_PATH}"


@dataclass(frozen=True)
class FetchedState:
    """What the provider says now about one subscription, fetched before any database transaction.

    `fetched_at` is when the fetch started (server clock); `invoice` is set when the event was about an
    invoice (its 3-D Secure state); `customer_email` when the provider customer may be new to us.
    """

    subscription: ProviderSubscription
    fetched_at: datetime
    invoice: ProviderInvoice | None = None
    customer_email: str | None = None


def fetch_subscription_state(
    provider: BillingProvider,
    subscription_id: str,
    now: datetime,
    *,
    invoice_id: str | None = None,
    knows_customer: Callable[[ProviderSubscription], bool] | None = None,
) -> FetchedState:
    """Ask the provider for a subscription's current state (and its invoice's); no database involved.

    `knows_customer` says whether we can name the subscription's customer without its e-mail; when it
    says no, the e-mail is fetched here too (adopting a subscription made in the Dashboard).
    """
    current = provider.fetch_subscription(subscription_id)
    invoice = None
    if invoice_id and current.status not in LIVE_STATUSES - FAILED_PAYMENT_STATUSES:
        # Only an unpaid renewal can wait for confirmation; a paid one clears the state anyway.
        invoice = provider.fetch_invoice(invoice_id)
    email = None
    if knows_customer is not None and not knows_customer(current):
        try:
            email = provider.fetch_customer_email(current.customer_id)
        except BillingError:
            email = None  # asked again inside the transaction, where a failure is reported
    return FetchedState(current, now, invoice, email)


def sync_subscription(
    session: Session,
    provider: BillingProvider,
    subscription_id: str,
    ctx: WebhookContext,
    now: datetime,
    *,
    event: Mapping[str, Any] | None = None,
    customer_hint: str | None = None,
    fetched: FetchedState | None = None,
    announce: bool = True,
) -> tuple[Subscription, ProviderSubscription]:
    """Bring our mirror of one subscription to the provider's state in `fetched`; announce transitions.

    Without `fetched` the provider is asked here, inside the caller's transaction: fine for a rare
    operator path, but webhooks fetch first (`fetch_subscription_state`) and then write briefly.
    Returns our row and the provider state it now mirrors. `announce=False` queues no e-mail: an import
    of customers who already pay (`server/pospal1.py`) is no transition they need to hear about.
    """
    if fetched is None:
        fetched = fetch_subscription_state(provider, subscription_id, now)
    current = fetched.subscription
    row = session.scalars(
        select(Subscription)
        .where(Subscription.provider_subscription_id == subscription_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).first()
    before: _Snapshot | None = None
    if row is None:
        _require_adoptable(fetched.subscription, ctx, customer_hint)
        row = _insert_subscription(session, provider, fetched, customer_hint, now)
        if row.status != "":
            before = _Snapshot.of(row)  # another transaction created it first; we now hold its lock
    else:
        before = _Snapshot.of(row)
    stamp = int(fetched.fetched_at.timestamp())
    if row.status == "" or stamp >= (row.provider_updated or 0):
        _apply(row, current, fetched.invoice, event, now, stamp)
    else:
        # A later fetch is already applied: ours is older and must not put an old state back.
        current = _mirrored(row, current)
    session.flush()
    customer = session.get(Customer, row.customer_id)
    assert customer is not None
    license_ = ensure_license_for_subscription(session, row, now)
    seats.reconcile(session, license_, now)  # a lowered quantity takes seats away, a raised one gives back
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
                # A seasonal pause changes what every till may do: the audit row says so.
                **(
                    {"paused": after.paused, "resumes_at": _iso(after.pause_resumes_at)}
                    if before is not None
                    and (before.paused, before.pause_resumes_at) != (after.paused, after.pause_resumes_at)
                    else {}
                ),
            },
            at=now,
        )
    if announce:
        _announce(session, customer, row, before, after, ctx, now)
    return row, current


def _require_adoptable(current: ProviderSubscription, ctx: WebhookContext, customer_hint: str | None) -> None:
    """Raise `NotAdopted` for a subscription we never saw, made outside our checkout, of another price.

    A Stripe account often sells more than POSPal (the old POSPal's QR menus, say): a subscription
    is taken for a POSPal license only when our checkout made it (its metadata or the checkout names the
    customer) or its price is on the allow-list.
    """
    if ctx.adoptable_prices is None or customer_hint or current.metadata.get("pospal_customer_id"):
        return
    if not set(current.price_ids) & ctx.adoptable_prices:
        prices = ", ".join(current.price_ids) or "none"
        raise NotAdopted(f"subscription {current.id} has price {prices}, not one of ours: not adopted")


def _mirrored(row: Subscription, fetched: ProviderSubscription) -> ProviderSubscription:
    """The provider state our row mirrors (what callers compare against), when we skip a stale fetch."""
    return replace(fetched, status=row.status, quantity=row.quantity)


def _insert_subscription(
    session: Session,
    provider: BillingProvider,
    fetched: FetchedState,
    customer_hint: str | None,
    now: datetime,
) -> Subscription:
    """Create our mirror row; if a concurrent event created it first, return that row, locked.

    Our new row starts with an empty status, so the caller can tell "created here" from "found".
    """
    current = fetched.subscription
    customer = _resolve_customer(session, provider, fetched, customer_hint, now)
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
    fetched: FetchedState,
    customer_hint: str | None,
    now: datetime,
) -> Customer:
    current = fetched.subscription
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
    # A subscription made outside our checkout (Dashboard, API): adopt the customer by email, in any
    # letter case (the Dashboard keeps what was typed, `Info@cafe.gr`; we store it lower-cased).
    email = fetched.customer_email or provider.fetch_customer_email(current.customer_id)
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
    row: Subscription,
    current: ProviderSubscription,
    invoice: ProviderInvoice | None,
    event: Mapping[str, Any] | None,
    now: datetime,
    stamp: int,
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
    if current.status not in FAILED_PAYMENT_STATUSES and current.status != "incomplete":
        row.payment_action_url = None  # paid (or ended): nothing waits for confirmation any more
    elif invoice is not None and invoice.subscription_id in (None, current.id):
        # The invoice's own state decides, whichever of payment_failed / payment_action_required came
        # first: "confirm the payment" when the bank waits for the owner, "update your card" otherwise.
        row.payment_action_url = (invoice.hosted_invoice_url or None) if invoice.needs_action else None
    row.paused = current.paused
    row.pause_resumes_at = _dt(current.pause_resumes_at) if current.paused else None
    row.updated_at = now
    row.provider_updated = max(row.provider_updated or 0, stamp)


def _short(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class _Snapshot:
    status: str
    quantity: int
    cancel_at_period_end: bool
    cancel_at: datetime | None
    first_failed_at: datetime | None
    current_period_end: datetime | None
    payment_action_url: str | None
    paused: bool = False
    pause_resumes_at: datetime | None = None

    @classmethod
    def of(cls, row: Subscription) -> _Snapshot:
        return cls(
            row.status,
            row.quantity,
            bool(row.cancel_at_period_end),
            row.cancel_at,
            row.first_failed_at,
            row.current_period_end,
            row.payment_action_url,
            bool(row.paused),
            row.pause_resumes_at,
        )


def _iso(at: datetime | None) -> str | None:
    return at.isoformat() if at is not None else None


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
    newly_failed = before is None or before.first_failed_at is None
    if after.first_failed_at is not None and after.payment_action_url is not None:
        if newly_failed or before is None or before.payment_action_url != after.payment_action_url:
            send(
                "payment_action_required",
                f"payment-action:{row.id}:{_short(after.payment_action_url)}",
                {"confirm_url": after.payment_action_url, "grace_days": PAYMENT_GRACE.days},
            )
    elif after.first_failed_at is not None and (
        newly_failed or (before is not None and before.payment_action_url is not None)
    ):
        # A card that really failed (or a confirmation that failed): the owner updates the card.
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
