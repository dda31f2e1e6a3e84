"""Injectable time, one definition for the agent and the server: `Clock`, `SystemClock`, `FakeClock`.

No logic reads the wall clock directly. It asks a `Clock`: `SystemClock` in production, `FakeClock` in
tests. The fake moves wall and monotonic time together (`advance`) or the wall alone (`set_wall`,
`shift_wall`: a user changing the computer's clock), and `restart` simulates a reboot.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol

DEFAULT_START = datetime(2026, 1, 1, tzinfo=UTC)


class Clock(Protocol):
    """Source of wall time (tz-aware UTC) and monotonic time (seconds, only differences matter)."""

    def now(self) -> datetime:
        """Wall-clock time, tz-aware UTC."""
        ...

    def monotonic(self) -> float:
        """Monotonic seconds."""
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> datetime:
        """Wall-clock time, tz-aware UTC."""
        return datetime.now(UTC)

    def monotonic(self) -> float:
        """`time.monotonic()`."""
        return time.monotonic()


class FakeClock:
    """A clock tests drive; thread-safe, so a test server thread can read it while the test moves it."""

    def __init__(self, start: datetime | None = None, monotonic: float = 1000.0) -> None:
        self._wall = start or DEFAULT_START
        if self._wall.tzinfo is None:
            raise ValueError("FakeClock needs a tz-aware start time")
        self._mono = monotonic
        self._lock = threading.Lock()

    def now(self) -> datetime:
        """The fake wall time."""
        with self._lock:
            return self._wall

    def monotonic(self) -> float:
        """The fake monotonic time."""
        with self._lock:
            return self._mono

    def advance(self, seconds: float = 0, **delta: float) -> datetime:
        """Let time pass (`seconds` and/or timedelta keywords): wall and monotonic both move; new wall."""
        step = timedelta(seconds=seconds, **delta)
        with self._lock:
            self._wall += step
            # Exact float seconds: a timedelta rounds to microseconds, and a deadline computed from
            # monotonic time must be reached exactly.
            self._mono += seconds + timedelta(**delta).total_seconds()
            return self._wall

    def set_wall(self, when: datetime) -> None:
        """Set the wall clock (forward or back) without touching monotonic time, as a user would."""
        if when.tzinfo is None:
            raise ValueError("wall time must be tz-aware")
        with self._lock:
            self._wall = when.astimezone(UTC)

    set = set_wall

    def shift_wall(self, seconds: float) -> None:
        """Move only the wall clock by `seconds` (negative = set back)."""
        with self._lock:
            self._wall += timedelta(seconds=seconds)

    def restart(self, monotonic: float = 1000.0) -> None:
        """Simulate a reboot: monotonic time starts over, the wall clock keeps going."""
        with self._lock:
            self._mono = monotonic
