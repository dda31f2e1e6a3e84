"""Activating this PC: the subscription's email, then the 6-digit code the server emails.

A wrong code keeps the owner on the code step with a clear sentence, so they can type it again. When
every seat is taken, the refusal's terminal list is shown right here, and removing one (proven by the
same email and code) retries the activation.
"""

from __future__ import annotations

import re

from PySide6.QtWidgets import (
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from ui.buy import valid_email
from ui.errortext import describe, seats_terminals
from ui.page import Host, Page, button, form_label, wrapped_label
from ui.strings import t
from ui.terminals import TerminalList

CODE = re.compile(r"^\d{6}$")


class ActivatePage(Page):
    """Two steps: email ("Send code"), then code ("Activate")."""

    def __init__(self, host: Host) -> None:
        super().__init__(host, "ui.activate.title")
        self.steps = QStackedWidget()
        # Step 1: email.
        first = QWidget()
        self.intro = wrapped_label("intro")
        self.email = QLineEdit()
        self.email.setObjectName("activate_email")
        self.email.setPlaceholderText("owner@example.com")
        self.email_label = form_label()
        form = QFormLayout()
        form.addRow(self.email_label, self.email)
        self.send = button("activate_send", primary=True)
        self.back = button("activate_back")
        first_layout = self._step(first, self.intro, form, self.back, self.send)
        self.by_file = button("activate_by_file")
        self.by_file.clicked.connect(lambda: host.show_page("offline"))
        first_layout.addWidget(self.by_file)
        first_layout.addStretch(1)
        # Step 2: code.
        second = QWidget()
        self.code_intro = wrapped_label("intro")
        self.code = QLineEdit()
        self.code.setObjectName("activate_code")
        self.code.setMaxLength(6)
        self.code.setPlaceholderText("123456")
        self.code_label = form_label()
        code_form = QFormLayout()
        code_form.addRow(self.code_label, self.code)
        self.submit = button("activate_submit", primary=True)
        self.resend = button("activate_resend")
        second_layout = self._step(second, self.code_intro, code_form, self.resend, self.submit)
        self.terminals = TerminalList()
        second_layout.addWidget(self.terminals)
        second_layout.addStretch(1)
        self.steps.addWidget(first)
        self.steps.addWidget(second)
        self.layout_.addWidget(self.steps)

        self.send.clicked.connect(self.send_code)
        self.email.returnPressed.connect(self.send_code)
        self.back.clicked.connect(lambda: host.show_page("overview"))
        self.submit.clicked.connect(self.activate)
        self.code.returnPressed.connect(self.activate)
        self.resend.clicked.connect(self.send_code)
        self.terminals.remove_requested.connect(self._remove)
        self._email = ""

    @staticmethod
    def _step(page: QWidget, intro: QLabel, form: QFormLayout, left, right):
        layout = QHBoxLayout()
        layout.addWidget(left)
        layout.addStretch(1)
        layout.addWidget(right)
        outer = QVBoxLayout(page)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.setSpacing(10)
        outer.addWidget(intro)
        outer.addLayout(form)
        outer.addLayout(layout)
        return outer

    def on_shown(self) -> None:
        """Always start at the email step."""
        self.steps.setCurrentIndex(0)
        self.terminals.set_terminals([])
        self.code.clear()

    @property
    def step(self) -> str:
        """``"email"`` or ``"code"``."""
        return "email" if self.steps.currentIndex() == 0 else "code"

    def retranslate(self) -> None:
        """Texts in the current language."""
        super().retranslate()
        self.intro.setText(t("ui.activate.intro"))
        self.email_label.setText(t("ui.field.email"))
        self.code_label.setText(t("ui.field.code"))
        self.code_intro.setText(t("ui.activate.code_intro", email=self._email))
        self.send.setText(t("ui.activate.send"))
        self.back.setText(t("ui.back"))
        self.submit.setText(t("ui.activate.submit"))
        self.resend.setText(t("ui.activate.resend"))
        self.by_file.setText(t("ui.activate.by_file"))
        self.terminals.retranslate()

    def send_code(self) -> None:
        """Ask the server to email a code."""
        email = self.email.text().strip()
        if not valid_email(email):
            self.host.show_error(lambda: t("ui.error.email"))
            return
        self.host.clear_message()
        self._email = email
        self.send.setEnabled(False)
        self.resend.setEnabled(False)
        self.host.worker.call("request_code", "request_code", email, "activate")

    def activate(self) -> None:
        """Activate with the typed code."""
        code = self.code.text().strip()
        if not CODE.match(code):
            self.host.show_error(lambda: t("ui.error.code_format"))
            return
        self.host.clear_message()
        self.submit.setEnabled(False)
        self.host.worker.call("activate", "activate", self._email, code)

    def _remove(self, machine_id: str, name: str) -> None:
        if not self.host.confirm(t("ui.remove.title", name=name), t("ui.remove.text"), t("ui.move.remove")):
            return
        self.host.worker.call(
            f"activate_remove:{machine_id}",
            "remove_terminal",
            machine_id,
            self._email,
            self.code.text().strip(),
        )

    def finished(self, tag: str, result) -> None:
        """Move on: code sent → code step; activated → overview; terminal removed → retry activating."""
        if tag == "request_code":
            self.send.setEnabled(True)
            self.resend.setEnabled(True)
            self.steps.setCurrentIndex(1)
            self.retranslate()
            self.code.setFocus()
        elif tag == "activate":
            self.submit.setEnabled(True)
            self.host.show_page("overview")
            self.host.show_info(lambda: t("ui.activate.done"))
        elif tag.startswith("activate_remove:"):
            self.terminals.drop(tag.split(":", 1)[1])
            self.activate()

    def failed(self, tag: str, error) -> None:
        """Explain the refusal and stay on the step that can fix it."""
        if tag == "request_code":
            self.send.setEnabled(True)
            self.resend.setEnabled(True)
        elif tag == "activate":
            self.submit.setEnabled(True)
            self.terminals.set_terminals(seats_terminals(error))
            self.code.selectAll()
        elif not tag.startswith("activate_remove:"):
            return
        self.host.show_error(lambda: describe(error))
