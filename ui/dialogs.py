"""Confirmation questions (Quit, Deactivate, Remove terminal) with buttons in the UI's language.

Qt's standard Yes/No buttons would stay English without Qt's own translations, and "Yes" says less than
"Deactivate", so the buttons carry the action's name.
"""

from __future__ import annotations

from PySide6.QtWidgets import QMessageBox, QWidget

from ui.strings import t


def confirm(
    parent: QWidget | None,
    title: str,
    text: str,
    yes_text: str,
    no_text: str | None = None,
    *,
    danger: bool = True,
) -> bool:
    """Ask a yes/no question; True only when the person picked ``yes_text``. "No" is the default."""
    box = QMessageBox(parent)
    box.setIcon(QMessageBox.Icon.Warning if danger else QMessageBox.Icon.Question)
    box.setWindowTitle(t("ui.app_name"))
    box.setText(title)
    box.setInformativeText(text)
    yes = box.addButton(yes_text, QMessageBox.ButtonRole.AcceptRole)
    no = box.addButton(no_text or t("ui.cancel"), QMessageBox.ButtonRole.RejectRole)
    box.setDefaultButton(no)
    box.setEscapeButton(no)
    box.exec()
    return box.clickedButton() is yes
