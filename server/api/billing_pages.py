"""HTML for the billing pages this server serves: sandbox checkout and portal, success, cancel, manage.

Every value shown is HTML-escaped. Pages are plain forms (no script) except "manage billing", which
asks for an emailed code and then opens the Customer Portal through the JSON API.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

SANDBOX_PRICE_EUR = 20

_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:34rem;margin:3rem auto;padding:0 1rem;line-height:1.5}"
    "button{font-size:1rem;padding:.5rem 1rem;margin:.25rem .25rem .25rem 0;cursor:pointer}"
    ".note{color:#555;font-size:.9rem}.bad{color:#a00}.ok{color:#070}"
    "input{font-size:1rem;padding:.4rem;width:100%;box-sizing:border-box;margin:.25rem 0 .75rem}"
)


def page(title: str, body: str) -> str:
    """Wrap `body` (already escaped HTML) in a complete page."""
    return (
        '<!doctype html><html><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body><h1>{html.escape(title)}</h1>{body}</body></html>"
    )


def _buttons(
    action_url: str, actions: Iterable[tuple[str, str]], hidden: Mapping[str, str] | None = None
) -> str:
    fields = "".join(
        f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
        for k, v in (hidden or {}).items()
    )
    buttons = "".join(
        f'<button type="submit" name="action" value="{html.escape(value)}">{html.escape(label)}</button>'
        for value, label in actions
    )
    return f'<form method="post" action="{html.escape(action_url)}">{fields}{buttons}</form>'


def _day(ts: int | None) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%d/%m/%Y") if ts else "-"


def subscription_block(action_url: str, subscription_id: str, sub: Mapping[str, Any]) -> str:
    """A sandbox subscription's state and the buttons that change it."""
    status = str(sub.get("status"))
    lines = [
        f"<p>Subscription <code>{html.escape(subscription_id)}</code>: <b>{html.escape(status)}</b>, "
        f"{int(sub.get('quantity') or 1)} terminal(s), "
        f"current period ends {_day(sub.get('current_period_end'))}.</p>"
    ]
    if sub.get("cancel_at_period_end"):
        lines.append(f"<p>Cancels at the end of the period ({_day(sub.get('cancel_at'))}).</p>")
    actions: list[tuple[str, str]] = []
    if status != "canceled":
        actions.append(("fail_renewal", "Fail next payment"))
        actions.append(("require_action", "Next payment needs 3-D Secure"))
        if status in ("past_due", "unpaid"):
            actions.append(("pay_now", "Pay now (recover)"))
        if sub.get("cancel_at_period_end"):
            actions.append(("resume", "Resume"))
        else:
            actions.append(("cancel_at_period_end", "Cancel at period end"))
        actions.append(("cancel_now", "Cancel now"))
        lines.append(_buttons(action_url, actions, {"subscription_id": subscription_id}))
    return "".join(lines)


def sandbox_checkout(checkout_id: str, data: Mapping[str, Any], sub: Mapping[str, Any] | None) -> str:
    """The sandbox checkout page in each of its states."""
    url = f"/sandbox/checkout/{checkout_id}"
    quantity = int(data.get("quantity") or 1)
    intro = (
        f"<p class=note>Sandbox billing: no card is needed and no money moves.</p>"
        f"<p>{html.escape(str(data.get('email') or ''))}<br>POSPal, {quantity} terminal(s) × "
        f"{SANDBOX_PRICE_EUR} EUR per month = <b>{quantity * SANDBOX_PRICE_EUR} EUR per month</b></p>"
    )
    status = data.get("status")
    if status == "open":
        declined = (
            "<p class=bad>The card was declined (sandbox). Try again.</p>" if data.get("declined") else ""
        )
        body = (
            intro + declined + _buttons(url, [("pay", "Pay"), ("fail", "Fail payment"), ("cancel", "Cancel")])
        )
        return page("POSPal checkout (sandbox)", body)
    if status == "expired":
        return page("POSPal checkout (sandbox)", intro + "<p>This checkout was cancelled.</p>")
    body = intro + "<p class=ok>Paid. The POSPal License Agent activates this PC by itself.</p>"
    if sub is not None and data.get("subscription"):
        body += subscription_block(url, str(data["subscription"]), sub)
    return page("POSPal checkout (sandbox)", body)


def sandbox_portal(
    portal_id: str, email: str, subscriptions: list[tuple[str, dict[str, Any]]], return_url: str
) -> str:
    """The sandbox Customer Portal: every subscription of the customer, with its buttons."""
    url = f"/sandbox/portal/{portal_id}"
    blocks = (
        "".join(subscription_block(url, sid, sub) for sid, sub in subscriptions) or "<p>No subscriptions.</p>"
    )
    back = f'<p><a href="{html.escape(return_url)}">Back</a></p>' if return_url else ""
    body = f"<p class=note>Sandbox billing portal for {html.escape(email)}. No money moves.</p>{blocks}{back}"
    return page("POSPal billing (sandbox)", body)


def message(title: str, text: str) -> str:
    """A page with one short message."""
    return page(title, f"<p>{html.escape(text)}</p>")


_MANAGE = {
    "en": {
        "title": "Manage your POSPal subscription",
        "email": "The email address of your subscription",
        "send": "Email me a code",
        "code": "The 6-digit code from the email",
        "open": "Open billing",
        "sent": "If this address has a subscription, a code is on its way.",
        "failed": "That did not work: ",
    },
    "el": {
        "title": "Διαχείριση της συνδρομής σας POSPal",
        "email": "Η διεύθυνση email της συνδρομής σας",
        "send": "Στείλτε μου κωδικό",
        "code": "Ο 6ψήφιος κωδικός από το email",
        "open": "Άνοιγμα χρεώσεων",
        "sent": "Αν αυτή η διεύθυνση έχει συνδρομή, ο κωδικός έρχεται στο email σας.",
        "failed": "Δεν έγινε: ",
    },
}


def manage(locale: str) -> str:
    """Email, then code, then a redirect to the Customer Portal (`POST /v1/codes`, `POST /v1/portal`)."""
    t = {k: html.escape(v) for k, v in _MANAGE.get(locale, _MANAGE["en"]).items()}
    loc = html.escape(locale)
    body = f"""
<form id=f1><label>{t["email"]}<input id=email type=email required autocomplete=email></label>
<button>{t["send"]}</button></form>
<form id=f2 hidden><label>{t["code"]}<input id=code inputmode=numeric required autocomplete=one-time-code>
</label><button>{t["open"]}</button></form><p id=msg class=note></p>
<script>
const msg = document.getElementById("msg");
async function post(path, body) {{
  const r = await fetch(path, {{method: "POST", headers: {{"Content-Type": "application/json"}},
    body: JSON.stringify(body)}});
  const j = await r.json().catch(() => ({{}}));
  if (!r.ok) throw new Error(j.message || r.status);
  return j;
}}
document.getElementById("f1").onsubmit = async (e) => {{
  e.preventDefault();
  try {{
    await post("/v1/codes", {{email: email.value, purpose: "portal", locale: "{loc}"}});
    msg.textContent = "{t["sent"]}"; document.getElementById("f2").hidden = false;
  }} catch (err) {{ msg.textContent = "{t["failed"]}" + err.message; }}
}};
document.getElementById("f2").onsubmit = async (e) => {{
  e.preventDefault();
  try {{
    const j = await post("/v1/portal", {{email: email.value, code: code.value, return_url: location.href}});
    location.href = j.url;
  }} catch (err) {{ msg.textContent = "{t["failed"]}" + err.message; }}
}};
</script>"""
    return page(_MANAGE.get(locale, _MANAGE["en"])["title"], body)
