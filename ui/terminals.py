"""A list of a license's terminals, each with a Remove button (used by Move and by "seats full"); in the
owner's list (Move) also a Rename button.

Rows come from ``agent.control.Terminal`` objects or from the plain dicts a ``seats_full`` refusal
carries; both have ``machine_id``, ``terminal_name`` and ``last_seen``. A terminal that holds no seat
(``active`` false) says why: unseen for the server's idle days, or over the subscription's quantity. A
terminal the owner removed that still runs its license file (``removed_offline_license``) keeps its seat
until ``seat_held_until``: it says so, with the date, and offers no Remove (it is removed already).
"""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QVBoxLayout, QWidget

from agent import messages
from ui import rename as rename_words
from ui.page import button
from ui.present import format_date, format_datetime
from ui.strings import t

messages.register(
    {
        "ui.terminal.inactive": {"en": "Inactive", "el": "Ανενεργό"},
        "ui.terminal.keep": {"en": "Use this one", "el": "Χρήση αυτού"},
        "ui.terminal.idle": {
            "en": "Inactive: not seen for a month, its seat is free",
            "el": "Ανενεργό: δεν εμφανίστηκε για έναν μήνα, η θέση του είναι ελεύθερη",
        },
        "ui.terminal.removed_offline_license": {
            "en": "Removed, but its license file runs until {date}: it keeps its seat until then, unless "
            "its deactivation file is uploaded on the server's /offline page",
            "el": "Αφαιρέθηκε, αλλά το αρχείο άδειάς του ισχύει έως {date}: κρατά τη θέση του ως τότε, "
            "εκτός αν ανεβεί το αρχείο απενεργοποίησής του στη σελίδα /offline του διακομιστή",
        },
        "ui.terminal.seats_exceeded": {
            "en": "Inactive: over the subscription's number of terminals",
            "el": "Ανενεργό: πάνω από τον αριθμό τερματικών της συνδρομής",
        },
    }
)


def _get(row, name: str):
    return row.get(name) if isinstance(row, dict) else getattr(row, name, None)


class TerminalList(QFrame):
    """Rows of terminals; ``remove_requested(machine_id, name)`` when a Remove button is pressed."""

    remove_requested = Signal(str, str)
    rename_requested = Signal(str, str)  # (machine_id, name): the owner renames a terminal (ui/rename.py)
    keep_requested = Signal(str, str)  # an inactive terminal over the quantity should take a seat

    def __init__(self, parent: QWidget | None = None, renamable: bool = False) -> None:
        super().__init__(parent)
        self.setObjectName("terminalList")
        self._renamable = renamable  # the owner's list (Move) offers Rename; "seats full" does not
        self._rows: list = []
        self._layout = QVBoxLayout(self)
        self._layout.setContentsMargins(0, 4, 0, 4)
        self._layout.setSpacing(6)
        self.remove_buttons: dict[str, object] = {}
        self.keep_buttons: dict[str, object] = {}
        self.rename_buttons: dict[str, object] = {}
        self.hide()

    def set_terminals(self, rows: list) -> None:
        """Show ``rows`` (an empty list hides the list)."""
        self._rows = list(rows)
        self._rebuild()

    def _rebuild(self) -> None:
        while self._layout.count():
            item = self._layout.takeAt(0)
            widget = item.widget() if item is not None else None
            if widget is not None:
                widget.deleteLater()
        self.remove_buttons = {}
        self.keep_buttons = {}
        self.rename_buttons = {}
        for row in self._rows:
            self._layout.addWidget(self._row_widget(row))
        self.setVisible(bool(self._rows))

    def _row_widget(self, row) -> QWidget:
        machine_id = str(_get(row, "machine_id"))
        name = _get(row, "terminal_name") or machine_id
        this_pc = bool(_get(row, "this_machine"))
        box = QFrame()
        box.setObjectName("terminalRow")
        line = QHBoxLayout(box)
        line.setContentsMargins(12, 8, 8, 8)
        words = QVBoxLayout()
        words.setSpacing(1)
        title = QLabel(f"{name}  ·  {t('ui.move.this_pc')}" if this_pc else name)
        title.setObjectName("terminalName")
        seen_text = t("ui.move.last_seen", when=format_datetime(_get(row, "last_seen")))
        held = _get(row, "reason") == "removed_offline_license"
        if held:
            # Not an ordinary active terminal: removed, and still selling on its file until the date.
            date = format_date(_get(row, "seat_held_until"))
            seen_text += "  ·  " + t("ui.terminal.removed_offline_license", date=date)
        elif _get(row, "active") is False:
            # Inactive terminals stay listed with the reason: unseen for a month, or over the quantity.
            seen_text += "  ·  " + t(f"ui.terminal.{_get(row, 'reason') or 'inactive'}")
        seen = QLabel(seen_text)
        seen.setObjectName("factLabel")
        seen.setWordWrap(held)
        words.addWidget(title)
        words.addWidget(seen)
        line.addLayout(words, 1)
        if _get(row, "reason") == "seats_exceeded":
            # The owner's choice of who stays: this one takes the seat of the least recently seen.
            keep = button("keep")
            keep.setText(t("ui.terminal.keep"))
            keep.clicked.connect(lambda _=False, m=machine_id, n=name: self.keep_requested.emit(m, n))
            line.addWidget(keep)
            self.keep_buttons[machine_id] = keep
        if held:  # removed already: nothing to rename or remove; only its deactivation file frees the seat
            return box
        if self._renamable:
            rename = button("rename")
            rename.setText(t(rename_words.BUTTON))
            rename.clicked.connect(lambda _=False, m=machine_id, n=name: self.rename_requested.emit(m, n))
            line.addWidget(rename)
            self.rename_buttons[machine_id] = rename
        if not this_pc:
            remove = button("danger")
            remove.setText(t("ui.move.remove"))
            remove.clicked.connect(lambda _=False, m=machine_id, n=name: self.remove_requested.emit(m, n))
            line.addWidget(remove)
            self.remove_buttons[machine_id] = remove
        return box

    def drop(self, machine_id: str) -> None:
        """Remove a row after the server confirmed the removal."""
        self._rows = [r for r in self._rows if str(_get(r, "machine_id")) != machine_id]
        self._rebuild()

    def retranslate(self) -> None:
        """Rebuild the rows in the current language."""
        self._rebuild()
