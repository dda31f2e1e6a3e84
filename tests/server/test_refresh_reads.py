"""The refresh fast path's batched reads (`server.refresh_reads`): one SELECT for the refreshes in
flight, unknown machines answered alone, and a database failure reaching the whole batch."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.exc import OperationalError

from server import machines
from server.refresh_reads import RefreshReads
from tests.server.test_refresh_writes import post_all, refresh_request, trial_machines


class StateReads:
    """Counts the machine-state SELECTs run on any engine while installed."""

    def __init__(self) -> None:
        self.count = 0

    def __enter__(self) -> StateReads:
        event.listen(Engine, "before_cursor_execute", self._on_execute)
        return self

    def __exit__(self, *_exc: object) -> None:
        event.remove(Engine, "before_cursor_execute", self._on_execute)

    def _on_execute(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "t_ends_at" in statement:
            self.count += 1


def test_concurrent_refreshes_share_their_reads(app, client, make_machine):
    machines_ = trial_machines(client, make_machine, 4)
    requests = [refresh_request(m) for m in machines_ for _ in range(6)]
    with StateReads() as reads:
        responses = asyncio.run(post_all(app, requests))
    assert [r.status_code for r in responses] == [200] * 24
    assert 1 <= reads.count < 12  # 24 refreshes, far fewer SELECTs


def test_an_unknown_machine_in_a_batch_is_refused_alone(app, client, make_machine):
    known = trial_machines(client, make_machine, 2)
    stranger = make_machine(machine_id="m_doesnotexist")
    requests = [refresh_request(known[0]), refresh_request(stranger), refresh_request(known[1])]
    responses = asyncio.run(post_all(app, requests))
    assert [r.status_code for r in responses] == [200, 401, 200]
    assert responses[1].json()["error"] == "unknown_machine"


def test_a_read_failure_fails_the_batch_as_503_then_reads_work_again(app, client, make_machine, monkeypatch):
    machines_ = trial_machines(client, make_machine, 3)
    real = machines.load_machine_states

    def down(*_args: Any, **_kwargs: Any) -> dict:
        raise OperationalError("SELECT", {}, Exception("the database closed the connection"))

    monkeypatch.setattr(machines, "load_machine_states", down)
    failed = asyncio.run(post_all(app, [refresh_request(m) for m in machines_]))
    assert [(r.status_code, r.json()["error"]) for r in failed] == [(503, "unavailable")] * 3
    monkeypatch.setattr(machines, "load_machine_states", real)
    again = asyncio.run(post_all(app, [refresh_request(m) for m in machines_]))
    assert [r.status_code for r in again] == [200] * 3


def test_one_machine_asked_twice_in_a_flush_gets_its_state_both_times(client, make_machine, database, clock):
    (machine,) = trial_machines(client, make_machine, 1)
    seen: list[str] = []

    def parts(_connection: Any, state: Any, now: Any, kids: Any) -> tuple:
        seen.append(state.machine.id)
        return ("kid", state.claims(now), None)

    reads = RefreshReads(database, parts)

    async def both() -> list[Any]:
        return await asyncio.gather(
            reads.submit(machine.machine_id, clock.now(), []),
            reads.submit(machine.machine_id, clock.now(), []),
            reads.submit("m_nobody", clock.now(), []),
        )

    first, second, nobody = asyncio.run(both())
    assert first.state.machine.id == second.state.machine.id == machine.machine_id
    assert first.parts[1]["mid"] == machine.machine_id
    assert nobody is None
    assert (reads.flushes, reads.read, seen) == (1, 3, [machine.machine_id] * 2)
