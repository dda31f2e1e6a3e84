"""The email catalogue: every message the server sends, as plain text plus escaped HTML, in en and el.

A template is a subject and a body with `{name}` placeholders. `render` fills them from the outbox row's
context. The HTML part is built from the same text: the text and every value are HTML-escaped, blank
lines make paragraphs, and values named `*_url` become links, so a restaurant name such as
`<script>` can never inject markup. A missing placeholder raises `TemplateError` at enqueue time, inside
the caller's transaction, instead of failing later in the worker.

Templates and the context keys each needs:

    welcome               name, seats, manage_url
    activation_code       code, minutes
    payment_failed        portal_url, grace_days
    payment_action_required confirm_url, grace_days (3-D Secure: the bank waits for the owner)
    payment_recovered     (none)
    subscription_ending   ends_on, portal_url
    subscription_cancelled (none)
    trial_ending          ends_on
    terminal_added        terminal_name, when
    terminal_removed      terminal_name, when
    pospal1_takeover      terminal_name, when (a PC of the old POSPal took over with the old unlock token)
    terminal_removed_file terminal_name, when, until (removed while its license file runs: it sells on)
    admin_flag            event_type, event_id, customer_email, amount, detail (English only)
"""

from __future__ import annotations

import html
import string
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from server.errors import TemplateError

LOCALES = ("en", "el")
DEFAULT_LOCALE = "en"


@dataclass(frozen=True)
class RenderedEmail:
    """A message ready for a mailer: subject, plain text, and the matching HTML."""

    subject: str
    text: str
    html: str


_SIGN_EN = "\n\nPOSPal\nhttps://pospal.gr"
_SIGN_EL = "\n\nPOSPal\nhttps://pospal.gr"

# (subject, body) per template and locale. Greek is written for Greek restaurant owners, not machine
# translated: formal plural ("σας"), the terms used on Greek invoices ("συνδρομή", "τερματικό").
CATALOGUE: dict[str, dict[str, tuple[str, str]]] = {
    "welcome": {
        "en": (
            "Welcome to POSPal: your subscription is active",
            "Hello {name},\n\nThank you for subscribing to POSPal. Your subscription is active for "
            "{seats} terminal(s), and the computer you bought from is being activated now.\n\n"
            "To activate another computer, open the POSPal License Agent on it, choose "
            '"Activate this PC" and enter this email address.\n\n'
            "Receipts and billing details: {manage_url}" + _SIGN_EN,
        ),
        "el": (
            "Καλώς ήρθατε στο POSPal: η συνδρομή σας είναι ενεργή",
            "Γεια σας {name},\n\nΣας ευχαριστούμε για τη συνδρομή σας στο POSPal. Η συνδρομή σας είναι "
            "ενεργή για {seats} τερματικό/ά και ο υπολογιστής από τον οποίο αγοράσατε ενεργοποιείται "
            "τώρα.\n\nΓια να ενεργοποιήσετε άλλον υπολογιστή, ανοίξτε σε αυτόν το POSPal License Agent, "
            "επιλέξτε «Ενεργοποίηση αυτού του υπολογιστή» και πληκτρολογήστε αυτή τη διεύθυνση email.\n\n"
            "Αποδείξεις και στοιχεία χρέωσης: {manage_url}" + _SIGN_EL,
        ),
    },
    "activation_code": {
        "en": (
            "Your POSPal code: {code}",
            "Your POSPal code is:\n\n{code}\n\nIt is valid for {minutes} minutes. If you did not ask "
            "for it, you can ignore this email: nobody can use your license without this code." + _SIGN_EN,
        ),
        "el": (
            "Ο κωδικός σας POSPal: {code}",
            "Ο κωδικός σας POSPal είναι:\n\n{code}\n\nΙσχύει για {minutes} λεπτά. Αν δεν τον ζητήσατε "
            "εσείς, αγνοήστε αυτό το μήνυμα: κανείς δεν μπορεί να χρησιμοποιήσει την άδειά σας χωρίς "
            "αυτόν τον κωδικό." + _SIGN_EL,
        ),
    },
    "payment_failed": {
        "en": (
            "POSPal: your payment did not go through",
            "We could not take the payment for your POSPal subscription.\n\nYour terminals keep "
            "working for {grace_days} days while you fix it. Update your card here:\n{portal_url}\n\n"
            "If the payment still fails after that, POSPal will stop taking orders until it is paid."
            + _SIGN_EN,
        ),
        "el": (
            "POSPal: η πληρωμή σας δεν ολοκληρώθηκε",
            "Δεν μπορέσαμε να χρεώσουμε τη συνδρομή σας στο POSPal.\n\nΤα τερματικά σας συνεχίζουν να "
            "λειτουργούν για {grace_days} ημέρες μέχρι να το διορθώσετε. Ενημερώστε την κάρτα σας εδώ:\n"
            "{portal_url}\n\nΑν η πληρωμή αποτύχει ξανά μετά από αυτό το διάστημα, το POSPal θα σταματήσει "
            "να δέχεται παραγγελίες μέχρι να εξοφληθεί." + _SIGN_EL,
        ),
    },
    "payment_action_required": {
        "en": (
            "POSPal: please confirm your payment with your bank",
            "Your bank asks you to confirm the payment for your POSPal subscription (3-D Secure). Your "
            "card is fine: the payment only needs your approval.\n\nConfirm it here:\n{confirm_url}\n\n"
            "Your terminals keep working for {grace_days} days meanwhile. If the payment is not confirmed "
            "by then, POSPal will stop taking orders until it is." + _SIGN_EN,
        ),
        "el": (
            "POSPal: επιβεβαιώστε την πληρωμή σας στην τράπεζά σας",
            "Η τράπεζά σας ζητά να επιβεβαιώσετε την πληρωμή της συνδρομής σας στο POSPal (3-D Secure). Η "
            "κάρτα σας είναι εντάξει: η πληρωμή χρειάζεται μόνο την έγκρισή σας.\n\nΕπιβεβαιώστε την "
            "εδώ:\n{confirm_url}\n\nΤα τερματικά σας συνεχίζουν να λειτουργούν για {grace_days} ημέρες. "
            "Αν η πληρωμή δεν επιβεβαιωθεί ως τότε, το POSPal θα σταματήσει να δέχεται παραγγελίες μέχρι "
            "να επιβεβαιωθεί." + _SIGN_EL,
        ),
    },
    "payment_recovered": {
        "en": (
            "POSPal: payment received, thank you",
            "Your payment went through and your POSPal subscription is active again. There is "
            "nothing else to do." + _SIGN_EN,
        ),
        "el": (
            "POSPal: η πληρωμή ελήφθη, σας ευχαριστούμε",
            "Η πληρωμή σας ολοκληρώθηκε και η συνδρομή σας στο POSPal είναι ξανά ενεργή. Δεν χρειάζεται "
            "να κάνετε τίποτε άλλο." + _SIGN_EL,
        ),
    },
    "subscription_ending": {
        "en": (
            "POSPal: your subscription ends on {ends_on}",
            "Your POSPal subscription has been cancelled and ends on {ends_on}. Your terminals keep "
            "working until then.\n\nChanged your mind? You can keep your subscription here:\n"
            "{portal_url}" + _SIGN_EN,
        ),
        "el": (
            "POSPal: η συνδρομή σας λήγει στις {ends_on}",
            "Η συνδρομή σας στο POSPal ακυρώθηκε και λήγει στις {ends_on}. Τα τερματικά σας συνεχίζουν "
            "να λειτουργούν μέχρι τότε.\n\nΆλλαξατε γνώμη; Μπορείτε να διατηρήσετε τη συνδρομή σας εδώ:\n"
            "{portal_url}" + _SIGN_EL,
        ),
    },
    "subscription_cancelled": {
        "en": (
            "POSPal: your subscription has ended",
            "Your POSPal subscription has ended, and your terminals no longer take orders.\n\n"
            'You can subscribe again at any time from the POSPal License Agent ("Buy").' + _SIGN_EN,
        ),
        "el": (
            "POSPal: η συνδρομή σας έληξε",
            "Η συνδρομή σας στο POSPal έληξε και τα τερματικά σας δεν δέχονται πλέον παραγγελίες.\n\n"
            "Μπορείτε να εγγραφείτε ξανά όποτε θέλετε από το POSPal License Agent («Αγορά»)." + _SIGN_EL,
        ),
    },
    "trial_ending": {
        "en": (
            "POSPal: your trial ends on {ends_on}",
            "Your free POSPal trial ends on {ends_on}, in 3 days. To keep taking orders after that, "
            'open the POSPal License Agent and choose "Buy".' + _SIGN_EN,
        ),
        "el": (
            "POSPal: η δοκιμή σας λήγει στις {ends_on}",
            "Η δωρεάν δοκιμή σας στο POSPal λήγει στις {ends_on}, σε 3 ημέρες. Για να συνεχίσετε να "
            "δέχεστε παραγγελίες, ανοίξτε το POSPal License Agent και επιλέξτε «Αγορά»." + _SIGN_EL,
        ),
    },
    "terminal_added": {
        "en": (
            "POSPal: a terminal was activated on your license",
            'The terminal "{terminal_name}" was activated on your POSPal license on {when}.\n\n'
            'If this was not you, remove it from the POSPal License Agent ("Move the license") and '
            "contact us." + _SIGN_EN,
        ),
        "el": (
            "POSPal: ενεργοποιήθηκε τερματικό στην άδειά σας",
            "Το τερματικό «{terminal_name}» ενεργοποιήθηκε στην άδειά σας POSPal στις {when}.\n\n"
            "Αν δεν το κάνατε εσείς, αφαιρέστε το από το POSPal License Agent («Μεταφορά άδειας») και "
            "επικοινωνήστε μαζί μας." + _SIGN_EL,
        ),
    },
    "pospal1_takeover": {
        "en": (
            "POSPal: your license moved to the new POSPal",
            'The computer "{terminal_name}" moved your POSPal license to the new POSPal License Agent on '
            "{when}, with the unlock key of the old POSPal app. Your subscription goes on as it was: "
            "nothing is charged again.\n\nThe old unlock key works only this once. Other computers "
            "join with a code sent to this address.\n\nIf this was not you, contact us at once." + _SIGN_EN,
        ),
        "el": (
            "POSPal: η άδειά σας μεταφέρθηκε στο νέο POSPal",
            "Ο υπολογιστής «{terminal_name}» μετέφερε την άδεια POSPal σας στο νέο POSPal License Agent "
            "στις {when}, με το κλειδί ξεκλειδώματος της παλιάς εφαρμογής POSPal. Η συνδρομή σας "
            "συνεχίζεται όπως ήταν: δεν χρεώνεται τίποτα ξανά.\n\nΤο παλιό κλειδί ισχύει μόνο αυτή τη "
            "φορά. Οι άλλοι υπολογιστές προστίθενται με κωδικό που στέλνεται σε αυτή τη διεύθυνση.\n\n"
            "Αν δεν το κάνατε εσείς, επικοινωνήστε μαζί μας αμέσως." + _SIGN_EL,
        ),
    },
    "terminal_removed": {
        "en": (
            "POSPal: a terminal was removed from your license",
            'The terminal "{terminal_name}" was removed from your POSPal license on {when}. It no '
            "longer takes orders.\n\nIf this was not you, contact us." + _SIGN_EN,
        ),
        "el": (
            "POSPal: αφαιρέθηκε τερματικό από την άδειά σας",
            "Το τερματικό «{terminal_name}» αφαιρέθηκε από την άδειά σας POSPal στις {when} και δεν "
            "δέχεται πλέον παραγγελίες.\n\nΑν δεν το κάνατε εσείς, επικοινωνήστε μαζί μας." + _SIGN_EL,
        ),
    },
    "terminal_removed_file": {
        "en": (
            "POSPal: a terminal was removed from your license (its license file still runs)",
            'The terminal "{terminal_name}" was removed from your POSPal license on {when}. It was '
            "licensed by file and cannot be told: it keeps taking orders, and keeps its seat, until its "
            "license file ends on {until}.\n\nTo free the seat now, upload the deactivation file that "
            'terminal writes on the server\'s "Activation by file" page.\n\nIf this was not you, contact us.'
            + _SIGN_EN,
        ),
        "el": (
            "POSPal: αφαιρέθηκε τερματικό από την άδειά σας (το αρχείο άδειάς του ισχύει ακόμη)",
            "Το τερματικό «{terminal_name}» αφαιρέθηκε από την άδειά σας POSPal στις {when}. Έχει άδεια "
            "από αρχείο και δεν μπορεί να ενημερωθεί: δέχεται παραγγελίες και κρατά τη θέση του ως τη λήξη "
            "του αρχείου άδειας, στις {until}.\n\nΓια να ελευθερώσετε τη θέση τώρα, ανεβάστε το αρχείο "
            "απενεργοποίησης που γράφει εκείνο το τερματικό στη σελίδα «Ενεργοποίηση με αρχείο» του "
            "διακομιστή.\n\nΑν δεν το κάνατε εσείς, επικοινωνήστε μαζί μας." + _SIGN_EL,
        ),
    },
    "seats_exceeded": {
        "en": (
            "POSPal: some terminals are over your subscription's seats",
            "Your POSPal subscription now has {seats} terminal seat(s), fewer than the terminals in use. "
            "These terminals no longer take orders: {terminals}.\n\nThe terminals seen least recently "
            "stopped first. To choose which terminals stay, open the POSPal License Agent on one of them "
            '("Terminals"); to use them all again, raise the quantity in "Manage billing".' + _SIGN_EN,
        ),
        "el": (
            "POSPal: κάποια τερματικά ξεπερνούν τις θέσεις της συνδρομής σας",
            "Η συνδρομή σας POSPal έχει πλέον {seats} θέση(-εις) τερματικών, λιγότερες από τα τερματικά που "
            "χρησιμοποιείτε. Αυτά τα τερματικά δεν δέχονται πλέον παραγγελίες: {terminals}.\n\n"
            "Σταμάτησαν πρώτα όσα εμφανίστηκαν λιγότερο πρόσφατα. Για να διαλέξετε ποια μένουν, ανοίξτε "
            "το POSPal License Agent σε ένα από αυτά («Τερματικά»)· για να λειτουργήσουν ξανά όλα, "
            "αυξήστε την ποσότητα στη «Διαχείριση χρέωσης»." + _SIGN_EL,
        ),
    },
    "admin_flag": {
        "en": (
            "[POSPal admin] {event_type} for {customer_email}",
            "A billing event needs a look.\n\nEvent: {event_type} ({event_id})\nCustomer: "
            "{customer_email}\nAmount: {amount}\nDetail: {detail}\n\nThe event is recorded and flagged "
            "in stripe_events; the license was not changed automatically.",
        ),
    },
}


def normalize_locale(locale: str | None) -> str:
    """Map a locale such as ``el-GR`` or ``EN`` to a catalogue locale, falling back to English."""
    if not locale:
        return DEFAULT_LOCALE
    short = locale.replace("_", "-").split("-")[0].lower()
    return short if short in LOCALES else DEFAULT_LOCALE


def placeholders(template: str) -> set[str]:
    """Return the context keys a template needs (from both its subject and body)."""
    subject, body = _pick(template, DEFAULT_LOCALE)
    names: set[str] = set()
    for part in (subject, body):
        names.update(f[1] for f in string.Formatter().parse(part) if f[1])
    return names


def check(template: str, context: Mapping[str, Any]) -> None:
    """Raise `TemplateError` unless `template` exists and `context` has every key it needs."""
    missing = placeholders(template) - set(context)
    if missing:
        raise TemplateError(f"email template {template!r} needs {sorted(missing)}")


def render(template: str, locale: str | None, context: Mapping[str, Any]) -> RenderedEmail:
    """Render `template` in `locale` (falling back to English) with `context`."""
    check(template, context)
    subject, body = _pick(template, normalize_locale(locale))
    values = {k: _text(v) for k, v in context.items()}
    text = body.format_map(values)
    html_values = {k: _html_value(k, v) for k, v in values.items()}
    html_body = html.escape(body, quote=False).format_map(html_values)
    paragraphs = "".join(f"<p>{p.replace(chr(10), '<br>')}</p>" for p in html_body.split("\n\n"))
    html_doc = (
        '<!doctype html><html><head><meta charset="utf-8"></head>'
        f'<body style="font-family:sans-serif;line-height:1.5">{paragraphs}</body></html>'
    )
    # Subjects are single-line headers: no newline may come from a value.
    return RenderedEmail(subject=" ".join(subject.format_map(values).split()), text=text, html=html_doc)


def _pick(template: str, locale: str) -> tuple[str, str]:
    try:
        variants = CATALOGUE[template]
    except KeyError:
        raise TemplateError(f"unknown email template {template!r}") from None
    return variants.get(locale) or variants[DEFAULT_LOCALE]


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _html_value(name: str, value: str) -> str:
    escaped = html.escape(value, quote=True)
    if name.endswith("_url") and value.startswith(("https://", "http://")):
        return f'<a href="{escaped}">{escaped}</a>'
    return escaped
