"""HTML of the activation-by-file page (`/offline`), in English and Greek.

Plain forms, no script: step 1 asks for the owner's e-mail, step 2 for the emailed code and the request
file, and the answer is the license file as a download (or a page saying why not). Every value shown is
HTML-escaped; every form carries the CSRF token (`server/api/offline.py`).
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping
from typing import Any

from pospal_protocol import text
from server.api.billing_pages import page

TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "title": "Activate a POSPal terminal without internet",
        "intro": "On the terminal, choose \u201cActivate by file\u201d (or run `pospal-agent activate "
        "--offline-request FILE`) and bring the request file here. You need the e-mail address of "
        "the subscription.",
        "email": "The e-mail address of your subscription",
        "send": "E-mail me a code",
        "sent": "If this address has a subscription, a 6-digit code is on its way to {email}.",
        "code": "The 6-digit code from the e-mail",
        "file": "The activation request file from the terminal",
        "activate": "Get the license file",
        "done": "Copy the downloaded license file to the terminal and import it there.",
        "failed": "That did not work",
        "again": "Start again",
        "terminals": "Terminals using the seats:",
        "never": "never",
        "deactivate_intro": "Giving a terminal up? Upload the deactivation file it wrote to free its seat "
        "before its license file ends.",
        "deactivate_file": "The deactivation file from the terminal",
        "deactivate": "Free the seat",
        "deactivated": "\u201c{name}\u201d is deactivated and its seat is free.",
    },
    "el": {
        "title": "Ενεργοποίηση τερματικού POSPal χωρίς διαδίκτυο",
        "intro": "Στο τερματικό επιλέξτε «Ενεργοποίηση με αρχείο» (ή εκτελέστε `pospal-agent activate "
        "--offline-request FILE`) και φέρτε εδώ το αρχείο αιτήματος. Χρειάζεστε τη διεύθυνση email "
        "της συνδρομής.",
        "email": "Η διεύθυνση email της συνδρομής σας",
        "send": "Στείλτε μου κωδικό",
        "sent": "Αν αυτή η διεύθυνση έχει συνδρομή, ένας 6ψήφιος κωδικός έρχεται στο {email}.",
        "code": "Ο 6ψήφιος κωδικός από το email",
        "file": "Το αρχείο αιτήματος ενεργοποίησης από το τερματικό",
        "activate": "Λήψη αρχείου άδειας",
        "done": "Αντιγράψτε το αρχείο άδειας στο τερματικό και εισαγάγετέ το εκεί.",
        "failed": "Δεν έγινε",
        "again": "Ξεκινήστε ξανά",
        "terminals": "Τερματικά που χρησιμοποιούν τις θέσεις:",
        "never": "ποτέ",
        "deactivate_intro": "Καταργείτε ένα τερματικό; Ανεβάστε το αρχείο απενεργοποίησης που έγραψε, "
        "για να ελευθερωθεί η θέση του πριν λήξει το αρχείο άδειας.",
        "deactivate_file": "Το αρχείο απενεργοποίησης από το τερματικό",
        "deactivate": "Ελευθέρωση θέσης",
        "deactivated": "Το «{name}» απενεργοποιήθηκε και η θέση του είναι ελεύθερη.",
    },
}


def _t(lang: str) -> Mapping[str, str]:
    return TEXTS.get(lang, TEXTS["en"])


def _hidden(fields: Mapping[str, str]) -> str:
    return "".join(
        f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">' for k, v in fields.items()
    )


def start(lang: str, csrf: str, action: str, deactivate_action: str | None = None) -> str:
    """Step 1: the owner's e-mail address; and a terminal's deactivation file, to free its seat."""
    t = _t(lang)
    body = (
        f"<p class=note>{html.escape(t['intro'])}</p>"
        f'<form method="post" action="{html.escape(action)}">{_hidden({"csrf": csrf, "lang": lang})}'
        f'<label>{html.escape(t["email"])}<input type="email" name="email" required autocomplete="email">'
        f"</label><button type=submit>{html.escape(t['send'])}</button></form>"
    )
    if deactivate_action:
        body += (
            f"<p class=note>{html.escape(t['deactivate_intro'])}</p>"
            f'<form method="post" action="{html.escape(deactivate_action)}" enctype="multipart/form-data">'
            f"{_hidden({'csrf': csrf, 'lang': lang})}<label>{html.escape(t['deactivate_file'])}"
            f'<input type="file" name="deactivation" required accept=".json"></label>'
            f"<button type=submit>{html.escape(t['deactivate'])}</button></form>"
        )
    return page(t["title"], body)


def deactivated(lang: str, name: str) -> str:
    """A terminal's deactivation file was accepted: its seat is free."""
    t = _t(lang)
    return page(t["title"], f"<p>{html.escape(t['deactivated'].format(name=name))}</p>")


def upload(lang: str, csrf: str, action: str, email: str) -> str:
    """Step 2: the emailed code and the request file."""
    t = _t(lang)
    body = (
        f"<p>{html.escape(t['sent'].format(email=email))}</p>"
        f'<form method="post" action="{html.escape(action)}" enctype="multipart/form-data">'
        f"{_hidden({'csrf': csrf, 'lang': lang, 'email': email})}"
        f'<label>{html.escape(t["code"])}<input name="code" inputmode="numeric" required '
        f'autocomplete="one-time-code"></label>'
        f'<label>{html.escape(t["file"])}<input type="file" name="request" required accept=".json"></label>'
        f"<button type=submit>{html.escape(t['activate'])}</button></form>"
    )
    return page(t["title"], body)


def failed(lang: str, message: str, again: str, terminals: Iterable[Mapping[str, Any]] = ()) -> str:
    """Why the request was refused (and, for full seats, which terminals hold them)."""
    t = _t(lang)
    rows = "".join(
        # Names stored before the text rule may hold bidi characters: shown escaped, never obeyed.
        f"<li>{html.escape(text.escape(str(row.get('terminal_name') or row.get('machine_id') or '')))} "
        f"({html.escape(str(row.get('last_seen') or t['never']))})</li>"
        for row in terminals
    )
    listing = f"<p>{html.escape(t['terminals'])}</p><ul>{rows}</ul>" if rows else ""
    body = (
        f"<p class=bad>{html.escape(t['failed'])}: {html.escape(message)}</p>{listing}"
        f'<p><a href="{html.escape(again)}">{html.escape(t["again"])}</a></p>'
    )
    return page(t["title"], body)
