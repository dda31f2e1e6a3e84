"""Signed local answers: the challenge a POS sends, the canonical hash of the answer, the machine-key proof.

A POS cannot tell the genuine agent from anything else listening on 127.0.0.1:7421, so the agent proves
its answer. The POS sends `GET /v1/license?challenge=<16-64 random bytes, base64url>`; the agent answers
the usual fields plus `token` (the server-signed JWS, whose `cnf.jkt` names the machine key),
`machine_key` (that key, raw Ed25519 as base64url) and `proof`:

    digest  = hex(SHA-256(canonical_json(answer without "proof")))
    message = "pospal-local-answer/v1\\n" + challenge + "\\n" + digest        (ASCII)
    proof   = base64url(Ed25519_sign(machine_key, message))

`canonical_json` is RFC 8785 (JCS) for the values an answer holds (objects, arrays, strings, integers,
true/false/null): keys sorted, no whitespace, UTF-8, strings escaped only where JSON requires it.
Floats are refused rather than guessed at. Both sides use these helpers; docs/ and the README give the
same steps for a POS in another language.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from pospal_protocol.trust import b64url_encode

PROOF_CONTEXT = "pospal-local-answer/v1"
CHALLENGE_MIN_BYTES = 16
CHALLENGE_MAX_BYTES = 64


def canonical_json(value: Any) -> bytes:
    """RFC 8785 canonical JSON of `value` (no floats); raises ValueError on anything else."""
    _check(value)
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def _check(value: Any) -> None:
    if value is None or isinstance(value, bool | int | str):
        return
    if isinstance(value, list):
        for item in value:
            _check(item)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError("canonical JSON keys must be strings")
            _check(item)
        return
    raise ValueError(f"canonical JSON cannot hold a {type(value).__name__}")


def parse_challenge(text: str) -> bytes:
    """Decode a challenge: canonical unpadded base64url of 16 to 64 bytes. Raises ValueError."""
    if not isinstance(text, str) or not 22 <= len(text) <= 86:
        raise ValueError("challenge length")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ValueError("challenge is not base64url") from exc
    if b64url_encode(raw) != text or not CHALLENGE_MIN_BYTES <= len(raw) <= CHALLENGE_MAX_BYTES:
        raise ValueError("challenge is not canonical base64url of 16-64 bytes")
    return raw


def answer_digest(answer: Mapping[str, Any]) -> str:
    """Hex SHA-256 of the canonical JSON of `answer` without its `proof` member."""
    body = {k: v for k, v in answer.items() if k != "proof"}
    return hashlib.sha256(canonical_json(body)).hexdigest()


def proof_message(challenge: str, digest: str) -> bytes:
    """The bytes the machine key signs for one challenge and one answer digest."""
    return f"{PROOF_CONTEXT}\n{challenge}\n{digest}".encode("ascii")


def sign_answer(key: Ed25519PrivateKey, challenge: str, digest: str) -> str:
    """The `proof` member: base64url Ed25519 signature over `proof_message(challenge, digest)`."""
    return b64url_encode(key.sign(proof_message(challenge, digest)))


def verify_answer(public_key: Ed25519PublicKey, challenge: str, answer: Mapping[str, Any]) -> bool:
    """Whether `answer["proof"]` is the machine key's signature over this challenge and this answer."""
    proof = answer.get("proof")
    if not isinstance(proof, str):
        return False
    try:
        signature = base64.urlsafe_b64decode(proof + "=" * (-len(proof) % 4))
        message = proof_message(challenge, answer_digest(answer))
    except (binascii.Error, ValueError, UnicodeEncodeError):
        return False
    if len(signature) != 64 or b64url_encode(signature) != proof:
        return False
    try:
        public_key.verify(signature, message)
    except InvalidSignature:
        return False
    return True
