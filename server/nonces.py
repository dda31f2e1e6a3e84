"""Replay protection for machine-signed requests: each nonce is stored once, in the database.

The nonce is the table's primary key, so two instances that receive the same request at once cannot
both accept it: one insert wins, the other is refused as a replay. Rows expire when the request's
timestamp window has passed; `purge_expired` deletes them, run now and then by the refresh path.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, bindparam, delete
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from server.db import connection_of
from server.errors import Replay
from server.hotsql import HotStatement
from server.models import RequestNonce, table_of

# The signed timestamp may be this far from the server's clock, either way.
WINDOW_S = 300


def check_timestamp(timestamp: int, now: datetime) -> None:
    """Raise `Replay` when a signed timestamp is more than `WINDOW_S` from `now`."""
    if abs(int(now.timestamp()) - int(timestamp)) > WINDOW_S:
        # `server_time` lets an agent whose clock is off re-sign with the server's time and retry once.
        raise Replay(
            "The request timestamp is too far from the server's clock. Check the PC's clock.",
            server_time=int(now.timestamp()),
        )


def _insert_statement(dialect: str) -> Any:
    table = table_of(RequestNonce)
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    return (
        insert(table)
        .values(
            nonce=bindparam("p_nonce"), machine_id=bindparam("p_owner"), expires_at=bindparam("p_expires")
        )
        .on_conflict_do_nothing(index_elements=["nonce"])
        .returning(table.c.nonce)
    )


# Built once per dialect: the refresh hot path should not rebuild statements on every request.
_INSERTS = {dialect: _insert_statement(dialect) for dialect in ("sqlite", "postgresql")}
# SQLite's batched insert runs on the driver as one multi-row statement (server.hotsql).
_HOT_INSERT_SQLITE = HotStatement(_INSERTS["sqlite"])


def remember(
    session: Session | Connection, nonce: str, machine_id: str, timestamp: int, now: datetime
) -> None:
    """Store `nonce` until its window has passed, or raise `Replay` if it was seen before.

    Uses INSERT ... ON CONFLICT DO NOTHING RETURNING, so a duplicate neither raises a database error
    nor spoils the caller's transaction (SQLite 3.35+ and PostgreSQL both support it); RETURNING gives
    a row only when the insert happened (rowcount is unreliable across drivers).
    """
    check_timestamp(timestamp, now)
    expires = expiry(timestamp, now)
    connection = connection_of(session)
    statement = _INSERTS["postgresql" if connection.dialect.name == "postgresql" else "sqlite"]
    params = {"p_nonce": nonce, "p_owner": machine_id[:40], "p_expires": expires}
    if connection.execute(statement, params).first() is None:
        raise Replay()


def expiry(timestamp: int, now: datetime) -> datetime:
    """When a nonce signed at `timestamp` and received at `now` may be forgotten."""
    return max(now, datetime.fromtimestamp(int(timestamp), now.tzinfo)) + timedelta(seconds=WINDOW_S)


def remember_many(connection: Connection, entries: Iterable[tuple[str, str, datetime]]) -> set[str]:
    """Store several `(nonce, machine_id, expires)` in one statement; return the nonces that were new.

    Nonces already stored are left alone and missing from the answer (replays). The rows go in sorted
    by nonce, so two transactions inserting overlapping nonces take their locks in the same order
    (PostgreSQL) and cannot deadlock. Callers pass distinct nonces.
    """
    rows = [
        {"p_nonce": nonce, "p_owner": owner[:40], "p_expires": expires}
        for nonce, owner, expires in sorted(entries)
    ]
    if not rows:
        return set()
    if connection.dialect.name == "postgresql":
        return set(connection.execute(_INSERTS["postgresql"], rows).scalars())
    new: set[str] = set()
    for start in range(0, len(rows), _SQLITE_ROWS_PER_INSERT):
        chunk = rows[start : start + _SQLITE_ROWS_PER_INSERT]
        new.update(nonce for (nonce,) in _HOT_INSERT_SQLITE.inserted(connection, chunk))
    return new


# Rows per SQLite INSERT: 3 parameters each, well within SQLite's limit of 32766 per statement.
_SQLITE_ROWS_PER_INSERT = 1000


_NONCES = table_of(RequestNonce)
_PURGE = delete(_NONCES).where(_NONCES.c.expires_at < bindparam("p_now"))


def purge_expired(session: Session | Connection, now: datetime) -> int:
    """Delete nonces whose window has passed; return how many."""
    return connection_of(session).execute(_PURGE, {"p_now": now}).rowcount or 0
