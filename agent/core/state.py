"""The license state machine: one pure function, `compute_status(StatusInputs) -> LicenseStatus`.

No I/O and no clock: the trusted `now`, the verified claims, the fingerprint verdict and the clock verdict
all come in through `StatusInputs`. Precedence (docs/ARCHITECTURE.md), first match wins:

    clock_rollback > token_invalid > revoked > machine_changed > offline_expired >
    licensed_cancelled / trial_expired > licensed_renewal_required > licensed_grace >
    licensed_active / trial_active > license_missing

Every state has a `reason` (for `license_error` one of offline_expired, machine_changed, clock_rollback,
token_invalid, revoked; for the others a detail such as payment_failed) and a message in the chosen
language from `agent.messages`. Policy values (grace, lease, payment grace, warn days, provisional trial)
come from the token's `policy` claim, with PRODUCT.md defaults when there is no token.

Meaning of the numbers:
- `valid_until`: end of what was paid for or granted: the cancellation date or period end for a
  license, the trial end for a trial.
- `grace_until`: the moment orders stop if no sync succeeds from now on (offline lease end, or the end of
  payment grace when that comes first).
- `days_left`: whole days (rounded up) until the deadline that matters in this state: trial end (or
  the lease end, if sooner and offline), lease end in offline grace, payment-grace end when renewal is
  required, the renewal/cancellation date when active; 0 once something has ended; None when nothing
  counts down.
- Trials do not enter `licensed_grace`: a trial offline for the sync grace (48 h) or longer stays
  `trial_active` with `days_left` counting to the lease end when that comes before the trial end; a trial
  that syncs counts down to its own end.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from dataclasses import replace as _replace
from datetime import UTC, datetime
from typing import Any

from agent import messages
from pospal_protocol.tokens import Claims, Policy

LICENSE_STATES = (
    "trial_active",
    "trial_expired",
    "licensed_active",
    "licensed_grace",
    "licensed_renewal_required",
    "licensed_cancelled",
    "license_missing",
    "license_error",
)
ERROR_REASONS = (
    "offline_expired",
    "machine_changed",
    "clock_rollback",
    "token_invalid",
    "revoked",
    "seats_exceeded",
)
_DAY = 86400
# A provisional trial may start at most this far ahead of the trusted now (the `nbf` leeway of tokens).
_FUTURE_LEEWAY_S = 60


@dataclass(frozen=True)
class StatusInputs:
    """Everything `compute_status` looks at. `now` is the trusted time (tz-aware UTC)."""

    now: datetime
    claims: Claims | None = None
    token_problem: str | None = None
    provisional_trial_started: datetime | None = None
    last_sync: datetime | None = None
    fingerprint_match: bool | None = None
    clock_rollback: bool = False
    machine_id: str | None = None
    terminal_name: str | None = None
    next_sync: datetime | None = None
    agent_version: str | None = None
    language: str = "en"
    # Why the old POSPal app's license on this PC was not moved (agent/vault/pospal1.py `NOTICES`), if it was
    # not: a PC with no license says so in its message; the state and reason stay `not_activated`.
    old_app_notice: str | None = None


@dataclass(frozen=True)
class LicenseStatus:
    """What the agent tells the POS app and the UI; `to_dict()` is exactly the local API body."""

    license_state: str
    licensed: bool
    reason: str | None
    message: str
    days_left: int | None = None
    valid_until: datetime | None = None
    grace_until: datetime | None = None
    plan: str | None = None
    features: tuple[str, ...] = ()
    seats: int | None = None
    customer_email: str | None = None
    machine_id: str | None = None
    terminal_name: str | None = None
    last_sync: datetime | None = None
    next_sync: datetime | None = None
    agent_version: str | None = None
    # A renewal waiting for the bank's confirmation (3-D Secure): the invoice page where the owner confirms
    # it ("Confirm payment"). In the local API body only when set.
    payment_action_url: str | None = None
    # license_missing only: why the old POSPal app's license on this PC was not moved (`used`, `closed`,
    # `refused`, `unreadable`; agent/vault/pospal1.py). In the local API body only when set.
    old_app_notice: str | None = None
    # True when the token is an offline license (activation by file): no sync is needed until its end.
    offline_license: bool = False
    # The token policy's `warn_days`: the tray warns when `days_left` falls to it (and again at 3 and 1).
    warn_days: int = Policy.warn_days
    # `message` in every language, as (lang, text) pairs: the local API answers `?lang=` from these.
    translations: tuple[tuple[str, str], ...] = field(default=(), compare=False)

    def message_in(self, lang: str | None) -> str:
        """`message` in `lang` when it is known, else in the agent's language."""
        return dict(self.translations).get(lang or "", self.message)

    def to_dict(self, lang: str | None = None) -> dict[str, Any]:
        """The `GET /v1/license` body (`message` in `lang`, if given); times ISO 8601 UTC with `Z` or null."""
        return {
            "license_state": self.license_state,
            "licensed": self.licensed,
            "reason": self.reason,
            "message": self.message_in(lang),
            "days_left": self.days_left,
            "valid_until": iso(self.valid_until),
            "grace_until": iso(self.grace_until),
            "plan": self.plan,
            "features": list(self.features),
            "seats": self.seats,
            "customer_email": self.customer_email,
            "machine_id": self.machine_id,
            "terminal_name": self.terminal_name,
            "last_sync": iso(self.last_sync),
            "next_sync": iso(self.next_sync),
            "agent_version": self.agent_version,
            **({"payment_action_url": self.payment_action_url} if self.payment_action_url else {}),
            **({"old_app_notice": self.old_app_notice} if self.old_app_notice else {}),
            "offline_license": self.offline_license,
            "warn_days": self.warn_days,
        }


def iso(when: datetime | None) -> str | None:
    """ISO 8601 UTC with a `Z` suffix, whole seconds; None stays None."""
    if when is None:
        return None
    return when.astimezone(UTC).replace(microsecond=0, tzinfo=None).isoformat() + "Z"


def _dt(ts: int | float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


def _days(seconds: float) -> int:
    return max(0, math.ceil(seconds / _DAY))


def _date(ts: float | None, lang: str) -> str:
    d = datetime.fromtimestamp(ts or 0, UTC)
    return messages.date(d.year, d.month, d.day, lang)


def _message(reason: str, lang: str, **kw: object) -> str:
    status = messages.text(f"status.{reason}", lang, **kw)
    fix_key = f"fix.{reason}" if messages.has(f"fix.{reason}") else "fix.active"
    fix = messages.text(fix_key, lang)
    return f"{status} {fix}" if fix else status


class _Status:
    """Builds the `LicenseStatus` of one `compute_status` call: its language and the fields every state
    shares (plan, seats, identity, sync times) are fixed; each state adds its own."""

    def __init__(self, lang: str, base: dict[str, Any]) -> None:
        self.lang = lang
        self.base = base

    def __call__(
        self,
        state: str,
        licensed: bool,
        reason: str,
        days_left: int | None = None,
        valid_until: float | None = None,
        grace_until: float | None = None,
        message_of: str | None = None,
        **kw: object,
    ) -> LicenseStatus:
        """The status in `state`; the message is that of `message_of` (default: `reason`)."""
        if "days" not in kw and days_left is not None:
            kw["days"] = messages.days(days_left, self.lang)
        message = _message(message_of or reason, self.lang, **kw)
        return LicenseStatus(
            state, licensed, reason, message, days_left, _dt(valid_until), _dt(grace_until), **self.base
        )

    def error(
        self, reason: str, days_left: int | None = None, valid_until: float | None = None
    ) -> LicenseStatus:
        """`license_error` for `reason`: orders stop."""
        return self("license_error", False, reason, days_left, valid_until)

    def date(self, ts: float | None) -> str:
        """A date for a message, in this status's language."""
        return _date(ts, self.lang)


def _shared_fields(inputs: StatusInputs) -> dict[str, Any]:
    """The fields every state carries: identity and sync times, plus the token's plan when there is one."""
    base: dict[str, Any] = {
        "machine_id": inputs.machine_id,
        "terminal_name": inputs.terminal_name,
        "last_sync": inputs.last_sync,
        "next_sync": inputs.next_sync,
        "agent_version": inputs.agent_version,
    }
    c = inputs.claims
    if c is not None:
        base.update(offline_license=c.policy.offline, warn_days=c.policy.warn_days)
        base.update(
            plan=c.plan,
            features=c.features,
            seats=c.seats,
            customer_email=c.email,
            machine_id=inputs.machine_id or c.mid,
            terminal_name=inputs.terminal_name or c.terminal,
        )
    return base


def compute_status(inputs: StatusInputs) -> LicenseStatus:
    """The license status for these inputs (pure; see the module docstring for the rules)."""
    lang = inputs.language if inputs.language in messages.LANGUAGES else messages.DEFAULT_LANGUAGE
    now = inputs.now.timestamp()
    status = _Status(lang, _shared_fields(inputs))
    if inputs.clock_rollback:
        return status.error("clock_rollback")
    if inputs.token_problem is not None:
        return status.error("token_invalid")
    c = inputs.claims
    if c is None:
        return _without_token(inputs.provisional_trial_started, now, status, inputs.old_app_notice)

    valid_until = c.trial_end if c.kind == "trial" else (c.cancel_at or c.period_end)
    if c.status == "revoked":
        # The server says why in `revoke_reason`: "seats_exceeded" when the subscription's quantity fell
        # below the terminals in use and this one lost its seat (it comes back when a seat is free).
        reason = "seats_exceeded" if c.raw.get("revoke_reason") == "seats_exceeded" else "revoked"
        return status.error(reason, valid_until=valid_until)
    if inputs.fingerprint_match is False:
        return status.error("machine_changed", valid_until=valid_until)
    if now >= c.exp:
        return status.error("offline_expired", 0, valid_until)
    last_sync = inputs.last_sync.timestamp() if inputs.last_sync is not None else c.iat
    if c.kind == "trial":
        return _trial(c, last_sync, now, status)
    if c.raw.get("paused") is True and c.status == "canceled":
        # A seasonal pause: `licensed_cancelled` for POS apps that know only those names (no orders),
        # reason `paused` with its own message; the server asks for a sync every minute meanwhile.
        resumes = c.raw.get("resumes_at")
        if isinstance(resumes, int) and resumes > now:
            until = messages.text("pause.until_date", status.lang, date=status.date(resumes))
        else:
            until = messages.text("pause.until_resumed", status.lang)
        return status("licensed_cancelled", False, "paused", until=until)
    if c.status == "canceled" or (c.cancel_at is not None and now >= c.cancel_at):
        return status("licensed_cancelled", False, "subscription_ended", 0, valid_until)
    if c.status == "past_due":
        return _past_due(c, valid_until, now, status)
    return _licensed(c, valid_until, last_sync, now, status)


def _without_token(
    started: datetime | None, now: float, status: _Status, old_app_notice: str | None = None
) -> LicenseStatus:
    """No token: not activated, or the provisional trial of a first run that could not reach the server."""
    if started is None:
        # An old POSPal license that could not be moved: the same state, with a message saying why.
        missing = status("license_missing", False, "not_activated")
        if not old_app_notice or not messages.has(f"old_app.{old_app_notice}"):
            return missing
        said = (messages.text(f"old_app.{old_app_notice}{part}", status.lang) for part in ("", ".fix"))
        return _replace(missing, message=" ".join(said), old_app_notice=old_app_notice)
    end = started.timestamp() + Policy().provisional_trial_s
    # A start in the future was never real (an edited cache): invalid, so it cannot stretch the trial.
    if now >= end or started.timestamp() > now + _FUTURE_LEEWAY_S:
        # Three days without ever reaching the server: going online is the only fix.
        return status.error("offline_expired", 0, min(end, now))
    return status("trial_active", True, "provisional_trial", _days(end - now), end, end)


def _trial(c: Claims, last_sync: float, now: float, status: _Status) -> LicenseStatus:
    """A trial token that is valid, bound to this machine and within its lease."""
    end = c.trial_end if c.trial_end is not None else c.exp
    if c.status == "canceled" or now >= end:
        return status("trial_expired", False, "trial_ended", 0, end)
    # A trial that syncs counts down to its end; only an offline one (past the sync grace) counts
    # down to the lease end when that comes first, so staff are not warned about a healthy trial.
    offline = now - last_sync >= c.policy.grace_s
    stop = min(end, c.exp) if offline else end
    return status("trial_active", True, "trial", _days(stop - now), end, min(end, c.exp))


def _past_due(c: Claims, valid_until: float | None, now: float, status: _Status) -> LicenseStatus:
    """A failed renewal: orders go on until the payment grace ends (or the lease, if sooner)."""
    pay_end = c.payment_grace_end if c.payment_grace_end is not None else c.iat + c.policy.payment_grace_s
    action_url = _action_url(c)
    if now >= pay_end:
        ended = status("licensed_renewal_required", False, "payment_grace_ended", 0, valid_until)
        return _replace(ended, payment_action_url=action_url)  # confirming still brings it back
    stop = min(pay_end, c.exp)
    if action_url:
        # The card is fine; the bank waits for the owner's confirmation (SCA), so say that instead.
        needs = status(
            "licensed_renewal_required",
            True,
            "payment_action_required",
            _days(stop - now),
            valid_until,
            stop,
            date=status.date(stop),
        )
        return _replace(needs, payment_action_url=action_url)
    return status(
        "licensed_renewal_required",
        True,
        "payment_failed",
        _days(stop - now),
        valid_until,
        stop,
        date=status.date(stop),
    )


def _licensed(
    c: Claims, valid_until: float | None, last_sync: float, now: float, status: _Status
) -> LicenseStatus:
    """A paid license in good standing: active, offline (by file), in offline grace, or ending as planned."""
    if c.policy.offline:
        # An offline license never syncs: no offline grace; it runs to its own lease end (`exp`).
        return status(
            "licensed_active",
            True,
            "offline_license",
            _days(c.exp - now),
            valid_until,
            c.exp,
            date=status.date(c.exp),
        )
    if now - last_sync >= c.policy.grace_s:
        return status(
            "licensed_grace",
            True,
            "offline_grace",
            _days(c.exp - now),
            valid_until,
            c.exp,
            since=status.date(last_sync),
        )
    days_left = _days(valid_until - now) if valid_until is not None else None
    if c.cancel_at is not None:
        return status(
            "licensed_active",
            True,
            "cancel_scheduled",
            days_left,
            valid_until,
            c.exp,
            date=status.date(c.cancel_at),
        )
    if valid_until is None:
        return status("licensed_active", True, "active", None, None, c.exp, message_of="active_nodate")
    return status(
        "licensed_active", True, "active", days_left, valid_until, c.exp, date=status.date(valid_until)
    )


def _action_url(c: Claims) -> str | None:
    """The token's `payment_action_url` when it is a web address (the UI opens it in the browser)."""
    url = c.raw.get("payment_action_url")
    if isinstance(url, str) and url.startswith(("https://", "http://")) and len(url) <= 2048:
        return url
    return None
