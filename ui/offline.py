"""Activation by file, for a PC that never reaches the internet: save a request file, import a license file,
and give a license file up.

The owner saves the request file (e.g. to a USB stick), opens the server's `/offline` page on any phone or
PC, proves their e-mail, uploads the file and gets a license file back, which they import here. The agent
checks the file (`AgentControl.import_offline_license`); a refused file changes nothing and its reason is
shown. The file dialogs are attributes (`choose_save_path`, `choose_open_path`) so tests can answer them.

A PC licensed by file cannot be deactivated online. "Give up this license file…" (shown only then) asks
first, because the till stops being licensed at once; the agent then forgets the file and writes the signed
deactivation file (`AgentControl.offline_deactivation`), saved where the owner chose. Uploading it on the
same `/offline` page frees the seat; until then the server keeps the seat taken until the file ends.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

from PySide6.QtWidgets import QFileDialog, QHBoxLayout

from pospal_protocol.offline import (
    DEACTIVATION_FILE_NAME,
    LICENSE_FILE_NAME,
    MAX_FILE_BYTES,
    REQUEST_FILE_NAME,
)
from ui.errortext import describe
from ui.page import Host, Page, button, wrapped_label
from ui.strings import t

log = logging.getLogger(__name__)


def write_whole(target: Path, data: bytes) -> Path:
    """Write `data` to `target` whole or not at all: a temporary file beside it, flushed, then renamed."""
    partial = target.with_name(target.name + ".partial")
    with open(partial, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(partial, target)
    return target


def _save_dialog(parent, name: str) -> str | None:
    path, _ = QFileDialog.getSaveFileName(parent, t("ui.offline.save"), name, "JSON (*.json)")
    return path or None


def _open_dialog(parent, name: str) -> str | None:
    path, _ = QFileDialog.getOpenFileName(parent, t("ui.offline.import"), name, "JSON (*.json)")
    return path or None


class OfflinePage(Page):
    """ "Save activation request…" and "Import license file…"."""

    def __init__(self, host: Host) -> None:
        super().__init__(host, "ui.offline.title")
        self.intro = wrapped_label("intro")
        self.save = button("offline_save", primary=True)
        self.load = button("offline_import", primary=True)
        self.back = button("offline_back")
        self.give_up = button("danger")
        self.give_up.hide()  # only for a PC licensed by file (on_status)
        self.choose_save_path: Callable[[object, str], str | None] = _save_dialog
        self.choose_open_path: Callable[[object, str], str | None] = _open_dialog
        self._target: Path | None = None
        self._deactivation_target: Path | None = None
        # The deactivation file once the agent gave the license up, until it is written somewhere: the
        # agent cannot make it again, and without it the seat stays taken until the file ends.
        self._held: bytes | None = None
        self._licensed_by_file = False
        # Where the owner goes: the agent's server + /offline, asked once the page is shown.
        self._url = "/offline"
        self.save.clicked.connect(self.save_request)
        self.load.clicked.connect(self.import_license)
        self.give_up.clicked.connect(self.give_up_license)
        self.back.clicked.connect(lambda: host.show_page("overview"))
        row = QHBoxLayout()
        row.addWidget(self.back)
        row.addStretch(1)
        row.addWidget(self.save)
        row.addWidget(self.load)
        self.layout_.addWidget(self.intro)
        self.layout_.addLayout(row)
        # Its own row: beside the three others its words would be cut off.
        give_up_row = QHBoxLayout()
        give_up_row.addStretch(1)
        give_up_row.addWidget(self.give_up)
        self.layout_.addLayout(give_up_row)
        self.layout_.addStretch(1)

    def retranslate(self) -> None:
        """Texts in the current language."""
        super().retranslate()
        self.intro.setText(t("ui.offline.intro", url=self._url))
        self.save.setText(t("ui.offline.save"))
        self.load.setText(t("ui.offline.import"))
        self.back.setText(t("ui.back"))
        self.give_up.setText(t("offline.give_up"))

    def on_status(self, status) -> None:
        """Offer "Give up this license file" only while this PC runs on a license file."""
        self._licensed_by_file = bool(getattr(status, "offline_license", False))
        self.give_up.setVisible(self._licensed_by_file or self._held is not None)

    def on_shown(self) -> None:
        """Ask the agent (off the UI thread) which server the owner should open."""
        self.host.worker.call("offline_url", "diagnostics")

    def save_request(self) -> None:
        """Ask where to save, then have the agent write the request (off the UI thread)."""
        path = self.choose_save_path(self, REQUEST_FILE_NAME)
        if not path:
            return
        self._target = target = Path(path)
        self.host.clear_message()
        self.save.setEnabled(False)
        control = self.host.worker.control
        # Asking the agent and writing to a USB stick both may take a while: neither runs on the UI thread.
        self.host.worker.submit("offline_request", lambda: write_whole(target, control.offline_request()))

    def import_license(self) -> None:
        """Ask for the license file and hand it to the agent, which checks it before using it."""
        path = self.choose_open_path(self, LICENSE_FILE_NAME)
        if not path:
            return
        try:
            data = Path(path).read_bytes()[: MAX_FILE_BYTES + 1]  # a few KiB; never a big read on the UI
        except OSError as exc:
            detail = exc.strerror or str(exc)
            self.host.show_error(lambda: t("ui.offline.unreadable", detail=detail))
            return
        self.host.clear_message()
        self.load.setEnabled(False)
        self.host.worker.call("offline_import", "import_offline_license", data)

    def give_up_license(self) -> None:
        """After the owner confirms, have the agent give the license file up and save its deactivation file.

        A deactivation file that could not be written (a USB stick pulled out) is kept: pressing the button
        again only asks where to save it.
        """
        held = self._held
        if held is None and not self.host.confirm(
            t("offline.give_up.title"), t("offline.give_up.text"), t("offline.give_up.yes")
        ):
            return
        path = self.choose_save_path(self, DEACTIVATION_FILE_NAME)
        if not path:
            return
        self._deactivation_target = target = Path(path)
        self.host.clear_message()
        self.give_up.setEnabled(False)
        control = self.host.worker.control

        def give_up() -> Path:
            data = held if held is not None else control.offline_deactivation()
            self._held = data
            write_whole(target, data)
            self._held = None
            return target

        self.host.worker.submit("offline_deactivate", give_up)

    def finished(self, tag: str, result) -> None:
        """Server known → show its page; request written → say where; license imported → overview."""
        if tag == "offline_url" and getattr(result, "server_url", None):
            self._url = f"{result.server_url.rstrip('/')}/offline"
            self.retranslate()
        elif tag == "offline_request" and self._target is not None:
            self.save.setEnabled(True)
            target, url = self._target, self._url
            self.host.show_info(lambda: t("ui.offline.saved", path=str(target), url=url))
        elif tag == "offline_import":
            self.load.setEnabled(True)
            self.host.worker.refresh()
            self.host.show_page("overview")
            self.host.show_info(lambda: t("ui.offline.imported"))
        elif tag == "offline_deactivate" and self._deactivation_target is not None:
            self.give_up.setEnabled(True)
            self.give_up.setVisible(self._licensed_by_file)
            self.host.worker.refresh()
            target, url = self._deactivation_target, self._url
            self.host.show_info(lambda: t("offline.given_up", path=str(target), url=url))

    def failed(self, tag: str, error) -> None:
        """Say why, in the agent's words (a refused license file changed nothing)."""
        if tag == "offline_request":
            self.save.setEnabled(True)
            if isinstance(error, OSError) and self._target is not None:
                # A USB stick pulled out, a read-only folder: say where it could not be written.
                log.warning("could not write %s: %s", self._target, error)
                target = self._target
                self.host.show_error(lambda: t("ui.offline.unwritable", path=str(target)))
                return
        elif tag == "offline_import":
            self.load.setEnabled(True)
        elif tag == "offline_deactivate":
            self.give_up.setEnabled(True)
            if isinstance(error, OSError) and self._held is not None:
                # The license is given up already; its deactivation file is kept until it is written.
                log.warning("could not write %s: %s", self._deactivation_target, error)
                self.give_up.setVisible(True)
                where = str(self._deactivation_target)
                self.host.show_error(lambda: t("offline.give_up.unwritten", path=where))
                return
        else:
            return
        self.host.show_error(lambda: describe(error))
