"""`SandboxBilling`: a built-in stand-in for Stripe, for demos and development. No money moves.

It plays the remote provider: its customers, checkout sessions, subscriptions and portal sessions live
in the `sandbox_objects` table (so several server instances share them), and every action on its pages
changes that state first and then produces a Stripe-shaped event that goes through the very same
`process_event` as a verified Stripe webhook, re-fetch included.

Pages (served by `server.api.billing`): `/sandbox/checkout/{id}` has "Pay", "Fail payment" and "Cancel";
once paid, it and the sandbox portal offer "Fail next payment", "Pay now" (recover), "Cancel at period
end", "Resume" and "Cancel now", which cover every billing email and state.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from pospal_protocol.clock import Clock
from server.billing.base import (
    CheckoutRequest,
    CheckoutSession,
    ProviderCustomer,
    ProviderInvoice,
    ProviderSubscription,
    QuantityPreview,
)
from server.db import Database
from server.errors import BillingError, NotFound, WebhookSignatureInvalid
from server.models import SandboxObject

PERIOD = timedelta(days=30)
UNIT_AMOUNT = 2000  # EUR 20.00 per terminal per period, in cents
CHECKOUT_ACTIONS = ("pay", "fail", "cancel")
SUBSCRIPTION_ACTIONS = (
    "fail_renewal",
    "require_action",
    "pay_now",
    "cancel_at_period_end",
    "resume",
    "cancel_now",
)


class SandboxBilling:
    """The sandbox provider; `apply_action` is what the sandbox page buttons call."""

    name = "sandbox"

    def __init__(self, db: Database, clock: Clock, public_url: str) -> None:
        self.db = db
        self.clock = clock
        self.public_url = public_url.rstrip("/")
        # Reads happen while a webhook transaction is open (the re-fetch). On SQLite that transaction
        # holds the write lock (BEGIN IMMEDIATE), so reads go through a plain engine that starts no
        # transaction: WAL readers never wait for the writer. PostgreSQL readers never block anyway.
        self._reader = (
            create_engine(db.url, connect_args={"check_same_thread": False}, pool_size=2, max_overflow=2)
            if db.is_sqlite
            else db.engine
        )

    # -- BillingProvider ---------------------------------------------------------------------------

    def find_or_create_customer(self, email: str, name: str | None, existing_id: str | None) -> str:
        """Reuse `existing_id` when the sandbox knows it, else create a sandbox customer."""
        with self.db.transaction() as session:
            if existing_id and session.get(SandboxObject, existing_id) is not None:
                return existing_id
            customer_id = _new_id("cus")
            self._put(session, customer_id, "customer", {"email": email, "name": name})
            return customer_id

    def create_checkout(self, request: CheckoutRequest) -> CheckoutSession:
        """Open a sandbox checkout; its URL is this server's `/sandbox/checkout/{id}` page."""
        session_id = _new_id("cs")
        data = {
            "status": "open",
            "customer": request.customer_id,
            "email": request.email,
            "quantity": request.quantity,
            "client_reference_id": request.client_reference_id,
            "metadata": dict(request.metadata),
            "success_url": request.success_url,
            "cancel_url": request.cancel_url,
            "subscription": None,
            "declined": False,
        }
        with self.db.transaction() as session:
            self._put(session, session_id, "checkout", data)
        return self._checkout(session_id, data)

    def fetch_checkout(self, session_id: str) -> CheckoutSession:
        """Return a sandbox checkout's state."""
        return self._checkout(session_id, self.get(session_id, "checkout"))

    def fetch_subscription(self, subscription_id: str) -> ProviderSubscription:
        """Return a sandbox subscription's current state; `BillingError` if there is none."""
        try:
            data = self.get(subscription_id, "subscription")
        except NotFound as exc:
            raise BillingError(f"no sandbox subscription {subscription_id}") from exc
        return ProviderSubscription(
            id=subscription_id,
            customer_id=data["customer"],
            status=data["status"],
            quantity=int(data["quantity"]),
            current_period_end=data.get("current_period_end"),
            cancel_at=data.get("cancel_at"),
            cancel_at_period_end=bool(data.get("cancel_at_period_end")),
            metadata=dict(data.get("metadata") or {}),
            paused=bool(data.get("pause_collection")),
            pause_resumes_at=(data.get("pause_collection") or {}).get("resumes_at"),
        )

    def set_pause(self, subscription_id: str, paused: bool, resumes_at: int | None) -> ProviderSubscription:
        """Set or clear the sandbox subscription's `pause_collection`."""
        with self.db.transaction() as session:
            row = self._row(session, subscription_id, "subscription")
            data = dict(row.data)
            data["pause_collection"] = {"behavior": "void", "resumes_at": resumes_at} if paused else None
            self._save(row, data)
        return self.fetch_subscription(subscription_id)

    def list_subscriptions(self, price_id: str | None) -> Iterator[ProviderSubscription]:
        """Every sandbox subscription (the sandbox has one price: ours)."""
        with self._reader.connect() as conn:
            kind = SandboxObject.kind == "subscription"
            ids = conn.execute(select(SandboxObject.id).where(kind).order_by(SandboxObject.id)).all()
        for (subscription_id,) in ids:
            yield self.fetch_subscription(subscription_id)

    def fetch_customer_email(self, customer_id: str) -> str | None:
        """Return a sandbox customer's email (None for an unknown customer)."""
        try:
            return self.get(customer_id, "customer").get("email")
        except NotFound:
            return None

    def fetch_customer(self, customer_id: str) -> ProviderCustomer:
        """Return a sandbox customer's email and name."""
        try:
            data = self.get(customer_id, "customer")
        except NotFound as exc:
            raise BillingError(f"no sandbox customer {customer_id}") from exc
        return ProviderCustomer(id=customer_id, email=data.get("email"), name=data.get("name"))

    def fetch_invoice(self, invoice_id: str) -> ProviderInvoice:
        """Return a sandbox invoice (written by the renewal actions)."""
        try:
            data = self.get(invoice_id, "invoice")
        except NotFound as exc:
            raise BillingError(f"no sandbox invoice {invoice_id}") from exc
        return ProviderInvoice(
            id=invoice_id,
            status=data["status"],
            subscription_id=data.get("subscription"),
            customer_id=data.get("customer"),
            hosted_invoice_url=data.get("hosted_invoice_url"),
            needs_action=bool(data.get("needs_action")) and data["status"] == "open",
        )

    def invoice_of_payment(self, payment_intent_id: str) -> str | None:
        """The sandbox has no PaymentIntents."""
        return None

    def customer_of_charge(self, charge_id: str) -> str | None:
        """The sandbox has no charges."""
        return None

    def create_portal_session(self, customer_id: str, return_url: str, locale: str | None = None) -> str:
        """Create a sandbox portal session (unguessable id) and return its page URL (English only)."""
        self.get(customer_id, "customer")
        portal_id = _new_id("bps")
        with self.db.transaction() as session:
            self._put(session, portal_id, "portal", {"customer": customer_id, "return_url": return_url})
        return f"{self.public_url}/sandbox/portal/{portal_id}"

    def verify_webhook(self, raw_body: bytes, sig_header: str | None) -> dict[str, Any]:
        """The sandbox sends no webhooks over HTTP, so every posted webhook is refused."""
        raise WebhookSignatureInvalid("sandbox billing accepts no webhooks")

    def preview_quantity(self, subscription_id: str, quantity: int) -> QuantityPreview:
        """The prorated charge for the rest of the period, as Stripe's upcoming-invoice preview gives it."""
        sub = self._subscription_data(subscription_id)
        return QuantityPreview(
            quantity_now=int(sub["quantity"]),
            quantity_new=quantity,
            amount_due=self._prorated(sub, quantity),
            currency="eur",
            period_end=sub.get("current_period_end"),
        )

    def update_quantity(
        self, subscription_id: str, quantity: int, idempotency_key: str
    ) -> ProviderSubscription:
        """Change the quantity now; the prorated invoice is "paid" at once (sandbox: no money moves)."""
        with self.db.transaction() as session:
            row = self._row(session, subscription_id, "subscription")
            sub = dict(row.data)
            if sub.get("quantity_key") != idempotency_key:
                sub.update(quantity=quantity, quantity_key=idempotency_key)
                self._save(row, sub)
        return self.fetch_subscription(subscription_id)

    def _subscription_data(self, subscription_id: str) -> dict[str, Any]:
        try:
            return self.get(subscription_id, "subscription")
        except NotFound as exc:
            raise BillingError(f"no sandbox subscription {subscription_id}") from exc

    def _prorated(self, sub: dict[str, Any], quantity: int) -> int:
        start, end = int(sub.get("current_period_start") or 0), int(sub.get("current_period_end") or 0)
        now = int(self.clock.now().timestamp())
        if end <= start or now >= end:
            return 0
        left = (end - max(now, start)) / (end - start)
        return max(0, round(UNIT_AMOUNT * (quantity - int(sub["quantity"])) * left))

    # -- sandbox state -----------------------------------------------------------------------------

    def get(self, object_id: str, kind: str) -> dict[str, Any]:
        """Return a sandbox object's committed data; raise `NotFound` when it does not exist."""
        with self._reader.connect() as conn:
            row = conn.execute(
                select(SandboxObject.kind, SandboxObject.data).where(SandboxObject.id == object_id)
            ).first()
        if row is None or row.kind != kind:
            raise NotFound(f"No sandbox {kind} {object_id}.")
        return dict(row.data)

    def subscriptions_of(self, customer_id: str) -> list[tuple[str, dict[str, Any]]]:
        """Return (id, data) of every sandbox subscription of a customer, oldest first."""
        with self._reader.connect() as conn:
            rows = conn.execute(
                select(SandboxObject.id, SandboxObject.data)
                .where(SandboxObject.kind == "subscription")
                .order_by(SandboxObject.created_at, SandboxObject.id)
            ).all()
        return [(r.id, dict(r.data)) for r in rows if r.data.get("customer") == customer_id]

    def close(self) -> None:
        """Release the SQLite read connections (tests and shutdown)."""
        if self._reader is not self.db.engine:
            self._reader.dispose()

    def apply_action(self, object_id: str, action: str) -> list[dict[str, Any]]:
        """Change sandbox state for a button press; return the Stripe-shaped events it produces.

        `object_id` is a checkout id for `CHECKOUT_ACTIONS` and a subscription id for
        `SUBSCRIPTION_ACTIONS`. The caller feeds the events to `process_event`.
        """
        now = int(self.clock.now().timestamp())
        with self.db.transaction() as session:
            if action in CHECKOUT_ACTIONS:
                return self._checkout_action(session, object_id, action, now)
            if action in SUBSCRIPTION_ACTIONS:
                return self._subscription_action(session, object_id, action, now)
        raise NotFound(f"Unknown sandbox action {action!r}.")

    def _checkout_action(
        self, session: Session, checkout_id: str, action: str, now: int
    ) -> list[dict[str, Any]]:
        row = self._row(session, checkout_id, "checkout")
        data = dict(row.data)
        if data["status"] != "open":
            return []
        if action == "fail":
            # As on Stripe, a declined card leaves the session open: the buyer may try again.
            data["declined"] = True
            self._save(row, data)
            return []
        if action == "cancel":
            data["status"] = "expired"
            self._save(row, data)
            return []
        subscription_id = _new_id("sub")
        sub = {
            "customer": data["customer"],
            "status": "active",
            "quantity": data["quantity"],
            "current_period_start": now,
            "current_period_end": now + int(PERIOD.total_seconds()),
            "cancel_at_period_end": False,
            "cancel_at": None,
            "metadata": dict(data.get("metadata") or {}),
        }
        self._put(session, subscription_id, "subscription", sub)
        data.update(status="complete", subscription=subscription_id, declined=False)
        self._save(row, data)
        checkout_obj = {"object": "checkout.session", "id": checkout_id, **data}
        return [
            _event("checkout.session.completed", checkout_obj, now),
            _event("invoice.paid", _invoice(subscription_id, sub, "paid"), now),
        ]

    def _subscription_action(
        self, session: Session, subscription_id: str, action: str, now: int
    ) -> list[dict[str, Any]]:
        row = self._row(session, subscription_id, "subscription")
        sub = dict(row.data)
        if sub["status"] == "canceled":
            return []
        if action in ("fail_renewal", "require_action"):
            # The renewal moves the period on and its invoice fails, or waits for the bank's 3-D Secure
            # confirmation, as on Stripe (which sends `invoice.payment_action_required` for the latter).
            if sub["status"] != "past_due":
                sub["current_period_start"] = sub["current_period_end"]
                sub["current_period_end"] += int(PERIOD.total_seconds())
            sub["status"] = "past_due"
            obj = _invoice(subscription_id, sub, "open")
            if action == "require_action":
                portal_id = _new_id("bps")
                self._put(session, portal_id, "portal", {"customer": sub["customer"], "return_url": ""})
                obj.update(
                    needs_action=True, hosted_invoice_url=f"{self.public_url}/sandbox/portal/{portal_id}"
                )
                event_type = "invoice.payment_action_required"
            else:
                event_type = "invoice.payment_failed"
            self._put(session, obj["id"], "invoice", obj)
        elif action == "pay_now":
            sub["status"] = "active"
            event_type, obj = "invoice.paid", _invoice(subscription_id, sub, "paid")
            self._settle_invoices(session, subscription_id)
        elif action == "cancel_at_period_end":
            sub.update(cancel_at_period_end=True, cancel_at=sub["current_period_end"])
            event_type, obj = "customer.subscription.updated", _subscription(subscription_id, sub)
        elif action == "resume":
            sub.update(cancel_at_period_end=False, cancel_at=None)
            event_type, obj = "customer.subscription.updated", _subscription(subscription_id, sub)
        else:
            sub.update(status="canceled", ended_at=now, cancel_at_period_end=False)
            event_type, obj = "customer.subscription.deleted", _subscription(subscription_id, sub)
        self._save(row, sub)
        return [_event(event_type, obj, now)]

    def _settle_invoices(self, session: Session, subscription_id: str) -> None:
        """Mark the subscription's open sandbox invoices paid (the owner paid or confirmed)."""
        for row in session.scalars(
            select(SandboxObject).where(SandboxObject.kind == "invoice").with_for_update()
        ):
            if row.data.get("subscription") == subscription_id and row.data.get("status") == "open":
                self._save(row, {**row.data, "status": "paid"})

    def _row(self, session: Session, object_id: str, kind: str) -> SandboxObject:
        row = session.get(SandboxObject, object_id, with_for_update=True)
        if row is None or row.kind != kind:
            raise NotFound(f"No sandbox {kind} {object_id}.")
        return row

    def _put(self, session: Session, object_id: str, kind: str, data: dict[str, Any]) -> None:
        now = self.clock.now()
        session.add(SandboxObject(id=object_id, kind=kind, data=data, created_at=now, updated_at=now))

    def _save(self, row: SandboxObject, data: dict[str, Any]) -> None:
        row.data = data  # a new dict, so SQLAlchemy sees the JSON change
        row.updated_at = self.clock.now()

    def _checkout(self, session_id: str, data: dict[str, Any]) -> CheckoutSession:
        if not data:
            raise BillingError(f"sandbox checkout {session_id} is empty")
        return CheckoutSession(
            id=session_id,
            url=f"{self.public_url}/sandbox/checkout/{session_id}",
            status=data["status"],
            customer_id=data.get("customer"),
            subscription_id=data.get("subscription"),
            client_reference_id=data.get("client_reference_id"),
        )


def _new_id(prefix: str) -> str:
    return f"sbx_{prefix}_{secrets.token_urlsafe(18)}"


def _event(event_type: str, obj: dict[str, Any], created: int) -> dict[str, Any]:
    return {
        "id": _new_id("evt"),
        "object": "event",
        "type": event_type,
        "created": created,
        "livemode": False,
        "data": {"object": obj},
    }


def _invoice(subscription_id: str, sub: dict[str, Any], status: str) -> dict[str, Any]:
    return {
        "object": "invoice",
        "id": _new_id("in"),
        "customer": sub["customer"],
        "subscription": subscription_id,
        "status": status,
        "amount_due": UNIT_AMOUNT * int(sub["quantity"]),
        "currency": "eur",
    }


def _subscription(subscription_id: str, sub: dict[str, Any]) -> dict[str, Any]:
    return {"object": "subscription", "id": subscription_id, **sub}
