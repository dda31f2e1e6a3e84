"""Signed license tokens, trusted keys and key-set updates.

Owns both sides of the token format in docs/ARCHITECTURE.md so the server and the tests mint exactly
what the agent verifies:

- verify: `verify_token(token, trusted, now)` -> `Claims` (EdDSA only, trusted `kid` only, required
  claims, `nbf` with 60 s leeway, optional `exp` / fingerprint / machine id checks);
- sign: `encode_token`, `make_keyset_document`, `kid_for`, JWK conversion;
- trust: `TrustedKeys` (bundled JWKS ∪ `POSPAL_TRUSTED_KEYS` ∪ verified key-set updates).

Machine-signed requests (the `X-POSPal-*` headers) are `agent.signatures`.

PyJWT checks the signature; everything around it (header whitelist, canonical base64url, claim types,
times against the injected trusted clock) is checked here, because PyJWT's own time checks read the
wall clock, which the agent never trusts.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from agent.errors import (
    ConfigError,
    KeyInvalid,
    KeySetRejected,
    MachineMismatch,
    TokenInvalid,
)

ALG = "EdDSA"
ISSUER = "pospal"
AUDIENCE = "pospal-agent"
TOKEN_TYP = "JWT"  # noqa: S105 (a JOSE header value, not a secret)
KEYSET_TYP = "pospal-keyset+jwt"
NBF_LEEWAY_S = 60
MAX_TOKEN_BYTES = 16 * 1024
REQUIRED_CLAIMS = ("iss", "aud", "sub", "kind", "mid", "fp", "status", "iat", "nbf", "exp", "srv", "policy")
KINDS = ("license", "trial")
STATUSES = ("trialing", "active", "past_due", "canceled", "revoked")
# Anything else in a header (jku, jwk, x5u, crit, b64, ...) could steer verification; refuse it outright.
_ALLOWED_HEADER_KEYS = frozenset({"alg", "typ", "kid"})
_EDDSA = jwt.get_algorithm_by_name(ALG)


# ---------------------------------------------------------------------------------------------- policy


@dataclass(frozen=True)
class Policy:
    """Timing policy carried in the token's `policy` claim; defaults are PRODUCT.md's."""

    sync_s: int = 21600
    jitter: float = 0.1
    grace_s: int = 172800
    lease_s: int = 1209600
    payment_grace_s: int = 604800
    warn_days: int = 5
    rollback_s: int = 86400
    provisional_trial_s: int = 259200

    @classmethod
    def from_claim(cls, value: Any) -> Policy:
        """Build from a `policy` claim: missing keys take defaults, unknown keys are ignored.

        Raises `TokenInvalid("claims")` when the claim is not an object or a value has the wrong type.
        """
        if value is None:
            return cls()
        if not isinstance(value, dict):
            raise TokenInvalid("claims", "License token has a malformed policy.")
        kw: dict[str, Any] = {}
        for name in _POLICY_FIELDS:
            v = value.get(name)
            if v is None:
                continue
            # type() rather than isinstance(): bool is an int subclass and must not pass.
            ok = type(v) in (int, float) if name == "jitter" else type(v) is int
            if not ok or v < 0:
                raise TokenInvalid("claims", f"License token policy value {name!r} is malformed.")
            kw[name] = v
        return cls(**kw)

    def to_claim(self) -> dict[str, Any]:
        """The `policy` claim as the server puts it in a token."""
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


_POLICY_FIELDS = tuple(Policy.__dataclass_fields__)

# ---------------------------------------------------------------------------------------------- claims


@dataclass(frozen=True)
class Claims:
    """Verified token claims (times are integer Unix seconds, as on the wire)."""

    iss: str
    aud: str
    sub: str
    kind: str
    mid: str
    fp: Mapping[str, str]
    status: str
    iat: int
    nbf: int
    exp: int
    srv: int
    policy: Policy
    kid: str
    plan: str | None = None
    features: tuple[str, ...] = ()
    seats: int | None = None
    email: str | None = None
    terminal: str | None = None
    period_end: int | None = None
    payment_grace_end: int | None = None
    cancel_at: int | None = None
    trial_end: int | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any], kid: str) -> Claims:
        """Type-check a decoded payload; raises `TokenInvalid("claims")` on anything malformed."""
        missing = [c for c in REQUIRED_CLAIMS if c not in payload]
        if missing:
            raise TokenInvalid("claims", f"License token lacks required claims: {', '.join(missing)}.")
        if payload["iss"] != ISSUER or payload["aud"] != AUDIENCE:
            raise TokenInvalid("claims", "License token was not issued for this agent.")
        if payload["kind"] not in KINDS or payload["status"] not in STATUSES:
            raise TokenInvalid("claims", "License token has an unknown kind or status.")
        fp = payload["fp"]
        if type(fp) is not dict or not all(type(k) is str and type(v) is str for k, v in fp.items()):
            raise TokenInvalid("claims", "License token has a malformed fingerprint.")
        features = payload.get("features") or []
        if not isinstance(features, list) or not all(isinstance(f, str) for f in features):
            raise TokenInvalid("claims", "License token has malformed features.")
        claims = cls(
            iss=payload["iss"],
            aud=payload["aud"],
            sub=_str(payload, "sub"),
            kind=payload["kind"],
            mid=_str(payload, "mid"),
            fp=dict(fp),
            status=payload["status"],
            iat=_int(payload, "iat"),
            nbf=_int(payload, "nbf"),
            exp=_int(payload, "exp"),
            srv=_int(payload, "srv"),
            policy=Policy.from_claim(payload["policy"]),
            kid=kid,
            plan=_opt_str(payload, "plan"),
            features=tuple(features),
            seats=_opt_int(payload, "seats"),
            email=_opt_str(payload, "email"),
            terminal=_opt_str(payload, "terminal"),
            period_end=_opt_int(payload, "period_end"),
            payment_grace_end=_opt_int(payload, "payment_grace_end"),
            cancel_at=_opt_int(payload, "cancel_at"),
            trial_end=_opt_int(payload, "trial_end"),
            raw=dict(payload),
        )
        if claims.exp < claims.iat:
            raise TokenInvalid("claims", "License token expires before it was issued.")
        return claims


def _str(p: Mapping[str, Any], name: str) -> str:
    v = p[name]
    if not isinstance(v, str) or not v:
        raise TokenInvalid("claims", f"License token claim {name!r} is malformed.")
    return v


def _opt_str(p: Mapping[str, Any], name: str) -> str | None:
    v = p.get(name)
    if v is not None and not isinstance(v, str):
        raise TokenInvalid("claims", f"License token claim {name!r} is malformed.")
    return v


def _int(p: Mapping[str, Any], name: str) -> int:
    v = p[name]
    if type(v) is not int:  # bool is an int subclass; a JSON true is not a time
        raise TokenInvalid("claims", f"License token claim {name!r} is malformed.")
    return v


def _opt_int(p: Mapping[str, Any], name: str) -> int | None:
    return None if p.get(name) is None else _int(p, name)


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
            header, payload = _verify_jws(doc, self, expected_typ=KEYSET_TYP)
        except TokenInvalid as exc:
            raise KeySetRejected(exc.reason, "Key update rejected: not signed by a trusted key.") from exc
        if payload.get("iss") != ISSUER or type(payload.get("iat")) is not int \
                or not isinstance(payload.get("keys"), list):
            raise KeySetRejected("claims", "Key update rejected: malformed document.")
        try:
            keys = [public_key_from_jwk(jwk) for jwk in payload["keys"]]
        except KeyInvalid as exc:
            raise KeySetRejected("claims", "Key update rejected: malformed key.") from exc
        new = [self.add(k) for k in keys if kid_for(k) not in self._keys]
        if new:
            self.accepted_updates.append(doc)
        return new


def bundled_jwks() -> dict[str, Any]:
    """The JWKS shipped in agent/keys/trusted.json."""
    text = resources.files("agent").joinpath("keys/trusted.json").read_text(encoding="utf-8")
    return json.loads(text)


def load_trusted_keys(extra_jwks: Path | None = None, updates: Iterable[str] = ()) -> TrustedKeys:
    """Trusted keys = bundled JWKS ∪ `extra_jwks` (POSPAL_TRUSTED_KEYS) ∪ re-verified key-set `updates`.

    An unreadable or malformed `extra_jwks` raises `ConfigError` naming POSPAL_TRUSTED_KEYS. A persisted
    update that no longer verifies (for example the cache was tampered with) is dropped.
    """
    trusted = TrustedKeys.from_jwks(bundled_jwks())
    if extra_jwks is not None:
        try:
            trusted.add_jwks(json.loads(Path(extra_jwks).read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyInvalid) as exc:
            raise ConfigError(f"POSPAL_TRUSTED_KEYS: cannot load a JWKS from {extra_jwks}: {exc}") from exc
    pending = [u for u in updates if isinstance(u, str)]
    # Updates may chain (K1 signs K2, K2 signs K3) and arrive in any order: retry until nothing changes.
    progress = True
    while pending and progress:
        progress = False
        for doc in list(pending):
            try:
                trusted.apply_keyset_update(doc)
            except KeySetRejected:
                continue
            pending.remove(doc)
            if doc not in trusted.accepted_updates:
                trusted.accepted_updates.append(doc)
            progress = True
    return trusted


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


def _verify_jws(token: str, trusted: TrustedKeys, *, expected_typ: str) -> tuple[dict, dict]:
    """Check header and signature (PyJWT's EdDSA algorithm); returns (header, payload).

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
    if len(signature) != 64 or not _EDDSA.verify(signing_input, key, signature):
        raise TokenInvalid("signature", "License token signature does not verify.")
    try:
        payload = json.loads(payload_raw)
    except ValueError as exc:
        raise TokenInvalid("format", "License token payload is malformed.") from exc
    if not isinstance(payload, dict):
        raise TokenInvalid("format", "License token payload is malformed.")
    return header, payload


def verify_token(
    token: str,
    trusted: TrustedKeys,
    now: datetime,
    *,
    check_exp: bool = False,
    expected_fp: Mapping[str, str] | None = None,
    expected_mid: str | None = None,
) -> Claims:
    """Verify a license/trial token and return its `Claims`.

    `now` is the trusted time (tz-aware). `nbf` may be at most 60 s ahead of it. `exp` is only checked
    when `check_exp` is set (the state function turns an old token into `offline_expired`, which is not
    "invalid"). With `expected_fp`, the token's bound fingerprint must match it by strict majority, and
    with `expected_mid` its machine id must be equal; either failure raises `MachineMismatch`.
    Every other rejection raises `TokenInvalid` with a `reason`.
    """
    header, payload = _verify_jws(token, trusted, expected_typ=TOKEN_TYP)
    claims = Claims.from_payload(payload, header["kid"])
    t = now.timestamp()
    if claims.nbf > t + NBF_LEEWAY_S:
        raise TokenInvalid("nbf", "License token is not valid yet (check the computer's clock).")
    if check_exp and claims.exp <= t:
        raise TokenInvalid("expired", "License token has expired.")
    if expected_mid is not None and claims.mid != expected_mid:
        raise MachineMismatch("machine", "License token belongs to another machine.")
    if expected_fp is not None:
        from agent.fingerprint import match

        if not match(claims.fp, expected_fp).ok:
            raise MachineMismatch("fingerprint", "License token is bound to a different computer.")
    return claims


def encode_token(private_key: Ed25519PrivateKey, kid: str, claims: Mapping[str, Any]) -> str:
    """Sign `claims` as a compact JWS with the header `{"alg":"EdDSA","typ":"JWT","kid":kid}`.

    Builds exactly the bytes PyJWT would (sorted compact header, compact payload) without its per-call
    checks, since the server signs one token per refresh; claims JSON cannot hold as-is (a datetime)
    go through PyJWT, which converts them.
    """
    try:
        payload = json.dumps(dict(claims), separators=(",", ":"))
    except TypeError:
        return jwt.encode(dict(claims), private_key, algorithm=ALG, headers={"kid": kid, "typ": TOKEN_TYP})
    header = json.dumps({"alg": ALG, "kid": kid, "typ": TOKEN_TYP}, separators=(",", ":"), sort_keys=True)
    signing_input = f"{b64url_encode(header.encode())}.{b64url_encode(payload.encode())}"
    return f"{signing_input}.{b64url_encode(private_key.sign(signing_input.encode()))}"


def make_keyset_document(
    private_key: Ed25519PrivateKey, kid: str, jwks: Iterable[Mapping[str, Any]] | Mapping[str, Any], iat: int
) -> str:
    """Sign a key-set update `{"iss","iat","keys"}` with an (older, already trusted) key `kid`.

    `jwks` is a JWKS document or a list of JWKs; private members are refused.
    """
    keys = jwks.get("keys", []) if isinstance(jwks, Mapping) else list(jwks)
    for jwk in keys:
        public_key_from_jwk(jwk)
    payload = {"iss": ISSUER, "iat": int(iat), "keys": [dict(j) for j in keys]}
    return jwt.encode(payload, private_key, algorithm=ALG, headers={"kid": kid, "typ": KEYSET_TYP})
