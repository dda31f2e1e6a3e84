"""`SmtpMailer`: delivery over SMTP with smtplib, configured by one URL.

`SMTP_URL` looks like ``smtp://user:pass@host:587`` (plain, upgraded with STARTTLS when `starttls` is
on or the port is 587) or ``smtps://user:pass@host:465`` (TLS from the first byte). SMTP has no
idempotency key, so the outbox key becomes the Message-ID: a retry after a lost reply carries the same
Message-ID, which receiving servers and clients use to drop the duplicate.
"""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate
from hashlib import sha256
from urllib.parse import unquote, urlsplit

from server.errors import ConfigError, MailRejected, MailTemporaryError
from server.mail.base import OutgoingEmail


class SmtpMailer:
    """Send each message in its own SMTP session (the worker sends few, and this survives restarts)."""

    def __init__(
        self, url: str, from_email: str, *, starttls: bool | None = None, timeout: float = 10.0
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ConfigError("SMTP_URL must look like smtp://user:pass@host:port or smtps://...")
        self.host = parts.hostname
        self.use_ssl = parts.scheme == "smtps"
        self.port = parts.port or (465 if self.use_ssl else 25)
        self.username = unquote(parts.username) if parts.username else None
        self._password = unquote(parts.password) if parts.password else None
        self.starttls = (self.port == 587) if starttls is None else starttls
        self.from_email = from_email
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"SmtpMailer(host={self.host!r}, port={self.port}, user={self.username!r})"

    def build(self, message: OutgoingEmail) -> EmailMessage:
        """Return the MIME message (text with an HTML alternative) for `message`."""
        mime = EmailMessage()
        mime["From"] = self.from_email
        mime["To"] = message.to_email
        mime["Subject"] = message.subject
        mime["Date"] = formatdate(usegmt=True)
        digest = sha256(message.idempotency_key.encode()).hexdigest()[:32]
        domain = self.from_email.rpartition("@")[2] or "pospal.local"
        mime["Message-ID"] = f"<{digest}@{domain}>"
        mime.set_content(message.text)
        mime.add_alternative(message.html, subtype="html")
        return mime

    def send(self, message: OutgoingEmail) -> None:
        """Deliver one message; connection problems and 4xx replies are temporary, 5xx are not."""
        mime = self.build(message)
        try:
            with self._connect() as smtp:
                if self.starttls and not self.use_ssl:
                    smtp.starttls(context=ssl.create_default_context())
                if self.username:
                    smtp.login(self.username, self._password or "")
                smtp.send_message(mime)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            if all(500 <= c < 600 for c in codes):
                raise MailRejected(f"SMTP refused the recipient ({codes})") from exc
            raise MailTemporaryError(f"SMTP deferred the recipient ({codes})") from exc
        except smtplib.SMTPResponseException as exc:
            if 500 <= exc.smtp_code < 600:
                raise MailRejected(f"SMTP error {exc.smtp_code}") from exc
            raise MailTemporaryError(f"SMTP error {exc.smtp_code}") from exc
        except (OSError, smtplib.SMTPException) as exc:
            raise MailTemporaryError(f"SMTP server unreachable: {type(exc).__name__}") from exc

    def _connect(self) -> smtplib.SMTP:
        if self.use_ssl:
            return smtplib.SMTP_SSL(
                self.host, self.port, timeout=self.timeout, context=ssl.create_default_context()
            )
        return smtplib.SMTP(self.host, self.port, timeout=self.timeout)
