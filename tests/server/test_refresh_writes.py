"""The refresh fast path's batched writes (`server.refresh_writes`): shared commits, replays inside a
flush, a held write lock that must not stall the event loop, the busy timeout, faults in one write or
in the database, nonce purging and last-seen times."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, event, select, text
from sqlalchemy.exc import IntegrityError, OperationalError

from pospal_protocol.tokens import verify_token
from pospal_protocol.trust import TrustedKeys, decode_public_key
from server import nonces, refresh_writes
from server.machines import touch_machines
from server.models import Machine, RequestNonce
from server.refresh_writes import RefreshWrites, SeenWrite


def trusted(client: Any) -> TrustedKeys:
    return TrustedKeys([decode_public_key(k["x"]) for k in client.get("/v1/keys").json()["keys"]])


def trial_machines(client: Any, make_machine: Any, count: int) -> list[Any]:
    machines = [make_machine() for _ in range(count)]
    for machine in machines:
        assert machine.start_trial(client).status_code == 200
    return machines


async def post_all(app: Any, requests: list[tuple[bytes, dict[str, str]]]) -> list[httpx.Response]:
    """POST every signed refresh at once, on one event loop, straight into the ASGI app."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        return await asyncio.gather(
            *(http.post("/v1/refresh", content=raw, headers=headers) for raw, headers in requests)
        )


async def refreshes_while_held(
    app: Any, requests: list[tuple[bytes, dict[str, str]]], release: Any, ticks: int = 20
) -> tuple[list[httpx.Response], bool]:
    """Send `requests` while a write lock is held, let the event loop run `ticks` other steps, then
    `release()` the lock. Returns the answers and whether the refreshes had finished before the release.

    No clock is read: if a refresh blocked the event loop while waiting, the other steps could not run
    until its wait ended (busy timeout, or the holder giving up), and it would be done before the release.
    """
    task = asyncio.ensure_future(post_all(app, requests))
    for _ in range(ticks):
        await asyncio.sleep(0.01)
    done_while_held = task.done()
    release()
    return await task, done_while_held


def refresh_request(machine: Any) -> tuple[bytes, dict[str, str]]:
    return machine.signed("/v1/refresh", {"fingerprint": machine.fp, "known_kids": []})


class CommitCounter:
    """Counts the statements that store nonces, on any engine, while it is installed.

    Each is one write of a flush: its own transaction on SQLite, a single autocommit statement holding
    the nonces and the last-seen times on PostgreSQL.
    """

    def __init__(self) -> None:
        self.commits = 0

    def __enter__(self) -> CommitCounter:
        event.listen(Engine, "before_cursor_execute", self._on_execute)
        return self

    def __exit__(self, *_exc: object) -> None:
        event.remove(Engine, "before_cursor_execute", self._on_execute)

    def _on_execute(self, _connection: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if "INSERT INTO request_nonces" in statement:
            self.commits += 1


def sqlite_path(database: Any) -> Path:
    return Path(database.engine.url.database)


# ------------------------------------------------------------------------------------ through the API


def test_concurrent_refreshes_share_commits_and_all_get_valid_tokens(
    app, client, make_machine, database, clock
):
    machines = trial_machines(client, make_machine, 4)
    clock.advance(hours=6)
    requests = [refresh_request(m) for m in machines for _ in range(6)]
    with CommitCounter() as counter:
        responses = asyncio.run(post_all(app, requests))
    assert [r.status_code for r in responses] == [200] * 24, [
        r.text for r in responses if r.status_code != 200
    ]
    keys = trusted(client)
    for response, machine in zip(responses, [m for m in machines for _ in range(6)], strict=True):
        claims = verify_token(response.json()["token"], keys, clock.now())
        assert claims.mid == machine.machine_id
        assert claims.iat == int(clock.now().timestamp())
    # 24 refreshes, far fewer commits: the writes of the refreshes in flight were committed together.
    assert 1 <= counter.commits < 12
    with database.transaction() as session:
        stored = set(session.scalars(select(RequestNonce.nonce)))
        seen = dict(session.execute(select(Machine.id, Machine.last_seen_at)).all())
    assert {headers["X-POSPal-Nonce"] for _raw, headers in requests} <= stored
    assert all(seen[m.machine_id] == clock.now() for m in machines)


def test_the_same_request_sent_five_times_at_once_is_accepted_once(app, client, make_machine):
    (machine,) = trial_machines(client, make_machine, 1)
    request = refresh_request(machine)
    responses = asyncio.run(post_all(app, [request] * 5))
    assert sorted(r.status_code for r in responses) == [200, 409, 409, 409, 409]
    assert all(r.json()["error"] == "replay" for r in responses if r.status_code == 409)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("db_backend", ["sqlite"], indirect=True)  # the database-wide write lock is SQLite's
def test_a_held_write_lock_does_not_stall_the_event_loop(app, client, make_machine, db_backend, database):
    machines = trial_machines(client, make_machine, 2)
    holder = sqlite3.connect(sqlite_path(database), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process's writer, as far as the server can tell

    try:
        requests = [refresh_request(m) for m in machines]
        responses, done_while_held = asyncio.run(
            refreshes_while_held(app, requests, lambda: holder.execute("COMMIT"))
        )
    finally:
        holder.close()
    assert not done_while_held  # they waited for the lock, while the loop went on running other work
    assert [r.status_code for r in responses] == [200, 200]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("db_backend", ["sqlite"], indirect=True)
def test_a_lock_held_past_the_busy_timeout_answers_503_then_recovers(
    app, client, make_machine, db_backend, database, monkeypatch
):
    monkeypatch.setattr("server.refresh_writes.SQLITE_BUSY_TIMEOUT_MS", 200)
    (machine,) = trial_machines(client, make_machine, 1)
    holder = sqlite3.connect(sqlite_path(database), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        busy = client.post("/v1/refresh", content=(req := refresh_request(machine))[0], headers=req[1])
    finally:
        holder.execute("COMMIT")
        holder.close()
    assert busy.status_code == 503
    assert busy.json()["error"] == "busy"
    assert busy.headers["Retry-After"] == "1"
    assert machine.refresh(client).status_code == 200


@pytest.mark.parametrize("db_backend", ["sqlite"], indirect=True)  # the in-process write turn is SQLite's
def test_a_write_lock_taken_by_another_thread_is_waited_for_without_blocking(
    app, client, make_machine, db_backend, database
):
    """A webhook or admin transaction in a worker thread holds this process's write turn."""
    (machine,) = trial_machines(client, make_machine, 1)
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with database.transaction():
            holding.set()
            release.wait(10)  # a blocking wait on the loop would stall it until this gives up

    thread = threading.Thread(target=hold)
    thread.start()
    assert holding.wait(10)
    try:
        responses, done_while_held = asyncio.run(
            refreshes_while_held(app, [refresh_request(machine)], release.set)
        )
    finally:
        release.set()
        thread.join(10)
    assert not done_while_held
    assert [r.status_code for r in responses] == [200]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("db_backend", ["postgres"], indirect=True)  # row locks are PostgreSQL's
def test_a_locked_machine_row_is_skipped_not_waited_for(
    app, client, make_machine, db_backend, database, clock
):
    locked, free = trial_machines(client, make_machine, 2)
    before = clock.now()
    clock.advance(minutes=5)
    with database.engine.connect() as other:
        other.execute(text("SELECT id FROM machines WHERE id = :id FOR UPDATE"), {"id": locked.machine_id})
        # Another transaction holds the row: the refresh still answers, without moving last_seen_at.
        answered: dict[str, list[httpx.Response]] = {}
        requests = [refresh_request(locked), refresh_request(free)]
        sender = threading.Thread(target=lambda: answered.update(r=asyncio.run(post_all(app, requests))))
        sender.start()
        sender.join(10)
        finished_while_locked = not sender.is_alive()
        other.rollback()
    sender.join(10)
    assert finished_while_locked
    assert [r.status_code for r in answered["r"]] == [200, 200]
    with database.transaction() as session:
        seen = dict(session.execute(select(Machine.id, Machine.last_seen_at)).all())
    assert seen[locked.machine_id] == before
    assert seen[free.machine_id] == clock.now()


# ------------------------------------------------------------------------------------ the queue itself


def write(clock: Any, n: int, **changes: Any) -> SeenWrite:
    fields = {
        "nonce": f"{n:032x}",
        "machine_id": f"m_{n}",
        "expires": clock.now() + timedelta(minutes=5),
        "seen": clock.now(),
    }
    fields.update(changes)
    return SeenWrite(**fields)


async def submit_all(queue: RefreshWrites, writes: list[SeenWrite]) -> list[Any]:
    return await asyncio.gather(*(queue.submit(w) for w in writes), return_exceptions=True)


def test_one_bad_write_fails_alone(database, clock):
    queue = RefreshWrites(database)
    writes = [write(clock, n) for n in range(5)]
    writes.insert(2, write(clock, 99, expires=None))  # NOT NULL: the database refuses this one
    results = asyncio.run(submit_all(queue, writes))
    assert isinstance(results[2], IntegrityError)
    assert results[:2] + results[3:] == [True] * 5
    with database.transaction() as session:
        stored = set(session.scalars(select(RequestNonce.nonce)))
    assert stored == {w.nonce for n, w in enumerate(writes) if n != 2}


def test_a_database_failure_reaches_every_write_of_the_flush_and_the_next_flush_works(
    database, clock, monkeypatch
):
    queue = RefreshWrites(database)
    real = nonces.remember_many

    def down(*_args: Any, **_kwargs: Any) -> set[str]:
        raise OperationalError("INSERT", {}, Exception("server closed the connection"))

    # SQLite stores nonces with nonces.remember_many; PostgreSQL writes the whole flush in one statement.
    real_pg = refresh_writes._write_pg
    monkeypatch.setattr(nonces, "remember_many", down)
    monkeypatch.setattr(refresh_writes, "_write_pg", down)
    failed = asyncio.run(submit_all(queue, [write(clock, n) for n in range(3)]))
    assert all(isinstance(r, OperationalError) for r in failed)
    monkeypatch.setattr(nonces, "remember_many", real)
    monkeypatch.setattr(refresh_writes, "_write_pg", real_pg)
    # Nothing was stored, so the same nonces are new when retried.
    assert asyncio.run(submit_all(queue, [write(clock, n) for n in range(3)])) == [True] * 3


def test_a_nonce_stored_earlier_is_a_replay(database, clock):
    queue = RefreshWrites(database)
    assert asyncio.run(submit_all(queue, [write(clock, 1)])) == [True]
    assert asyncio.run(submit_all(queue, [write(clock, 1), write(clock, 2)])) == [False, True]


def test_expired_nonces_are_purged_by_a_flush(database, clock):
    queue = RefreshWrites(database, purge_every=3)
    stale = write(clock, 7, expires=clock.now() - timedelta(seconds=1))
    assert asyncio.run(submit_all(queue, [stale])) == [True]
    assert asyncio.run(submit_all(queue, [write(clock, 1), write(clock, 2)])) == [True, True]
    with database.transaction() as session:
        stored = set(session.scalars(select(RequestNonce.nonce)))
    assert stored == {write(clock, 1).nonce, write(clock, 2).nonce}


def test_last_seen_never_moves_backwards(client, make_machine, database, clock):
    (machine,) = trial_machines(client, make_machine, 1)
    later = clock.now() + timedelta(hours=1)
    with database.begin() as connection:
        touch_machines(connection, [machine.machine_id], later)
    with database.begin() as connection:
        touch_machines(connection, [machine.machine_id], clock.now())  # an older batch, late
    with database.transaction() as session:
        assert session.get(Machine, machine.machine_id).last_seen_at == later


def test_a_flush_never_moves_last_seen_backwards(client, make_machine, database, clock):
    (machine,) = trial_machines(client, make_machine, 1)
    later = clock.now() + timedelta(hours=1)
    queue = RefreshWrites(database)

    def seen_at(n: int, when: Any) -> SeenWrite:
        return SeenWrite(f"n-seen-{n}", machine.machine_id, when + timedelta(minutes=5), when)

    assert asyncio.run(submit_all(queue, [seen_at(1, later)])) == [True]
    assert asyncio.run(submit_all(queue, [seen_at(2, clock.now())])) == [True]  # an older batch, late
    with database.transaction() as session:
        assert session.get(Machine, machine.machine_id).last_seen_at == later


def test_last_seen_is_written_once_a_minute_while_every_nonce_is_stored(
    client, make_machine, database, clock
):
    (machine,) = trial_machines(client, make_machine, 1)
    queue = RefreshWrites(database)

    def at(n: int) -> SeenWrite:
        return SeenWrite(f"n-minute-{n}", machine.machine_id, clock.now() + timedelta(minutes=5), clock.now())

    def last_seen() -> Any:
        with database.transaction() as session:
            return session.get(Machine, machine.machine_id).last_seen_at

    first = clock.now()
    with CommitCounter() as counter:
        assert asyncio.run(submit_all(queue, [at(1)])) == [True]
        clock.advance(seconds=30)
        assert asyncio.run(submit_all(queue, [at(2)])) == [True]  # the nonce is kept, last-seen is not moved
        assert last_seen() == first
        clock.advance(seconds=30)
        assert asyncio.run(submit_all(queue, [at(3)])) == [True]
    assert last_seen() == clock.now()
    assert counter.commits == 3
    with database.transaction() as session:
        stored = set(session.scalars(select(RequestNonce.nonce)))
    assert {"n-minute-1", "n-minute-2", "n-minute-3"} <= stored
