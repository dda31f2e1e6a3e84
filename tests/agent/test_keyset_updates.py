"""Trusted token keys from the offline root (issue 24 items 5 and 6), through the agent's update check.

The publisher (`server.updates`) makes the offline key-set authority and offers key-set documents as a
TUF target; the agent's update check (`agent.selfupdate.updater.Updater` with
`agent.selfupdate.updates.UpdateClient` on the repository directory, the USB-bundle path) hands the verified
document to `AgentService.adopt_keyset`, against FakeCloud. The attacks: a key-set update signed only by the
online token key (from the server's answer), a stolen online key after the fleet learned its revocation, and
metadata signed by a targets key the root revoked.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import pytest
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from agent.errors import TokenInvalid
from agent.selfupdate.install import Install
from agent.selfupdate.updater import Updater
from agent.selfupdate.updates import KEYSET_TARGET, UpdateClient, UpdateError
from pospal_protocol.tokens import make_keyset_document
from pospal_protocol.trust import jwk_from_public_key, kid_for
from server.updates import Repository, load_signers
from tests.agent.test_service import Rig, activated
from tests.agent.tokenkit import Authority, Signer

NOW = datetime.now(UTC).replace(microsecond=0)


class World:
    """A TUF repository with a key-set authority, and an agent (FakeCloud) whose anchors name it."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.repo = Repository(tmp_path / "repo", [tmp_path / "offline", tmp_path / "online"], NOW)
        self.repo.init()
        self.repo.keyset_init()
        self.rig = Rig(tmp_path)
        # The build's anchors: the cloud's first token key, and the publisher's key-set authority.
        pem = next((tmp_path / "offline").glob("keyset.*.pem"))
        self.rig.cloud.authority = Authority([Signer(load_pem_private_key(pem.read_bytes(), None))])
        self.rig.cloud.write_jwks(self.rig.jwks)
        assert json.loads(self.rig.jwks.read_text())["keyset_authority"] == self.repo.authority()
        self.install = Install(tmp_path / "install")

    def check(self, svc, source: Path | None = None) -> None:
        """One update check of the agent against the repository (or a mirror of it)."""
        client = UpdateClient(
            (self.repo.meta_dir / "1.root.json").read_bytes(),
            self.install.tuf_dir,
            bundle=source or self.repo.path,
            platform="linux",
        )
        updater = Updater(self.install, None, terminal=lambda: "m_1", on_keyset=svc.adopt_keyset)
        updater.check_and_stage(client)


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


def jwks(*keys) -> dict:
    return {"keys": [jwk_from_public_key(k.public_key()) for k in keys]}


def test_a_release_that_adds_a_token_key_reaches_the_agent_by_its_update_check(world):
    svc, status = activated(world.rig)
    assert status.licensed
    old = world.rig.cloud.key
    new = Signer()
    world.repo.publish_keyset(jwks(old, new.key))
    assert new.kid not in svc._trusted
    world.check(svc)
    assert svc.keyset_version() == 1 and new.kid in svc._trusted
    # The server now signs with the new key: the agent takes its token, and keeps trusting it after a
    # restart (the signed document is in the sealed state, re-verified from the anchors).
    world.rig.cloud.key, world.rig.cloud.kid = new.key, new.kid
    assert svc.sync_now().license_state == "licensed_active"
    again = world.rig.service()
    assert again.status().license_state == "licensed_active" and again.keyset_version() == 1


def test_a_keyset_update_signed_only_by_the_online_token_key_is_refused(world):
    """The server's answer carries a key-set document signed by its (stolen) token key adding the
    thief's key: the agent learns nothing, and the thief's tokens license nothing."""
    svc, _ = activated(world.rig)
    cloud = world.rig.cloud
    thief = Signer()
    cloud.pending_keyset = make_keyset_document(cloud.key, cloud.kid, [thief.jwk()], cloud.now())
    assert svc.sync_now().license_state == "licensed_active"
    assert thief.kid not in svc._trusted and svc.keyset_version() == 0
    cloud.pending_keyset = None
    held = svc._data["token"]
    cloud.key, cloud.kid = thief.key, thief.kid  # the thief's server answers now
    with pytest.raises(TokenInvalid, match="does not trust"):
        svc.sync_now()
    assert svc._data["token"] == held and thief.kid not in svc._trusted  # its token was refused
    assert json.loads((world.tmp / "data" / "state.json").read_text())["data"].get("keyset_updates") in (
        None,
        [],
    )


def test_a_stolen_online_key_is_refused_after_its_revocation(world):
    svc, status = activated(world.rig)
    assert status.licensed
    cloud = world.rig.cloud
    stolen, successor = cloud.key, Signer()
    world.repo.publish_keyset(jwks(successor.key), revoked=(kid_for(stolen.public_key()),))
    world.check(svc)
    # The token the till held was signed by the revoked key: it no longer licenses.
    assert svc.status().license_state != "licensed_active"
    # The thief's server keeps signing with the stolen key: refused.
    with pytest.raises(TokenInvalid, match="does not trust"):
        svc.sync_now()
    assert svc.status().license_state != "licensed_active"
    # The genuine server signs with its new key: licensed again, and the revocation survives a restart.
    cloud.key, cloud.kid = successor.key, successor.kid
    assert svc.sync_now().license_state == "licensed_active"
    again = world.rig.service()
    assert kid_for(stolen.public_key()) not in again._trusted and again.keyset_version() == 1
    # Putting the old document back (a rollback to before the revocation) is refused.
    old = Authority(world.rig.cloud.authority.signers).keyset(1, jwks(stolen))
    assert again.adopt_keyset(old) == [] and kid_for(stolen.public_key()) not in again._trusted


def test_key_set_metadata_signed_by_a_revoked_targets_key_is_refused(world):
    """The targets key is rotated out through the root; whoever kept the old one signs targets offering a
    key set of their choosing: the check refuses the metadata and the agent keeps its keys."""
    svc, _ = activated(world.rig)
    world.repo.publish_keyset(jwks(world.rig.cloud.key))
    world.check(svc)
    assert svc.keyset_version() == 1
    old_targets = load_signers("targets", world.repo.key_dirs)
    for path in (world.tmp / "offline").glob("targets.*.pem"):
        path.unlink()
    world.repo.key_dirs = [*world.repo.key_dirs, world.tmp / "new-offline"]
    world.repo.rotate("targets", world.tmp / "new-offline")
    world.check(svc)  # walks to root 2

    # The old key signs targets again (here over the publisher's own newest content): refused.
    world.repo.publish_keyset(jwks(world.rig.cloud.key, Signer().key))
    md = world.repo.load("targets")
    md.signatures.clear()
    for signer in old_targets.values():
        md.sign(signer, append=True)
    world.repo._write(md)
    world.repo._snapshot_and_timestamp()
    with pytest.raises(UpdateError, match="refused"):
        world.check(svc)
    assert svc.keyset_version() == 1 and KEYSET_TARGET in md.signed.targets


def test_the_agent_reports_the_key_set_it_trusts_on_its_requests(world):
    """`X-POSPal-Keyset` rides on the transport's session (what `admin fleet keysets` counts), from the
    check that brought the key set and again after a restart."""
    world.rig.cloud.session = SimpleNamespace(headers={})  # as HttpTransport's requests session
    svc, _ = activated(world.rig)
    assert "X-POSPal-Keyset" not in world.rig.cloud.session.headers
    world.repo.publish_keyset(jwks(world.rig.cloud.key))
    world.check(svc)
    assert world.rig.cloud.session.headers["X-POSPal-Keyset"] == "1"
    world.rig.cloud.session.headers.clear()
    world.rig.service()
    assert world.rig.cloud.session.headers["X-POSPal-Keyset"] == "1"


def test_a_key_set_from_a_usb_bundle_applied_without_the_service_is_adopted_at_the_next_start(world):
    """`pospal-agent update apply --from USB` runs without the service (no `on_keyset`): it keeps the
    verified key set in the install, and the agent takes it when its updater starts (after the swap)."""
    svc, _ = activated(world.rig)
    new = Signer()
    world.repo.publish_keyset(jwks(world.rig.cloud.key, new.key))
    usb = world.repo.bundle(world.tmp / "usb", "linux")
    cli = Updater(world.install, None, terminal=lambda: "m_1")  # what updatecli builds
    cli.apply_bundle(usb, (world.repo.meta_dir / "1.root.json").read_bytes())
    assert new.kid not in svc._trusted
    again = world.rig.service()
    Updater(world.install, None, terminal=lambda: "m_1", on_keyset=again.adopt_keyset).start()
    assert new.kid in again._trusted and again.keyset_version() == 1
