"""Operator actions behind `pospal-server admin`: show, revoke, extend, resend email, remove a terminal,
and list e-mail that is stuck (`admin outbox`).

Each change is made in the caller's transaction with an audit row whose actor is `admin`, and machines
learn about it at their next refresh through a signed token (never an unsigned message).

Everything printed goes through `pospal_protocol.text.escape_all`: names a stranger typed (a restaurant, a
terminal) reach the operator's terminal with control, C1 and bidi characters written as `\\uXXXX`, so
they cannot recolour, reorder or erase what the operator reads.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, object_session

from pospal_protocol import text
from server import fleet, licensing, seats
from server.codes import normalize_email
from server.models import AuditLog, Customer, License, LoginCode, Machine, Outbox, Subscription, Trial

Printer = Callable[[Any], None]


def row(obj: Any, hide: tuple[str, ...] = ()) -> dict[str, Any]:
    """A model row as a plain dict (for printing)."""
    return {c.key: getattr(obj, c.key) for c in obj.__table__.columns if c.key not in hide}


def run(session: Session, args: argparse.Namespace, now: datetime, out: Printer) -> int:
    """Dispatch one admin command; return the exit code (1 when the thing is not found)."""
    handlers = {
        "customer": _customer,
        "license": _license,
        "machine": _machine,
        "outbox": _outbox,
        "fleet": _fleet,
    }

    def escaped(data: Any) -> None:
        out(text.escape_all(data))

    return handlers[args.entity](session, args, now, escaped)


def _fleet(session: Session, args: argparse.Namespace, now: datetime, out: Printer) -> int:
    """`admin fleet versions`: terminals per agent version; `keysets`: per trusted key-set version;
    `terminals`: each one's version and key set."""
    summaries = {"versions": fleet.versions, "keysets": fleet.keysets, "terminals": fleet.terminals}
    out(summaries[args.action](session))
    return 0


def _customer(session: Session, args: argparse.Namespace, now: datetime, out: Printer) -> int:
    customer = session.scalars(select(Customer).where(Customer.email == normalize_email(args.email))).first()
    if customer is None:
        out({"error": "not_found", "email": args.email})
        return 1
    if args.action == "show":
        out(_customer_summary(session, customer, args, now))
        return 0
    return _resend_email(session, customer, args, now, out)


def _customer_summary(
    session: Session, customer: Customer, args: argparse.Namespace, now: datetime
) -> dict[str, Any]:
    """Everything support asks about a customer: subscriptions, licenses with terminals, recent e-mail."""
    licenses = list(session.scalars(select(License).where(License.customer_id == customer.id)))
    subscriptions = session.scalars(select(Subscription).where(Subscription.customer_id == customer.id))
    return {
        "customer": row(customer),
        "subscriptions": [row(s) for s in subscriptions],
        "licenses": [
            {
                **row(lic),
                "machines": _terminals(
                    session.scalars(select(Machine).where(Machine.license_id == lic.id)), args, now
                ),
            }
            for lic in licenses
        ],
        "emails": [
            row(o, hide=("context",))
            for o in session.scalars(
                select(Outbox).where(Outbox.to_email == customer.email).order_by(Outbox.id.desc()).limit(20)
            )
        ],
        "codes_last_hour": _codes_last_hour(session, customer.email, now),
    }


def _codes_last_hour(session: Session, email: str, now: datetime) -> int:
    """How many sign-in codes were sent to this address in the last hour (the rate limit's view)."""
    recent = session.scalars(
        select(LoginCode.id).where(LoginCode.email == email, LoginCode.created_at > now - timedelta(hours=1))
    )
    return len(list(recent))


def _resend_email(
    session: Session, customer: Customer, args: argparse.Namespace, now: datetime, out: Printer
) -> int:
    """Queue a copy of a previous message (the latest, or `--outbox-id`) under a new idempotency key."""
    stmt = select(Outbox).where(Outbox.to_email == customer.email)
    if args.outbox_id:
        stmt = stmt.where(Outbox.id == args.outbox_id)
    original = session.scalars(stmt.order_by(Outbox.id.desc()).limit(1)).first()
    if original is None:
        out({"error": "not_found", "detail": "no email to resend"})
        return 1
    from server import outbox

    key = f"admin-resend:{original.id}:{int(now.timestamp())}"
    outbox.enqueue(
        session, customer.email, original.template, original.locale, original.context, key, now=now
    )
    licensing.record_audit(
        session,
        actor="admin",
        action="email.resent",
        detail={"outbox_id": original.id, "template": original.template},
        at=now,
    )
    out({"queued": original.template, "to": customer.email, "idempotency_key": key})
    return 0


def _license(session: Session, args: argparse.Namespace, now: datetime, out: Printer) -> int:
    if args.action == "extend" and args.id.startswith("trial_"):
        return _extend_trial(session, args, now, out)
    license_ = session.get(License, args.id)
    if license_ is None:
        out({"error": "not_found", "id": args.id})
        return 1
    if args.action == "revoke":
        _revoke_license(session, license_, args, now)
    elif args.action == "extend":
        _extend_license(session, license_, args, now)
    out(_license_summary(session, license_, args, now))
    return 0


def _extend_trial(session: Session, args: argparse.Namespace, now: datetime, out: Printer) -> int:
    """Push a trial's end `args.days` past its end (or past now, when it has already ended)."""
    trial = session.get(Trial, args.id)
    if trial is None:
        out({"error": "not_found", "id": args.id})
        return 1
    trial.ends_at = max(trial.ends_at, now) + timedelta(days=args.days)
    licensing.record_audit(
        session,
        actor="admin",
        action="trial.extended",
        detail={"trial_id": trial.id, "days": args.days, "reason": args.reason},
        at=now,
    )
    out(row(trial))
    return 0


def _revoke_license(session: Session, license_: License, args: argparse.Namespace, now: datetime) -> None:
    """Revoke a license; its machines learn it at their next refresh."""
    license_.status = "revoked"
    license_.revoked_at = now
    licensing.record_audit(
        session,
        actor="admin",
        action="license.revoked",
        license_id=license_.id,
        detail={"reason": args.reason},
        at=now,
    )


def _extend_license(session: Session, license_: License, args: argparse.Namespace, now: datetime) -> None:
    """Grant `args.days` of complimentary time, counted from the current grant's end if it is later."""
    base = license_.comp_until if license_.comp_until and license_.comp_until > now else now
    license_.comp_until = base + timedelta(days=args.days)
    licensing.record_audit(
        session,
        actor="admin",
        action="license.extended",
        license_id=license_.id,
        detail={"days": args.days, "until": license_.comp_until.isoformat(), "reason": args.reason},
        at=now,
    )


def _license_summary(
    session: Session, license_: License, args: argparse.Namespace, now: datetime
) -> dict[str, Any]:
    """A license with its state now, its subscription, its terminals and its recent audit rows."""
    subscription = session.get(Subscription, license_.subscription_id) if license_.subscription_id else None
    return {
        "license": row(license_),
        "state_now": licensing.subscription_state(license_, subscription, now),
        "subscription": row(subscription) if subscription else None,
        "machines": _terminals(seats.bound_machines(session, license_.id), args, now),
        "audit": [
            row(a)
            for a in session.scalars(
                select(AuditLog)
                .where(AuditLog.license_id == license_.id)
                .order_by(AuditLog.id.desc())
                .limit(20)
            )
        ],
    }


def _terminals(machines: Any, args: argparse.Namespace, now: datetime) -> list[dict[str, Any]]:
    """Machines as the operator sees them: last seen, whether each holds a seat now and why not, and the
    agent version it last reported (`server/fleet.py`)."""
    idle = seats.idle_after(getattr(args, "seat_idle_days", seats.DEFAULT_IDLE_DAYS))
    rows = []
    machines = list(machines)
    session = object_session(machines[0]) if machines else None
    versions = fleet.versions_of(session, [m.id for m in machines]) if session is not None else {}
    for machine in machines:
        active, why = seats.describe(machine, now, idle)
        if machine.deactivated_at is not None:
            # Removed while its license file runs: it sells on and keeps its seat until the file ends.
            running = seats.file_running(machine, now)
            active, why = (True, "removed_offline_license") if running else (False, "removed")
        agent = versions.get(machine.id)
        rows.append(
            {**row(machine, hide=("fingerprint",)), "active": active, "why": why, "agent_version": agent}
        )
    return rows


def _machine(session: Session, args: argparse.Namespace, now: datetime, out: Printer) -> int:
    if args.action == "clones":
        from server.binding import clones

        out({"clones": clones(session)})
        return 0
    machine = session.get(Machine, args.id)
    if machine is None:
        out({"error": "not_found", "id": args.id})
        return 1
    if args.action == "remove" and machine.deactivated_at is None:
        license_ = session.get(License, machine.license_id) if machine.license_id else None
        customer = session.get(Customer, license_.customer_id) if license_ else None
        licensing.release_machine(session, machine, customer, now, actor="admin", action="machine.removed")
    out(
        {
            "machine": _terminals([machine], args, now)[0],
            "audit": [
                row(a)
                for a in session.scalars(
                    select(AuditLog)
                    .where(AuditLog.machine_id == machine.id)
                    .order_by(AuditLog.id.desc())
                    .limit(20)
                )
            ],
        }
    )
    return 0


def _outbox(session: Session, args: argparse.Namespace, now: datetime, out: Printer) -> int:
    """List e-mail that did not go out, and why (`config` means: fix the mail settings, it then goes)."""
    from server.outbox import stuck

    listed = stuck(session, now, include_failed=bool(getattr(args, "all", False)))
    reasons: dict[str, int] = {}
    for item in listed:
        reasons[item["reason"]] = reasons.get(item["reason"], 0) + 1
    out({"stuck": len(listed), "by_reason": reasons, "messages": listed})
    return 0
