"""`POST /v1/codes`: email a 6-digit code (5 per hour per email, 30 per address, then 429).

The answer is the same 202 for a customer and a stranger, after the same work (see `server.codes`).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from server import codes
from server.api.deps import Services, limit_per_ip, services
from server.api.schemas import CodeAnswer, CodeRequest

router = APIRouter(prefix="/v1", tags=["codes"])

CODES_PER_HOUR_PER_IP = 30


@router.post("/codes", status_code=202, response_model=CodeAnswer)
def request_code(body: CodeRequest, request: Request, svc: Services = Depends(services)) -> CodeAnswer:
    """Send a code to the email if it belongs to a customer; the answer is the same either way."""
    limit_per_ip(request, svc, "codes", CODES_PER_HOUR_PER_IP)
    now = svc.clock.now()
    with svc.db.transaction() as session:
        codes.request_code(
            session,
            email=body.email,
            purpose=body.purpose,
            locale=body.locale or "",
            secret=svc.secret,
            limiter=svc.limiter,
            now=now,
        )
    return CodeAnswer(sent=True)
