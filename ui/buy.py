"""Buying from the window: email and restaurant name, Checkout in the browser, then a waiting view.

The waiting view polls through the agent (``wait_checkout``) on a worker thread and finishes by itself
when the payment completes: the owner pays in the browser and never has to come back and click. Cancel
sets the call's cancel event, so the background poll ends cleanly instead of being abandoned.

An email that already has a subscription is never sold a second one: the server answers
`subscription_exists`, and the page offers "Add this terminal" with its prorated price first. An email that
is already a customer's needs the owner's code on this PC first (the window's owner dialog).
"""

from __future__ import annotations

import threading
from typing import Any

from PySide6.QtWidgets import QFormLayout, QHBoxLayout, QLineEdit, QProgressBar

from agent import messages
from agent.control import is_email
from ui.errortext import describe
from ui.page import Host, Page, button, form_label, wrapped_label
from ui.strings import t

messages.register(
    {
        "ui.add.title": {"en": "Add this terminal?", "el": "Προσθήκη αυτού του τερματικού;"},
        "ui.add.text": {
            "en": "This email already has a subscription. Add this PC to it: {now} → {new} terminals. "
            "Charged now for the rest of this period: {price}; then each renewal covers {new} terminals.",
            "el": "Αυτό το email έχει ήδη συνδρομή. Προσθέστε αυτόν τον υπολογιστή: {now} → {new} τερματικά. "
            "Χρέωση τώρα για το υπόλοιπο της περιόδου: {price}· κάθε ανανέωση καλύπτει μετά {new} τερματικά.",
        },
        "ui.add.free": {
            "en": "This email already has a subscription with a free seat: activate this PC on it at no "
            "charge.",
            "el": "Αυτό το email έχει ήδη συνδρομή με ελεύθερη θέση: ενεργοποιήστε αυτόν τον υπολογιστή "
            "χωρίς χρέωση.",
        },
        "ui.add.yes": {"en": "Add this terminal", "el": "Προσθήκη τερματικού"},
        "ui.add.done": {
            "en": "This terminal was added to your subscription.",
            "el": "Το τερματικό προστέθηκε στη συνδρομή σας.",
        },
    }
)


def valid_email(text: str) -> bool:
    """Whether the server will take this as an email address (the agent's own check, `is_email`)."""
    return is_email(text)


class BuyPage(Page):
    """Email + restaurant name, then "Continue to payment"."""

    def __init__(self, host: Host) -> None:
        super().__init__(host, "ui.buy.title")
        self.intro = wrapped_label("intro")
        self.email = QLineEdit()
        self.email.setObjectName("buy_email")
        self.restaurant = QLineEdit()
        self.restaurant.setObjectName("buy_restaurant")
        self.form = QFormLayout()
        self.form.setVerticalSpacing(8)
        self.email_label, self.restaurant_label = form_label(), form_label()
        self.form.addRow(self.email_label, self.email)
        self.form.addRow(self.restaurant_label, self.restaurant)
        self.submit = button("buy_submit", primary=True)
        self.back = button("buy_back")
        self.submit.clicked.connect(self.start)
        self.back.clicked.connect(lambda: host.show_page("overview"))
        self.restaurant.returnPressed.connect(self.start)
        row = QHBoxLayout()
        row.addWidget(self.back)
        row.addStretch(1)
        row.addWidget(self.submit)
        self.layout_.addWidget(self.intro)
        self.layout_.addLayout(self.form)
        self.layout_.addLayout(row)
        self.layout_.addStretch(1)

    def retranslate(self) -> None:
        """Texts in the current language."""
        super().retranslate()
        self.intro.setText(t("ui.buy.intro"))
        self.email_label.setText(t("ui.field.email"))
        self.restaurant_label.setText(t("ui.field.restaurant"))
        self.email.setPlaceholderText("owner@example.com")
        self.submit.setText(t("ui.buy.continue"))
        self.back.setText(t("ui.back"))

    def start(self) -> None:
        """Validate, then create the Checkout session in the background."""
        email, name = self.email.text().strip(), self.restaurant.text().strip()
        if not valid_email(email):
            self.host.show_error(lambda: t("ui.error.email"))
            return
        if not name:
            self.host.show_error(lambda: t("ui.error.restaurant"))
            return
        self.host.clear_message()
        self.submit.setEnabled(False)
        self.host.worker.call("checkout", "start_checkout", email, name, 1)

    def finished(self, tag: str, result) -> None:
        """Checkout created: open it in the browser and wait (or a terminal was added)."""
        if tag == "add_preview":
            self._offer_add(result)
            return
        if tag == "add_terminal":
            self.host.show_page("overview")
            self.host.show_info(lambda: t("ui.add.done"))
            return
        if tag != "checkout":
            return
        self.submit.setEnabled(True)
        self.host.begin_waiting(result)

    def failed(self, tag: str, error) -> None:
        """Checkout could not be created; an existing subscriber is offered "add this terminal"."""
        if tag not in ("checkout", "add_preview", "add_terminal"):
            return
        self.submit.setEnabled(True)
        if tag == "checkout" and getattr(error, "code", None) == "subscription_exists":
            # Never a second subscription unless asked: show the price of one more terminal first.
            self.host.worker.call("add_preview", "add_terminal", self.email.text().strip())
            return
        self.host.show_error(lambda: describe(error))

    def _offer_add(self, preview) -> None:
        price = f"{preview.amount_due / 100:.2f} {preview.currency.upper()}"
        text = t("ui.add.text", now=preview.quantity_now, new=preview.quantity_new, price=price)
        if preview.quantity_new <= preview.quantity_now:
            text = t("ui.add.free")
        if self.host.confirm(t("ui.add.title"), text, t("ui.add.yes")):
            email = self.email.text().strip()
            self.host.worker.call("add_terminal", "add_terminal", email, True, preview.quantity_new)


class WaitPage(Page):
    """ "Waiting for payment…" with a busy bar, "Open payment page again" and Cancel."""

    def __init__(self, host: Host) -> None:
        super().__init__(host, "ui.wait.title")
        self.text = wrapped_label("intro")
        self.bar = QProgressBar()
        self.bar.setRange(0, 0)
        self.bar.setTextVisible(False)
        self.bar.setFixedHeight(6)
        self.reopen = button("wait_reopen")
        self.cancel_button = button("wait_cancel")
        self.reopen.clicked.connect(self._reopen)
        self.cancel_button.clicked.connect(self.cancel)
        row = QHBoxLayout()
        row.addWidget(self.cancel_button)
        row.addStretch(1)
        row.addWidget(self.reopen)
        self.layout_.addWidget(self.text)
        self.layout_.addWidget(self.bar)
        self.layout_.addLayout(row)
        self.layout_.addStretch(1)
        self.checkout: Any = None  # the Checkout being waited for
        self._cancel: threading.Event | None = None
        self.poll_s = 2.0  # how often the agent asks the server whether the payment went through

    def retranslate(self) -> None:
        """Texts in the current language."""
        super().retranslate()
        self.text.setText(t("ui.wait.text"))
        self.reopen.setText(t("ui.wait.reopen"))
        self.cancel_button.setText(t("ui.cancel"))

    def wait_for(self, checkout) -> None:
        """Open ``checkout.url`` in the browser and start waiting for it in the background."""
        self.cancel_pending()
        self.checkout = checkout
        self._cancel = threading.Event()
        self.host.open_url(checkout.url)
        self.host.worker.call(self._tag(), "wait_checkout", checkout.checkout_id, self._cancel, self.poll_s)

    def _tag(self) -> str:
        return f"wait_checkout:{self.checkout.checkout_id if self.checkout is not None else ''}"

    @property
    def waiting(self) -> bool:
        """Whether a payment is being waited for."""
        return self._cancel is not None and not self._cancel.is_set()

    def _reopen(self) -> None:
        if self.checkout is not None:
            self.host.open_url(self.checkout.url)

    def cancel_pending(self) -> None:
        """Stop the background wait, if any (its result will be ignored)."""
        if self._cancel is not None:
            self._cancel.set()
        self._cancel = None

    def cancel(self) -> None:
        """The owner gave up waiting: stop polling and go back."""
        self.cancel_pending()
        self.host.show_page("overview")
        self.host.show_info(lambda: t("ui.wait.cancelled"))

    def finished(self, tag: str, result) -> None:
        """Paid and activated: back to the overview, which now shows the new state."""
        if self.checkout is None or tag != self._tag() or not self.waiting:
            return
        self._cancel = None
        self.host.show_page("overview")
        self.host.show_info(lambda: t("ui.buy.done"))

    def failed(self, tag: str, error) -> None:
        """The wait failed (expired checkout, offline...): say so and let the owner retry."""
        if self.checkout is None or tag != self._tag() or not self.waiting:
            return
        self._cancel = None
        self.host.show_page("buy")
        self.host.show_error(lambda: describe(error))
