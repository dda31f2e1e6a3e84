"""HTML of the owner's page (`/owner`), in English and Greek: plain forms, no script, every value escaped."""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from pospal_protocol import text
from server.api.billing_pages import page

TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "title": "Your POSPal terminals",
        "intro": "Enter the e-mail address of your subscription: we send a code to it.",
        "email": "E-mail address",
        "send": "E-mail me a code",
        "code": "The 6-digit code from the e-mail",
        "login": "Open my page",
        "name": "Terminal",
        "version": "Version",
        "seen": "Last seen",
        "never": "never",
        "rename": "Rename",
        "remove": "Remove",
        "active": "Active: {seats} terminal(s).",
        "paused": "Paused for the season until {date}: nothing is charged, every terminal keeps its place.",
        "paused_open": "Paused for the season until you resume: nothing is charged, terminals keep their "
        "place.",
        "ended": "There is no running subscription.",
        "pause": "Pause for the season",
        "until": "Resume on (empty: until I resume)",
        "resume": "Resume now",
        "portal": "Invoices and card (Stripe)",
        "logout": "Sign out",
        "failed": "That did not work",
        "again": "Back",
    },
    "el": {
        "title": "Τα τερματικά σας POSPal",
        "intro": "Πληκτρολογήστε τη διεύθυνση email της συνδρομής σας: θα σας στείλουμε κωδικό.",
        "email": "Διεύθυνση email",
        "send": "Στείλτε μου κωδικό",
        "code": "Ο 6ψήφιος κωδικός από το email",
        "login": "Άνοιγμα της σελίδας μου",
        "name": "Τερματικό",
        "version": "Έκδοση",
        "seen": "Τελευταία σύνδεση",
        "never": "ποτέ",
        "rename": "Μετονομασία",
        "remove": "Αφαίρεση",
        "active": "Ενεργή: {seats} τερματικό/ά.",
        "paused": "Σε παύση για τη σεζόν έως τις {date}: δεν χρεώνεται τίποτα, κάθε τερματικό κρατά τη θέση "
        "του.",
        "paused_open": "Σε παύση για τη σεζόν μέχρι να την επαναφέρετε: δεν χρεώνεται τίποτα, τα τερματικά "
        "κρατούν τη θέση τους.",
        "ended": "Δεν υπάρχει ενεργή συνδρομή.",
        "pause": "Παύση για τη σεζόν",
        "until": "Επαναφορά στις (κενό: μέχρι να την επαναφέρω)",
        "resume": "Επαναφορά τώρα",
        "portal": "Τιμολόγια και κάρτα (Stripe)",
        "logout": "Αποσύνδεση",
        "failed": "Δεν έγινε",
        "again": "Πίσω",
    },
}


def _t(lang: str, key: str, **kw: Any) -> str:
    return html.escape(TEXTS.get(lang, TEXTS["en"])[key].format(**kw))


def _form(action: str, csrf: str, lang: str, inner: str, button: str) -> str:
    return (
        f'<form method="post" action="{html.escape(action)}">'
        f'<input type="hidden" name="csrf" value="{html.escape(csrf)}">'
        f'<input type="hidden" name="lang" value="{html.escape(lang)}">'
        f'{inner}<button type="submit">{html.escape(button)}</button></form>'
    )


def start(lang: str, csrf: str) -> str:
    """Step 1: the e-mail."""
    inner = f'<label>{_t(lang, "email")} <input type="email" name="email" required></label> '
    body = f"<p>{_t(lang, 'intro')}</p>" + _form("/owner/code", csrf, lang, inner, TEXTS[lang]["send"])
    return page(TEXTS[lang]["title"], body)


def code(lang: str, csrf: str, email: str) -> str:
    """Step 2: the code sent to `email`."""
    inner = (
        f'<input type="hidden" name="email" value="{html.escape(email)}">'
        f'<label>{_t(lang, "code")} <input name="code" inputmode="numeric" autocomplete="one-time-code" '
        "required></label> "
    )
    return page(TEXTS[lang]["title"], _form("/owner/login", csrf, lang, inner, TEXTS[lang]["login"]))


def _when(value: datetime | None, lang: str) -> str:
    return value.astimezone(UTC).strftime("%d/%m/%Y %H:%M UTC") if value else _t(lang, "never")


def terminals(
    lang: str, csrf: str, email: str, rows: Iterable[Mapping[str, Any]], sub: Mapping[str, Any] | None
) -> str:
    """The signed-in page: the terminals (name, version, last seen) with rename/remove, pause, portal."""
    table = [
        f"<table><tr><th>{_t(lang, 'name')}</th><th>{_t(lang, 'version')}</th><th>{_t(lang, 'seen')}</th>"
        "<th></th></tr>"
    ]
    for row in rows:
        mid = html.escape(str(row["machine_id"]))
        name = html.escape(text.escape(str(row["terminal_name"] or row["machine_id"])))
        rename = _form(
            "/owner/rename",
            csrf,
            lang,
            f'<input type="hidden" name="machine_id" value="{mid}">'
            f'<input name="name" value="{name}" maxlength="100" aria-label="{_t(lang, "rename")}"> ',
            TEXTS[lang]["rename"],
        )
        remove = _form(
            "/owner/remove",
            csrf,
            lang,
            f'<input type="hidden" name="machine_id" value="{mid}">',
            TEXTS[lang]["remove"],
        )
        table.append(
            f'<tr data-machine="{mid}"><td>{name}</td><td>{html.escape(str(row["version"] or "-"))}</td>'
            f"<td>{_when(row['last_seen'], lang)}</td><td>{rename}{remove}</td></tr>"
        )
    table.append("</table>")
    body = [f"<p>{html.escape(email)}</p>", _status(lang, csrf, sub), "".join(table)]
    body.append(_form("/owner/portal", csrf, lang, "", TEXTS[lang]["portal"]))
    body.append(_form("/owner/logout", csrf, lang, "", TEXTS[lang]["logout"]))
    return page(TEXTS[lang]["title"], "".join(body))


def _status(lang: str, csrf: str, sub: Mapping[str, Any] | None) -> str:
    if sub is None:
        return f'<p class="state">{_t(lang, "ended")}</p>'
    if sub["paused"]:
        resumes = sub["resumes_at"]
        line = _t(lang, "paused", date=resumes.strftime("%d/%m/%Y")) if resumes else _t(lang, "paused_open")
        return f'<p class="state">{line}</p>' + _form("/owner/resume", csrf, lang, "", TEXTS[lang]["resume"])
    inner = f'<label>{_t(lang, "until")} <input type="date" name="resumes_on"></label> '
    return f'<p class="state">{_t(lang, "active", seats=sub["seats"])}</p>' + _form(
        "/owner/pause", csrf, lang, inner, TEXTS[lang]["pause"]
    )


def failed(lang: str, message: str) -> str:
    """A refusal, with the way back."""
    back = f'<a href="/owner?lang={html.escape(lang)}">{_t(lang, "again")}</a>'
    body = f"<p>{html.escape(message)}</p><p>{back}</p>"
    return page(TEXTS[lang]["failed"], body)
