"""A renewal waiting for 3-D Secure is "payment needs confirming", not "payment failed" (agent/core/state.py).

The server puts the invoice page in the token (`payment_action_url`) while the bank waits for the owner;
the state says so in both languages, carries the link for the window's "Confirm payment", and keeps the
same 7-day payment grace. A token without the link (the payment was confirmed) reads as before.
"""

from __future__ import annotations

from datetime import UTC, datetime

from agent.core.state import StatusInputs, compute_status
from tests.agent.tokenkit import DAY, HOUR, NOW, NOW_TS, claims

URL = "https://invoice.stripe.com/i/acct_1/test_YWNjdF8x"
T = NOW_TS


def _status(now: float, language: str = "en", **token) -> object:
    c = claims(status="past_due", payment_grace_end=T + 7 * DAY, **token)
    return compute_status(
        StatusInputs(
            now=datetime.fromtimestamp(now, UTC),
            claims=c,
            last_sync=NOW,
            fingerprint_match=True,
            language=language,
        )
    )


def test_payment_waiting_for_the_bank_is_its_own_reason_with_the_link():
    status = _status(T + HOUR, payment_action_url=URL)
    assert (status.license_state, status.licensed, status.reason) == (
        "licensed_renewal_required",
        True,
        "payment_action_required",
    )
    assert status.days_left == 7 and status.payment_action_url == URL
    assert "confirm" in status.message.lower() and "card" in status.message.lower()
    assert status.to_dict()["payment_action_url"] == URL
    failed = _status(T + HOUR)
    assert failed.reason == "payment_failed" and "payment_action_url" not in failed.to_dict()
    assert failed.message != status.message


def test_greek_message_differs_from_the_failed_card():
    needs = _status(T + HOUR, "el", payment_action_url=URL).message
    failed = _status(T + HOUR, "el").message
    assert "επιβεβαίωση" in needs.lower() and needs != failed


def test_same_seven_day_grace_then_orders_stop_but_the_link_stays():
    last = _status(T + 7 * DAY - 1, payment_action_url=URL)
    assert last.licensed and last.days_left == 1
    over = _status(T + 7 * DAY, payment_action_url=URL)
    assert (over.licensed, over.reason) == (False, "payment_grace_ended")
    assert over.payment_action_url == URL  # confirming still brings the till back


def test_only_web_links_are_offered():
    for bad in ("javascript:alert(1)", "file:///etc/passwd", 42, "https://" + "a" * 3000):
        status = _status(T + HOUR, payment_action_url=bad)
        assert status.reason == "payment_failed" and status.payment_action_url is None
