"""Stripe's own published example objects, made into test scenarios.

The objects are `tests/fixtures/stripe/fixtures3.json` (MIT; its source and licence are beside it).

Each builder deep-copies Stripe's fixture for one resource and changes only what the scenario is about:
ids, amounts and times, plus the state fields the scenario needs (a subscription's status, an invoice's
status and page, a PaymentIntent's status, a customer's e-mail). Everything else keeps the shape real
Stripe sends at the pinned API version: the period on the subscription item, the invoice's subscription
under `parent.subscription_details`, an invoice's PaymentIntent under `payments`, a dispute naming only
its charge.
"""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any

from tests.server.stripe_stub import PRICE_ID

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "stripe" / "fixtures3.json"


@cache
def _resources() -> dict[str, Any]:
    return json.loads(FIXTURES.read_text(encoding="utf-8"))["resources"]


def fixture(kind: str, **changes: Any) -> dict[str, Any]:
    """A fresh copy of Stripe's example `kind` object with `changes` applied (top-level keys)."""
    obj = copy.deepcopy(_resources()[kind])
    obj.update(changes)
    return obj


def subscription(
    sub_id: str,
    customer: str,
    *,
    status: str = "active",
    quantity: int = 1,
    period_end: int = 1_800_000_000,
    metadata: dict | None = None,
    pause_collection: dict | None = None,
) -> dict[str, Any]:
    """A subscription at the current API version: its period and quantity live on the item.

    Collection is not paused unless `pause_collection` says so: Stripe's published example object has
    `pause_collection` set (`mark_uncollectible`), which the server rightly reads as a seasonal pause.
    """
    sub = fixture(
        "subscription",
        id=sub_id,
        customer=customer,
        status=status,
        metadata=metadata or {},
        cancel_at=None,
        cancel_at_period_end=False,
        latest_invoice=None,
        pause_collection=pause_collection,
    )
    item = sub["items"]["data"][0]
    item.update(
        id=f"si_{sub_id}",
        subscription=sub_id,
        quantity=quantity,
        current_period_start=period_end - 30 * 86400,
        current_period_end=period_end,
    )
    item["price"]["id"] = PRICE_ID
    item["price"]["unit_amount"] = 2000
    item["price"]["currency"] = "eur"
    return sub


def payment_intent(pi_id: str, customer: str, *, status: str) -> dict[str, Any]:
    """A PaymentIntent for one renewal: `requires_action` while the bank waits for 3-D Secure."""
    return fixture("payment_intent", id=pi_id, customer=customer, status=status, amount=2000, currency="eur")


def invoice(
    inv_id: str,
    sub_id: str,
    customer: str,
    *,
    status: str = "open",
    intent: dict[str, Any] | None = None,
    created: int = 1_768_478_400,
) -> dict[str, Any]:
    """A renewal invoice, its subscription under `parent`, its PaymentIntent under `payments` (expanded)."""
    inv = fixture(
        "invoice",
        id=inv_id,
        customer=customer,
        status=status,
        amount_due=2000,
        amount_remaining=2000,
        currency="eur",
        created=created,
        billing_reason="subscription_cycle",
        hosted_invoice_url=f"https://invoice.stripe.com/i/acct_test/{inv_id}",
    )
    inv["parent"] = {
        "type": "subscription_details",
        "quote_details": None,
        "subscription_details": {"metadata": {}, "subscription": sub_id},
    }
    payments = []
    if intent is not None:
        payment = fixture(
            "invoice_payment", id=f"inpay_{inv_id}", invoice=inv_id, amount_requested=2000, currency="eur"
        )
        payment["payment"] = {"type": "payment_intent", "payment_intent": intent}
        payments.append(payment)
    inv["payments"] = {"object": "list", "data": payments, "has_more": False, "url": "/v1/invoice_payments"}
    return inv


def customer(cus_id: str, email: str, name: str = "Cafe Nikos") -> dict[str, Any]:
    """A customer with its e-mail as the Dashboard or portal keeps it (letter case included)."""
    return fixture("customer", id=cus_id, email=email, name=name)


def charge(ch_id: str, cus_id: str, amount: int = 2000) -> dict[str, Any]:
    """A card charge of `cus_id`."""
    return fixture("charge", id=ch_id, customer=cus_id, amount=amount, amount_captured=amount, currency="eur")


def dispute(dp_id: str, ch_id: str, amount: int = 2000) -> dict[str, Any]:
    """A dispute: it names its charge and no customer."""
    return fixture("dispute", id=dp_id, charge=ch_id, amount=amount, currency="eur", reason="fraudulent")


def checkout_session(cs_id: str, cus_id: str, sub_id: str, reference: str | None = None) -> dict[str, Any]:
    """A completed subscription-mode Checkout Session."""
    return fixture(
        "checkout.session",
        id=cs_id,
        customer=cus_id,
        subscription=sub_id,
        status="complete",
        mode="subscription",
        payment_status="paid",
        client_reference_id=reference,
        amount_total=2000,
    )
