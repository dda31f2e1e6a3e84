"""Seats follow the subscription: which terminals of a license hold one of its seats.

A license has `seats` (the subscription quantity). Each of its machines holds a seat or not, stored in
`machines.seat_state` so the refresh hot path needs no count: None holds a seat, "exceeded" is over
the quantity, "idle" was released after `POSPAL_SEAT_IDLE_DAYS` unseen. A machine whose state is not
None refreshes through the slow path, which gives it a seat back if one is free (`reseat`).

The rules:
- **Quantity lowered** below the machines holding seats (`reconcile`, on every subscription sync): the
  least recently seen machines lose their seats first (an idle or forgotten till before the one that
  took an order a minute ago) and get a signed `revoked` token with `revoke_reason: seats_exceeded`;
  the owner is emailed. The owner can choose which terminals stay instead (`reconcile(keep=...)`).
- **Quantity raised** again: machines over the quantity get their seats back, most recently seen first.
- **Idle:** a machine unseen for the idle days (default 30, longer than the 14-day offline lease, so a
  till that still sells offline never loses its seat) stops counting. It stays listed as inactive, and
  its seat is released when another machine needs it (activation, a returning machine) or the quantity
  drops. When it comes back it takes a seat again only if one is free. A machine licensed by file
  (`offline_until`, set by activation by file) counts until its license file ends.
- **Removed while its license file runs:** a till licensed by file cannot be told it was removed, so it
  sells until the file ends. Removing it (owner, operator) records the removal, but its seat stays taken
  until the file ends (`removed_file_holders`), unless the till's own deactivation proves it stopped:
  its signed deactivation file (`/offline/deactivate`) or its own signed online deactivation, which end
  `offline_until`. Lowering the quantity or the owner's choice of who stays takes no seat from a till
  whose file runs, for the same reason (only more such tills than seats can leave one over).
- The invariant, kept by every change here: machines with `seat_state` None, with the removed ones whose
  file still runs, never outnumber the seats.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, select
from sqlalchemy.orm import Session

from server.licensing import record_audit, subscription_state
from server.models import Customer, License, Machine, Subscription

EXCEEDED = "exceeded"
IDLE = "idle"
DEFAULT_IDLE_DAYS = 30
# The token of a machine over the quantity: a signed revocation with this reason (older agents show
# "revoked", which also stops the till; newer ones say what happened and what to do).
REVOKE_REASON = "seats_exceeded"


def idle_after(days: int) -> timedelta:
    """The idle period for a number of days (`Settings.seat_idle_days`)."""
    return timedelta(days=days)


def last_seen(machine: Machine) -> datetime:
    """When the machine was last heard from (its activation if it never refreshed)."""
    return machine.last_seen_at or machine.activated_at


def offline_until(machine: Any) -> datetime | None:
    """The end of the machine's activation-by-file license, if it has one."""
    return getattr(machine, "offline_until", None)


def file_running(machine: Any, now: datetime) -> bool:
    """Whether the machine holds a license file that has not ended (it sells offline until then)."""
    until = offline_until(machine)
    return until is not None and until > now


def is_idle(machine: Machine, now: datetime, idle: timedelta) -> bool:
    """Unseen for `idle` or longer, and not covered by a license file that is still running."""
    until = offline_until(machine)
    if until is not None and until > now:
        return False
    return last_seen(machine) <= now - idle


def describe(machine: Machine, now: datetime, idle: timedelta) -> tuple[bool, str | None]:
    """(active, why) for lists: inactive for "idle" or "seats_exceeded"; active may say "offline_license"."""
    if machine.seat_state == EXCEEDED:
        return False, "seats_exceeded"
    if machine.seat_state == IDLE or is_idle(machine, now, idle):
        return False, "idle"
    until = offline_until(machine)
    if until is not None and until > now:
        return True, "offline_license"
    return True, None


def bound_machines(session: Session, license_id: str) -> list[Machine]:
    """The license's machines that were not removed, most recently seen first."""
    rows = session.scalars(
        select(Machine).where(Machine.license_id == license_id, Machine.deactivated_at.is_(None))
    )
    return sorted(rows, key=lambda m: (last_seen(m), m.id), reverse=True)


def holders(session: Session, license_id: str) -> list[Machine]:
    """Machines holding a seat, most recently seen first."""
    return [m for m in bound_machines(session, license_id) if m.seat_state is None]


def removed_file_holders(session: Session, license_id: str, now: datetime) -> list[Machine]:
    """Machines removed from the license whose license file still runs: each keeps a seat until it ends."""
    rows = session.scalars(
        select(Machine).where(
            Machine.license_id == license_id,
            Machine.deactivated_at.is_not(None),
            Machine.offline_until > now,
        )
    )
    return sorted(rows, key=lambda m: (last_seen(m), m.id), reverse=True)


def seat_count(session: Session, license_: License, now: datetime) -> int | None:
    """The license's seats now, or None when it is not live (cancelled, revoked: seats do not matter)."""
    subscription = session.get(Subscription, license_.subscription_id) if license_.subscription_id else None
    state = subscription_state(license_, subscription, now)
    if state.get("status") not in ("active", "past_due"):
        return None
    return int(state.get("seats") or 0)


def lock_license(session: Session, license_id: str) -> None:
    """Serialise seat changes of one license (PostgreSQL row lock; SQLite holds the write lock already)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(License.id).where(License.id == license_id).with_for_update())


def release_idle(session: Session, license_id: str, now: datetime, idle: timedelta) -> list[Machine]:
    """Release the seats of holders unseen for `idle`; return them."""
    released = [m for m in holders(session, license_id) if is_idle(m, now, idle)]
    for machine in released:
        _set(session, machine, IDLE, now, "idle")
    return released


def free_seats(session: Session, license_: License, now: datetime, idle: timedelta) -> list[Machine]:
    """Release idle holders, then return the machines still holding seats (for a `seats_full` answer):
    the holders, and removed machines whose license file still runs."""
    release_idle(session, license_.id, now, idle)
    return holders(session, license_.id) + removed_file_holders(session, license_.id, now)


def take_seat(session: Session, machine: Machine, license_: License, now: datetime, idle: timedelta) -> bool:
    """Give `machine` a seat of `license_` if one is free (idle holders released first); True if it has one.

    A machine that holds a seat already keeps it. The caller holds `lock_license`.
    """
    seats = seat_count(session, license_, now)
    if seats is None:
        return False
    if machine.seat_state is None and machine.license_id == license_.id and machine.deactivated_at is None:
        return True
    others = [m for m in free_seats(session, license_, now, idle) if m.id != machine.id]
    if len(others) >= seats:
        return False
    if machine.seat_state is not None:
        _set(session, machine, None, now, "seat_free")
    machine.seat_state = None
    return True


def reseat(session: Session | Connection, machine_id: str, now: datetime, idle: timedelta) -> str | None:
    """A machine without a seat came back (refresh): take a free seat, else mark it over the quantity.

    Returns its new `seat_state`. A machine of a license that is not live keeps its state. Given the
    refresh's connection, the work joins its transaction.
    """
    if isinstance(session, Connection):
        with Session(bind=session) as joined:
            state = reseat(joined, machine_id, now, idle)
            joined.flush()
            return state
    machine = session.get(Machine, machine_id)
    if machine is None or machine.license_id is None or machine.deactivated_at is not None:
        return None if machine is None else machine.seat_state
    lock_license(session, machine.license_id)
    session.refresh(machine)
    license_ = session.get(License, machine.license_id)
    if license_ is None or machine.seat_state is None or seat_count(session, license_, now) is None:
        return machine.seat_state
    if not take_seat(session, machine, license_, now, idle) and machine.seat_state != EXCEEDED:
        _set(session, machine, EXCEEDED, now, "no_free_seat")
    return machine.seat_state


def reconcile(
    session: Session, license_: License, now: datetime, *, keep: Iterable[str] = (), actor: str = "system"
) -> tuple[list[Machine], list[Machine]]:
    """Make the holders fit the seats; return (machines that lost their seat, machines that got one back).

    Holders beyond the seats lose theirs, least recently seen first, except those in `keep` (the owner's
    choice), which hold seats first. Free seats go back to machines over the quantity, most recently seen
    first. Emails the owner when terminals lose their seats.
    """
    seats = seat_count(session, license_, now)
    if seats is None:
        return [], []
    # Removed tills whose file still runs sell on whatever is decided here: their seats are not free.
    total, seats = seats, max(0, seats - len(removed_file_holders(session, license_.id, now)))
    keep = list(dict.fromkeys(keep))
    machines = bound_machines(session, license_.id)
    chosen = {m.id for m in machines if m.id in keep}
    current = [m for m in machines if m.seat_state is None or m.id in chosen]
    # Stable: tills licensed by file first (a revocation cannot reach them: freeing their seat needs their
    # deactivation file), then the owner's choice, then the most recently seen.
    current.sort(key=lambda m: (not file_running(m, now), m.id not in chosen))
    lost = current[seats:]
    for machine in current[:seats]:
        if machine.seat_state is not None:
            _set(session, machine, None, now, "owner_choice", actor=actor)
    for machine in lost:
        _set(session, machine, EXCEEDED, now, "quantity", actor=actor)
    restored: list[Machine] = []
    free = seats - min(len(current), seats)
    for machine in machines:
        if free <= 0:
            break
        if machine.seat_state == EXCEEDED and machine not in lost:
            _set(session, machine, None, now, "quantity", actor=actor)
            restored.append(machine)
            free -= 1
    if lost:
        _notify(session, license_, lost, total, now)
    return lost, restored


def _set(
    session: Session, machine: Machine, state: str | None, now: datetime, why: str, *, actor: str = "system"
) -> None:
    machine.seat_state = state
    record_audit(
        session,
        actor=actor,
        action="machine.seat_released" if state else "machine.seat_taken",
        license_id=machine.license_id,
        machine_id=machine.id,
        detail={"seat_state": state, "why": why},
        at=now,
    )


def _notify(session: Session, license_: License, lost: Sequence[Machine], seats: int, now: datetime) -> None:
    customer = session.get(Customer, license_.customer_id)
    if customer is None:
        return
    from server import outbox

    names = ", ".join(m.terminal_name or m.id for m in lost)
    outbox.enqueue(
        session,
        customer.email,
        "seats_exceeded",
        customer.locale,
        {"terminals": names, "seats": seats},
        f"seats-exceeded:{license_.id}:{int(now.timestamp())}:{','.join(sorted(m.id for m in lost))}"[:255],
        now=now,
    )
