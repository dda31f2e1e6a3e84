"""Starting the tray app: ``run_tray`` for ``pospal-agent run`` (agent in-process) and ``main`` (standalone).

``run_tray`` takes any ``AgentControl`` (or an ``AgentService``, which ``agent.connect`` wraps), claims
the single instance, builds worker, window and tray, and runs the Qt event loop until Quit. ``main`` is
the tray alone, talking over the local API to an agent that runs as a separate service.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, cast

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication, QSystemTrayIcon

import agent
from ui.autostart import for_this_platform
from ui.single_instance import SingleInstance
from ui.strings import language, system_language
from ui.tray import Tray
from ui.worker import ControlWorker

log = logging.getLogger(__name__)


def run_tray(
    service_or_control,
    *,
    argv: Sequence[str] | None = None,
    opener: Callable[[str], None] | None = None,
    lang: str | None = None,
    instance_name: str | None = None,
    on_ready: Callable[[Tray], None] | None = None,
) -> int:
    """Run the tray and window until Quit; returns the exit code (0 also when another instance runs)."""
    started = time.perf_counter()
    app = _application(argv)
    single = SingleInstance(instance_name)
    if not single.claim():
        log.info("another tray is running; asked it to show its window")
        return 0

    language.set(lang or system_language())
    worker = ControlWorker(agent.connect(service_or_control))

    def make_window():
        from ui.window import AgentWindow, open_in_browser  # the window's modules load on first open

        return AgentWindow(worker, opener=opener or open_in_browser, autostart=for_this_platform())

    tray = Tray(worker, window_factory=make_window, quit_app=app.quit)
    single.show_requested.connect(tray.open_window)
    worker.start()
    if lang is None:
        _follow_agent_language(worker)
    if QSystemTrayIcon.isSystemTrayAvailable():
        tray.show()
    else:
        # No tray on this desktop: the window is the only way to see the state.
        tray.open_window()
    log.info("tray ready after %.0f ms", (time.perf_counter() - started) * 1000)
    if on_ready is not None:
        on_ready(tray)
    return _exec(app, tray, worker, single)


def _application(argv: Sequence[str] | None) -> QApplication:
    """The process's QApplication, named for the taskbar; closing the window never quits it."""
    # argv[0] names the X11 window class and the taskbar entry: "pospal-agent", not "cli.py".
    app = cast(QApplication, QApplication.instance() or QApplication(list(argv or ["pospal-agent"])))
    app.setApplicationName("POSPal License Agent")
    app.setOrganizationName("POSPal")
    app.setQuitOnLastWindowClosed(False)
    return app


def _follow_agent_language(worker: ControlWorker) -> None:
    """Take the agent's language for the window, asked off the UI thread like every agent call."""
    # The agent's language (POSPAL_LANGUAGE, the choice saved from this window, the system's) is
    # what the POS shows, so the window follows it.
    worker.action_finished.connect(lambda tag, result: language.set(result) if tag == "language" else None)
    worker.call("language", "language")


def _exec(app: QApplication, tray: Tray, worker: ControlWorker, single: SingleInstance) -> int:
    """Run the event loop until Quit or SIGTERM/SIGINT, then take the tray down cleanly."""
    previous = _quit_on_signals(app)
    # Python runs its signal handlers only when it gets the CPU; an idle Qt loop never gives it, so a
    # cheap timer lets SIGTERM (service stop, installer upgrade) end the loop promptly.
    wake = QTimer()
    wake.start(500)
    wake.timeout.connect(lambda: None)
    try:
        return app.exec()
    finally:
        wake.stop()
        _restore_signals(previous)
        if tray.has_window:
            tray.window.pages["wait"].cancel_pending()
        tray.icon.hide()
        worker.shutdown()
        single.release()


def _quit_on_signals(app: QApplication) -> dict[int, Any]:
    """SIGTERM and SIGINT end the event loop cleanly (the agent's own shutdown then runs)."""
    previous: dict[int, Any] = {}
    if threading.current_thread() is not threading.main_thread():
        return previous
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous[sig] = signal.signal(sig, lambda *_: app.quit())
    return previous


def _restore_signals(previous: dict[int, Any]) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)


def main(argv: Sequence[str] | None = None) -> int:
    """The tray alone, for an agent running as a separate service (local API with the bearer token)."""
    parser = argparse.ArgumentParser(prog="pospal-tray", description="POSPal License Agent tray")
    parser.add_argument("--lang", choices=("en", "el"), help="UI language (default: the system's)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run_tray(agent.connect(), lang=args.lang)


if __name__ == "__main__":
    sys.exit(main())
