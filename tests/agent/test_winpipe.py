"""The Windows channel (agent/link/winpipe.py) driven through an in-memory Windows
(tests/agent/fake_pywin32.py): the tray proves the pipe's owner before it writes, the service identifies each
client by impersonation, a user cannot add an instance of the service's pipe, and another session's credential
is refused.

What this cannot show on Linux: that real Windows grants and refuses as the fake does (the fake encodes
the documented rules: first-instance flag, FILE_CREATE_PIPE_INSTANCE, owner = first creator,
impersonation after the client wrote). Wine does not enforce ACLs (WineHQ 47627)."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest

from agent import errors
from agent.link import winpipe
from agent.link.channel import ChannelServer, encode, read_frame
from agent.link.channelcontrol import ChannelControl
from tests.agent.fake_pywin32 import FILE_CREATE_PIPE_INSTANCE, Kernel, WinError

ALICE = "S-1-5-21-1-2-3-1001"
BOB = "S-1-5-21-1-2-3-1002"
MALLORY = "S-1-5-21-1-2-3-1003"


class _Route:
    def __init__(self, handler: Any) -> None:
        self.handler = handler


def _routes(seen: list) -> dict:
    body = json.dumps({"license_state": "trial_active", "licensed": True, "reason": None, "message": "ok"})

    def record(name: str):
        def handler(b: dict) -> tuple[int, Any]:
            seen.append((name, b))
            return 200, {"ok": True}

        return _Route(handler)

    return {
        ("GET", "/v1/license"): _Route(lambda _b: (200, body.encode())),
        ("POST", "/v1/owner"): record("owner"),
        ("POST", "/v1/deactivate"): record("deactivate"),
    }


@pytest.fixture
def kernel() -> Kernel:
    return Kernel()


@pytest.fixture
def service(kernel: Kernel):
    seen: list = []
    channel = winpipe.PipeChannel(ChannelServer(_routes(seen)), win=kernel.process(winpipe.service_sid(), 0))
    channel.start()
    channel.seen = seen  # type: ignore[attr-defined]
    yield channel
    channel.stop()


def _tray(kernel: Kernel, sid: str, session: int) -> ChannelControl:
    win = kernel.process(sid, session)
    return ChannelControl(lambda t: winpipe.connect(win=win, timeout=t), poll_s=0.02)


def test_the_tray_talks_to_the_service_and_is_identified_by_its_token(kernel: Kernel, service) -> None:
    tray = _tray(kernel, ALICE, 1)
    try:
        assert tray.status().license_state == "trial_active"
        tray.prove_owner("owner@cafe.example", "123456")
        assert service.seen == [("owner", {"email": "owner@cafe.example", "code": "123456"})]
        # The tray let the service identify it, never act as it.
        assert kernel.opened_flags[0] == winpipe.SECURITY_SQOS_PRESENT | winpipe.SECURITY_IDENTIFICATION
    finally:
        tray.close()


def _raw(kernel: Kernel, sid: str, session: int, request: dict) -> dict:
    stream = winpipe.connect(win=kernel.process(sid, session), timeout=2)
    try:
        stream.send_all(encode(request))
        answer = read_frame(stream)
    finally:
        stream.close()
    assert answer is not None
    return answer


def test_another_sessions_or_users_credential_is_refused(kernel: Kernel, service) -> None:
    hello = _raw(kernel, ALICE, 1, {"method": "POST", "path": "hello", "body": {}})
    assert hello["body"]["user"] == ALICE and hello["body"]["session"] == "1"
    credential = hello["body"]["credential"]
    deactivate = {"method": "POST", "path": "/v1/deactivate", "body": {}, "credential": credential}
    for sid, session in ((ALICE, 2), (BOB, 1)):
        answer = _raw(kernel, sid, session, deactivate)
        assert answer["status"] == 401 and answer["body"]["error"] == "wrong_caller", (sid, session)
    assert service.seen == []
    assert _raw(kernel, ALICE, 1, deactivate)["status"] == 200


def test_users_may_talk_but_never_add_an_instance_of_the_services_pipe(kernel: Kernel, service) -> None:
    assert not winpipe.CLIENT_ACCESS & FILE_CREATE_PIPE_INSTANCE
    mallory = kernel.process(MALLORY, 1)
    with pytest.raises(WinError) as refused:
        mallory.win32pipe.CreateNamedPipe(winpipe.PIPE_NAME, winpipe.PIPE_ACCESS_DUPLEX, 0, 1, 0, 0, 0, None)
    assert refused.value.winerror == winpipe.ERROR_ACCESS_DENIED


def _squat(kernel: Kernel) -> Any:
    """Mallory creates the pipe first (the service is stopped), open to every interactive user."""
    mallory = kernel.process(MALLORY, 1)
    acl = mallory.win32security.ACL()
    acl.AddAccessAllowedAce(2, winpipe.GENERIC_ALL, winpipe.INTERACTIVE)
    sd = mallory.win32security.SECURITY_DESCRIPTOR()
    sd.SetSecurityDescriptorDacl(1, acl, 0)
    attributes = mallory.win32security.SECURITY_ATTRIBUTES()
    attributes.SECURITY_DESCRIPTOR = sd
    handle = mallory.win32pipe.CreateNamedPipe(
        winpipe.PIPE_NAME, winpipe.PIPE_ACCESS_DUPLEX, 0, 4, 0, 0, 0, attributes
    )
    received: list[bytes] = []

    def listen() -> None:
        mallory.win32pipe.ConnectNamedPipe(handle, None)
        try:
            received.append(mallory.win32file.ReadFile(handle, 65536)[1])
        except WinError:
            received.append(b"")

    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    return mallory, handle, received, thread


def test_a_pipe_someone_else_created_first_gets_no_credential_nor_owner_code(kernel: Kernel) -> None:
    mallory, handle, received, thread = _squat(kernel)
    # The genuine service cannot share the name: it says so at start instead of serving beside an impostor.
    with pytest.raises(errors.StoreError):
        winpipe.PipeChannel(ChannelServer({}), win=kernel.process(winpipe.service_sid(), 0))
    tray = _tray(kernel, ALICE, 1)
    with pytest.raises(errors.NotGenuineService):
        tray.prove_owner("owner@cafe.example", "123456")
    tray.close()
    thread.join(5)
    assert received == [b""]  # connected, then hung up on without a byte
    mallory.win32file.CloseHandle(handle)


def test_the_tray_says_the_service_stopped_and_reconnects_when_it_starts_again(kernel: Kernel) -> None:
    service_win = kernel.process(winpipe.service_sid(), 0)
    channel = winpipe.PipeChannel(ChannelServer(_routes([])), win=service_win).start()
    tray = _tray(kernel, ALICE, 1)
    seen: list = []
    changed = threading.Event()

    def on_status(status) -> None:
        seen.append(status)
        changed.set()

    unsubscribe = tray.subscribe(on_status)
    try:
        assert changed.wait(5) and seen[-1].license_state == "trial_active"
        changed.clear()
        channel.stop()
        assert changed.wait(5) and seen[-1].reason == "service_stopped"
        changed.clear()
        channel = winpipe.PipeChannel(ChannelServer(_routes([])), win=service_win).start()
        assert changed.wait(5) and seen[-1].license_state == "trial_active"
    finally:
        unsubscribe()
        tray.close()
        channel.stop()


def test_the_pipe_grants_users_only_what_a_client_needs(kernel: Kernel) -> None:
    attributes = winpipe.pipe_dacl(kernel.process(winpipe.service_sid(), 0))
    aces = dict((sid, mask) for mask, sid in attributes.SECURITY_DESCRIPTOR.dacl.aces)
    assert aces[winpipe.SYSTEM] == aces[winpipe.service_sid()] == winpipe.GENERIC_ALL
    assert aces[winpipe.INTERACTIVE] == winpipe.CLIENT_ACCESS
