"""The tray icon: what staff see during service.

A coloured shield (the state), a one-line tooltip, and a short menu: the status line, Open, Sync now,
Buy or Manage subscription, Check for updates (on demand; the window's updates page shows what it found),
Quit. Quit asks first, because the POS depends on the agent. A notification pops when the state gets
worse or the days left cross 5, 3 or 1; otherwise the tray stays quiet.

The window is built the first time it is needed (Open, Buy, Manage, a second launch): most days nobody
opens it, and the icon shows sooner and the process stays smaller without it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QAction, QFont
from PySide6.QtWidgets import QMenu, QSystemTrayIcon

from ui import dialogs
from ui.icons import icon_for_kind, icon_for_state
from ui.notify import Notice, notice_for
from ui.present import Action, present
from ui.strings import language, t
from ui.updates import CHECK_TAG
from ui.worker import ControlWorker


class Tray(QObject):
    """The system-tray icon and its menu, driven by the worker's status updates."""

    notified = Signal(object)  # the Notice just shown (tests and logs observe it)

    def __init__(
        self, worker: ControlWorker, *, window_factory: Callable[[], object], quit_app: Callable[[], None]
    ) -> None:
        super().__init__(worker)
        self.worker = worker
        self._window_factory = window_factory
        self._window: Any = None  # the AgentWindow, built on first use
        self._quit_app = quit_app
        self.status = None
        self.icon = QSystemTrayIcon(self)
        self.icon.setIcon(icon_for_state("license_missing"))
        self.menu = QMenu()
        self.status_action = QAction(self.menu)
        bold = QFont()
        bold.setBold(True)
        self.status_action.setFont(bold)
        self.open_action = QAction(self.menu)
        self.sync_action = QAction(self.menu)
        self.subscription_action = QAction(self.menu)
        self.updates_action = QAction(self.menu)
        self.quit_action = QAction(self.menu)
        self.menu.addAction(self.status_action)
        self.menu.addSeparator()
        self.menu.addAction(self.open_action)
        self.menu.addAction(self.sync_action)
        self.menu.addAction(self.subscription_action)
        self.menu.addAction(self.updates_action)
        self.menu.addSeparator()
        self.menu.addAction(self.quit_action)
        self.icon.setContextMenu(self.menu)

        # The status line is also a way in: clicking what is wrong opens the window that fixes it.
        self.status_action.triggered.connect(self.open_window)
        self.open_action.triggered.connect(self.open_window)
        self.sync_action.triggered.connect(lambda: self.worker.call("sync", "sync_now"))
        self.subscription_action.triggered.connect(self._subscription)
        # On demand: the window's updates page shows what the check found (ui/updates.py).
        self.updates_action.triggered.connect(lambda: self.window.check_updates())
        self.quit_action.triggered.connect(self.ask_quit)
        self.icon.activated.connect(self._activated)
        self.worker.status_changed.connect(self.on_status)
        self.worker.action_started.connect(lambda _tag: self._refresh())
        self.worker.action_finished.connect(lambda _tag, _r: self._refresh())
        self.worker.action_failed.connect(lambda _tag, _e: self._refresh())
        language.language_changed.connect(self._language_changed)
        self._refresh()

    @property
    def window(self):
        """The agent window, built (and given the current status) on first use."""
        if self._window is None:
            self._window = self._window_factory()
            if self.status is not None and self._window.status is None:
                self._window.on_status(self.status)
        return self._window

    @property
    def has_window(self) -> bool:
        """Whether the window was built yet."""
        return self._window is not None

    def open_window(self) -> None:
        """Show the window (building it if needed)."""
        self.window.bring_up()

    def _language_changed(self, _code: str) -> None:
        self._refresh()

    def show(self) -> None:
        """Put the icon in the system tray."""
        self.icon.show()

    def on_status(self, status) -> None:
        """A new status: icon, tooltip, menu, and a notification when things got worse."""
        previous, self.status = self.status, status
        self._refresh()
        notice = notice_for(previous, status)
        if notice is not None:
            self._notify(notice)

    def _notify(self, notice: Notice) -> None:
        icons = QSystemTrayIcon.MessageIcon
        kind = icons.Critical if notice.critical else icons.Warning
        if QSystemTrayIcon.supportsMessages() and self.icon.isVisible():
            self.icon.showMessage(notice.title, notice.body, kind, 15000)
        self.notified.emit(notice)

    def subscription_label(self) -> tuple[str, bool]:
        """("Buy subscription" or "Manage subscription", enabled) for the current state."""
        if self.status is None:
            return t("ui.action.buy"), False
        view = present(self.status)
        manage = view.manage or (Action.BILLING in view.actions and Action.BUY not in view.actions)
        if manage:
            return t("ui.action.manage"), Action.BILLING in view.actions
        return t("ui.action.buy"), Action.BUY in view.actions

    def _refresh(self) -> None:
        self.open_action.setText(t("ui.action.open"))
        self.quit_action.setText(t("ui.action.quit"))
        checking = self.worker.is_pending(CHECK_TAG)
        self.updates_action.setText(t("ui.update.checking" if checking else "ui.action.check_updates"))
        self.updates_action.setEnabled(not checking)
        label, enabled = self.subscription_label()
        self.subscription_action.setText(label)
        self.subscription_action.setEnabled(enabled)
        syncing = self.worker.is_pending("sync")
        self.sync_action.setText(t("ui.action.syncing" if syncing else "ui.action.sync"))
        if self.status is None:
            self.status_action.setText(t("ui.busy"))
            self.icon.setToolTip(t("ui.app_name"))
            self.sync_action.setEnabled(False)
            return
        view = present(self.status)
        self.status_action.setText(view.headline)
        self.status_action.setIcon(icon_for_kind(view.kind))
        self.icon.setIcon(icon_for_kind(view.kind))
        self.icon.setToolTip(view.tooltip)
        self.sync_action.setEnabled(Action.SYNC in view.actions and not syncing)

    def _subscription(self) -> None:
        label, _ = self.subscription_label()
        self.window.trigger(Action.BILLING if label == t("ui.action.manage") else Action.BUY)

    def _activated(self, reason: QSystemTrayIcon.ActivationReason) -> None:
        if reason in (QSystemTrayIcon.ActivationReason.Trigger, QSystemTrayIcon.ActivationReason.DoubleClick):
            self.open_window()

    def ask_quit(self) -> bool:
        """Quit only after the person confirms; returns whether the app is quitting."""
        if not dialogs.confirm(
            None, t("ui.quit.title"), t("ui.quit.text"), t("ui.quit.yes"), t("ui.quit.no")
        ):
            return False
        self._quit_app()
        return True
