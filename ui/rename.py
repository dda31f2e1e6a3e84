"""Renaming a terminal (issue 27): one small dialog for this PC (from the status card) or, as the owner,
for another terminal (from the terminal list).

The name is what the owner's terminal list and the e-mails show, so two tills made from one image (both
called after their host, `vm`) can be told apart. Before activation it is kept on this PC and sent with the
activation; afterwards the server renames it. Renaming another terminal needs the owner: the window's
owner dialog asks for the code (the server's `owner_proof_required`) and then runs the rename again.
"""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QDialog, QHBoxLayout, QLabel, QLineEdit, QVBoxLayout, QWidget

from agent import messages
from ui.errortext import describe
from ui.page import button
from ui.strings import t

TAG = "rename"
MAX_NAME = 100
BUTTON = "ui.rename.button"  # the "Rename…" of the status card and of the terminal list's rows

messages.register(
    {
        BUTTON: {"en": "Rename…", "el": "Μετονομασία…"},
        "ui.rename.title": {"en": "Rename this terminal", "el": "Μετονομασία τερματικού"},
        "ui.rename.other_title": {"en": "Rename “{name}”", "el": "Μετονομασία «{name}»"},
        "ui.rename.intro": {
            "en": "The name the owner's terminal list and the e-mails show, e.g. “Bar” or “Kitchen”.",
            "el": "Το όνομα που δείχνουν η λίστα τερματικών του ιδιοκτήτη και τα email, π.χ. «Μπαρ» ή "
            "«Κουζίνα».",
        },
        "ui.rename.save": {"en": "Save", "el": "Αποθήκευση"},
        "ui.rename.empty": {"en": "Give the terminal a name.", "el": "Δώστε ένα όνομα στο τερματικό."},
        "ui.rename.done": {
            "en": "The terminal is now called “{name}”.",
            "el": "Το τερματικό λέγεται τώρα «{name}».",
        },
    }
)


class RenameDialog(QDialog):
    """A name field and "Save"; emits ``renamed(terminals)`` and closes once the agent renamed it.

    ``machine_id`` None renames this PC; another id renames that terminal (the owner's).
    """

    renamed = Signal(object)

    def __init__(
        self, worker, current: str | None, machine_id: str | None = None, parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self.setObjectName("renameTerminal")
        self.worker = worker
        self.machine_id = machine_id
        self.setWindowTitle(t("ui.app_name"))
        title = t("ui.rename.other_title", name=current or machine_id) if machine_id else t("ui.rename.title")
        self.title = QLabel(title)
        self.title.setObjectName("pageTitle")
        self.intro = QLabel(t("ui.rename.intro"))
        self.intro.setWordWrap(True)
        self.name = QLineEdit(current or "")
        self.name.setObjectName("terminal_name")
        self.name.setMaxLength(MAX_NAME)
        self.message = QLabel("")
        self.message.setWordWrap(True)
        self.message.setObjectName("renameMessage")
        self.save = button("rename_save", primary=True)
        self.save.setText(t("ui.rename.save"))
        self.cancel = button("rename_cancel")
        self.cancel.setText(t("ui.cancel"))
        row = QHBoxLayout()
        row.addWidget(self.cancel)
        row.addStretch(1)
        row.addWidget(self.save)
        layout = QVBoxLayout(self)
        for widget in (self.title, self.intro, self.name, self.message):
            layout.addWidget(widget)
        layout.addLayout(row)
        self.save.clicked.connect(self.submit)
        self.name.returnPressed.connect(self.submit)
        self.cancel.clicked.connect(self.reject)
        worker.action_finished.connect(self._finished)
        worker.action_failed.connect(self._failed)

    def submit(self) -> None:
        """Send the new name to the agent (off the UI thread)."""
        name = self.name.text().strip()
        if not name:
            self.message.setText(t("ui.rename.empty"))
            return
        self.save.setEnabled(False)
        self.message.setText("")
        self.worker.call(TAG, "rename_terminal", name, self.machine_id)

    def _finished(self, tag: str, result) -> None:
        if tag != TAG:
            return
        self.save.setEnabled(True)
        self.renamed.emit(list(result or []))
        self.accept()

    def _failed(self, tag: str, error) -> None:
        if tag != TAG:
            return
        self.save.setEnabled(True)
        if getattr(error, "code", None) != "owner_proof_required":  # the owner's dialog takes over
            self.message.setText(describe(error))

    def done(self, result: int) -> None:  # noqa: D102 (Qt's name; disconnect so a closed dialog hears nothing)
        for signal, slot in (
            (self.worker.action_finished, self._finished),
            (self.worker.action_failed, self._failed),
        ):
            try:
                signal.disconnect(slot)
            except (RuntimeError, TypeError):
                pass
        super().done(result)
