"""The window's main page: the actions that fit the current state, the most useful one first.

Only actions that make sense are shown (``ui.present.actions_for``); the first is the primary button. The
page also runs the one-click actions (sync, trial, billing portal, pause and resume) and reports how they
went.
"""

from __future__ import annotations

from PySide6.QtWidgets import QGridLayout, QPushButton

from ui.errortext import describe
from ui.page import Host, Page, button
from ui.present import Action, actions_for
from ui.season import PauseDialog, done_text
from ui.strings import t

_LABELS = {
    Action.SYNC: "ui.action.sync",
    Action.TRIAL: "ui.action.trial",
    Action.BUY: "ui.action.buy",
    Action.ACTIVATE: "ui.action.activate",
    Action.BILLING: "ui.action.billing",
    Action.MOVE: "ui.action.move",
    Action.CONFIRM: "ui.action.confirm_payment",
    Action.PAUSE: "ui.action.pause",
    Action.RESUME: "ui.action.resume",
}
_TAGS = {
    Action.SYNC: "sync",
    Action.TRIAL: "trial",
    Action.BILLING: "portal",
    Action.PAUSE: "pause",
    Action.RESUME: "resume",
}
_DONE = {
    "sync": "ui.sync.done",
    "trial": "ui.trial.done",
    "resume": "ui.resume.done",
}


class OverviewPage(Page):
    """Action buttons for the current state."""

    def __init__(self, host: Host) -> None:
        super().__init__(host)
        self._state = None
        self._reason = None
        self._confirm_url: str | None = None
        self.pause_dialog: PauseDialog | None = None
        self.buttons: dict[Action, QPushButton] = {}
        for action in Action:
            b = button(f"action_{action.value}")
            b.clicked.connect(lambda _=False, a=action: self.trigger(a))
            self.buttons[action] = b
        self.grid = QGridLayout()
        self.grid.setHorizontalSpacing(10)
        self.grid.setVerticalSpacing(10)
        self.layout_.addLayout(self.grid)
        self.layout_.addStretch(1)
        host.worker.action_started.connect(self._started)
        self._arrange(())

    def visible_actions(self) -> tuple[Action, ...]:
        """The actions offered right now, primary first."""
        return actions_for(self._state, self._reason) if self._state else ()

    def on_status(self, status) -> None:
        """Re-arrange the buttons for the new state."""
        self._state, self._reason = status.license_state, status.reason
        self._confirm_url = getattr(status, "payment_action_url", None)
        self._arrange(self.visible_actions())
        self.retranslate()

    def _arrange(self, actions: tuple[Action, ...]) -> None:
        for b in self.buttons.values():
            self.grid.removeWidget(b)
            b.hide()
        for i, action in enumerate(actions):
            b = self.buttons[action]
            b.setProperty("primary", i == 0)
            b.style().unpolish(b)
            b.style().polish(b)
            if i == 0:
                self.grid.addWidget(b, 0, 0, 1, 2)
            else:
                self.grid.addWidget(b, 1 + (i - 1) // 2, (i - 1) % 2)
            b.show()
        self._refresh_enabled()

    def retranslate(self) -> None:
        """Button texts in the current language."""
        super().retranslate()
        for action, b in self.buttons.items():
            key = _LABELS[action]
            if action is Action.BILLING and self._state == "licensed_renewal_required":
                key = "ui.action.fix_card"
            if action is Action.SYNC and self.host.worker.is_pending("sync"):
                key = "ui.action.syncing"
            b.setText(t(key))

    def trigger(self, action: Action) -> None:
        """Do ``action``: run it in the background, or open its page."""
        self.host.clear_message()
        if action is Action.SYNC:
            self.host.worker.call("sync", "sync_now")
        elif action is Action.TRIAL:
            self.host.show_page("trial")
        elif action is Action.BILLING:
            self.host.worker.call("portal", "portal_url")
        elif action is Action.BUY:
            self.host.show_page("buy")
        elif action is Action.ACTIVATE:
            self.host.show_page("activate")
        elif action is Action.MOVE:
            self.host.show_page("move")
        elif action is Action.PAUSE:
            # Until when (a date, or until resumed) is asked in a small dialog; it runs the pause itself.
            self.pause_dialog = PauseDialog(self.host.worker, self)
            self.pause_dialog.open()
        elif action is Action.RESUME:
            self.host.worker.call("resume", "resume_subscription")
        elif action is Action.CONFIRM:
            if self._confirm_url:
                self.host.open_url(self._confirm_url)  # the invoice page where the bank asks to approve
            else:
                self.host.worker.call("portal", "portal_url")

    def _started(self, tag: str) -> None:
        if tag in _TAGS.values():
            self._refresh_enabled()
            self.retranslate()

    def _refresh_enabled(self) -> None:
        for action, tag in _TAGS.items():
            self.buttons[action].setEnabled(not self.host.worker.is_pending(tag))

    def finished(self, tag: str, result) -> None:
        """Report a one-click action's success; open the billing portal in the browser."""
        if tag not in _TAGS.values():
            return
        self._refresh_enabled()
        self.retranslate()
        if tag == "portal":
            self.host.open_url(str(result))
        elif tag == "pause":
            until = self.pause_dialog.chosen if self.pause_dialog is not None else None
            self.host.show_info(lambda: done_text(until))
        else:
            key = _DONE[tag]
            self.host.show_info(lambda: t(key))

    def failed(self, tag: str, error) -> None:
        """Explain a one-click action's failure."""
        if tag not in _TAGS.values():
            return
        self._refresh_enabled()
        self.retranslate()
        self.host.show_error(lambda: describe(error))
