"""The status card at the top of the window: a coloured headline staff can read from across the room.

The band carries the state's icon, a large headline in the state's colour and one sentence saying what to
do. Below it, the facts the owner asks about: plan, renewal or end date, days left, last sync, terminal.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QFrame, QGridLayout, QHBoxLayout, QLabel, QVBoxLayout, QWidget

from ui import rename as rename_words
from ui.icons import color_for, icon_for_kind
from ui.page import button
from ui.present import View, counts_down, end_row, format_date, format_datetime, plan_name, present
from ui.strings import days, t

_ROWS = ("plan", "end", "days_left", "last_sync", "terminal")


def tint(color: QColor, amount: float) -> str:
    """``color`` mixed with white (``amount`` 0..1 of white), as a #rrggbb string for stylesheets."""
    r = round(color.red() + (255 - color.red()) * amount)
    g = round(color.green() + (255 - color.green()) * amount)
    b = round(color.blue() + (255 - color.blue()) * amount)
    return QColor(r, g, b).name()


class StatusCard(QFrame):
    """Headline band plus facts grid for one LicenseStatus; ``rename_requested`` when "Rename…" beside the
    terminal's name is pressed (ui/rename.py)."""

    rename_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("statusCard")
        self._status = None
        self._compact = False
        self.view: View | None = None

        self.band = QFrame()
        self.band.setObjectName("band")
        self.icon = QLabel()
        self.icon.setFixedSize(56, 56)
        self.headline = QLabel()
        self.headline.setObjectName("headline")
        self.detail = QLabel()
        self.detail.setObjectName("detail")
        self.detail.setWordWrap(True)
        # "Syncing…" beside the headline while a sync runs: small, so the state stays what people read.
        self.sync_hint = QLabel()
        self.sync_hint.setObjectName("syncHint")
        self.sync_hint.hide()
        top = QHBoxLayout()
        top.setSpacing(10)
        top.addWidget(self.headline)
        top.addStretch(1)
        top.addWidget(self.sync_hint, 0, Qt.AlignmentFlag.AlignTop)
        words = QVBoxLayout()
        words.setSpacing(4)
        words.addLayout(top)
        words.addWidget(self.detail)
        band_layout = QHBoxLayout(self.band)
        band_layout.setContentsMargins(18, 16, 18, 16)
        band_layout.setSpacing(16)
        band_layout.addWidget(self.icon, 0, Qt.AlignmentFlag.AlignTop)
        band_layout.addLayout(words, 1)

        self.facts = facts = QWidget()
        facts.setObjectName("facts")
        grid = QGridLayout(facts)
        grid.setContentsMargins(20, 12, 20, 14)
        grid.setHorizontalSpacing(24)
        grid.setVerticalSpacing(7)
        self.labels: dict[str, QLabel] = {}
        self.values: dict[str, QLabel] = {}
        for row, name in enumerate(_ROWS):
            label, value = QLabel(), QLabel()
            label.setObjectName("factLabel")
            value.setObjectName("factValue")
            value.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            grid.addWidget(label, row, 0, Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
            grid.addWidget(value, row, 1, Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
            self.labels[name], self.values[name] = label, value
        grid.setColumnStretch(1, 1)
        self.rename = button("rename")
        self.rename.setFlat(True)
        self.rename.clicked.connect(self.rename_requested.emit)
        grid.addWidget(self.rename, _ROWS.index("terminal"), 2, Qt.AlignmentFlag.AlignRight)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        layout.addWidget(self.band)
        layout.addWidget(facts)

    def set_compact(self, compact: bool) -> None:
        """Headline only (while a task page needs the room), or headline plus facts."""
        self._compact = compact
        self.facts.setVisible(not compact)
        self._paint_band()

    def _paint_band(self) -> None:
        if self.view is None:
            return
        color = color_for(self.view.kind)
        bottom = "10px" if self._compact else "0px"
        self.band.setStyleSheet(
            f"#band {{ background: {tint(color, 0.87)}; border-bottom: 1px solid {tint(color, 0.7)};"
            f" border-top-left-radius: 10px; border-top-right-radius: 10px;"
            f" border-bottom-left-radius: {bottom}; border-bottom-right-radius: {bottom}; }}"
        )

    def set_syncing(self, syncing: bool) -> None:
        """Show or hide the small "Syncing…" hint (the headline and facts stay as they are)."""
        self.sync_hint.setVisible(syncing)

    def _show_row(self, name: str, visible: bool) -> None:
        self.labels[name].setVisible(visible)
        self.values[name].setVisible(visible)

    def show_status(self, status) -> None:
        """Show ``status`` (also re-used to re-translate: it re-reads every text)."""
        self._status = status
        self.retranslate()

    def retranslate(self) -> None:
        """Re-render the card's texts in the current language."""
        status = self._status
        self.labels["plan"].setText(t("ui.card.plan"))
        self.labels["days_left"].setText(t("ui.card.days_left"))
        self.labels["last_sync"].setText(t("ui.card.last_sync"))
        self.labels["terminal"].setText(t("ui.card.terminal"))
        self.rename.setText(t(rename_words.BUTTON))
        self.sync_hint.setText(t("ui.action.syncing"))
        if status is None:
            self.headline.setText(t("ui.busy"))
            self.labels["end"].setText(t("ui.card.ends_on"))
            return
        view = self.view = present(status)
        color = color_for(view.kind)
        self._paint_band()
        self.headline.setStyleSheet(f"color: {color.darker(125).name()};")
        self.icon.setPixmap(icon_for_kind(view.kind).pixmap(56, 56))
        self.headline.setText(view.headline)
        self.detail.setText(view.detail)
        self.values["plan"].setText(plan_name(status))
        row = end_row(status)
        self.labels["end"].setText(t(row[0]) if row else t("ui.card.ends_on"))
        self.values["end"].setText(format_date(row[1]) if row else t("ui.none"))
        self._show_row("end", row is not None)
        left = status.days_left
        self.values["days_left"].setText(days(left) if left is not None else t("ui.none"))
        # Only a real countdown earns a row: a renewing subscription or a stopped till has none.
        self._show_row("days_left", left is not None and counts_down(status))
        self.values["last_sync"].setText(format_datetime(status.last_sync))
        self.values["terminal"].setText(status.terminal_name or t("ui.none"))
