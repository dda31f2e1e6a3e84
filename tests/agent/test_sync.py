"""The sync engine on a FakeClock: interval with jitter, backoff, coalescing, a month of steady state."""

from __future__ import annotations

import random
import threading
from datetime import timedelta

import pytest

from agent.cloud.sync import BACKOFF_CAP_S, SyncEngine
from agent.core.clock import FakeClock
from agent.errors import Offline, ServerRefused
from pospal_protocol.tokens import Policy

DAY = 86400


class Server:
    """A scripted sync function: pops outcomes (None = success) and counts calls."""

    def __init__(self, outcomes=()):
        self.outcomes = list(outcomes)
        self.calls = 0

    def __call__(self) -> bool:
        self.calls += 1
        if self.outcomes:
            outcome = self.outcomes.pop(0)
            if outcome is not None:
                raise outcome
        return True


def engine_for(server, clock=None, seed=1):
    clock = clock or FakeClock()
    return SyncEngine(clock, server, rng=random.Random(seed)), clock


def test_first_sync_is_due_at_start_then_every_six_hours_with_jitter():
    server = Server()
    engine, clock = engine_for(server)
    assert engine.run_due().ok and server.calls == 1
    assert engine.run_due() is None  # not due again yet
    waits = []
    for _ in range(200):
        waits.append(engine.seconds_until_due())
        clock.advance(engine.seconds_until_due())
        assert engine.run_due().ok
    assert min(waits) >= 6 * 3600 * 0.9 and max(waits) <= 6 * 3600 * 1.1
    assert max(waits) - min(waits) > 3600  # jitter really spreads terminals out


def test_backoff_doubles_from_30_seconds_to_a_30_minute_cap_then_resets():
    server = Server([Offline("down")] * 9)
    engine, clock = engine_for(server)
    waits = []
    for _ in range(9):
        result = engine.run_due()
        assert result is not None and not result.ok and isinstance(result.error, Offline)
        waits.append(engine.seconds_until_due())
        clock.advance(engine.seconds_until_due())
    nominal = [30, 60, 120, 240, 480, 960, 1800, 1800, 1800]
    for wait, base in zip(waits, nominal, strict=True):
        assert base * 0.9 <= wait <= min(base * 1.1, BACKOFF_CAP_S)
    assert engine.run_due().ok and engine.failures == 0
    assert engine.seconds_until_due() >= 6 * 3600 * 0.9


def test_rate_limit_waits_at_least_retry_after():
    server = Server([ServerRefused("rate_limited", "slow down", {"retry_after": 900})])
    engine, _ = engine_for(server)
    engine.run_due()
    assert engine.seconds_until_due() >= 900


def test_a_refusal_retrying_cannot_fix_waits_a_normal_interval():
    server = Server([ServerRefused("unknown_machine", "who are you")])
    engine, _ = engine_for(server)
    result = engine.run_due()
    assert not result.ok and engine.seconds_until_due() >= 6 * 3600 * 0.9


def test_a_crash_in_the_sync_function_is_a_transient_failure():
    server = Server([RuntimeError("bug")])
    engine, _ = engine_for(server)
    result = engine.run_due()
    assert not result.ok and engine.seconds_until_due() <= 33


def test_sync_now_requests_are_coalesced_while_one_is_running():
    release = threading.Event()
    entered = threading.Event()
    calls = []

    def slow_sync():
        calls.append(1)
        entered.set()
        assert release.wait(5)
        return True

    engine = SyncEngine(FakeClock(), slow_sync, rng=random.Random(1))
    results = []
    first = threading.Thread(target=lambda: results.append(engine.sync_now()))
    first.start()
    assert entered.wait(5)
    others = [threading.Thread(target=lambda: results.append(engine.sync_now())) for _ in range(5)]
    for t in others:
        t.start()
    assert engine.run_due() is None  # the scheduler does not start a second one either
    release.set()
    for t in [first, *others]:
        t.join(5)
    assert len(calls) == 1 and len(results) == 6 and all(r.ok for r in results)
    assert len({id(r) for r in results}) == 1  # everyone got the one sync's result


def test_nothing_to_sync_is_a_skip_not_a_failure():
    engine, _ = engine_for(lambda: False)
    result = engine.run_due()
    assert result.ok and result.skipped and engine.failures == 0


def test_policy_from_the_token_sets_the_interval():
    engine = SyncEngine(FakeClock(), lambda: True, policy=lambda: Policy(sync_s=3600, jitter=0.0))
    engine.run_due()
    assert engine.seconds_until_due() == pytest.approx(3600)


def test_next_sync_is_wall_time_and_ignores_wall_clock_changes():
    server = Server()
    engine, clock = engine_for(server)
    engine.run_due()
    before = engine.seconds_until_due()
    assert 0.9 * 6 * 3600 <= before <= 1.1 * 6 * 3600  # 6 h with ±10 % jitter
    assert engine.next_sync == clock.now() + timedelta(seconds=before)
    clock.shift_wall(-2 * DAY)  # someone sets the clock back: the schedule does not move
    assert engine.seconds_until_due() == before
    # The POS reads next_sync as wall time: it follows the (new) wall clock, still `before` away.
    assert engine.next_sync == clock.now() + timedelta(seconds=before)
    clock.advance(3600)
    assert engine.next_sync == clock.now() + timedelta(seconds=before - 3600)


def test_a_month_of_steady_state_is_about_four_requests_a_day():
    server = Server()
    engine, clock = engine_for(server, seed=7)
    elapsed = 0.0
    while elapsed < 30 * DAY:
        step = min(engine.seconds_until_due(), 30 * DAY - elapsed) or 1
        clock.advance(step)
        elapsed += step
        engine.run_due()
    per_day = server.calls / 30
    assert 3.5 <= per_day <= 5, per_day


def test_a_month_with_an_outage_day_stays_under_five_a_day_on_average():
    """Half a day of outage (backing off to the 30 min cap) still averages under 5 requests a day."""
    server = Server()
    engine, clock = engine_for(server, seed=3)
    elapsed = 0.0
    while elapsed < 30 * DAY:
        down = 10 * DAY <= elapsed < 10.5 * DAY
        server.outcomes = [Offline("down")] if down else []
        step = min(engine.seconds_until_due(), 30 * DAY - elapsed) or 1
        clock.advance(step)
        elapsed += step
        engine.run_due()
    assert server.calls / 30 <= 5, server.calls / 30


def test_real_scheduler_runs_the_first_sync_and_stops():
    from agent.core.clock import SystemClock

    synced = threading.Event()
    engine = SyncEngine(SystemClock(), lambda: synced.set() or True)
    engine.start()
    try:
        assert synced.wait(10)
        assert engine.seconds_until_due() > 5 * 3600
        synced.clear()
        engine.schedule_in(0)  # while it runs, a sync made due now happens at once
        assert synced.wait(10)
    finally:
        engine.stop()
    synced.clear()
    engine.schedule_in(0)  # once stopped, nothing runs it any more
    assert not synced.wait(2)
    assert engine.attempts == 2
