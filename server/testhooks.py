"""Test hooks for whole-system simulations (bench/fleet.py). NEVER enabled in production.

Everything here is off unless `POSPAL_ENABLE_TEST_HOOKS=1` is set, which no deployment sets; the fleet
simulation sets it on the one server process it starts. When on:

- **Simulated time.** With `POSPAL_TEST_CLOCK_FILE`, the server's clock is `FileClock`: it reads the
  current time (Unix seconds, one number) from that file, which the simulation rewrites atomically as it
  moves simulated time. A file (rather than an endpoint) survives the server being killed and restarted.
- **Webhook delivery for the sandbox.** `POST /_test/webhook` takes a Stripe-shaped event produced by the
  sandbox provider and runs it through the same `process_event` as a verified Stripe webhook (the sandbox
  itself accepts no signed webhooks), so the simulation can deliver events duplicated and out of order,
  as Stripe does. A failure answers 500, so the caller delivers again, as Stripe would.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse

from pospal_protocol.clock import Clock, SystemClock
from server.api.deps import Services, services
from server.config import Settings


class FileClock:
    """Time read from a file holding Unix seconds; re-read only when the file changes."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._stamp: tuple[int, int] | None = None
        self._now = datetime.fromtimestamp(float(self.path.read_text().strip()), UTC)

    def now(self) -> datetime:
        """The simulated time the file names (the last good value while the file is being replaced)."""
        try:
            st = os.stat(self.path)
            stamp = (st.st_mtime_ns, st.st_ino)
            if stamp != self._stamp:
                self._now = datetime.fromtimestamp(float(self.path.read_text().strip()), UTC)
                self._stamp = stamp
        except (OSError, ValueError):
            pass
        return self._now

    def monotonic(self) -> float:
        """Real monotonic seconds: the simulation moves wall time only, as a user changing the clock would."""
        return SystemClock().monotonic()


def clock_for(settings: Settings) -> Clock:
    """`FileClock` when test hooks and a clock file are configured, else the system clock."""
    if settings.test_hooks and settings.test_clock_file is not None:
        return FileClock(settings.test_clock_file)
    return SystemClock()


router = APIRouter(include_in_schema=False)


@router.post("/_test/webhook")
async def deliver_webhook(request: Request, svc: Services = Depends(services)) -> JSONResponse:
    """Process one sandbox event exactly as a verified Stripe webhook; 500 means "deliver it again"."""
    from starlette.concurrency import run_in_threadpool

    from server.api.billing import _context
    from server.webhooks import process_event

    event: Any = await request.json()
    if not isinstance(event, dict) or not isinstance(event.get("id"), str):
        return JSONResponse({"error": "invalid_request", "message": "An event object."}, status_code=422)
    try:
        outcome = await run_in_threadpool(process_event, svc.db, event, svc.billing, _context(svc))
    except Exception:
        return JSONResponse({"error": "processing_failed", "message": "Deliver it again."}, status_code=500)
    return JSONResponse({"received": True, "outcome": outcome})


def install(app: FastAPI, settings: Settings) -> None:
    """Mount the test routes when (and only when) test hooks are enabled."""
    if settings.test_hooks:
        app.include_router(router)
