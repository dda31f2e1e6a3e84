"""Render the agent window in each main state, and the tray menu, to PNG (offscreen, QWidget.grab).

    .venv/bin/python scripts/screenshots.py [OUT_DIR]     (default: docs/screenshots)

The window is driven by the test FakeControl, so the pictures show exactly what the tests check.

The real-tray picture (docs/screenshots/tray-xvfb.png) comes from a real `pospal-agent run` under Xvfb:

    apt-get install -y xvfb trayer imagemagick xdotool x11-utils libxcb-icccm4 libxcb-keysyms1 libxcb-cursor0
    Xvfb :99 -screen 0 1100x700x24 & export DISPLAY=:99
    trayer --edge bottom --align right --widthtype percent --width 100 --height 36 --tint 0x1f2933 \
        --transparent true --alpha 0 &
    QT_QPA_PLATFORM=xcb pospal-agent run &        # pointed at a demo server, then bought via the sandbox
    xdotool mousemove <icon x> <icon y> click 1   # opens the window; click 3 opens the menu
    import -window root shot.png
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from PySide6.QtCore import QCoreApplication, QPoint, Qt  # noqa: E402
from PySide6.QtGui import QColor, QPainter, QPixmap  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from agent.errors import ServerRefused  # noqa: E402
from tests.ui.fakes import FakeControl, make_status  # noqa: E402
from ui.icons import icon_for_kind  # noqa: E402
from ui.present import Kind  # noqa: E402
from ui.strings import language  # noqa: E402
from ui.tray import Tray  # noqa: E402
from ui.window import AgentWindow  # noqa: E402
from ui.worker import ControlWorker  # noqa: E402

STATES = {
    "active": make_status("licensed_active", days_left=27),
    "trial": make_status("trial_active"),
    "grace": make_status("licensed_grace", days_left=3),
    "renewal": make_status("licensed_renewal_required", days_left=4),
    "expired": make_status("trial_expired"),
    "missing": make_status("license_missing"),
    "error": make_status("license_error", reason="machine_changed"),
}


def settle(until=lambda: True, seconds: float = 3.0) -> None:
    """Process events until ``until()`` or the time is up."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        QCoreApplication.processEvents()
        if until():
            QCoreApplication.processEvents()
            return
        time.sleep(0.01)


def shoot(widget, path: Path) -> None:
    """Grab ``widget`` to ``path``."""
    settle(seconds=0.05)
    widget.grab().save(str(path))
    print(path)


def tray_menu_picture(tray: Tray, path: Path) -> None:
    """The tray menu as it pops up, with the tray icon drawn on a taskbar strip under it."""
    menu = tray.menu
    menu.ensurePolished()
    menu.adjustSize()
    shot = menu.grab()
    pad, bar = 14, 40
    out = QPixmap(shot.width() + pad * 2, shot.height() + pad * 2 + bar)
    out.fill(QColor("#dfe3e8"))
    painter = QPainter(out)
    painter.drawPixmap(QPoint(pad, pad), shot)
    painter.fillRect(0, out.height() - bar, out.width(), bar, QColor("#1f2933"))
    icon = tray.icon.icon().pixmap(24, 24)
    painter.drawPixmap(out.width() - pad - 24, out.height() - bar + 8, icon)
    painter.end()
    out.save(str(path))
    print(path)


def main() -> int:
    """Render every picture."""
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/screenshots")
    out.mkdir(parents=True, exist_ok=True)
    app = QApplication.instance() or QApplication([])
    app.setStyle("Fusion")
    control = FakeControl("licensed_active")
    worker = ControlWorker(control)
    opened: list[str] = []
    window = AgentWindow(worker, opener=opened.append)
    tray = Tray(worker, window_factory=lambda: window, quit_app=app.quit)
    worker.start()
    window.show()
    settle(lambda: window.status is not None)

    def state(name: str, status) -> None:
        control.set_status(status)
        settle(lambda: window.status is status)
        window.show_page("overview")
        shoot(window, out / f"window-{name}.png")

    for name, status in STATES.items():
        state(name, status)

    control.set_status(STATES["active"])
    settle(lambda: window.status is STATES["active"])
    tray_menu_picture(tray, out / "tray-menu-active.png")
    control.set_status(STATES["grace"])
    settle(lambda: window.status is STATES["grace"])
    tray_menu_picture(tray, out / "tray-menu-grace.png")

    control.set_status(STATES["missing"])
    settle(lambda: window.status is STATES["missing"])
    window.show_page("trial")
    window.pages["trial"].email.setText("maria@taverna-kyma.gr")
    shoot(window, out / "window-trial.png")
    window.show_page("buy")
    window.pages["buy"].email.setText("maria@taverna-kyma.gr")
    window.pages["buy"].restaurant.setText("Taverna Kyma")
    shoot(window, out / "window-buy.png")
    window.pages["buy"].start()
    settle(lambda: window.page == "wait")
    shoot(window, out / "window-buy-waiting.png")
    window.pages["wait"].cancel()

    window.show_page("activate")
    page = window.pages["activate"]
    page.email.setText("maria@taverna-kyma.gr")
    page.send_code()
    settle(lambda: page.step == "code")
    page.code.setText("111111")
    page.activate()
    settle(lambda: window.banner.kind == "error")
    shoot(window, out / "window-activate-wrong-code.png")
    control.seats_full = True
    control.fail_next["activate"] = ServerRefused(
        "seats_full",
        "full",
        {
            "terminals": [
                {"machine_id": "m_bar", "terminal_name": "Beach bar", "last_seen": "2026-10-17T12:00:00Z"},
                {"machine_id": "m_back", "terminal_name": "Back office", "last_seen": "2026-11-25T21:40:00Z"},
            ]
        },
    )
    page.code.setText("424242")
    page.activate()
    settle(lambda: page.terminals.isVisible())
    shoot(window, out / "window-activate-seats-full.png")

    control.set_status(STATES["active"])
    settle(lambda: window.status is STATES["active"])
    window.show_page("move")
    settle(lambda: window.pages["move"].terminals.isVisible())
    shoot(window, out / "window-move.png")
    window.show_page("diagnostics")
    settle(lambda: window.pages["diagnostics"].diagnostics is not None)
    shoot(window, out / "window-diagnostics.png")

    language.set("el")
    for name in ("active", "renewal"):
        state(f"{name}-el", STATES[name])
    tray_menu_picture(tray, out / "tray-menu-el.png")
    language.set("en")

    icons = QPixmap(5 * 72, 72)
    icons.fill(Qt.GlobalColor.transparent)
    painter = QPainter(icons)
    for i, kind in enumerate(Kind):
        painter.drawPixmap(i * 72 + 4, 4, icon_for_kind(kind).pixmap(64, 64))
    painter.end()
    icons.save(str(out / "icons.png"))
    print(out / "icons.png")

    control.paid.set()
    worker.shutdown(3000)
    window.hide_on_close = False
    window.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
