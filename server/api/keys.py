"""`GET /v1/keys`: the public JWKS (current key plus retired keys whose tokens may still be valid).

Agents never trust a key because it appears here; they trust key-set documents signed by a key they
already trust. This endpoint is for operators, monitoring and self-hosted setups.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from server.api.deps import Services, services

router = APIRouter(prefix="/v1", tags=["keys"])


@router.get("/keys")
def keys(svc: Services = Depends(services)) -> dict[str, Any]:
    """The JWKS `{keys: [...]}`."""
    with svc.db.transaction() as session:
        return svc.keys.jwks(session, svc.clock.now())
