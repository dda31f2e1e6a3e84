"""Periodic jobs that run once for the whole deployment, however many instances tick.

Every server instance (and `pospal-server worker`) ticks the same periodic jobs. `run_once_per` makes
one of them do the work per interval: inside one transaction it takes a database lock, reads the job's
`job_runs` row, and runs the job only when its last start is at least `every` ago, recording the new
start in the same transaction (a job that fails rolls its start back, so the next tick retries).

    PostgreSQL  `pg_try_advisory_xact_lock(key of the job name)`: an instance that finds it taken skips
                this tick at once instead of waiting; the lock ends with the transaction.
    SQLite      the write lock: `Database.transaction()` opens with `BEGIN IMMEDIATE`, so the second
                instance waits, then reads the first one's start and skips.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TypeVar

from sqlalchemy import text
from sqlalchemy.orm import Session

from server.db import Database
from server.models import JobRun

T = TypeVar("T")


def lock_key(name: str) -> int:
    """The PostgreSQL advisory lock id of a job: a signed 64-bit number from its name."""
    digest = hashlib.sha256(f"pospal-job:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def run_once_per(
    db: Database, name: str, every: timedelta, now: datetime, job: Callable[[Session], T]
) -> T | None:
    """Run `job(session)` unless another instance runs it now or started it less than `every` ago.

    Returns the job's result, or None when this tick was skipped.
    """
    with db.transaction() as session:
        if session.get_bind().dialect.name == "postgresql":
            taken = session.execute(text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": lock_key(name)})
            if not taken.scalar_one():
                return None
        row = session.get(JobRun, name)
        if row is not None and now - row.started_at < every:
            return None
        if row is None:
            row = JobRun(name=name, started_at=now, runs=0)
            session.add(row)
        row.started_at = now
        row.runs += 1
        session.flush()
        return job(session)
