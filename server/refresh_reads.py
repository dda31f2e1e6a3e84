"""Batched reads for the refresh hot path: the machine states of every refresh in flight, one SELECT.

The fast path runs on the event loop, so each read it makes stalls the loop for a database round trip
(PostgreSQL) and pays the statement's fixed cost. `RefreshReads` queues the machine ids of the
refreshes an event loop is serving and loads them together with `machines.load_machine_states`:

- a flush is scheduled as soon as the first id is queued, so a lone refresh waits for nothing; ids
  that arrive while the loop is busy elsewhere join the next flush;
- reads take no write lock (`Database.read`), so a flush never waits for a writer;
- while the connection is open, each refresh's token parts (kid, claims, key-set document) are
  computed by the `parts` callable, since they may need the database (a key rotation);
- any failure (the database is down) is handed to every refresh of that flush;
- PostgreSQL: the flush runs on the queue's own thread (`OffLoop`), so the loop goes on parsing,
  verifying and signing other refreshes during the round trip; one flush is in flight at a time, and
  the ids queued meanwhile make the next one. SQLite's reads are in-process and short: on the loop.

Used only from the event loop's thread, like `server.refresh_writes`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from server import machines
from server.db import Database
from server.offloop import OffLoop

# Most reads one flush takes; more wait for the next flush.
MAX_BATCH = 256

Parts = Callable[[Connection, machines.MachineState, datetime, Sequence[str]], Any]


@dataclass(frozen=True)
class MachineRead:
    """What one refresh read: its machine's state and the parts of the token that answers it."""

    state: machines.MachineState
    parts: Any


@dataclass(frozen=True)
class _Request:
    machine_id: str
    now: datetime
    known_kids: Sequence[str]
    future: asyncio.Future[MachineRead | None]


class RefreshReads:
    """The queue of one event loop's refresh reads (see the module docstring)."""

    def __init__(
        self,
        db: Database,
        parts: Parts,
        *,
        max_batch: int = MAX_BATCH,
        batch_scope: Callable[[], AbstractContextManager[Any]] = nullcontext,
    ) -> None:
        self.db = db
        self.parts = parts
        # Entered around each flush's `parts` calls (the signing keys' `one_look`).
        self.batch_scope = batch_scope
        self.max_batch = max_batch
        self._pending: list[_Request] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._scheduled = False
        self._off = None if db.is_sqlite else OffLoop("refresh-reads")
        # Figures for tests: flushes run and machine ids read in them.
        self.flushes = 0
        self.read = 0

    def submit(
        self, machine_id: str, now: datetime, known_kids: Sequence[str]
    ) -> asyncio.Future[MachineRead | None]:
        """Queue a read; the future gives the machine's state and token parts, or None if unknown."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            if self._pending:
                raise RuntimeError("RefreshReads is already serving another event loop")
            self._loop, self._scheduled = loop, False
        future: asyncio.Future[MachineRead | None] = loop.create_future()
        self._pending.append(_Request(machine_id, now, known_kids, future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return future

    def _flush(self) -> None:
        self._scheduled = False
        if self._off is not None and self._off.busy:
            return  # the flush in flight schedules the next one when it is done
        batch = self._pending[: self.max_batch]
        del self._pending[: len(batch)]
        if not batch:
            return
        if self._off is not None:
            assert self._loop is not None
            self._off.run(self._loop, lambda: self._read(batch), lambda outcome: self._settle(batch, outcome))
        else:
            self._settle(batch, _outcome(lambda: self._read(batch)))

    def _read(self, batch: list[_Request]) -> list[MachineRead | None]:
        with self.db.read() as connection, self.batch_scope():
            states = machines.load_machine_states(connection, [r.machine_id for r in batch])
            answers: list[MachineRead | None] = []
            for request in batch:
                state = states.get(request.machine_id)
                parts = (
                    None if state is None else self.parts(connection, state, request.now, request.known_kids)
                )
                answers.append(None if state is None else MachineRead(state, parts))
            return answers

    def _settle(self, batch: list[_Request], outcome: tuple[Any, BaseException | None]) -> None:
        answers, error = outcome
        if error is not None:  # the database is down: every refresh of the flush fails alike
            for request in batch:
                if not request.future.done():
                    request.future.set_exception(error)
        else:
            self.flushes += 1
            self.read += len(batch)
            for request, answer in zip(batch, answers, strict=True):
                if not request.future.done():  # the refresh was cancelled (client gone)
                    request.future.set_result(answer)
        if self._pending and not self._scheduled and self._loop is not None:
            self._scheduled = True
            self._loop.call_soon(self._flush)


def _outcome(work: Callable[[], Any]) -> tuple[Any, BaseException | None]:
    try:
        return work(), None
    except Exception as exc:
        return None, exc
