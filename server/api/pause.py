"""The seasonal pause: `POST /v1/subscription/pause` and `/v1/subscription/resume`, for the proven owner.

A Greek beach bar closes from November to April. Pausing sets Stripe's `pause_collection` (behavior
`void`: no invoice is collected) until a resume date or "until I resume"; the subscription, its
license and every terminal's seat and identity stay as they are. While paused the tokens say so
(`paused`, `resumes_at`, status `canceled` for agents that know only the seed's statuses) and ask the
tills to sync every minute, so a resume (at the date, which needs no webhook, or at once here) licenses
every till within a minute online. The owner proves themselves as for the portal: the machine's
remembered proof, or an e-mailed code. The mirror is synced from the provider's answer at once, and the
webhook that follows (`customer.subscription.updated`) finds it already applied.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, field_validator

from server import codes
from server.api.deps import Services, limit_code_guesses, raw_body, services
from server.api.schemas import ProofRequest
from server.api.terminals import _owner, _prove
from server.billing.sync import FetchedState, WebhookContext, sync_subscription
from server.errors import ApiError, BillingError, InvalidRequest, NoSubscription
from server.models import Subscription

router = APIRouter(prefix="/v1/subscription", tags=["pause"])

LONGEST_PAUSE = timedelta(days=240)


class PauseRequest(ProofRequest):
    """Pause until `resumes_at` (a time with its zone), or until the owner resumes when absent."""

    resumes_at: datetime | None = None

    @field_validator("resumes_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("resumes_at needs a time zone (use ...Z)")
        return value


class PauseAnswer(BaseModel):
    """Where the subscription stands now."""

    paused: bool
    resumes_at: datetime | None = None


@router.post("/pause", response_model=PauseAnswer, dependencies=[Depends(limit_code_guesses)])
def pause(
    body: PauseRequest, request: Request, raw: bytes = Depends(raw_body), svc: Services = Depends(services)
) -> PauseAnswer:
    """Pause collection and the tills until `resumes_at` (or until resumed); seats are kept."""
    now = svc.clock.now()
    if body.resumes_at is not None and not now < body.resumes_at <= now + LONGEST_PAUSE:
        raise InvalidRequest(f"resumes_at must be in the next {LONGEST_PAUSE.days} days.")
    resumes = int(body.resumes_at.timestamp()) if body.resumes_at else None
    return _set(body, request, raw, svc, paused=True, resumes_at=resumes)


@router.post("/resume", response_model=PauseAnswer, dependencies=[Depends(limit_code_guesses)])
def resume(
    body: ProofRequest, request: Request, raw: bytes = Depends(raw_body), svc: Services = Depends(services)
) -> PauseAnswer:
    """Resume now: every till is licensed again at its next sync (within a minute)."""
    return _set(body, request, raw, svc, paused=False, resumes_at=None)


def _set(
    body: ProofRequest, request: Request, raw: bytes, svc: Services, *, paused: bool, resumes_at: int | None
) -> PauseAnswer:
    code_id = _prove(request, body, svc, ("portal", "owner"), allow_used=False)
    with svc.db.transaction() as session:
        owner = _owner(session, request, raw, body, svc, code_id)
        owner.require_proof()
        row = session.get(Subscription, owner.license.subscription_id) if owner.license else None
        if row is None or row.status not in ("active", "trialing", "past_due"):
            raise NoSubscription("There is no running subscription to pause or resume.")
        provider_id = row.provider_subscription_id
    return apply_pause(svc, provider_id, paused=paused, resumes_at=resumes_at, code_id=code_id)


def apply_pause(
    svc: Services, provider_id: str, *, paused: bool, resumes_at: int | None, code_id: int | None = None
) -> PauseAnswer:
    """Ask the provider to pause (or resume) `provider_id`, then mirror its answer at once.

    Shared with the owner's web page (`server/api/owner_page.py`); `code_id` is spent only once the
    provider has answered, so a provider refusal leaves the owner's code usable for a retry.
    """
    if svc.billing is None:
        raise ApiError("Billing is not available on this server.", status=503, code="billing_unavailable")
    try:
        current = svc.billing.set_pause(provider_id, paused, resumes_at)
    except BillingError:
        raise ApiError(
            "The payment provider is not reachable. Try again in a minute.",
            status=503,
            code="billing_unavailable",
        ) from None
    now = svc.clock.now()
    ctx = WebhookContext(svc.clock, svc.settings.public_url, svc.settings.system_admin_email)
    with svc.db.transaction() as session:
        synced, _ = sync_subscription(
            session, svc.billing, provider_id, ctx, now, fetched=FetchedState(current, now)
        )
        if code_id is not None:
            codes.consume(session, code_id, now)
        return PauseAnswer(paused=synced.paused, resumes_at=synced.pause_resumes_at)
