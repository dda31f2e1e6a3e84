"""Clock, FakeClock and the trusted clock with its high-water mark (agent/core/clock.py)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from agent.core.clock import FakeClock, SystemClock, TrustedClock

START = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
H = 3600


def test_system_clock_is_utc_aware():
    now = SystemClock().now()
    assert now.tzinfo is not None and now.utcoffset() == timedelta(0)
    before = time.monotonic()
    reading = SystemClock().monotonic()
    assert before <= reading <= time.monotonic()  # the process's real monotonic clock


def test_fake_clock_moves_wall_and_monotonic_independently():
    clock = FakeClock(START, monotonic=5.0)
    clock.advance(10)
    assert (clock.now(), clock.monotonic()) == (START + timedelta(seconds=10), 15.0)
    clock.shift_wall(-3600)
    assert (clock.now(), clock.monotonic()) == (START - timedelta(seconds=3590), 15.0)
    clock.set_wall(START)
    assert clock.now() == START and clock.monotonic() == 15.0
    with pytest.raises(ValueError):
        FakeClock(datetime(2026, 1, 1))  # noqa: DTZ001 - the point of the test


def test_anchored_clock_follows_server_time_not_the_wall():
    clock = FakeClock(START)
    trusted = TrustedClock(clock)
    server = START + timedelta(hours=5)  # the PC's clock is 5 h slow
    trusted.anchor(server)
    clock.advance(60)
    clock.shift_wall(-30 * 86400)  # someone sets the clock back a month
    verdict = trusted.verdict()
    assert verdict.now == server + timedelta(seconds=60)
    assert verdict.anchored and not verdict.rollback


@pytest.mark.parametrize(
    ("hours_back", "rollback"), [(1, False), (23, False), (24, False), (25, True), (24 * 30, True)]
)
def test_after_restart_the_high_water_mark_detects_rollback(hours_back, rollback):
    clock = FakeClock(START)
    clock.shift_wall(-hours_back * H)
    verdict = TrustedClock(clock, high_water=START).verdict()
    assert verdict.rollback is rollback
    assert not verdict.anchored


def test_tolerated_skew_never_lets_time_run_backwards():
    clock = FakeClock(START - timedelta(hours=23))
    assert TrustedClock(clock, high_water=START).now() == START


def test_high_water_mark_only_moves_forward_and_survives_restart():
    clock = FakeClock(START)
    first = TrustedClock(clock)
    clock.advance(2 * H)
    assert first.now() == START + timedelta(hours=2)
    persisted = first.high_water
    clock.restart()  # reboot: monotonic starts over, anchor gone
    clock.shift_wall(-26 * H)
    second = TrustedClock(clock, high_water=persisted)
    assert second.verdict().rollback
    assert second.high_water == persisted  # a rollback never lowers the mark


def test_sync_clears_rollback_and_resets_a_mark_dragged_too_far_ahead():
    clock = FakeClock(START)
    trusted = TrustedClock(clock, high_water=START + timedelta(days=365))  # the clock once ran a year ahead
    assert trusted.verdict().rollback
    trusted.anchor(START)
    verdict = trusted.verdict()
    assert not verdict.rollback and verdict.now == START and trusted.high_water == START


def test_rollback_threshold_follows_policy():
    clock = FakeClock(START - timedelta(hours=2))
    assert TrustedClock(clock, high_water=START, rollback_s=H).verdict().rollback


def test_naive_times_are_refused():
    with pytest.raises(ValueError):
        TrustedClock(FakeClock(START)).anchor(datetime(2026, 1, 1))  # noqa: DTZ001
