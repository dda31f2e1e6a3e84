"""The one e-mail address rule: what the server accepts, the agent checks before sending, and the UI."""

from __future__ import annotations

import re

from pospal_protocol import text

# Printable, no spaces or controls, one @, a dot in the domain. Deliverability is the mailer's business.
EMAIL_PATTERN = r"^[^@\s\x00-\x1f\x7f]+@[^@\s\x00-\x1f\x7f]+\.[^@\s\x00-\x1f\x7f]+$"
EMAIL = re.compile(EMAIL_PATTERN)
MAX_LENGTH = 320


def is_email(value: str) -> bool:
    """True when `value` (stripped) looks like an address the server will accept."""
    value = value.strip()
    # No C1 or bidi characters either (pospal_protocol.text): an address is shown to the operator and the
    # owner.
    return (
        3 <= len(value) <= MAX_LENGTH and EMAIL.fullmatch(value) is not None and text.problem(value) is None
    )
