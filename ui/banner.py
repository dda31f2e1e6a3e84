"""The message strip under the status card: a red line for a failure, a green one for a success.

It holds the translation key rather than the text where it can, so a language switch re-translates a
message that is still on screen.
"""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtWidgets import QLabel, QWidget


class Banner(QLabel):
    """A one-or-two-line message; hidden when there is nothing to say."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("banner")
        self.setWordWrap(True)
        self._render: Callable[[], str] | None = None
        self.kind = ""
        self.hide()

    def show_message(self, kind: str, render: Callable[[], str]) -> None:
        """Show ``render()`` as an ``"error"`` or ``"info"`` message; re-run on language change."""
        self.kind = kind
        self._render = render
        self.setProperty("kind", kind)
        self.style().unpolish(self)
        self.style().polish(self)
        self.setText(render())
        self.show()

    def clear(self) -> None:
        """Hide the message."""
        self._render = None
        self.kind = ""
        self.setText("")
        self.hide()

    def retranslate(self) -> None:
        """Re-render the message on screen in the current language."""
        if self._render is not None:
            self.setText(self._render())
