"""The owner's authority: who may spend money, cancel, or free a seat.

Staff at a till may see the status, sync, start a trial, and activate with a code the owner gives them.
Everything that costs money, cancels or frees a seat (the billing portal, removing or keeping
terminals, changing the quantity, a checkout for an existing customer) needs the owner's proof: a fresh
emailed code, given either with the request itself (`{email, code}`) or once on a terminal with
`POST /v1/owner`. That proof is remembered server-side for that terminal (its machine public key) for
`PROOF_TTL`, so the owner types one code for a few actions in a row. An email address alone, or a
machine signature alone, proves nothing here.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from server.errors import ApiError
from server.models import OwnerProof

PROOF_TTL = timedelta(minutes=15)
# Codes of these purposes prove the owner: the window asks for "owner"; older agents ask for these.
PROOF_PURPOSES = ("owner", "portal", "terminals")


class OwnerProofRequired(ApiError):
    """The action needs the owner's emailed code; the caller should ask for one and prove it."""

    code = "owner_proof_required"
    default_message = (
        "Only the owner can do this. Ask for a code by email, enter it on this computer, then try again."
    )


def remember(session: Session, customer_id: str, machine_key: str, now: datetime) -> datetime:
    """Record that the owner of `customer_id` proved their email on this machine; return the expiry."""
    session.execute(
        delete(OwnerProof).where(OwnerProof.machine_key == machine_key, OwnerProof.expires_at <= now)
    )
    expires = now + PROOF_TTL
    session.add(
        OwnerProof(machine_key=machine_key, customer_id=customer_id, proven_at=now, expires_at=expires)
    )
    return expires


def holds(session: Session, customer_id: str, machine_key: str, now: datetime) -> bool:
    """Whether a live owner proof for `customer_id` is remembered for this machine."""
    found = session.scalar(
        select(OwnerProof.id)
        .where(
            OwnerProof.machine_key == machine_key,
            OwnerProof.customer_id == customer_id,
            OwnerProof.expires_at > now,
        )
        .limit(1)
    )
    return found is not None


def require(session: Session, customer_id: str, machine_key: str, now: datetime) -> None:
    """Raise `OwnerProofRequired` (403) unless this machine holds a live proof for the customer."""
    if not holds(session, customer_id, machine_key, now):
        raise OwnerProofRequired()


def purge_expired(session: Session, now: datetime) -> int:
    """Delete proofs past their expiry (housekeeping); return how many."""
    result = session.execute(delete(OwnerProof).where(OwnerProof.expires_at <= now))
    return int(getattr(result, "rowcount", 0) or 0)
