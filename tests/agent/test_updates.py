"""The update client's refusals (TUF through python-tuf's ngclient) and who gets which release.

Each attack is a repository or mirror the publisher's code (`server.updates`) made and then tampered
with, read by `agent.selfupdate.updates.UpdateClient` from a directory (the USB-bundle path; the HTTP path is
the same ngclient with another fetcher, run end to end in test_update_e2e.py).
"""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agent.selfupdate.updates import Offer, UpdateClient, UpdateError, bucket, choose, eligible
from server.updates import Release, Repository, load_signers
from tests.agent.updatekit import zip_dir

NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
def pub(tmp_path: Path) -> Repository:
    """A repository offering linux 1.1.0 to everyone."""
    repo = Repository(tmp_path / "repo", [tmp_path / "offline", tmp_path / "online"], NOW)
    repo.init()
    build = tmp_path / "build"
    build.mkdir()
    (build / "pospal-agent").write_text("#!/bin/sh\necho 1.1.0\n")
    repo.add(zip_dir(build, tmp_path / "b.zip"), Release("1.1.0", "linux"))
    return repo


def root_of(repo: Repository) -> bytes:
    return (repo.meta_dir / "1.root.json").read_bytes()


def client(repo: Repository, state: Path, source: Path | None = None) -> UpdateClient:
    return UpdateClient(root_of(repo), state, bundle=source or repo.path, platform="linux")


def test_a_genuine_release_is_offered_and_downloaded(pub: Repository, tmp_path: Path) -> None:
    c = client(pub, tmp_path / "state")
    offer = c.check("1.0.0", "m_a")
    assert offer == Offer("1.1.0", "linux/pospal-agent-1.1.0.zip", offer.length, "stable")
    assert c.download(offer).read_bytes()[:2] == b"PK"
    assert client(pub, tmp_path / "state").check("1.1.0", "m_a") is None


def test_targets_signed_by_a_key_the_root_does_not_name_are_refused(pub: Repository, tmp_path: Path) -> None:
    forger = Repository(tmp_path / "forged", [tmp_path / "forger-offline", tmp_path / "forger-online"], NOW)
    forger.init()
    mirror = tmp_path / "mirror"
    shutil.copytree(pub.path, mirror)
    # The forger's own targets/snapshot/timestamp (version numbers as high as it likes) over the real root.
    for name in ("timestamp.json", "1.snapshot.json", "1.targets.json"):
        shutil.copyfile(forger.meta_dir / name, mirror / "metadata" / name)
    with pytest.raises(UpdateError, match="refused"):
        client(pub, tmp_path / "state", mirror).check("1.0.0", "m_a")


def test_expired_timestamp_is_a_freeze_and_refused(tmp_path: Path) -> None:
    stale = Repository(tmp_path / "repo", [tmp_path / "k1", tmp_path / "k2"], NOW - timedelta(days=2))
    stale.init()
    with pytest.raises(UpdateError, match="Expired"):
        UpdateClient(root_of(stale), tmp_path / "state", bundle=stale.path).check("1.0.0", "m_a")


def test_an_older_repository_served_after_a_newer_one_is_a_rollback(pub: Repository, tmp_path: Path) -> None:
    old_copy = tmp_path / "old"
    shutil.copytree(pub.path, old_copy)
    pub.refresh()  # timestamp version 3
    client(pub, tmp_path / "state").check("1.0.0", "m_a")
    with pytest.raises(UpdateError, match="refused"):
        client(pub, tmp_path / "state", old_copy).check("1.0.0", "m_a")


def test_a_target_with_a_wrong_hash_is_refused(pub: Repository, tmp_path: Path) -> None:
    mirror = tmp_path / "mirror"
    shutil.copytree(pub.path, mirror)
    target = next((mirror / "targets" / "linux").iterdir())
    data = bytearray(target.read_bytes())
    data[-1] ^= 0xFF  # same length, other bytes
    target.write_bytes(bytes(data))
    c = client(pub, tmp_path / "state", mirror)
    offer = c.check("1.0.0", "m_a")
    assert offer is not None
    with pytest.raises(UpdateError, match="refused"):
        c.download(offer)


def test_a_mirror_serving_endless_bytes_is_cut_at_the_signed_length(pub: Repository, tmp_path: Path) -> None:
    mirror = tmp_path / "mirror"
    shutil.copytree(pub.path, mirror)
    target = next((mirror / "targets" / "linux").iterdir())
    with open(target, "ab") as f:
        f.write(b"\0" * 5_000_000)
    c = client(pub, tmp_path / "state", mirror)
    offer = c.check("1.0.0", "m_a")
    assert offer is not None
    with pytest.raises(UpdateError, match="refused"):
        c.download(offer)
    assert not list((tmp_path / "state" / "downloads").iterdir())


def test_targets_key_rotated_through_root_and_the_old_key_stops_counting(
    pub: Repository, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    client(pub, state).check("1.0.0", "m_a")
    old_targets = load_signers("targets", pub.key_dirs)
    pub.key_dirs = [*pub.key_dirs, tmp_path / "new-offline"]
    for path in (tmp_path / "offline").glob("targets.*.pem"):
        path.unlink()  # the old targets key is retired (stolen, say)
    pub.rotate("targets", tmp_path / "new-offline")
    # A client shipped with root 1 walks to root 2 and accepts targets signed by the new key.
    assert client(pub, state).check("1.0.0", "m_a") is not None
    assert json.loads((state / "metadata" / "root.json").read_text())["signed"]["version"] == 2

    # Whoever holds the old targets key signs a new targets version: refused by the rotated root.
    md = pub.load("targets")
    md.signed.version += 1
    md.signatures.clear()
    for signer in old_targets.values():
        md.sign(signer, append=True)
    pub._write(md)
    pub._snapshot_and_timestamp()
    with pytest.raises(UpdateError, match="refused"):
        client(pub, state).check("1.0.0", "m_a")


def test_a_root_dropped_into_the_kept_history_counts_for_nothing(pub: Repository, tmp_path: Path) -> None:
    state = tmp_path / "state"
    client(pub, state).check("1.0.0", "m_a")
    forger = Repository(tmp_path / "forged", [tmp_path / "f1", tmp_path / "f2"], NOW)
    forger.init()
    history = state / "metadata" / "root_history"
    shutil.copyfile(forger.meta_dir / "1.root.json", history / "2.root.json")
    # The client still trusts the shipped root 1: the genuine repository verifies, the forger's does not.
    assert client(pub, state).check("1.0.0", "m_a") is not None


def test_beta_reaches_only_the_terminals_it_names() -> None:
    custom = {"version": "1.2.0", "channel": "beta", "rollout": 100, "terminals": ["m_beta"]}
    assert eligible(custom, "m_beta")
    assert not eligible(custom, "m_other")
    assert not eligible(custom, "")


def test_rollout_is_deterministic_per_terminal_and_grows_without_dropping_anyone() -> None:
    terminals = [f"m_{i}" for i in range(1000)]
    at = {
        p: {t for t in terminals if eligible({"version": "1.2.0", "rollout": p}, t)} for p in (0, 10, 50, 100)
    }
    assert at[0] == set()
    assert at[100] == set(terminals)
    assert at[10] <= at[50] <= at[100]
    assert 50 <= len(at[10]) <= 150  # about 10 % of the fleet
    assert bucket("m_7", "1.2.0") == bucket("m_7", "1.2.0")


def test_choose_takes_the_newest_eligible_and_skips_failed_versions() -> None:
    class T:
        def __init__(self, custom: dict) -> None:
            self.custom = custom
            self.length = 1

    targets = {
        "linux/pospal-agent-1.1.0.zip": T({"version": "1.1.0", "channel": "stable", "rollout": 100}),
        "linux/pospal-agent-1.3.0.zip": T({"version": "1.3.0", "channel": "stable", "rollout": 100}),
        "windows/pospal-agent-1.4.0.zip": T({"version": "1.4.0", "channel": "stable", "rollout": 100}),
    }
    assert choose(targets, "1.0.0", "m_a", "linux").version == "1.3.0"
    assert choose(targets, "1.0.0", "m_a", "linux", frozenset({"1.3.0"})).version == "1.1.0"
    assert choose(targets, "1.3.0", "m_a", "linux") is None


def test_a_release_build_ignores_pospal_update_root(monkeypatch, tmp_path: Path) -> None:
    from agent import flavour
    from agent.selfupdate import updates

    own = tmp_path / "my-root.json"
    own.write_bytes(b'{"signed": "mine"}')
    monkeypatch.setenv("POSPAL_UPDATE_ROOT", str(own))
    assert updates.shipped_root() == own.read_bytes()  # development tree: the override is used
    monkeypatch.setattr(flavour, "is_release", lambda: True)
    assert updates.shipped_root() != own.read_bytes()  # a release trusts only the root it ships


class _FlakySession:
    """A requests session whose first `drops` GETs fail before any answer, as a dropped connection does."""

    def __init__(self, drops: int) -> None:
        import requests

        self.real = requests.Session()
        self.drops = drops
        self.urls: list[str] = []

    def get(self, url: str, **kwargs):
        import requests

        self.urls.append(url)
        if self.drops > 0:
            self.drops -= 1
            raise requests.ConnectionError("Connection reset by peer")
        return self.real.get(url, **kwargs)


@pytest.fixture
def served(pub: Repository):
    """`pub` on a loopback HTTP server; its base URL."""
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(pub.path)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_a_connection_dropped_before_an_answer_is_tried_again(
    pub: Repository, served: str, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setattr("agent.selfupdate.updates.FETCH_RETRY_S", 0.01)
    session = _FlakySession(drops=2)
    c = UpdateClient(root_of(pub), tmp_path / "state", url=served, session=session, platform="linux")
    offer = c.check("1.0.0", "m_a")
    assert offer is not None and offer.version == "1.1.0"
    assert session.urls[:3] == [f"{served}/metadata/2.root.json"] * 3  # two drops, then the answer (404)


def test_a_mirror_that_keeps_dropping_is_refused_with_the_cause_named(
    pub: Repository, served: str, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setattr("agent.selfupdate.updates.FETCH_RETRY_S", 0.01)
    session = _FlakySession(drops=99)
    c = UpdateClient(root_of(pub), tmp_path / "state", url=served, session=session, platform="linux")
    with pytest.raises(UpdateError) as refused:
        c.check("1.0.0", "m_a")
    message = str(refused.value)
    assert "2.root.json" in message and "(ConnectionError: Connection reset by peer)" in message
    assert len(session.urls) == 3  # FETCH_ATTEMPTS, then it gives up
