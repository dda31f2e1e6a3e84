"""AgentControl conformance: InProcessControl, HttpControl (over a real local API) and ChannelControl (over
the tray's caller-checked channel, a real Unix socket) behave the same."""

from __future__ import annotations

import sys
import threading
from dataclasses import replace

import pytest

from agent.control import AgentControl, Checkout, InProcessControl
from agent.errors import LocalApiError, Offline, ServerRefused
from agent.localapi.api import LocalApi
from agent.localapi.remote import HttpControl, status_from_dict
from tests.agent.test_service import Rig

TOKEN = "control-test-token-0123456789abcdef"
EMAIL = "owner@cafe.example"


@pytest.fixture(params=["in-process", "http", "channel"])
def setup(request, tmp_path):
    rig = Rig(tmp_path)
    service = rig.service()
    api = LocalApi(InProcessControl(service), api_token=TOKEN, port=0, poll_interval=0.02).start()
    channel = None
    if request.param == "in-process":
        control = InProcessControl(service)
    elif request.param == "http":
        control = HttpControl(api.port, TOKEN, poll_s=0.02)
    else:
        if sys.platform == "win32":
            pytest.skip("the Windows channel is a named pipe (tests/agent/test_winpipe.py)")
        from agent.link.channel import ChannelServer
        from agent.link.channelcontrol import ChannelControl
        from agent.link.unixchannel import UnixChannel, connect

        channel = UnixChannel(tmp_path / "run", ChannelServer(api.routes)).start()
        control = ChannelControl(lambda timeout: connect(tmp_path / "run", timeout=timeout), poll_s=0.02)
    yield rig, service, control
    if isinstance(control, HttpControl):
        control.close()
    if channel is not None:
        channel.stop()
    api.stop()


def request_kind(control) -> str:
    """Which door a control of the fixture goes through."""
    from agent.link.channelcontrol import ChannelControl

    return "channel" if isinstance(control, ChannelControl) else "other"


def test_every_control_satisfies_the_protocol(setup):
    _, _, control = setup
    assert isinstance(control, AgentControl)


def test_activate_flow_and_subscription(setup):
    rig, service, control = setup
    assert control.status().license_state == "license_missing"
    changed = threading.Event()
    seen = []

    def on_change(status):
        seen.append(status.license_state)
        if status.license_state == "licensed_active":
            changed.set()

    unsubscribe = control.subscribe(on_change)
    control.request_code(EMAIL, "activate")
    with pytest.raises(ServerRefused) as info:
        control.activate(EMAIL, "not-the-code")
    assert info.value.code == "bad_code" and info.value.message
    status = control.activate(EMAIL, rig.cloud.codes[EMAIL])
    assert status.license_state == "licensed_active"
    assert changed.wait(5) and "licensed_active" in seen
    unsubscribe()
    assert control.status().to_dict() == service.status().to_dict()
    [terminal] = control.list_terminals()
    assert terminal.this_machine and terminal.terminal_name == "Bar 1"
    if request_kind(control) == "channel":
        # The channel keeps the owner's proof in its session: billing waits for it (test_channel.py).
        with pytest.raises(ServerRefused) as owner:
            control.portal_url()
        assert owner.value.code == "owner_proof_required"
    else:
        assert control.portal_url() == "http://sandbox.invalid/portal"
    diag = control.diagnostics()
    assert [c.name for c in diag.components] == ["machine_id", "disk_serial", "mac"]
    rig.cloud.online = False
    with pytest.raises(Offline):
        control.sync_now()
    rig.cloud.online = True
    assert control.sync_now().license_state == "licensed_active"
    assert control.deactivate().license_state == "license_missing"


def test_checkout_then_wait(setup):
    rig, _, control = setup
    checkout = control.start_checkout("new@cafe.example", "Cafe", 2)
    assert isinstance(checkout, Checkout) and checkout.url.endswith(checkout.checkout_id)
    threading.Timer(0.1, rig.cloud.pay, args=(checkout.checkout_id,)).start()
    status = control.wait_checkout(checkout.checkout_id, threading.Event(), poll_s=0.02)
    assert status.license_state == "licensed_active"


def test_wait_checkout_stops_when_cancelled(setup):
    _, _, control = setup
    checkout = control.start_checkout("new@cafe.example", "Cafe", 1)
    cancel = threading.Event()
    threading.Timer(0.1, cancel.set).start()
    assert control.wait_checkout(checkout.checkout_id, cancel, poll_s=0.02).license_state == "license_missing"


def test_trial(setup):
    _, _, control = setup
    assert control.start_trial().license_state == "trial_active"


@pytest.mark.parametrize("setup", ["http"], indirect=True)
def test_http_control_without_the_token_is_refused(setup):
    _, service, control = setup
    port = control._client.port
    anonymous = HttpControl(port, None)
    assert anonymous.status().license_state == "license_missing"  # reading needs no token
    with pytest.raises(LocalApiError) as info:
        anonymous.start_trial()
    assert info.value.code == "unauthorized"
    assert service.status().license_state == "license_missing"


def test_status_round_trips_through_the_local_api_body(setup):
    rig, service, control = setup
    service.start_trial()
    original = service.status()
    assert original.license_state == "trial_active"
    rebuilt = status_from_dict(original.to_dict())
    assert rebuilt.to_dict() == original.to_dict()
    assert status_from_dict(replace(original, warn_days=9).to_dict()).warn_days == 9
    # What the control reports (over the wire, for HttpControl) is the service's status, field for field.
    assert control.status().to_dict() == original.to_dict()
