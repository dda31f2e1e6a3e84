"""What every page of the agent window shares: the window it lives in, and re-translation.

A page (overview, buy, activate, move, diagnostics) asks its ``Host`` (the window) to run agent calls,
switch pages, show a message or open a URL. Pages never talk to the agent directly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel, QPushButton, QVBoxLayout, QWidget

from ui.strings import t
from ui.worker import ControlWorker


class Host(Protocol):
    """The window, as its pages see it."""

    worker: ControlWorker

    def show_page(self, name: str) -> None:
        """Switch to the named page (overview, trial, buy, wait, activate, move, diagnostics)."""

    def show_error(self, render: Callable[[], str] | str) -> None:
        """Show a failure in the banner (`render` is called again when the language changes)."""

    def show_info(self, render: Callable[[], str] | str) -> None:
        """Show a success in the banner (`render` is called again when the language changes)."""

    def begin_waiting(self, checkout: Any) -> None:
        """Checkout created: show the waiting view and open the payment page."""

    def clear_message(self) -> None:
        """Hide the banner."""

    def open_url(self, url: str) -> None:
        """Open a URL in the browser (injectable for tests)."""

    def confirm(self, title: str, text: str, yes_text: str) -> bool:
        """Ask before something that stops the till."""


class Page(QWidget):
    """A page of the window's stack, with a title and a body laid out top to bottom."""

    def __init__(self, host: Host, title_key: str | None = None) -> None:
        super().__init__()
        self.host = host
        self._title_key = title_key
        self.layout_ = QVBoxLayout(self)
        self.layout_.setContentsMargins(0, 0, 0, 0)
        self.layout_.setSpacing(10)
        self.title = QLabel()
        self.title.setObjectName("pageTitle")
        if title_key:
            self.layout_.addWidget(self.title)
        else:
            self.title.hide()
        host.worker.action_finished.connect(self._finished)
        host.worker.action_failed.connect(self._failed)

    def retranslate(self) -> None:
        """Re-read every text in the current language (subclasses extend this)."""
        if self._title_key:
            self.title.setText(t(self._title_key))

    def on_status(self, status) -> None:
        """A new LicenseStatus arrived (subclasses react if they care)."""

    def on_shown(self) -> None:
        """The page was just switched to."""

    def _finished(self, tag: str, result) -> None:
        self.finished(tag, result)

    def _failed(self, tag: str, error) -> None:
        self.failed(tag, error)

    def finished(self, tag: str, result) -> None:
        """An agent call finished (any tag; pages pick theirs)."""

    def failed(self, tag: str, error) -> None:
        """An agent call failed (any tag; pages pick theirs)."""


def button(object_name: str = "", primary: bool = False) -> QPushButton:
    """A push button styled by the window's stylesheet; ``primary`` is the one obvious next step."""
    b = QPushButton()
    b.setObjectName(object_name or ("primary" if primary else "secondary"))
    b.setProperty("primary", primary)
    b.setCursor(Qt.CursorShape.PointingHandCursor)
    b.setMinimumHeight(36)
    return b


def form_label() -> QLabel:
    """A form field's label, centred on the (taller, padded) input beside it."""
    label = QLabel()
    label.setMinimumHeight(34)
    label.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
    return label


def wrapped_label(object_name: str = "") -> QLabel:
    """A word-wrapped label for sentences."""
    label = QLabel()
    label.setWordWrap(True)
    if object_name:
        label.setObjectName(object_name)
    return label
