"""server.hotsql: a statement run on the driver reads and stores exactly what Core would, and its
errors are SQLAlchemy's (so the refresh path still answers 422 / 503 as before)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, bindparam, event, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from server import machines, nonces
from server.hotsql import HotStatement
from server.models import Machine, RequestNonce, table_of

_MACHINES = table_of(Machine)


def seed(database, clock, count: int) -> list[str]:
    ids = [f"m_hot{n}" for n in range(count)]
    with database.transaction() as session:
        for n, machine_id in enumerate(ids):
            session.add(
                Machine(
                    id=machine_id,
                    fingerprint={"machine_id": f"{n:064x}"},
                    public_key=f"k{n:042d}",
                    terminal_name=f"Till {n}",
                    activated_at=clock.now(),
                    last_seen_at=clock.now(),
                    deactivated_at=clock.now() if n == 0 else None,
                )
            )
    return ids


def test_machine_states_read_on_the_driver_equal_cores_rows(database, clock):
    ids = seed(database, clock, 3)
    with database.read() as connection:
        states = machines.load_machine_states(connection, [*ids, "m_unknown"])
        core = {row.id: row for row in connection.execute(machines._MACHINE_STATES, {"p_machines": ids})}
    assert sorted(states) == sorted(ids)
    for machine_id, state in states.items():
        row = core[machine_id]
        assert state.machine.fingerprint == row.fingerprint  # JSON decoded
        assert state.machine.deactivated_at == row.deactivated_at  # aware UTC datetimes, or None
        assert state.machine.terminal_name == row.terminal_name
    assert states[ids[0]].machine.deactivated_at.tzinfo is not None


def test_a_multi_row_insert_stores_what_core_stores_and_returns_only_new_rows(database, clock):
    # SQLite: one multi-row INSERT on the driver; PostgreSQL: Core (its refreshes write with one CTE).
    expires = clock.now() + timedelta(minutes=5)
    with database.begin() as connection:
        new = nonces.remember_many(connection, [("a" * 32, "m_1", expires), ("b" * 32, "m_1", expires)])
        again = nonces.remember_many(connection, [("b" * 32, "m_1", expires), ("c" * 32, "m_2", expires)])
    assert new == {"a" * 32, "b" * 32}
    assert again == {"c" * 32}
    with database.read() as connection:
        stored = connection.execute(select(table_of(RequestNonce))).all()
    assert {(r.nonce, r.machine_id, r.expires_at) for r in stored} == {
        ("a" * 32, "m_1", expires),
        ("b" * 32, "m_1", expires),
        ("c" * 32, "m_2", expires),
    }


def test_an_expanding_list_of_any_size_reads_the_same_rows(database, clock):
    ids = seed(database, clock, 5)
    statement = HotStatement(
        select(_MACHINES.c.id, _MACHINES.c.last_seen_at).where(
            _MACHINES.c.id.in_(bindparam("p_ids", expanding=True))
        ),
        expanding="p_ids",
    )
    with database.read() as connection:
        for size in (1, 2, 5):
            rows = statement.rows(connection, {"p_ids": ids[:size]})
            assert sorted(r[0] for r in rows) == ids[:size]
            assert all(r[1] == clock.now() for r in rows)


def test_cursor_events_still_see_the_statement(database, clock):
    ids = seed(database, clock, 2)
    seen: list[str] = []

    def on_execute(_conn, _cursor, statement, *_args) -> None:  # type: ignore[no-untyped-def]
        seen.append(statement)

    event.listen(Engine, "before_cursor_execute", on_execute)
    try:
        with database.read() as connection:
            machines.load_machine_states(connection, ids)
    finally:
        event.remove(Engine, "before_cursor_execute", on_execute)
    assert any("t_ends_at" in statement for statement in seen)


def test_driver_errors_arrive_as_sqlalchemy_errors(database, clock):
    seed(database, clock, 1)
    broken = HotStatement(text("SELECT no_such_column FROM machines"))
    duplicate = HotStatement(
        table_of(Machine)
        .insert()
        .values(
            id=bindparam("p_id"),
            public_key="k",
            fingerprint={},
            terminal_name="x",
            activated_at=datetime.now(UTC),
        )
    )
    with database.read() as connection, pytest.raises(DBAPIError):  # not the driver's own class
        broken.rows(connection, {})
    with database.begin() as connection, pytest.raises(IntegrityError):
        duplicate.rows(connection, {"p_id": "m_hot0"})
