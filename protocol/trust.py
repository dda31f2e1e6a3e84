"""Trusted token keys: Ed25519 key encodings, JWKs, the trusted key set, and compact JWS verification.

The agent accepts a token only if it is signed (EdDSA) by a key in its `TrustedKeys`: the bundled JWKS
(`agent/keys/trusted.json`), plus `POSPAL_TRUSTED_KEYS`, plus keys added by key-set updates that an
already trusted key signed. `verify_jws` is the one place a compact JWS is checked against that set:
canonical base64url only, a header of just `alg`/`typ`/`kid`, EdDSA only, a trusted `kid`. What the
payload means (license claims, key-set documents) is `protocol.tokens`' business.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from protocol.errors import KeyInvalid, KeySetRejected, TokenInvalid

ALG = "EdDSA"
ISSUER = "pospal"
KEYSET_TYP = "pospal-keyset+jwt"
MAX_TOKEN_BYTES = 16 * 1024
# Key-set updates one chain may hold: one per rotation, and the old ones expire; far more is an attack.
MAX_CHAIN = 64
# Anything else in a header (jku, jwk, x5u, crit, b64, ...) could steer verification; refuse it outright.
_ALLOWED_HEADER_KEYS = frozenset({"alg", "typ", "kid"})


# ------------------------------------------------------------------------------------------------ keys


def raw_public_bytes(public_key: Ed25519PublicKey) -> bytes:
    """The raw 32-byte Ed25519 public key."""
    return public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def kid_for(public_key: Ed25519PublicKey) -> str:
    """Key id: the first 16 hex chars of SHA-256 over the raw 32-byte public key."""
    return hashlib.sha256(raw_public_bytes(public_key)).hexdigest()[:16]


def b64url_encode(data: bytes) -> str:
    """base64url without padding (JOSE style)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Decode base64url with or without padding; also accepts standard base64. Raises ValueError."""
    s = text.strip().replace("+", "-").replace("/", "_").rstrip("=")
    try:
        return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ValueError("not base64") from exc


def encode_public_key(public_key: Ed25519PublicKey) -> str:
    """Raw public key as base64url (the `machine_public_key` wire format)."""
    return b64url_encode(raw_public_bytes(public_key))


def decode_public_key(value: str | bytes) -> Ed25519PublicKey:
    """Inverse of `encode_public_key`; also takes the raw 32 bytes. Raises `KeyInvalid`."""
    try:
        raw = value if isinstance(value, bytes) else b64url_decode(value)
        if len(raw) != 32:
            raise ValueError("length")
        return Ed25519PublicKey.from_public_bytes(raw)
    except (ValueError, TypeError) as exc:
        raise KeyInvalid("Public key is not a valid Ed25519 key.") from exc


def jwk_from_public_key(public_key: Ed25519PublicKey) -> dict[str, str]:
    """The public JWK for a key: `{"kty":"OKP","crv":"Ed25519","x":...,"kid":...,"use":"sig"}`."""
    return {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": encode_public_key(public_key),
        "kid": kid_for(public_key),
        "use": "sig",
    }


def jwk_thumbprint(public_key: Ed25519PublicKey | str | bytes) -> str:
    """RFC 7638 JWK SHA-256 thumbprint of an Ed25519 public key, base64url (RFC 7800 `cnf.jkt`).

    It hashes exactly `{"crv":"Ed25519","kty":"OKP","x":"<base64url raw key>"}` (the required members,
    sorted, no whitespace). Takes a key, its raw 32 bytes, or its base64url encoding.
    """
    key = public_key if isinstance(public_key, Ed25519PublicKey) else decode_public_key(public_key)
    canonical = '{"crv":"Ed25519","kty":"OKP","x":"' + encode_public_key(key) + '"}'
    return b64url_encode(hashlib.sha256(canonical.encode("ascii")).digest())


def public_key_from_jwk(jwk: Mapping[str, Any]) -> Ed25519PublicKey:
    """Parse a public Ed25519 JWK; a `kid` that is not `kid_for(key)` or any private part is refused."""
    if not isinstance(jwk, Mapping) or jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
        raise KeyInvalid("Key is not an Ed25519 JWK.")
    if "d" in jwk:
        raise KeyInvalid("A private key was found where only public keys belong.")
    x = jwk.get("x")
    if not isinstance(x, str):
        raise KeyInvalid("Ed25519 JWK has no public key.")
    key = decode_public_key(x)
    if "kid" in jwk and jwk["kid"] != kid_for(key):
        raise KeyInvalid("JWK kid does not match its key.")
    return key


class TrustedKeys:
    """The set of public keys whose tokens the agent accepts, by kid.

    `accepted_updates` lists the signed key-set documents that added keys, in order; persist *those*
    (not the bare keys) so a key added through an update is re-verified from the roots on every load,
    and a tampered cache file cannot slip a key in.
    """

    def __init__(self, keys: Iterable[Ed25519PublicKey] = ()) -> None:
        self._keys: dict[str, Ed25519PublicKey] = {}
        self.accepted_updates: list[str] = []
        for key in keys:
            self.add(key)

    @classmethod
    def from_jwks(cls, doc: Mapping[str, Any]) -> TrustedKeys:
        """Build from a JWKS document `{"keys": [...]}`; raises `KeyInvalid` on a malformed key."""
        trusted = cls()
        trusted.add_jwks(doc)
        return trusted

    def add(self, public_key: Ed25519PublicKey) -> str:
        """Trust a key (root of trust: bundled or configured); returns its kid."""
        kid = kid_for(public_key)
        self._keys[kid] = public_key
        return kid

    def add_jwks(self, doc: Mapping[str, Any]) -> list[str]:
        """Trust every key of a JWKS document; returns their kids."""
        keys = doc.get("keys") if isinstance(doc, Mapping) else None
        if not isinstance(keys, list):
            raise KeyInvalid("Key set document has no 'keys' list.")
        return [self.add(public_key_from_jwk(jwk)) for jwk in keys]

    def get(self, kid: str) -> Ed25519PublicKey | None:
        """The key with this kid, or None."""
        return self._keys.get(kid)

    def __contains__(self, kid: object) -> bool:
        return kid in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    def kids(self) -> list[str]:
        """Sorted kids (sent to the server as `known_kids`)."""
        return sorted(self._keys)

    def to_jwks(self) -> dict[str, list[dict[str, str]]]:
        """All trusted keys as a JWKS document."""
        return {"keys": [jwk_from_public_key(self._keys[k]) for k in self.kids()]}

    def apply_keyset_update(self, doc: str) -> list[str]:
        """Add the keys of a signed key-set document; returns the kids that were new.

        The document must be a compact JWS with `typ` `pospal-keyset+jwt`, signed (EdDSA) by a key this
        set already trusts. Anything else raises `KeySetRejected` and changes nothing.
        """
        try:
            header, payload = verify_jws(doc, self, expected_typ=KEYSET_TYP)
        except TokenInvalid as exc:
            raise KeySetRejected(exc.reason, "Key update rejected: not signed by a trusted key.") from exc
        if (
            payload.get("iss") != ISSUER
            or type(payload.get("iat")) is not int
            or not isinstance(payload.get("keys"), list)
        ):
            raise KeySetRejected("claims", "Key update rejected: malformed document.")
        try:
            keys = [public_key_from_jwk(jwk) for jwk in payload["keys"]]
        except KeyInvalid as exc:
            raise KeySetRejected("claims", "Key update rejected: malformed key.") from exc
        new = [self.add(k) for k in keys if kid_for(k) not in self._keys]
        if new:
            self.accepted_updates.append(doc)
        return new

    def apply_chain(self, docs: Iterable[object], limit: int = MAX_CHAIN) -> list[str]:
        """Apply key-set updates that may chain (K1 signs K2, K2 signs K3) and come in any order.

        Each document must be signed by a key already trusted or added by another document of the
        chain, so the roots decide everything; the rest is skipped. Returns the kids that were new.
        Documents that are not strings, and those past `limit`, are ignored. The agent and the POS's
        client both learn keys only here.
        """
        pending = [d for d in docs if isinstance(d, str)][:limit]
        new: list[str] = []
        progress = True
        while pending and progress:
            progress = False
            for doc in list(pending):
                try:
                    new += self.apply_keyset_update(doc)
                except KeySetRejected:
                    continue
                pending.remove(doc)
                if doc not in self.accepted_updates:
                    self.accepted_updates.append(doc)
                progress = True
        return new


# ------------------------------------------------------------------------------------------------- JWS


_TO_STD = bytes.maketrans(b"-_", b"+/")
_TO_URL = bytes.maketrans(b"+/", b"-_")
_PAD = (b"", b"", b"==", b"=")


def _decode_segments(token: str) -> tuple[bytes, bytes, bytes, bytes]:
    """Split and decode a compact JWS; returns (header, payload, signature, signing_input)."""
    if not isinstance(token, str) or len(token) > MAX_TOKEN_BYTES:
        raise TokenInvalid("format", "License token is malformed.")
    try:
        data = token.encode("ascii")
    except UnicodeEncodeError as exc:
        raise TokenInvalid("format", "License token is malformed.") from exc
    parts = data.split(b".")
    if len(parts) != 3:
        raise TokenInvalid("format", "License token is malformed.")
    decoded = []
    for part in parts:
        if len(part) % 4 == 1:
            raise TokenInvalid("format", "License token is malformed.")
        try:
            raw = binascii.a2b_base64(part.translate(_TO_STD) + _PAD[len(part) % 4])
        except (binascii.Error, ValueError) as exc:
            raise TokenInvalid("format", "License token is malformed.") from exc
        # Only canonical base64url is accepted: this refuses characters outside the alphabet (which the
        # decoder would silently skip) and non-zero unused low bits in the last character (otherwise a
        # flipped bit there gives a different token string that still verifies).
        if binascii.b2a_base64(raw, newline=False).translate(_TO_URL).rstrip(b"=") != part:
            raise TokenInvalid("format", "License token is malformed.")
        decoded.append(raw)
    return decoded[0], decoded[1], decoded[2], parts[0] + b"." + parts[1]


def verify_jws(token: str, trusted: TrustedKeys, *, expected_typ: str) -> tuple[dict, dict]:
    """Check header and signature (Ed25519, `cryptography` only); returns (header, payload).

    Raises `TokenInvalid`. The header may only carry `alg`, `typ` and `kid`.
    """
    header_raw, payload_raw, signature, signing_input = _decode_segments(token)
    try:
        header = json.loads(header_raw)
    except ValueError as exc:
        raise TokenInvalid("format", "License token is malformed.") from exc
    if not isinstance(header, dict) or not set(header) <= _ALLOWED_HEADER_KEYS:
        raise TokenInvalid("header", "License token has an unexpected header.")
    if header.get("alg") != ALG:
        raise TokenInvalid("alg", "License token is not signed with EdDSA.")
    if header.get("typ") != expected_typ:
        raise TokenInvalid("typ", "License token has the wrong type.")
    kid = header.get("kid")
    key = trusted.get(kid) if isinstance(kid, str) else None
    if key is None:
        raise TokenInvalid("kid", "License token is signed by a key this agent does not trust.")
    if len(signature) != 64:
        raise TokenInvalid("signature", "License token signature does not verify.")
    try:
        key.verify(signature, signing_input)
    except InvalidSignature as exc:
        raise TokenInvalid("signature", "License token signature does not verify.") from exc
    try:
        payload = json.loads(payload_raw)
    except ValueError as exc:
        raise TokenInvalid("format", "License token payload is malformed.") from exc
    if not isinstance(payload, dict):
        raise TokenInvalid("format", "License token payload is malformed.")
    return header, payload
