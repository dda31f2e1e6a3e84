"""What the tray is told about updates (agent.selfupdate.updatestate): the last check, a staged version, the
launcher's rollback, and a failed check answered as an outcome (an update never blocks licensing), through
every
AgentControl door."""

from __future__ import annotations

import json
import sys
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent.control import InProcessControl
from agent.selfupdate.install import ENTRY, Install
from agent.selfupdate.updater import Updater
from agent.selfupdate.updates import Offer, UpdateError
from agent.selfupdate.updatestate import UpdateDesk, UpdateStatus
from pospal_protocol.clock import FakeClock

NOW = datetime(2026, 12, 7, 10, 30, tzinfo=UTC)
TOKEN = "update-test-token-0123456789abcdef"


class Source:
    """An update client that offers `offer` (None: up to date) or fails with `error`."""

    def __init__(self, tmp: Path, offer: Offer | None = None, error: Exception | None = None) -> None:
        self.tmp, self.offer, self.error = tmp, offer, error

    def check(self, current: str, terminal: str, skip: frozenset[str] = frozenset()) -> Offer | None:
        if self.error is not None:
            raise self.error
        return self.offer

    def keyset(self) -> str | None:
        return None

    def download(self, offer: Offer) -> Path:
        build = self.tmp / "build.zip"
        with zipfile.ZipFile(build, "w") as z:
            z.writestr(ENTRY, "#!/bin/sh\n")
        return build


def desk(tmp_path: Path, source: Source | None) -> tuple[UpdateDesk, Install]:
    install = Install(tmp_path / "install")
    install.versions.mkdir(parents=True)
    client = (lambda: source) if source is not None else None
    updater = Updater(install, client, terminal=lambda: "m_a", clock=FakeClock(NOW), current="1.0.0")  # type: ignore[arg-type]
    return UpdateDesk(updater), install


def test_before_any_check_the_tray_sees_the_running_version_and_not_yet(tmp_path: Path) -> None:
    status = desk(tmp_path, Source(tmp_path))[0].status()
    assert status == UpdateStatus(enabled=True, current="1.0.0")


def test_checking_now_when_up_to_date_says_so_with_the_time(tmp_path: Path) -> None:
    status = desk(tmp_path, Source(tmp_path))[0].check_now()
    assert (status.check_outcome, status.checked_at, status.pending) == ("up_to_date", NOW.isoformat(), None)


def test_checking_now_stages_the_offered_version_for_the_next_quiet_moment(tmp_path: Path) -> None:
    offer = Offer("1.1.0", "pospal-agent-1.1.0-linux.zip", 10, "stable")
    d, install = desk(tmp_path, Source(tmp_path, offer))
    status = d.check_now()
    assert (status.check_outcome, status.check_detail, status.pending) == ("staged", "1.1.0", "1.1.0")
    assert install.pending() == "1.1.0" and install.entry("1.1.0").is_file()


def test_a_failed_check_is_an_outcome_with_its_words_never_an_exception(tmp_path: Path) -> None:
    d, _ = desk(tmp_path, Source(tmp_path, error=UpdateError("the update server does not answer")))
    status = d.check_now()
    assert status.check_outcome == "failed"
    assert status.check_detail == "the update server does not answer"
    # A bug in the client is contained too: the tray gets a line, the service keeps running.
    d2, _ = desk(tmp_path / "b", Source(tmp_path, error=RuntimeError("boom")))
    assert d2.check_now().check_outcome == "failed"


def test_the_launchers_rollback_and_skipped_versions_reach_the_tray(tmp_path: Path) -> None:
    d, install = desk(tmp_path, Source(tmp_path))
    install.mark_failed("1.2.0", "no answer on /v1/health within 30 s")
    report = {"from": "1.0.0", "to": "1.2.0", "outcome": "rolled_back", "reason": "no answer on /v1/health"}
    (install.root / "launcher.json").write_text(json.dumps(report))
    status = d.status()
    assert (status.last_swap_outcome, status.last_swap_from, status.last_swap_to) == (
        "rolled_back",
        "1.0.0",
        "1.2.0",
    )
    assert status.last_swap_reason == "no answer on /v1/health" and status.failed == ("1.2.0",)
    assert UpdateStatus.from_dict(json.loads(json.dumps(status.to_dict()))) == status


def test_an_agent_without_an_update_root_says_updates_are_off_and_checks_nothing(tmp_path: Path) -> None:
    d, _ = desk(tmp_path, None)
    assert d.check_now() == UpdateStatus(enabled=False, current="1.0.0")
    assert InProcessControl(object()).check_updates().enabled is False  # type: ignore[arg-type]


@pytest.fixture(params=["in-process", "http", "channel"])
def door(request, tmp_path):
    """An AgentControl of each kind over one agent whose updater is offered 1.1.0."""
    from agent.localapi.api import LocalApi
    from agent.localapi.remote import HttpControl
    from tests.agent.test_service import Rig

    offer = Offer("1.1.0", "pospal-agent-1.1.0-linux.zip", 10, "stable")
    d, _ = desk(tmp_path, Source(tmp_path, offer))
    inner = InProcessControl(Rig(tmp_path).service(), updates=d)
    api = LocalApi(inner, api_token=TOKEN, port=0, poll_interval=0.02).start()
    channel = None
    control: object = inner
    if request.param == "http":
        control = HttpControl(api.port, TOKEN, poll_s=0.02)
    elif request.param == "channel":
        if sys.platform == "win32":
            pytest.skip("the Windows channel is a named pipe (tests/agent/test_winpipe.py)")
        from agent.link.channel import ChannelServer
        from agent.link.channelcontrol import ChannelControl
        from agent.link.unixchannel import UnixChannel, connect

        channel = UnixChannel(tmp_path / "run", ChannelServer(api.routes)).start()
        control = ChannelControl(lambda timeout: connect(tmp_path / "run", timeout=timeout), poll_s=0.02)
    yield control
    close = getattr(control, "close", None)
    if close is not None:
        close()
    if channel is not None:
        channel.stop()
    api.stop()


def test_the_tray_checks_for_updates_and_reads_the_status_through_every_door(door) -> None:
    assert door.update_status() == UpdateStatus(enabled=True, current="1.0.0")
    checked = door.check_updates()
    assert (checked.check_outcome, checked.pending) == ("staged", "1.1.0")
    assert door.update_status() == checked
