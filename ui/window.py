"""The agent window: status card, message banner, a page for each task, and a settings footer.

The window observes the agent through the worker's ``status_changed``; it never keeps license state of
its own. Closing it only hides it: the tray (and the agent) keep running for the POS.
"""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import Qt, QUrl
from PySide6.QtGui import QCloseEvent, QDesktopServices, QGuiApplication
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFrame,
    QHBoxLayout,
    QLayout,
    QSizePolicy,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from ui import dialogs
from ui.activate import ActivatePage
from ui.autostart import AllUsersEntry
from ui.banner import Banner
from ui.buy import BuyPage, WaitPage
from ui.card import StatusCard
from ui.diagnostics import DiagnosticsPage
from ui.errortext import describe
from ui.icons import icon_for_status
from ui.move import MovePage
from ui.offline import OfflinePage
from ui.overview import OverviewPage
from ui.ownercode import OwnerCodeDialog, needs_owner
from ui.page import Page, button
from ui.present import Action
from ui.rename import RenameDialog
from ui.strings import LANGUAGE_NAMES, LANGUAGES, language, t
from ui.style import STYLESHEET
from ui.trial import TrialPage
from ui.updates import UpdatesPage
from ui.worker import ControlWorker

# Platforms without window stacking (headless rendering): raise() or new size hints would only log a
# warning there.
_NO_STACKING = ("offscreen", "minimal")
_MIN_HEIGHT = 540


def open_in_browser(url: str) -> None:
    """Open ``url`` in the default browser (the real opener; tests inject their own)."""
    QDesktopServices.openUrl(QUrl(url))


class AgentWindow(QWidget):
    """The owner's window. ``opener`` opens URLs; ``autostart`` backs the "Start at login" box."""

    def __init__(
        self,
        worker: ControlWorker,
        *,
        opener: Callable[[str], None] = open_in_browser,
        autostart=None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setObjectName("agentWindow")
        self.setStyleSheet(STYLESHEET)
        self.worker = worker
        self.opener = opener
        self.autostart = autostart
        self.status = None
        self.hide_on_close = True

        self.card = StatusCard()
        self.card.rename_requested.connect(self.rename_this_pc)
        self.rename_dialog: RenameDialog | None = None
        # The card always gets its natural height (the facts legible); the task panel takes what is left.
        self.card.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Fixed)
        self.banner = Banner()
        panel = self._build_pages()
        footer = self._build_footer()
        self._build_layout(panel, footer)
        self._connect(worker)

    def _build_pages(self) -> QFrame:
        """One page per task, stacked in the panel under the banner."""
        # The two pages the window drives itself, with their own types; all of them by name in `pages`.
        self.overview_page = OverviewPage(self)
        self.wait_page = WaitPage(self)
        self.updates_page = UpdatesPage(self)
        self.pages: dict[str, Page] = {
            "overview": self.overview_page,
            "trial": TrialPage(self),
            "buy": BuyPage(self),
            "wait": self.wait_page,
            "activate": ActivatePage(self),
            "move": MovePage(self),
            "offline": OfflinePage(self),
            "diagnostics": DiagnosticsPage(self),
            "updates": self.updates_page,
        }
        self.stack = QStackedWidget()
        for page in self.pages.values():
            self.stack.addWidget(page)
        panel = QFrame()
        panel.setObjectName("panel")
        panel_layout = QVBoxLayout(panel)
        panel_layout.setContentsMargins(18, 16, 18, 16)
        panel_layout.addWidget(self.stack)
        return panel

    def _build_footer(self) -> QHBoxLayout:
        """The settings footer: start at login, diagnostics, language."""
        self.autostart_box = QCheckBox()
        self.autostart_box.setObjectName("autostart")
        self.autostart_box.setVisible(self.autostart is not None)
        self._show_autostart()
        self.autostart_box.toggled.connect(self._toggle_autostart)
        self.diagnostics_button = button("link")
        self.diagnostics_button.clicked.connect(lambda: self.show_page("diagnostics"))
        self.updates_button = button("link")
        self.updates_button.clicked.connect(lambda: self.show_page("updates"))
        self.language_box = QComboBox()
        self.language_box.setObjectName("language")
        for code in LANGUAGES:
            self.language_box.addItem(LANGUAGE_NAMES[code], code)
        self.language_box.setCurrentIndex(LANGUAGES.index(language.code))
        self.language_box.currentIndexChanged.connect(self._choose_language)
        footer = QHBoxLayout()
        footer.addWidget(self.autostart_box)
        footer.addStretch(1)
        footer.addWidget(self.updates_button)
        footer.addWidget(self.diagnostics_button)
        footer.addWidget(self.language_box)
        return footer

    def _build_layout(self, panel: QFrame, footer: QHBoxLayout) -> None:
        """Card, banner, task panel and footer, top to bottom."""
        root = QVBoxLayout(self)
        root.setContentsMargins(20, 20, 20, 16)
        root.setSpacing(14)
        root.addWidget(self.card)
        root.addWidget(self.banner)
        root.addWidget(panel, 1)
        root.addLayout(footer)
        # A fixed minimum rather than the layout's: the pages swap in and out, and a window that
        # resizes itself with every page (and every status text) jumps around under the cursor.
        root.setSizeConstraint(QLayout.SizeConstraint.SetNoConstraint)
        self.setMinimumSize(560, _MIN_HEIGHT)
        self.resize(600, 560)

    def _connect(self, worker: ControlWorker) -> None:
        """Follow the worker's status and calls, and the language; then show the status known so far."""
        worker.status_changed.connect(self.on_status)
        worker.action_started.connect(self._activity)
        worker.action_finished.connect(self._call_finished)
        worker.action_failed.connect(self._call_failed)
        language.language_changed.connect(self.retranslate)
        self.retranslate()
        # The window is built on first open, usually after the first status was signalled: that signal
        # never reached it. Start from what the worker already has (connected above, so nothing newer
        # is lost). If the worker has none and is not fetching one (its first call failed), ask again:
        # the agent answers from memory.
        if worker.last_status is not None:
            self.on_status(worker.last_status)
        elif worker.started and not worker.is_pending("status"):
            worker.refresh()

    # --- Host interface for the pages -------------------------------------------------------------------
    def show_page(self, name: str) -> None:
        """Switch to a page and clear any message from the previous one."""
        if name != "wait" and self.stack.currentWidget() is self.pages["wait"]:
            self.wait_page.cancel_pending()
        self.clear_message()
        self.card.set_compact(name != "overview")
        page = self.pages[name]
        self.stack.setCurrentWidget(page)
        page.on_shown()

    @property
    def page(self) -> str:
        """The name of the page on screen."""
        current = self.stack.currentWidget()
        return next(name for name, page in self.pages.items() if page is current)

    def show_error(self, render: Callable[[], str] | str) -> None:
        """Show a failure under the status card."""
        self.banner.show_message("error", render if callable(render) else (lambda: render))
        self._fit()

    def show_info(self, render: Callable[[], str] | str) -> None:
        """Show a success under the status card."""
        self.banner.show_message("info", render if callable(render) else (lambda: render))
        self._fit()

    def clear_message(self) -> None:
        """Hide the banner."""
        self.banner.clear()
        self._fit()

    def _fit(self) -> None:
        # The window keeps its size as texts change (no jumping), but never gets shorter than what the
        # card, a long message and the pages need: below that, Qt squeezed the card's facts into each other.
        layout = self.layout()
        if layout is None:  # not laid out yet: nothing to fit
            return
        needed = layout.totalMinimumSize().height()
        if layout.hasHeightForWidth():  # the wrapped sentences need more height than their minimum says
            needed = max(needed, layout.totalHeightForWidth(max(self.width(), self.minimumWidth())))
        needed = max(_MIN_HEIGHT, needed)
        if QGuiApplication.platformName() in _NO_STACKING:
            # Headless rendering has no window manager for size hints (it warns): just grow the window.
            if self.height() < needed:
                self.resize(self.width(), needed)
        elif needed != self.minimumHeight():
            self.setMinimumHeight(needed)

    def open_url(self, url: str) -> None:
        """Open a URL with the injected opener."""
        self.opener(url)

    def confirm(self, title: str, text: str, yes_text: str) -> bool:
        """Ask before something that stops a till."""
        return dialogs.confirm(self, title, text, yes_text)

    def begin_waiting(self, checkout) -> None:
        """Checkout created: show the waiting view and open the payment page."""
        self.show_page("wait")
        self.wait_page.wait_for(checkout)

    # --- Reactions -------------------------------------------------------------------------------------
    def on_status(self, status) -> None:
        """A new status from the agent: update the card, the pages and the window icon."""
        self.status = status
        self.card.show_status(status)
        for page in self.pages.values():
            page.on_status(status)
        self.setWindowIcon(icon_for_status(status))
        self._fit()

    def _activity(self, _tag: str) -> None:
        # A sync in the background only earns a small hint on the card; the state stays on screen.
        self.card.set_syncing(self.worker.is_pending("sync"))

    def _call_finished(self, tag: str, _result) -> None:
        self._activity(tag)

    def _call_failed(self, tag: str, error) -> None:
        self._activity(tag)
        if tag == "status" and self.status is None:
            # No status to show at all (the agent is unreachable): say so rather than "Working…".
            self.show_error(lambda: describe(error))
        if needs_owner(error):
            self.ask_owner(tag)

    def ask_owner(self, tag: str) -> None:
        """Billing or a seat change needs the owner: ask for the e-mailed code, then run ``tag`` again."""
        email = self.status.customer_email if self.status is not None else None
        self.owner_dialog = OwnerCodeDialog(self.worker, email, self)
        self.owner_dialog.proven.connect(lambda: self._owner_proven(tag))
        self.owner_dialog.open()

    def rename_this_pc(self) -> None:
        """The card's "Rename…": this terminal's name, as the owner's list and the e-mails show it."""
        current = self.status.terminal_name if self.status is not None else None
        self.rename_dialog = RenameDialog(self.worker, current, None, self)
        self.rename_dialog.renamed.connect(lambda _terminals: self._renamed())
        self.rename_dialog.open()

    def _renamed(self) -> None:
        self.worker.refresh()
        name = self.rename_dialog.name.text().strip() if self.rename_dialog is not None else ""
        self.show_info(lambda: t("ui.rename.done", name=name))

    def _owner_proven(self, tag: str) -> None:
        self.clear_message()
        self.worker.retry(tag)

    def trigger(self, action: Action) -> None:
        """Bring the window up and start ``action`` (used by the tray's menu)."""
        self.bring_up()
        if self.page != "overview":
            self.show_page("overview")
        self.overview_page.trigger(action)

    def check_updates(self) -> None:
        """Bring the window up on the updates page and check now (the tray's "Check for updates")."""
        self.bring_up()
        if self.page != "updates":
            self.show_page("updates")
        self.updates_page.check_now()

    def bring_up(self) -> None:
        """Show, un-minimise and raise the window."""
        self.show()
        self.setWindowState(self.windowState() & ~Qt.WindowState.WindowMinimized)
        if QGuiApplication.platformName() not in _NO_STACKING:
            self.raise_()
            self.activateWindow()

    def retranslate(self, *_: object) -> None:
        """Re-read every text in the current language (wired to ``language_changed``)."""
        self.setWindowTitle(t("ui.app_name"))
        self.card.retranslate()
        self.banner.retranslate()
        for page in self.pages.values():
            page.retranslate()
        self.autostart_box.setText(t("ui.settings.autostart"))
        self._autostart_tooltip()
        self.diagnostics_button.setText(t("ui.action.diagnostics"))
        self.updates_button.setText(t("ui.action.updates"))
        self.language_box.setToolTip(t("ui.settings.language"))
        index = LANGUAGES.index(language.code)
        if self.language_box.currentIndex() != index:
            self.language_box.setCurrentIndex(index)
        self._fit()

    def _choose_language(self, index: int) -> None:
        """The owner picked a language: the window switches, and the agent keeps it for the POS too."""
        code = self.language_box.itemData(index)
        if code == language.code:
            return
        language.set(code)
        self.worker.call("set_language", "set_language", code)

    def _toggle_autostart(self, on: bool) -> None:
        if self.autostart is None:
            return
        try:
            self.autostart.set_enabled(on)
        except AllUsersEntry:
            # The installer's all-users entry still starts the agent: the box stays on, and says why.
            self._show_autostart()
            self.show_error(lambda: t("ui.autostart.all_users_off"))
        except OSError as exc:
            detail = str(exc)
            self._show_autostart(not on)
            self.show_error(lambda: t("ui.error.generic", detail=detail))
        else:
            self._show_autostart()

    def _show_autostart(self, checked: bool | None = None) -> None:
        """Show start-at-login as it really is (or ``checked``), with a tooltip for an all-users entry."""
        if self.autostart is None:
            return
        if checked is None:
            try:
                checked = self.autostart.is_enabled()
            except OSError:
                checked = self.autostart_box.isChecked()
        self.autostart_box.blockSignals(True)
        self.autostart_box.setChecked(checked)
        self.autostart_box.blockSignals(False)
        self._autostart_tooltip()

    def _autostart_tooltip(self) -> None:
        all_users = self.autostart is not None and bool(getattr(self.autostart, "all_users", False))
        self.autostart_box.setToolTip(t("ui.autostart.all_users_tip") if all_users else "")

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 (Qt's name)
        """Closing hides the window; the agent keeps running for the POS (and a payment wait goes on)."""
        if self.hide_on_close:
            event.ignore()
            self.hide()
        else:
            event.accept()
