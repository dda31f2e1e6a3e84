"""A paused subscription on the till: `licensed_cancelled` for seed POS apps, reason `paused`, en and el."""

from __future__ import annotations

from agent.core.state import StatusInputs, compute_status
from tests.agent.tokenkit import DAY, NOW, NOW_TS, claims


def _status(lang: str = "en", **overrides):
    inputs = StatusInputs(
        claims=claims(**overrides), fingerprint_match=True, last_sync=NOW, now=NOW, language=lang
    )
    return compute_status(inputs)


def test_a_pause_until_spring_stops_orders_and_says_until_when_in_greek_too():
    spring = NOW_TS + 150 * DAY
    en = _status(status="canceled", paused=True, resumes_at=spring)
    el = _status("el", status="canceled", paused=True, resumes_at=spring)

    assert (en.license_state, en.licensed, en.reason) == ("licensed_cancelled", False, "paused")
    assert en.message.startswith("POSPal is paused for the season, until ")
    assert "keeps its place" in en.message
    assert el.message.startswith("Το POSPal είναι σε παύση για τη σεζόν, έως τις ")


def test_a_pause_until_resumed_has_no_date():
    status = _status(status="canceled", paused=True, resumes_at=None)
    assert (status.license_state, status.reason) == ("licensed_cancelled", "paused")
    assert status.message.startswith("POSPal is paused for the season, until you resume it.")


def test_a_resumed_token_is_licensed_again():
    status = _status(status="active")
    assert (status.license_state, status.licensed) == ("licensed_active", True)
