"""Machine-signed requests (`pospal_protocol.signatures`): the documented signing string, any header case,
and every kind of tampering refused."""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.errors import RequestSignatureInvalid
from pospal_protocol import signatures, trust
from tests.agent.tokenkit import NOW_TS

MACHINE = Ed25519PrivateKey.generate()
BODY = b'{"fingerprint": {}}'


def signed(**kw):
    args = {
        "method": "POST",
        "path": "/v1/refresh",
        "body_bytes": BODY,
        "ts": NOW_TS,
        "nonce": "0123456789abcdef0123456789abcdef",
    }
    args.update(kw)
    return signatures.sign_request(
        MACHINE,
        args["method"],
        args["path"],
        args["body_bytes"],
        args["ts"],
        args["nonce"],
        machine_id="m_0001",
    )


def test_signed_request_verifies_with_lowercase_headers():
    headers = {k.lower(): v for k, v in signed().items()}
    result = signatures.verify_request_signature(MACHINE.public_key(), "post", "/v1/refresh", headers, BODY)
    assert result == signatures.SignedRequest(NOW_TS, "0123456789abcdef0123456789abcdef", "m_0001")
    raw = trust.encode_public_key(MACHINE.public_key())
    again = signatures.verify_request_signature(raw, "POST", "/v1/refresh", headers, BODY)
    assert again.machine_id == "m_0001"


def test_signature_string_is_the_documented_one():
    headers = signed()
    msg = f"POST\n/v1/refresh\n{NOW_TS}\n{headers['X-POSPal-Nonce']}\n{hashlib.sha256(BODY).hexdigest()}"
    MACHINE.public_key().verify(trust.b64url_decode(headers["X-POSPal-Signature"]), msg.encode())


@pytest.mark.parametrize("tamper", ["method", "path", "body", "timestamp", "nonce", "key", "missing"])
def test_tampered_request_is_rejected(tamper):
    headers = signed()
    method, path, body, key = "POST", "/v1/refresh", BODY, MACHINE.public_key()
    if tamper == "method":
        method = "PUT"
    elif tamper == "path":
        path = "/v1/deactivate"
    elif tamper == "body":
        body = BODY + b" "
    elif tamper == "timestamp":
        headers["X-POSPal-Timestamp"] = str(NOW_TS + 1)
    elif tamper == "nonce":
        headers["X-POSPal-Nonce"] = "f" * 32
    elif tamper == "key":
        key = Ed25519PrivateKey.generate().public_key()
    else:
        del headers["X-POSPal-Signature"]
    with pytest.raises(RequestSignatureInvalid):
        signatures.verify_request_signature(key, method, path, headers, body)


def test_new_nonce_is_32_hex():
    nonce = signatures.new_nonce()
    assert len(nonce) == 32 and int(nonce, 16) >= 0 and nonce != signatures.new_nonce()
