"""Regression (found by bench/fleet.py): a clock set back more than 24 h stopped being a rollback, without
any sync, once the wall clock had crept back to within 24 h of the high-water mark. Meanwhile trusted time
stood still at the mark, so an offline terminal showed `licensed_active` instead of running down its
offline grace. PRODUCT.md: `clock_rollback` holds "until a sync succeeds"."""

from __future__ import annotations

from datetime import UTC, datetime

from agent.core.clock import FakeClock, TrustedClock
from tests.agent.fake_cloud import DAY
from tests.agent.test_service import Rig, activated

START = datetime(2026, 3, 1, 12, tzinfo=UTC)


def test_a_rollback_holds_while_the_wall_clock_catches_up() -> None:
    """Set back 3 days: still a rollback 2.5 days later, when the wall is only 12 h behind the mark."""
    clock = FakeClock(START)
    trusted = TrustedClock(clock, high_water=START)
    clock.shift_wall(-3 * DAY)
    assert trusted.verdict().rollback
    clock.advance(2.5 * DAY)
    assert trusted.verdict().rollback
    trusted.anchor(clock.now())
    assert not trusted.verdict().rollback


def test_an_offline_terminal_set_back_3_days_stays_in_clock_rollback_until_it_syncs(tmp_path) -> None:
    """The fleet's case: offline, restarted with the clock 3 days back, still offline 2.3 days later."""
    rig = Rig(tmp_path)
    svc, _ = activated(rig)
    rig.cloud.online = False
    rig.clock.advance(0.7 * DAY)
    svc.refresh_status()
    svc.stop()
    rig.clock.shift_wall(-3 * DAY)
    rig.clock.restart()
    again = rig.service()
    assert again.status().reason == "clock_rollback"
    rig.clock.advance(2.3 * DAY)
    status = again.refresh_status()
    assert (status.license_state, status.reason) == ("license_error", "clock_rollback")
    assert status.licensed is False
    # And across one more restart while still offline.
    again.stop()
    rig.clock.restart()
    assert rig.service().status().reason == "clock_rollback"
    rig.cloud.online = True
    assert rig.service().sync_now().license_state in ("licensed_active", "licensed_grace")
