"""Runs every AgentControl call off the UI thread and reports back with Qt signals.

A call is submitted with a tag (``"sync"``, ``"activate"``...). It runs on a QThreadPool thread; its result
or exception comes back on the UI thread through ``action_finished`` / ``action_failed``, which are queued
across threads by Qt. Status pushes from the agent's own threads arrive as ``status_changed``. So the
window stays responsive even when the network, or the agent, hangs.

The worker also remembers the last status it signalled (``last_status``). Queued signals only reach the
receivers connected when they were emitted, so a widget built later (the window, created on first open)
starts from ``last_status`` instead of waiting for the next change, which may not come for a long time.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal

log = logging.getLogger(__name__)

# Calls that return a LicenseStatus: their result is also a status update.
_STATUS_CALLS = frozenset({"status", "sync_now", "start_trial", "activate", "wait_checkout", "deactivate"})


class _Job(QRunnable):
    """One control call on a pool thread."""

    def __init__(self, worker: ControlWorker, tag: str, fn: Callable[[], Any], returns_status: bool) -> None:
        super().__init__()
        self._worker, self._tag, self._fn, self._returns_status = worker, tag, fn, returns_status
        self.setAutoDelete(True)

    def run(self) -> None:
        """Call, then hand the outcome to the UI thread through the worker's signals."""
        try:
            result = self._fn()
        except Exception as exc:  # every failure must reach the UI as a message, never kill the thread
            if not isinstance(exc, _known_errors()):
                log.exception("agent call %s failed", self._tag)
            self._worker._finish(self._tag, None, exc, False)
            return
        self._worker._finish(self._tag, result, None, self._returns_status)


def _known_errors() -> tuple[type[BaseException], ...]:
    from agent.errors import Error

    return (Error,)


class ControlWorker(QObject):
    """The UI's only path to the agent: queue a call, get a signal back."""

    status_changed = Signal(object)
    action_started = Signal(str)
    action_finished = Signal(str, object)
    action_failed = Signal(str, object)
    busy_changed = Signal(bool)

    def __init__(self, control, parent: QObject | None = None, max_threads: int = 4) -> None:
        super().__init__(parent)
        self.control = control
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(max_threads)
        self._pending: dict[str, int] = {}
        self._lock = threading.Lock()
        self._unsubscribe: Callable[[], None] | None = None
        self._closed = False
        self._last_status = None
        self._calls: dict[str, tuple[str, tuple[Any, ...], dict[str, Any]]] = {}
        self.started = False

    @property
    def last_status(self):
        """The most recent LicenseStatus signalled (pushed or returned by a call), or None before any."""
        with self._lock:
            return self._last_status

    def refresh(self) -> None:
        """Ask the agent for its current status (memory only, never the network); signalled when it comes."""
        self.call("status", "status")

    def _signal_status(self, status) -> None:
        # Recorded before the emit: a receiver that connects and then reads last_status misses nothing.
        with self._lock:
            self._last_status = status
        self.status_changed.emit(status)

    def start(self) -> None:
        """Subscribe to status pushes and fetch the current status, both off the UI thread."""
        self.started = True
        self.submit("subscribe", self._subscribe)
        self.refresh()

    def _subscribe(self) -> None:
        self._unsubscribe = self.control.subscribe(self._pushed)

    def _pushed(self, status) -> None:
        if not self._closed:
            self._signal_status(status)

    def call(self, tag: str, method: str, *args: Any, **kwargs: Any) -> None:
        """Run ``control.<method>(*args, **kwargs)`` in the pool; the outcome is signalled with ``tag``."""
        self._calls[tag] = (method, args, kwargs)
        fn = getattr(self.control, method)
        self.submit(tag, lambda: fn(*args, **kwargs), returns_status=method in _STATUS_CALLS)

    def retry(self, tag: str) -> None:
        """Run the last ``call`` made with ``tag`` again (after the owner proved their e-mail)."""
        if tag in self._calls:
            method, args, kwargs = self._calls[tag]
            self.call(tag, method, *args, **kwargs)

    def submit(self, tag: str, fn: Callable[[], Any], returns_status: bool = False) -> None:
        """Run any callable that talks to the agent in the pool."""
        if self._closed:
            return
        with self._lock:
            self._pending[tag] = self._pending.get(tag, 0) + 1
            first = sum(self._pending.values()) == 1
        self.action_started.emit(tag)
        if first:
            self.busy_changed.emit(True)
        self._pool.start(_Job(self, tag, fn, returns_status))

    def is_pending(self, tag: str) -> bool:
        """Whether a call with ``tag`` is still running."""
        with self._lock:
            return self._pending.get(tag, 0) > 0

    def _finish(self, tag: str, result: Any, error: BaseException | None, returns_status: bool) -> None:
        # Runs on the pool thread: only emit signals here; Qt queues them to the UI thread.
        with self._lock:
            self._pending[tag] = self._pending.get(tag, 1) - 1
            if not self._pending[tag]:
                del self._pending[tag]
            idle = not self._pending
        if self._closed:
            return
        if error is not None:
            self.action_failed.emit(tag, error)
        else:
            if returns_status and result is not None:
                self._signal_status(result)
            self.action_finished.emit(tag, result)
        if idle:
            self.busy_changed.emit(False)

    def shutdown(self, wait_ms: int = 2000) -> bool:
        """Stop signalling, unsubscribe and wait up to ``wait_ms`` for running calls; True if all ended."""
        self._closed = True
        if self._unsubscribe is not None:
            try:
                self._unsubscribe()
            except Exception:  # the agent may already be gone at exit; nothing left to tell it
                log.debug("unsubscribe failed at shutdown", exc_info=True)
        self._pool.clear()
        return self._pool.waitForDone(wait_ms)
