"""The seasonal pause against the Stripe stand-in: pause for the winter, the tills' tokens at each step,
resume from the tray or by date, and the webhook of a pause made in Stripe's portal."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from server.billing.stripe import StripeBilling
from server.models import Customer
from tests.server.conftest import token_claims
from tests.server.stripe_stub import (
    PRICE_ID,
    WEBHOOK_SECRET,
    event,
    sign,
    start_stripe_stub,
    stripe_settings,
    subscription,
)

EMAIL = "bar@ammos-beach.gr"


@pytest.fixture
def stub():
    stub, server = start_stripe_stub()
    stub.customers["cus_beach"] = {"id": "cus_beach", "object": "customer", "email": EMAIL}
    stub.subscriptions["sub_beach"] = subscription("sub_beach", "cus_beach", quantity=2)
    yield stub
    server.shutdown()
    server.server_close()


@pytest.fixture
def beach(settings, clock, database, mailer, stub):
    from server.app import create_app

    billing = StripeBilling(
        "sk_test_stub", WEBHOOK_SECRET, PRICE_ID, api_base=stub.url, max_network_retries=0
    )
    app = create_app(
        stripe_settings(settings, stub.url),
        clock=clock,
        db=database,
        mailer=mailer,
        billing=billing,
        start_worker=False,
    )
    with database.transaction() as session:
        session.add(
            Customer(email=EMAIL, stripe_customer_id="cus_beach", locale="el", created_at=clock.now())
        )
    with TestClient(app, raise_server_exceptions=False) as client:
        assert (
            _deliver(
                client, event("customer.subscription.created", stub.subscriptions["sub_beach"])
            ).status_code
            == 200
        )
        yield client


def _deliver(client, evt):
    raw = json.dumps(evt).encode()
    return client.post(
        "/v1/webhooks/stripe",
        content=raw,
        headers={"Content-Type": "application/json", "Stripe-Signature": sign(raw)},
    )


def _tills(beach, make_machine, login_code):
    tills = []
    for name in ("Bar", "Beach"):
        till = make_machine(terminal_name=name)
        assert till.activate(beach, EMAIL, login_code(beach, EMAIL)).status_code == 200
        tills.append(till)
    return tills


def _claims(client, till):
    answer = till.refresh(client)
    assert answer.status_code == 200, answer.text
    return token_claims(answer.json()["token"])


def test_pause_for_the_winter_then_resume_from_the_tray(beach, stub, make_machine, login_code, clock):
    bar, sea = _tills(beach, make_machine, login_code)
    spring = clock.now() + timedelta(days=150)

    paused = beach.post(
        "/v1/subscription/pause",
        json={"email": EMAIL, "code": login_code(beach, EMAIL, "owner"), "resumes_at": spring.isoformat()},
    )

    assert paused.status_code == 200, paused.text
    assert paused.json()["paused"] is True
    assert stub.subscriptions["sub_beach"]["pause_collection"] == {
        "behavior": "void",  # Stripe collects nothing while paused
        "resumes_at": int(spring.timestamp()),
    }
    for till in (bar, sea):
        claims = _claims(beach, till)
        assert (claims["status"], claims["paused"], claims["resumes_at"]) == (
            "canceled",
            True,
            int(spring.timestamp()),
        )
        assert claims["policy"]["sync_s"] == 60  # a resume reaches every till within a minute
        assert claims["seats"] == 2

    # Resume at once from the tray: this till proves the owner, then asks.
    proof = bar.post(beach, "/v1/owner", {"email": EMAIL, "code": login_code(beach, EMAIL, "owner")})
    assert proof.status_code == 200, proof.text
    resumed = bar.post(beach, "/v1/subscription/resume", {})
    assert (resumed.status_code, resumed.json()["paused"]) == (200, False)
    assert stub.subscriptions["sub_beach"]["pause_collection"] is None
    for till in (bar, sea):
        claims = _claims(beach, till)
        assert (claims["status"], claims.get("paused"), claims["mid"]) == ("active", None, till.machine_id)
        assert claims["policy"]["sync_s"] == 21600


def test_a_till_without_the_owners_proof_cannot_pause(beach, make_machine, login_code):
    bar, _ = _tills(beach, make_machine, login_code)
    answer = bar.post(beach, "/v1/subscription/pause", {})
    assert (answer.status_code, answer.json()["error"]) == (403, "owner_proof_required")


def test_an_expired_pause_resumes_by_itself(beach, make_machine, login_code, clock):
    bar, _ = _tills(beach, make_machine, login_code)
    soon = clock.now() + timedelta(days=1)
    code = login_code(beach, EMAIL, "owner")
    assert beach.post(
        "/v1/subscription/pause", json={"email": EMAIL, "code": code, "resumes_at": soon.isoformat()}
    ).json()["paused"]
    assert _claims(beach, bar)["status"] == "canceled"

    clock.advance(2 * 86400)  # no webhook, no request from anyone

    assert _claims(beach, bar)["status"] == "active"


def test_a_pause_made_in_stripes_portal_reaches_the_tills_by_webhook(beach, stub, make_machine, login_code):
    bar, _ = _tills(beach, make_machine, login_code)
    stub.subscriptions["sub_beach"]["pause_collection"] = {"behavior": "void", "resumes_at": None}

    assert (
        _deliver(beach, event("customer.subscription.updated", stub.subscriptions["sub_beach"])).status_code
        == 200
    )

    claims = _claims(beach, bar)
    assert (claims["status"], claims["paused"], claims["resumes_at"]) == (
        "canceled",
        True,
        None,
    )  # until resumed
