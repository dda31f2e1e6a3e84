"""The trial-ending reminder: one email 3 days before a trial ends, to an owner we can reach.

Trials are keyed by fingerprint. The address is the one the owner gave when starting the trial (optional,
`trials.email`), else the email of the newest checkout started by the same machine key (an owner who
looked at buying, then stopped). Skipped: owners who already have a live subscription, and addresses
that got a trial reminder in the last 30 days (an address typed into many trials gets one email, not
one per trial). Every instance ticks the job (`run_trial_reminders`); `server.jobs.run_once_per` lets one
of them run it per interval, under a database lock, and the outbox key per trial keeps a trial to one
email even if the job ran twice.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from pospal_protocol.clock import Clock
from server.billing.base import LIVE_STATUSES
from server.db import Database
from server.jobs import run_once_per
from server.models import Checkout, Customer, Outbox, Subscription, Trial
from server.outbox import enqueue

REMIND_BEFORE = timedelta(days=3)
# One trial reminder per address in this long, however many trials name it.
REMIND_ONCE_PER = timedelta(days=30)
JOB_NAME = "trial_reminders"
# How often the whole deployment runs the job (each instance ticks it; one runs it per interval).
JOB_EVERY = timedelta(minutes=10)


def format_day(when: datetime) -> str:
    """Format a date the way Greek and European customers read it: 31/12/2026."""
    return when.strftime("%d/%m/%Y")


def run_trial_reminders(db: Database, clock: Clock, every: timedelta = JOB_EVERY) -> int | None:
    """The periodic tick: queue the reminders unless another instance did so less than `every` ago.

    Returns how many emails were queued, or None when this instance skipped the tick.
    """
    now = clock.now()
    return run_once_per(db, JOB_NAME, every, now, lambda session: queue_trial_reminders(session, now))


def enqueue_trial_reminders(db: Database, clock: Clock) -> int:
    """Enqueue `trial_ending` for trials ending within 3 days; return how many new emails were queued."""
    now = clock.now()
    with db.transaction() as session:
        return queue_trial_reminders(session, now)


def queue_trial_reminders(session: Session, now: datetime) -> int:
    """`enqueue_trial_reminders` inside the caller's transaction."""
    queued = 0
    trials = session.scalars(
        select(Trial).where(Trial.ends_at > now, Trial.ends_at <= now + REMIND_BEFORE).order_by(Trial.id)
    ).all()
    for trial in trials:
        address = _reminder_address(session, trial)
        if address is None:
            continue
        email, locale = address
        key = f"trial-ending:{trial.id}"
        if _has_live_subscription(session, email) or _reminded_lately(session, email, key, now):
            continue
        queued += enqueue(
            session, email, "trial_ending", locale, {"ends_on": format_day(trial.ends_at)}, key, now=now
        )
    return queued


def _reminder_address(session: Session, trial: Trial) -> tuple[str, str] | None:
    """(email, locale) for a trial's reminder, or None when nobody can be reached."""
    if trial.email:
        customer = session.scalars(select(Customer).where(Customer.email == trial.email)).first()
        return trial.email, trial.locale or (customer.locale if customer else "en")
    customer = session.scalars(
        select(Customer)
        .join(Checkout, Checkout.customer_id == Customer.id)
        .where(Checkout.machine_public_key == trial.machine_public_key)
        .order_by(Checkout.created_at.desc())
        .limit(1)
    ).first()
    return (customer.email, customer.locale) if customer is not None else None


def _has_live_subscription(session: Session, email: str) -> bool:
    return (
        session.scalars(
            select(Subscription.id)
            .join(Customer, Customer.id == Subscription.customer_id)
            .where(Customer.email == email, Subscription.status.in_(LIVE_STATUSES))
            .limit(1)
        ).first()
        is not None
    )


def _reminded_lately(session: Session, email: str, key: str, now: datetime) -> bool:
    """True when `email` already got a trial reminder for another trial in the last `REMIND_ONCE_PER`."""
    return (
        session.scalars(
            select(Outbox.id)
            .where(
                Outbox.to_email == email,
                Outbox.template == "trial_ending",
                Outbox.idempotency_key != key,
                Outbox.created_at > now - REMIND_ONCE_PER,
            )
            .limit(1)
        ).first()
        is not None
    )
