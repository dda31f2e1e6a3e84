"""Database engine and transactions: SQLite (WAL, immediate writes) or PostgreSQL.

`Database` owns one engine and one session factory. Every unit of work runs in `db.transaction()`,
which commits on success and rolls back on any exception, so a request never half-applies.

SQLite notes. Python's sqlite3 driver starts transactions lazily and lets SELECTs run outside them, and
in WAL mode a read transaction that later writes fails at once (SQLITE_BUSY_SNAPSHOT) if another
process wrote in between. So we take over transaction control and open every transaction with
`BEGIN IMMEDIATE`. Two more things keep latency flat when several threads and processes write:

- within a process, `transaction()` takes a lock first, so only one thread per process competes for
  the SQLite write lock and the others queue in order on a cheap Python lock;
- between processes, SQLite's own busy handler would sleep 1, 2, 5 ... up to 100 ms between tries,
  which turns a 0.3 ms wait into a 100 ms one. Instead `BEGIN IMMEDIATE` is retried after sub-millisecond
  pauses until `SQLITE_BUSY_TIMEOUT_MS`.

Event-loop code (the refresh fast path) must not wait for that lock at all: it reads on `read()`, a
connection that takes no write lock, and writes through `try_begin()`, which yields None instead of
waiting when the lock is taken, so the caller can try again later (`server.refresh_writes`).
"""

from __future__ import annotations

import hashlib
import random
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

SQLITE_BUSY_TIMEOUT_MS = 10_000
# PostgreSQL: give up connecting after this long. The refresh fast path connects on the event loop, so
# an unreachable database host must fail fast (agents retry) rather than freeze the worker for minutes.
PG_CONNECT_TIMEOUT_S = 5
# Execution option: open the transaction only if the write lock is free now (see `try_begin`).
NO_WAIT_OPTION = "pospal_no_wait"
# PostgreSQL advisory lock id held while migrating (any constant; "POSPALMG" as an integer).
MIGRATION_LOCK_KEY = 0x504F5350414C4D47


def is_sqlite(url: str) -> bool:
    """Return True when the URL points at SQLite."""
    return make_url(url).get_backend_name() == "sqlite"


def make_engine(url: str, *, pool_size: int = 10, echo: bool = False) -> Engine:
    """Create an engine tuned for this service: WAL + busy timeout on SQLite, a pool on PostgreSQL."""
    if is_sqlite(url):
        engine = create_engine(
            url,
            echo=echo,
            connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
            pool_size=pool_size,
            max_overflow=pool_size,
        )
        _configure_sqlite(engine)
        return engine
    return create_engine(
        url,
        echo=echo,
        pool_size=pool_size,
        max_overflow=pool_size,
        # No pre-ping: it costs a round trip on every request. After a database restart the first use of
        # a dead connection fails and SQLAlchemy then discards the whole pool, so one request per
        # process sees the outage, and agents retry.
        pool_recycle=3600,
        connect_args={"connect_timeout": PG_CONNECT_TIMEOUT_S},
    )


def _reader_engine(url: str, *, echo: bool = False) -> Engine:
    """An engine for reads outside write transactions (see `Database.read`)."""
    if is_sqlite(url):
        engine = create_engine(
            url,
            echo=echo,
            connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
            pool_size=2,
            max_overflow=8,
        )
        _configure_sqlite_reader(engine)
        return engine
    return create_engine(
        url,
        echo=echo,
        pool_size=2,
        max_overflow=8,
        pool_recycle=3600,
        isolation_level="AUTOCOMMIT",
        connect_args={"connect_timeout": PG_CONNECT_TIMEOUT_S},
    )


def _non_durable_engine(url: str, *, echo: bool = False) -> Engine:
    """A PostgreSQL engine whose sessions commit without waiting for the WAL flush (see `begin`)."""
    return create_engine(
        url,
        echo=echo,
        # Refresh runs one transaction at a time per process (on the event loop); the rest is headroom
        # for the FastAPI route's fallback, so this pool stays small next to the main one.
        pool_size=2,
        max_overflow=8,
        pool_recycle=3600,
        connect_args={"options": "-c synchronous_commit=off", "connect_timeout": PG_CONNECT_TIMEOUT_S},
    )


def _statement_engine(url: str, *, echo: bool = False) -> Engine:
    """A PostgreSQL engine for single statements, each its own transaction, not waiting for the WAL flush.

    One statement in autocommit is one round trip: no BEGIN and no COMMIT of their own (see
    `Database.statement`).
    """
    return create_engine(
        url,
        echo=echo,
        pool_size=2,
        max_overflow=8,
        pool_recycle=3600,
        isolation_level="AUTOCOMMIT",
        connect_args={"options": "-c synchronous_commit=off", "connect_timeout": PG_CONNECT_TIMEOUT_S},
    )


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Disable the driver's own BEGIN handling; `_on_begin` emits BEGIN IMMEDIATE instead.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        # No SQLite busy handler: `_begin_immediate` retries with short pauses instead (see above).
        cursor.execute("PRAGMA busy_timeout=0")
        # NORMAL is durable across application crashes in WAL mode; only an OS crash can lose the
        # last commits, and a lost nonce or last_seen update is harmless.
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        no_wait = connection.get_execution_options().get(NO_WAIT_OPTION, False)
        _begin_immediate(connection.connection.driver_connection, wait=not no_wait)


def _configure_sqlite_reader(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Autocommit: each SELECT is its own short read transaction, and no BEGIN ever takes a lock.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA query_only=ON")
        # A WAL reader waits only while another connection recovers the WAL (rare and short).
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.close()


class WriteBusy(Exception):  # noqa: N818 - a state, not a failure
    """`Database.try_begin` found the write lock taken (by another thread or process)."""


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    return "locked" in str(exc) or "busy" in str(exc)


def _begin_immediate(raw: sqlite3.Connection, *, wait: bool = True) -> None:
    """BEGIN IMMEDIATE, retrying while another connection holds the write lock (bounded in time).

    With `wait=False`, one attempt: `WriteBusy` if the lock is taken.
    """
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    pause = 0.0002
    while True:
        try:
            raw.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as exc:
            if not wait and _is_busy(exc):
                raise WriteBusy() from None
            if not _is_busy(exc) or time.monotonic() > deadline:
                # As SQLAlchemy's own error, so the app answers 503 `unavailable` (retry) like any
                # database that does not answer. (This runs in a `begin` event, outside its wrapping.)
                raise OperationalError("BEGIN IMMEDIATE", None, exc) from exc
        # Jitter keeps two processes from retrying in lockstep; the pause grows to at most 2 ms.
        time.sleep(pause * (0.5 + random.random()))  # noqa: S311 - not security relevant
        pause = min(pause * 1.5, 0.002)


class Database:
    """One engine plus its session factory; the only way server code reaches the database."""

    def __init__(self, url: str, *, pool_size: int = 10, echo: bool = False) -> None:
        self.url = url
        self.engine = make_engine(url, pool_size=pool_size, echo=echo)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        # PostgreSQL: non-durable transactions get their own small pool whose connections already run
        # with `synchronous_commit = off`, which saves a `SET LOCAL` round trip on every refresh.
        self._non_durable = None if is_sqlite(url) else _non_durable_engine(url, echo=echo)
        self._statements = None if is_sqlite(url) else _statement_engine(url, echo=echo)
        # Engines connect lazily, so this costs nothing until the first `read()`.
        self._reader = _reader_engine(url, echo=echo)
        # One writer per process at a time on SQLite (see the module docstring).
        self._write_lock = threading.RLock() if is_sqlite(url) else None
        # SQLite's `try_begin` connections: the same pool, with the no-wait option set once.
        self._no_wait = self.engine.execution_options(**{NO_WAIT_OPTION: True})

    @property
    def is_sqlite(self) -> bool:
        """True when this database is SQLite."""
        return is_sqlite(self.url)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """Yield a session inside one transaction: commit on success, roll back on any exception."""
        with self._write_lock or nullcontext(), self.sessions() as session, session.begin():
            yield session

    @contextmanager
    def begin(self, *, durable: bool = True) -> Iterator[Connection]:
        """Yield a Core connection inside one transaction (the hot path: no ORM unit of work).

        `durable=False` lets PostgreSQL acknowledge the commit before its WAL reaches the disk
        (`synchronous_commit = off`, on a pool kept for such transactions). Only for writes whose loss
        in a database crash is harmless, such as a refresh's nonce and last-seen time; SQLite already
        runs that way (WAL with synchronous=NORMAL).
        """
        engine = self.engine if durable or self._non_durable is None else self._non_durable
        with self._write_lock or nullcontext(), engine.begin() as connection:
            yield connection

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A connection for reads that takes no write lock and opens no transaction.

        SQLite: a `query_only` connection in autocommit, so each SELECT sees the last commit and never
        waits for a writer (WAL). PostgreSQL: an autocommit connection, one round trip per statement.
        For the refresh hot path, which reads first and writes (nonce, last seen) afterwards.
        """
        with self._reader.connect() as connection:
            yield connection

    @contextmanager
    def try_begin(self, *, durable: bool = True) -> Iterator[Connection | None]:
        """Like `begin`, but never waits for the write lock: yields None when it is taken.

        Event-loop code uses it to write only when it would not block; PostgreSQL has no such lock,
        so there it always yields a connection.
        """
        lock = self._write_lock
        if lock is not None and not lock.acquire(blocking=False):
            yield None
            return
        try:
            engine = self.engine if durable or self._non_durable is None else self._non_durable
            if lock is not None:
                engine = self._no_wait
            with engine.connect() as connection:
                try:
                    transaction = connection.begin()
                except WriteBusy:
                    transaction = None  # no BEGIN happened; closing hands the connection back clean
                if transaction is None:
                    yield None
                    return
                with transaction:
                    yield connection
        finally:
            if lock is not None:
                lock.release()

    @contextmanager
    def statement(self) -> Iterator[Connection]:
        """PostgreSQL only: a connection whose every statement commits alone, without waiting for the WAL.

        For one statement that does a whole non-durable write (the refresh hot path's nonces and last-seen
        times, in one statement with data-modifying CTEs): one round trip instead of BEGIN, the
        statement and COMMIT. Only for writes whose loss in a database crash is harmless.
        """
        if self._statements is None:
            raise RuntimeError("Database.statement is for PostgreSQL; SQLite writes use try_begin")
        with self._statements.connect() as connection:
            yield connection

    def dispose(self) -> None:
        """Close every pooled connection (tests and shutdown)."""
        self.engine.dispose()
        self._reader.dispose()
        if self._non_durable is not None:
            self._non_durable.dispose()
        if self._statements is not None:
            self._statements.dispose()


def lock_for(session: Session, name: str) -> None:
    """Hold a lock on `name` until the session's transaction ends, so work on one key runs one at a time.

    PostgreSQL: a transaction-scoped advisory lock, which instances sharing the database all see.
    SQLite: nothing to do, every transaction already holds the write lock (BEGIN IMMEDIATE).
    """
    if session.get_bind().dialect.name == "postgresql":
        key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


def connection_of(target: Session | Connection) -> Connection:
    """The Core connection behind a session (or the connection itself)."""
    return target.connection() if isinstance(target, Session) else target


@contextmanager
def session_of(target: Session | Connection) -> Iterator[Session]:
    """A session for ORM reads: the session itself, or one joined to the connection's transaction."""
    if isinstance(target, Session):
        yield target
        return
    with Session(bind=target) as session:
        yield session


def alembic_config(url: str) -> Any:
    """Return the Alembic config for this package's migrations, pointed at `url`."""
    from importlib.resources import files

    from alembic.config import Config

    ini = files("server").joinpath("alembic.ini")
    config = Config(str(ini))
    config.set_main_option("script_location", str(files("server").joinpath("migrations")))
    # ConfigParser treats % as interpolation; URLs may contain %-escapes.
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(database: Database, revision: str = "head") -> None:
    """Run the Alembic migrations up to `revision` on this database (what `pospal-server migrate` does)."""
    from alembic import command

    config = alembic_config(database.url)
    with database.engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            # Deploys often run `migrate` once per instance, at the same moment: the second waits here
            # until the first commits, then finds the schema at head instead of creating tables twice.
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def schema_diff(database: Database) -> list[Any]:
    """Return Alembic's differences between the models and the live schema (empty when they agree)."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from server.models import Base

    with database.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, Base.metadata))


def current_revision(database: Database) -> str | None:
    """Return the schema's Alembic revision, or None for an empty database."""
    from alembic.migration import MigrationContext

    with database.engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head_revision() -> str | None:
    """Return the newest migration revision shipped with this code."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
