"""How a LicenseStatus looks to a person: its colour, headline, one sentence, tooltip and actions.

This is the single place that decides what a state means for the screen, so the tray and the window
never disagree, and a table test can check every ``license_state`` without drawing anything.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import UTC, datetime

from PySide6.QtCore import QDateTime, QLocale, QTimeZone

from agent import messages
from ui.strings import days, language, t


class Kind(enum.Enum):
    """The colour family of a state, which is what staff read at a glance."""

    ACTIVE = "active"  # green
    TRIAL = "trial"  # blue
    WARNING = "warning"  # amber
    STOPPED = "stopped"  # red
    MISSING = "missing"  # grey


_KIND = {
    "licensed_active": Kind.ACTIVE,
    "trial_active": Kind.TRIAL,
    "licensed_grace": Kind.WARNING,
    "licensed_renewal_required": Kind.WARNING,
    "licensed_cancelled": Kind.STOPPED,
    "trial_expired": Kind.STOPPED,
    "license_error": Kind.STOPPED,
    "license_missing": Kind.MISSING,
}

# How bad a state is for the shop; a rise is what triggers a notification.
_SEVERITY = {Kind.ACTIVE: 0, Kind.TRIAL: 0, Kind.WARNING: 1, Kind.MISSING: 2, Kind.STOPPED: 2}

_COUNTDOWN = ("trial_active", "licensed_grace", "licensed_renewal_required")
_ERROR_REASONS = (
    "offline_expired",
    "machine_changed",
    "clock_rollback",
    "token_invalid",
    "revoked",
    "seats_exceeded",
)
# The tray cannot reach the genuine license service (agent.link.channelcontrol): not a license state.
_CHANNEL_REASONS = ("service_stopped", "service_not_genuine")


class Action(enum.Enum):
    """Things the owner can do from the window (the tray offers a subset)."""

    SYNC = "sync"
    TRIAL = "trial"
    BUY = "buy"
    ACTIVATE = "activate"
    BILLING = "billing"
    MOVE = "move"
    CONFIRM = "confirm"  # confirm a renewal payment with the bank (3-D Secure), in the browser
    PAUSE = "pause"  # pause the subscription for the season, until resumed (the owner's)
    RESUME = "resume"  # resume a paused subscription now (the owner's)


_ACTIONS: dict[str, tuple[Action, ...]] = {
    "license_missing": (Action.TRIAL, Action.BUY, Action.ACTIVATE),
    "trial_active": (Action.BUY, Action.ACTIVATE, Action.SYNC),
    "trial_expired": (Action.BUY, Action.ACTIVATE, Action.SYNC),
    "licensed_active": (Action.BILLING, Action.MOVE, Action.SYNC, Action.PAUSE),
    "licensed_grace": (Action.SYNC, Action.BILLING, Action.MOVE),
    "licensed_renewal_required": (Action.BILLING, Action.SYNC, Action.MOVE),
    "licensed_cancelled": (Action.BUY, Action.BILLING, Action.ACTIVATE, Action.SYNC),
}
_ERROR_ACTIONS: dict[str, tuple[Action, ...]] = {
    "offline_expired": (Action.SYNC, Action.BILLING),
    "clock_rollback": (Action.SYNC,),
    "token_invalid": (Action.SYNC, Action.ACTIVATE),
    "machine_changed": (Action.ACTIVATE, Action.BUY),
    "revoked": (Action.ACTIVATE, Action.BUY),
    # The owner raises the quantity (billing) or picks the terminals that stay (move); sync picks it up.
    "seats_exceeded": (Action.BILLING, Action.MOVE, Action.SYNC),
    # Nothing to do here but wait: the channel reconnects by itself; Sync now asks at once.
    "service_stopped": (Action.SYNC,),
    "service_not_genuine": (),
}


@dataclass(frozen=True)
class View:
    """Everything the screen needs to show one status."""

    state: str
    kind: Kind
    headline: str
    detail: str
    tooltip: str
    actions: tuple[Action, ...]
    manage: bool  # the tray says "Manage subscription" rather than "Buy subscription"


def kind_of(state: str, licensed: bool | None = None) -> Kind:
    """The colour family of ``state``; unknown states count as stopped so they are never shown green.

    ``licensed_renewal_required`` is amber while orders are allowed and turns red once the payment grace
    is over (``licensed`` false): staff must see at a glance that the till is stopped.
    """
    kind = _KIND.get(state, Kind.STOPPED)
    if kind is Kind.WARNING and licensed is False:
        return Kind.STOPPED
    return kind


def kind_of_status(status) -> Kind:
    """The colour family of a LicenseStatus."""
    return kind_of(status.license_state, getattr(status, "licensed", None))


def severity(status) -> int:
    """0 fine, 1 needs attention, 2 orders stopped."""
    return _SEVERITY[kind_of_status(status)]


def actions_for(state: str, reason: str | None) -> tuple[Action, ...]:
    """The actions that make sense in ``state``, the most useful first."""
    if state == "license_error":
        return _ERROR_ACTIONS.get(reason or "", (Action.SYNC, Action.ACTIVATE))
    if reason == "paused":
        # Paused for the season: resuming is the one thing to do (a sync picks up a resume made elsewhere).
        return (Action.RESUME, Action.SYNC, Action.BILLING)
    if reason == "payment_action_required":
        # The card is fine: the bank waits for the owner's approval. Sync picks up the confirmed payment.
        return (Action.CONFIRM, Action.SYNC, Action.BILLING)
    return _ACTIONS.get(state, (Action.SYNC,))


def present(status) -> View:
    """Turn a LicenseStatus into what the tray and window show, in the current language."""
    state = status.license_state
    headline = t(f"ui.state.{state}") if state in _KIND else state
    if status.reason == "payment_action_required":
        headline = t("ui.state.payment_action_required")  # the card is fine: the bank waits for the owner
    detail = _detail(status)
    tooltip = f"{t('ui.tip_prefix')}: {headline}"
    if state == "trial_active" and status.reason != "provisional_trial" and status.valid_until:
        # A trial's days_left counts to the offline lease when that is sooner, so the honest short
        # form is the trial's end date.
        tooltip += f", {t('ui.tip.until', date=format_date(status.valid_until))}"
    elif status.days_left is not None and state in _COUNTDOWN and status.licensed is not False:
        tooltip += f", {t('ui.tip.days_left', days=days(status.days_left))}"
    return View(
        state=state,
        kind=kind_of_status(status),
        headline=headline,
        detail=detail,
        tooltip=tooltip,
        actions=actions_for(state, status.reason),
        manage=state in ("licensed_active", "licensed_grace", "licensed_renewal_required"),
    )


def _detail(status) -> str:
    """One sentence for staff: can the till take orders, and what to do about it."""
    state, reason, n = status.license_state, status.reason, status.days_left
    left = days(n if n is not None else 0)
    if state == "license_error":
        if reason in _CHANNEL_REASONS:
            return " ".join(p for p in (t(f"channel.{reason}"), t(f"channel.{reason}.fix")) if p)
        if reason in _ERROR_REASONS and messages.has(f"status.{reason}"):
            # The agent's own catalogue explains each error and its fix; the UI shows the same words.
            parts = (t(f"status.{reason}"), t(f"fix.{reason}"))
            return " ".join(p for p in parts if p)
        return t("ui.detail.license_error")
    notice = getattr(status, "old_app_notice", None)
    if state == "license_missing" and notice and messages.has(f"old_app.{notice}"):
        # The old POSPal license was not moved: say why, and that activating, buying or a trial still work.
        return f"{t(f'old_app.{notice}')} {t(f'old_app.{notice}.fix')}"
    if reason == "offline_license":
        return t("ui.detail.offline_license", date=format_date(status.grace_until))
    if reason in ("cancel_scheduled", "provisional_trial", "payment_grace_ended", "payment_action_required"):
        return t(f"ui.detail.{reason}", days=left)
    if state == "trial_active":
        return t("ui.detail.trial_active", date=format_date(status.valid_until))
    if state in ("licensed_grace", "licensed_renewal_required"):
        return t(f"ui.detail.{state}", days=left)
    if state in _KIND:
        return t(f"ui.detail.{state}")
    return status.message or ""


def counts_down(status) -> bool:
    """Whether ``days_left`` is a deadline people should watch (trial, grace, payment, cancellation)."""
    if status.licensed is False:
        return False
    return status.license_state in _COUNTDOWN or status.reason == "cancel_scheduled"


def parse_time(value) -> datetime | None:
    """A LicenseStatus time (ISO 8601 string ending in Z, a datetime, or None) as an aware datetime."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _qlocale() -> QLocale:
    return QLocale(
        QLocale.Language.Greek if language.code == "el" else QLocale.Language.English,
        QLocale.Country.Greece if language.code == "el" else QLocale.Country.UnitedKingdom,
    )


def _local(value) -> QDateTime | None:
    moment = parse_time(value)
    if moment is None:
        return None
    qdt = QDateTime.fromSecsSinceEpoch(int(moment.timestamp()), QTimeZone.utc())
    return qdt.toLocalTime()


def format_date(value) -> str:
    """A date the way people in the current language write it ("26 December 2026"), or a dash."""
    qdt = _local(value)
    return _qlocale().toString(qdt.date(), "d MMMM yyyy") if qdt else t("ui.none")


def format_datetime(value, *, never_key: str = "ui.never") -> str:
    """A local date and time ("26 Nov 2026, 10:32"), or "Never"."""
    qdt = _local(value)
    return _qlocale().toString(qdt, "d MMM yyyy, HH:mm") if qdt else t(never_key)


def plan_name(status) -> str:
    """The plan in words, with the number of terminals when there is more than one."""
    if status.license_state == "trial_active" or status.plan == "trial":
        return t("ui.plan.trial")
    if not status.plan:
        return t("ui.none")
    key = f"ui.plan.{status.plan}"
    name = t(key)
    if name == key:  # the catalogue does not know this plan: show its id rather than nothing
        name = status.plan
    if status.seats and status.seats > 1:
        return t("ui.plan.seats", plan=name, n=status.seats)
    return name


def end_row(status) -> tuple[str, str] | None:
    """The card's date row: (label key, date) for renewal, end or orders-stop, or None."""
    state = status.license_state
    if state == "licensed_renewal_required" and status.grace_until:
        return "ui.card.orders_stop_on", status.grace_until
    if state == "licensed_grace" and status.grace_until:
        return "ui.card.orders_stop_on", status.grace_until
    if state == "licensed_active" and status.valid_until:
        ending = status.reason == "cancel_scheduled"
        return ("ui.card.ends_on" if ending else "ui.card.renews_on"), status.valid_until
    if state in ("trial_active", "trial_expired", "licensed_cancelled") and status.valid_until:
        return "ui.card.ends_on", status.valid_until
    return None
