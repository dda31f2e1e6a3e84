"""The diagnostics page: which fingerprint sources worked, the last sync result, and a support report.

"Copy support report" puts a plain-text report on the clipboard: the agent's diagnostics (hashes only,
never raw hardware values) plus the current status, so support sees what the owner sees.
"""

from __future__ import annotations

import json

from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QFormLayout, QHBoxLayout, QLabel

from ui.errortext import describe
from ui.page import Host, Page, button
from ui.strings import t


def support_report(diagnostics, status) -> str:
    """The text support gets: diagnostics first, then the local API view of the status."""
    parts = [diagnostics.support_report() if diagnostics is not None else "diagnostics: unavailable"]
    if status is not None:
        body = status.to_dict() if hasattr(status, "to_dict") else dict(vars(status))
        parts.append("status: " + json.dumps(body, indent=2, sort_keys=True, default=str))
    return "\n".join(parts)


# Agent diagnostics worth a row on the page (all of them are in the copied support report).
_SHOWN_EXTRAS = ("fingerprint_match", "clone_suspected", "proxy", "trust_store")


class DiagnosticsPage(Page):
    """Fingerprint sources with works/unavailable, sync result, data folder, server, version."""

    def __init__(self, host: Host) -> None:
        super().__init__(host, "ui.diag.title")
        self.diagnostics = None
        self.status = None
        self.sources_title = QLabel()
        self.sources_title.setObjectName("sectionTitle")
        self.sources = QFormLayout()
        self.sources.setVerticalSpacing(4)
        self.facts = QFormLayout()
        self.facts.setVerticalSpacing(4)
        self.copy = button("diag_copy", primary=True)
        self.back = button("diag_back")
        self.copy.clicked.connect(self.copy_report)
        self.back.clicked.connect(lambda: host.show_page("overview"))
        row = QHBoxLayout()
        row.addWidget(self.back)
        row.addStretch(1)
        row.addWidget(self.copy)
        self.layout_.addLayout(self.facts)
        self.layout_.addWidget(self.sources_title)
        self.layout_.addLayout(self.sources)
        self.layout_.addLayout(row)
        self.layout_.addStretch(1)

    def on_shown(self) -> None:
        """Fetch fresh diagnostics each time the page opens."""
        self.host.worker.call("diagnostics", "diagnostics")

    def on_status(self, status) -> None:
        """Keep the status for the support report."""
        self.status = status

    def retranslate(self) -> None:
        """Texts in the current language."""
        super().retranslate()
        self.sources_title.setText(t("ui.diag.sources"))
        self.copy.setText(t("ui.diag.copy"))
        self.back.setText(t("ui.back"))
        self._fill()

    def _fill(self) -> None:
        for form in (self.sources, self.facts):
            while form.rowCount():
                form.removeRow(0)
        d = self.diagnostics
        if d is None:
            return
        facts = (
            ("ui.diag.last_result", d.last_sync_result or t("ui.never")),
            ("ui.diag.machine", getattr(self.status, "machine_id", None) or t("ui.none")),
            ("ui.diag.server", d.server_url),
            ("ui.diag.data_dir", d.data_dir),
            ("ui.diag.version", d.version),
        ) + tuple((f"ui.diag.{k}", d.extra[k]) for k in _SHOWN_EXTRAS if d.extra.get(k))
        for key, value in facts:
            label, shown = QLabel(t(key)), QLabel(str(value))
            label.setObjectName("factLabel")
            shown.setObjectName("factValue")
            shown.setWordWrap(True)
            self.facts.addRow(label, shown)
        for source in d.components:
            name = QLabel(source.name)
            name.setObjectName("factLabel")
            state = QLabel(("✓ " + t("ui.diag.ok")) if source.ok else ("✗ " + t("ui.diag.missing")))
            state.setObjectName("sourceOk" if source.ok else "sourceMissing")
            self.sources.addRow(name, state)

    def copy_report(self) -> None:
        """Put the support report on the clipboard."""
        QGuiApplication.clipboard().setText(support_report(self.diagnostics, self.status))
        self.host.show_info(lambda: t("ui.diag.copied"))

    def finished(self, tag: str, result) -> None:
        """Fresh diagnostics arrived."""
        if tag == "diagnostics":
            self.diagnostics = result
            self._fill()

    def failed(self, tag: str, error) -> None:
        """Diagnostics could not be read."""
        if tag == "diagnostics":
            self.host.show_error(lambda: describe(error))
