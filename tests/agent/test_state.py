"""The license state function, table by table, at the exact boundaries PRODUCT.md names
(agent/core/state.py)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from agent import messages
from agent.core.clock import FakeClock, TrustedClock
from agent.core.state import ERROR_REASONS, LICENSE_STATES, LicenseStatus, StatusInputs, compute_status
from pospal_protocol import fingerprint
from tests.agent.contract import PRODUCT_LICENSE_FIELDS
from tests.agent.tokenkit import DAY, FP, HOUR, NOW, NOW_TS, claims

T = NOW_TS  # the token was issued (and the last sync happened) at T
SYNCED = NOW
FIRST_SEEN = T - 10 * DAY
TRIAL = {
    "kind": "trial",
    "sub": "trial_01",
    "status": "trialing",
    "plan": "trial",
    "period_end": None,
    "trial_end": FIRST_SEEN + 30 * DAY,
}


def at(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def rolled_back(hours: float) -> bool:
    """The clock verdict after a restart with the wall clock `hours` behind the persisted high-water mark."""
    wall = FakeClock(at(T + 2 * DAY))
    wall.shift_wall(-hours * HOUR)
    return TrustedClock(wall, high_water=at(T + 2 * DAY)).verdict().rollback


def fp_match(matching: int) -> bool:
    """Fingerprint verdict with `matching` of the 5 bound components still the same."""
    current = {name: (h if i < matching else "0" * 64) for i, (name, h) in enumerate(sorted(FP.items()))}
    return fingerprint.match(FP, current).ok


@dataclass(frozen=True)
class Row:
    id: str
    now: float
    state: str
    licensed: bool
    reason: str
    days_left: int | None
    claims: dict[str, Any] | None = field(default_factory=dict)  # None: no token at all
    inputs: dict[str, Any] = field(default_factory=dict)

    def build(self, language: str = "en") -> StatusInputs:
        c = None if self.claims is None else claims(**self.claims)
        kw: dict[str, Any] = {
            "last_sync": SYNCED if c is not None else None,
            "fingerprint_match": True if c is not None else None,
        }
        kw.update(self.inputs)
        return StatusInputs(
            now=at(self.now), claims=c, language=language, machine_id="m_0001", agent_version="1.0.0", **kw
        )


# Every reason the message catalogue words a status for: the rows below (and the other tables that import
# this) must cover each. "active_nodate" is the wording of "active" when no date is known.
CATALOGUE_REASONS = frozenset(
    key.removeprefix("status.") for key in messages.keys() if key.startswith("status.")
) - {"active_nodate"}

ROWS = [
    # no token
    Row("missing", T, "license_missing", False, "not_activated", None, claims=None),
    Row(
        "provisional day 3 last second",
        T + 3 * DAY - 1,
        "trial_active",
        True,
        "provisional_trial",
        1,
        claims=None,
        inputs={"provisional_trial_started": SYNCED},
    ),
    Row(
        "provisional over after 3 days",
        T + 3 * DAY,
        "license_error",
        False,
        "offline_expired",
        0,
        claims=None,
        inputs={"provisional_trial_started": SYNCED},
    ),
    # 48 h since the last sync
    Row("active 1 s before 48 h", T + 48 * HOUR - 1, "licensed_active", True, "active", 19),
    Row("grace at exactly 48 h", T + 48 * HOUR, "licensed_grace", True, "offline_grace", 12),
    # the 14-day offline lease
    Row("grace last second of lease", T + 14 * DAY - 1, "licensed_grace", True, "offline_grace", 1),
    Row("lease over at 14 days", T + 14 * DAY, "license_error", False, "offline_expired", 0),
    # payment grace: 7 days from the first failure
    Row(
        "past due day 1",
        T + HOUR,
        "licensed_renewal_required",
        True,
        "payment_failed",
        7,
        claims={"status": "past_due", "payment_grace_end": T + 7 * DAY},
    ),
    Row(
        "past due last second of day 7",
        T + 7 * DAY - 1,
        "licensed_renewal_required",
        True,
        "payment_failed",
        1,
        claims={"status": "past_due", "payment_grace_end": T + 7 * DAY},
        inputs={"last_sync": at(T + 7 * DAY - 2)},
    ),
    Row(
        "payment grace over",
        T + 7 * DAY,
        "licensed_renewal_required",
        False,
        "payment_grace_ended",
        0,
        claims={"status": "past_due", "payment_grace_end": T + 7 * DAY},
    ),
    # cancellation at the end of the period
    Row(
        "cancel scheduled, 1 s before period end",
        T + 10 * DAY - 1,
        "licensed_active",
        True,
        "cancel_scheduled",
        1,
        claims={"period_end": T + 10 * DAY, "cancel_at": T + 10 * DAY},
        inputs={"last_sync": at(T + 10 * DAY - 60)},
    ),
    Row(
        "cancelled at period end (offline)",
        T + 10 * DAY,
        "licensed_cancelled",
        False,
        "subscription_ended",
        0,
        claims={"period_end": T + 10 * DAY, "cancel_at": T + 10 * DAY},
    ),
    Row(
        "cancelled by the server",
        T + HOUR,
        "licensed_cancelled",
        False,
        "subscription_ended",
        0,
        claims={"status": "canceled"},
    ),
    # a seasonal pause (issue 26): no orders, its own reason
    Row(
        "paused for the season",
        T + HOUR,
        "licensed_cancelled",
        False,
        "paused",
        None,
        claims={"status": "canceled", "paused": True, "resumes_at": T + 150 * DAY},
    ),
    # the trial's day 30
    Row(
        "trial day 30 last second",
        FIRST_SEEN + 30 * DAY - 1,
        "trial_active",
        True,
        "trial",
        1,
        claims=dict(TRIAL, iat=FIRST_SEEN + 29 * DAY),
        inputs={"last_sync": at(FIRST_SEEN + 29 * DAY)},
    ),
    Row(
        "trial over at day 30",
        FIRST_SEEN + 30 * DAY,
        "trial_expired",
        False,
        "trial_ended",
        0,
        claims=dict(TRIAL, iat=FIRST_SEEN + 29 * DAY),
        inputs={"last_sync": at(FIRST_SEEN + 29 * DAY)},
    ),
    Row(
        "trial ended by the server",
        T + HOUR,
        "trial_expired",
        False,
        "trial_ended",
        0,
        claims=dict(TRIAL, status="canceled"),
    ),
    Row(
        "trial offline: days count to the lease",
        T + 3 * DAY,
        "trial_active",
        True,
        "trial",
        11,
        claims=dict(TRIAL, trial_end=T + 29 * DAY),
    ),
    Row(
        "trial synced: days count to the trial end, not the lease",
        T + HOUR,
        "trial_active",
        True,
        "trial",
        29,
        claims=dict(TRIAL, trial_end=T + 29 * DAY),
        inputs={"last_sync": at(T + HOUR)},
    ),
    # clock set back, via the trusted clock
    Row(
        "clock back 23 h tolerated",
        T + HOUR,
        "licensed_active",
        True,
        "active",
        20,
        inputs={"clock_rollback": rolled_back(23)},
    ),
    Row(
        "clock back 25 h",
        T + HOUR,
        "license_error",
        False,
        "clock_rollback",
        None,
        inputs={"clock_rollback": rolled_back(25)},
    ),
    # fingerprint majority
    Row(
        "3 of 5 components match",
        T + HOUR,
        "licensed_active",
        True,
        "active",
        20,
        inputs={"fingerprint_match": fp_match(3)},
    ),
    Row(
        "2 of 5 components match",
        T + HOUR,
        "license_error",
        False,
        "machine_changed",
        None,
        inputs={"fingerprint_match": fp_match(2)},
    ),
    # the other errors
    Row("revoked", T + HOUR, "license_error", False, "revoked", None, claims={"status": "revoked"}),
    Row(
        "seats exceeded: a revocation that says why",
        T + HOUR,
        "license_error",
        False,
        "seats_exceeded",
        None,
        claims={"status": "revoked", "revoke_reason": "seats_exceeded"},
    ),
    Row(
        "token invalid",
        T + HOUR,
        "license_error",
        False,
        "token_invalid",
        None,
        claims=None,
        inputs={"token_problem": "token_invalid"},
    ),
    # precedence, pairwise down the chain
    Row(
        "rollback beats token_invalid",
        T,
        "license_error",
        False,
        "clock_rollback",
        None,
        claims=None,
        inputs={"clock_rollback": True, "token_problem": "token_invalid"},
    ),
    Row(
        "token_invalid beats revoked",
        T,
        "license_error",
        False,
        "token_invalid",
        None,
        claims={"status": "revoked"},
        inputs={"token_problem": "token_invalid"},
    ),
    Row(
        "revoked beats machine_changed",
        T,
        "license_error",
        False,
        "revoked",
        None,
        claims={"status": "revoked"},
        inputs={"fingerprint_match": False},
    ),
    Row(
        "machine_changed beats offline_expired",
        T + 15 * DAY,
        "license_error",
        False,
        "machine_changed",
        None,
        inputs={"fingerprint_match": False},
    ),
    Row(
        "offline_expired beats cancelled",
        T + 15 * DAY,
        "license_error",
        False,
        "offline_expired",
        0,
        claims={"status": "canceled"},
    ),
    Row(
        "offline_expired beats trial_expired",
        FIRST_SEEN + 31 * DAY,
        "license_error",
        False,
        "offline_expired",
        0,
        claims=dict(TRIAL, iat=FIRST_SEEN + 16 * DAY),
    ),
    Row(
        "cancelled beats renewal",
        T + 2 * DAY,
        "licensed_cancelled",
        False,
        "subscription_ended",
        0,
        claims={"status": "past_due", "payment_grace_end": T + 7 * DAY, "cancel_at": T + DAY},
    ),
    Row(
        "renewal beats grace",
        T + 3 * DAY,
        "licensed_renewal_required",
        True,
        "payment_failed",
        4,
        claims={"status": "past_due", "payment_grace_end": T + 7 * DAY},
    ),
    Row(
        "provisional trial ignored once a token exists",
        T + HOUR,
        "licensed_active",
        True,
        "active",
        20,
        inputs={"provisional_trial_started": at(T - 10 * DAY)},
    ),
]


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_state_table(row: Row):
    status = compute_status(row.build())
    assert (status.license_state, status.licensed, status.reason, status.days_left) == (
        row.state,
        row.licensed,
        row.reason,
        row.days_left,
    )


def test_table_covers_every_state_and_reason():
    assert {r.state for r in ROWS} == set(LICENSE_STATES)
    error_reasons = {r.reason for r in ROWS if r.state == "license_error"}
    assert error_reasons == set(ERROR_REASONS)


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_every_state_has_an_english_and_a_greek_message(row: Row):
    en = compute_status(row.build("en")).message
    el = compute_status(row.build("el")).message
    assert en and el and en != el
    assert re.search("[α-ωΑ-Ω]", el), el
    assert "{" not in en + el  # every placeholder was filled


def test_every_reason_has_its_own_message_and_fix():
    reasons = {r.reason for r in ROWS}
    bodies = {messages.text(f"status.{reason}") for reason in reasons}
    assert len(bodies) == len(reasons)
    for reason in reasons - {"active"}:
        assert messages.text(f"fix.{reason}", "en") and messages.text(f"fix.{reason}", "el")


def test_grace_message_counts_down_and_names_the_deadline():
    status = compute_status(Row("g", T + 12 * DAY, "", True, "", None).build())
    assert status.license_state == "licensed_grace" and status.days_left == 2
    assert "2 days" in status.message and status.grace_until == at(T + 14 * DAY)


def test_renewal_grace_until_is_end_of_payment_grace():
    past_due = {"status": "past_due", "payment_grace_end": T + 7 * DAY}
    row = Row("r", T + DAY, "", True, "", None, claims=past_due)
    status = compute_status(row.build())
    assert status.grace_until == at(T + 7 * DAY) and status.valid_until == at(T + 20 * DAY)


def test_to_dict_is_exactly_the_local_api_body():
    status = compute_status(Row("a", T + HOUR, "", True, "", None).build())
    body = status.to_dict()
    assert list(body) == [
        *PRODUCT_LICENSE_FIELDS,
        "offline_license",
        "warn_days",
    ]
    assert body["valid_until"] == at(T + 20 * DAY).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert body["last_sync"].endswith("Z") and body["next_sync"] is None
    assert (body["plan"], body["features"], body["seats"], body["customer_email"], body["terminal_name"]) == (
        "pospal-monthly",
        ["pos"],
        1,
        "owner@example.com",
        "Bar",
    )


def test_policy_from_the_token_changes_the_boundaries():
    short = {"policy": {"grace_s": HOUR, "lease_s": DAY}, "exp": T + DAY}
    assert (
        compute_status(Row("p", T + HOUR, "", True, "", None, claims=short).build()).license_state
        == "licensed_grace"
    )


def test_the_first_warning_day_comes_from_the_token_policy():
    signed = {"policy": {"warn_days": 10}}
    assert compute_status(Row("w", T + HOUR, "", True, "", None, claims=signed).build()).warn_days == 10
    assert compute_status(Row("d", T + HOUR, "", True, "", None).build()).to_dict()["warn_days"] == 5
    assert compute_status(StatusInputs(now=at(T))).warn_days == 5  # no token: the default policy


def test_compute_status_is_pure():
    inputs = ROWS[4].build()
    assert compute_status(inputs) == compute_status(replace(inputs))
    assert isinstance(compute_status(inputs), LicenseStatus)


def test_unknown_language_falls_back_to_english():
    en = compute_status(ROWS[0].build("en")).message
    assert compute_status(replace(ROWS[0].build(), language="fr")).message == en


def test_next_sync_and_identity_pass_through():
    when = NOW + timedelta(hours=6)
    status = compute_status(replace(ROWS[3].build(), next_sync=when, terminal_name="Kitchen"))
    assert status.next_sync == when and status.terminal_name == "Kitchen" and status.machine_id == "m_0001"
