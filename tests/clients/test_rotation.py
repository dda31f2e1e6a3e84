"""Trust that follows key rotation (issue 27 item 2), with real processes.

The server rotates (`pospal-server keys rotate`, then a restart so it signs with the new key at once), the
publisher signs the new key set with the offline key-set authority (the server hands out that copy), the
agent syncs and gets a token from the new key plus that document. A POS client
built with only the old keys verifies the new tokens through the agent's challenged answer, which carries
that chain, and keeps what it learned in its trust file; a client started later with the same file trusts
the new key before asking. A chain that no trusted key signed is refused, by a real impostor process and
as a file planted in the trust store.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pospal_client.client import AgentClient

from agent.errors import BadProof
from pospal_protocol.fingerprint import current
from pospal_protocol.proof import answer_digest, sign_answer
from pospal_protocol.tokens import encode_token, make_keyset_document
from pospal_protocol.trust import (
    b64url_encode,
    encode_public_key,
    jwk_from_public_key,
    jwk_thumbprint,
    kid_for,
)
from tests.agent.conftest import restart_server
from tests.server.conftest import REPO


@pytest.fixture(scope="module")
def rotated(client_world):
    """The world after a rotation and a sync: (old kid set, new kid)."""
    world = client_world
    old_kids = {k["kid"] for k in world.jwks["keys"]}
    out = subprocess.run(
        [sys.executable, "-m", "server.cli", "keys", "rotate"],
        cwd=REPO,
        env=world.server.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    world.server.stop()
    world.server = restart_server(world.server, world.tmp / "server-2.log")
    # The publisher signs the new key set offline; the server hands the published copy to agents.
    jwks = requests.get(f"{world.server.url}/v1/keys", timeout=10).json()
    key_dir = world.server.env["POSPAL_SIGNING_KEY_DIR"]
    (Path(key_dir) / "keyset.json").write_text(world.authority.keyset(1, jwks))
    world.sync()
    new_kid = re.search(r"new signing key (\w+)", out.stderr).group(1)
    assert new_kid not in old_kids
    return old_kids, new_kid


def old_build(world, trust_file) -> AgentClient:
    """A POS built before the rotation: the old key set only."""
    return AgentClient(world.agent.port, trusted_keys=world.jwks, trust_file=trust_file, timeout=5)


def test_a_pos_built_with_the_old_keys_verifies_the_new_tokens(client_world, rotated, tmp_path):
    old_kids, new_kid = rotated
    trust_file = tmp_path / "pos" / "key-updates.json"
    pos = old_build(client_world, trust_file)
    assert new_kid not in pos.trusted_kids()
    status = pos.verified_license()
    assert status["licensed"] is True
    assert new_kid in pos.trusted_kids()
    learned = json.loads(trust_file.read_text())["keyset_updates"]
    assert learned and all(isinstance(doc, str) for doc in learned)

    later = old_build(client_world, trust_file)
    assert new_kid in later.trusted_kids()  # read back from the file, re-verified from the old roots
    assert later.verified_license()["licensed"] is True


def test_the_challenged_answer_carries_the_chain_the_agent_verified(client_world, rotated):
    answer = AgentClient(client_world.agent.port, trust_file=None).request(
        "GET", f"/v1/license?challenge={b64url_encode(secrets.token_bytes(32))}"
    )
    assert answer["keyset_updates"], "the agent's answer names no key-set update after a rotation"


def _forged(challenge: str) -> tuple[dict, dict]:
    """An answer from a key of the attacker's own, with a chain the attacker signed; and its JWKS."""
    attacker = Ed25519PrivateKey.generate()
    machine = Ed25519PrivateKey.generate()
    kid = kid_for(attacker.public_key())
    chain = make_keyset_document(attacker, kid, [jwk_from_public_key(attacker.public_key())], 1)
    now = 1780315200
    claims = {
        "iss": "pospal",
        "aud": "pospal-agent",
        "sub": "lic_forged",
        "kind": "license",
        "mid": "m_forged",
        "fp": current().hashes(),
        "status": "active",
        "iat": now,
        "nbf": now,
        "exp": now + 10 * 365 * 86400,
        "srv": now,
        "policy": {},
        "cnf": {"jkt": jwk_thumbprint(machine.public_key())},
    }
    answer = {
        "license_state": "licensed_active",
        "licensed": True,
        "token": encode_token(attacker, kid, claims),
        "machine_key": encode_public_key(machine.public_key()),
        "keyset_updates": [chain],
    }
    answer["proof"] = sign_answer(machine, challenge, answer_digest(answer))
    return answer, {"keys": [jwk_from_public_key(attacker.public_key())]}


def test_a_forged_chain_is_refused_and_not_learned(client_world, rotated, tmp_path, impostor):
    trust_file = tmp_path / "key-updates.json"
    pos = old_build(client_world, trust_file)
    answer, _ = _forged("x" * 43)
    canned = tmp_path / "forged.json"
    canned.write_text(json.dumps(answer))
    port = impostor("answer", str(canned))
    fake = AgentClient(port, trusted_keys=client_world.jwks, trust_file=trust_file, timeout=5)
    with pytest.raises(BadProof) as refused:
        fake.verified_license()
    assert refused.value.reason == "token"
    assert not trust_file.exists()
    assert set(pos.trusted_kids()) == {k["kid"] for k in client_world.jwks["keys"]}


def test_a_chain_planted_in_the_trust_file_adds_no_key(client_world, rotated, tmp_path):
    from pospal_client.client import verify_local_answer

    challenge = b64url_encode(secrets.token_bytes(32))
    answer, attacker_jwks = _forged(challenge)
    trust_file = tmp_path / "key-updates.json"
    trust_file.write_text(json.dumps({"keyset_updates": answer["keyset_updates"]}))
    pos = old_build(client_world, trust_file)
    assert attacker_jwks["keys"][0]["kid"] not in pos.trusted_kids()
    with pytest.raises(BadProof):
        verify_local_answer(
            challenge,
            answer,
            trusted_keys=client_world.jwks,
            this_pc=current().hashes(),
            now=datetime.now(UTC),
        )


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed (.ci/run installs nodejs)")
def test_a_node_pos_built_with_the_old_keys_follows_the_rotation_too(client_world, rotated, tmp_path):
    _, new_kid = rotated
    this_pc = tmp_path / "this-pc.json"
    this_pc.write_text(json.dumps(current().hashes()))
    argv = [shutil.which("node"), str(REPO / "clients" / "js" / "cli.mjs"), "verify"]
    argv += ["--port", str(client_world.agent.port), "--trusted", str(client_world.trusted_path)]
    argv += ["--this-pc", str(this_pc)]
    out = json.loads(subprocess.run(argv, capture_output=True, text=True, check=True, timeout=60).stdout)
    assert out["verdict"] == "licensed" and new_kid in out["kids"]
