"""The trial-reminder job runs once for the whole deployment, however many instances tick it at once.

Each "instance" is its own `Database` (own engine, pool and in-process lock) on one shared database, as
two server processes are; both tick at the same moment, on SQLite and (when configured) PostgreSQL.
"""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from server.db import Database
from server.models import JobRun, Outbox, Trial
from server.reminders import JOB_EVERY, JOB_NAME, run_trial_reminders

INSTANCES = 2


def _add_trials(database: Database, clock, names: list[tuple[str, str]]) -> None:
    """Trials ending in 2 days, each (id, email)."""
    now = clock.now()
    with database.transaction() as session:
        for trial_id, email in names:
            session.add(
                Trial(
                    id=trial_id,
                    first_seen_at=now - timedelta(days=28),
                    ends_at=now + timedelta(days=2),
                    machine_public_key=f"pk_{trial_id}",
                    email=email,
                    locale="el",
                )
            )


def _tick_at_once(instances: list[Database], clock) -> list[int | None]:
    """Every instance runs the reminder tick at the same moment; their results in instance order."""
    barrier = threading.Barrier(len(instances))
    results: list[int | None] = [None] * len(instances)
    errors: list[BaseException] = []

    def tick(index: int) -> None:
        try:
            barrier.wait(timeout=30)
            results[index] = run_trial_reminders(instances[index], clock)
        except BaseException as exc:  # surfaced below, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=tick, args=(i,)) for i in range(len(instances))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    return results


@pytest.fixture
def instances(db_url: str):
    dbs = [Database(db_url, pool_size=2) for _ in range(INSTANCES)]
    yield dbs
    for db in dbs:
        db.dispose()


def _outbox(database: Database) -> list[tuple[str, str]]:
    with database.transaction() as session:
        rows = session.scalars(select(Outbox).order_by(Outbox.idempotency_key)).all()
        return [(r.to_email, r.idempotency_key) for r in rows]


def test_two_instances_ticking_at_once_send_each_reminder_once(instances, database, clock):
    # One address typed into two trials gets one email (the 30-day rule), which two instances
    # interleaving their scans could break; the lock makes one of them do the whole tick.
    _add_trials(
        database, clock, [("trial_a", "anna@cafe.gr"), ("trial_b", "anna@cafe.gr"), ("trial_c", "c@bar.gr")]
    )
    for _ in range(3):  # three intervals: the job runs once in each, never twice
        results = _tick_at_once(instances, clock)
        assert sum(result is not None for result in results) == 1
        clock.advance(JOB_EVERY.total_seconds())
    _add_trials(database, clock, [("trial_d", "d@taverna.gr")])
    assert sorted(r for r in _tick_at_once(instances, clock) if r is not None) == [1]
    assert _outbox(database) == [
        ("anna@cafe.gr", "trial-ending:trial_a"),
        ("c@bar.gr", "trial-ending:trial_c"),
        ("d@taverna.gr", "trial-ending:trial_d"),
    ]
    with database.transaction() as session:
        assert session.get(JobRun, JOB_NAME).runs == 4
        assert session.scalar(select(func.count()).select_from(Outbox)) == 3


def test_a_tick_within_the_interval_is_skipped_and_the_next_interval_runs(instances, database, clock):
    first, second = instances
    _add_trials(database, clock, [("trial_a", "a@cafe.gr")])
    assert run_trial_reminders(first, clock) == 1
    clock.advance(JOB_EVERY.total_seconds() - 1)
    _add_trials(database, clock, [("trial_b", "b@cafe.gr")])
    assert run_trial_reminders(second, clock) is None  # the other instance ran it 9m59s ago
    assert [key for _, key in _outbox(database)] == ["trial-ending:trial_a"]
    clock.advance(1)
    assert run_trial_reminders(second, clock) == 1
    assert [key for _, key in _outbox(database)] == ["trial-ending:trial_a", "trial-ending:trial_b"]


def test_a_failed_run_is_retried_at_the_next_tick(instances, database, clock, monkeypatch):
    from server import reminders

    _add_trials(database, clock, [("trial_a", "a@cafe.gr")])

    def broken(_session, _now):
        raise RuntimeError("mail template missing")

    monkeypatch.setattr(reminders, "queue_trial_reminders", broken)
    with pytest.raises(RuntimeError):
        run_trial_reminders(instances[0], clock)
    monkeypatch.undo()
    assert run_trial_reminders(instances[1], clock) == 1  # the failed start was rolled back
    assert [key for _, key in _outbox(database)] == ["trial-ending:trial_a"]
