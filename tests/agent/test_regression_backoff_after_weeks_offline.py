"""Regression (found by bench/fleet.py's 30-day run): a PC left on without internet for three weeks
stopped syncing for good. Every failed try doubled a float from 30 s; after 1,025 failures in a row
(about 21 days at the 30-minute cap) `2 ** failures` no longer fitted a float, the sync raised
OverflowError, and the engine stayed "running" forever: no sync when the cable came back, and "Sync now"
waited without end. PRODUCT.md: "retry with exponential backoff from 30 s to a 30 min cap"."""

from __future__ import annotations

from agent.cloud.sync import BACKOFF_CAP_S
from agent.errors import Offline
from tests.agent.test_sync import DAY, Server, engine_for


def test_four_weeks_offline_then_the_cable_comes_back_and_the_next_try_syncs() -> None:
    server = Server([Offline("no internet")] * 1400)
    engine, clock = engine_for(server)
    for _ in range(1400):  # four weeks of tries at the 30-minute cap
        result = engine.run_due()
        assert result is not None and not result.ok
        assert 0 < engine.seconds_until_due() <= BACKOFF_CAP_S + 1
        clock.advance(engine.seconds_until_due())
    assert engine.failures == 1400 and clock.monotonic() > 27 * DAY
    back = engine.run_due()
    assert back is not None and back.ok and engine.failures == 0


def test_a_failure_in_the_bookkeeping_itself_never_leaves_the_engine_running(monkeypatch) -> None:
    """Whatever else raises around the sync (here the backoff itself), the engine is free again: the
    failure is its result, the next try is at the cap, and the one after that runs and syncs."""
    import threading

    server = Server([Offline("no internet")])
    engine, clock = engine_for(server)

    def broken(failures: int) -> float:
        raise ValueError("bookkeeping bug")

    monkeypatch.setattr(engine, "backoff_s", broken)
    first = engine.sync_now()
    assert not first.ok and isinstance(first.error, ValueError)
    assert abs(engine.seconds_until_due() - BACKOFF_CAP_S) <= 1
    monkeypatch.undo()
    answered: list = []
    thread = threading.Thread(target=lambda: answered.append(engine.sync_now()), daemon=True)
    thread.start()
    thread.join(10)
    assert answered and answered[0].ok  # "Sync now" answers; before, it waited forever
