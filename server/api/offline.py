"""Activation by file: the `/offline` page where an owner turns a terminal's request file into a license file.

For terminals that are never online (docs/ARCHITECTURE.md, "Activation by file"):

1. `GET /offline` asks for the owner's e-mail; `POST /offline/code` e-mails a code (`server.codes`, the
   same codes as an online activation, written in the page's language).
2. `POST /offline/license` takes the code and the request file (`pospal_protocol.offline`, signed by the
machine
   key). The e-mail is proven, the seats are checked exactly as for an online activation
   (`activations.bind_machine`), the machine is recorded with `offline_until`, and the answer is the
   license file as a download: a license token bound to that machine key (`mkey`) with
   `policy.offline: true`, whose lease (`exp`) is the end of the paid period plus the payment grace.
   Anything refused changes nothing (one transaction) and answers a page saying why. The fingerprint
   must pass the same rule as an online activation (`server.fingerprints.check_complete`), and a file
   whose terminal is on another customer's license is refused (a request file proves the machine key,
   not who owns the till).
3. `POST /offline/deactivate` takes a till's signed deactivation file: the till gave its license file up,
   so its seat is freed now rather than when the file ends (`server.seats`).

The forms are same-origin only: each carries a CSRF token that must equal the HttpOnly, SameSite=Strict
cookie set with the page, be HMAC-signed by this server and younger than two hours; a request whose Origin
is another site is refused as well.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError
from sqlalchemy import func, select

from pospal_protocol.emails import is_email
from pospal_protocol.errors import OfflineFileInvalid
from pospal_protocol.offline import (
    LICENSE_FILE_NAME,
    MACHINE_KEY_CLAIM,
    MAX_FILE_BYTES,
    make_license,
    read_deactivation,
    read_request,
)
from pospal_protocol.tokens import Policy
from server import codes, fingerprints, licensing, seats
from server.api import offline_page
from server.api.activations import bind_machine
from server.api.deps import CODE_GUESSES_PER_HOUR_PER_IP, Services, limit_per_ip, services
from server.api.schemas import ActivationRequest
from server.errors import ApiError, InvalidRequest, NoSubscription
from server.models import AuditLog, Customer, License, Machine

router = APIRouter(tags=["offline"], include_in_schema=False)

PAGE_PATH = "/offline"
CSRF_COOKIE = "pospal_offline_csrf"
CSRF_TTL = timedelta(hours=2)
CODES_PER_HOUR_PER_IP = 30
ACTIVATIONS_PER_HOUR_PER_IP = 60


class CsrfRefused(ApiError):
    """The form did not come from this server's own page (or is too old)."""

    code = "csrf"
    default_message = "This form has expired or did not come from this site. Open the page again."


# -- language and CSRF -------------------------------------------------------------------------------


def page_language(request: Request, chosen: str | None = None) -> str:
    """`el` or `en`: the form's or `?lang=` choice, else the browser's Accept-Language."""
    for value in (chosen, request.query_params.get("lang")):
        if value in ("el", "en"):
            return value
    return "el" if request.headers.get("accept-language", "").lower().startswith("el") else "en"


def new_csrf(secret: bytes, now: datetime) -> str:
    """A fresh CSRF token: issue time, randomness and an HMAC over both."""
    ts, rand = int(now.timestamp()), secrets.token_urlsafe(16)
    return f"{ts}.{rand}.{_csrf_mac(secret, ts, rand)}"


def _csrf_mac(secret: bytes, ts: int, rand: str) -> str:
    return hmac.new(secret, f"offline-csrf:{ts}:{rand}".encode(), hashlib.sha256).hexdigest()[:32]


def check_csrf(request: Request, token: str, svc: Services) -> None:
    """Refuse (`CsrfRefused`) unless the form token equals the cookie, is ours, is fresh and same-origin."""
    cookie = request.cookies.get(CSRF_COOKIE) or ""
    if not token or not hmac.compare_digest(token.encode(), cookie.encode()):
        raise CsrfRefused()
    parts = token.split(".")
    if len(parts) != 3 or not parts[0].isdigit():
        raise CsrfRefused()
    ts, rand, mac = int(parts[0]), parts[1], parts[2]
    if not hmac.compare_digest(mac, _csrf_mac(svc.secret, ts, rand)):
        raise CsrfRefused()
    age = svc.clock.now().timestamp() - ts
    if not 0 <= age <= CSRF_TTL.total_seconds():
        raise CsrfRefused()
    origin = request.headers.get("origin")
    if origin is not None and origin.rstrip("/") not in _own_origins(request, svc):
        raise CsrfRefused()


def _own_origins(request: Request, svc: Services) -> set[str]:
    own = set()
    for url in (svc.settings.public_url, str(request.base_url)):
        parts = urlsplit(url)
        own.add(f"{parts.scheme}://{parts.netloc}")
    return own


def _with_csrf(body: str, token: str, svc: Services, status: int = 200) -> HTMLResponse:
    answer = HTMLResponse(body, status_code=status, headers={"Cache-Control": "no-store"})
    answer.set_cookie(
        CSRF_COOKIE,
        token,
        max_age=int(CSRF_TTL.total_seconds()),
        path=PAGE_PATH,
        httponly=True,
        samesite="strict",
        secure=svc.settings.public_url.startswith("https:"),
    )
    return answer


def _refused(request: Request, svc: Services, lang: str, exc: ApiError) -> HTMLResponse:
    token = new_csrf(svc.secret, svc.clock.now())
    terminals = exc.extra.get("terminals") or ()
    body = offline_page.failed(lang, exc.message, f"{PAGE_PATH}?lang={lang}", terminals)
    return _with_csrf(body, token, svc, exc.status)


# -- the offline license -----------------------------------------------------------------------------


def offline_claims(
    session: Any, machine: Machine, public_key: str, now: datetime
) -> tuple[dict[str, Any], datetime]:
    """The claims of an offline license for `machine` and the moment it ends.

    The lease runs to the end of the paid period plus the payment grace (a failed payment: to the end of
    the payment grace; a scheduled cancellation: not past it). `NoSubscription` when nothing is paid for.
    """
    claims = licensing.claims_for_machine(session, machine, now)
    if claims.get("kind") != "license" or claims.get("status") not in ("active", "past_due"):
        raise NoSubscription()
    policy = Policy.from_claim(claims["policy"])
    if claims["status"] == "past_due" and claims.get("payment_grace_end"):
        end = claims["payment_grace_end"]
    elif claims.get("period_end"):
        end = claims["period_end"] + policy.payment_grace_s
    else:
        raise NoSubscription("This license has no paid period to put in a license file.")
    if claims.get("cancel_at"):
        end = min(end, claims["cancel_at"])
    if end <= claims["iat"]:
        raise NoSubscription()
    claims.update(exp=end, policy={**claims["policy"], "offline": True}, **{MACHINE_KEY_CLAIM: public_key})
    return claims, datetime.fromtimestamp(end, UTC)


# -- routes ------------------------------------------------------------------------------------------


@router.get(PAGE_PATH, response_class=HTMLResponse)
def offline_start(request: Request, svc: Services = Depends(services)) -> HTMLResponse:
    """Step 1: ask for the owner's e-mail."""
    lang = page_language(request)
    token = new_csrf(svc.secret, svc.clock.now())
    body = offline_page.start(lang, token, f"{PAGE_PATH}/code", f"{PAGE_PATH}/deactivate")
    return _with_csrf(body, token, svc)


@router.post(f"{PAGE_PATH}/code", response_class=HTMLResponse)
def offline_code(
    request: Request,
    email: str = Form(""),
    csrf: str = Form(""),
    lang: str = Form("en"),
    svc: Services = Depends(services),
) -> HTMLResponse:
    """Step 1 answered: e-mail a code (the same answer whether or not the address is a customer)."""
    lang = page_language(request, lang)
    try:
        check_csrf(request, csrf, svc)
        limit_per_ip(request, svc, "codes", CODES_PER_HOUR_PER_IP)
        email = codes.normalize_email(email)
        if not is_email(email):
            raise ApiError(
                "Enter the e-mail address of the subscription.", status=422, code="invalid_request"
            )
        with svc.db.transaction() as session:
            codes.request_code(
                session,
                email=email,
                purpose="activate",
                locale=lang,
                secret=svc.secret,
                limiter=svc.limiter,
                now=svc.clock.now(),
            )
    except ApiError as exc:
        return _refused(request, svc, lang, exc)
    token = new_csrf(svc.secret, svc.clock.now())
    return _with_csrf(offline_page.upload(lang, token, f"{PAGE_PATH}/license", email), token, svc)


@router.post(f"{PAGE_PATH}/license")
def offline_license(
    request: Request,
    email: str = Form(""),
    code: str = Form(""),
    csrf: str = Form(""),
    lang: str = Form("en"),
    upload: UploadFile | None = File(None, alias="request"),
    svc: Services = Depends(services),
) -> Response:
    """Step 2: prove the e-mail, check the seats, record the machine, answer the license file."""
    lang = page_language(request, lang)
    try:
        check_csrf(request, csrf, svc)
        limit_per_ip(request, svc, "code-guess", CODE_GUESSES_PER_HOUR_PER_IP)
        limit_per_ip(request, svc, "activations", ACTIVATIONS_PER_HOUR_PER_IP)
        data = upload.file.read(MAX_FILE_BYTES + 1) if upload is not None else b""
        try:
            offline_request = read_request(data)
        except OfflineFileInvalid as exc:
            raise ApiError(exc.message, status=422, code="invalid_request") from None
        # From here on the page speaks the request file's language: the till's, whoever's browser it is.
        lang = offline_request.locale or lang
        # The same fingerprint rule as an online activation: known names of one platform, its minimum.
        fingerprints.check_complete(offline_request.fingerprint)
        email = codes.normalize_email(email)
        now = svc.clock.now()
        code_id = codes.prove_email(
            svc.db, email=email, code=code, purposes=("activate",), now=now, secret=svc.secret
        )
        return _issue(svc, email, code, code_id, offline_request, now)
    except ApiError as exc:
        return _refused(request, svc, lang, exc)


class TerminalOfAnotherOwner(ApiError):
    """The request file's terminal is activated on someone else's subscription."""

    code = "owner_proof_required"
    default_message = (
        "This terminal is activated on another subscription. Its request file is answered only for that "
        "subscription: use its e-mail address, or remove the terminal there first."
    )


def _require_own_terminal(session: Any, customer: Customer, public_key: str, now: datetime) -> None:
    """Refuse a request file whose machine is bound to another customer's license.

    Anyone holding a till's request file could upload it (it holds nothing secret), so a file proves the
    machine key only, never who owns the till: it is answered for the license the till already belongs
    to, or, for a till on no license, for the e-mail whose code was just proven (a first activation).
    """
    machine = session.scalars(select(Machine).where(Machine.public_key == public_key)).first()
    if machine is None or machine.license_id is None:
        return
    # A removed till whose file still runs keeps its seat there (server.seats): it is still that license's.
    if machine.deactivated_at is not None and not seats.file_running(machine, now):
        return
    owner = session.scalar(select(License.customer_id).where(License.id == machine.license_id))
    if owner != customer.id:
        raise TerminalOfAnotherOwner()


def _issue(svc: Services, email: str, code: str, code_id: int, req: Any, now: datetime) -> Response:
    """In one transaction: bind within the seats, set `offline_until`, sign; a refusal rolls all back."""
    with svc.db.transaction() as session:
        customer = session.scalars(select(Customer).where(Customer.email == email)).first()
        license_ = licensing.live_license_for_customer(session, customer.id, now) if customer else None
        if customer is None or license_ is None:
            raise NoSubscription()
        _require_own_terminal(session, customer, req.machine_public_key, now)
        try:
            body = ActivationRequest(
                email=email,
                code=code,
                fingerprint=dict(req.fingerprint),
                machine_public_key=req.machine_public_key,
                terminal_name=req.terminal_name,
                known_kids=list(req.known_kids),
            )
        except ValidationError:
            # The file's own checks come first; anything the JSON API would refuse is refused here too.
            raise InvalidRequest("The activation request holds a value the server does not accept.") from None
        answer = bind_machine(
            session, svc, customer, license_, req.machine_public_key, body, now, via="file", code_id=code_id
        )
        machine = session.get(Machine, answer.machine_id)
        assert machine is not None
        claims, until = offline_claims(session, machine, req.machine_public_key, now)
        machine.offline_until = until
        licensing.record_audit(
            session,
            actor=f"machine:{machine.id}",
            action="machine.offline_license",
            license_id=license_.id,
            machine_id=machine.id,
            detail={"until": until.isoformat()},
            at=now,
        )
        token = svc.keys.sign(session, claims)
        keyset = svc.keys.keyset_for(session, req.known_kids, now)
        data = make_license(token, machine_id=machine.id, license_id=license_.id, keyset=keyset)
    return Response(
        data,
        media_type="application/json",
        headers={
            "Content-Disposition": f'attachment; filename="{LICENSE_FILE_NAME}"',
            "Cache-Control": "no-store",
        },
    )


@router.post(f"{PAGE_PATH}/deactivate", response_class=HTMLResponse)
def offline_deactivate(
    request: Request,
    csrf: str = Form(""),
    lang: str = Form("en"),
    upload: UploadFile | None = File(None, alias="deactivation"),
    svc: Services = Depends(services),
) -> HTMLResponse:
    """A till gave its license file up (its signed deactivation file): remove it and free its seat now.

    The file is the till's own proof, like its signed online deactivation, so no owner's code is needed.
    It must be signed by the machine key of that machine and name the newest license file issued to it
    (`license_iat`): an older deactivation does not end a file issued after it.
    """
    lang = page_language(request, lang)
    try:
        check_csrf(request, csrf, svc)
        limit_per_ip(request, svc, "activations", ACTIVATIONS_PER_HOUR_PER_IP)
        data = upload.file.read(MAX_FILE_BYTES + 1) if upload is not None else b""
        try:
            proof = read_deactivation(data)
        except OfflineFileInvalid as exc:
            raise ApiError(exc.message, status=422, code="invalid_request") from None
        name = _deactivate(svc, proof, svc.clock.now())
    except ApiError as exc:
        return _refused(request, svc, lang, exc)
    token = new_csrf(svc.secret, svc.clock.now())
    return _with_csrf(offline_page.deactivated(lang, name), token, svc)


def _deactivate(svc: Services, proof: Any, now: datetime) -> str:
    """End the machine's license file and its seat, in one transaction; return its name for the page."""
    with svc.db.transaction() as session:
        machine = session.get(Machine, proof.machine_id)
        if machine is None or machine.public_key != proof.machine_public_key or machine.license_id is None:
            raise ApiError(
                "This deactivation file is for no terminal of this server.", status=404, code="not_found"
            )
        issued = session.scalar(
            select(func.max(AuditLog.at)).where(
                AuditLog.machine_id == machine.id, AuditLog.action == "machine.offline_license"
            )
        )
        if issued is None or proof.license_iat < int(issued.timestamp()):
            raise ApiError(
                "This deactivation file is older than the terminal's license file: make a new one there.",
                status=409,
                code="replay",
            )
        license_ = session.get(License, machine.license_id)
        seats.lock_license(session, machine.license_id)
        customer = session.get(Customer, license_.customer_id) if license_ else None
        machine.offline_until = None  # the till gave the file up: nothing holds the seat any more
        if machine.deactivated_at is None:
            licensing.release_machine(
                session, machine, customer, now, actor=f"machine:{machine.id}", action="machine.deactivated"
            )
        licensing.record_audit(
            session,
            actor=f"machine:{machine.id}",
            action="machine.offline_deactivated",
            license_id=machine.license_id,
            machine_id=machine.id,
            detail={"license_iat": proof.license_iat},
            at=now,
        )
        session.flush()
        if license_ is not None:
            seats.reconcile(session, license_, now, actor=f"machine:{machine.id}")
        return machine.terminal_name or machine.id
