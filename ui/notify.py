"""When the tray pops a notification: the state got worse, or ``days_left`` crossed a threshold.

The thresholds are the policy's ``warn_days`` (5 by default, signed in the token and passed on in the
status), then 3 and 1 days.

Pure logic, so the rules are tested without a tray. Staff are busy during service: a notification that
says nothing new is noise, so an unchanged or improving state stays silent.
"""

from __future__ import annotations

from dataclasses import dataclass

from ui.present import present, severity
from ui.strings import t

FINAL_WARNINGS = (3, 1)
_COUNTDOWN_STATES = ("trial_active", "licensed_grace", "licensed_renewal_required")


@dataclass(frozen=True)
class Notice:
    """A notification to show: a title and a one-sentence body."""

    title: str
    body: str
    critical: bool


def thresholds(warn_days: int) -> tuple[int, ...]:
    """The days at which the tray warns: the policy's ``warn_days``, then 3 and 1 (highest first)."""
    return tuple(sorted({warn_days, *FINAL_WARNINGS}, reverse=True))


def crossed(previous: int | None, current: int | None, warn_days: int) -> int | None:
    """The lowest threshold that ``days_left`` went down through, or None."""
    if previous is None or current is None or current >= previous:
        return None
    hits = [n for n in thresholds(warn_days) if current <= n < previous]
    return min(hits) if hits else None


def notice_for(previous, current) -> Notice | None:
    """The notification for going from status ``previous`` (None at start-up) to ``current``, if any."""
    if previous is None:
        return None
    worse = severity(current) > severity(previous)
    counting = current.license_state in _COUNTDOWN_STATES or current.reason == "cancel_scheduled"
    countdown = (
        counting
        and previous.license_state == current.license_state
        and crossed(previous.days_left, current.days_left, current.warn_days) is not None
    )
    if not (worse or countdown):
        return None
    view = present(current)
    return Notice(
        title=t("ui.notify.title", headline=view.headline),
        body=view.detail,
        critical=severity(current) >= 2,
    )
