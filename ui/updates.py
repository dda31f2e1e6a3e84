"""The updates page: the running version, a staged one, the last check and the last swap or rollback, and
"Check for updates" on demand (also in the tray's menu).

Everything comes from `AgentControl.update_status()` / `check_updates()` (`agent.selfupdate.updatestate`). An
update never blocks licensing, so a failed check is a line of text on this page (its own words), never a
traceback, and the till keeps selling whatever the page says.
"""

from __future__ import annotations

from PySide6.QtWidgets import QFormLayout, QHBoxLayout, QLabel

from agent import messages
from ui.errortext import describe
from ui.page import Host, Page, button, wrapped_label
from ui.present import format_datetime
from ui.strings import t

messages.register(
    {
        "ui.action.updates": {"en": "Updates", "el": "Ενημερώσεις"},
        "ui.action.check_updates": {"en": "Check for updates", "el": "Έλεγχος για ενημερώσεις"},
        "ui.update.title": {"en": "Updates", "el": "Ενημερώσεις"},
        "ui.update.intro": {
            "en": "The license service updates itself with signed releases, only while the POS is idle. "
            "An update never stops the till from selling.",
            "el": "Η υπηρεσία άδειας ενημερώνεται μόνη της με υπογεγραμμένες εκδόσεις, μόνο όταν το POS "
            "είναι αδρανές. Μια ενημέρωση δεν σταματά ποτέ τις πωλήσεις.",
        },
        "ui.update.checking": {"en": "Checking…", "el": "Έλεγχος…"},
        "ui.update.off": {
            "en": "This agent does not update itself (it was not installed with the updater).",
            "el": "Αυτή η υπηρεσία δεν ενημερώνεται μόνη της (δεν εγκαταστάθηκε με τον ενημερωτή).",
        },
        "ui.update.current": {"en": "Running version", "el": "Τρέχουσα έκδοση"},
        "ui.update.pending": {"en": "Ready to install", "el": "Έτοιμη για εγκατάσταση"},
        "ui.update.pending_value": {
            "en": "{version}, at the next quiet moment",
            "el": "{version}, στην επόμενη ήσυχη στιγμή",
        },
        "ui.update.last_check": {"en": "Last check", "el": "Τελευταίος έλεγχος"},
        "ui.update.never": {"en": "not yet", "el": "όχι ακόμη"},
        "ui.update.up_to_date": {"en": "{when}: up to date", "el": "{when}: ενημερωμένη"},
        "ui.update.staged": {"en": "{when}: {detail} downloaded", "el": "{when}: λήφθηκε η {detail}"},
        "ui.update.failed": {"en": "{when}: failed: {detail}", "el": "{when}: απέτυχε: {detail}"},
        "ui.update.last_swap": {"en": "Last update", "el": "Τελευταία ενημέρωση"},
        "ui.update.swapped": {"en": "updated from {old} to {new}", "el": "ενημέρωση από {old} σε {new}"},
        "ui.update.rolled_back": {
            "en": "{new} failed its start check and was rolled back to {old}: {reason}",
            "el": "Η {new} απέτυχε στον έλεγχο εκκίνησης και έγινε επαναφορά στην {old}: {reason}",
        },
        "ui.update.fell_back": {
            "en": "{new} did not start; {old} runs instead: {reason}",
            "el": "Η {new} δεν ξεκίνησε· τρέχει η {old}: {reason}",
        },
        "ui.update.failed_versions": {"en": "Skipped versions", "el": "Εκδόσεις που παραλείπονται"},
        "ui.update.done.up_to_date": {
            "en": "This agent is up to date.",
            "el": "Η υπηρεσία είναι ενημερωμένη.",
        },
        "ui.update.done.staged": {
            "en": "Version {version} is downloaded and verified; it installs itself at the next quiet "
            "moment.",
            "el": "Η έκδοση {version} λήφθηκε και επαληθεύτηκε· εγκαθίσταται μόνη της στην επόμενη ήσυχη "
            "στιγμή.",
        },
        "ui.update.done.failed": {
            "en": "The update check failed: {detail}. The till keeps selling; it tries again later.",
            "el": "Ο έλεγχος ενημέρωσης απέτυχε: {detail}. Το ταμείο συνεχίζει να πουλά· θα ξαναδοκιμάσει "
            "αργότερα.",
        },
    }
)

CHECK_TAG = "update_check"
STATUS_TAG = "update_status"


def check_line(status) -> str:
    """The last check in words ("not yet" before the first)."""
    if status.check_outcome not in ("up_to_date", "staged", "failed"):
        return t("ui.update.never")
    when = format_datetime(status.checked_at)
    return t(f"ui.update.{status.check_outcome}", when=when, detail=status.check_detail or "")


def swap_line(status) -> str | None:
    """The launcher's last swap or rollback in words (None when there was none)."""
    outcome = status.last_swap_outcome
    if outcome not in ("swapped", "rolled_back", "fell_back"):
        return None
    return t(
        f"ui.update.{outcome}",
        old=status.last_swap_from or "?",
        new=status.last_swap_to or "?",
        reason=status.last_swap_reason or "",
    )


def done_text(status) -> str:
    """The banner after "Check for updates"."""
    if not status.enabled:
        return t("ui.update.off")
    if status.check_outcome == "failed":
        return t("ui.update.done.failed", detail=status.check_detail or "")
    if status.pending:
        return t("ui.update.done.staged", version=status.pending)
    return t("ui.update.done.up_to_date")


class UpdatesPage(Page):
    """Facts about updates and the "Check for updates" button."""

    def __init__(self, host: Host) -> None:
        super().__init__(host, "ui.update.title")
        self.update_status = None
        # A status read asked for before a check finished may come back after it, holding the state from
        # before the check: results of checks count up, and a read that started under an older count is
        # stale and dropped.
        self._checks_done = 0
        self._read_asked_at = 0
        self.intro = wrapped_label("intro")
        self.facts = QFormLayout()
        self.facts.setVerticalSpacing(4)
        self.check = button("update_check", primary=True)
        self.back = button("update_back")
        self.check.clicked.connect(self.check_now)
        self.back.clicked.connect(lambda: host.show_page("overview"))
        row = QHBoxLayout()
        row.addWidget(self.back)
        row.addStretch(1)
        row.addWidget(self.check)
        self.layout_.addWidget(self.intro)
        self.layout_.addLayout(self.facts)
        self.layout_.addLayout(row)
        self.layout_.addStretch(1)

    def on_shown(self) -> None:
        """Read the update state each time the page opens (from files: quick, but off the UI thread)."""
        self._read_asked_at = self._checks_done
        self.host.worker.call(STATUS_TAG, "update_status")

    def check_now(self) -> None:
        """Check for updates now (a download may take a while: the button says so meanwhile)."""
        if self.host.worker.is_pending(CHECK_TAG):
            return
        self.host.clear_message()
        self.check.setEnabled(False)
        self.check.setText(t("ui.update.checking"))
        self.host.worker.call(CHECK_TAG, "check_updates")

    def retranslate(self) -> None:
        """Texts in the current language."""
        super().retranslate()
        self.intro.setText(t("ui.update.intro"))
        checking = self.host.worker.is_pending(CHECK_TAG)
        self.check.setText(t("ui.update.checking" if checking else "ui.action.check_updates"))
        self.back.setText(t("ui.back"))
        self._fill()

    def _fill(self) -> None:
        while self.facts.rowCount():
            self.facts.removeRow(0)
        s = self.update_status
        if s is None:
            return
        rows = [("ui.update.current", s.current or "?")]
        if not s.enabled:
            rows.append(("ui.update.last_check", t("ui.update.off")))
        else:
            if s.pending:
                rows.append(("ui.update.pending", t("ui.update.pending_value", version=s.pending)))
            rows.append(("ui.update.last_check", check_line(s)))
        swap = swap_line(s)
        if swap is not None:
            rows.append(("ui.update.last_swap", swap))
        if s.failed:
            rows.append(("ui.update.failed_versions", ", ".join(s.failed)))
        for key, value in rows:
            label, shown = QLabel(t(key)), QLabel(value)
            label.setObjectName("factLabel")
            shown.setObjectName("factValue")
            shown.setWordWrap(True)
            self.facts.addRow(label, shown)

    def finished(self, tag: str, result) -> None:
        """A fresh update state arrived (and, after a check, what it found)."""
        if tag not in (STATUS_TAG, CHECK_TAG):
            return
        if tag == STATUS_TAG and self._read_asked_at != self._checks_done:
            return  # read before the last check ended: that check's result is newer
        self.update_status = result
        if tag == CHECK_TAG:
            self._checks_done += 1
            self.check.setEnabled(True)
            failed = result.enabled and result.check_outcome == "failed"
            (self.host.show_error if failed else self.host.show_info)(lambda: done_text(result))
        self.retranslate()

    def failed(self, tag: str, error) -> None:
        """The agent could not be asked (it is away): say so in a sentence."""
        if tag not in (STATUS_TAG, CHECK_TAG):
            return
        if tag == CHECK_TAG:
            self.check.setEnabled(True)
            self.retranslate()
        self.host.show_error(lambda: describe(error))
