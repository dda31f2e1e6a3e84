"""Benchmark of the agent core: token verification, status computation and a cold fingerprint.

Prints three figures (targets from issue 2): token verify µs/op (<= 400), status computation µs/op
(<= 50) and cold fingerprint ms on Linux (<= 500, each run in a fresh process so nothing is cached).
Run: .venv/bin/python bench/agent_core.py
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402

from agent.core.state import StatusInputs, compute_status  # noqa: E402
from pospal_protocol import tokens, trust  # noqa: E402
from pospal_protocol.fingerprint import hash_component, match  # noqa: E402

COLD_FP = """
import json, time
t0 = time.perf_counter()
from pospal_protocol import fingerprint
t1 = time.perf_counter()
fp = fingerprint.current()
t2 = time.perf_counter()
print(json.dumps({"import_ms": (t1 - t0) * 1e3, "probe_ms": (t2 - t1) * 1e3, "working": fp.working_count()}))
"""


def per_op(fn, n: int, repeats: int = 5) -> float:
    """Best-of-`repeats` seconds per call (best, because other processes share these 2 cores)."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - t0) / n)
    return best


def main() -> None:
    """Run the three measurements and print them."""
    key = Ed25519PrivateKey.generate()
    kid = trust.kid_for(key.public_key())
    now = datetime.now(UTC)
    iat = int(now.timestamp())
    names = ("machine_id", "product_uuid", "board_serial", "disk_serial", "mac")
    fp = {n: hash_component(n, f"v-{n}") for n in names}
    mid = "m_0123456789"
    claims = {
        "iss": "pospal",
        "aud": "pospal-agent",
        "sub": "lic_0123456789",
        "kind": "license",
        "mid": mid,
        "fp": fp,
        "status": "active",
        "plan": "pospal-monthly",
        "features": ["pos", "kds"],
        "seats": 3,
        "email": "owner@example.com",
        "terminal": "Bar 1",
        "period_end": iat + 20 * 86400,
        "payment_grace_end": None,
        "cancel_at": None,
        "trial_end": None,
        "iat": iat,
        "nbf": iat,
        "exp": iat + 14 * 86400,
        "srv": iat,
        "policy": tokens.Policy().to_claim(),
    }
    token = tokens.encode_token(key, kid, claims)
    trusted = trust.TrustedKeys([key.public_key()])

    def verify():
        return tokens.verify_token(
            token,
            trusted,
            now,
            check_exp=True,
            expected_mid=mid,
            fp_matches=lambda bound: match(bound, fp).ok,
        )

    verified = verify()
    pub, msg = key.public_key(), token.rsplit(".", 1)[0].encode()
    sig = trust.b64url_decode(token.rsplit(".", 1)[1])
    raw_us = per_op(lambda: pub.verify(sig, msg), 2000) * 1e6
    verify_us = per_op(verify, 2000) * 1e6

    inputs = StatusInputs(
        now=now,
        claims=verified,
        last_sync=now,
        fingerprint_match=True,
        machine_id=mid,
        terminal_name="Bar 1",
        next_sync=now,
        agent_version="1.0.0",
        language="el",
    )
    status_us = per_op(lambda: compute_status(inputs), 20000) * 1e6
    to_dict_us = per_op(lambda: compute_status(inputs).to_dict(), 20000) * 1e6

    runs = []
    for _ in range(5):
        out = subprocess.run(
            [sys.executable, "-c", COLD_FP], cwd=ROOT, capture_output=True, text=True, check=True
        )
        runs.append(json.loads(out.stdout))
    probe = [r["probe_ms"] for r in runs]
    total = [r["import_ms"] + r["probe_ms"] for r in runs]

    print(f"token verify (signature, claims, exp, fingerprint): {verify_us:7.1f} µs/op  (target <= 400)")
    print(f"  raw Ed25519 verify alone, for scale:               {raw_us:7.1f} µs/op")
    print(f"status computation (compute_status, Greek message): {status_us:7.1f} µs/op  (target <= 50)")
    print(f"  compute_status + to_dict:                          {to_dict_us:7.1f} µs/op")
    print(
        f"cold fingerprint ({sys.platform}, fresh process each, {runs[0]['working']} sources working): "
        f"median {statistics.median(probe):.1f} ms, max {max(probe):.1f} ms  (target <= 500)"
    )
    print(
        f"  plus importing pospal_protocol.fingerprint: median {statistics.median(total):.1f} ms, "
        f"max {max(total):.1f} ms"
    )


if __name__ == "__main__":
    main()
