"""`OffLoop`: run one blocking database call at a time on a thread of its own, and settle on the loop.

The refresh queues (`server.refresh_reads`, `server.refresh_writes`) batch the work of the refreshes in
flight. On PostgreSQL each batch waits for network round trips; done on the event loop, that wait
stalls every other request of the process. `OffLoop.run` hands the batch to a dedicated thread (one per
queue: batches of one queue stay in order) and calls `done` back on the loop with `(result, None)` or
`(None, exception)`. While a call is in flight `busy` is true, and the queue keeps collecting work
for the next batch.

The thread waits for the database with the GIL released, but needs it back to hand the result over.
While the loop runs Python code, CPython makes a waiting thread wait a whole switch interval (5 ms by
default) before asking for the GIL: under load every batch took at least 5 ms, whatever the database's
speed. So the first `OffLoop` lowers the interval to `SWITCH_INTERVAL_S` (never raises it).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

Outcome = tuple[Any, BaseException | None]
# The interpreter's switch interval while OffLoop threads run (see the module docstring).
SWITCH_INTERVAL_S = 0.0005


class OffLoop:
    """One worker thread for one queue's batches (see the module docstring)."""

    def __init__(self, name: str) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self.busy = False
        if sys.getswitchinterval() > SWITCH_INTERVAL_S:
            sys.setswitchinterval(SWITCH_INTERVAL_S)

    def run(
        self, loop: asyncio.AbstractEventLoop, work: Callable[[], Any], done: Callable[[Outcome], None]
    ) -> None:
        """Run `work()` on the thread, then `done(outcome)` on `loop` (the caller checked `busy`)."""
        assert not self.busy
        self.busy = True

        def call() -> Outcome:
            try:
                return work(), None
            except Exception as exc:  # handed to the loop: the refreshes of the batch fail with it
                return None, exc

        def finished(future: asyncio.Future[Outcome]) -> None:
            self.busy = False
            if not future.cancelled():  # cancelled only when the loop shuts down
                done(future.result())

        loop.run_in_executor(self._executor, call).add_done_callback(finished)
