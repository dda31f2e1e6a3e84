"""Signed license tokens and key-set documents: their claims, verification and signing.

Owns both sides of the token format in docs/ARCHITECTURE.md so the server and the tests mint exactly
what the agent verifies:

- verify: `verify_token(token, trusted, now)` -> `Claims` (the JWS checks of
`pospal_protocol.trust.verify_jws`,
  then required claims, `nbf` with 60 s leeway, optional `exp` / fingerprint / machine id checks);
- sign: `encode_token`, `make_authority_keyset` (the offline authority's key-set document), and
  `make_keyset_document` (the legacy document signed by a token key, which agents and the POS refuse).

Which keys are trusted (encodings, JWKs, `TrustedKeys`) is `pospal_protocol.trust`; machine-signed requests
(the `X-POSPal-*` headers) are `pospal_protocol.signatures`.

Verifying needs only `cryptography` (the POS's `pospal-client` ships this module); PyJWT is imported only
to sign documents whose claims JSON cannot hold as-is. Everything around the signature (header whitelist,
canonical base64url, claim types, times against the injected trusted clock) is checked here and in
`pospal_protocol.trust`, because PyJWT's own time checks read the wall clock, which the agent never trusts.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from pospal_protocol.errors import MachineMismatch, TokenInvalid
from pospal_protocol.trust import (
    ALG,
    ISSUER,
    KEYSET_TYP,
    TrustedKeys,
    b64url_encode,
    public_key_from_jwk,
    verify_jws,
)

AUDIENCE = "pospal-agent"
TOKEN_TYP = "JWT"  # noqa: S105 (a JOSE header value, not a secret)
NBF_LEEWAY_S = 60
REQUIRED_CLAIMS = ("iss", "aud", "sub", "kind", "mid", "fp", "status", "iat", "nbf", "exp", "srv", "policy")
KINDS = ("license", "trial")
STATUSES = ("trialing", "active", "past_due", "canceled", "revoked")


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
    # An offline license (activation by file): its lease runs to `exp`, set from the paid period, and
    # the agent shows no offline grace for it. Absent from the claim when false.
    offline: bool = False

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
            if name == "offline":
                if type(v) is not bool:
                    raise TokenInvalid("claims", "License token policy value 'offline' is malformed.")
                kw[name] = v
                continue
            ok = type(v) in (int, float) if name == "jitter" else type(v) is int
            if not ok or v < 0:
                raise TokenInvalid("claims", f"License token policy value {name!r} is malformed.")
            kw[name] = v
        return cls(**kw)

    def to_claim(self) -> dict[str, Any]:
        """The `policy` claim as the server puts it in a token."""
        claim = {name: getattr(self, name) for name in self.__dataclass_fields__}
        if not self.offline:
            del claim["offline"]  # online tokens keep exactly the claim older agents know
        return claim


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


def verify_token(
    token: str,
    trusted: TrustedKeys,
    now: datetime,
    *,
    check_exp: bool = False,
    fp_matches: Callable[[Mapping[str, str]], bool] | None = None,
    expected_mid: str | None = None,
) -> Claims:
    """Verify a license/trial token and return its `Claims`.

    `now` is the trusted time (tz-aware). `nbf` may be at most 60 s ahead of it. `exp` is only checked
    when `check_exp` is set (the state function turns an old token into `offline_expired`, which is not
    "invalid"). With `fp_matches`, the token's bound fingerprint must satisfy it (the agent passes its
    majority match against this machine), and with `expected_mid` its machine id must be equal; either
    failure raises `MachineMismatch`.
    Every other rejection raises `TokenInvalid` with a `reason`.
    """
    header, payload = verify_jws(token, trusted, expected_typ=TOKEN_TYP)
    claims = Claims.from_payload(payload, header["kid"])
    t = now.timestamp()
    if claims.nbf > t + NBF_LEEWAY_S:
        raise TokenInvalid("nbf", "License token is not valid yet (check the computer's clock).")
    if check_exp and claims.exp <= t:
        raise TokenInvalid("expired", "License token has expired.")
    if expected_mid is not None and claims.mid != expected_mid:
        raise MachineMismatch("machine", "License token belongs to another machine.")
    if fp_matches is not None:
        if not fp_matches(claims.fp):
            raise MachineMismatch("fingerprint", "License token is bound to a different computer.")
    return claims


def why_not_licensed(claims: Claims, now: float) -> str | None:
    """The state in which this token, by itself, takes no orders at `now` (Unix time); None when it does.

    The rule a POS applies to a token it verified (README step 6, and `clients/js`): `revoked`; a lease
    run out (`offline_expired`); a trial at or past its end, or canceled (`trial_expired`); a canceled
    subscription or one past `cancel_at` (`licensed_cancelled`); `past_due` past its payment grace
    (`licensed_renewal_required`). It is the `licensed` half of `agent.core.state.compute_status`, and a test
    holds the two to the same answer.
    """
    if claims.status == "revoked":
        return "revoked"
    if now >= claims.exp:
        return "offline_expired"
    if claims.kind == "trial":
        end = claims.trial_end if claims.trial_end is not None else claims.exp
        return "trial_expired" if claims.status == "canceled" or now >= end else None
    if claims.status == "canceled" or (claims.cancel_at is not None and now >= claims.cancel_at):
        return "licensed_cancelled"
    if claims.status == "past_due":
        pay_end = claims.payment_grace_end
        if pay_end is None:
            pay_end = claims.iat + claims.policy.payment_grace_s
        if now >= pay_end:
            return "licensed_renewal_required"
    return None


def encode_token(private_key: Ed25519PrivateKey, kid: str, claims: Mapping[str, Any]) -> str:
    """Sign `claims` as a compact JWS with the header `{"alg":"EdDSA","typ":"JWT","kid":kid}`.

    Builds exactly the bytes PyJWT would (sorted compact header, compact payload) without its per-call
    checks, since the server signs one token per refresh; claims JSON cannot hold as-is (a datetime)
    go through PyJWT, which converts them.
    """
    try:
        payload = json.dumps(dict(claims), separators=(",", ":"))
    except TypeError:
        import jwt  # noqa: PLC0415 (signing side only; verifying never needs PyJWT)

        return jwt.encode(dict(claims), private_key, algorithm=ALG, headers={"kid": kid, "typ": TOKEN_TYP})
    header = json.dumps({"alg": ALG, "kid": kid, "typ": TOKEN_TYP}, separators=(",", ":"), sort_keys=True)
    signing_input = f"{b64url_encode(header.encode())}.{b64url_encode(payload.encode())}"
    return f"{signing_input}.{b64url_encode(private_key.sign(signing_input.encode()))}"


def make_keyset_document(
    private_key: Ed25519PrivateKey, kid: str, jwks: Iterable[Mapping[str, Any]] | Mapping[str, Any], iat: int
) -> str:
    """Sign a legacy key-set update `{"iss","iat","keys"}` with a token key `kid` (refused by agents now).

    `jwks` is a JWKS document or a list of JWKs; private members are refused.
    """
    keys = jwks.get("keys", []) if isinstance(jwks, Mapping) else list(jwks)
    for jwk in keys:
        public_key_from_jwk(jwk)
    payload = {"iss": ISSUER, "iat": int(iat), "keys": [dict(j) for j in keys]}
    header = json.dumps({"alg": ALG, "kid": kid, "typ": KEYSET_TYP}, separators=(",", ":"), sort_keys=True)
    body = json.dumps(payload, separators=(",", ":"))
    signing_input = f"{b64url_encode(header.encode())}.{b64url_encode(body.encode())}"
    return f"{signing_input}.{b64url_encode(private_key.sign(signing_input.encode()))}"


def make_authority_keyset(
    signers: Iterable[tuple[Ed25519PrivateKey, str]],
    *,
    version: int,
    keys: Iterable[Mapping[str, Any]] | Mapping[str, Any],
    revoked: Iterable[str] = (),
    iat: int,
) -> str:
    """A key-set document signed by the offline key-set authority (`pospal_protocol.trust`'s module
    docstring).

    `signers` are (private key, kid) pairs of authority keys; `keys` the token keys to trust (a JWKS or
    a list of JWKs; private members are refused); `revoked` the kids never to trust again.
    """
    jwks = keys.get("keys", []) if isinstance(keys, Mapping) else list(keys)
    for jwk in jwks:
        public_key_from_jwk(jwk)
    payload = {
        "iss": ISSUER,
        "iat": int(iat),
        "version": int(version),
        "keys": [dict(j) for j in jwks],
        "revoked": sorted(set(revoked)),
    }
    payload_b64 = b64url_encode(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode())
    signatures = []
    for private_key, kid in signers:
        header = json.dumps(
            {"alg": ALG, "kid": kid, "typ": KEYSET_TYP}, separators=(",", ":"), sort_keys=True
        )
        protected = b64url_encode(header.encode())
        signature = b64url_encode(private_key.sign(f"{protected}.{payload_b64}".encode()))
        signatures.append({"protected": protected, "signature": signature})
    return json.dumps({"payload": payload_b64, "signatures": signatures}, separators=(",", ":"))
