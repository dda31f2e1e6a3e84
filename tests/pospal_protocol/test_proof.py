"""Signed local answers (`pospal_protocol.proof`) and the RFC 7638 thumbprint that binds them to a token."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from pospal_protocol.proof import (
    answer_digest,
    canonical_json,
    parse_challenge,
    proof_message,
    sign_answer,
    verify_answer,
)
from pospal_protocol.trust import b64url_encode, jwk_thumbprint


def test_thumbprint_matches_rfc_8037_example():
    # RFC 8037 appendix A.3: the Ed25519 key of A.2 and its RFC 7638 thumbprint.
    assert (
        jwk_thumbprint("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo")
        == "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
    )


def test_canonical_json_is_rfc_8785_for_answer_values():
    value = {"b": [1, True, None], "a": 'Άδεια "ok"\n\u0001/', "é": {"z": 0, "y": -3}}
    assert canonical_json(value) == (
        '{"a":"Άδεια \\"ok\\"\\n\\u0001/","b":[1,true,null],"é":{"y":-3,"z":0}}'.encode()
    )


@pytest.mark.parametrize("bad", [1.5, {"x": 2.0}, {1: "a"}, (1, 2), b"x"])
def test_canonical_json_refuses_what_it_cannot_pin_down(bad):
    with pytest.raises(ValueError):
        canonical_json(bad)


@pytest.mark.parametrize("size", [16, 32, 64])
def test_challenges_of_16_to_64_bytes_are_accepted(size):
    raw = bytes(range(size))
    assert parse_challenge(b64url_encode(raw)) == raw


@pytest.mark.parametrize(
    "text",
    [
        b64url_encode(bytes(15)),
        b64url_encode(bytes(65)),
        b64url_encode(bytes(32)) + "=",
        "+" * 43,
        "A" * 42 + "B",
        "",
    ],
    ids=["15-bytes", "65-bytes", "padded", "not-b64url", "non-canonical-tail", "empty"],
)
def test_other_challenges_are_refused(text):
    with pytest.raises(ValueError):
        parse_challenge(text)


def test_a_proof_covers_the_challenge_and_every_field():
    key = Ed25519PrivateKey.generate()
    challenge = b64url_encode(bytes(32))
    answer = {"licensed": True, "days_left": 3, "token": "t"}
    signed = {**answer, "proof": sign_answer(key, challenge, answer_digest(answer))}
    assert verify_answer(key.public_key(), challenge, signed)
    assert not verify_answer(key.public_key(), b64url_encode(bytes(range(32))), signed)
    assert not verify_answer(key.public_key(), challenge, {**signed, "days_left": 30})
    assert not verify_answer(key.public_key(), challenge, {**signed, "extra": 1})
    assert not verify_answer(Ed25519PrivateKey.generate().public_key(), challenge, signed)
    assert not verify_answer(key.public_key(), challenge, {**signed, "proof": signed["proof"] + "A"})
    assert proof_message(challenge, "ab").startswith(b"pospal-local-answer/v1\n")
