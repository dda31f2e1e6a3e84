"""The owner's own page (`/owner`): behind the e-mailed code, the terminals, rename/remove, pause, portal.

An owner whose till is dead has nowhere else to go: the tray runs on the till. Steps:

1. `GET /owner` asks for the e-mail; `POST /owner/code` sends an `owner` code (the same codes, limits
   and answers as `POST /v1/codes`, whether or not the address is a customer's);
2. `POST /owner/login` proves the code and sets the session: an HttpOnly, SameSite=Strict cookie on
   `/owner` holding the customer id and an expiry (30 minutes) under an HMAC of the server secret;
3. `GET /owner/terminals` lists the license's terminals (name, agent version, last seen) with forms to
   rename or remove one, pause for the season or resume (`server/api/pause.py`), and open Stripe's portal.

Every form is same-origin only: its CSRF token is an HMAC of the session cookie (before sign-in, of a
random cookie set with the page), and an `Origin` of another site is refused. Every change is audited
as `owner:<customer id>`, as the API's owner routes do. Server-rendered, en/el by `?lang=`, the form's
choice or `Accept-Language`.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import select

from pospal_protocol import text
from pospal_protocol.emails import is_email
from server import codes, licensing, seats
from server.api import owner_page_html as pages
from server.api.deps import CODE_GUESSES_PER_HOUR_PER_IP, Services, limit_per_ip, services
from server.api.pause import LONGEST_PAUSE, apply_pause
from server.errors import ApiError, BillingError, InvalidRequest, NoSubscription, NotFound
from server.models import AgentVersion, Customer, License, Machine, Subscription

router = APIRouter(tags=["owner page"], include_in_schema=False)

SESSION_COOKIE = "pospal_owner"
FORM_COOKIE = "pospal_owner_form"
SESSION_TTL = timedelta(minutes=30)
CODES_PER_HOUR_PER_IP = 30


class FormRefused(ApiError):
    """The form did not come from this site's own page, or the session ended."""

    code = "csrf"
    default_message = "This page has expired or did not come from this site. Open it again."


def _lang(request: Request, chosen: str | None = None) -> str:
    for value in (chosen, request.query_params.get("lang")):
        if value in ("el", "en"):
            return value
    return "el" if request.headers.get("accept-language", "").lower().startswith("el") else "en"


def _mac(secret: bytes, purpose: str, value: str) -> str:
    return hmac.new(secret, f"owner-{purpose}:{value}".encode(), hashlib.sha256).hexdigest()[:32]


def _session(request: Request, svc: Services) -> str | None:
    """The signed-in customer's id, or None (no cookie, forged, or expired)."""
    raw = request.cookies.get(SESSION_COOKIE) or ""
    parts = raw.split(".")
    if len(parts) != 3 or not parts[1].isdigit():
        return None
    customer_id, expires, mac = parts
    if not hmac.compare_digest(mac, _mac(svc.secret, "session", f"{customer_id}:{expires}")):
        return None
    return customer_id if svc.clock.now().timestamp() < int(expires) else None


def _check_form(request: Request, csrf: str, cookie: str, svc: Services) -> None:
    """Refuse a form whose token is not the HMAC of this browser's cookie, or from another origin."""
    value = request.cookies.get(cookie) or ""
    if not value or not csrf or not hmac.compare_digest(csrf, _mac(svc.secret, "csrf", value)):
        raise FormRefused()
    origin = request.headers.get("origin")
    if origin is not None:
        own = {_origin(svc.settings.public_url), _origin(str(request.base_url))}
        if origin.rstrip("/") not in own:
            raise FormRefused()


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _html(
    body: str, svc: Services, status: int = 200, cookies: dict[str, tuple[str, int]] | None = None
) -> Response:
    answer = HTMLResponse(body, status_code=status, headers={"Cache-Control": "no-store"})
    for name, (value, max_age) in (cookies or {}).items():
        _set_cookie(answer, name, value, max_age, svc)
    return answer


def _set_cookie(answer: Response, name: str, value: str, max_age: int, svc: Services) -> None:
    answer.set_cookie(
        name,
        value,
        max_age=max_age,
        path="/owner",
        httponly=True,
        samesite="strict",
        secure=svc.settings.public_url.startswith("https:"),
    )


def _refused(lang: str, exc: ApiError, svc: Services) -> Response:
    return _html(pages.failed(lang, exc.message), svc, exc.status)


# -- signing in -----------------------------------------------------------------------------------------


@router.get("/owner", response_class=HTMLResponse)
def owner_start(request: Request, svc: Services = Depends(services)) -> Response:
    """Step 1: the e-mail (or straight to the terminals when signed in)."""
    lang = _lang(request)
    if _session(request, svc):
        return RedirectResponse(f"/owner/terminals?lang={lang}", status_code=303)
    form = secrets.token_urlsafe(16)
    csrf = _mac(svc.secret, "csrf", form)
    return _html(pages.start(lang, csrf), svc, cookies={FORM_COOKIE: (form, 7200)})


@router.post("/owner/code", response_class=HTMLResponse)
def owner_code(
    request: Request,
    email: str = Form(""),
    csrf: str = Form(""),
    lang: str = Form("en"),
    svc: Services = Depends(services),
) -> Response:
    """Step 1 answered: e-mail an `owner` code (the same answer whether or not it is a customer)."""
    lang = _lang(request, lang)
    try:
        _check_form(request, csrf, FORM_COOKIE, svc)
        limit_per_ip(request, svc, "codes", CODES_PER_HOUR_PER_IP)
        email = codes.normalize_email(email)
        if not is_email(email):
            raise InvalidRequest("Enter the e-mail address of the subscription.")
        with svc.db.transaction() as session:
            codes.request_code(
                session,
                email=email,
                purpose="owner",
                locale=lang,
                secret=svc.secret,
                limiter=svc.limiter,
                now=svc.clock.now(),
            )
    except ApiError as exc:
        return _refused(lang, exc, svc)
    return _html(pages.code(lang, csrf, email), svc)


@router.post("/owner/login")
def owner_login(
    request: Request,
    email: str = Form(""),
    code: str = Form(""),
    csrf: str = Form(""),
    lang: str = Form("en"),
    svc: Services = Depends(services),
) -> Response:
    """Step 2: prove the code; the session cookie, then the terminals."""
    lang = _lang(request, lang)
    now = svc.clock.now()
    try:
        _check_form(request, csrf, FORM_COOKIE, svc)
        limit_per_ip(request, svc, "code-guess", CODE_GUESSES_PER_HOUR_PER_IP)
        email = codes.normalize_email(email)
        code_id = codes.prove_email(
            svc.db, email=email, code=code, purposes=("owner",), now=now, secret=svc.secret
        )
        with svc.db.transaction() as session:
            customer = session.scalars(select(Customer).where(Customer.email == email)).first()
            if customer is None:
                raise NoSubscription()
            codes.consume(session, code_id, now)
            customer_id = customer.id
    except ApiError as exc:
        return _refused(lang, exc, svc)
    expires = str(int((now + SESSION_TTL).timestamp()))
    value = f"{customer_id}.{expires}.{_mac(svc.secret, 'session', f'{customer_id}:{expires}')}"
    answer = RedirectResponse(f"/owner/terminals?lang={lang}", status_code=303)
    _set_cookie(answer, SESSION_COOKIE, value, int(SESSION_TTL.total_seconds()), svc)
    return answer


# -- the signed-in page ---------------------------------------------------------------------------------


def _license(session, customer_id: str, now: datetime) -> License | None:
    return (
        licensing.live_license_for_customer(session, customer_id, now)
        or session.scalars(
            select(License)
            .where(License.customer_id == customer_id, License.status == "active")
            .order_by(License.created_at.desc())
        ).first()
    )


@router.get("/owner/terminals", response_class=HTMLResponse)
def owner_terminals(request: Request, svc: Services = Depends(services)) -> Response:
    """The terminals, the subscription's state, and the forms."""
    lang = _lang(request)
    customer_id = _session(request, svc)
    if customer_id is None:
        return RedirectResponse(f"/owner?lang={lang}", status_code=303)
    now = svc.clock.now()
    with svc.db.transaction() as session:
        customer = session.get(Customer, customer_id)
        license_ = _license(session, customer_id, now)
        rows, sub = [], None
        if license_ is not None:
            for machine in licensing.active_machines(session, license_.id):
                version = session.get(AgentVersion, machine.id)
                rows.append(
                    {
                        "machine_id": machine.id,
                        "terminal_name": machine.terminal_name,
                        "version": version.version if version else None,
                        "last_seen": machine.last_seen_at,
                    }
                )
            row = session.get(Subscription, license_.subscription_id) if license_.subscription_id else None
            if row is not None and row.status in ("active", "trialing", "past_due"):
                paused = row.paused and (row.pause_resumes_at is None or now < row.pause_resumes_at)
                sub = {"paused": paused, "resumes_at": row.pause_resumes_at, "seats": row.quantity}
        email = customer.email if customer else ""
    csrf = _mac(svc.secret, "csrf", request.cookies.get(SESSION_COOKIE) or "")
    return _html(pages.terminals(lang, csrf, email, rows, sub), svc)


def _signed_in(request: Request, csrf: str, svc: Services) -> str:
    customer_id = _session(request, svc)
    if customer_id is None:
        raise FormRefused("Your session has ended. Sign in again with a new code.")
    _check_form(request, csrf, SESSION_COOKIE, svc)
    return customer_id


def _back(lang: str) -> Response:
    return RedirectResponse(f"/owner/terminals?lang={lang}", status_code=303)


def _own_machine(session, customer_id: str, machine_id: str, now: datetime) -> tuple[License, Machine]:
    license_ = _license(session, customer_id, now)
    machine = session.get(Machine, machine_id)
    if license_ is None or machine is None or machine.license_id != license_.id or machine.deactivated_at:
        raise NotFound("No terminal with this id on your subscription.")
    return license_, machine


@router.post("/owner/rename")
def owner_rename(
    request: Request,
    machine_id: str = Form(""),
    name: str = Form(""),
    csrf: str = Form(""),
    lang: str = Form("en"),
    svc: Services = Depends(services),
) -> Response:
    """Rename one terminal (its next token and the e-mails say the new name)."""
    lang = _lang(request, lang)
    now = svc.clock.now()
    try:
        customer_id = _signed_in(request, csrf, svc)
        clean = name.strip()[:100]
        if not clean or text.problem(clean):
            raise InvalidRequest("Give the terminal a name of letters, digits and punctuation.")
        with svc.db.transaction() as session:
            license_, machine = _own_machine(session, customer_id, machine_id, now)
            if machine.terminal_name != clean:
                licensing.record_audit(
                    session,
                    actor=f"owner:{customer_id}",
                    action="machine.renamed",
                    license_id=license_.id,
                    machine_id=machine.id,
                    detail={"from": machine.terminal_name, "to": clean},
                    at=now,
                )
                machine.terminal_name = clean
    except ApiError as exc:
        return _refused(lang, exc, svc)
    return _back(lang)


@router.post("/owner/remove")
def owner_remove(
    request: Request,
    machine_id: str = Form(""),
    csrf: str = Form(""),
    lang: str = Form("en"),
    svc: Services = Depends(services),
) -> Response:
    """Remove one terminal: its seat is free, and it gets `revoked` at its next sync."""
    lang = _lang(request, lang)
    now = svc.clock.now()
    try:
        customer_id = _signed_in(request, csrf, svc)
        with svc.db.transaction() as session:
            license_, machine = _own_machine(session, customer_id, machine_id, now)
            seats.lock_license(session, license_.id)
            customer = session.get(Customer, customer_id)
            actor = f"owner:{customer_id}"
            licensing.release_machine(session, machine, customer, now, actor=actor, action="machine.removed")
            session.flush()
            seats.reconcile(session, license_, now, actor=actor)
    except ApiError as exc:
        return _refused(lang, exc, svc)
    return _back(lang)


def _provider_id(svc: Services, customer_id: str) -> str:
    with svc.db.transaction() as session:
        license_ = _license(session, customer_id, svc.clock.now())
        row = (
            session.get(Subscription, license_.subscription_id)
            if license_ and license_.subscription_id
            else None
        )
        if row is None or row.status not in ("active", "trialing", "past_due"):
            raise NoSubscription("There is no running subscription to pause or resume.")
        return row.provider_subscription_id


@router.post("/owner/pause")
def owner_pause(
    request: Request,
    resumes_on: str = Form(""),
    csrf: str = Form(""),
    lang: str = Form("en"),
    svc: Services = Depends(services),
) -> Response:
    """Pause for the season, until `resumes_on` (a date, 00:00 UTC) or until resumed."""
    lang = _lang(request, lang)
    now = svc.clock.now()
    try:
        customer_id = _signed_in(request, csrf, svc)
        resumes_at = None
        if resumes_on.strip():
            try:
                day = datetime.fromisoformat(resumes_on.strip()).replace(tzinfo=UTC)
            except ValueError:
                raise InvalidRequest("Give the resume date as a date.") from None
            if not now < day <= now + LONGEST_PAUSE:
                raise InvalidRequest(f"The resume date must be in the next {LONGEST_PAUSE.days} days.")
            resumes_at = int(day.timestamp())
        apply_pause(svc, _provider_id(svc, customer_id), paused=True, resumes_at=resumes_at)
    except ApiError as exc:
        return _refused(lang, exc, svc)
    return _back(lang)


@router.post("/owner/resume")
def owner_resume(
    request: Request, csrf: str = Form(""), lang: str = Form("en"), svc: Services = Depends(services)
) -> Response:
    """Resume now: every till is licensed again at its next sync (within a minute)."""
    lang = _lang(request, lang)
    try:
        customer_id = _signed_in(request, csrf, svc)
        apply_pause(svc, _provider_id(svc, customer_id), paused=False, resumes_at=None)
    except ApiError as exc:
        return _refused(lang, exc, svc)
    return _back(lang)


@router.post("/owner/portal")
def owner_portal(
    request: Request, csrf: str = Form(""), lang: str = Form("en"), svc: Services = Depends(services)
) -> Response:
    """Open Stripe's Customer Portal (invoices, card), in the page's language."""
    lang = _lang(request, lang)
    try:
        customer_id = _signed_in(request, csrf, svc)
        with svc.db.transaction() as session:
            customer = session.get(Customer, customer_id)
            ref = customer.stripe_customer_id if customer else None
        if not ref or svc.billing is None:
            raise NoSubscription()
        try:
            url = svc.billing.create_portal_session(
                ref, f"{svc.settings.public_url}/owner/terminals", locale=lang
            )
        except BillingError:
            raise ApiError(
                "The payment provider is not reachable. Try again in a minute.",
                status=503,
                code="billing_unavailable",
            ) from None
    except ApiError as exc:
        return _refused(lang, exc, svc)
    return RedirectResponse(url, status_code=303)


@router.post("/owner/logout")
def owner_logout() -> Response:
    """End the session (a forged sign-out costs the owner one new code, nothing more)."""
    answer = RedirectResponse("/owner", status_code=303)
    answer.delete_cookie(SESSION_COOKIE, path="/owner")
    return answer
