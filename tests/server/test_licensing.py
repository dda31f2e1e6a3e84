"""server.licensing: token state from subscription rows, payment grace, cancellation, one license per sub."""

from __future__ import annotations

from datetime import timedelta

import pytest

from server import licensing
from server.models import AuditLog, License, Machine, Subscription


def sub(clock, **fields):
    base = {
        "id": "sub_1",
        "customer_id": "cus_1",
        "provider": "sandbox",
        "provider_subscription_id": "sub_x",
        "status": "active",
        "quantity": 3,
        "current_period_end": clock.now() + timedelta(days=20),
        "cancel_at": None,
        "cancel_at_period_end": False,
        "first_failed_at": None,
        "updated_at": clock.now(),
    }
    return Subscription(**{**base, **fields})


def lic(**fields):
    return License(
        **{
            "id": "lic_1",
            "customer_id": "cus_1",
            "status": "active",
            "plan": "pospal-monthly",
            "features": ["pos"],
            "comp_until": None,
            **fields,
        }
    )


def ts(value):
    return int(value.timestamp())


def test_active_subscription(clock):
    subscription = sub(clock)
    state = licensing.subscription_state(lic(), subscription, clock.now())
    assert state == {
        "status": "active",
        "seats": 3,
        "period_end": ts(subscription.current_period_end),
        "cancel_at": None,
    }


def test_past_due_grace_ends_seven_days_after_the_first_failure(clock):
    failed = clock.now() - timedelta(days=2)
    state = licensing.subscription_state(
        lic(), sub(clock, status="past_due", first_failed_at=failed), clock.now()
    )
    assert state["status"] == "past_due"
    assert state["payment_grace_end"] == ts(failed + timedelta(days=7))


def test_cancel_at_period_end_stays_active_until_then(clock):
    subscription = sub(clock, cancel_at_period_end=True)
    state = licensing.subscription_state(lic(), subscription, clock.now())
    assert state["status"] == "active"
    assert state["cancel_at"] == ts(subscription.current_period_end)


@pytest.mark.parametrize("status", ["canceled", "incomplete_expired", "paused"])
def test_ended_subscriptions_are_canceled(clock, status):
    assert licensing.subscription_state(lic(), sub(clock, status=status), clock.now())["status"] == "canceled"


def test_revoked_license_wins_over_an_active_subscription(clock):
    assert licensing.subscription_state(lic(status="revoked"), sub(clock), clock.now())["status"] == "revoked"


def test_operator_extension_keeps_a_lapsed_license_active_until_its_date(clock):
    until = clock.now() + timedelta(days=40)
    state = licensing.subscription_state(lic(comp_until=until), sub(clock, status="canceled"), clock.now())
    assert (state["status"], state["period_end"]) == ("active", ts(until))
    later = clock.now() + timedelta(days=41)
    assert licensing.subscription_state(lic(comp_until=until), sub(clock, status="canceled"), later)[
        "status"
    ] == ("canceled")


def test_license_claims_have_every_required_claim(clock):
    machine = Machine(id="m_1", fingerprint={"mac": "ab"}, terminal_name="Bar", public_key="k")
    claims = licensing.license_claims(machine, lic(), sub(clock), None, clock.now())
    for name in ("iss", "aud", "sub", "kind", "mid", "fp", "status", "iat", "nbf", "exp", "srv", "policy"):
        assert name in claims
    assert claims["exp"] - claims["iat"] == 14 * 86400
    assert claims["policy"]["payment_grace_s"] == 7 * 86400


def test_fingerprint_majority():
    bound = {"a": "1", "b": "2", "c": "3", "d": "4"}
    assert licensing.fingerprint_matches(bound, {"a": "1", "b": "2", "c": "3", "d": "x"})
    assert not licensing.fingerprint_matches(bound, {"a": "1", "b": "2", "c": "x", "d": "x"})


def test_ensure_license_is_idempotent_and_reuses_a_returning_customers_license(
    database, clock, seed_subscription
):
    customer_id, subscription_id, license_id = seed_subscription(email="owner@cafe.gr")
    with database.transaction() as session:
        subscription = session.get(Subscription, subscription_id)
        assert licensing.ensure_license_for_subscription(session, subscription).id == license_id
        subscription.status = "canceled"
    with database.transaction() as session:
        new = Subscription(
            customer_id=customer_id,
            provider="sandbox",
            provider_subscription_id="sub_new",
            status="active",
            quantity=1,
            updated_at=clock.now(),
        )
        session.add(new)
        session.flush()
        assert licensing.ensure_license_for_subscription(session, new, clock.now()).id == license_id
        assert session.query(AuditLog).filter_by(action="license.rebound").count() == 1
