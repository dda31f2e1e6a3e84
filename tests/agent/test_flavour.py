"""The build flavour (agent/flavour.py): a release build takes no trust anchor from the environment.

The attack (issue 12): `POSPAL_TRUSTED_KEYS` pointing at a JWKS of one's own key, plus a server answering
with a token signed by that key, gave `licensed_active` for 10 years with 50 seats. The same attack runs
here against a development agent (where the dev trust path works, so the test can tell), against a real
agent process made a release build, and against the frozen bundle itself when one was built (CI builds
dist/POSPalLicenseAgent before the tests, so there it never skips).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent import flavour
from agent.config import AgentSettings
from agent.core.anchors import bundled_jwks, load_trusted_keys
from pospal_protocol.tokens import Policy, encode_token
from pospal_protocol.trust import jwk_from_public_key, kid_for
from tests.agent.rogue_server import RogueServer
from tests.server.conftest import REPO, free_port

YEAR = 365 * 86400
BUNDLE = REPO / "dist" / "POSPalLicenseAgent" / "POSPalLicenseAgent"


class Attacker:
    """Their own signing key, its JWKS file, and tokens it signs for any request (10 years, 50 seats)."""

    def __init__(self, tmp: Path) -> None:
        self.key = Ed25519PrivateKey.generate()
        self.kid = kid_for(self.key.public_key())
        self.jwks = tmp / "attacker-jwks.json"
        self.jwks.write_text(json.dumps({"keys": [jwk_from_public_key(self.key.public_key())]}))

    def answer(self, path: str, nonce: str) -> dict:
        now = int(time.time())
        claims = {
            "iss": "pospal",
            "aud": "pospal-agent",
            "sub": "lic_evil",
            "kind": "license",
            "mid": "m_evil",
            "fp": {},
            "status": "active",
            "plan": "pospal-monthly",
            "features": ["pos"],
            "seats": 50,
            "email": "me@evil.example",
            "terminal": None,
            "period_end": now + 10 * YEAR,
            "iat": now,
            "nbf": now,
            "exp": now + 10 * YEAR,
            "srv": now,
            "policy": Policy().to_claim(),
            "rn": nonce,
        }
        return {"token": encode_token(self.key, self.kid, claims), "machine_id": "m_evil"}


def _env(tmp: Path, server_url: str, jwks: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POSPAL_")}
    env.update(
        POSPAL_DATA_DIR=str(tmp / "data"),
        POSPAL_AGENT_PORT=str(free_port()),
        POSPAL_SERVER_URL=server_url,
        POSPAL_TRUSTED_KEYS=str(jwks),
        PYTHONPATH=str(REPO),
    )
    env.pop("DISPLAY", None)
    env.pop("WAYLAND_DISPLAY", None)
    return env


def _status(cmd: list[str], env: dict[str, str]) -> dict:
    out = subprocess.run(
        [*cmd, "status", "--json"], env=env, cwd=REPO, capture_output=True, text=True, timeout=120
    )
    return json.loads(out.stdout)


# An agent process made a release build the way the bundle is one: `sys.frozen` set before anything runs.
RELEASE_AGENT = [
    sys.executable,
    "-c",
    "import sys; sys.frozen = True; from agent.cli import main; sys.exit(main(sys.argv[1:]))",
]
DEV_AGENT = [sys.executable, "-m", "agent.cli"]


def test_a_source_tree_is_a_development_build():
    assert flavour.is_release() is False


def test_a_frozen_process_is_a_release_build(monkeypatch):
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    assert flavour.is_release() is True


def test_a_generated_build_module_can_only_switch_release_on(monkeypatch):
    class Build:
        RELEASE = True

    monkeypatch.setitem(sys.modules, "agent._build", Build)
    assert flavour.is_release() is True
    Build.RELEASE = "yes"  # only the literal True counts
    assert flavour.is_release() is False


def test_env_trusted_keys_ignored_in_release_build_settings_and_anchors(tmp_path, monkeypatch):
    attacker = Attacker(tmp_path)
    assert (
        AgentSettings.from_env({"POSPAL_TRUSTED_KEYS": str(attacker.jwks)}).trusted_keys_path == attacker.jwks
    )
    assert attacker.kid in load_trusted_keys(attacker.jwks).kids()
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    assert AgentSettings.from_env({"POSPAL_TRUSTED_KEYS": str(attacker.jwks)}).trusted_keys_path is None
    # Even handed the path directly, a release build keeps only the keys it ships with.
    shipped = {k["kid"] for k in bundled_jwks()["keys"] if "kid" in k} or set(load_trusted_keys().kids())
    assert set(load_trusted_keys(attacker.jwks).kids()) == shipped


@pytest.mark.parametrize(
    ("agent", "licensed"), [(DEV_AGENT, True), (RELEASE_AGENT, False)], ids=["development", "release"]
)
def test_env_trusted_keys_ignored_in_release_build(tmp_path, agent, licensed):
    """A real agent process, the attacker's server and key: only the development build falls for it."""
    attacker = Attacker(tmp_path)
    with RogueServer(attacker.answer) as rogue:
        env = _env(tmp_path, rogue.url, attacker.jwks)
        trial = subprocess.run(
            [*agent, "trial"], env=env, cwd=REPO, capture_output=True, text=True, timeout=120
        )
        assert rogue.requests, trial.stderr  # the agent did ask the attacker's server
        status = _status(agent, env)
    assert status["licensed"] is licensed, (trial.stdout, trial.stderr)
    if not licensed:
        assert status["seats"] != 50 and status["license_state"] == "license_missing"


def test_env_trusted_keys_ignored_by_the_frozen_bundle(tmp_path):
    """The built bundle (scripts/bundle_smoke.sh, run by CI before the tests) ignores the dev trust path."""
    if not BUNDLE.is_file():
        pytest.skip(f"no bundle at {BUNDLE.relative_to(REPO)}: scripts/bundle_smoke.sh builds it")
    attacker = Attacker(tmp_path)
    with RogueServer(attacker.answer) as rogue:
        env = _env(tmp_path, rogue.url, attacker.jwks)
        env.pop("PYTHONPATH")
        trial = subprocess.run([str(BUNDLE), "trial"], env=env, capture_output=True, text=True, timeout=180)
        assert rogue.requests, trial.stdout + trial.stderr
        status = _status([str(BUNDLE)], env)
    assert status["licensed"] is False and status["seats"] != 50, trial.stdout + trial.stderr
