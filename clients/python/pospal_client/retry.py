"""Transparent retries of one local-API call, all inside that call's one total deadline.

The agent sometimes asks the POS to come back in a moment: `503 busy` (a flood of connections holds every
slot) and `503 updating` (a signed update is swapping versions), both with `Retry-After`; and during a
swap a fresh connection can be refused or reset. `Budget` decides whether one more attempt is worth
starting: it waits what the agent asked (never less), and starts the attempt only when the wait plus a
likely attempt (the last one's duration, at least `MIN_ATTEMPT_S`) still ends before the deadline. So a
retry never sleeps past the deadline, and the caller gets the last error by the deadline at the latest.
`503 starting` is not retried here: `AgentClient.can_sell()` has its own bounded rule for it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from pospal_protocol.clock import Clock, SystemClock

# Answers that mean "the same request will work in a moment" (the agent refused it before acting on it).
RETRY_CODES = frozenset({"busy", "updating"})
MIN_WAIT_S = 0.05  # a Retry-After of 0 must not turn into a hot loop
DEFAULT_WAIT_S = 0.25  # a 503 busy/updating without Retry-After
MIN_ATTEMPT_S = 0.05  # what one more exchange on loopback needs, at the least
GAP_FIRST_S = 0.05  # a refused/reset connection mid-swap: back off from this...
GAP_MAX_S = 0.4  # ...doubling up to this
MAX_ATTEMPTS = 64  # bounded in count as well as in time


class Budget:
    """The attempts of one call before `deadline` (seconds on `clock.monotonic()`).

    Call `begin()` before each attempt and `retry(wait)` after a retriable failure: it sleeps `wait` and
    returns True when one more attempt fits, else returns False at once (no sleep).
    """

    def __init__(
        self,
        deadline: float,
        clock: Clock | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.deadline = deadline
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._sleep = sleep
        self.attempts = 0
        self._started = 0.0
        self._gap = GAP_FIRST_S

    def begin(self) -> None:
        """An attempt starts now."""
        self.attempts += 1
        self._started = self._clock.monotonic()

    def retry(self, wait: float) -> bool:
        """Sleep `wait` seconds (at least `MIN_WAIT_S`) and return True if one more attempt can finish in
        time; False, without sleeping, if it cannot."""
        if self.attempts >= MAX_ATTEMPTS:
            return False
        now = self._clock.monotonic()
        wait = max(wait, MIN_WAIT_S)
        likely = max(MIN_ATTEMPT_S, now - self._started)
        if now + wait + likely > self.deadline:
            return False
        self._sleep(wait)
        return True

    def retry_gap(self) -> bool:
        """`retry()` with the next backoff step for a connection refused or reset mid-swap."""
        wait = self._gap
        self._gap = min(self._gap * 2, GAP_MAX_S)
        return self.retry(wait)


def retry_after(headers: Mapping[str, str], body: Mapping[str, Any]) -> float:
    """The seconds a 503 asks to wait: its `Retry-After` header (seconds), else its body's `retry_after`,
    else `DEFAULT_WAIT_S`. An HTTP date or garbage counts as absent."""
    text = headers.get("retry-after", "").strip()
    if text.isascii() and text.isdigit() and len(text) <= 6:
        return float(text)
    value = body.get("retry_after")
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value < 1e6:
        return float(value)
    return DEFAULT_WAIT_S
