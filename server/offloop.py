"""`OffLoop`: run one blocking database call at a time on a thread of its own, and settle on the loop.

The refresh queues (`server.refresh_reads`, `server.refresh_writes`) batch the work of the refreshes in
flight. On PostgreSQL each batch waits for network round trips; done on the event loop, that wait
stalls every other request of the process. `OffLoop.run` hands the batch to a dedicated thread (one per
queue: batches of one queue stay in order) and calls `done` back on the loop with `(result, None)` or
`(None, exception)`. While a call is in flight `busy` is true, and the queue keeps collecting work
for the next batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

Outcome = tuple[Any, BaseException | None]


class OffLoop:
    """One worker thread for one queue's batches (see the module docstring)."""

    def __init__(self, name: str) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self.busy = False

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
