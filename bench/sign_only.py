"""The sign-only ceiling for bench/server_refresh.py: FastAPI on uvicorn, one route that signs a JWT.

`POST /v1/refresh` here does only what no refresh can skip: read the body, parse its JSON, build claims
of a real refresh token's shape and size (fingerprint, policy, cnf, the request's nonce as `rn`), and
sign them as an EdDSA JWT with `pospal_protocol.tokens.encode_token`, the server's own signer. It touches no
database and checks no request signature. It is served the way `pospal-server run` serves
(server/cli.py `cmd_run`: uvicorn, uvloop, httptools, no access log, `--workers` processes on one
port), so the same load generator against it gives the most a refresh could reach on this machine.

Every worker signs with the same throwaway key: the parent passes its 32-byte seed in
`POSPAL_BENCH_SIGN_SEED` (hex), or generates one. `GET /health` answers 200 and `GET /v1/keys` gives
the public key as a JWKS, so a caller can verify what it gets.

    python bench/sign_only.py --port 8100 --workers 2
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402
from cryptography.hazmat.primitives.serialization import (  # noqa: E402
    Encoding,
    NoEncryption,
    PrivateFormat,
)
from fastapi import FastAPI, Request, Response  # noqa: E402

from pospal_protocol.signatures import H_MACHINE, H_NONCE  # noqa: E402
from pospal_protocol.tokens import Policy, encode_token  # noqa: E402
from pospal_protocol.trust import jwk_from_public_key, jwk_thumbprint, kid_for  # noqa: E402
from server.cli import uvicorn_options  # noqa: E402

SEED_ENV = "POSPAL_BENCH_SIGN_SEED"
LEASE_S = 14 * 86400


def seed_of(key: Ed25519PrivateKey) -> str:
    """The key's raw 32-byte seed as hex (what `SEED_ENV` carries to the workers)."""
    return key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption()).hex()


def create_app(key: Ed25519PrivateKey) -> FastAPI:
    """The ceiling app, signing with `key`."""
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    kid = kid_for(key.public_key())
    jwks = json.dumps({"keys": [jwk_from_public_key(key.public_key())]}).encode()
    # Stands in for the machine's key in `cnf`: computing a thumbprint per request is not signing work.
    jkt = jwk_thumbprint(key.public_key())
    policy = Policy().to_claim()

    @app.get("/health")
    async def health() -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    @app.get("/v1/keys")
    async def keys() -> Response:
        return Response(jwks, media_type="application/json")

    @app.post("/v1/refresh")
    async def refresh(request: Request) -> Response:
        body: dict[str, Any] = json.loads(await request.body())
        now = int(time.time())
        claims = {
            "iss": "pospal",
            "aud": "pospal-agent",
            "sub": "lic_bench",
            "kind": "license",
            "mid": request.headers.get(H_MACHINE, "m_bench"),
            "fp": body.get("fingerprint", {}),
            "status": "active",
            "plan": "pospal-monthly",
            "features": ["pos"],
            "seats": 64,
            "email": "bench@cafe.gr",
            "terminal": "Till",
            "period_end": now + 30 * 86400,
            "payment_grace_end": None,
            "cancel_at": None,
            "trial_end": None,
            "iat": now,
            "nbf": now,
            "exp": now + LEASE_S,
            "srv": now,
            "cnf": {"jkt": jkt},
            "rn": request.headers.get(H_NONCE, ""),
            "policy": policy,
        }
        token = encode_token(key, kid, claims)
        return Response(json.dumps({"token": token, "keyset": None}).encode(), media_type="application/json")

    return app


def app_from_env() -> FastAPI:
    """The uvicorn factory each worker calls: the key comes from `SEED_ENV`."""
    seed = os.environ.get(SEED_ENV)
    if not seed:
        raise SystemExit(f"{SEED_ENV} is not set")
    return create_app(Ed25519PrivateKey.from_private_bytes(bytes.fromhex(seed)))


def main(argv: list[str] | None = None) -> int:
    """Serve the ceiling app on loopback with uvicorn, as `pospal-server run` would."""
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    os.environ.setdefault(SEED_ENV, seed_of(Ed25519PrivateKey.generate()))
    # Workers re-import this module by name: they need the repository on their path.
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    uvicorn.run("bench.sign_only:app_from_env", **uvicorn_options(args.host, args.port, args.workers))
    return 0


if __name__ == "__main__":
    sys.exit(main())
