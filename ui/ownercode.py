"""The owner's code: one dialog that proves the owner's e-mail on this PC before billing or seat changes.

Staff can see the status and sync; opening billing, removing another terminal or choosing the terminals
that stay needs the owner (the server answers `owner_proof_required`). The window then shows this
dialog, worded as a step ("Confirm you are the owner": step 1, send a code; step 2, enter it), never as
an error: the owner's e-mail (filled in from the license), "Send code", the 6-digit code from the e-mail,
"Confirm". Once proven, the action that was refused runs again; the proof lasts 15 minutes on this PC.
"""

from __future__ import annotations

import re

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QDialog, QFormLayout, QHBoxLayout, QLabel, QLineEdit, QVBoxLayout, QWidget

from agent import messages
from ui.buy import valid_email
from ui.errortext import describe
from ui.page import button
from ui.strings import t

CODE = re.compile(r"^\d{6}$")
REFUSAL = "owner_proof_required"

messages.register(
    {
        "ui.owner.email": {"en": "Owner's e-mail", "el": "Email ιδιοκτήτη"},
        "ui.owner.code": {"en": "Code from the e-mail", "el": "Κωδικός από το email"},
        "ui.owner.send": {"en": "Send code", "el": "Αποστολή κωδικού"},
        "ui.owner.confirm": {"en": "Confirm", "el": "Επιβεβαίωση"},
        "ui.owner.sent": {
            "en": "If this is the owner's address, a code is on its way. It works for 15 minutes.",
            "el": "Αν αυτή είναι η διεύθυνση του ιδιοκτήτη, ο κωδικός έρχεται. Ισχύει για 15 λεπτά.",
        },
        "ui.owner.bad_email": {"en": "Enter a valid e-mail address.", "el": "Γράψτε ένα έγκυρο email."},
        "ui.owner.bad_code": {"en": "The code has 6 digits.", "el": "Ο κωδικός έχει 6 ψηφία."},
    }
)


def needs_owner(error: object) -> bool:
    """Whether an agent error is the server's "only the owner can do this" refusal."""
    return getattr(error, "code", None) == REFUSAL


class OwnerCodeDialog(QDialog):
    """E-mail, "Send code", code, "Confirm"; emits ``proven`` and closes once the server accepts the code."""

    proven = Signal()

    def __init__(self, worker, email: str | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("ownerCode")
        self.worker = worker
        self.setWindowTitle(t("ui.app_name"))
        self.title = QLabel(t("owner.title"))
        self.title.setObjectName("pageTitle")
        self.intro = QLabel(t("owner.step"))
        self.intro.setWordWrap(True)
        self.email = QLineEdit(email or "")
        self.email.setObjectName("owner_email")
        self.code = QLineEdit()
        self.code.setObjectName("owner_code")
        self.code.setMaxLength(7)
        self.code.setPlaceholderText("123456")
        self.message = QLabel("")
        self.message.setWordWrap(True)
        self.message.setObjectName("ownerMessage")
        self.send = button("owner_send")
        self.send.setText(t("ui.owner.send"))
        self.submit = button("owner_confirm", primary=True)
        self.submit.setText(t("ui.owner.confirm"))
        self.cancel = button("owner_cancel")
        self.cancel.setText(t("ui.cancel"))
        form = QFormLayout()
        form.addRow(t("ui.owner.email"), self.email)
        form.addRow(t("ui.owner.code"), self.code)
        row = QHBoxLayout()
        row.addWidget(self.cancel)
        row.addStretch(1)
        row.addWidget(self.send)
        row.addWidget(self.submit)
        layout = QVBoxLayout(self)
        for widget in (self.title, self.intro):
            layout.addWidget(widget)
        layout.addLayout(form)
        layout.addWidget(self.message)
        layout.addLayout(row)
        self.send.clicked.connect(self.send_code)
        self.submit.clicked.connect(self.confirm)
        self.code.returnPressed.connect(self.confirm)
        self.cancel.clicked.connect(self.reject)
        worker.action_finished.connect(self._finished)
        worker.action_failed.connect(self._failed)

    def _email(self) -> str:
        return self.email.text().strip().lower()

    def send_code(self) -> None:
        """Ask the server to e-mail the owner a code."""
        if not valid_email(self._email()):
            self.message.setText(t("ui.owner.bad_email"))
            return
        self.send.setEnabled(False)
        self.worker.call("owner_code", "request_code", self._email(), "owner")

    def confirm(self) -> None:
        """Prove the owner's e-mail on this PC with the typed code."""
        code = "".join(ch for ch in self.code.text() if ch.isdigit())
        if not valid_email(self._email()):
            self.message.setText(t("ui.owner.bad_email"))
            return
        if not CODE.match(code):
            self.message.setText(t("ui.owner.bad_code"))
            return
        self.submit.setEnabled(False)
        self.worker.call("owner_prove", "prove_owner", self._email(), code)

    def _finished(self, tag: str, _result) -> None:
        if tag == "owner_code":
            self.send.setEnabled(True)
            self.message.setText(t("ui.owner.sent"))
        elif tag == "owner_prove":
            self.submit.setEnabled(True)
            self.proven.emit()
            self.accept()

    def _failed(self, tag: str, error) -> None:
        if tag not in ("owner_code", "owner_prove"):
            return
        self.send.setEnabled(True)
        self.submit.setEnabled(True)
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
