"""The tray over the channel: it says so while the service is stopped, reconnects by itself when it comes
back (a new service forgets the old credential), and refuses a socket it cannot prove is the service's."""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from agent import errors, messages
from agent.link.channel import ChannelServer
from agent.link.channelcontrol import ChannelControl, stopped_status

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="Unix sockets; Windows: test_winpipe.py")


class _Route:
    def __init__(self, handler: Any) -> None:
        self.handler = handler


def _routes(state: str) -> dict:
    body = json.dumps({"license_state": state, "licensed": True, "reason": None, "message": "ok"}).encode()
    return {("GET", "/v1/license"): _Route(lambda _b: (200, body))}


def _serve(run: Path, state: str):
    from agent.link.unixchannel import UnixChannel

    return UnixChannel(run, ChannelServer(_routes(state))).start()


def _control(run: Path) -> ChannelControl:
    from agent.link.unixchannel import connect

    return ChannelControl(lambda t: connect(run, timeout=t), poll_s=0.02)


def _wait_for(seen: list, event: threading.Event, want) -> None:
    assert event.wait(10), seen
    assert want(seen[-1]), seen


def test_the_tray_says_the_service_stopped_and_reconnects_when_it_restarts(tmp_path: Path) -> None:
    run = tmp_path / "run"
    channel = _serve(run, "trial_active")
    control = _control(run)
    seen: list = []
    changed = threading.Event()

    def on_status(status) -> None:
        seen.append(status)
        changed.set()

    unsubscribe = control.subscribe(on_status)
    try:
        _wait_for(seen, changed, lambda s: s.license_state == "trial_active")
        old_credential = control._credential
        changed.clear()
        channel.stop()
        _wait_for(seen, changed, lambda s: s.reason == "service_stopped" and not s.licensed)
        assert control.reachable is False
        changed.clear()
        channel = _serve(run, "licensed_active")  # a new service: it never saw the old credential
        _wait_for(seen, changed, lambda s: s.license_state == "licensed_active")
        assert control.reachable is True and control._credential != old_credential
    finally:
        unsubscribe()
        control.close()
        channel.stop()


def test_the_stopped_status_speaks_english_and_greek() -> None:
    status = stopped_status("service_stopped", "el")
    assert status.message.startswith(messages.text("channel.service_stopped", "el"))
    assert dict(status.translations)["en"].startswith("The POSPal License service is not running")
    assert stopped_status("service_not_genuine").message.startswith("Another program pretends")


def test_a_socket_directory_others_may_write_is_not_the_service(tmp_path: Path) -> None:
    run = tmp_path / "run"
    channel = _serve(run, "trial_active")
    try:
        os.chmod(run, 0o777)
        with pytest.raises(errors.NotGenuineService):
            _control(run).status()
        os.chmod(run, 0o755)
        assert _control(run).status().license_state == "trial_active"
    finally:
        channel.stop()


def test_a_socket_served_by_an_untrusted_account_gets_nothing(tmp_path: Path) -> None:
    from agent.link.unixchannel import connect

    run = tmp_path / "run"
    channel = _serve(run, "trial_active")
    try:
        with pytest.raises(errors.NotGenuineService):
            connect(run, trusted_uids={os.getuid() + 4242})
    finally:
        channel.stop()


def test_no_service_at_all_is_unavailable_not_an_impostor(tmp_path: Path) -> None:
    with pytest.raises(errors.AgentUnavailable):
        _control(tmp_path / "absent").status()
