"""One clear sentence for every way an agent call can fail.

Server refusals (``ServerRefused.code``) and being offline get the UI's own words in the current language;
any other agent error shows its own message; a bug shows a generic line (and is logged by the worker).
"""

from __future__ import annotations

import math

from agent.errors import Error, Offline, ServerRefused
from ui.strings import t

_REFUSALS = (
    "seats_full",
    "bad_code",
    "code_expired",
    "too_many_attempts",
    "no_subscription",
    "not_found",
    "invalid_request",
    "unknown_machine",
    "replay",
)


def describe(exc: BaseException) -> str:
    """The sentence to show for ``exc``."""
    if isinstance(exc, ServerRefused):
        if exc.code == "rate_limited":
            return _rate_limited(exc.extra.get("retry_after"))
        if exc.code == "bad_signature":
            return t("ui.error.unknown_machine")
        if exc.code == "owner_proof_required":
            return t("owner.next")  # a step (the owner's dialog opens), not an error
        if exc.code in ("checkout_expired", "expired"):
            return t("ui.error.checkout_expired")
        if exc.code in _REFUSALS:
            return t(f"ui.error.{exc.code}")
        return exc.message or t("ui.error.generic", detail=exc.code)
    if isinstance(exc, Offline):
        return t("ui.error.offline")
    if isinstance(exc, Error):
        return exc.message
    return t("ui.error.generic", detail=type(exc).__name__)


def _rate_limited(retry_after) -> str:
    try:
        seconds = float(retry_after)
    except (TypeError, ValueError):
        return t("ui.error.rate_limited.soon")
    minutes = max(1, math.ceil(seconds / 60))
    return t("ui.error.rate_limited", wait=t("ui.wait.minutes", n=minutes))


def seats_terminals(exc: BaseException) -> list[dict]:
    """The terminal list a ``seats_full`` refusal carries (empty for anything else)."""
    if isinstance(exc, ServerRefused) and exc.code == "seats_full":
        return list(exc.extra.get("terminals") or [])
    return []
