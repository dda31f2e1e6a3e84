"""Emailed login codes: 6 digits from `secrets`, stored only as an HMAC, 15 minutes, 5 wrong tries an hour.

A code proves the person controls an email address. Requests are limited to 5 per hour per email
(then 429 with `retry_after`); the email is written to the outbox in the same transaction as the code.

Nothing here tells a customer from a stranger. An unknown email gets the same 202 answer after the same
work: a code row is stored for it too (a random code nobody is sent), and its outbox row is written
and rolled back inside a savepoint, so both answers take the same statements. Guessing then behaves
identically for both: the same codes, the same lock-out, the same timing.

Wrong guesses are counted per email across all its codes: 5 wrong guesses against the codes created
within the last hour lock every code of that email, live or new, until those codes are an hour old.
The count is kept on the codes themselves (each wrong guess adds one to the newest live code), so it
needs no table of its own and is shared by every instance.

Checking is two-step so that wrong guesses count even when the request then fails: `prove_email`
checks (and records the attempt) in its own transaction; `consume` marks a one-time code used inside
the caller's transaction, so a failed activation does not burn the code. Every code has one purpose and
one use: each route names the purposes it takes, and every route that acts on a code spends it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, select, update
from sqlalchemy.orm import Session

from server.db import Database, lock_for
from server.errors import BadCode, CodeExpired, TooManyAttempts
from server.models import Customer, LoginCode
from server.ratelimit import RateLimiter

CODE_TTL = timedelta(minutes=15)
MAX_ATTEMPTS = 5
ATTEMPT_WINDOW = timedelta(hours=1)
LOCKED_MESSAGE = "Too many wrong codes for this email. Wait an hour, then ask for a new code."
REQUESTS_PER_HOUR = 5
# One purpose and one use per code (issue 28 case 9): the route that acts on a code spends it, and a spent
# code proves nothing. Listing terminals changes nothing: a live code of these purposes lists them, and a
# `terminals` code still does once its removal spent it (`pospal-agent terminals --remove` lists after
# removing); "activate" is among them because an activation refused for lack of seats lists the terminals
# holding them. Removing and keeping terminals
# take the owner's proof codes, unspent, and spend them; an unspent activation code may remove only the
# one terminal its own refused activation needs (server/api/terminals.py), and its activation spends it.
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
    """Rate-limit, store a code and queue its email; return whether an email was sent.

    An unknown email gets a code row too and the same statements (its outbox row is rolled back), so
    the answer and its timing are the same for a customer and a stranger.
    """
    email = normalize_email(email)
    limiter.hit(f"codes:{email}", REQUESTS_PER_HOUR, 3600, now.timestamp())
    customer = session.scalars(select(Customer).where(Customer.email == email)).first()
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

    savepoint = session.begin_nested()
    outbox.enqueue(
        session,
        email,
        "activation_code",
        locale or (customer.locale if customer else None),
        {"code": code, "minutes": int(CODE_TTL.total_seconds() // 60)},
        f"login-code:{row.id}",
        now=now,
    )
    if customer is None:
        savepoint.rollback()  # a stranger is sent nothing
        return False
    savepoint.commit()
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
    lock_for(session, f"codes:{email}")  # concurrent guesses for one email are counted one at a time
    recent = list(
        session.scalars(
            select(LoginCode)
            .where(LoginCode.email == email, LoginCode.created_at > now - ATTEMPT_WINDOW)
            .order_by(LoginCode.created_at.desc(), LoginCode.id.desc())
            .limit(50)
        )
    )
    wanted = set(purposes)
    rows = [r for r in recent if r.purpose in wanted and (allow_used or r.used_at is None)]
    live = [r for r in rows if r.expires_at > now]
    failures = sum(r.attempts for r in recent)
    # People type "123 456" or "123-456"; only the digits count. Hash and compare against every live
    # code even when the outcome is already known, so the answer takes the same time either way.
    digits = "".join(ch for ch in code if ch.isdigit()) if code else ""
    given = code_hash(secret, email, digits or "-")
    matched = None
    for row in live:
        if hmac.compare_digest(row.code_hash, given) and matched is None:
            matched = row.id
    if not live:
        if rows:
            raise CodeExpired()
        raise BadCode()
    if failures >= MAX_ATTEMPTS:
        raise TooManyAttempts(LOCKED_MESSAGE)
    if matched is not None and digits:
        return matched
    newest_live = next(r for r in recent if r.expires_at > now)
    session.execute(
        update(LoginCode).where(LoginCode.id == newest_live.id).values(attempts=LoginCode.attempts + 1)
    )
    if failures + 1 >= MAX_ATTEMPTS:
        raise TooManyAttempts(LOCKED_MESSAGE)
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


def purpose_of(session: Session, code_id: int) -> str | None:
    """The purpose of the code with this id (None when there is no such code)."""
    return session.scalar(select(LoginCode.purpose).where(LoginCode.id == code_id))


def consume(session: Session, code_id: int, now: datetime) -> None:
    """Mark a one-time code used in the caller's transaction; `BadCode` if it was used meanwhile."""
    # An UPDATE always yields a CursorResult; Session.execute is typed to return the Result base.
    result = cast(
        CursorResult[Any],
        session.execute(
            update(LoginCode).where(LoginCode.id == code_id, LoginCode.used_at.is_(None)).values(used_at=now)
        ),
    )
    if result.rowcount != 1:
        raise BadCode()
