"""Email delivery: the `Mailer` protocol, three mailers, and the en/el template catalogue.

`make_mailer(settings)` picks one by `POSPAL_EMAIL`: `smtp` (`SMTP_URL`), `resend` (`RESEND_API_KEY`,
`RESEND_API_BASE`) or `console`, which prints, or appends JSON lines to `POSPAL_MAIL_DIR/mail.jsonl`
when that is set (the demo and end-to-end tests read codes from there). Nothing here is called inside a
request: requests write outbox rows, and the outbox worker calls the mailer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from server.mail.base import Mailer, OutgoingEmail
from server.mail.console import ConsoleMailer
from server.mail.resend import ResendMailer
from server.mail.smtp import SmtpMailer

if TYPE_CHECKING:
    from server.config import Settings

MAIL_FILE_NAME = "mail.jsonl"

__all__ = ["ConsoleMailer", "Mailer", "OutgoingEmail", "ResendMailer", "SmtpMailer", "make_mailer"]


def make_mailer(settings: Settings) -> Mailer:
    """Build the mailer `settings.email` names."""
    if settings.email == "smtp":
        assert settings.smtp_url is not None  # Settings.check guarantees it
        return SmtpMailer(settings.smtp_url.reveal(), settings.from_email)
    if settings.email == "resend":
        assert settings.resend_api_key is not None
        return ResendMailer(
            settings.resend_api_key.reveal(), settings.from_email, base_url=settings.resend_api_base
        )
    if settings.mail_dir is not None:
        return ConsoleMailer(path=settings.mail_dir / MAIL_FILE_NAME)
    return ConsoleMailer()
