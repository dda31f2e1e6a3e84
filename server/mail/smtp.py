"""`SmtpMailer`: delivery over SMTP with smtplib, configured by one URL.

`SMTP_URL` is ``smtps://user:pass@host:465`` (TLS from the first byte) or ``smtp://user:pass@host:port``,
which is upgraded with STARTTLS on every port: a server that does not offer it gets nothing, least of all
the password. Plain text is allowed only when asked for (``?tls=none``) and only to a loopback host (a
local relay or a test sink).

Replies are sorted for the outbox: a refused login or sender (530, 534, 535, 553 on MAIL FROM) or a
missing STARTTLS is a configuration problem (`MailConfigError`: the message waits for the operator), a
refused recipient is `MailRejected`, and anything else 4xx or unreachable is temporary. SMTP has no
idempotency key, so the outbox key becomes the Message-ID: a retry after a lost reply carries the same
Message-ID, which receiving servers and clients use to drop the duplicate.
"""

from __future__ import annotations

import ipaddress
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate
from hashlib import sha256
from urllib.parse import parse_qs, unquote, urlsplit

from server.errors import ConfigError, MailConfigError, MailRejected, MailTemporaryError
from server.mail.base import OutgoingEmail

# Replies that say our credentials or sender are wrong, whatever the message.
CONFIG_CODES = frozenset({530, 534, 535, 538, 553})


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (where plain SMTP never leaves the machine)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class SmtpMailer:
    """Send each message in its own SMTP session (the worker sends few, and this survives restarts)."""

    def __init__(
        self,
        url: str,
        from_email: str,
        *,
        timeout: float = 10.0,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ConfigError("SMTP_URL must look like smtp://user:pass@host:port or smtps://...")
        self.host = parts.hostname
        self.use_ssl = parts.scheme == "smtps"
        self.port = parts.port or (465 if self.use_ssl else 587)
        self.username = unquote(parts.username) if parts.username else None
        self._password = unquote(parts.password) if parts.password else None
        tls = (parse_qs(parts.query).get("tls") or [""])[0].lower()
        if tls not in ("", "none"):
            raise ConfigError("SMTP_URL: the only tls option is ?tls=none (plain text, loopback only)")
        if tls == "none" and (self.use_ssl or not is_loopback(self.host)):
            raise ConfigError("SMTP_URL: ?tls=none is allowed only for smtp:// to a loopback host")
        self.starttls = not self.use_ssl and tls != "none"
        self.from_email = from_email
        self.timeout = timeout
        self._tls_context = tls_context

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
        domain = self.from_email.rpartition("@")[2].strip(">") or "pospal.local"
        mime["Message-ID"] = f"<{digest}@{domain}>"
        mime.set_content(message.text)
        mime.add_alternative(message.html, subtype="html")
        return mime

    def send(self, message: OutgoingEmail) -> None:
        """Deliver one message, or raise `MailConfigError`, `MailRejected` or `MailTemporaryError`."""
        mime = self.build(message)
        try:
            with self._connect() as smtp:
                if self.starttls:
                    smtp.ehlo()
                    if not smtp.has_extn("starttls"):
                        raise MailConfigError(
                            f"SMTP server {self.host}:{self.port} does not offer STARTTLS; refusing to "
                            "send in plain text (use smtps://, or ?tls=none for a loopback relay)"
                        )
                    smtp.starttls(context=self._context())
                if self.username:
                    self._login(smtp)
                smtp.send_message(mime)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            if all(500 <= c < 600 for c in codes):
                raise MailRejected(f"SMTP refused the recipient ({codes})") from exc
            raise MailTemporaryError(f"SMTP deferred the recipient ({codes})") from exc
        except smtplib.SMTPSenderRefused as exc:
            if 400 <= exc.smtp_code < 500:
                raise MailTemporaryError(f"SMTP deferred the sender ({exc.smtp_code})") from exc
            raise MailConfigError(f"SMTP refused the sender {self.from_email!r} ({exc.smtp_code})") from exc
        except smtplib.SMTPResponseException as exc:
            if exc.smtp_code in CONFIG_CODES:
                raise MailConfigError(f"SMTP refused our login or sender ({exc.smtp_code})") from exc
            if 500 <= exc.smtp_code < 600:
                raise MailRejected(f"SMTP error {exc.smtp_code}") from exc
            raise MailTemporaryError(f"SMTP error {exc.smtp_code}") from exc
        except smtplib.SMTPNotSupportedError as exc:
            raise MailConfigError(f"SMTP server does not support what we need: {exc}") from exc
        except ssl.SSLCertVerificationError as exc:
            raise MailConfigError(f"SMTP server certificate rejected: {exc.verify_message}") from exc
        except (OSError, smtplib.SMTPException) as exc:
            raise MailTemporaryError(f"SMTP server unreachable: {type(exc).__name__}") from exc

    def _login(self, smtp: smtplib.SMTP) -> None:
        """Log in once, with PLAIN when offered: smtplib's `login` retries a refused password with every
        mechanism the server lists, which some servers count as several failed logins."""
        smtp.ehlo_or_helo_if_needed()
        if "PLAIN" in (smtp.esmtp_features.get("auth") or "").upper().split():
            smtp.user, smtp.password = self.username or "", self._password or ""
            smtp.auth("PLAIN", smtp.auth_plain)
        else:
            smtp.login(self.username or "", self._password or "")

    def _context(self) -> ssl.SSLContext:
        return self._tls_context or ssl.create_default_context()

    def _connect(self) -> smtplib.SMTP:
        if self.use_ssl:
            return smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout, context=self._context())
        return smtplib.SMTP(self.host, self.port, timeout=self.timeout)
