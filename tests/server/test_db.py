"""server.db: concurrent writers on SQLite queue instead of failing; every transaction is all or nothing."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import func, select, text

from server.db import Database
from server.models import AuditLog


def test_many_writers_from_two_engines_all_commit(db_url, clock):
    # Two Database objects stand for two server processes: they only share the database file/server.
    engines = [Database(db_url, pool_size=4), Database(db_url, pool_size=4)]
    errors: list[BaseException] = []

    def writer(db: Database, n: int) -> None:
        try:
            for i in range(40):
                with db.transaction() as session:
                    count = session.scalar(select(func.count()).select_from(AuditLog))
                    session.add(
                        AuditLog(
                            at=clock.now(), actor="system", action="t", detail={"n": n, "i": i, "seen": count}
                        )
                    )
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(engines[n % 2], n)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    try:
        assert errors == []
        with engines[0].transaction() as session:
            assert session.scalar(select(func.count()).select_from(AuditLog)) == 8 * 40
    finally:
        for db in engines:
            db.dispose()


def test_a_failed_transaction_leaves_nothing_behind(database, clock):
    with pytest.raises(RuntimeError), database.transaction() as session:
        session.add(AuditLog(at=clock.now(), actor="system", action="half", detail={}))
        session.flush()
        raise RuntimeError("boom")
    with database.transaction() as session:
        assert session.scalar(select(func.count()).select_from(AuditLog)) == 0


def test_naive_datetimes_are_refused(database):
    from datetime import datetime

    with pytest.raises(Exception, match="naive"), database.transaction() as session:  # noqa: B017
        session.add(AuditLog(at=datetime(2026, 1, 1), actor="system", action="x", detail={}))  # noqa: DTZ001
        session.flush()


@pytest.mark.timeout(60)
def test_an_unresponsive_postgresql_host_fails_fast_instead_of_freezing_a_worker():
    """A host that takes the TCP connection but never answers (a hung database, a black hole behind a
    proxy): every engine gives up after PG_CONNECT_TIMEOUT_S, so the event loop is not frozen."""
    import socket
    import time

    from sqlalchemy.exc import OperationalError

    from server.db import PG_CONNECT_TIMEOUT_S

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # accepted by the kernel, never answered
        port = silent.getsockname()[1]
        db = Database(f"postgresql+psycopg://postgres@127.0.0.1:{port}/test")
        try:
            for use in (db.read, lambda: db.begin(durable=False), db.transaction):
                started = time.monotonic()
                with pytest.raises(OperationalError):
                    with use() as connection:
                        connection.execute(text("SELECT 1"))
                assert time.monotonic() - started < PG_CONNECT_TIMEOUT_S + 5
        finally:
            db.dispose()


@pytest.mark.parametrize("db_backend", ["sqlite"], indirect=True)  # the database-wide write lock is SQLite's
def test_a_sqlite_write_lock_held_past_the_busy_timeout_is_a_503_unavailable(
    client, make_machine, db_backend, database, monkeypatch
):
    """A route (not the refresh fast path) that cannot get SQLite's write lock answers a retryable 503."""
    import sqlite3
    from pathlib import Path

    monkeypatch.setattr("server.db.SQLITE_BUSY_TIMEOUT_MS", 300)
    holder = sqlite3.connect(Path(database.engine.url.database), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        response = make_machine().start_trial(client)
    finally:
        holder.execute("COMMIT")
        holder.close()
    assert (response.status_code, response.json()["error"]) == (503, "unavailable")
    assert make_machine().start_trial(client).status_code == 200
