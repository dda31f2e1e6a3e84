"""Group commit for the refresh hot path: many refreshes' nonces and last-seen times, one transaction.

Every refresh writes two small things: its nonce (replay protection) and the machine's last-seen time.
One transaction per refresh means one write-lock turn per refresh; on SQLite two worker processes
then spend much of their time handing that lock back and forth. `RefreshWrites` queues the writes of
the refreshes an event loop is serving and commits them together:

- a flush is scheduled as soon as the first write is queued, so a lone refresh waits for nothing;
  writes that arrive while the loop is busy elsewhere join the next flush;
- a flush never blocks the event loop on a lock: when the write lock is taken (another process on
  SQLite, or another thread of this one) it tries again a moment later while the loop goes on serving
  other requests, whose writes join the same flush;
- each flush is one `INSERT ... ON CONFLICT DO NOTHING RETURNING` for the nonces and one `UPDATE` for
  the last-seen times, so each refresh learns whether its nonce was new (a replay was not);
- if a flush fails because of one write's values, its writes are retried one per transaction, so the
  other refreshes still succeed; any other failure is handed to every refresh of that flush.

The writes are not durable (`Database.try_begin(durable=False)`): losing the last moments of nonces and
last-seen times in a database crash is harmless. Used only from the event loop's thread.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.exc import DataError, IntegrityError

from server import machines, nonces
from server.db import SQLITE_BUSY_TIMEOUT_MS, Database
from server.errors import ServerBusy

# Most writes one flush takes; more wait for the next flush.
MAX_BATCH = 256
# Expired nonces are deleted in the flush after every this many writes.
PURGE_EVERY = 1000
# Pauses between tries while the write lock is taken: from FIRST_PAUSE_S growing to MAX_PAUSE_S.
FIRST_PAUSE_S = 0.0002
MAX_PAUSE_S = 0.002


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
        if not self._pending:
            return
        single = self._isolate > 0
        batch = self._pending[: 1 if single else self.max_batch]
        # Two refreshes with one nonce in one flush: the first decides, the others are replays.
        unique: dict[str, SeenWrite] = {}
        for write, _future in batch:
            unique.setdefault(write.nonce, write)
        purge = self._since_purge + len(batch) >= self.purge_every
        try:
            with self.db.try_begin(durable=False) as connection:
                if connection is None:
                    self._retry_later()
                    return
                new = nonces.remember_many(
                    connection, [(w.nonce, w.machine_id, w.expires) for w in unique.values()]
                )
                machines.touch_machines(
                    connection, [w.machine_id for w in unique.values()], max(w.seen for w in unique.values())
                )
                if purge:
                    nonces.purge_expired(connection, min(w.seen for w in unique.values()))
        except (DataError, IntegrityError) as exc:
            if len(batch) > 1:
                self._isolate = len(batch)  # find the write at fault: one per transaction
                self._schedule()
                return
            self._settle(batch, error=exc)
        except Exception as exc:  # the database is down or refused: every refresh of the flush fails
            self._settle(batch, error=exc)
        else:
            self._since_purge = 0 if purge else self._since_purge + len(batch)
            self._settle(batch, accepted={w.nonce for w in unique.values()} & new, firsts=unique)
        if single:
            self._isolate -= 1
        if self._pending:
            self._schedule()

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
