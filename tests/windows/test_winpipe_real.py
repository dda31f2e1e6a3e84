"""The tray's named pipe with the real pywin32 (agent/link/winpipe.py): created with its DACL and owner,
opened at identification level, the owner read back by the client, the client identified by impersonation
(user SID, session id), and an untrusted owner refused. Under Wine (CI) one user runs everything and no ACL is
enforced, and FILE_FLAG_FIRST_PIPE_INSTANCE is not honoured; tests/agent/test_winpipe.py covers those
rules through fakes."""

import json
import secrets

import pytest

pytestmark = pytest.mark.windows


class _Route:
    def __init__(self, handler):
        self.handler = handler


def test_a_tray_and_the_service_over_a_real_named_pipe():
    from agent import errors
    from agent.link import winpipe
    from agent.link.channel import ChannelServer, encode, read_frame
    from agent.link.channelcontrol import ChannelControl

    body = json.dumps({"license_state": "trial_active", "licensed": True, "reason": None, "message": "ok"})
    seen = []

    def owner(b):
        seen.append(b)
        return 200, {"ok": True}

    routes = {
        ("GET", "/v1/license"): _Route(lambda _b: (200, body.encode())),
        ("POST", "/v1/owner"): _Route(owner),
    }
    name = rf"\\.\pipe\POSPal.LicenseAgent.test-{secrets.token_hex(4)}"
    win = winpipe.pywin32()
    channel = winpipe.PipeChannel(ChannelServer(routes), win=win, name=name).start()
    try:
        tray = ChannelControl(lambda t: winpipe.connect(win=win, name=name, timeout=t))
        assert tray.status().license_state == "trial_active"
        tray.prove_owner("owner@cafe.example", "123456")
        assert seen == [{"email": "owner@cafe.example", "code": "123456"}]
        tray.close()
        stream = winpipe.connect(win=win, name=name)
        stream.send_all(encode({"method": "POST", "path": "hello", "body": {}}))
        hello = read_frame(stream)["body"]
        stream.close()
        assert hello["user"] == winpipe.own_sid(win) and hello["session"].isdigit()
        with pytest.raises(errors.NotGenuineService):
            winpipe.connect(win=win, name=name, trusted=frozenset({winpipe.SYSTEM}))
    finally:
        channel.stop()
    with pytest.raises(errors.AgentUnavailable):
        winpipe.connect(win=win, name=name, timeout=0.5)
