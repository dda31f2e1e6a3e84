"""Moving the license to another PC: deactivate this one, or list the terminals and remove one (or rename
one, ui/rename.py).

Both stop a till from taking orders, so both ask first; declining changes nothing.
"""

from __future__ import annotations

from PySide6.QtWidgets import QHBoxLayout

from ui.errortext import describe
from ui.page import Host, Page, button, wrapped_label
from ui.rename import RenameDialog
from ui.strings import t
from ui.terminals import TerminalList


class MovePage(Page):
    """ "Deactivate this PC" and "Show terminals" with Remove buttons."""

    def __init__(self, host: Host) -> None:
        super().__init__(host, "ui.move.title")
        self._by_file = False  # licensed by file: "Give up this license file…" replaces Deactivate
        self.intro = wrapped_label("intro")
        self.deactivate_button = button("danger")
        self.list_button = button("move_list")
        self.back = button("move_back")
        self.terminals = TerminalList(renamable=True)
        self.rename_dialog: RenameDialog | None = None
        row = QHBoxLayout()
        row.addWidget(self.back)
        row.addStretch(1)
        row.addWidget(self.list_button)
        row.addWidget(self.deactivate_button)
        self.layout_.addWidget(self.intro)
        self.layout_.addLayout(row)
        self.layout_.addWidget(self.terminals)
        self.layout_.addStretch(1)
        self.deactivate_button.clicked.connect(self.deactivate)
        self.list_button.clicked.connect(self.list_terminals)
        self.back.clicked.connect(lambda: host.show_page("overview"))
        self.terminals.remove_requested.connect(self.remove)
        self.terminals.keep_requested.connect(self.keep)
        self.terminals.rename_requested.connect(self.rename)

    def retranslate(self) -> None:
        """Texts in the current language."""
        super().retranslate()
        self.intro.setText(t("ui.move.intro"))
        self.deactivate_button.setText(t("offline.give_up" if self._by_file else "ui.move.deactivate"))
        self.list_button.setText(t("ui.move.list"))
        self.back.setText(t("ui.back"))
        self.terminals.retranslate()

    def on_shown(self) -> None:
        """Fetch the terminal list straight away; it is what the owner came for."""
        self.terminals.set_terminals([])
        self.list_terminals()

    def on_status(self, status) -> None:
        """A PC licensed by file gives its file up instead (the offline page): it cannot deactivate online."""
        self._by_file = bool(getattr(status, "offline_license", False))
        self.retranslate()

    def deactivate(self) -> None:
        """Deactivate this PC, after the owner confirms (licensed by file: the offline page's give-up)."""
        if self._by_file:
            self.host.show_page("offline")
            return
        if not self.host.confirm(t("ui.deactivate.title"), t("ui.deactivate.text"), t("ui.deactivate.yes")):
            return
        self.deactivate_button.setEnabled(False)
        self.host.worker.call("deactivate", "deactivate")

    def list_terminals(self) -> None:
        """Load the license's terminals in the background."""
        self.list_button.setEnabled(False)
        self.host.worker.call("terminals", "list_terminals")

    def remove(self, machine_id: str, name: str) -> None:
        """Remove another terminal, after the owner confirms."""
        if not self.host.confirm(t("ui.remove.title", name=name), t("ui.remove.text"), t("ui.move.remove")):
            return
        self.host.worker.call(f"remove:{machine_id}", "remove_terminal", machine_id)

    def rename(self, machine_id: str, name: str) -> None:
        """Rename a terminal of the list (another one needs the owner: the window asks for the code)."""
        self.rename_dialog = RenameDialog(self.host.worker, name, machine_id, self)
        self.rename_dialog.renamed.connect(self._renamed)
        self.rename_dialog.open()

    def _renamed(self, terminals: list) -> None:
        if terminals:
            self.terminals.set_terminals(terminals)

    def keep(self, machine_id: str, _name: str) -> None:
        """The owner picks a terminal over the quantity to take a seat (the least recently seen stops)."""
        self.host.worker.call(f"keep:{machine_id}", "keep_terminals", [machine_id])

    def finished(self, tag: str, result) -> None:
        """Show the list, drop a removed row, or leave after deactivating."""
        if tag == "terminals" or tag.startswith("keep:"):
            self.list_button.setEnabled(True)
            self.terminals.set_terminals(result or [])
        elif tag == "deactivate":
            self.deactivate_button.setEnabled(True)
            self.host.show_page("overview")
            self.host.show_info(lambda: t("ui.move.deactivated"))
        elif tag.startswith("remove:"):
            self.terminals.drop(tag.split(":", 1)[1])
            self.host.show_info(lambda: t("ui.move.removed"))

    def failed(self, tag: str, error) -> None:
        """Explain why listing, removing or deactivating failed."""
        if tag == "terminals":
            self.list_button.setEnabled(True)
        elif tag == "deactivate":
            self.deactivate_button.setEnabled(True)
        elif not tag.startswith(("remove:", "keep:")):
            return
        self.host.show_error(lambda: describe(error))
