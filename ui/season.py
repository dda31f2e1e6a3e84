"""Pausing for the season (issue 26): one small dialog that asks until when, a date or "until I resume".

"Pause for the season" on the main page opens it. The owner picks "until I resume" (the default) or a
resume date, from tomorrow to the server's longest pause; "Pause" then runs the agent's
`pause_subscription` with the worker's `pause` tag, so the main page reports how it went and the owner's
code dialog, when the server asks for the owner, runs the same pause again. A date means the start of
that day on this PC's clock, sent as a time with its zone.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta

from PySide6.QtCore import QDate
from PySide6.QtWidgets import (
    QButtonGroup,
    QDateEdit,
    QDialog,
    QHBoxLayout,
    QLabel,
    QRadioButton,
    QVBoxLayout,
    QWidget,
)

from agent import messages
from ui.page import button
from ui.strings import t

TAG = "pause"
# The server refuses a resume date further than this (server/api/pause.py LONGEST_PAUSE).
LONGEST_PAUSE_DAYS = 240

messages.register(
    {
        "ui.season.title": {"en": "Pause for the season", "el": "Παύση για τη σεζόν"},
        "ui.season.intro": {
            "en": "Nothing is charged while paused, and every terminal keeps its place. Until when?",
            "el": "Όσο είναι σε παύση δεν χρεώνεται τίποτα και κάθε τερματικό κρατά τη θέση του. Μέχρι πότε;",
        },
        "ui.season.until_resumed": {"en": "Until I resume", "el": "Μέχρι να την επαναφέρω"},
        "ui.season.until_date": {"en": "Until this date:", "el": "Μέχρι αυτή την ημερομηνία:"},
        "ui.season.submit": {"en": "Pause", "el": "Παύση"},
        "ui.pause.done_until": {
            "en": "Paused until {date}: nothing is charged and every terminal keeps its place. The "
            "terminals take orders again that day by themselves.",
            "el": "Σε παύση μέχρι {date}: δεν χρεώνεται τίποτα και κάθε τερματικό κρατά τη θέση του. Τα "
            "τερματικά δέχονται ξανά παραγγελίες εκείνη τη μέρα από μόνα τους.",
        },
    }
)


class PauseDialog(QDialog):
    """ "Until I resume" or a date, and "Pause"; `chosen` is the resume time sent (None: until resumed)."""

    def __init__(self, worker, parent: QWidget | None = None, today: date | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("pauseSeason")
        self.worker = worker
        self.chosen: datetime | None = None
        today = today or datetime.now().astimezone().date()  # this PC's own calendar day
        self.setWindowTitle(t("ui.app_name"))
        self.title = QLabel(t("ui.season.title"))
        self.title.setObjectName("pageTitle")
        self.intro = QLabel(t("ui.season.intro"))
        self.intro.setWordWrap(True)
        self.until_resumed = QRadioButton(t("ui.season.until_resumed"))
        self.until_resumed.setObjectName("pause_until_resumed")
        self.until_date = QRadioButton(t("ui.season.until_date"))
        self.until_date.setObjectName("pause_until_date")
        group = QButtonGroup(self)
        group.addButton(self.until_resumed)
        group.addButton(self.until_date)
        self.until_resumed.setChecked(True)
        self.date = QDateEdit()
        self.date.setObjectName("pause_resume_date")
        self.date.setCalendarPopup(True)
        first, last = today + timedelta(days=1), today + timedelta(days=LONGEST_PAUSE_DAYS - 1)
        self.date.setDateRange(_qdate(first), _qdate(last))
        self.date.setDate(_qdate(first))
        self.date.setEnabled(False)
        self.until_date.toggled.connect(self.date.setEnabled)
        self.submit_button = button("pause_submit", primary=True)
        self.submit_button.setText(t("ui.season.submit"))
        self.cancel = button("pause_cancel")
        self.cancel.setText(t("ui.cancel"))
        dated = QHBoxLayout()
        dated.addWidget(self.until_date)
        dated.addWidget(self.date)
        dated.addStretch(1)
        row = QHBoxLayout()
        row.addWidget(self.cancel)
        row.addStretch(1)
        row.addWidget(self.submit_button)
        layout = QVBoxLayout(self)
        for widget in (self.title, self.intro, self.until_resumed):
            layout.addWidget(widget)
        layout.addLayout(dated)
        layout.addLayout(row)
        self.submit_button.clicked.connect(self.submit)
        self.cancel.clicked.connect(self.reject)

    def resume_at(self) -> datetime | None:
        """The chosen resume time: the start of the picked day on this PC's clock, or None."""
        if not self.until_date.isChecked():
            return None
        picked = self.date.date()
        day = date(picked.year(), picked.month(), picked.day())
        return datetime.combine(day, time.min).astimezone()

    def submit(self) -> None:
        """Ask the agent to pause (off the UI thread) and close; the main page reports the outcome."""
        self.chosen = self.resume_at()
        if self.chosen is None:
            self.worker.call(TAG, "pause_subscription")
        else:
            self.worker.call(TAG, "pause_subscription", self.chosen)
        self.accept()


def _qdate(day: date) -> QDate:
    return QDate(day.year, day.month, day.day)


def done_text(resumes_at: datetime | None) -> str:
    """The main page's message once paused, in the current language."""
    if resumes_at is None:
        return t("ui.pause.done")
    return t("ui.pause.done_until", date=resumes_at.strftime("%d/%m/%Y"))
