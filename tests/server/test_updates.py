"""The publisher's repository (server/updates.py, scripts/publish_update.py): offline and online keys,
what each command signs, and the checks on what is offered."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from server.updates import PublishError, Release, Repository

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path, Path]:
    return tmp_path / "repo", tmp_path / "offline", tmp_path / "online"


def build(tmp_path: Path) -> Path:
    path = tmp_path / "b.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("pospal-agent", "#!/bin/sh\n")
    return path


def signed(repo: Path, name: str) -> dict:
    return json.loads((repo / "metadata" / name).read_text())["signed"]


def test_the_online_key_alone_keeps_the_timestamp_fresh_but_cannot_offer_a_build(dirs, tmp_path) -> None:
    repo_dir, offline, online = dirs
    Repository(repo_dir, [offline, online], NOW).init()
    assert {p.name.split(".")[0] for p in offline.iterdir()} == {"root", "targets"}
    assert {p.name.split(".")[0] for p in online.iterdir()} == {"snapshot", "timestamp"}

    later = NOW + timedelta(hours=20)
    server_side = Repository(repo_dir, [online], later)
    server_side.refresh()
    timestamp = signed(repo_dir, "timestamp.json")
    assert timestamp["version"] == 2
    assert timestamp["expires"].startswith((later + timedelta(days=1)).strftime("%Y-%m-%dT%H"))
    with pytest.raises(PublishError, match="signing targets needs 1 of its keys"):
        server_side.add(build(tmp_path), Release("1.1.0", "linux"))


def test_offering_a_build_signs_targets_snapshot_and_timestamp(dirs, tmp_path) -> None:
    repo_dir, offline, online = dirs
    repo = Repository(repo_dir, [offline, online], NOW)
    repo.init()
    repo.add(build(tmp_path), Release("1.1.0", "windows", "beta", 100, ("m_a",)))
    targets = signed(repo_dir, "targets.json")
    target = targets["targets"]["windows/pospal-agent-1.1.0.zip"]
    assert target["custom"] == {"version": "1.1.0", "channel": "beta", "rollout": 100, "terminals": ["m_a"]}
    assert (
        repo_dir / "targets" / "windows" / f"{target['hashes']['sha256']}.pospal-agent-1.1.0.zip"
    ).exists()
    assert signed(repo_dir, "snapshot.json")["meta"]["targets.json"]["version"] == targets["version"] == 2
    repo.set_rollout("windows", "1.1.0", 50)
    assert (
        signed(repo_dir, "targets.json")["targets"]["windows/pospal-agent-1.1.0.zip"]["custom"]["rollout"]
        == 50
    )


@pytest.mark.parametrize(
    ("release", "problem"),
    [
        (Release("1.1", "linux", rollout=101), "percentage"),
        (Release("1.1.0-rc1", "linux"), "not a version"),
        (Release("1.1.0", "amiga"), "platform"),
        (Release("1.1.0", "linux", channel="nightly"), "channel"),
    ],
)
def test_bad_releases_are_refused(dirs, tmp_path, release, problem) -> None:
    repo = Repository(dirs[0], [dirs[1], dirs[2]], NOW)
    repo.init()
    with pytest.raises(PublishError, match=problem):
        repo.add(build(tmp_path), release)


def test_a_root_threshold_of_two_needs_both_root_keys(dirs) -> None:
    repo = Repository(dirs[0], [dirs[1], dirs[2]], NOW)
    repo.init(root_keys=2, root_threshold=2)
    root = signed(dirs[0], "root.json")
    assert root["roles"]["root"]["threshold"] == 2
    assert len(root["roles"]["root"]["keyids"]) == 2
    assert len(json.loads((dirs[0] / "metadata" / "1.root.json").read_text())["signatures"]) == 2


def test_the_script_publishes_and_bundles(tmp_path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, str(REPO / "scripts" / "publish_update.py"), *args],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
        )

    assert run("init", "--repo", "r", "--offline-keys", "off", "--online-keys", "on").returncode == 0
    done = run(
        "add",
        "--repo",
        "r",
        "--keys",
        "off",
        "--keys",
        "on",
        "--build",
        str(build(tmp_path)),
        "--version",
        "1.1.0",
        "--platform",
        "linux",
        "--rollout",
        "10",
    )
    assert done.returncode == 0, done.stderr
    assert "rollout 10%" in done.stdout
    refused = run(
        "add",
        "--repo",
        "r",
        "--keys",
        "on",
        "--build",
        str(build(tmp_path)),
        "--version",
        "1.2.0",
        "--platform",
        "linux",
    )
    assert refused.returncode == 1
    assert "offline key directory" in refused.stderr
    assert run("root", "--repo", "r", "--out", "update-root.json").returncode == 0
    assert json.loads((tmp_path / "update-root.json").read_text())["signed"]["_type"] == "root"
    assert run("bundle", "--repo", "r", "--out", "usb", "--platform", "linux").returncode == 0
    assert (tmp_path / "usb" / "metadata" / "timestamp.json").exists()
    assert len(list((tmp_path / "usb" / "targets" / "linux").iterdir())) == 1


def test_the_key_set_needs_the_offline_key_set_keys_and_revocations_stay(dirs) -> None:
    """`publish_keyset` signs with the authority's threshold (the online directory alone cannot), counts
    versions up, keeps every revoked kid, and what it offers verifies under the anchors builds ship."""
    from pospal_protocol.trust import TrustedKeys
    from tests.agent.tokenkit import Signer

    repo_dir, offline, online = dirs
    repo = Repository(repo_dir, [offline, online], NOW)
    repo.init()
    anchor = repo.keyset_init(count=2, threshold=2)
    assert len(list(offline.glob("keyset.*.pem"))) == 2 and not list(online.glob("keyset.*"))
    k1, k2 = Signer(), Signer()
    with pytest.raises(PublishError, match="needs 2"):
        Repository(repo_dir, [online], NOW).publish_keyset({"keys": [k1.jwk()]})
    one = next(offline.glob("keyset.*.pem"))
    alone = repo_dir.parent / "one-keyset-key"
    alone.mkdir()
    (alone / one.name).write_bytes(one.read_bytes())
    with pytest.raises(PublishError, match="needs 2"):
        Repository(repo_dir, [alone, offline.parent / "nothing", online], NOW).publish_keyset({"keys": []})

    v1, doc1 = repo.publish_keyset({"keys": [k1.jwk()]})
    v2, doc2 = repo.publish_keyset({"keys": [k1.jwk(), k2.jwk()]}, revoked=(k1.kid,))
    v3, doc3 = repo.publish_keyset({"keys": [k1.jwk(), k2.jwk()]})  # listing k1 again does not bring it back
    assert (v1, v2, v3) == (1, 2, 3)
    assert (repo_dir / "keyset.json").read_text() == doc3
    assert signed(repo_dir, "targets.json")["targets"]["keys/keyset.json"]["custom"] == {"keyset_version": 3}
    trusted = TrustedKeys.from_jwks({"keys": [], "keyset_authority": anchor})
    trusted.apply_chain([doc1, doc3, doc2])
    assert trusted.kids() == [k2.kid] and trusted.revoked == {k1.kid} and trusted.keyset_version == 3
