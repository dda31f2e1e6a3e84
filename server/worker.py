"""The background mail worker: delivers the outbox and runs the trial-reminder job, until stopped.

It sits above both `server.outbox` (delivery) and `server.reminders` (which enqueues into the outbox), so
neither of those imports the other's caller. The app runs it in a daemon thread; `pospal-server worker`
runs it alone.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta
from typing import Any

from prometheus_client import CollectorRegistry

from pospal_protocol.clock import Clock, SystemClock
from server.db import Database
from server.mail import make_mailer
from server.mail.base import Mailer
from server.outbox import OutboxWorker, retry_config_waits
from server.reminders import JOB_EVERY, run_trial_reminders

log = logging.getLogger("pospal.outbox")


def run_worker(
    settings: Any,
    stop_event: threading.Event,
    *,
    db: Database | None = None,
    mailer: Mailer | None = None,
    clock: Clock | None = None,
    poll_s: float = 2.0,
    reminder_every_s: float = JOB_EVERY.total_seconds(),
    registry: CollectorRegistry | None = None,
) -> None:
    """Deliver outbox mail until `stop_event` is set; also ticks the trial-ending reminder job.

    The reminder job runs once per `reminder_every_s` for the whole deployment: this loop ticks it more
    often (at most every minute), and `run_trial_reminders` skips the ticks another instance already ran.

    Used in-process by the app (a daemon thread) and by `pospal-server worker`. Database or provider
    outages never end the loop: it logs and waits, with the wait growing up to one minute. `registry`
    is where the worker's Prometheus counter goes (the app's, so `/metrics` shows it).
    """
    own_db = db is None
    database = db or Database(settings.database_url, pool_size=2)
    clock = clock or SystemClock()
    worker = OutboxWorker(database, mailer or make_mailer(settings), clock, registry=registry)
    last_reminder: datetime | None = None
    reminder_tick_s = min(60.0, reminder_every_s)
    idle_wait = poll_s
    released = False
    try:
        while not stop_event.is_set():
            try:
                if not released:
                    released = True
                    if retry_config_waits(database, clock):
                        log.info("email_config_waits_released")
                now = clock.now()
                if last_reminder is None or (now - last_reminder).total_seconds() >= reminder_tick_s:
                    run_trial_reminders(database, clock, timedelta(seconds=reminder_every_s))
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
