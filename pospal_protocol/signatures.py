"""Machine-signed requests: the `X-POSPal-*` headers an agent signs with its machine key.

Both sides use this module, so the agent signs exactly what the server checks (docs/ARCHITECTURE.md,
"Machine-signed requests"). The signed string is

    METHOD \n path \n timestamp \n nonce \n sha256(body) hex

and the signature is Ed25519 over it, base64url. This module knows no clock and stores no nonces: the
server enforces the time window and the replay store (`server.nonces`).
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from pospal_protocol.errors import KeyInvalid, RequestSignatureInvalid
from pospal_protocol.trust import b64url_decode, b64url_encode, decode_public_key

H_MACHINE = "X-POSPal-Machine"
H_TIMESTAMP = "X-POSPal-Timestamp"
H_NONCE = "X-POSPal-Nonce"
H_SIGNATURE = "X-POSPal-Signature"


@dataclass(frozen=True)
class SignedRequest:
    """What a verified machine-signed request proved: its timestamp, nonce and claimed machine id."""

    timestamp: int
    nonce: str
    machine_id: str | None


def new_nonce() -> str:
    """A fresh request nonce: 32 hex chars from `secrets`."""
    return secrets.token_hex(16)


def _signing_string(method: str, path: str, ts: int, nonce: str, body: bytes) -> bytes:
    digest = hashlib.sha256(body).hexdigest()
    return f"{method.upper()}\n{path}\n{ts}\n{nonce}\n{digest}".encode()


def sign_request(
    private_key: Ed25519PrivateKey,
    method: str,
    path: str,
    body_bytes: bytes,
    ts: int,
    nonce: str,
    *,
    machine_id: str | None = None,
) -> dict[str, str]:
    """Headers for a machine-signed request (`path` as sent, e.g. `/v1/refresh`; `ts` Unix seconds).

    `X-POSPal-Machine` is added when `machine_id` is given (absent on activation and trial start).
    """
    sig = private_key.sign(_signing_string(method, path, int(ts), nonce, body_bytes))
    headers = {H_TIMESTAMP: str(int(ts)), H_NONCE: nonce, H_SIGNATURE: b64url_encode(sig)}
    if machine_id is not None:
        headers[H_MACHINE] = machine_id
    return headers


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        lname = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == lname), None)
    return value


def verify_request_signature(
    public_key: Ed25519PublicKey | bytes | str,
    method: str,
    path: str,
    headers: Mapping[str, str],
    body_bytes: bytes,
) -> SignedRequest:
    """Check the `X-POSPal-*` signature headers against the machine's public key.

    Returns the timestamp and nonce so the caller can enforce its time window and replay store (this
    function knows no clock). Raises `RequestSignatureInvalid` for missing/malformed headers or a bad
    signature.
    """
    ts_text, nonce, sig_text = (_header(headers, h) for h in (H_TIMESTAMP, H_NONCE, H_SIGNATURE))
    if not ts_text or not nonce or not sig_text:
        raise RequestSignatureInvalid("Request is not signed.")
    if not ts_text.isascii() or not ts_text.isdigit() or len(ts_text) > 12:
        raise RequestSignatureInvalid("Request timestamp is malformed.")
    if len(nonce) != 32 or not all(c in "0123456789abcdef" for c in nonce):
        raise RequestSignatureInvalid("Request nonce is malformed.")
    try:
        key = public_key if isinstance(public_key, Ed25519PublicKey) else decode_public_key(public_key)
        sig = b64url_decode(sig_text)
        key.verify(sig, _signing_string(method, path, int(ts_text), nonce, body_bytes))
    except (ValueError, KeyInvalid, InvalidSignature) as exc:
        raise RequestSignatureInvalid("Request signature does not verify.") from exc
    return SignedRequest(timestamp=int(ts_text), nonce=nonce, machine_id=_header(headers, H_MACHINE))
