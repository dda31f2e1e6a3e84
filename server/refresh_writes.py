"""Group commit for the refresh hot path: many refreshes' nonces and last-seen times, one transaction.

Every refresh writes two small things: its nonce (replay protection) and the machine's last-seen time
(at most once per `TOUCH_EVERY` per machine and queue: a write that changes nearly nothing is skipped).
One transaction per refresh means one write-lock turn per refresh; on SQLite two worker processes
then spend much of their time handing that lock back and forth. `RefreshWrites` queues the writes of
the refreshes an event loop is serving and commits them together:

- a flush is scheduled as soon as the first write is queued, so a lone refresh waits for nothing;
  writes that arrive while the loop is busy elsewhere join the next flush;
- a flush never blocks the event loop on a lock: when the write lock is taken (another process on
  SQLite, or another thread of this one) it tries again a moment later while the loop goes on serving
  other requests, whose writes join the same flush;
- each flush is one `INSERT ... ON CONFLICT DO NOTHING RETURNING` for the nonces and one `UPDATE` for
  the last-seen times, so each refresh learns whether its nonce was new (a replay was not). On
  PostgreSQL both are one statement (`_PG_WRITE`: the INSERT and the UPDATE as data-modifying CTEs, the
  rows as arrays) on an autocommit connection, so a flush is one round trip, not four (BEGIN, INSERT,
  UPDATE, COMMIT), and one statement text whatever the batch size (prepared once by psycopg);
- if a flush fails because of one write's values, its writes are retried one per transaction, so the
  other refreshes still succeed; any other failure is handed to every refresh of that flush.

PostgreSQL: the flush's statement runs on the queue's own thread (`server.offloop.OffLoop`), so the
loop goes on serving other refreshes during the round trip; one flush is in flight at a time, and the
writes queued meanwhile make the next one.

The writes are not durable (`Database.try_begin(durable=False)`): losing the last moments of nonces and
last-seen times in a database crash is harmless. Used only from the event loop's thread.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, text
from sqlalchemy.exc import DataError, IntegrityError

from server import machines, nonces
from server.db import SQLITE_BUSY_TIMEOUT_MS, Database
from server.errors import ServerBusy
from server.hotsql import HotStatement
from server.offloop import OffLoop, Outcome

# Most writes one flush takes; more wait for the next flush.
MAX_BATCH = 256
# Expired nonces are deleted in the flush after every this many writes.
PURGE_EVERY = 1000
# A machine's last-seen time is written at most once per this interval by one queue (it refreshes far
# less often in real use; idle seats are counted in days). Refreshes in between store only their nonce.
TOUCH_EVERY = timedelta(seconds=60)
MAX_TOUCHED = 100_000
# Pauses between tries while the write lock is taken: from FIRST_PAUSE_S growing to MAX_PAUSE_S.
FIRST_PAUSE_S = 0.0002
MAX_PAUSE_S = 0.002


# The PostgreSQL flush in one statement. Nonces go in sorted (two flushes inserting overlapping nonces
# take their locks in the same order); machine rows locked by another transaction are skipped, and a
# last-seen time never moves backwards (as machines.touch_machines). Times are naive UTC, as stored.
_PG_WRITE = text(
    """
    WITH new AS (
        INSERT INTO request_nonces (nonce, machine_id, expires_at)
        SELECT n, m, e
        FROM unnest(CAST(:nonces AS varchar[]), CAST(:owners AS varchar[]), CAST(:expires AS timestamp[]))
            AS rows (n, m, e)
        ORDER BY n
        ON CONFLICT (nonce) DO NOTHING
        RETURNING nonce
    ), seen AS (
        UPDATE machines SET last_seen_at = :seen
        WHERE id IN (
            SELECT id FROM machines WHERE id = ANY(CAST(:machines AS varchar[])) FOR UPDATE SKIP LOCKED
        )
        AND (last_seen_at IS NULL OR last_seen_at < :seen)
    )
    SELECT nonce FROM new
    """
)
# Run on the driver (server.hotsql): Core's own per-call work was a good part of the flush.
_HOT_PG_WRITE = HotStatement(_PG_WRITE)


def _naive_utc(value: datetime | None) -> datetime | None:
    # None stays None: the database refuses it (NOT NULL), and only that write fails (see _flush).
    return None if value is None else value.astimezone(UTC).replace(tzinfo=None)


def _write_pg(connection: Connection, writes: list[SeenWrite], touch: list[str]) -> set[str]:
    """The nonces of `writes` (distinct) and the last-seen times of machines `touch`, in one statement.

    Returns the nonces that were new.
    """
    params = {
        "nonces": [w.nonce for w in writes],
        "owners": [w.machine_id[:40] for w in writes],
        "expires": [_naive_utc(w.expires) for w in writes],
        "machines": sorted(touch),
        "seen": _naive_utc(max(w.seen for w in writes)),
    }
    return {nonce for (nonce,) in _HOT_PG_WRITE.rows(connection, params)}


@dataclass(frozen=True)
class SeenWrite:
    """One refresh's writes: its nonce (kept until `expires`) and its machine's last-seen time."""

    nonce: str
    machine_id: str
    expires: datetime
    seen: datetime


class RefreshWrites:
    """The queue of one event loop's refresh writes (see the module docstring)."""

    def __init__(self, db: Database, *, max_batch: int = MAX_BATCH, purge_every: int = PURGE_EVERY) -> None:
        self.db = db
        self.max_batch = max_batch
        self.purge_every = purge_every
        self._pending: list[tuple[SeenWrite, asyncio.Future[bool]]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._scheduled = False
        self._pause = FIRST_PAUSE_S
        self._busy_since: float | None = None
        self._isolate = 0  # how many of the next writes to commit one per transaction
        self._since_purge = 0
        self._off = None if db.is_sqlite else OffLoop("refresh-writes")
        self._touched: dict[str, datetime] = {}  # machine id -> the last-seen time this queue last wrote

    def submit(self, write: SeenWrite) -> asyncio.Future[bool]:
        """Queue `write`; the future says whether its nonce was new (False: a replay)."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            if self._pending:
                raise RuntimeError("RefreshWrites is already serving another event loop")
            self._loop, self._scheduled = loop, False
        future: asyncio.Future[bool] = loop.create_future()
        self._pending.append((write, future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return future

    # ------------------------------------------------------------------------------------ flushing

    def _flush(self) -> None:
        self._scheduled = False
        if not self._pending or (self._off is not None and self._off.busy):
            return  # a flush in flight schedules the next one when it is done
        single = self._isolate > 0
        batch = self._pending[: 1 if single else self.max_batch]
        # Two refreshes with one nonce in one flush: the first decides, the others are replays.
        unique: dict[str, SeenWrite] = {}
        for write, _future in batch:
            unique.setdefault(write.nonce, write)
        purge = self._since_purge + len(batch) >= self.purge_every
        touch = self._due_for_touch(unique.values())
        if self._off is not None:
            assert self._loop is not None
            self._off.run(
                self._loop,
                lambda: self._write_pg(unique, touch, purge),
                lambda outcome: self._done(batch, unique, touch, purge, single, outcome),
            )
            return
        try:
            new = self._write_sqlite(unique, touch, purge)
        except Exception as exc:
            self._done(batch, unique, touch, purge, single, (None, exc))
            return
        if new is None:
            self._retry_later()
            return
        self._done(batch, unique, touch, purge, single, (new, None))

    def _write_pg(self, unique: dict[str, SeenWrite], touch: list[str], purge: bool) -> set[str]:
        """The flush in one autocommit statement (plus the purge when due)."""
        with self.db.statement() as connection:
            new = _write_pg(connection, list(unique.values()), touch)
            if purge:
                nonces.purge_expired(connection, min(w.seen for w in unique.values()))
            return new

    def _done(
        self,
        batch: list[tuple[SeenWrite, asyncio.Future[bool]]],
        unique: dict[str, SeenWrite],
        touch: list[str],
        purge: bool,
        single: bool,
        outcome: Outcome,
    ) -> None:
        new, error = outcome
        if isinstance(error, DataError | IntegrityError) and len(batch) > 1:
            self._isolate = len(batch)  # find the write at fault: one per transaction
            self._schedule()
            return
        if error is not None:  # the database is down or refused: every refresh of the flush fails
            self._settle(batch, error=error)
        else:
            self._since_purge = 0 if purge else self._since_purge + len(batch)
            self._remember_touched(touch, max(w.seen for w in unique.values()))
            self._settle(batch, accepted={w.nonce for w in unique.values()} & new, firsts=unique)
        if single:
            self._isolate -= 1
        if self._pending:
            self._schedule()

    def _due_for_touch(self, writes: Iterable[SeenWrite]) -> list[str]:
        """The machines of `writes` whose last-seen time this queue did not write in the last TOUCH_EVERY."""
        due = []
        for machine_id, seen in {w.machine_id: w.seen for w in writes}.items():
            written = self._touched.get(machine_id)
            if written is None or seen - written >= TOUCH_EVERY or seen < written:
                due.append(machine_id)
        return due

    def _remember_touched(self, touched: list[str], seen: datetime) -> None:
        if len(self._touched) > MAX_TOUCHED:
            self._touched.clear()  # a bound on memory: the next flushes write those machines again
        for machine_id in touched:
            self._touched[machine_id] = seen

    def _write_sqlite(self, unique: dict[str, SeenWrite], touch: list[str], purge: bool) -> set[str] | None:
        """The flush in one SQLite transaction; None when the write lock is taken (nothing written)."""
        with self.db.try_begin(durable=False) as connection:
            if connection is None:
                return None
            entries = [(w.nonce, w.machine_id, w.expires) for w in unique.values()]
            new = nonces.remember_many(connection, entries)
            machines.touch_machines(connection, touch, max(w.seen for w in unique.values()))
            if purge:
                nonces.purge_expired(connection, min(w.seen for w in unique.values()))
            return new

    def _settle(
        self,
        batch: list[tuple[SeenWrite, asyncio.Future[bool]]],
        *,
        accepted: set[str] | None = None,
        firsts: dict[str, SeenWrite] | None = None,
        error: BaseException | None = None,
    ) -> None:
        del self._pending[: len(batch)]
        self._pause, self._busy_since = FIRST_PAUSE_S, None
        for write, future in batch:
            if future.done():  # the refresh was cancelled (client gone)
                continue
            if error is not None:
                future.set_exception(error)
            else:
                assert accepted is not None and firsts is not None
                future.set_result(write.nonce in accepted and firsts[write.nonce] is write)

    def _schedule(self) -> None:
        if not self._scheduled and self._loop is not None:
            self._scheduled = True
            self._loop.call_soon(self._flush)

    def _retry_later(self) -> None:
        """The write lock is taken: try again shortly, or give up after the busy timeout."""
        now = time.monotonic()
        if self._busy_since is None:
            self._busy_since = now
        elif now - self._busy_since > SQLITE_BUSY_TIMEOUT_MS / 1000:
            self._settle(self._pending[:], error=ServerBusy())
            return
        assert self._loop is not None
        # Jitter keeps two processes from retrying in lockstep.
        delay = self._pause * (0.5 + random.random())  # noqa: S311 - not security relevant
        self._pause = min(self._pause * 1.5, MAX_PAUSE_S)
        self._scheduled = True
        self._loop.call_later(delay, self._flush)
