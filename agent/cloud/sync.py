"""The sync engine: when to talk to the server, how to back off, and coalescing "Sync now".

- Steady state: one sync every `policy.sync_s` (6 h) with ±`policy.jitter` (10 %) jitter, so a
  terminal makes about 4 requests a day (the old system made up to 2,880).
- On a transient failure (`Offline`, a rate limit, an unexpected error) the next try is backed off
  exponentially: 30 s, 60 s, 120 s ... capped at 30 min (with the same jitter, so a fleet that lost the
  server at once does not come back in lock-step). A refusal that retrying cannot fix (e.g. an unknown
  machine) waits a normal interval instead.
- `sync_now()` runs a sync at once, or, when one is already running, waits for that one and returns its
  result: concurrent requests become one request to the server.

All time comes from the injected `Clock` (intervals on its monotonic time, so changing the wall clock
does not change the schedule). `run_due()` is the one entry point of the schedule: the real scheduler
(apscheduler `BackgroundScheduler`, `start()`) calls it, and tests and the fleet simulation call it
directly after moving a `FakeClock`, which makes the engine deterministic.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from agent.errors import Offline, ServerRefused, TokenInvalid
from pospal_protocol.tokens import Policy

log = logging.getLogger(__name__)

BACKOFF_START_S = 30.0
BACKOFF_CAP_S = 1800.0
_MAX_DOUBLINGS = 32  # far past the cap (30 s * 2**6 > 30 min), far below a float's limit
# The scheduler wakes at least this often, so time-driven status changes (grace at 48 h) show promptly.
TICK_S = 30.0
# Refusals that retrying soon can fix.
_TRANSIENT_CODES = frozenset({"rate_limited", "replay", "too_many_attempts"})


@dataclass(frozen=True)
class SyncResult:
    """The outcome of one sync attempt: `ok`, or the error; `skipped` when there was nothing to sync."""

    ok: bool
    at: datetime
    error: Exception | None = None
    skipped: bool = False

    def describe(self) -> str:
        """One line for diagnostics."""
        when = self.at.strftime("%Y-%m-%d %H:%M:%SZ")
        if self.skipped:
            return f"{when}: nothing to sync"
        if self.ok:
            return f"{when}: ok"
        return f"{when}: failed: {getattr(self.error, 'message', None) or self.error}"


class SyncEngine:
    """Schedules and runs `sync_fn` (returns True when it synced, False when there was nothing to sync;
    raises on failure). `policy()` gives the current token policy."""

    def __init__(
        self,
        clock: Any,
        sync_fn: Callable[[], bool],
        *,
        policy: Callable[[], Policy] = Policy,
        rng: random.Random | None = None,
        on_tick: Callable[[], object] | None = None,
        on_result: Callable[[SyncResult], None] | None = None,
    ) -> None:
        self.clock = clock
        self._sync_fn = sync_fn
        self._policy = policy
        # Jitter only spreads load; it needs no cryptographic strength.
        self._rng = rng or random.Random()  # noqa: S311
        self._on_tick = on_tick
        self._on_result = on_result
        self._cond = threading.Condition()
        self._running = False
        self._generation = 0
        self.failures = 0
        self.last_result: SyncResult | None = None
        self.attempts = 0
        self._due = clock.monotonic()  # the first sync is due at start
        self._scheduler: Any = None

    # -- schedule --------------------------------------------------------------------------------------

    @property
    def next_sync(self) -> datetime:
        """When the next scheduled sync is due, as wall time."""
        with self._cond:
            due = self._due
        return self.clock.now() + timedelta(seconds=max(0.0, due - self.clock.monotonic()))

    def seconds_until_due(self) -> float:
        """Seconds until the next scheduled sync (0 when it is due)."""
        with self._cond:
            return max(0.0, self._due - self.clock.monotonic())

    def schedule_in(self, seconds: float) -> None:
        """Move the next sync to `seconds` from now (after an activation, say)."""
        with self._cond:
            self._due = self.clock.monotonic() + max(0.0, seconds)
        self._rearm()

    def interval_s(self) -> float:
        """A regular interval: `sync_s` with ±`jitter`."""
        p = self._policy()
        return p.sync_s * (1.0 + self._rng.uniform(-p.jitter, p.jitter))

    def backoff_s(self, failures: int) -> float:
        """The wait after `failures` consecutive transient failures (30 s doubling, 30 min cap, jittered)."""
        # The exponent stops growing once past the cap: 2 ** 1024 no longer fits a float (three weeks
        # offline at the cap), and an OverflowError here left the engine "running" for good.
        doublings = min(max(0, failures - 1), _MAX_DOUBLINGS)
        base = min(BACKOFF_CAP_S, BACKOFF_START_S * 2**doublings)
        jitter = self._policy().jitter
        return min(BACKOFF_CAP_S, base * (1.0 + self._rng.uniform(-jitter, jitter)))

    # -- running ---------------------------------------------------------------------------------------

    def run_due(self) -> SyncResult | None:
        """Run a sync if one is due and none is running; returns its result, or None if nothing ran."""
        with self._cond:
            if self._running or self.clock.monotonic() < self._due:
                return None
        return self._run(coalesce=False)

    def sync_now(self) -> SyncResult:
        """Sync at once; if a sync is already running, wait for it and return its result instead."""
        return self._run(coalesce=True)

    def _run(self, coalesce: bool) -> SyncResult:
        with self._cond:
            if self._running:
                if not coalesce:
                    return self.last_result or SyncResult(False, self.clock.now(), Offline("busy"))
                gen = self._generation
                while self._generation == gen:
                    self._cond.wait()
                assert self.last_result is not None
                return self.last_result
            self._running = True
        result: SyncResult | None = None
        try:
            result = self._attempt()
        except Exception as exc:  # a bug in the bookkeeping around the sync: never stay "running" for good
            log.exception("sync bookkeeping failed; next try in %.0f s", BACKOFF_CAP_S)
            result = SyncResult(False, self.clock.now(), exc)
            with self._cond:
                self._due = self.clock.monotonic() + BACKOFF_CAP_S
        finally:
            with self._cond:
                self._running = False
                self._generation += 1
                if result is not None:
                    self.last_result = result
                self._cond.notify_all()
        if self._on_result:
            self._on_result(result)
        self._rearm()
        return result

    def _attempt(self) -> SyncResult:
        started = self.clock.now()
        delay: float
        try:
            synced = self._sync_fn()
        except ServerRefused as exc:
            if exc.code in _TRANSIENT_CODES:
                result, delay = self._failed(started, exc)
                retry_after = exc.extra.get("retry_after")
                if isinstance(retry_after, int | float) and not isinstance(retry_after, bool):
                    delay = max(delay, float(retry_after))
            else:
                # Retrying in seconds would not help; try again at the normal pace.
                self.failures = 0
                result, delay = SyncResult(False, started, exc), self.interval_s()
            log.warning("sync refused: %s (%s)", exc.message, exc.code)
        except Offline as exc:
            result, delay = self._failed(started, exc)
            log.info("sync failed (%s); next try in %.0f s", exc.message, delay)
        except TokenInvalid as exc:
            # An answer the agent refused (a replayed or forged token): what it held stays; retry later.
            result, delay = self._failed(started, exc)
            log.warning("sync answer refused (%s); next try in %.0f s", exc.reason, delay)
        except Exception as exc:  # a bug or a broken answer must not stop the schedule
            log.exception("sync failed unexpectedly")
            result, delay = self._failed(started, exc)
        else:
            self.failures = 0
            result = SyncResult(True, started, skipped=not synced)
            delay = self.interval_s()
        self.attempts += 1
        with self._cond:
            self._due = self.clock.monotonic() + delay
        return result

    def _failed(self, started: datetime, exc: Exception) -> tuple[SyncResult, float]:
        self.failures += 1
        return SyncResult(False, started, exc), self.backoff_s(self.failures)

    # -- real scheduler --------------------------------------------------------------------------------

    def tick(self) -> None:
        """One scheduler wake-up: run the sync if due, then let the owner refresh time-driven status."""
        try:
            self.run_due()
        finally:
            if self._on_tick:
                self._on_tick()

    def start(self) -> None:
        """Start the apscheduler BackgroundScheduler that calls `tick()` when a sync is due (and at least
        every TICK_S seconds)."""
        from apscheduler.schedulers.background import BackgroundScheduler

        scheduler = BackgroundScheduler(timezone="UTC", daemon=True)
        # The job only hands the tick to a thread and returns; run_due() is what keeps one sync at a time.
        # With max_instances=1 a re-arm made while the job was still being marked done was skipped as
        # "maximum instances reached" and the sync waited for the next regular tick (up to 30 s).
        scheduler.add_job(
            self._scheduled_tick,
            "interval",
            seconds=TICK_S,
            id="sync",
            next_run_time=self.clock.now(),
            max_instances=4,
            coalesce=True,
            misfire_grace_time=None,
        )
        scheduler.start()
        self._scheduler = scheduler

    def stop(self) -> None:
        """Stop the scheduler (a sync in flight finishes on its own; its thread is a daemon)."""
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
            self._scheduler = None

    def _scheduled_tick(self) -> None:
        # The work runs in a daemon thread, not in apscheduler's pool: the pool's threads are joined at
        # exit, so a sync hanging on a silent server would hold up the agent's shutdown for its timeout.
        threading.Thread(target=self._tick_and_rearm, name="pospal-sync", daemon=True).start()

    def _tick_and_rearm(self) -> None:
        try:
            self.tick()
        finally:
            self._rearm()

    def _rearm(self) -> None:
        """Wake the scheduler exactly when the next sync is due, if that is before its next regular tick."""
        scheduler = self._scheduler
        if scheduler is None:
            return
        wait = self.seconds_until_due()
        if wait < TICK_S:
            try:
                scheduler.modify_job("sync", next_run_time=self.clock.now() + timedelta(seconds=wait))
            except Exception:  # the scheduler is shutting down
                log.debug("could not re-arm the sync job", exc_info=True)
