"""Test helpers: a signing key pair and well-formed token claims, minted through pospal_protocol.tokens
itself."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from pospal_protocol import tokens, trust
from pospal_protocol.fingerprint import hash_component

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
NOW_TS = int(NOW.timestamp())
DAY = 86400
HOUR = 3600

FP = {
    name: hash_component(name, f"value-of-{name}")
    for name in ("machine_id", "product_uuid", "board_serial", "disk_serial", "mac")
}


@dataclass
class Signer:
    """A server-side signing key with its kid."""

    key: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)

    @property
    def kid(self) -> str:
        return trust.kid_for(self.key.public_key())

    def jwk(self) -> dict[str, str]:
        return trust.jwk_from_public_key(self.key.public_key())

    def trusted(self) -> trust.TrustedKeys:
        return trust.TrustedKeys([self.key.public_key()])

    def sign(self, **overrides: Any) -> str:
        return tokens.encode_token(self.key, self.kid, payload(**overrides))


def payload(**overrides: Any) -> dict[str, Any]:
    """A valid license token payload issued at NOW; keyword arguments replace claims (DELETE removes one)."""
    given_iat = overrides.get("iat")
    # Times derive from an integer `iat` override; any other override is applied verbatim below.
    iat = given_iat if type(given_iat) is int else NOW_TS
    claims: dict[str, Any] = {
        "iss": "pospal",
        "aud": "pospal-agent",
        "sub": "lic_0001",
        "kind": "license",
        "mid": "m_0001",
        "fp": dict(FP),
        "status": "active",
        "plan": "pospal-monthly",
        "features": ["pos"],
        "seats": 1,
        "email": "owner@example.com",
        "terminal": "Bar",
        "period_end": iat + 20 * DAY,
        "payment_grace_end": None,
        "cancel_at": None,
        "trial_end": None,
        "iat": iat,
        "nbf": iat,
        "exp": iat + 14 * DAY,
        "srv": iat,
        "policy": tokens.Policy().to_claim(),
    }
    for name, value in overrides.items():
        if value is _DELETE:
            claims.pop(name, None)
        else:
            claims[name] = value
    return claims


_DELETE = object()
DELETE = _DELETE


def claims(**overrides: Any) -> tokens.Claims:
    """Verified-shape `Claims` built from `payload(**overrides)` (no signature involved)."""
    return tokens.Claims.from_payload(payload(**overrides), kid="0" * 16)


@dataclass
class Authority:
    """The offline key-set authority (its keys and threshold), signing key-set documents for tests."""

    signers: list[Signer] = field(default_factory=lambda: [Signer()])
    threshold: int = 1

    def doc(self) -> dict[str, Any]:
        """The `keyset_authority` member of an anchors file."""
        return {"threshold": self.threshold, "keys": [s.jwk() for s in self.signers]}

    def anchors(self, jwks: dict[str, Any]) -> dict[str, Any]:
        """A JWKS with this authority added (what POSPAL_TRUSTED_KEYS or agent/keys/trusted.json hold)."""
        return {**jwks, "keyset_authority": self.doc()}

    def keyset(self, version: int, keys: Any, revoked: tuple[str, ...] = (), iat: int = NOW_TS) -> str:
        """A key-set document trusting `keys` (a JWKS or JWKs) and revoking `revoked`, signed by all."""
        return tokens.make_authority_keyset(
            [(s.key, s.kid) for s in self.signers], version=version, keys=keys, revoked=revoked, iat=iat
        )
