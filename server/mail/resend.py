"""`ResendMailer`: delivery through Resend's HTTP API (``POST /emails``).

Every request carries the outbox row's key as the `Idempotency-Key` header. Resend remembers a key for
24 hours and answers a repeat with the first result instead of sending again, so a retry after a lost
reply or a crashed worker never reaches the user twice. The base URL is configurable so tests can
point it at a local stub.

Answers are sorted for the outbox: 401, 403 and 422 say our key, domain or sender is wrong
(`MailConfigError`: the message waits for the operator); 429 and 5xx are temporary, and 429's
`Retry-After` travels with the error so the outbox waits at least that long; other 4xx are `MailRejected`.
Requests are also paced (`min_interval_s`, 0.5 s: Resend's default limit is 2 per second), so a batch of
20 queued messages does not meet a 429 in the first place.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import requests

from server.errors import MailConfigError, MailRejected, MailTemporaryError
from server.mail.base import OutgoingEmail

DEFAULT_BASE_URL = "https://api.resend.com"
# Answers that mean our API key, domain or sender is wrong, for every message alike.
CONFIG_STATUSES = frozenset({401, 403, 422})


class ResendMailer:
    """Send through Resend with an idempotency key per message."""

    def __init__(
        self,
        api_key: str,
        from_email: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        timeout: float = 10.0,
        session: requests.Session | None = None,
        min_interval_s: float = 0.5,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._api_key = api_key
        self.from_email = from_email
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._http = session or requests.Session()
        self.min_interval_s = min_interval_s
        self._monotonic = monotonic
        self._sleep = sleep
        self._pace = threading.Lock()
        self._last_request: float | None = None

    def __repr__(self) -> str:
        return f"ResendMailer(base_url={self.base_url!r})"

    def _wait_turn(self) -> None:
        """Keep at least `min_interval_s` between requests from this mailer (all threads together)."""
        with self._pace:
            now = self._monotonic()
            if self._last_request is not None:
                wait = self._last_request + self.min_interval_s - now
                if wait > 0:
                    self._sleep(wait)
                    now += wait
            self._last_request = now

    def send(self, message: OutgoingEmail) -> None:
        """POST the message; 429/5xx/409 (a concurrent request with the same key) are temporary."""
        payload = {
            "from": self.from_email,
            "to": [message.to_email],
            "subject": message.subject,
            "text": message.text,
            "html": message.html,
        }
        headers = {
            "Authorization": f"Bearer {self._api_key}",
            "Idempotency-Key": message.idempotency_key[:256],
            "User-Agent": "pospal-server",
        }
        self._wait_turn()
        try:
            response = self._http.post(
                f"{self.base_url}/emails", json=payload, headers=headers, timeout=self.timeout
            )
        except requests.RequestException as exc:
            raise MailTemporaryError(f"Resend unreachable: {type(exc).__name__}") from exc
        status = response.status_code
        if 200 <= status < 300:
            return
        detail = _error_name(response)
        if status in CONFIG_STATUSES:
            raise MailConfigError(f"Resend refused our configuration: {status} {detail}")
        if status in (409, 429) or status >= 500:
            wait = retry_after(response.headers.get("retry-after"))
            raise MailTemporaryError(f"Resend answered {status} {detail}", retry_after=wait)
        raise MailRejected(f"Resend refused the message: {status} {detail}")


def retry_after(value: str | None) -> float | None:
    """Seconds from a `Retry-After` header given in seconds (Resend's form); None when absent or odd."""
    try:
        seconds = float(value) if value else None
    except ValueError:
        return None
    return None if seconds is None or seconds < 0 else min(seconds, 3600.0)


def _error_name(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return ""
    return str(body.get("name") or body.get("message") or "")[:200] if isinstance(body, dict) else ""
