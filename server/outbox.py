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
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from protocol.clock import Clock, SystemClock
from server.db import Database
from server.errors import MailRejected, TemplateError
from server.mail.base import Mailer, OutgoingEmail
from server.mail.templates import check as check_template
from server.mail.templates import normalize_locale, render
from server.models import Outbox

log = logging.getLogger("pospal.outbox")

PENDING, SENT, FAILED = "pending", "sent", "failed"


def enqueue(
    session: Session,
    to_email: str,
    template: str,
    locale: str | None,
    context: Mapping[str, Any],
    idempotency_key: str,
    *,
    now: datetime | None = None,
) -> bool:
    """Add an email to the outbox inside the caller's transaction; return False if the key exists.

    Pass `now=clock.now()` so the row is due at the caller's (possibly fake) time. An unknown template
    or a missing context key raises `TemplateError` here, so the caller's transaction fails loudly
    instead of the worker failing later.
    """
    check_template(template, context)
    plain_context = json.loads(json.dumps(dict(context), default=str))
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
        max_attempts: int = 12,
        base_delay_s: float = 30.0,
        max_delay_s: float = 3600.0,
    ) -> None:
        self.db = db
        self.mailer = mailer
        self.clock = clock
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.batch_size = batch_size
        self.lease = lease
        self.max_attempts = max_attempts
        self.base_delay_s = base_delay_s
        self.max_delay_s = max_delay_s

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
                )
                for r in rows
            ]
        return token, claimed

    def run_once(self) -> RunResult:
        """Claim one batch and deliver it; return how many were sent, retried and failed."""
        token, batch = self.claim()
        sent = retried = failed = 0
        for row in batch:
            outcome = self._deliver(token, row)
            sent += outcome == SENT
            failed += outcome == FAILED
            retried += outcome == PENDING
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

    def _deliver(self, token: str, row: Claimed) -> str:
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
            return FAILED
        except Exception as exc:  # any other failure is worth another try
            attempts = row.attempts + 1
            status = FAILED if attempts >= self.max_attempts else PENDING
            self._record(token, row, status, error=f"{type(exc).__name__}: {exc}")
            log.warning(
                "email_retry" if status == PENDING else "email_gave_up",
                extra={"outbox_id": row.id, "attempts": attempts, "error": type(exc).__name__},
            )
            return status
        self._record(token, row, SENT)
        log.info("email_sent", extra={"outbox_id": row.id, "template": row.template})
        return SENT

    def _record(self, token: str, row: Claimed, status: str, error: str | None = None) -> None:
        now = self.clock.now()
        attempts = row.attempts + 1
        values: dict[str, Any] = {
            "status": status,
            "attempts": attempts,
            "claimed_by": None,
            "claimed_until": None,
            "last_error": error[:2000] if error else None,
        }
        if status == SENT:
            values["sent_at"] = now
        elif status == PENDING:
            values["next_attempt_at"] = now + backoff(attempts, self.base_delay_s, self.max_delay_s)
        with self.db.transaction() as session:
            # Only the holder of the claim records; if the lease ran out and another worker took the
            # row, that worker's outcome wins (the provider's idempotency key covers the double send).
            session.execute(
                update(Outbox)
                .where(Outbox.id == row.id, Outbox.claimed_by == token)
                .values(**values)
                .execution_options(synchronize_session=False)
            )


def run_worker(
    settings: Any,
    stop_event: threading.Event,
    *,
    db: Database | None = None,
    mailer: Mailer | None = None,
    clock: Clock | None = None,
    poll_s: float = 2.0,
    reminder_every_s: float = 600.0,
) -> None:
    """Deliver outbox mail until `stop_event` is set; also runs the trial-ending reminder job.

    Used in-process by the app (a daemon thread) and by `pospal-server worker`. Database or provider
    outages never end the loop: it logs and waits, with the wait growing up to one minute.
    """
    from server.mail import make_mailer
    from server.reminders import enqueue_trial_reminders

    own_db = db is None
    database = db or Database(settings.database_url, pool_size=2)
    clock = clock or SystemClock()
    worker = OutboxWorker(database, mailer or make_mailer(settings), clock)
    last_reminder: datetime | None = None
    idle_wait = poll_s
    try:
        while not stop_event.is_set():
            try:
                now = clock.now()
                if last_reminder is None or (now - last_reminder).total_seconds() >= reminder_every_s:
                    enqueue_trial_reminders(database, clock)
                    last_reminder = now
                result = worker.run_once()
                idle_wait = poll_s
                if result.handled:
                    continue
            except Exception:  # keep the worker alive through outages
                log.exception("outbox_worker_error")
                idle_wait = min(60.0, idle_wait * 2)
            stop_event.wait(idle_wait)
    finally:
        if own_db:
            database.dispose()
