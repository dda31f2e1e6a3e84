"""Licensing rules: turn database rows into token claims, bind machines to licenses, audit changes.

This is the only place that decides what a token says. `license_claims` reads a machine, its license,
the license's subscription and customer; `trial_claims` does the same for a trial machine;
`revoked_claims` answers a deactivated or removed machine. The billing side calls
`ensure_license_for_subscription` when a subscription appears, and everyone calls `record_audit`.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection, select
from sqlalchemy.orm import Session

from pospal_protocol.clock import SystemClock
from pospal_protocol.errors import KeyInvalid
from pospal_protocol.tokens import AUDIENCE, Policy
from pospal_protocol.trust import ISSUER, jwk_thumbprint
from server.models import AuditLog, Customer, License, Machine, Subscription, Trial, table_of

POLICY = Policy()
# While paused, tills ask every minute, so a resume (by date or by the owner) licenses them within one.
PAUSED_POLICY = Policy(sync_s=60)
PAYMENT_GRACE = timedelta(seconds=POLICY.payment_grace_s)
TRIAL_LENGTH = timedelta(days=30)
DEFAULT_PLAN = "pospal-monthly"
DEFAULT_FEATURES = ["pos"]
# Stripe statuses mapped to the token's status.
_ACTIVE = {"active", "trialing"}
_PAST_DUE = {"past_due", "unpaid"}


def _ts(value: datetime | None) -> int | None:
    return int(value.timestamp()) if value is not None else None


@lru_cache(maxsize=4096)
def _thumbprint(public_key: str) -> str | None:
    try:
        return jwk_thumbprint(public_key)
    except KeyInvalid:  # rows are validated on the way in; a malformed one simply gets no binding
        return None


def _confirmation(machine: Any) -> dict[str, Any]:
    """RFC 7800 `cnf`: the machine key's RFC 7638 thumbprint, so a token names the key that may prove it."""
    public_key = getattr(machine, "public_key", None)
    jkt = _thumbprint(public_key) if isinstance(public_key, str) else None
    return {"cnf": {"jkt": jkt}} if jkt else {}


def _base_claims(now: datetime, machine: Machine) -> dict[str, Any]:
    iat = int(now.timestamp())
    return {
        **_confirmation(machine),
        "iss": ISSUER,
        "aud": AUDIENCE,
        "mid": machine.id,
        "fp": dict(machine.fingerprint or {}),
        "terminal": machine.terminal_name,
        "iat": iat,
        "nbf": iat,
        "exp": iat + POLICY.lease_s,
        "srv": iat,
        "policy": POLICY.to_claim(),
        "trial_end": None,
        "period_end": None,
        "payment_grace_end": None,
        "cancel_at": None,
    }


def subscription_state(license_: License, subscription: Subscription | None, now: datetime) -> dict[str, Any]:
    """The status part of a license token: status, seats, period_end, payment_grace_end, cancel_at."""
    comp = license_.comp_until if license_.comp_until and license_.comp_until > now else None
    if license_.status == "revoked":
        return {"status": "revoked", "seats": 0}
    if subscription is None:
        if comp:
            return {"status": "active", "seats": 1, "period_end": _ts(comp)}
        return {"status": "canceled", "seats": 0}
    state: dict[str, Any] = {"seats": max(1, subscription.quantity or 1)}
    status = subscription.status
    period_end = subscription.current_period_end
    if comp and (period_end is None or comp > period_end):
        period_end = comp
    state["period_end"] = _ts(period_end)
    cancel_at = subscription.cancel_at or (period_end if subscription.cancel_at_period_end else None)
    state["cancel_at"] = _ts(cancel_at)
    resumes_at = getattr(subscription, "pause_resumes_at", None)
    if getattr(subscription, "paused", False) and not comp and (resumes_at is None or now < resumes_at):
        # A seasonal pause: nothing is collected, so nothing sells. Agents that know only the seed's
        # statuses see `canceled` (licensed_cancelled); this one reads `paused` and `resumes_at`.
        state.update(
            status="canceled", paused=True, resumes_at=_ts(resumes_at), policy=PAUSED_POLICY.to_claim()
        )
        return state
    if comp or status in _ACTIVE:
        state["status"] = "active"
    elif status in _PAST_DUE:
        state["status"] = "past_due"
        failed = subscription.first_failed_at or subscription.updated_at
        state["payment_grace_end"] = _ts(failed + PAYMENT_GRACE)
        # A renewal waiting for the bank's confirmation (3-D Secure): the page where the owner confirms.
        action_url = getattr(subscription, "payment_action_url", None)
        if action_url:
            state["payment_action_url"] = action_url
    else:
        state["status"] = "canceled"
    return state


def license_claims(
    machine: Machine,
    license_: License,
    subscription: Subscription | None,
    customer: Customer | None,
    now: datetime,
) -> dict[str, Any]:
    """Claims for a machine bound to a license (status `revoked` once the machine is deactivated)."""
    claims = _base_claims(now, machine)
    claims.update(
        sub=license_.id,
        kind="license",
        plan=license_.plan,
        features=list(license_.features or DEFAULT_FEATURES),
        email=customer.email if customer else None,
    )
    claims.update(subscription_state(license_, subscription, now))
    if machine.deactivated_at is not None:
        claims.update(status="revoked", seats=0)
    elif getattr(machine, "seat_state", None) is not None and claims["status"] in ("active", "past_due"):
        # Over the subscription's quantity (server/seats.py): a signed revocation that says why.
        claims.update(status="revoked", revoke_reason="seats_exceeded")
    return claims


def trial_claims(machine: Machine, trial: Trial, now: datetime) -> dict[str, Any]:
    """Claims for a trial machine; the agent shows `trial_expired` once `trial_end` has passed."""
    claims = _base_claims(now, machine)
    claims.update(
        sub=trial.id,
        kind="trial",
        status="revoked" if machine.deactivated_at is not None else "trialing",
        plan="trial",
        features=list(DEFAULT_FEATURES),
        seats=1,
        email=None,
        trial_end=_ts(trial.ends_at),
    )
    return claims


def fingerprint_matches(bound: Mapping[str, Any], presented: Mapping[str, Any]) -> bool:
    """Strict majority of the bound components present with the same hash (PRODUCT.md "Matching")."""
    if not bound:
        return True
    matched = sum(
        1
        for name, value in bound.items()
        if isinstance(presented.get(name), str) and hmac.compare_digest(str(value), presented[name])
    )
    return matched * 2 > len(bound)


def trial_component_hash(secret: bytes, name: str, value: str) -> str:
    """The server-side salted hash of one fingerprint component, used to find an earlier trial."""
    return hmac.new(secret, f"trial:{name}:{value}".encode(), hashlib.sha256).hexdigest()


def active_machines(session: Session, license_id: str) -> list[Machine]:
    """Machines currently using seats of a license, oldest activation first."""
    return list(
        session.scalars(
            select(Machine)
            .where(Machine.license_id == license_id, Machine.deactivated_at.is_(None))
            .order_by(Machine.activated_at, Machine.id)
        )
    )


def terminal_summary(machine: Machine) -> dict[str, Any]:
    """A machine as listed in a `seats_full` answer."""
    return {
        "machine_id": machine.id,
        "terminal_name": machine.terminal_name,
        "last_seen": machine.last_seen_at.isoformat().replace("+00:00", "Z")
        if machine.last_seen_at
        else None,
    }


def live_license_for_customer(session: Session, customer_id: str, now: datetime) -> License | None:
    """The customer's license that allows use now (live subscription or operator grant), newest first."""
    rows = session.execute(
        select(License, Subscription)
        .outerjoin(Subscription, Subscription.id == License.subscription_id)
        .where(License.customer_id == customer_id, License.status == "active")
        .order_by(License.created_at.desc())
    ).all()
    for license_, subscription in rows:
        if subscription_state(license_, subscription, now)["status"] in ("active", "past_due"):
            return license_
    return None


def ensure_license_for_subscription(
    session: Session, subscription: Subscription, now: datetime | None = None
) -> License:
    """Return the license for a subscription, creating it (or re-binding a returning customer's) once.

    A returning customer's old license (no subscription, or one that is no longer live) is moved to the
    new subscription, so their terminals keep their machine ids. Idempotent: safe on every webhook.
    """
    existing = session.scalars(select(License).where(License.subscription_id == subscription.id)).first()
    if existing is not None:
        return existing
    when = now or subscription.updated_at
    session.flush()
    previous = session.execute(
        select(License, Subscription)
        .outerjoin(Subscription, Subscription.id == License.subscription_id)
        .where(License.customer_id == subscription.customer_id, License.status == "active")
        .order_by(License.created_at.desc())
    ).all()
    for license_, old_subscription in previous:
        if old_subscription is None or old_subscription.status not in (_ACTIVE | _PAST_DUE):
            license_.subscription_id = subscription.id
            record_audit(
                session,
                actor="system",
                action="license.rebound",
                license_id=license_.id,
                detail={"subscription_id": subscription.id},
                at=when,
            )
            return license_
    license_ = License(
        customer_id=subscription.customer_id,
        subscription_id=subscription.id,
        status="active",
        plan=DEFAULT_PLAN,
        features=list(DEFAULT_FEATURES),
        created_at=when,
    )
    session.add(license_)
    session.flush()
    record_audit(
        session,
        actor="system",
        action="license.created",
        license_id=license_.id,
        detail={"subscription_id": subscription.id},
        at=when,
    )
    return license_


def record_audit(
    session: Session | Connection,
    *,
    actor: str,
    action: str,
    license_id: str | None = None,
    machine_id: str | None = None,
    detail: Mapping[str, Any] | None = None,
    at: datetime | None = None,
) -> None:
    """Add an audit row in the caller's transaction (actor: system, admin, machine:<id>, webhook:<id>)."""
    values = {
        "at": at or SystemClock().now(),
        "actor": actor[:120],
        "action": action[:64],
        "license_id": license_id,
        "machine_id": machine_id,
        "detail": dict(detail or {}),
    }
    if isinstance(session, Session):
        session.add(AuditLog(**values))
    else:
        session.execute(table_of(AuditLog).insert().values(**values))


def load_machine(
    session: Session, machine_id: str
) -> tuple[Machine, License | None, Subscription | None, Customer | None] | None:
    """A machine with its license, subscription and customer, in one query (the refresh fast path)."""
    row = session.execute(
        select(Machine, License, Subscription, Customer)
        .outerjoin(License, License.id == Machine.license_id)
        .outerjoin(Subscription, Subscription.id == License.subscription_id)
        .outerjoin(Customer, Customer.id == License.customer_id)
        .where(Machine.id == machine_id)
    ).first()
    return None if row is None else (row[0], row[1], row[2], row[3])


def claims_for_machine(
    session: Session,
    machine: Machine,
    now: datetime,
    license_: License | None = None,
    subscription: Subscription | None = None,
    customer: Customer | None = None,
) -> dict[str, Any]:
    """The claims this machine should carry now: its license's, its trial's, or a revocation."""
    trial = None
    if machine.license_id is not None and license_ is None:
        license_ = session.get(License, machine.license_id)
        # The foreign key guarantees the row; without it, `claims_from` answers with a revocation.
        if license_ is not None:
            subscription = (
                session.get(Subscription, license_.subscription_id) if license_.subscription_id else None
            )
            customer = session.get(Customer, license_.customer_id)
    elif machine.license_id is None and machine.trial_id is not None:
        trial = session.get(Trial, machine.trial_id)
    return claims_from(machine, license_, subscription, customer, trial, now)


def claims_from(
    machine: Any, license_: Any, subscription: Any, customer: Any, trial: Any, now: datetime
) -> dict[str, Any]:
    """Claims from already loaded rows (ORM objects or anything with the same attributes)."""
    if machine.license_id is not None and license_ is not None:
        return license_claims(machine, license_, subscription, customer, now)
    if trial is not None:
        return trial_claims(machine, trial, now)
    # Neither license nor trial (should not happen): a signed revocation is the safe answer.
    claims = _base_claims(now, machine)
    claims.update(
        sub=machine.id, kind="license", status="revoked", plan=DEFAULT_PLAN, features=[], seats=0, email=None
    )
    return claims


def release_machine(
    session: Session, machine: Machine, customer: Customer | None, now: datetime, *, actor: str, action: str
) -> None:
    """Deactivate a machine, audit it, and tell the customer by email (security notice)."""
    machine.deactivated_at = now
    machine.seat_state = None  # a removed machine holds no seat; its next activation takes one afresh
    record_audit(
        session,
        actor=actor,
        action=action,
        license_id=machine.license_id,
        machine_id=machine.id,
        detail={"terminal_name": machine.terminal_name},
        at=now,
    )
    if customer is not None and machine.license_id is not None:
        from server import outbox

        # A till licensed by file sells on until its file ends, and keeps its seat (server/seats.py):
        # the owner is told so rather than "it no longer takes orders".
        until = machine.offline_until
        running = until is not None and until > now
        outbox.enqueue(
            session,
            customer.email,
            "terminal_removed_file" if running else "terminal_removed",
            customer.locale,
            {
                "terminal_name": machine.terminal_name or machine.id,
                "when": now.strftime("%Y-%m-%d %H:%M UTC"),
                **({"until": until.strftime("%Y-%m-%d %H:%M UTC")} if running and until else {}),
            },
            f"terminal-removed:{machine.id}:{int(now.timestamp())}",
            now=now,
        )
