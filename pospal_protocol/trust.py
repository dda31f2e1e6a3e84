"""Trusted token keys: Ed25519 key encodings, JWKs, the trusted key set, and compact JWS verification.

The agent accepts a token only if it is signed (EdDSA) by a key in its `TrustedKeys`: the bundled JWKS
(`agent/keys/trusted.json`), plus `POSPAL_TRUSTED_KEYS`, plus the keys of the newest key-set document
signed by the offline key-set authority, minus the kids that document revokes. `verify_jws` is the one
place a compact JWS is checked against that set: canonical base64url only, a header of just
`alg`/`typ`/`kid`, EdDSA only, a trusted `kid`. What the payload means is `pospal_protocol.tokens`' business.

**Key-set documents chain to an offline authority, never to a token key.** The anchors file may hold
`"keyset_authority": {"threshold": t, "keys": [JWKs]}`: the publisher's offline key-set keys
(`scripts/publish_update.py keyset-init`). A key-set document is a JWS in the general JSON serialization
(RFC 7515 7.2.1) whose payload `{"iss","iat","version","keys","revoked"}` carries at least `t` valid
signatures by distinct authority keys. The newest `version` wins: its `keys` join the roots, its
`revoked` kids are removed (roots too) and stay out; an older version is refused (rollback). A document
signed by a token key (the online server's, or a stolen one) is refused; without an authority in the
anchors no key-set document is accepted at all. The agent gets the document through TUF
(`agent/selfupdate/updates.py`, a target signed by the offline targets key) and carries it in its challenged
answer, so a POS applies the same rule from the same shipped anchors.
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

from pospal_protocol.errors import KeyInvalid, KeySetRejected, TokenInvalid

ALG = "EdDSA"
ISSUER = "pospal"
KEYSET_TYP = "pospal-keyset+jwt"
MAX_TOKEN_BYTES = 16 * 1024
# A key-set document: a few dozen keys and revoked kids, and a signature per authority key.
MAX_KEYSET_BYTES = 64 * 1024
# Key-set documents one answer may carry (the newest counts); far more is an attack.
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


class KeysetAuthority:
    """The offline keys that sign key-set documents, and how many distinct ones must sign (threshold)."""

    def __init__(self, keys: Iterable[Ed25519PublicKey] = (), threshold: int = 1) -> None:
        self.keys: dict[str, Ed25519PublicKey] = {kid_for(k): k for k in keys}
        self.threshold = max(1, int(threshold))

    @classmethod
    def from_doc(cls, doc: object) -> KeysetAuthority | None:
        """Parse `{"threshold": t, "keys": [JWKs]}`; None when absent; `KeyInvalid` when malformed."""
        if doc is None:
            return None
        if not isinstance(doc, Mapping) or not isinstance(doc.get("keys"), list):
            raise KeyInvalid("keyset_authority has no 'keys' list.")
        threshold = doc.get("threshold", 1)
        if type(threshold) is not int or not 1 <= threshold <= len(doc["keys"]):
            raise KeyInvalid("keyset_authority threshold must be between 1 and its number of keys.")
        return cls([public_key_from_jwk(jwk) for jwk in doc["keys"]], threshold)

    def merged(self, other: KeysetAuthority | None) -> KeysetAuthority:
        """Both sets of keys; the larger threshold (adding anchors never lowers the bar)."""
        if other is None:
            return self
        return KeysetAuthority(
            [*self.keys.values(), *other.keys.values()], max(self.threshold, other.threshold)
        )

    def to_doc(self) -> dict[str, Any]:
        """The `keyset_authority` member of an anchors file."""
        return {
            "threshold": self.threshold,
            "keys": [jwk_from_public_key(self.keys[k]) for k in sorted(self.keys)],
        }


class TrustedKeys:
    """The set of public keys whose tokens the agent accepts, by kid (see the module docstring).

    `accepted_updates` holds the newest key-set document applied (the signed document, not bare keys):
    persist it so every load re-verifies it from the anchors, and a tampered cache file cannot slip a key
    in. `keyset_version` is its version (0: none), `revoked` the kids it revoked.
    """

    def __init__(
        self, keys: Iterable[Ed25519PublicKey] = (), authority: KeysetAuthority | None = None
    ) -> None:
        self._roots: dict[str, Ed25519PublicKey] = {}
        self._learned: dict[str, Ed25519PublicKey] = {}
        self._keys: dict[str, Ed25519PublicKey] = {}
        self.authority = authority
        self.revoked: frozenset[str] = frozenset()
        self.keyset_version = 0
        self.accepted_updates: list[str] = []
        for key in keys:
            self.add(key)

    @classmethod
    def from_jwks(cls, doc: Mapping[str, Any]) -> TrustedKeys:
        """Build from a JWKS document (`keys`, optional `keyset_authority`); `KeyInvalid` if malformed."""
        trusted = cls()
        trusted.add_jwks(doc)
        return trusted

    def copy(self) -> TrustedKeys:
        """An independent copy (roots, authority, the applied document), to try a document on."""
        other = TrustedKeys(self._roots.values(), self.authority)
        other._learned = dict(self._learned)
        other.revoked, other.keyset_version = self.revoked, self.keyset_version
        other.accepted_updates = list(self.accepted_updates)
        other._rebuild()
        return other

    def _rebuild(self) -> None:
        merged = {**self._roots, **self._learned}
        self._keys = {kid: key for kid, key in merged.items() if kid not in self.revoked}

    def add(self, public_key: Ed25519PublicKey) -> str:
        """Trust a key (root of trust: bundled or configured); returns its kid. A revoked kid stays out."""
        kid = kid_for(public_key)
        self._roots[kid] = public_key
        self._rebuild()
        return kid

    def add_jwks(self, doc: Mapping[str, Any]) -> list[str]:
        """Trust every key of a JWKS document (and its `keyset_authority`, if any); returns their kids."""
        keys = doc.get("keys") if isinstance(doc, Mapping) else None
        if not isinstance(keys, list):
            raise KeyInvalid("Key set document has no 'keys' list.")
        authority = KeysetAuthority.from_doc(doc.get("keyset_authority"))
        kids = [self.add(public_key_from_jwk(jwk)) for jwk in keys]
        if authority is not None:
            self.authority = authority.merged(self.authority)
        return kids

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

    def to_jwks(self) -> dict[str, Any]:
        """All trusted keys as a JWKS document (with the authority, when there is one)."""
        doc: dict[str, Any] = {"keys": [jwk_from_public_key(self._keys[k]) for k in self.kids()]}
        if self.authority is not None:
            doc["keyset_authority"] = self.authority.to_doc()
        return doc

    def verify_keyset(self, doc: object) -> dict[str, Any]:
        """The payload of a key-set document signed by the authority's threshold; else `KeySetRejected`."""
        if self.authority is None:
            raise KeySetRejected("authority", "Key update rejected: this build trusts no key-set authority.")
        return verify_keyset_document(doc, self.authority)

    def apply_keyset_update(self, doc: str) -> list[str]:
        """Apply an authority-signed key-set document; returns the kids that became trusted.

        The same version again changes nothing; an older one raises `KeySetRejected` (`rollback`), as
        does anything not signed by the authority's threshold (a token key's signature counts for none).
        """
        payload = self.verify_keyset(doc)
        version = payload["version"]
        if version < self.keyset_version:
            raise KeySetRejected("rollback", "Key update rejected: older than the key set this PC holds.")
        if version == self.keyset_version:
            return []
        before = set(self._keys)
        self._learned = {kid_for(k): k for k in payload["keys"]}
        self.revoked = frozenset(self.revoked | set(payload["revoked"]))
        self.keyset_version = version
        self.accepted_updates = [doc]
        self._rebuild()
        return sorted(set(self._keys) - before)

    def apply_chain(self, docs: Iterable[object], limit: int = MAX_CHAIN) -> list[str]:
        """Apply the newest authority-signed document among `docs`; returns the kids that were new.

        Documents that are not strings, do not verify, or are past `limit`, are skipped. The agent and
        the POS's client both learn keys only here (and in `apply_keyset_update`).
        """
        best: tuple[int, str] | None = None
        for doc in [d for d in docs if isinstance(d, str)][:limit]:
            try:
                version = self.verify_keyset(doc)["version"]
            except KeySetRejected:
                continue
            if best is None or version > best[0]:
                best = (version, doc)
        if best is None or best[0] <= self.keyset_version:
            return []
        return self.apply_keyset_update(best[1])


def verify_keyset_document(doc: object, authority: KeysetAuthority) -> dict[str, Any]:
    """Check a key-set document (see the module docstring); returns its payload with `keys` parsed.

    Raises `KeySetRejected`: `format` (not a general-JSON JWS), `signature` (fewer than the threshold of
    distinct authority keys signed it), `claims` (a malformed payload).
    """
    if not isinstance(doc, str) or len(doc) > MAX_KEYSET_BYTES:
        raise KeySetRejected("format", "Key update rejected: malformed document.")
    try:
        outer = json.loads(doc)
        payload_b64 = outer["payload"]
        signatures = outer["signatures"]
        if not isinstance(payload_b64, str) or not isinstance(signatures, list):
            raise TypeError("shape")
    except (ValueError, TypeError, KeyError) as exc:
        raise KeySetRejected("format", "Key update rejected: not signed by the key-set authority.") from exc
    signers: set[str] = set()
    for entry in signatures[: 2 * len(authority.keys) + 2]:
        kid = _keyset_signature_kid(entry, payload_b64, authority)
        if kid is not None:
            signers.add(kid)
    if len(signers) < authority.threshold:
        raise KeySetRejected("signature", "Key update rejected: not signed by the key-set authority.")
    try:
        payload = json.loads(b64url_decode(payload_b64))
        keys = [public_key_from_jwk(jwk) for jwk in payload["keys"]]
        revoked = payload.get("revoked", [])
        if (
            payload.get("iss") != ISSUER
            or type(payload.get("iat")) is not int
            or type(payload.get("version")) is not int
            or payload["version"] < 1
            or not isinstance(revoked, list)
            or not all(isinstance(k, str) for k in revoked)
        ):
            raise TypeError("claims")
    except (ValueError, TypeError, KeyError, KeyInvalid) as exc:
        raise KeySetRejected("claims", "Key update rejected: malformed document.") from exc
    return {**payload, "keys": keys, "revoked": revoked}


def _keyset_signature_kid(entry: object, payload_b64: str, authority: KeysetAuthority) -> str | None:
    """The authority kid whose valid signature `entry` is, or None (any defect: it counts for nothing)."""
    if not isinstance(entry, Mapping):
        return None
    protected, signature = entry.get("protected"), entry.get("signature")
    if not isinstance(protected, str) or not isinstance(signature, str):
        return None
    try:
        header = json.loads(b64url_decode(protected))
        raw_signature = b64url_decode(signature)
    except ValueError:
        return None
    if not isinstance(header, dict) or set(header) != {"alg", "typ", "kid"}:
        return None
    if header["alg"] != ALG or header["typ"] != KEYSET_TYP:
        return None
    key = authority.keys.get(header["kid"]) if isinstance(header["kid"], str) else None
    if key is None or len(raw_signature) != 64:
        return None
    try:
        key.verify(raw_signature, f"{protected}.{payload_b64}".encode("ascii"))
    except (InvalidSignature, UnicodeEncodeError):
        return None
    return header["kid"]


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
