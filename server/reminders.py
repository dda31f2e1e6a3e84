"""The trial-ending reminder: one email 3 days before a trial ends, to an owner we can reach.

Trials are keyed by fingerprint and carry no email. The address comes from the newest checkout started
by the same machine key (an owner who looked at buying, then stopped). Owners who already have a live
subscription are skipped. The outbox key is per trial, so running this job every few minutes, on every
server instance, still sends one email.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select

from server.billing.base import LIVE_STATUSES
from server.clock import Clock
from server.db import Database
from server.models import Checkout, Customer, Subscription, Trial
from server.outbox import enqueue

REMIND_BEFORE = timedelta(days=3)


def format_day(when: datetime) -> str:
    """Format a date the way Greek and European customers read it: 31/12/2026."""
    return when.strftime("%d/%m/%Y")


def enqueue_trial_reminders(db: Database, clock: Clock) -> int:
    """Enqueue `trial_ending` for trials ending within 3 days; return how many new emails were queued."""
    now = clock.now()
    queued = 0
    with db.transaction() as session:
        trials = session.scalars(
            select(Trial).where(Trial.ends_at > now, Trial.ends_at <= now + REMIND_BEFORE)
        ).all()
        for trial in trials:
            customer = session.scalars(
                select(Customer)
                .join(Checkout, Checkout.customer_id == Customer.id)
                .where(Checkout.machine_public_key == trial.machine_public_key)
                .order_by(Checkout.created_at.desc())
                .limit(1)
            ).first()
            if customer is None:
                continue
            live = session.scalars(
                select(Subscription.id).where(
                    Subscription.customer_id == customer.id, Subscription.status.in_(LIVE_STATUSES)
                )
            ).first()
            if live is not None:
                continue
            queued += enqueue(
                session,
                customer.email,
                "trial_ending",
                customer.locale,
                {"ends_on": format_day(trial.ends_at)},
                f"trial-ending:{trial.id}",
                now=now,
            )
    return queued
