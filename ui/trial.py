"""Starting the 30-day trial: one button, and an optional email for the reminder before it ends.

The email is optional so a busy owner can start with one more click; when given, the server sends one
reminder 3 days before the trial ends (in the window's language).
"""

from __future__ import annotations

from PySide6.QtWidgets import QFormLayout, QHBoxLayout, QLineEdit

from ui.buy import valid_email
from ui.page import Host, Page, button, form_label, wrapped_label
from ui.strings import t


class TrialPage(Page):
    """An optional email, then "Start trial"."""

    def __init__(self, host: Host) -> None:
        super().__init__(host, "ui.trial.title")
        self.intro = wrapped_label("intro")
        self.email = QLineEdit()
        self.email.setObjectName("trial_email")
        self.email_label = form_label()
        form = QFormLayout()
        form.addRow(self.email_label, self.email)
        self.submit = button("trial_submit", primary=True)
        self.back = button("trial_back")
        self.submit.clicked.connect(self.start)
        self.email.returnPressed.connect(self.start)
        self.back.clicked.connect(lambda: host.show_page("overview"))
        row = QHBoxLayout()
        row.addWidget(self.back)
        row.addStretch(1)
        row.addWidget(self.submit)
        self.layout_.addWidget(self.intro)
        self.layout_.addLayout(form)
        self.layout_.addLayout(row)
        self.layout_.addStretch(1)

    def retranslate(self) -> None:
        """Texts in the current language."""
        super().retranslate()
        self.intro.setText(t("ui.trial.intro"))
        self.email_label.setText(t("ui.field.email_optional"))
        self.email.setPlaceholderText("owner@example.com")
        self.submit.setText(t("ui.trial.start"))
        self.back.setText(t("ui.back"))

    def start(self) -> None:
        """Check the email if one was typed, then start the trial in the background."""
        email = self.email.text().strip()
        if email and not valid_email(email):
            self.host.show_error(lambda: t("ui.error.email"))
            return
        self.host.clear_message()
        self.submit.setEnabled(False)
        self.host.worker.call("trial", "start_trial", email or None)

    def finished(self, tag: str, result) -> None:
        """Trial started: back to the overview, which says so."""
        if tag != "trial":
            return
        self.submit.setEnabled(True)
        self.host.show_page("overview")  # clears the banner, so say it again there
        self.host.show_info(lambda: t("ui.trial.done"))

    def failed(self, tag: str, error) -> None:
        """The overview's banner explains the failure; stay here so the owner can try again."""
        if tag == "trial":
            self.submit.setEnabled(True)
