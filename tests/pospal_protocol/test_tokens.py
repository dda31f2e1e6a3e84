"""Token verification and signing (agent/tokens.py): claims, times, binding, and every mutation refused."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.errors import (
    KeySetRejected,
    MachineMismatch,
    TokenInvalid,
)
from pospal_protocol import fingerprint, tokens, trust
from tests.agent.tokenkit import DAY, DELETE, FP, NOW, NOW_TS, Signer, payload

SERVER = Signer()
TRUSTED = SERVER.trusted()


def matches(expected):
    """The agent's majority match against `expected`, as verify_token's fp_matches."""
    return lambda bound: fingerprint.match(bound, expected).ok


def b64(data: bytes) -> str:
    return trust.b64url_encode(data)


def forge(header: dict, claims: dict, sign) -> str:
    """A compact JWS with any header, signed by `sign(signing_input) -> bytes`."""
    h = b64(json.dumps(header, separators=(",", ":")).encode())
    p = b64(json.dumps(claims, separators=(",", ":")).encode())
    return f"{h}.{p}.{b64(sign(f'{h}.{p}'.encode()))}"


# ------------------------------------------------------------------------------------------ happy paths


def test_valid_token_verifies_and_exposes_claims():
    claims = tokens.verify_token(
        SERVER.sign(), TRUSTED, NOW, check_exp=True, fp_matches=matches(FP), expected_mid="m_0001"
    )
    assert claims.sub == "lic_0001" and claims.kind == "license" and claims.status == "active"
    assert claims.kid == SERVER.kid and claims.fp == FP and claims.features == ("pos",)
    assert claims.policy == tokens.Policy()


def test_header_is_eddsa_jwt_with_kid():
    header = json.loads(trust.b64url_decode(SERVER.sign().split(".")[0]))
    assert header == {"alg": "EdDSA", "typ": "JWT", "kid": SERVER.kid}


def test_kid_is_first_16_hex_of_sha256_of_raw_public_key():
    raw = SERVER.key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    assert SERVER.kid == hashlib.sha256(raw).hexdigest()[:16]


def test_nbf_leeway_is_60_seconds():
    ahead = SERVER.sign(iat=NOW_TS + 60)
    assert tokens.verify_token(ahead, TRUSTED, NOW).nbf == NOW_TS + 60
    with pytest.raises(TokenInvalid) as exc:
        tokens.verify_token(SERVER.sign(iat=NOW_TS + 61), TRUSTED, NOW)
    assert exc.value.reason == "nbf"


def test_expired_token_is_only_rejected_when_asked():
    old = SERVER.sign(iat=NOW_TS - 15 * DAY)
    assert tokens.verify_token(old, TRUSTED, NOW).exp < NOW_TS  # the state function decides
    with pytest.raises(TokenInvalid) as exc:
        tokens.verify_token(old, TRUSTED, NOW, check_exp=True)
    assert exc.value.reason == "expired"


def test_fingerprint_majority_decides_machine_binding():
    three_of_five = dict(FP, mac="other", disk_serial="other")
    assert tokens.verify_token(SERVER.sign(), TRUSTED, NOW, fp_matches=matches(three_of_five))
    two_of_five = dict(three_of_five, board_serial="other")
    with pytest.raises(MachineMismatch):
        tokens.verify_token(SERVER.sign(), TRUSTED, NOW, fp_matches=matches(two_of_five))
    with pytest.raises(MachineMismatch):
        tokens.verify_token(SERVER.sign(), TRUSTED, NOW, expected_mid="m_other")


@pytest.mark.parametrize("claim", tokens.REQUIRED_CLAIMS)
def test_every_required_claim_is_required(claim):
    with pytest.raises(TokenInvalid) as exc:
        tokens.verify_token(SERVER.sign(**{claim: DELETE}), TRUSTED, NOW)
    assert exc.value.reason == "claims"


@pytest.mark.parametrize(
    "overrides",
    [
        {"iss": "evil"},
        {"aud": "someone-else"},
        {"kind": "gift"},
        {"status": "free"},
        {"fp": ["x"]},
        {"fp": {"mac": 1}},
        {"iat": "1"},
        {"exp": True},
        {"sub": ""},
        {"features": "pos"},
        {"policy": []},
        {"policy": {"lease_s": "14d"}},
        {"seats": 1.5},
        {"exp": NOW_TS - 1},
    ],
)
def test_malformed_claims_are_rejected(overrides):
    with pytest.raises(TokenInvalid):
        tokens.verify_token(SERVER.sign(**overrides), TRUSTED, NOW)


def test_policy_claim_overrides_defaults_and_ignores_unknown_keys():
    claims = tokens.verify_token(SERVER.sign(policy={"lease_s": 7 * DAY, "future_knob": 1}), TRUSTED, NOW)
    assert claims.policy.lease_s == 7 * DAY and claims.policy.grace_s == tokens.Policy().grace_s


def test_extra_header_members_are_refused():
    token = forge(
        {"alg": "EdDSA", "typ": "JWT", "kid": SERVER.kid, "jku": "https://evil"}, payload(), SERVER.key.sign
    )
    with pytest.raises(TokenInvalid) as exc:
        tokens.verify_token(token, TRUSTED, NOW)
    assert exc.value.reason == "header"


def test_keyset_document_is_not_a_token():
    doc = tokens.make_keyset_document(SERVER.key, SERVER.kid, [Signer().jwk()], NOW_TS)
    with pytest.raises(TokenInvalid):
        tokens.verify_token(doc, TRUSTED, NOW)
    with pytest.raises(KeySetRejected):
        TRUSTED.apply_keyset_update(SERVER.sign())


# --------------------------------------------------------------------------------- adversarial property


MUTATIONS = (
    "flip_decoded",
    "flip_text",
    "alg_none",
    "hs256_public_key",
    "unknown_kid",
    "untrusted_signer",
    "expired",
    "nbf_future",
    "other_machine",
    "keyset_untrusted",
)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kind=st.sampled_from(MUTATIONS),
    data=st.data(),
    sub=st.text(min_size=1, max_size=20),
    seats=st.integers(1, 50),
    features=st.lists(st.sampled_from(["pos", "kds", "loyalty", "ελληνικά"]), max_size=3),
)
def test_every_mutated_token_is_rejected(kind, data, sub, seats, features):
    base = {"sub": sub, "seats": seats, "features": features}
    attacker = Ed25519PrivateKey.generate()
    trusted = SERVER.trusted()

    def verify(token, **kw):
        kw.setdefault("check_exp", True)
        kw.setdefault("fp_matches", matches(FP))
        return tokens.verify_token(token, trusted, NOW, **kw)

    good = SERVER.sign(**base)
    verify(good)  # the unmutated token is fine: every failure below comes from the mutation

    if kind == "flip_decoded":
        segments = good.split(".")
        seg = data.draw(st.integers(0, 2), label="segment")
        raw = bytearray(trust.b64url_decode(segments[seg]))
        i = data.draw(st.integers(0, len(raw) - 1), label="byte")
        raw[i] ^= 1 << data.draw(st.integers(0, 7), label="bit")
        segments[seg] = b64(bytes(raw))
        mutated = ".".join(segments)
    elif kind == "flip_text":
        i = data.draw(st.integers(0, len(good) - 1), label="char")
        flipped = chr(ord(good[i]) ^ (1 << data.draw(st.integers(0, 6), label="bit")))
        mutated = good[:i] + flipped + good[i + 1 :]
    elif kind == "alg_none":
        mutated = forge(
            {
                "alg": data.draw(st.sampled_from(["none", "None", "NONE", ""])),
                "typ": "JWT",
                "kid": SERVER.kid,
            },
            payload(**base),
            lambda _: b"",
        )
    elif kind == "hs256_public_key":
        pub = SERVER.key.public_key()
        secret = data.draw(
            st.sampled_from(
                [
                    pub.public_bytes(Encoding.Raw, PublicFormat.Raw),
                    pub.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo),
                    SERVER.jwk()["x"].encode(),
                    json.dumps(SERVER.jwk()).encode(),
                ]
            )
        )
        mutated = forge(
            {"alg": "HS256", "typ": "JWT", "kid": SERVER.kid},
            payload(**base),
            lambda msg: hmac.new(secret, msg, hashlib.sha256).digest(),
        )
    elif kind == "unknown_kid":
        kid = data.draw(
            st.one_of(
                st.just(trust.kid_for(attacker.public_key())),
                st.text(alphabet="0123456789abcdef", min_size=16, max_size=16),
            )
        )
        signer = data.draw(st.sampled_from([attacker, SERVER.key]))
        mutated = tokens.encode_token(signer, kid, payload(**base))
    elif kind == "untrusted_signer":
        mutated = tokens.encode_token(attacker, SERVER.kid, payload(**base))
    elif kind == "expired":
        age = data.draw(st.integers(14 * DAY, 400 * DAY), label="age")
        mutated = SERVER.sign(**base, iat=NOW_TS - age)
    elif kind == "nbf_future":
        ahead = data.draw(st.integers(61, 30 * DAY), label="ahead")
        mutated = SERVER.sign(**base, iat=NOW_TS + ahead)
    elif kind == "other_machine":
        names = sorted(FP)
        keep = data.draw(st.integers(0, 2), label="still_matching")  # at most 2 of 5: not a majority
        other = {
            n: (FP[n] if i < keep else hashlib.sha256(n.encode() + sub.encode()).hexdigest())
            for i, n in enumerate(names)
        }
        with pytest.raises(MachineMismatch):
            verify(good, fp_matches=matches(other))
        return
    else:  # keyset_untrusted
        new_key = Signer()
        signing_kid = data.draw(st.sampled_from([SERVER.kid, trust.kid_for(attacker.public_key())]))
        doc = tokens.make_keyset_document(attacker, signing_kid, [new_key.jwk()], NOW_TS)
        with pytest.raises(KeySetRejected):
            trusted.apply_keyset_update(doc)
        assert new_key.kid not in trusted and trusted.kids() == [SERVER.kid]
        with pytest.raises(TokenInvalid):
            verify(new_key.sign(**base))
        return

    assert mutated != good
    with pytest.raises(TokenInvalid):
        verify(mutated)
