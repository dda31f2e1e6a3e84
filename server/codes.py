"""Emailed login codes: 6 digits from `secrets`, stored only as an HMAC, 15 minutes, 5 wrong tries.

A code proves the person controls an email address. Requests are limited to 5 per hour per email
(then 429 with `retry_after`); the email is written to the outbox in the same transaction as the code.
An unknown email gets the same 202 answer and no email, so the endpoint does not reveal customers.

Checking is two-step so that wrong guesses count even when the request then fails: `prove_email`
checks (and records the attempt) in its own transaction; `consume` marks a one-time code used inside
the caller's transaction, so a failed activation does not burn the code.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from server.db import Database
from server.errors import BadCode, CodeExpired, TooManyAttempts
from server.models import Customer, LoginCode
from server.ratelimit import RateLimiter

CODE_TTL = timedelta(minutes=15)
MAX_ATTEMPTS = 5
REQUESTS_PER_HOUR = 5
PURPOSES = ("activate", "portal", "terminals")
# Listing and removing terminals takes several calls with the same code, and may follow the activation
# that was refused for lack of seats, so those accept a live code of either purpose, used or not.
TERMINAL_PURPOSES = ("terminals", "activate")


def normalize_email(email: str) -> str:
    """Trim and lower-case an email address (customers are keyed by this form)."""
    return email.strip().lower()


def code_hash(secret: bytes, email: str, code: str) -> str:
    """HMAC-SHA256 of the code, bound to the email, as hex."""
    return hmac.new(secret, f"{normalize_email(email)}:{code}".encode(), hashlib.sha256).hexdigest()


def new_code() -> str:
    """Six random digits from `secrets`."""
    return f"{secrets.randbelow(1_000_000):06d}"


def request_code(
    session: Session,
    *,
    email: str,
    purpose: str,
    locale: str,
    secret: bytes,
    limiter: RateLimiter,
    now: datetime,
) -> bool:
    """Rate-limit, then create a code and queue its email; return False (no email) for unknown emails."""
    email = normalize_email(email)
    limiter.hit(f"codes:{email}", REQUESTS_PER_HOUR, 3600, now.timestamp())
    customer = session.scalars(select(Customer).where(Customer.email == email)).first()
    if customer is None:
        return False
    code = new_code()
    row = LoginCode(
        email=email,
        purpose=purpose,
        code_hash=code_hash(secret, email, code),
        expires_at=now + CODE_TTL,
        attempts=0,
        created_at=now,
    )
    session.add(row)
    session.flush()
    from server import outbox

    outbox.enqueue(
        session,
        email,
        "activation_code",
        locale or customer.locale,
        {"code": code, "minutes": int(CODE_TTL.total_seconds() // 60)},
        f"login-code:{row.id}",
        now=now,
    )
    return True


def _check(
    session: Session,
    email: str,
    code: str,
    purposes: Iterable[str],
    now: datetime,
    secret: bytes,
    allow_used: bool,
) -> int:
    stmt = select(LoginCode).where(LoginCode.email == email, LoginCode.purpose.in_(list(purposes)))
    if not allow_used:
        stmt = stmt.where(LoginCode.used_at.is_(None))
    rows = list(session.scalars(stmt.order_by(LoginCode.created_at.desc(), LoginCode.id.desc()).limit(20)))
    live = [r for r in rows if r.expires_at > now]
    usable = [r for r in live if r.attempts < MAX_ATTEMPTS]
    if not usable:
        if live:
            raise TooManyAttempts()
        if rows:
            raise CodeExpired()
        raise BadCode()
    # People type "123 456" or "123-456"; only the digits count.
    digits = "".join(ch for ch in code if ch.isdigit()) if code else ""
    given = code_hash(secret, email, digits) if digits else ""
    for row in usable:
        if given and hmac.compare_digest(row.code_hash, given):
            return row.id
    newest = usable[0]
    newest.attempts += 1
    if newest.attempts >= MAX_ATTEMPTS and len(usable) == 1:
        raise TooManyAttempts()
    raise BadCode()


def prove_email(
    db: Database,
    *,
    email: str,
    code: str,
    purposes: Iterable[str],
    now: datetime,
    secret: bytes,
    allow_used: bool = False,
) -> int:
    """Check `code` for `email` and return the code's id; a wrong code is counted and committed.

    Raises `BadCode`, `CodeExpired` or `TooManyAttempts`.
    """
    email = normalize_email(email)
    failure: Exception | None = None
    with db.transaction() as session:
        try:
            return _check(session, email, code, purposes, now, secret, allow_used)
        except (BadCode, TooManyAttempts, CodeExpired) as exc:
            failure = exc  # leave the block normally so the attempt count is committed
    raise failure


def consume(session: Session, code_id: int, now: datetime) -> None:
    """Mark a one-time code used in the caller's transaction; `BadCode` if it was used meanwhile."""
    result = session.execute(
        update(LoginCode).where(LoginCode.id == code_id, LoginCode.used_at.is_(None)).values(used_at=now)
    )
    if result.rowcount != 1:
        raise BadCode()
