"""Conformance: FakeControl behaves like the real InProcessControl over an AgentService.

The same checks run against both, so the UI tests built on the fake keep telling the truth about the
real agent. (The real service talks to tests/agent's FakeCloud here, to stay fast; the buy-flow test
covers the real server.)
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest
from keyring.backends import fail

from agent.config import AgentSettings
from agent.control import AgentControl, Checkout, Diagnostics, FingerprintSource, InProcessControl, Terminal
from agent.core.clock import FakeClock
from agent.core.service import AgentService
from agent.core.state import LicenseStatus
from agent.errors import ServerRefused
from agent.vault.store import MachineKeyStore
from pospal_protocol.fingerprint import Component, Fingerprint
from tests.agent.fake_cloud import FakeCloud
from tests.ui.fakes import RIGHT_CODE, FakeControl

EMAIL = "maria@taverna-kyma.gr"


@pytest.fixture(params=["fake", "real"])
def subject(request, tmp_path):
    """(control, code_for(email)) for the fake and for the real in-process control."""
    if request.param == "fake":
        yield FakeControl(), lambda _email: RIGHT_CODE
        return
    clock = FakeClock(datetime(2026, 11, 26, 9, tzinfo=UTC))
    cloud = FakeCloud(clock)
    settings = AgentSettings(
        server_url="http://fake.invalid",
        agent_port=7421,
        data_dir=tmp_path / "data",
        trusted_keys_path=cloud.write_jwks(tmp_path / "trusted.json"),
    )
    fp = Fingerprint((Component("machine_id", True, "a" * 64), Component("mac", True, "c" * 64)))
    service = AgentService(
        settings,
        clock=clock,
        transport=cloud,
        fingerprinter=lambda: fp,
        key_store=MachineKeyStore(tmp_path / "data", backend=fail.Keyring()),
        terminal_name="Front counter",
    )
    yield InProcessControl(service), lambda email: cloud.codes[email]
    service.stop()


def test_conforms_to_the_agent_control_contract(subject):
    control, code_for = subject
    assert isinstance(control, AgentControl)
    first = control.status()
    assert isinstance(first, LicenseStatus)
    assert (first.license_state, first.licensed) == ("license_missing", False)

    pushed: list[LicenseStatus] = []
    unsubscribe = control.subscribe(pushed.append)
    trial = control.start_trial()
    assert (trial.license_state, trial.licensed) == ("trial_active", True)
    assert pushed and pushed[-1].license_state == "trial_active"

    assert control.request_code(EMAIL, "activate") is None
    with pytest.raises(ServerRefused) as refused:
        control.activate(EMAIL, "000000" if code_for(EMAIL) != "000000" else "000001")
    assert refused.value.code == "bad_code"
    active = control.activate(EMAIL, code_for(EMAIL))
    assert (active.license_state, active.licensed) == ("licensed_active", True)
    assert control.status().license_state == "licensed_active"

    terminals = control.list_terminals()
    assert all(isinstance(t, Terminal) for t in terminals)
    assert sum(t.this_machine for t in terminals) == 1

    checkout = control.start_checkout(EMAIL, "Taverna Kyma", 1)
    assert isinstance(checkout, Checkout) and checkout.url.startswith("http")
    cancel = threading.Event()
    cancel.set()
    assert control.wait_checkout(checkout.checkout_id, cancel, 0.01).license_state == "licensed_active"

    diagnostics = control.diagnostics()
    assert isinstance(diagnostics, Diagnostics)
    assert all(isinstance(c, FingerprintSource) for c in diagnostics.components)
    assert isinstance(control.portal_url(), str)

    unsubscribe()
    count = len(pushed)
    gone = control.deactivate()
    assert gone.licensed is False
    assert len(pushed) == count


def test_give_up_and_updates_conform(subject):
    """Giving up a license file a PC does not hold is refused with nothing changed; the update status and
    an on-demand check answer an UpdateStatus (a check never raises for what it finds)."""
    from agent.errors import LicenseFileRefused
    from agent.selfupdate.updatestate import UpdateStatus

    control, _ = subject
    with pytest.raises(LicenseFileRefused):
        control.offline_deactivation()
    assert control.status().license_state == "license_missing"
    status = control.update_status()
    assert isinstance(status, UpdateStatus) and status.current
    checked = control.check_updates()
    assert isinstance(checked, UpdateStatus) and checked.current == status.current
    assert checked.check_outcome in (None, "up_to_date", "staged", "failed")
