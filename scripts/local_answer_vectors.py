"""Test vectors for verifying the agent's signed local answer from a POS in any language.

Prints one JSON document: the trusted server key set, "this PC"'s fingerprint hashes, and cases, each with
the time to check at, a challenge, the agent's answer (token, machine_key, proof and the status fields),
the digest and signed message in between, and the expected verdict (`licensed`); then variants that change
one thing (or bring a whole `answer`: after a key rotation, with its `keyset_updates` document signed by
the offline key-set authority that `trusted_keys.keyset_authority` names), each with its
verdict (`licensed`, `bad_proof`, `other_machine` or `license_expired`). Every key is
derived from a fixed seed and Ed25519 signatures are deterministic, so the output never changes; the
README carries it, and tests/test_readme_vectors.py checks the README's copy against this script and
against `pospal_client.verify_local_answer`, and clients/js against its own verifier.

Usage: .venv/bin/python scripts/local_answer_vectors.py
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402

from pospal_protocol.fingerprint import hash_component  # noqa: E402
from pospal_protocol.proof import answer_digest, proof_message, sign_answer  # noqa: E402
from pospal_protocol.tokens import encode_token, make_authority_keyset, make_keyset_document  # noqa: E402
from pospal_protocol.trust import (  # noqa: E402
    b64url_encode,
    encode_public_key,
    jwk_from_public_key,
    jwk_thumbprint,
    kid_for,
)

NOW = 1780315200  # 2026-06-01T12:00:00Z
DAY = 86400


def _key(label: str) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(hashlib.sha256(label.encode()).digest())


def _hashes(pc: str) -> dict[str, str]:
    names = ("machine_id", "disk_serial", "mac")
    return {name: hash_component(name, f"{pc}-{name}".upper()) for name in names}


def vectors() -> dict[str, Any]:
    """The whole vector document."""
    server = _key("pospal test vector: server signing key")
    machine = _key("pospal test vector: machine key")
    iat = NOW - 3600
    claims = {
        "iss": "pospal",
        "aud": "pospal-agent",
        "sub": "lic_vector",
        "kind": "license",
        "mid": "m_vector",
        "fp": _hashes("till"),
        "status": "active",
        "plan": "pospal-monthly",
        "features": ["pos"],
        "seats": 1,
        "period_end": iat + 20 * DAY,
        "iat": iat,
        "nbf": iat,
        "exp": iat + 14 * DAY,
        "srv": iat,
        "policy": {},
        "cnf": {"jkt": jwk_thumbprint(machine.public_key())},
    }
    token = encode_token(server, kid_for(server.public_key()), claims)
    status = {
        "license_state": "licensed_active",
        "licensed": True,
        "reason": "active",
        "message": "Άδεια ενεργή. Ανανεώνεται στις 21 Ιουν 2026.",
        "days_left": 20,
        "machine_id": "m_vector",
        "terminal_name": 'Μπαρ "1"',
    }
    answer = {**status, "token": token, "machine_key": encode_public_key(machine.public_key())}

    challenge = b64url_encode(bytes(range(32)))
    digest = answer_digest(answer)
    genuine = {**answer, "proof": sign_answer(machine, challenge, digest)}

    authority = _key("pospal test vector: the offline key-set authority")

    def signed_by(signer: Ed25519PrivateKey, chain_signer: Ed25519PrivateKey) -> dict[str, Any]:
        """The same answer with its token from `signer` and a key-set document naming it, by `chain_signer`
        (the offline authority's, or a token key's legacy document, which counts for nothing)."""
        jwks = [jwk_from_public_key(k.public_key()) for k in (server, signer)]
        chain_kid = kid_for(chain_signer.public_key())
        if chain_signer is authority:
            update = make_authority_keyset([(authority, chain_kid)], version=1, keys=jwks, iat=iat - DAY)
        else:
            update = make_keyset_document(chain_signer, chain_kid, jwks, iat - DAY)
        body = {
            **status,
            "token": encode_token(signer, kid_for(signer.public_key()), claims),
            "machine_key": encode_public_key(machine.public_key()),
            "keyset_updates": [update],
        }
        return {**body, "proof": sign_answer(machine, challenge, answer_digest(body))}

    rotated = _key("pospal test vector: the server's next signing key")
    stranger = _key("pospal test vector: a key nobody trusts")
    return {
        "trusted_keys": {
            "keys": [jwk_from_public_key(server.public_key())],
            "keyset_authority": {"threshold": 1, "keys": [jwk_from_public_key(authority.public_key())]},
        },
        "this_pc": _hashes("till"),
        "now": NOW,
        "challenge": challenge,
        "answer": genuine,
        "digest": digest,
        "signed_message": proof_message(challenge, digest).decode("ascii"),
        "verdict": "licensed",
        "variants": [
            {
                "name": "replayed for another challenge",
                "challenge": b64url_encode(bytes(range(32, 64))),
                "verdict": "bad_proof",
            },
            {"name": "edited after signing", "answer_changes": {"days_left": 3650}, "verdict": "bad_proof"},
            {"name": "another PC", "this_pc": _hashes("other-pc"), "verdict": "other_machine"},
            {"name": "lease run out", "now": claims["exp"] + 1, "verdict": "license_expired"},
            {
                "name": "relayed to a PC of another OS (nothing to compare)",
                "this_pc": {
                    name: hash_component(name, f"other-os-{name}".upper())
                    for name in ("machine_guid", "smbios_uuid", "baseboard_serial", "bios_serial")
                },
                "verdict": "other_machine",
            },
            {
                "name": "after a key rotation (a new key's token, key set signed by the offline authority)",
                "answer": signed_by(rotated, authority),
                "verdict": "licensed",
            },
            {
                "name": "a key set signed only by the trusted (online) token key",
                "answer": signed_by(stranger, server),
                "verdict": "bad_proof",
            },
            {
                "name": "a chain no trusted key signed",
                "answer": signed_by(stranger, stranger),
                "verdict": "bad_proof",
            },
        ],
    }


def cases(doc: dict[str, Any]) -> list[tuple[str, dict[str, Any], str]]:
    """(name, {now, challenge, answer, this_pc}, verdict) for the genuine case and each variant."""
    base = {k: doc[k] for k in ("now", "challenge", "answer", "this_pc")}
    out = [("genuine", base, doc["verdict"])]
    for variant in doc["variants"]:
        case = {**base, **{k: variant[k] for k in ("now", "challenge", "this_pc") if k in variant}}
        case["answer"] = {**variant.get("answer", base["answer"]), **variant.get("answer_changes", {})}
        out.append((variant["name"], case, variant["verdict"]))
    return out


def main() -> None:
    """Print the vectors."""
    print(json.dumps(vectors(), indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
