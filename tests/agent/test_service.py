"""AgentService flows against FakeCloud on a FakeClock: trial, provisional trial, activation, buy,
refresh with key rotation, revocation, deactivation, restart from the cache, time-driven states."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta

import pytest
from keyring.backends import fail

from agent.config import AgentSettings
from agent.core.clock import FakeClock
from agent.core.service import AgentService
from agent.errors import InvalidInput, Offline, ServerRefused
from agent.vault.store import MachineKeyStore
from pospal_protocol.fingerprint import Component, Fingerprint
from tests.agent.fake_cloud import DAY, FakeCloud

FP = Fingerprint(
    (
        Component("machine_id", True, "a" * 64),
        Component("disk_serial", True, "b" * 64),
        Component("mac", True, "c" * 64),
    )
)


class Rig:
    """A FakeCloud, a FakeClock and a data dir; `service()` starts (or restarts) an agent on them."""

    def __init__(self, tmp_path):
        self.tmp = tmp_path
        self.clock = FakeClock(datetime(2026, 3, 1, 12, tzinfo=UTC))
        self.cloud = FakeCloud(self.clock)
        self.jwks = self.cloud.write_jwks(tmp_path / "trusted.json")
        self.fp = FP

    def service(self, **kw) -> AgentService:
        settings = AgentSettings(
            server_url="http://fake.invalid",
            agent_port=7421,
            data_dir=self.tmp / "data",
            trusted_keys_path=self.jwks,
        )
        return AgentService(
            settings,
            clock=self.clock,
            transport=self.cloud,
            fingerprinter=kw.pop("fingerprinter", lambda: self.fp),
            key_store=MachineKeyStore(self.tmp / "data", backend=fail.Keyring()),
            terminal_name="Bar 1",
            **kw,
        )


@pytest.fixture
def rig(tmp_path):
    return Rig(tmp_path)


def activated(rig) -> AgentService:
    svc = rig.service()
    svc.request_code("owner@cafe.example", "activate")
    return svc, svc.activate("owner@cafe.example", rig.cloud.codes["owner@cafe.example"])


def test_a_fresh_agent_is_license_missing_and_does_not_call_the_server(rig):
    svc = rig.service()
    assert svc.status().license_state == "license_missing" and not svc.status().licensed
    assert svc.engine.run_due().skipped
    assert sum(rig.cloud.calls.values()) == 0


def test_trial_starts_and_survives_a_restart_without_the_network(rig):
    svc = rig.service()
    status = svc.start_trial()
    assert (status.license_state, status.licensed) == ("trial_active", True)
    assert (status.valid_until - rig.clock.now()).days == 30
    assert status.terminal_name == "Bar 1" and status.machine_id.startswith("m_")
    rig.cloud.online = False
    again = rig.service()
    assert again.status().license_state == "trial_active"
    assert again.status().machine_id == status.machine_id


def test_offline_first_run_gets_a_provisional_trial_then_the_server_decides(rig):
    rig.cloud.online = False
    svc = rig.service()
    status = svc.start_trial()
    assert (status.license_state, status.reason, status.days_left) == ("trial_active", "provisional_trial", 3)
    rig.clock.advance(DAY)
    assert svc.refresh_status().days_left == 2
    rig.cloud.online = True
    rig.clock.advance(svc.engine.seconds_until_due())
    assert svc.engine.run_due().ok
    status = svc.status()
    assert (status.license_state, status.reason) == ("trial_active", "trial")
    # The server's first-seen date (here: the provisional start it was told) sets the trial end.
    assert status.valid_until == datetime(2026, 3, 31, 12, tzinfo=UTC)
    assert rig.cloud.calls["trials"] == 2  # the offline attempt, then the one at the first sync


def test_a_trial_email_reaches_the_server_with_the_language(rig):
    svc = rig.service()
    assert svc.start_trial(" Owner@Cafe.GR ").license_state == "trial_active"
    assert rig.cloud.trial_bodies[-1]["email"] == "owner@cafe.gr"
    assert rig.cloud.trial_bodies[-1]["locale"] == svc.language


def test_a_trial_email_given_offline_is_sent_when_the_provisional_trial_is_confirmed(rig):
    rig.cloud.online = False
    svc = rig.service()
    assert svc.start_trial("owner@cafe.gr").reason == "provisional_trial"
    rig.cloud.online = True
    restarted = rig.service()  # the address survives a restart with the provisional trial
    rig.clock.advance(restarted.engine.seconds_until_due())
    assert restarted.engine.run_due().ok
    assert rig.cloud.calls["trials"] == 2  # the offline attempt, then the one at the first sync
    assert [b.get("email") for b in rig.cloud.trial_bodies] == ["owner@cafe.gr"]


@pytest.mark.parametrize("email", ["not an email", "owner@cafe", "@cafe.gr", "a b@cafe.gr"])
def test_a_malformed_trial_email_is_refused_before_anything_happens(rig, email):
    svc = rig.service()
    with pytest.raises(InvalidInput, match="not an email address"):
        svc.start_trial(email)
    assert rig.cloud.calls["trials"] == 0
    assert svc.status().license_state == "license_missing"


def test_provisional_trial_ends_after_three_days_offline(rig):
    rig.cloud.online = False
    svc = rig.service()
    svc.start_trial()
    rig.clock.advance(3 * DAY + 1)
    status = svc.refresh_status()
    assert (status.license_state, status.reason) == ("license_error", "offline_expired")
    assert status.licensed is False


def test_a_reinstall_cannot_reset_the_trial(rig):
    svc = rig.service()
    svc.start_trial()
    rig.clock.advance(31 * DAY)
    (rig.tmp / "data" / "state.json").unlink()
    (rig.tmp / "data" / "state.json.bak").unlink(missing_ok=True)
    status = rig.service().start_trial()
    assert (status.license_state, status.licensed) == ("trial_expired", False)


def test_activate_with_an_emailed_code_publishes_licensed_active(rig):
    svc = rig.service()
    seen = []
    svc.subscribe(seen.append)
    svc.request_code("owner@cafe.example", "activate")
    with pytest.raises(ServerRefused) as info:
        svc.activate(
            "owner@cafe.example", "000000" if rig.cloud.codes["owner@cafe.example"] != "000000" else "111111"
        )
    assert info.value.code == "bad_code" and svc.status().license_state == "license_missing"
    status = svc.activate("owner@cafe.example", rig.cloud.codes["owner@cafe.example"])
    assert (status.license_state, status.licensed, status.customer_email) == (
        "licensed_active",
        True,
        "owner@cafe.example",
    )
    assert seen and seen[-1].license_state == "licensed_active"


def test_checkout_waits_for_payment_and_activates(rig):
    svc = rig.service()
    checkout = svc.start_checkout("new@cafe.example", "Cafe Nero", 1)
    assert checkout.url == "http://sandbox.invalid/checkout/cs_1"
    threading.Timer(0.05, rig.cloud.pay, args=(checkout.checkout_id,)).start()
    status = svc.wait_checkout(checkout.checkout_id, threading.Event(), poll_s=0.01)
    assert status.license_state == "licensed_active" and status.customer_email == "new@cafe.example"


def test_waiting_on_a_checkout_returns_when_cancelled(rig):
    svc = rig.service()
    checkout = svc.start_checkout("new@cafe.example", "Cafe", 1)
    cancel = threading.Event()
    threading.Timer(0.05, cancel.set).start()
    assert svc.wait_checkout(checkout.checkout_id, cancel, poll_s=0.01).license_state == "license_missing"


def test_refresh_picks_up_a_rotated_key_and_keeps_it_across_restarts(rig):
    svc, _ = activated(rig)
    rig.cloud.rotate()
    assert svc.sync_now().license_state == "licensed_active"
    rig.cloud.pending_keyset = None
    again = rig.service()  # the new key is trusted only through the persisted signed update
    assert again.status().license_state == "licensed_active"
    saved = json.loads((rig.tmp / "data" / "state.json").read_text())["data"]
    assert len(saved["keyset_updates"]) == 1


def test_revocation_arrives_as_a_signed_token_at_the_next_sync(rig):
    svc, status = activated(rig)
    rig.cloud.licenses[next(iter(rig.cloud.licenses))]["status"] = "revoked"
    status = svc.sync_now()
    assert (status.license_state, status.reason, status.licensed) == ("license_error", "revoked", False)


def test_deactivate_frees_the_seat_and_forgets_the_license(rig):
    svc, status = activated(rig)
    mid = status.machine_id
    status = svc.deactivate()
    assert status.license_state == "license_missing"
    assert rig.cloud.machines[mid]["active"] is False
    saved = json.loads((rig.tmp / "data" / "state.json").read_text())["data"]
    assert "token" not in saved and "machine_id" not in saved
    with pytest.raises(ServerRefused):
        svc.deactivate()


def test_terminals_and_portal(rig):
    svc, status = activated(rig)
    terminals = svc.list_terminals()
    assert [(t.machine_id, t.this_machine, t.terminal_name) for t in terminals] == [
        (status.machine_id, True, "Bar 1")
    ]
    assert svc.portal_url() == "http://sandbox.invalid/portal"
    svc.remove_terminal(status.machine_id)
    assert svc.status().license_state == "license_missing"


def test_offline_sync_raises_and_keeps_the_license(rig):
    svc, _ = activated(rig)
    rig.cloud.online = False
    with pytest.raises(Offline):
        svc.sync_now()
    assert svc.status().license_state == "licensed_active"


def test_time_rules_grace_at_48h_and_offline_expired_after_14_days(rig):
    svc, _ = activated(rig)
    rig.cloud.online = False
    rig.clock.advance(47 * 3600)
    assert svc.refresh_status().license_state == "licensed_active"
    rig.clock.advance(3600)
    status = svc.refresh_status()
    assert (status.license_state, status.licensed) == ("licensed_grace", True)
    rig.clock.advance(11 * DAY)
    assert svc.refresh_status().license_state == "licensed_grace"
    rig.clock.advance(DAY)  # 14 days after the last sync
    status = svc.refresh_status()
    assert (status.license_state, status.reason) == ("license_error", "offline_expired")
    assert status.licensed is False


def test_clock_set_back_after_a_restart_is_a_rollback_until_the_next_sync(rig):
    svc, _ = activated(rig)
    svc.stop()
    rig.clock.shift_wall(-2 * DAY)
    rig.cloud.clock = FakeClock(rig.clock.now() + timedelta(days=2))  # the server's clock was not set back
    again = rig.service()
    status = again.status()
    assert (status.license_state, status.reason) == ("license_error", "clock_rollback")
    assert again.sync_now().license_state == "licensed_active"


def test_a_different_computer_is_machine_changed(rig):
    activated(rig)
    rig.fp = Fingerprint(
        (
            Component("machine_id", True, "a" * 64),
            Component("disk_serial", True, "d" * 64),
            Component("mac", True, "e" * 64),
        )
    )
    status = rig.service().status()
    assert (status.license_state, status.reason) == ("license_error", "machine_changed")


def test_one_replaced_part_still_matches(rig):
    activated(rig)
    rig.fp = Fingerprint(
        (
            Component("machine_id", True, "a" * 64),
            Component("disk_serial", True, "b" * 64),
            Component("mac", True, "e" * 64),
        )
    )
    assert rig.service().status().license_state == "licensed_active"


def test_a_tampered_cached_token_is_token_invalid(rig):
    activated(rig)
    path = rig.tmp / "data" / "state.json"
    doc = json.loads(path.read_text())
    head, payload, sig = doc["data"]["token"].split(".")
    doc["data"]["token"] = f"{head}.{payload}.{sig[:-4]}AAAA"
    path.write_text(json.dumps(doc))
    status = rig.service().status()
    assert (status.license_state, status.reason) == ("license_error", "token_invalid")


def test_a_garbage_cache_recovers_the_previous_version(rig):
    svc, _ = activated(rig)
    svc.sync_now()  # a second save, so a .bak exists
    (rig.tmp / "data" / "state.json").write_bytes(b"\x00garbage")
    again = rig.service()
    assert again.status().license_state == "licensed_active"
    assert again.diagnostics().extra["cache"] == "recovered"


def test_diagnostics_show_hashes_and_the_last_sync(rig):
    svc, _ = activated(rig)
    svc.sync_now()
    diag = svc.diagnostics()
    assert [c.name for c in diag.components] == ["machine_id", "disk_serial", "mac"]
    assert diag.last_sync_result.endswith(": ok") and "Bar 1" not in diag.support_report()


def test_a_slow_fingerprint_probe_does_not_delay_the_first_answer(rig):
    """Probing in the background: the first status uses the hashes cached at the last run, and a
    changed machine shows up as soon as the probe finishes."""
    activated(rig)
    release = threading.Event()
    changed = Fingerprint(
        (
            Component("machine_id", True, "d" * 64),
            Component("disk_serial", True, "e" * 64),
            Component("mac", True, "f" * 64),
        )
    )

    def slow_probe():
        assert release.wait(10)
        return changed

    svc = rig.service(probe_in_background=True, fingerprinter=slow_probe)
    assert svc.status().license_state == "licensed_active"  # answered from the cached hashes
    seen = threading.Event()
    svc.subscribe(lambda st: st.reason == "machine_changed" and seen.set())
    release.set()
    assert seen.wait(10)
    assert svc.status().reason == "machine_changed"


def test_after_a_trial_or_a_purchase_next_sync_is_the_real_next_time(rig):
    """Issue 27: next_sync stayed at the time the first (empty) sync had set, after a trial and after an
    activation; a token from the server is a sync, so the next one is a whole interval from then."""
    svc = rig.service()
    svc.engine.run_due()  # the first sync at start: nothing to sync yet
    before = svc.status().next_sync
    rig.clock.advance(3600)
    trial = svc.start_trial()
    assert trial.license_state == "trial_active"
    low, high = (rig.clock.now() + timedelta(seconds=s * svc._policy().sync_s) for s in (0.5, 1.5))
    assert trial.next_sync != before and low <= trial.next_sync <= high
    rig.clock.advance(3600)
    svc.request_code("owner@cafe.example", "activate")
    bought = svc.activate("owner@cafe.example", rig.cloud.codes["owner@cafe.example"])
    assert bought.license_state == "licensed_active"
    assert bought.next_sync > trial.next_sync and bought.next_sync >= rig.clock.now() + timedelta(
        seconds=0.5 * svc._policy().sync_s
    )


def test_two_tills_made_from_one_image_both_called_vm_get_names_the_owner_tells_apart(tmp_path, monkeypatch):
    """Issue 27: two tills both showed as `vm` (their host name) in the owner's list. The default name
    carries a tag of each PC's own machine key, so they differ from the first activation on."""
    import agent.core.service as service_mod
    from pospal_protocol.offline import read_request

    monkeypatch.setattr(service_mod.socket, "gethostname", lambda: "vm")
    names = []
    for till in ("a", "b"):
        (tmp_path / till).mkdir()
        rig = Rig(tmp_path / till)
        svc = rig.service()
        svc._explicit_terminal = None  # the Rig names its till; a real one starts with none
        assert svc.start_trial().license_state == "trial_active"
        (machine,) = rig.cloud.machines.values()
        names.append(machine["terminal"])
        assert svc.status().terminal_name == machine["terminal"]
    assert names[0] != names[1] and all(n.startswith("vm-") and len(n) == 7 for n in names)
    # A till activated by file names itself the same way in its request file.
    (tmp_path / "c").mkdir()
    svc = Rig(tmp_path / "c").service()
    svc._explicit_terminal = None
    name = read_request(svc.offline_request()).terminal_name
    assert name is not None and name.startswith("vm-") and name not in names


def test_a_till_is_named_before_activation_and_renamed_later_through_the_server(rig):
    """Set at activation, renamed later from this PC, and renamed by the owner from elsewhere: the
    server's name is the one every till shows."""
    svc = rig.service()
    assert svc.rename_terminal("  Bar  ") == []  # not activated: kept here, sent with the activation
    assert svc.status().terminal_name == "Bar"
    svc.request_code("owner@cafe.example", "activate")
    status = svc.activate("owner@cafe.example", rig.cloud.codes["owner@cafe.example"])
    machine_id = status.machine_id
    assert rig.cloud.machines[machine_id]["terminal"] == "Bar"
    terminals = svc.rename_terminal("Terrace")
    assert [t.terminal_name for t in terminals] == ["Terrace"] and svc.status().terminal_name == "Terrace"
    rig.cloud.machines[machine_id]["terminal"] = "Kitchen"  # the owner renamed it from another PC
    svc.sync_now()
    assert svc.status().terminal_name == "Kitchen"
    for bad in ("", "   ", "Bar\x1b[31m", "x" * 101):
        with pytest.raises(InvalidInput):
            svc.rename_terminal(bad)
    rig.cloud.online = False
    with pytest.raises(Offline):  # renaming an activated till needs the server
        svc.rename_terminal("Patio")
    assert svc.status().terminal_name == "Kitchen"
