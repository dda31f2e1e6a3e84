"""Starting the tray app: ``run_tray`` for ``pospal-agent run`` (agent in-process) and ``main`` (standalone).

``run_tray`` takes an ``AgentService`` (wrapped in ``InProcessControl``) or any ``AgentControl``, claims
the single instance, builds worker, window and tray, and runs the Qt event loop until Quit. ``main`` is
the tray alone, talking over the local API to an agent that runs as a separate service.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable, Sequence

from PySide6.QtWidgets import QApplication, QSystemTrayIcon

from ui.autostart import for_this_platform
from ui.single_instance import SingleInstance
from ui.strings import language, system_language
from ui.tray import Tray
from ui.window import AgentWindow, open_in_browser
from ui.worker import ControlWorker

log = logging.getLogger(__name__)


def as_control(service_or_control):
    """An AgentControl for what ``pospal-agent run`` hands over: a service gets the in-process adapter."""
    from agent.control import InProcessControl

    try:
        from agent.service import AgentService
    except ImportError:  # the service module is optional for a tray that only talks over HTTP
        AgentService = None  # noqa: N806
    if AgentService is not None and isinstance(service_or_control, AgentService):
        return InProcessControl(service_or_control)
    return service_or_control


def run_tray(
    service_or_control,
    *,
    argv: Sequence[str] | None = None,
    opener: Callable[[str], None] = open_in_browser,
    lang: str | None = None,
    instance_name: str | None = None,
    on_ready: Callable[[Tray], None] | None = None,
) -> int:
    """Run the tray and window until Quit; returns the exit code (0 also when another instance runs)."""
    started = time.perf_counter()
    app = QApplication.instance() or QApplication(list(argv or sys.argv[:1]))
    app.setApplicationName("POSPal License Agent")
    app.setOrganizationName("POSPal")
    app.setQuitOnLastWindowClosed(False)

    single = SingleInstance(instance_name)
    if not single.claim():
        log.info("another tray is running; asked it to show its window")
        return 0

    language.set(lang or system_language())
    worker = ControlWorker(as_control(service_or_control))
    window = AgentWindow(worker, opener=opener, autostart=for_this_platform())
    tray = Tray(window, quit_app=app.quit)
    single.show_requested.connect(window.bring_up)
    worker.start()
    if QSystemTrayIcon.isSystemTrayAvailable():
        tray.show()
    else:
        # No tray on this desktop: the window is the only way to see the state.
        window.show()
    log.info("tray ready after %.0f ms", (time.perf_counter() - started) * 1000)
    if on_ready is not None:
        on_ready(tray)
    try:
        return app.exec()
    finally:
        window.pages["wait"].cancel_pending()
        tray.icon.hide()
        worker.shutdown()
        single.release()


def main(argv: Sequence[str] | None = None) -> int:
    """The tray alone, for an agent running as a separate service (local API with the bearer token)."""
    parser = argparse.ArgumentParser(prog="pospal-tray", description="POSPal License Agent tray")
    parser.add_argument("--lang", choices=("en", "el"), help="UI language (default: the system's)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from agent.config import AgentSettings
    from agent.control import HttpControl

    control = HttpControl.from_settings(AgentSettings.from_env())
    return run_tray(control, lang=args.lang)


if __name__ == "__main__":
    sys.exit(main())
