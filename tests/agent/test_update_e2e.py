"""Signed updates end to end, with real processes: `pospal-launcher` runs agent 1.0.0 (a real agent build
made from this tree), a publisher serves a TUF repository with a newer build, and the agent swaps to it
while a POS asks `GET /v1/license` every 10 ms; a newer build that does not answer is rolled back.

The longest gap the POS saw is printed, never asserted (bench/update_swap.py measures it).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.agent.conftest import admin, write_trusted_keys
from tests.agent.updatekit import Launched, Pos, Publisher, make_broken, make_version
from tests.server.conftest import free_port

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        sys.platform == "win32", reason="the shell-script builds are POSIX (Windows: H1's CI)"
    ),
]


@pytest.fixture
def publisher(tmp_path: Path) -> Iterator[Publisher]:
    """A TUF repository served over HTTP."""
    pub = Publisher(tmp_path / "publisher")
    try:
        yield pub
    finally:
        pub.stop()


@pytest.fixture
def launch(tmp_path: Path, publisher: Publisher) -> Iterator:
    """Factory: `launch(server_url, trusted_keys=None, deadline=20)` -> a started launcher on v1.0.0."""
    made: list[Launched] = []

    def start(
        server_url: str, trusted_keys: Path | None = None, deadline: float = 20, first_check_s: float = 3600
    ) -> Launched:
        install = tmp_path / "install"
        make_version(install / "versions" / "1.0.0", "1.0.0")
        (install / "current").write_text("1.0.0\n")
        root = tmp_path / "update-root.json"
        root.write_bytes(publisher.root)
        env = {k: v for k, v in os.environ.items() if not k.startswith("POSPAL_")}
        env.pop("DISPLAY", None)
        env.pop("WAYLAND_DISPLAY", None)
        env.update(
            POSPAL_SERVER_URL=server_url,
            POSPAL_DATA_DIR=str(tmp_path / "agent-data"),
            POSPAL_RUNTIME_DIR=str(tmp_path / "run"),
            POSPAL_UPDATE_ROOT=str(root),
            POSPAL_UPDATE_URL=publisher.serve(),
            POSPAL_UPDATE_IDLE_S="0",
            POSPAL_UPDATE_WINDOW="off",
            POSPAL_UPDATE_FIRST_CHECK_S=str(first_check_s),
        )
        if trusted_keys is not None:
            env["POSPAL_TRUSTED_KEYS"] = str(trusted_keys)
        port = free_port()
        env["POSPAL_AGENT_PORT"] = str(port)  # the CLI's commands find the launched agent there
        launched = Launched(install, port, env, tmp_path / "launcher.log", deadline).start()
        made.append(launched)
        return launched

    yield start
    for launched in made:
        launched.stop()


def _version(launched: Launched) -> str | None:
    health = launched.health()
    return None if health is None else health.get("version")


def _license_fields(status: dict) -> dict:
    keep = ("license_state", "licensed", "reason", "machine_id", "valid_until", "plan", "terminal_name")
    return {k: status.get(k) for k in keep}


def test_v1_updates_itself_to_v2_while_the_pos_asks_every_10ms(
    launch, publisher: Publisher, real_server, tmp_path: Path
) -> None:
    trusted = write_trusted_keys(real_server.url, tmp_path / "trusted.json")
    launched = launch(real_server.url, trusted)
    trial = launched.cli("trial")
    assert trial.returncode == 0, trial.stderr
    before = launched.cli("status", "--json")
    assert json.loads(before.stdout)["license_state"] == "trial_active", before.stdout

    publisher.publish("1.1.0", make_version(tmp_path / "build-1.1.0", "1.1.0"))
    pos = Pos(launched.port).start()
    try:
        applied = launched.cli("update", "apply")
        assert applied.returncode == 0, applied.stderr
        assert "staged 1.1.0" in applied.stdout
        launched.wait_for((launched.install / "launcher.json").exists, 60, "the swap to 1.1.0")
        answered = pos.answers
        launched.wait_for(lambda: pos.answers > answered + 20, 10, "answers after the swap")
    finally:
        pos.stop()

    assert pos.failures == []
    print(f"\nPOS answers {pos.answers}, longest gap {pos.longest_gap_s * 1000:.0f} ms")
    after = launched.cli("status", "--json")
    assert _license_fields(json.loads(after.stdout)) == _license_fields(json.loads(before.stdout))
    assert _version(launched) == "1.1.0"
    assert (launched.install / "current").read_text().strip() == "1.1.0"
    assert json.loads((launched.install / "launcher.json").read_text())["outcome"] == "swapped"
    assert set(pos.states) == {"trial_active"}


def test_a_v3_that_crashes_at_start_is_rolled_back_by_itself_and_reported(
    launch, publisher: Publisher, real_server, tmp_path: Path
) -> None:
    launched = launch(real_server.url, write_trusted_keys(real_server.url, tmp_path / "trusted.json"))
    assert launched.cli("trial").returncode == 0
    publisher.publish("1.2.0", make_broken(tmp_path / "build-1.2.0", "crash"))

    applied = launched.cli("update", "apply")
    assert applied.returncode == 0, applied.stderr
    launched.wait_for(lambda: (launched.install / "launcher.json").exists(), 60, "the swap attempt")
    report = json.loads((launched.install / "launcher.json").read_text())
    assert report["outcome"] == "rolled_back"
    assert "exited with code 3" in report["reason"]
    launched.wait_for(lambda: _version(launched) == "1.0.0", 30, "1.0.0 answering again")
    assert (launched.install / "current").read_text().strip() == "1.0.0"
    # The failed version is never offered again to this terminal.
    assert "1.2.0" in json.loads((launched.install / "failed.json").read_text())
    again = launched.cli("update", "check")
    assert again.returncode == 0, again.stderr
    assert "up to date" in again.stdout
    # 1.0.0's first sync after the rollback tells the server which update failed, and why.
    assert launched.cli("sync").returncode == 0
    terminals = admin(real_server, "fleet", "terminals")
    assert [(t["version"], t["update_failed"]) for t in terminals] == [
        ("1.0.0", "1.2.0: exited with code 3 during its start check")
    ]


def test_a_new_version_that_never_answers_is_rolled_back(launch, tmp_path: Path) -> None:
    launched = launch(f"http://127.0.0.1:{free_port()}", deadline=4)
    make_broken(launched.install / "versions" / "1.3.0", "silent")
    (launched.install / "pending").write_text("1.3.0\n")

    launched.wait_for(lambda: (launched.install / "launcher.json").exists(), 60, "the swap attempt")
    report = json.loads((launched.install / "launcher.json").read_text())
    assert report["outcome"] == "rolled_back"
    assert "did not answer" in report["reason"]
    launched.wait_for(lambda: _version(launched) == "1.0.0", 30, "1.0.0 answering again")


def test_the_agent_checks_by_itself_and_swaps_with_nobody_asking(
    launch, publisher: Publisher, tmp_path: Path
) -> None:
    publisher.publish("1.1.0", make_version(tmp_path / "build-1.1.0", "1.1.0"))
    launched = launch(f"http://127.0.0.1:{free_port()}", first_check_s=1)
    swapped = launched.install / "launcher.json"
    launched.wait_for(swapped.exists, 60, "the scheduled update to 1.1.0")
    assert json.loads(swapped.read_text())["outcome"] == "swapped"
    assert _version(launched) == "1.1.0"


def test_an_offline_till_updates_from_a_usb_bundle(launch, publisher: Publisher, tmp_path: Path) -> None:
    launched = launch(f"http://127.0.0.1:{free_port()}")
    publisher.publish("1.1.0", make_version(tmp_path / "build-1.1.0", "1.1.0"))
    stick = publisher.repo.bundle(tmp_path / "usb" / "pospal-update", "linux")
    publisher.stop()  # no line to the update server: only the stick
    launched.env["POSPAL_UPDATE_URL"] = f"http://127.0.0.1:{free_port()}"
    assert launched.cli("update", "check").returncode == 1  # offline: the check fails, nothing else

    applied = launched.cli("update", "apply", "--from", str(stick))
    assert applied.returncode == 0, applied.stderr
    launched.wait_for((launched.install / "launcher.json").exists, 60, "the swap to 1.1.0 from the stick")
    assert _version(launched) == "1.1.0"


def test_a_tampered_usb_bundle_is_refused_and_nothing_is_staged(
    launch, publisher: Publisher, tmp_path: Path
) -> None:
    launched = launch(f"http://127.0.0.1:{free_port()}")
    publisher.publish("1.1.0", make_version(tmp_path / "build-1.1.0", "1.1.0"))
    stick = publisher.repo.bundle(tmp_path / "usb" / "pospal-update", "linux")
    build = next((stick / "targets" / "linux").iterdir())
    data = bytearray(build.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same length, other bytes
    build.write_bytes(bytes(data))

    applied = launched.cli("update", "apply", "--from", str(stick))
    assert applied.returncode == 1
    assert "refused" in applied.stderr
    assert not (launched.install / "pending").exists()
    assert not (launched.install / "versions" / "1.1.0").exists()


def test_a_version_that_keeps_dying_after_a_restart_gives_way_to_the_previous_one(tmp_path: Path) -> None:
    install = tmp_path / "install"
    make_version(install / "versions" / "1.0.0", "1.0.0")
    make_broken(install / "versions" / "1.1.0", "crash")
    (install / "current").write_text("1.1.0\n")  # swapped in yesterday; since this boot it dies at once
    (install / "previous").write_text("1.0.0\n")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("POSPAL_")}
    env.update(
        POSPAL_SERVER_URL=f"http://127.0.0.1:{free_port()}",
        POSPAL_DATA_DIR=str(tmp_path / "agent-data"),
        POSPAL_RUNTIME_DIR=str(tmp_path / "run"),
        POSPAL_AGENT_PORT=str(port),
    )
    launched = Launched(install, port, env, tmp_path / "launcher.log")
    try:
        launched.start(ready_s=60)
        assert _version(launched) == "1.0.0"
        assert (install / "current").read_text().strip() == "1.0.0"
        assert json.loads((install / "launcher.json").read_text())["outcome"] == "fell_back"
        assert "1.1.0" in json.loads((install / "failed.json").read_text())
    finally:
        launched.stop()


def test_after_a_good_swap_only_the_new_and_previous_versions_stay(launch, tmp_path: Path) -> None:
    launched = launch(f"http://127.0.0.1:{free_port()}")
    versions = launched.install / "versions"
    make_version(versions / "0.9.0", "0.9.0")  # an old one left from before
    make_version(versions / "1.1.0", "1.1.0")
    (launched.install / "pending").write_text("1.1.0\n")
    launched.wait_for((launched.install / "launcher.json").exists, 60, "the swap to 1.1.0")
    assert sorted(p.name for p in versions.iterdir()) == ["1.0.0", "1.1.0"]
