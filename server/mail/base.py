"""The `Mailer` protocol and the message it sends.

Mailers do one thing: hand one message to a provider. Retries, backoff and bookkeeping belong to the
outbox worker. A mailer raises `MailTemporaryError` when trying again later may work (connection
refused, timeout, 5xx, 429) and `MailRejected` when it never will (bad address, 4xx validation), so
the worker knows whether to back off or give up.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class OutgoingEmail:
    """One message: rendered content plus the idempotency key that makes retries safe."""

    to_email: str
    subject: str
    text: str
    html: str
    idempotency_key: str


class Mailer(Protocol):
    """Something that delivers an `OutgoingEmail` or raises a `MailError`."""

    def send(self, message: OutgoingEmail) -> None:
        """Deliver `message`; raise `MailTemporaryError` or `MailRejected` on failure."""
        ...
