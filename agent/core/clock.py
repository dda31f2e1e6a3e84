"""The agent's trusted clock. (`Clock`, `SystemClock` and `FakeClock` live in `pospal_protocol.clock` and are
re-exported here.)

License decisions use a `TrustedClock`, which never believes the wall clock more than it has to:

- **Within a process, after a sync:** trusted now = the server's signed time at the last sync (the
  token's `srv` claim) + the monotonic time elapsed since. Changing the computer's clock then has no
  effect at all, so there is nothing to flag.
- **Across a restart** there is no monotonic anchor any more (monotonic time restarts with the machine
  and means nothing between processes). The trusted clock then uses the wall clock, checked against the
  persisted *high-water mark*: the latest trusted time this agent has ever seen. A wall clock more than
  `rollback_s` (24 h by default) behind that mark is a rollback (`clock_rollback`) until a sync anchors
  the clock to the server again; a smaller skew is tolerated, but time is never allowed to run backwards
  (trusted now = max(wall, mark)), so setting the clock back 23 h gains nothing either.
- The mark only moves forward, except that a sync resets it to the server's time: a clock that had run
  far ahead (and dragged the mark with it) is corrected by the server instead of locking the terminal
  out forever.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime, timedelta

from pospal_protocol.clock import Clock, FakeClock, SystemClock

__all__ = ["Clock", "ClockVerdict", "DEFAULT_ROLLBACK_S", "FakeClock", "SystemClock", "TrustedClock"]

DEFAULT_ROLLBACK_S = 86400


@dataclass(frozen=True)
class ClockVerdict:
    """The trusted time and whether the wall clock looks set back."""

    now: datetime
    rollback: bool
    anchored: bool
    wall: datetime
    high_water: datetime | None


class TrustedClock:
    """Time anchored to the server's signed time, guarded by a persisted high-water mark.

    Persist `high_water` with the cache and pass it back in after a restart. Thread-safe.
    """

    def __init__(
        self,
        clock: Clock,
        high_water: datetime | None = None,
        rollback_s: int = DEFAULT_ROLLBACK_S,
        rolled_back: bool = False,
    ) -> None:
        self._clock = clock
        self._hw = high_water
        self.rollback_s = rollback_s
        self._anchor: tuple[datetime, float] | None = None
        # A rollback, once seen, holds until a sync (anchor): the wall clock creeping back to within
        # rollback_s of the mark must not clear it, or time would stand still at the mark meanwhile.
        self._rolled_back = rolled_back
        self._lock = threading.Lock()

    @property
    def rolled_back(self) -> bool:
        """Whether a rollback was seen and no sync has anchored the clock since (persist it)."""
        with self._lock:
            return self._rolled_back

    @property
    def high_water(self) -> datetime | None:
        """The latest trusted time seen (persist it)."""
        with self._lock:
            return self._hw

    @property
    def anchored(self) -> bool:
        """Whether a sync in this process anchored the clock to the server."""
        with self._lock:
            return self._anchor is not None

    def anchor(self, server_time: datetime) -> None:
        """Anchor to the server's signed time after a successful sync; resets the high-water mark to it."""
        if server_time.tzinfo is None:
            raise ValueError("server time must be tz-aware")
        with self._lock:
            self._anchor = (server_time, self._clock.monotonic())
            self._hw = server_time
            self._rolled_back = False

    def advance_to(self, signed_time: datetime) -> None:
        """Move the high-water mark forward to a time the server signed (so it has passed); never back.

        For a license file, whose signed time is older than "now" by however long it was carried: unlike
        `anchor`, this is not a sync, so it neither anchors the clock nor clears a rollback verdict.
        """
        if signed_time.tzinfo is None:
            raise ValueError("signed time must be tz-aware")
        with self._lock:
            if self._hw is None or signed_time > self._hw:
                self._hw = signed_time

    def verdict(self) -> ClockVerdict:
        """Trusted now and the rollback verdict; moves the high-water mark forward (never back)."""
        with self._lock:
            wall = self._clock.now()
            if self._anchor is not None:
                server_time, mono0 = self._anchor
                # Monotonic time cannot run backwards; clamp anyway in case a fake or a bad VM does.
                now = server_time + timedelta(seconds=max(0.0, self._clock.monotonic() - mono0))
                rollback = False
            else:
                hw = self._hw
                behind = hw is not None and (hw - wall).total_seconds() > self.rollback_s
                rollback = self._rolled_back or behind
                self._rolled_back = rollback
                now = wall if hw is None or wall >= hw else hw
            if not rollback and (self._hw is None or now > self._hw):
                self._hw = now
            return ClockVerdict(
                now=now, rollback=rollback, anchored=self._anchor is not None, wall=wall, high_water=self._hw
            )

    def now(self) -> datetime:
        """Trusted now (see the module docstring)."""
        return self.verdict().now
