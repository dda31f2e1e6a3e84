"""The email outbox: write a message in the caller's transaction, deliver it later from a worker.

`enqueue` inserts one row next to the change it reports, so the email exists if and only if the change
was committed. The idempotency key is unique: enqueueing the same key twice (a redelivered webhook, a
retried request) keeps one row.

`OutboxWorker` delivers. Several workers, in one process or many servers on one PostgreSQL, share the
table safely:

1. **Claim** a batch in a short transaction. On PostgreSQL the due rows are read with
   `FOR UPDATE SKIP LOCKED`, so concurrent workers take disjoint rows without waiting on each other.
   The claim itself is a conditional UPDATE (`claimed_until` past or empty), which is atomic on SQLite
   too, where writers are serialised anyway. A claim is a lease: if a worker dies mid-send, the rows
   become claimable again when the lease ends.
2. **Send** outside any transaction, with the row's idempotency key (Resend's `Idempotency-Key`,
   SMTP's Message-ID).
3. **Record** the result: sent, or retry later with exponential backoff, or failed for good.

Delivery is at-least-once: a crash between 2 and 3 sends again with the same key, which the provider
answers without a second delivery.

No message is dropped silently:

- **Configuration errors** (a refused login, key or sender: `MailConfigError`) keep the message pending.
  The worker stops the batch (every message would fail alike), retries every few minutes, and alerts the
  operator: one `email_config_error` log line per `alert_every`, the `pospal_email_config_errors_total`
  counter, and `pospal-server admin outbox`, which lists what is stuck and why. A worker that starts
  (after the setting is fixed) retries those messages at once.
- **Temporary errors** are retried with exponential backoff (capped at an hour) for `retry_horizon`
  (4 days) after the message was written, waiting at least the provider's `Retry-After`; a 429 also
  stops the batch, so the rest are not thrown at a provider that asked us to slow down.
- **Messages with a life** (a login code: `expires_at` in the context, or `minutes` for
  `activation_code`) are never sent after it ends: they are marked failed as `expired`.
- Only a refusal of the message itself (bad address, unknown template) fails it at once.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import CollectorRegistry, Counter
from sqlalchemy import or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from pospal_protocol.clock import Clock, SystemClock
from server.db import Database
from server.errors import MailConfigError, MailRejected, MailTemporaryError, TemplateError
from server.mail.base import Mailer, OutgoingEmail
from server.mail.templates import check as check_template
from server.mail.templates import normalize_locale, render
from server.models import Outbox

log = logging.getLogger("pospal.outbox")

PENDING, SENT, FAILED = "pending", "sent", "failed"
# `last_error` prefixes that say why a message is waiting (read by `stuck` and `admin outbox`).
CONFIG_PREFIX, EXPIRED_PREFIX = "config: ", "expired: "


def enqueue(
    session: Session,
    to_email: str,
    template: str,
    locale: str | None,
    context: Mapping[str, Any],
    idempotency_key: str,
    *,
    now: datetime | None = None,
    expires_at: datetime | None = None,
) -> bool:
    """Add an email to the outbox inside the caller's transaction; return False if the key exists.

    Pass `now=clock.now()` so the row is due at the caller's (possibly fake) time, and `expires_at` for a
    message that is useless later (it is then never sent late). An unknown template
    or a missing context key raises `TemplateError` here, so the caller's transaction fails loudly
    instead of the worker failing later.
    """
    check_template(template, context)
    plain_context = json.loads(json.dumps(dict(context), default=str))
    if expires_at is not None:
        plain_context["expires_at"] = expires_at.isoformat()
    when = now or SystemClock().now()
    values = {
        "to_email": to_email.strip().lower(),
        "template": template,
        "locale": normalize_locale(locale),
        "context": plain_context,
        "idempotency_key": idempotency_key,
        "status": PENDING,
        "attempts": 0,
        "next_attempt_at": when,
        "created_at": when,
    }
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = (
        insert(Outbox)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["idempotency_key"])
        .returning(Outbox.id)
    )
    return session.execute(stmt).first() is not None


@dataclass(frozen=True)
class Claimed:
    """A claimed outbox row, copied out of the session so sending needs no database."""

    id: int
    to_email: str
    template: str
    locale: str
    context: dict[str, Any]
    idempotency_key: str
    attempts: int
    created_at: datetime | None = None

    def expires_at(self) -> datetime | None:
        """When this message stops being worth sending (a login code's life), or None."""
        raw = self.context.get("expires_at")
        if isinstance(raw, str):
            try:
                return _aware(datetime.fromisoformat(raw))
            except ValueError:
                return None
        if self.template == "activation_code" and self.created_at is not None:
            minutes = self.context.get("minutes")
            if isinstance(minutes, int | float):
                return _aware(self.created_at) + timedelta(minutes=minutes)
        return None


def _aware(when: datetime) -> datetime:
    # SQLite hands back naive datetimes; every time we store is UTC.
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


@dataclass(frozen=True)
class RunResult:
    """What one `run_once` pass did."""

    sent: int = 0
    retried: int = 0
    failed: int = 0

    @property
    def handled(self) -> int:
        """Rows this pass took a decision on."""
        return self.sent + self.retried + self.failed


def backoff(attempts: int, base_s: float, max_s: float) -> timedelta:
    """Delay before the next try after `attempts` failures: base, 2x, 4x, ... capped at `max_s`."""
    return timedelta(seconds=min(max_s, base_s * 2 ** max(0, attempts - 1)))


class OutboxWorker:
    """Claims due outbox rows, sends them, and records the outcome."""

    def __init__(
        self,
        db: Database,
        mailer: Mailer,
        clock: Clock,
        *,
        worker_id: str | None = None,
        batch_size: int = 20,
        lease: timedelta = timedelta(minutes=5),
        retry_horizon: timedelta = timedelta(days=4),
        base_delay_s: float = 30.0,
        max_delay_s: float = 3600.0,
        config_retry: timedelta = timedelta(minutes=5),
        alert_every: timedelta = timedelta(minutes=15),
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.db = db
        self.mailer = mailer
        self.clock = clock
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.batch_size = batch_size
        self.lease = lease
        self.retry_horizon = retry_horizon
        self.base_delay_s = base_delay_s
        self.max_delay_s = max_delay_s
        self.config_retry = config_retry
        self.alert_every = alert_every
        self.config_errors = Counter(
            "pospal_email_config_errors",
            "Sends refused because the mail settings are wrong (the message stays pending)",
            # A private registry when none is given: workers made in one process (tests) never collide.
            registry=registry if registry is not None else CollectorRegistry(),
        )
        self._last_alert: datetime | None = None

    def claim(self) -> tuple[str, list[Claimed]]:
        """Lease up to `batch_size` due rows to this worker; return the claim token and the rows."""
        now = self.clock.now()
        token = f"{self.worker_id}:{uuid.uuid4().hex[:8]}"
        claimable = (
            Outbox.status == PENDING,
            Outbox.next_attempt_at <= now,
            or_(Outbox.claimed_until.is_(None), Outbox.claimed_until < now),
        )
        with self.db.transaction() as session:
            due = (
                select(Outbox.id)
                .where(*claimable)
                .order_by(Outbox.next_attempt_at, Outbox.id)
                .limit(self.batch_size)
                # Rendered only on PostgreSQL; SQLite's BEGIN IMMEDIATE already excludes other writers.
                .with_for_update(skip_locked=True)
            )
            ids = list(session.scalars(due))
            if not ids:
                return token, []
            session.execute(
                update(Outbox)
                .where(Outbox.id.in_(ids), *claimable)
                .values(claimed_by=token, claimed_until=now + self.lease)
                .execution_options(synchronize_session=False)
            )
            rows = session.scalars(select(Outbox).where(Outbox.claimed_by == token).order_by(Outbox.id))
            claimed = [
                Claimed(
                    id=r.id,
                    to_email=r.to_email,
                    template=r.template,
                    locale=r.locale,
                    context=dict(r.context or {}),
                    idempotency_key=r.idempotency_key,
                    attempts=r.attempts,
                    created_at=r.created_at,
                )
                for r in rows
            ]
        return token, claimed

    def run_once(self) -> RunResult:
        """Claim one batch and deliver it; return how many were sent, retried and failed."""
        token, batch = self.claim()
        sent = retried = failed = 0
        for index, row in enumerate(batch):
            outcome, pause_until = self._deliver(token, row)
            sent += outcome == SENT
            failed += outcome == FAILED
            retried += outcome == PENDING
            if pause_until is not None:
                # The provider refused our settings or asked us to slow down: the rest of the batch
                # would meet the same answer, so it waits too (no attempt counted).
                self._release(token, batch[index + 1 :], pause_until)
                break
        return RunResult(sent=sent, retried=retried, failed=failed)

    def drain(self, max_passes: int = 100) -> RunResult:
        """Run passes until nothing is due (or `max_passes`); handy for tests and the CLI."""
        total = RunResult()
        for _ in range(max_passes):
            result = self.run_once()
            if not result.handled:
                break
            total = RunResult(
                total.sent + result.sent, total.retried + result.retried, total.failed + result.failed
            )
        return total

    def _deliver(self, token: str, row: Claimed) -> tuple[str, datetime | None]:
        """Send one row and record the outcome; the second value pauses the rest of the batch until then."""
        now = self.clock.now()
        expires = row.expires_at()
        if expires is not None and now >= expires:
            self._record(token, row, FAILED, error=f"{EXPIRED_PREFIX}its life ended before it could be sent")
            log.warning("email_expired_unsent", extra={"outbox_id": row.id, "template": row.template})
            return FAILED, None
        try:
            rendered = render(row.template, row.locale, row.context)
            self.mailer.send(
                OutgoingEmail(
                    to_email=row.to_email,
                    subject=rendered.subject,
                    text=rendered.text,
                    html=rendered.html,
                    idempotency_key=row.idempotency_key,
                )
            )
        except (MailRejected, TemplateError) as exc:
            self._record(token, row, FAILED, error=str(exc))
            log.error("email_failed", extra={"outbox_id": row.id, "error": str(exc)})
            return FAILED, None
        except MailConfigError as exc:
            retry_at = now + self.config_retry
            self._record(token, row, PENDING, error=f"{CONFIG_PREFIX}{exc}", retry_at=retry_at)
            self._alert(str(exc), now)
            return PENDING, retry_at
        except Exception as exc:  # any other failure is worth another try
            wait = backoff(row.attempts + 1, self.base_delay_s, self.max_delay_s)
            asked = exc.retry_after if isinstance(exc, MailTemporaryError) else None
            if asked is not None:
                wait = max(wait, timedelta(seconds=asked))
            created = _aware(row.created_at) if row.created_at else now
            status = FAILED if now + wait > created + self.retry_horizon else PENDING
            self._record(token, row, status, error=f"{type(exc).__name__}: {exc}", retry_at=now + wait)
            log.warning(
                "email_retry" if status == PENDING else "email_gave_up",
                extra={"outbox_id": row.id, "attempts": row.attempts + 1, "error": type(exc).__name__},
            )
            return status, (now + wait if asked is not None else None)
        self._record(token, row, SENT)
        log.info("email_sent", extra={"outbox_id": row.id, "template": row.template})
        return SENT, None

    def _alert(self, error: str, now: datetime) -> None:
        """Count every config refusal; log one line per `alert_every` (not one per message)."""
        self.config_errors.inc()
        if self._last_alert is not None and now - self._last_alert < self.alert_every:
            return
        self._last_alert = now
        with self.db.transaction() as session:
            waiting = len(stuck(session, now, include_failed=False))
        log.error(
            "email_config_error",
            extra={
                "error": error[:300],
                "waiting": waiting,
                "hint": "fix SMTP_URL / RESEND_API_KEY / FROM_EMAIL; see `pospal-server admin outbox`",
            },
        )

    def _record(
        self,
        token: str,
        row: Claimed,
        status: str,
        error: str | None = None,
        retry_at: datetime | None = None,
    ) -> None:
        now = self.clock.now()
        values: dict[str, Any] = {
            "status": status,
            "attempts": row.attempts + 1,
            "claimed_by": None,
            "claimed_until": None,
            "last_error": error[:2000] if error else None,
        }
        if status == SENT:
            values["sent_at"] = now
        elif status == PENDING:
            values["next_attempt_at"] = retry_at or now
        with self.db.transaction() as session:
            # Only the holder of the claim records; if the lease ran out and another worker took the
            # row, that worker's outcome wins (the provider's idempotency key covers the double send).
            session.execute(
                update(Outbox)
                .where(Outbox.id == row.id, Outbox.claimed_by == token)
                .values(**values)
                .execution_options(synchronize_session=False)
            )

    def _release(self, token: str, rows: list[Claimed], until: datetime) -> None:
        """Give unsent rows of this claim back, due at `until`, with no attempt counted."""
        if not rows:
            return
        with self.db.transaction() as session:
            session.execute(
                update(Outbox)
                .where(Outbox.id.in_([r.id for r in rows]), Outbox.claimed_by == token)
                .values(claimed_by=None, claimed_until=None, next_attempt_at=until)
                .execution_options(synchronize_session=False)
            )


def stuck(session: Session, now: datetime, *, include_failed: bool = True, limit: int = 200) -> list[dict]:
    """Messages that did not go out: pending after a failed try, and (optionally) failed ones, with why.

    `reason` is `config` (our mail settings are refused: fix them and the message goes out), `expired`
    (a code whose life ended unsent), `retrying` (the provider failed; the worker keeps trying) or
    `failed` (refused for good).
    """
    states = [PENDING, FAILED] if include_failed else [PENDING]
    rows = session.scalars(
        select(Outbox)
        .where(Outbox.status.in_(states), or_(Outbox.attempts > 0, Outbox.status == FAILED))
        .order_by(Outbox.created_at, Outbox.id)
        .limit(limit)
    )
    listed = []
    for r in rows:
        error = r.last_error or ""
        if error.startswith(CONFIG_PREFIX):
            reason = "config"
        elif error.startswith(EXPIRED_PREFIX):
            reason = "expired"
        else:
            reason = "retrying" if r.status == PENDING else "failed"
        listed.append(
            {
                "id": r.id,
                "to": r.to_email,
                "template": r.template,
                "status": r.status,
                "reason": reason,
                "attempts": r.attempts,
                "created_at": r.created_at,
                "next_attempt_at": r.next_attempt_at if r.status == PENDING else None,
                "error": error,
            }
        )
    return listed


def retry_config_waits(db: Database, clock: Clock) -> int:
    """Make messages waiting on a configuration error due now (a new worker may have the fix)."""
    with db.transaction() as session:
        result = session.execute(
            update(Outbox)
            .where(Outbox.status == PENDING, Outbox.last_error.startswith(CONFIG_PREFIX))
            .values(next_attempt_at=clock.now())
            .execution_options(synchronize_session=False)
        )
        return int(getattr(result, "rowcount", 0) or 0)
