"""Stripe billing against localstripe, a real fake-Stripe server process, and this server as a process.

The subscription is made the way a Dashboard user or script would: a customer and a plan-based
subscription paid with `pm_card_visa`, created through the official SDK. localstripe then delivers its
signed webhooks (old API shape, as it does) to our running server, which verifies them, re-fetches the
subscription from localstripe, and licenses the customer; an agent activating with an emailed code gets
an active token. Cancelling the subscription in Stripe turns the next refresh into "canceled".
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import httpx
import pytest
import stripe
from sqlalchemy import select

from server.models import Customer, Subscription
from tests.server.conftest import MachineKey, free_port, token_claims

WEBHOOK_SECRET = "whsec_localstripe_test"
EMAIL = "owner@localstripe.gr"


@pytest.fixture
def localstripe() -> Iterator[str]:
    """localstripe on a free port (it binds every interface; we only talk to 127.0.0.1)."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "localstripe", "--port", str(port), "--from-scratch"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{base}/v1/plans", headers={"Authorization": "Bearer sk_test_x"}, timeout=1)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("localstripe did not start") from None
                time.sleep(0.1)
        yield base
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=10)


def _wait_for(check: Callable[[], object], what: str, timeout_s: float = 30) -> object:
    """Poll `check` until it returns something truthy (webhooks arrive after localstripe's 1 s delay)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_localstripe_subscription_licenses_the_customer_and_cancel_ends_it(
    localstripe, start_server, database, login_code
):
    server = start_server(
        env={
            "POSPAL_BILLING": "stripe",
            "STRIPE_SECRET_KEY": "sk_test_localstripe",
            "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "STRIPE_PRICE_ID": "pospal-monthly",
            "STRIPE_API_BASE": localstripe,
        }
    )
    hook = httpx.post(
        f"{localstripe}/_config/webhooks/pospal",
        data={"url": f"{server.url}/v1/webhooks/stripe", "secret": WEBHOOK_SECRET},
    )
    assert hook.status_code == 200
    sdk = stripe.StripeClient("sk_test_localstripe", base_addresses={"api": localstripe})
    sdk.v1.plans.create(
        params={
            "id": "pospal-monthly",
            "amount": 2000,
            "currency": "eur",
            "interval": "month",
            "product": {"name": "POSPal"},
        }  # type: ignore[typeddict-item]
    )
    customer = sdk.v1.customers.create(
        params={
            "email": EMAIL,
            "payment_method": "pm_card_visa",
            "invoice_settings": {"default_payment_method": "pm_card_visa"},
        }
    )
    sub = sdk.v1.subscriptions.create(
        params={"customer": customer.id, "items": [{"plan": "pospal-monthly", "quantity": 2}]}  # type: ignore[list-item]
    )
    assert sub.status == "active"

    def stored() -> Subscription | None:
        with database.transaction() as session:
            return session.scalars(
                select(Subscription).where(Subscription.provider_subscription_id == sub.id)
            ).first()

    row = _wait_for(lambda: (s := stored()) is not None and s.status == "active" and s, "the subscription")
    assert row.quantity == 2 and row.provider == "stripe"
    with database.transaction() as session:
        ours = session.scalars(select(Customer).where(Customer.email == EMAIL)).one()
        assert ours.stripe_customer_id == customer.id

    machine = MachineKey(clock=None)  # signs with real time, like a real agent
    with httpx.Client(base_url=server.url, timeout=30) as client:
        code = login_code(client, EMAIL, "activate")
        activated = machine.activate(client, EMAIL, code)
        assert activated.status_code == 200, activated.text
        claims = token_claims(activated.json()["token"])
        assert claims["status"] == "active" and claims["seats"] == 2

        sdk.v1.subscriptions.cancel(sub.id)
        _wait_for(lambda: (s := stored()) is not None and s.status == "canceled", "the cancellation")
        refreshed = machine.refresh(client)
        assert refreshed.status_code == 200, refreshed.text
        assert token_claims(refreshed.json()["token"])["status"] == "canceled"
    assert "webhook_rejected" not in server.log()
