"""The fingerprint binding of a machine key, and the rules that stop it being walked to another PC.

A machine's binding is the fingerprint its token carries. A refresh presenting a fingerprint that
conflicts with it (a strong component present on both sides with another value; a missing component or a
changed MAC is no conflict) comes here, and `observe` decides:

- **Re-bind** to the presented fingerprint when it still matches a strict majority of the binding, at most
  once per machine per `REBIND_EVERY` (30 days) unless the owner proved the e-mail: the caller says so
  (`owner_proven`), or the owner proved it on this machine within the last 15 minutes (`server.authority`).
  A copied machine key walking the binding one part at a time gets one step a month.
- **Clone**: the same machine key seen alternating between two fingerprints (one presented again after
  another was presented since) is two computers. The newer fingerprint (first seen later) is flagged, and
  its refreshes get a token bound to exactly the components where it differs from the binding, so that
  computer's agent shows `machine_changed` while the original keeps working. If the binding itself is the
  newer one (the walk had already moved it) and the older one was a binding before, the binding is flagged
  and goes back to the older one; a fingerprint that was only ever presented is never bound this way.
- Otherwise **keep** the binding; the agent judges the match itself.

Every fingerprint that conflicted, and the binding it conflicted with, is kept in `machine_fingerprints`
(first and last seen, `rebound_at`: when it became or was found to be the binding, when flagged); the
30-day limit counts the `machine.fingerprint_rebound` audit rows. `pospal-server admin machine clones`
lists the flagged ones.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from server import fingerprints
from server.db import lock_for
from server.licensing import fingerprint_matches, record_audit
from server.models import AuditLog, Machine, MachineFingerprint

REBIND_EVERY = timedelta(days=30)


@dataclass(frozen=True)
class Verdict:
    """What a refresh does with its presented fingerprint.

    `bind`: the new binding to store (None: keep it). `token_fp`: the `fp` claim for this answer when it
    must differ from the binding (a clone's answer), else None.
    """

    bind: dict[str, str] | None = None
    token_fp: dict[str, str] | None = None

    @property
    def clone(self) -> bool:
        """True when the presenting computer was judged a clone."""
        return self.token_fp is not None


KEEP = Verdict()


def conflicts(bound: Mapping[str, str], presented: Mapping[str, str]) -> list[str]:
    """Strong components present on both sides with different values, sorted."""
    strong = set(fingerprints.strong(bound)) & set(fingerprints.strong(presented))
    return sorted(name for name in strong if bound[name] != presented[name])


def healed(bound: Mapping[str, str], presented: Mapping[str, str]) -> dict[str, str] | None:
    """The binding with its weak parts (the NIC's MAC) as presented, when one of them changed; else None.

    A replaced network card is no evidence of another computer, so the binding heals at the next sync
    (PRODUCT: "one replaced disk or NIC ... the binding heals") without counting as a re-bind. A weak part
    the agent could not read this time is left as bound.
    """
    weak = {name: value for name, value in presented.items() if name in fingerprints.WEAK}
    changed = {name: value for name, value in weak.items() if bound.get(name) != value}
    return {**bound, **changed} if changed else None


def digest(fingerprint: Mapping[str, str]) -> str:
    """A stable id for one fingerprint (SHA-256 of its sorted JSON)."""
    return hashlib.sha256(json.dumps(dict(fingerprint), sort_keys=True).encode()).hexdigest()


def observe(
    session: Session, machine: Any, presented: Mapping[str, str], now: datetime, *, owner_proven: bool = False
) -> Verdict:
    """Decide what a refresh presenting `presented` does to `machine`'s binding (see the module doc).

    `machine` needs `id` and `fingerprint` (an ORM row or the refresh path's plain state). Writes the
    sighting, flags and audit rows in the caller's transaction; the caller stores `Verdict.bind`.
    """
    bound = dict(machine.fingerprint or {})
    presented = dict(presented)
    differing = conflicts(bound, presented)
    if not differing:
        return KEEP
    lock_for(session, f"binding:{machine.id}")  # two refreshes of one key at once are judged in turn
    row = session.execute(
        select(Machine.last_seen_at, Machine.activated_at).where(Machine.id == machine.id)
    ).one()
    machine_seen, activated = row.last_seen_at, row.activated_at
    # The binding was last presented before this request, whatever the clock's resolution says.
    before = min(machine_seen or activated or now, now) - timedelta(microseconds=1)
    bound_row = _sighting(session, machine.id, bound, activated or now, before)
    if bound_row.rebound_at is None:  # it is the binding now: remember that it was one
        bound_row.rebound_at = activated or now
    seen = _find_sighting(session, machine.id, presented)
    if seen is not None and seen.clone_at is not None:
        seen.last_seen_at = now
        return Verdict(token_fp={name: bound[name] for name in differing})
    if seen is not None and machine_seen is not None and seen.last_seen_at < machine_seen:
        return _alternated(session, machine.id, seen, bound_row, bound, presented, differing, now)
    if seen is None:
        seen = _sighting(session, machine.id, presented, now, now)
    seen.last_seen_at = now
    if not fingerprint_matches(bound, presented):
        return KEEP
    return _rebind(session, machine, seen, presented, differing, now, owner_proven)


def _alternated(
    session: Session,
    machine_id: str,
    seen: MachineFingerprint,
    bound_row: MachineFingerprint,
    bound: Mapping[str, str],
    presented: dict[str, str],
    differing: list[str],
    now: datetime,
) -> Verdict:
    """A fingerprint presented again after another one since: two computers; flag the newer one."""
    seen.last_seen_at = now
    older = (seen.first_seen_at, seen.id) < (bound_row.first_seen_at, bound_row.id)  # ties: row order
    if older and seen.rebound_at is not None:
        # The binding is the newer one: the walk had moved it. Flag it and go back to the older
        # binding, never to a fingerprint that was only ever presented.
        _flag(session, machine_id, bound_row, presented, now)
        return Verdict(bind=presented)
    _flag(session, machine_id, seen, bound, now)
    return Verdict(token_fp={name: bound[name] for name in differing})


def _rebind(
    session: Session,
    machine: Any,
    seen: MachineFingerprint,
    presented: dict[str, str],
    differing: list[str],
    now: datetime,
    owner_proven: bool,
) -> Verdict:
    """Re-bind to a matching fingerprint, unless the machine re-bound within `REBIND_EVERY` unproven."""
    last = session.scalar(
        select(func.max(AuditLog.at)).where(
            AuditLog.machine_id == machine.id, AuditLog.action == "machine.fingerprint_rebound"
        )
    )
    if last is not None and now - last < REBIND_EVERY:
        owner_proven = owner_proven or _owner_proof_on(session, machine, now)
        if not owner_proven:
            return KEEP
    seen.rebound_at = now
    record_audit(
        session,
        actor=f"machine:{machine.id}",
        action="machine.fingerprint_rebound",
        license_id=getattr(machine, "license_id", None),
        machine_id=machine.id,
        detail={"components": differing, **({"owner_proven": True} if owner_proven else {})},
        at=now,
    )
    return Verdict(bind=presented)


def _owner_proof_on(session: Session, machine: Any, now: datetime) -> bool:
    """Whether the owner proved the e-mail on this very machine lately (`server.authority`, 15 minutes)."""
    from server import authority
    from server.models import License

    license_id = getattr(machine, "license_id", None)
    public_key = getattr(machine, "public_key", None)
    if license_id is None or public_key is None:
        return False
    customer_id = session.scalar(select(License.customer_id).where(License.id == license_id))
    return customer_id is not None and authority.holds(session, customer_id, public_key, now)


def _find_sighting(
    session: Session, machine_id: str, fingerprint: Mapping[str, str]
) -> MachineFingerprint | None:
    """The row of this fingerprint of this machine, if it was seen before."""
    return session.scalars(
        select(MachineFingerprint).where(
            MachineFingerprint.machine_id == machine_id, MachineFingerprint.digest == digest(fingerprint)
        )
    ).first()


def _sighting(
    session: Session,
    machine_id: str,
    fingerprint: Mapping[str, str],
    first_seen: datetime,
    last_seen: datetime | None,
) -> MachineFingerprint:
    """The row of this fingerprint; created with these times when missing."""
    row = _find_sighting(session, machine_id, fingerprint)
    if row is None:
        row = MachineFingerprint(
            machine_id=machine_id,
            digest=digest(fingerprint),
            fingerprint=dict(fingerprint),
            first_seen_at=first_seen,
            last_seen_at=last_seen or first_seen,
        )
        session.add(row)
        session.flush()
    return row


def _flag(
    session: Session, machine_id: str, clone: MachineFingerprint, kept: Mapping[str, str], now: datetime
) -> None:
    clone.clone_at = now
    record_audit(
        session,
        actor="system",
        action="machine.clone_flagged",
        machine_id=machine_id,
        detail={
            "clone_digest": clone.digest,
            "components": conflicts(kept, clone.fingerprint),
            "clone_first_seen": clone.first_seen_at.isoformat(),
        },
        at=now,
    )


def clones(session: Session) -> list[dict[str, Any]]:
    """Every fingerprint flagged as a clone's, newest first (the admin CLI's list)."""
    rows = session.execute(
        select(MachineFingerprint, Machine)
        .join(Machine, Machine.id == MachineFingerprint.machine_id)
        .where(MachineFingerprint.clone_at.is_not(None))
        .order_by(MachineFingerprint.clone_at.desc())
    ).all()
    return [
        {
            "machine_id": machine.id,
            "license_id": machine.license_id,
            "terminal_name": machine.terminal_name,
            "flagged_at": sighting.clone_at,
            "clone_first_seen": sighting.first_seen_at,
            "clone_last_seen": sighting.last_seen_at,
            "differs_in": conflicts(machine.fingerprint or {}, sighting.fingerprint),
        }
        for sighting, machine in rows
    ]
