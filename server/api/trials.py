"""`POST /v1/trials`: start or resume the 30-day trial of a machine, keyed by its fingerprint.

The request must carry its platform's minimum of components (`server.fingerprints`), and any one
strong component seen on an earlier trial finds that trial, so a reinstall, a new machine key or a few
changed parts never start a second one. The per-address limit counts an IPv6 /64 as one address.

An old POSPal till whose trial was still running on the old server when it was imported
(`pospal1_trials`, keyed by the old app's hardware id) sends that id: a PC the server has not seen
then continues the old trial (its first run and end date, so only the remaining days; a PC already on
a later trial moves back to the old dates, the earliest start winning as for any PC), and the old id
is remembered as one of the trial's components, so a reinstall that sends it again finds the same
trial. An id the import did not record changes nothing (a fresh trial, as on any new PC).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from fastapi import APIRouter, Depends, Request
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from server import binding, fingerprints, licensing
from server.api.deps import (
    Services,
    check_and_remember,
    limit_per_ip,
    parse_public_key,
    public_key_owner,
    raw_body,
    services,
    verify_machine_signature,
)
from server.api.schemas import TokenAnswer, TrialRequest
from server.db import lock_for
from server.models import Machine, Pospal1Trial, Trial, TrialComponent, table_of

router = APIRouter(prefix="/v1", tags=["trials"])

TRIALS_PER_HOUR_PER_IP = 30
PROVISIONAL_MAX = timedelta(seconds=licensing.POLICY.provisional_trial_s)


@router.post("/trials", response_model=TokenAnswer)
def start_trial(
    body: TrialRequest,
    request: Request,
    raw: bytes = Depends(raw_body),
    svc: Services = Depends(services),
) -> TokenAnswer:
    """Start the trial (first seen wins: a reinstall or one changed part finds the same trial)."""
    public_key = parse_public_key(body.machine_public_key)
    signed = verify_machine_signature(public_key, request, raw)
    now = svc.clock.now()
    limit_per_ip(request, svc, "trials", TRIALS_PER_HOUR_PER_IP)
    fingerprints.check_complete(body.fingerprint)
    hashes = [
        licensing.trial_component_hash(svc.secret, n, v.lower())
        for n, v in fingerprints.strong(body.fingerprint).items()
    ]
    with svc.db.transaction() as session:
        check_and_remember(session, signed, public_key_owner(public_key), svc)
        # The same first request may reach two instances at once (a retry through the load balancer):
        # the second waits here, then finds the machine and trial the first one made.
        lock_for(session, f"trial-machine:{public_key}")
        machine = session.scalars(select(Machine).where(Machine.public_key == public_key)).first()
        old_trial = _imported_trial(session, body.pospal1_hardware_id)
        if old_trial is not None:
            hashes.append(licensing.trial_component_hash(svc.secret, "pospal1", old_trial.hardware_hash))
        if machine is not None and machine.license_id and machine.deactivated_at is None:
            # Already licensed: the trial would be a downgrade, so answer with the license.
            claims = licensing.claims_for_machine(session, machine, now)
        else:
            trial, action = _trial_for(session, machine, hashes, body, public_key, now, old_trial)
            machine, verdict = _join_trial(session, machine, trial, body, public_key, now)
            licensing.record_audit(
                session,
                actor=f"machine:{machine.id}",
                action=action,
                machine_id=machine.id,
                detail={"trial_id": trial.id},
                at=now,
            )
            claims = licensing.trial_claims(machine, trial, now)
            if verdict.clone:
                claims["fp"] = verdict.token_fp
        # `rn`: the token answers this signed request only (the agent refuses a replayed one).
        token = svc.keys.sign(session, {**claims, "rn": signed.nonce})
        return TokenAnswer(token=token, keyset=svc.keys.keyset_for(session, body.known_kids, now))


def _trial_for(
    session: Session,
    machine: Machine | None,
    hashes: list[str],
    body: TrialRequest,
    public_key: str,
    now: datetime,
    old_trial: Pospal1Trial | None = None,
) -> tuple[Trial, str]:
    """The trial this machine resumes, or a new one; with the audit action that says which."""
    trial = _find_trial(session, machine, hashes)
    action = "trial.resumed"
    if trial is None and old_trial is not None:
        # The old server's trial goes on where it was: its dates, not a fresh 30 days.
        trial = Trial(
            first_seen_at=old_trial.first_run_at, ends_at=old_trial.ends_at, machine_public_key=public_key
        )
        session.add(trial)
        session.flush()
        action = "trial.pospal1_continued"
    elif trial is not None and old_trial is not None and old_trial.first_run_at < trial.first_seen_at:
        # This PC's old trial began first: the earliest start wins, as for any PC (never a longer trial).
        trial.first_seen_at = old_trial.first_run_at
        trial.ends_at = min(trial.ends_at, old_trial.ends_at)
    elif trial is None:
        start = now
        if body.provisional_started_at is not None:
            start = min(now, max(now - PROVISIONAL_MAX, body.provisional_started_at))
        trial = Trial(
            first_seen_at=start, ends_at=start + licensing.TRIAL_LENGTH, machine_public_key=public_key
        )
        session.add(trial)
        session.flush()
        action = "trial.started"
    if body.email is not None:
        trial.email = body.email
    if body.locale is not None:  # the agent's language: the trial reminder is written in it
        trial.locale = body.locale
    _remember_components(session, trial.id, hashes)
    return trial, action


def _join_trial(
    session: Session,
    machine: Machine | None,
    trial: Trial,
    body: TrialRequest,
    public_key: str,
    now: datetime,
) -> tuple[Machine, binding.Verdict]:
    """Put the machine (new, or known by its key) on the trial, and judge its presented fingerprint."""
    verdict = binding.KEEP
    if machine is None:
        machine = Machine(public_key=public_key, activated_at=now, fingerprint=dict(body.fingerprint))
        session.add(machine)
    elif machine.fingerprint:
        # The same machine key again: its binding follows the refresh rules, not the request.
        verdict = binding.observe(session, machine, body.fingerprint, now)
    else:
        machine.fingerprint = dict(body.fingerprint)
    if verdict.bind is not None:
        machine.fingerprint = verdict.bind
    machine.trial_id = trial.id
    machine.license_id = None
    machine.deactivated_at = None
    machine.terminal_name = body.terminal_name or machine.terminal_name
    machine.last_seen_at = now
    session.flush()
    return machine, verdict


def _find_trial(session: Session, machine: Machine | None, hashes: list[str]) -> Trial | None:
    """The earliest trial this machine key or any of these strong component hashes already started."""
    ids: set[str] = set()
    if machine is not None and machine.trial_id:
        ids.add(machine.trial_id)
    if hashes:
        ids.update(
            session.scalars(select(TrialComponent.trial_id).where(TrialComponent.component_hash.in_(hashes)))
        )
    if not ids:
        return None
    return session.scalars(
        select(Trial).where(Trial.id.in_(ids)).order_by(Trial.first_seen_at).limit(1)
    ).first()


def _remember_components(session: Session, trial_id: str, hashes: list[str]) -> None:
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    for component_hash in hashes:
        session.execute(
            insert(table_of(TrialComponent))
            .values(component_hash=component_hash, trial_id=trial_id)
            .on_conflict_do_nothing(index_elements=["component_hash"])
        )


def _imported_trial(session: Session, hardware_id: str | None) -> Pospal1Trial | None:
    """The old server's trial of this old hardware id, as the import recorded it; None when there is none."""
    if hardware_id is None:
        return None
    return session.get(Pospal1Trial, hardware_id)
