"""Events for one subscription, in any order and any number of times, converge on the provider's state.

Hypothesis plays Stripe: it moves one subscription through renewals, failed payments, recoveries,
seat changes, cancellations and resumptions, emitting the matching event (with the payload of that
moment) at each step, and delivers those events interleaved with the changes, out of order and
duplicated, until every event has arrived at least once. After every delivery our stored state must
equal the provider's state at that moment (a duplicate changes nothing), the final state must equal
the provider's, and each email is queued at most once.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field, replace
from datetime import datetime

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from server.billing.base import FAILED_PAYMENT_STATUSES, ProviderInvoice, ProviderSubscription
from server.models import Customer, Outbox, StripeEvent, Subscription
from server.webhooks import WebhookContext, process_event

MONTH = 30 * 86400
ACTIONS = ("renew_ok", "renew_fail", "recover", "cancel_at_period_end", "resume", "seats", "delete")


@dataclass
class ProviderModel:
    """The provider side of one subscription; `apply` changes it and returns the event it emits."""

    sub: ProviderSubscription
    emitted: list[dict] = field(default_factory=list)

    def snapshot_event(self, event_type: str, created: int) -> dict:
        s = self.sub
        obj = {
            "object": "subscription",
            "id": s.id,
            "customer": s.customer_id,
            "status": s.status,
            "quantity": s.quantity,
            "current_period_end": s.current_period_end,
            "cancel_at_period_end": s.cancel_at_period_end,
            "cancel_at": s.cancel_at,
        }
        if event_type.startswith("invoice."):
            obj = {
                "object": "invoice",
                "id": "in_" + secrets.token_hex(6),
                "subscription": s.id,
                "customer": s.customer_id,
            }
        evt = {
            "id": "evt_" + secrets.token_hex(10),
            "type": event_type,
            "created": created,
            "data": {"object": obj},
        }
        self.emitted.append(evt)
        return evt

    def apply(self, action: str, seats: int, created: int) -> None:
        s = self.sub
        if s.status == "canceled":
            return  # a deleted subscription never changes again
        if action == "renew_ok":
            self.sub = replace(s, status="active", current_period_end=s.current_period_end + MONTH)
            kind = "invoice.paid"
        elif action == "renew_fail":
            self.sub = replace(s, status="past_due", current_period_end=s.current_period_end + MONTH)
            kind = "invoice.payment_failed"
        elif action == "recover":
            if s.status != "past_due":
                return
            self.sub = replace(s, status="active")
            kind = "invoice.payment_succeeded"
        elif action == "cancel_at_period_end":
            self.sub = replace(s, cancel_at_period_end=True, cancel_at=s.current_period_end)
            kind = "customer.subscription.updated"
        elif action == "resume":
            self.sub = replace(s, cancel_at_period_end=False, cancel_at=None)
            kind = "customer.subscription.updated"
        elif action == "seats":
            self.sub = replace(s, quantity=seats)
            kind = "customer.subscription.updated"
        else:
            self.sub = replace(s, status="canceled", cancel_at_period_end=False)
            kind = "customer.subscription.deleted"
        self.snapshot_event(kind, created)


class ModelProvider:
    """A `BillingProvider` whose only truth is the models (the re-fetch reads them)."""

    name = "stripe"

    def __init__(self) -> None:
        self.models: dict[str, ProviderModel] = {}
        self.emails: dict[str, str] = {}

    def fetch_subscription(self, subscription_id: str) -> ProviderSubscription:
        return self.models[subscription_id].sub

    def fetch_customer_email(self, customer_id: str) -> str | None:
        return self.emails.get(customer_id)

    def fetch_invoice(self, invoice_id: str) -> ProviderInvoice:
        # The models' renewals fail outright (no 3-D Secure): the invoice is open, nothing to confirm.
        return ProviderInvoice(id=invoice_id, status="open")


def _ts(value: datetime | None) -> int | None:
    return int(value.timestamp()) if value is not None else None


def _stored(database, sub_id: str) -> Subscription:
    with database.transaction() as session:
        return session.scalars(
            select(Subscription).where(Subscription.provider_subscription_id == sub_id)
        ).one()


def _assert_matches(database, model: ProviderModel) -> None:
    row = _stored(database, model.sub.id)
    s = model.sub
    assert row.status == s.status
    assert row.quantity == s.quantity
    assert _ts(row.current_period_end) == s.current_period_end
    assert row.cancel_at_period_end == s.cancel_at_period_end
    assert _ts(row.cancel_at) == (s.cancel_at or (s.current_period_end if s.cancel_at_period_end else None))
    # The payment grace runs exactly while a payment is outstanding.
    assert (row.first_failed_at is not None) == (s.status in FAILED_PAYMENT_STATUSES)


action_strategy = st.tuples(st.sampled_from(ACTIONS), st.integers(min_value=1, max_value=5))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_order_and_duplication_converges_on_the_providers_state(database, clock, data):
    provider = ModelProvider()
    ctx = WebhookContext(clock=clock, public_url="http://testserver", system_admin_email="ops@pospal.gr")
    tag = secrets.token_hex(6)
    sub_id, customer_ref, email = f"sub_{tag}", f"cus_{tag}", f"owner-{tag}@cafe.gr"
    provider.emails[customer_ref] = email
    with database.transaction() as session:
        session.add(Customer(email=email, stripe_customer_id=customer_ref, created_at=clock.now()))
    start = int(clock.now().timestamp())
    model = ProviderModel(
        ProviderSubscription(
            id=sub_id,
            customer_id=customer_ref,
            status="active",
            quantity=1,
            current_period_end=start + MONTH,
            cancel_at=None,
            cancel_at_period_end=False,
        )
    )
    provider.models[sub_id] = model
    model.snapshot_event("checkout.session.completed", start)
    actions = data.draw(st.lists(action_strategy, min_size=1, max_size=6), label="provider changes")
    delivered: set[str] = set()

    def deliver(evt: dict) -> None:
        clock.advance(60)
        outcome = process_event(database, evt, provider, ctx)
        assert outcome == ("duplicate" if evt["id"] in delivered else "processed")
        delivered.add(evt["id"])
        if outcome == "processed":
            # A new event re-fetches, so whatever its payload says, we now hold the provider's state.
            _assert_matches(database, model)

    pending = list(actions)
    for _ in range(40):
        moves = (["change"] if pending else []) + ["deliver"]
        if data.draw(st.sampled_from(moves), label="next") == "change":
            action, seats = pending.pop(0)
            clock.advance(3600)
            model.apply(action, seats, int(clock.now().timestamp()))
        else:
            deliver(model.emitted[data.draw(st.integers(0, len(model.emitted) - 1), label="event")])
        if not pending and delivered >= {e["id"] for e in model.emitted}:
            break
    # The provider changes nothing more, but keeps delivering: everything arrives at least once.
    while pending:
        action, seats = pending.pop(0)
        model.apply(action, seats, int(clock.now().timestamp()))
    rest = [e for e in model.emitted if e["id"] not in delivered]
    for evt in data.draw(st.permutations(rest), label="late deliveries"):
        deliver(evt)
    _assert_matches(database, model)

    with database.transaction() as session:
        ids = [e["id"] for e in model.emitted]
        processed = session.scalars(select(StripeEvent).where(StripeEvent.event_id.in_(ids))).all()
        assert len(processed) == len(ids) and all(p.processed_at is not None for p in processed)
        mails = session.scalars(select(Outbox).where(Outbox.to_email == email)).all()
    templates = [m.template for m in mails]
    assert templates.count("welcome") <= 1
    assert len(templates) == len(set((m.template, m.idempotency_key) for m in mails))
    renew_fails = sum(1 for a, _ in actions if a == "renew_fail")
    assert templates.count("payment_failed") <= renew_fails
    # Whoever saw the subscription live hears about its end, once; nobody hears of an end alone.
    seen_live = "welcome" in templates or "payment_failed" in templates
    ended = model.sub.status == "canceled"
    assert templates.count("subscription_cancelled") == (1 if ended and seen_live else 0)


def test_model_provider_is_honest_about_stale_payloads(database, clock):
    """The fake above must really hand out stale payloads, or the property test proves little."""
    model = ProviderModel(ProviderSubscription("sub_x", "cus_x", "active", 1, 1_800_000_000, None, False))
    first = model.snapshot_event("checkout.session.completed", 1)
    model.apply("renew_fail", 1, 2)
    model.apply("seats", 3, 3)
    assert model.emitted[1]["data"]["object"]["object"] == "invoice"
    assert model.emitted[2]["data"]["object"]["status"] == "past_due"
    assert model.sub.quantity == 3 and model.emitted[2]["data"]["object"]["quantity"] == 3
    assert first["data"]["object"]["status"] == "active"
    # The earlier snapshot stays as it was sent: stale now that the subscription moved on.
    assert first["data"]["object"]["status"] != model.sub.status == "past_due"
    assert first["data"]["object"]["quantity"] == 1 != model.sub.quantity
