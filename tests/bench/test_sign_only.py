"""bench/sign_only.py answers the benchmark's refresh requests with valid EdDSA tokens; the ratio line.

The ceiling is only worth comparing against if it does a refresh's signing for real: a token the agent's
own verifier accepts, bound to the request's machine, fingerprint and nonce.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient

from bench.server_refresh import Result, bench_machines, drive, presign, start_ceiling, stop, verdict
from bench.sign_only import create_app
from pospal_protocol.errors import TokenInvalid
from pospal_protocol.signatures import new_nonce, sign_request
from pospal_protocol.tokens import verify_token
from pospal_protocol.trust import TrustedKeys, jwk_thumbprint


def test_the_ceiling_answers_a_refresh_with_a_token_the_agent_accepts():
    key = Ed25519PrivateKey.generate()
    machine_id, machine_key, fingerprint = bench_machines(1)[0]
    body = json.dumps({"fingerprint": fingerprint, "known_kids": []}).encode()
    nonce = new_nonce()
    now = datetime.now(UTC)
    headers = sign_request(
        machine_key, "POST", "/v1/refresh", body, int(now.timestamp()), nonce, machine_id=machine_id
    )
    with TestClient(create_app(key)) as client:
        answer = client.post(
            "/v1/refresh", content=body, headers={**headers, "Content-Type": "application/json"}
        )
        jwks = client.get("/v1/keys").json()
    assert answer.status_code == 200
    token = answer.json()["token"]
    claims = verify_token(token, TrustedKeys.from_jwks(jwks), now, check_exp=True, expected_mid=machine_id)
    assert claims.fp == fingerprint
    assert claims.status == "active"
    assert claims.raw["rn"] == nonce
    # A token signed by another key is refused by the same check, so the one above is not vacuous.
    other = TrustedKeys([Ed25519PrivateKey.generate().public_key()])
    with pytest.raises(TokenInvalid):
        verify_token(token, other, now)
    assert jwk_thumbprint(key.public_key()) == claims.raw["cnf"]["jkt"]


def test_the_served_ceiling_signs_with_one_key_in_every_worker_and_takes_the_bench_load(tmp_path: Path):
    proc, port = start_ceiling(2, tmp_path / "sign-only.log")
    try:
        count, errors, _elapsed, _latencies = asyncio.run(
            drive(port, presign(bench_machines(4), 40), clients=4, seconds=20.0)
        )
        assert (count, errors) == (40, 0)
        trusted = TrustedKeys.from_jwks(httpx.get(f"http://127.0.0.1:{port}/v1/keys", timeout=5).json())
        machine_id, machine_key, fingerprint = bench_machines(1)[0]
        now = datetime.now(UTC)
        # New connections land on either worker; each token must verify against the one published key.
        for _ in range(12):
            body = json.dumps({"fingerprint": fingerprint, "known_kids": []}).encode()
            headers = sign_request(
                machine_key,
                "POST",
                "/v1/refresh",
                body,
                int(now.timestamp()),
                new_nonce(),
                machine_id=machine_id,
            )
            answer = httpx.post(
                f"http://127.0.0.1:{port}/v1/refresh", content=body, headers=headers, timeout=5
            )
            verify_token(answer.json()["token"], trusted, now, expected_mid=machine_id)
    finally:
        stop(proc)
    assert proc.poll() is not None


def _run(db: str, req_per_s: float, p99_ms: float, ceiling: float | None) -> Result:
    latencies = [1.0] * 98 + [p99_ms, p99_ms]
    return Result(db, 1, 2, 32, int(req_per_s * 10), 0, 10.0, latencies, ceiling_req_per_s=ceiling)


def test_the_verdict_gives_the_ratio_to_the_ceiling_and_says_whether_the_target_is_met():
    met = verdict(_run("sqlite", 2000.0, 30.0, 3200.0))
    assert "2,000 req/s of a 3,200 req/s ceiling = 0.62x" in met
    assert "p99 30.0 ms: meets the target" in met
    assert "misses the target" in verdict(_run("postgres", 1500.0, 30.0, 3200.0))  # 0.47x
    assert "misses the target" in verdict(_run("postgres", 2500.0, 80.0, 3200.0))  # p99 over 50 ms
    row = _run("sqlite", 2000.0, 30.0, 3200.0).row()
    assert (row["ceiling_req_per_s"], row["ratio"]) == (3200.0, 0.625)
