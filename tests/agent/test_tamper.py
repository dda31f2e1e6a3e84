"""The person at the till cannot replay, edit or wipe their way to a license (issue 12).

Each attack of the issue has a test named after it. Those that need days to pass run an `AgentService` on
a FakeClock against FakeCloud; those that a real process shows just as well run `pospal-agent` processes.
(The environment trust anchor is tests/agent/test_flavour.py.)
"""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from keyring.backends import fail

from agent.config import AgentSettings
from agent.core.clock import FakeClock
from agent.core.service import AgentService
from agent.errors import Offline, TokenInvalid
from agent.vault.marks import MemoryMarkStore
from agent.vault.seal import Seal, seal_key, seal_state
from agent.vault.store import MachineKeyStore
from pospal_protocol.fingerprint import Component, Fingerprint
from tests.agent.conftest import admin, pay, write_trusted_keys
from tests.agent.fake_cloud import DAY, FakeCloud
from tests.agent.rogue_server import RogueServer
from tests.server.conftest import free_port

FP = Fingerprint(
    (
        Component("machine_id", True, "a" * 64),
        Component("disk_serial", True, "b" * 64),
        Component("mac", True, "c" * 64),
    )
)


class Rig:
    """FakeCloud + FakeClock + a data dir; marks in the development place (next to the data dir)."""

    def __init__(self, tmp_path, marks=None):
        self.tmp = tmp_path
        self.clock = FakeClock(datetime(2026, 3, 1, 12, tzinfo=UTC))
        self.cloud = FakeCloud(self.clock)
        self.jwks = self.cloud.write_jwks(tmp_path / "trusted.json")
        self.marks = marks
        self.data = tmp_path / "data"

    def service(self) -> AgentService:
        settings = AgentSettings(
            server_url="http://fake.invalid", data_dir=self.data, trusted_keys_path=self.jwks
        )
        return AgentService(
            settings,
            clock=self.clock,
            transport=self.cloud,
            fingerprinter=lambda: FP,
            key_store=MachineKeyStore(self.data, backend=fail.Keyring()),
            terminal_name="Bar 1",
            marks=self.marks,
        )

    @property
    def state_path(self):
        return self.data / "state.json"

    def edit_state(self, **fields: Any) -> None:
        doc = json.loads(self.state_path.read_text())
        doc["data"].update(fields)
        self.state_path.write_text(json.dumps(doc))

    def seal(self) -> Seal:
        return Seal(seal_key(MachineKeyStore(self.data, backend=fail.Keyring()).load()))

    def replay(self, answer: dict) -> None:
        """From now on the "server" answers every refresh and trial with `answer` (an old genuine one)."""
        self.cloud.refresh = lambda identity, body: dict(answer)
        self.cloud.start_trial = lambda identity, body: dict(answer)


@pytest.fixture
def rig(tmp_path):
    return Rig(tmp_path)


def _sync_days(rig, svc, days):
    for _ in range(days):
        rig.clock.advance(DAY)
        svc.sync_now()


# ----------------------------------------------------------------------------------- replayed tokens


def test_replayed_day1_token_refused(rig, caplog):
    svc = rig.service()
    assert svc.start_trial().license_state == "trial_active"
    day1 = rig.cloud.answers[-1]
    _sync_days(rig, svc, 31)
    assert svc.status().license_state == "trial_expired"
    before = svc.trusted_clock.now()
    rig.replay(day1)
    with pytest.raises(TokenInvalid) as info:
        svc.sync_now()
    assert info.value.reason == "replay"
    assert "refused a token from the server" in caplog.text
    assert svc.status().license_state == "trial_expired"
    assert svc.trusted_clock.now() >= before  # the clock was not anchored back to day 1
    assert rig.service().status().license_state == "trial_expired"


def test_a_fresh_answer_older_than_the_newest_token_is_refused(rig):
    svc = rig.service()
    svc.start_trial()
    _sync_days(rig, svc, 2)
    rig.cloud.clock = FakeClock(rig.clock.now() - timedelta(days=1))  # a server with a day-old token
    with pytest.raises(TokenInvalid) as info:
        svc.sync_now()
    assert info.value.reason == "stale"


def test_revoked_license_not_revived_by_replay(rig):
    svc = rig.service()
    svc.request_code("owner@cafe.example", "activate")
    assert svc.activate("owner@cafe.example", rig.cloud.codes["owner@cafe.example"]).licensed
    active_answer = rig.cloud.answers[-1]
    rig.clock.advance(DAY)
    rig.cloud.licenses[next(iter(rig.cloud.licenses))]["status"] = "revoked"
    assert svc.sync_now().reason == "revoked"
    rig.replay(active_answer)
    rig.clock.shift_wall(10 * DAY)  # the PC clock moved forward, as in the issue
    with pytest.raises(TokenInvalid):
        svc.sync_now()
    assert (svc.status().reason, svc.status().licensed) == ("revoked", False)
    assert rig.service().status().reason == "revoked"


def test_replayed_day1_token_refused_by_a_real_agent(real_server, agents, tmp_path):
    """A real agent process pointed at a local server that answers every refresh with a saved token."""
    keys = write_trusted_keys(real_server.url, tmp_path / "trusted.json")
    agent = agents(real_server.url, keys)
    assert agent.cli("trial").returncode == 0
    saved = json.loads((agent.data_dir / "state.json").read_text())["data"]["token"]
    with RogueServer(lambda path, nonce: {"token": saved}) as rogue:
        agent.env["POSPAL_SERVER_URL"] = rogue.url
        agent.start()
        sync = agent.cli("sync")
        assert rogue.requests and sync.returncode != 0
        assert agent.license()["license_state"] == "trial_active"
    agent.stop()
    assert (
        "refused a token from the server (replay"
        in (agent.data_dir / "agent.log").read_text() + agent.log_path.read_text()
    )


def test_revoked_license_not_revived_by_replay_in_a_real_agent(real_server, agents, tmp_path):
    """Buy, save the active token, get revoked, then serve the saved token from a local server."""
    keys = write_trusted_keys(real_server.url, tmp_path / "trusted.json")
    agent = agents(real_server.url, keys).start()
    buyer = agent.popen_cli("buy", "owner@replay.example", "--restaurant", "Cafe", "--poll", "0.2")
    pay(buyer.stdout.readline().strip())
    buyer.communicate(timeout=60)
    lic = agent.license()
    assert lic["license_state"] == "licensed_active"
    active = json.loads((agent.data_dir / "state.json").read_text())["data"]["token"]
    license_id = admin(real_server, "machine", "show", lic["machine_id"])["machine"]["license_id"]
    admin(real_server, "license", "revoke", license_id, "--reason", "replay test")
    assert agent.cli("sync").returncode == 0
    assert agent.license()["reason"] == "revoked"
    agent.stop()
    with RogueServer(lambda path, nonce: {"token": active}) as rogue:
        agent.env["POSPAL_SERVER_URL"] = rogue.url
        agent.start()
        assert agent.cli("sync").returncode != 0 and rogue.requests
        body = agent.license()
    assert (body["reason"], body["licensed"]) == ("revoked", False)


# -------------------------------------------------------------------------------------- edited state


def test_edited_provisional_trial_start_is_invalid(rig):
    rig.cloud.online = False
    svc = rig.service()
    first = svc.start_trial()
    assert first.reason == "provisional_trial"
    svc.stop()
    started = json.loads(rig.state_path.read_text())["data"]["provisional_trial_started"]
    rig.edit_state(provisional_trial_started=started + 365 * DAY)
    assert rig.service().status().licensed is False  # the seal broke: nothing licensing is believed
    # Even re-sealed with this PC's own key (someone who dug the key out), the start the marks recorded
    # wins: the same 3 days, not a day more.
    doc = json.loads(rig.state_path.read_text())
    doc["data"] = seal_state(doc["data"], rig.seal())
    rig.state_path.write_text(json.dumps(doc))
    assert rig.service().status().valid_until == first.valid_until
    # And with the marks gone as well, a start in the future is simply invalid.
    (rig.tmp / "data.marks.json").unlink()
    status = rig.service().status()
    assert (status.license_state, status.licensed) == ("license_error", False)


def test_edited_provisional_trial_start_is_invalid_in_a_real_agent(agents, tmp_path):
    agent = agents(f"http://127.0.0.1:{free_port()}")  # nothing listens there: offline
    assert agent.cli("trial").returncode == 0
    assert json.loads(agent.cli("status", "--json").stdout)["reason"] == "provisional_trial"
    state = agent.data_dir / "state.json"
    doc = json.loads(state.read_text())
    doc["data"]["provisional_trial_started"] += 365 * DAY
    state.write_text(json.dumps(doc))
    agent.start()
    body = agent.license()
    assert body["licensed"] is False and (body["days_left"] or 0) <= 3


def test_edited_high_water_does_not_undo_rollback(rig):
    svc = rig.service()
    svc.request_code("owner@cafe.example", "activate")
    svc.activate("owner@cafe.example", rig.cloud.codes["owner@cafe.example"])
    svc.stop()
    rig.clock.shift_wall(-2 * DAY)
    assert rig.service().status().reason == "clock_rollback"
    rig.edit_state(high_water=int(rig.clock.now().timestamp()), clock_rolled_back=False)
    status = rig.service().status()
    assert (status.reason, status.licensed) == ("clock_rollback", False)
    # The marks outside the data dir are what remembered it: with them gone too, the edited state is
    # still unsealed, so its token is not believed either.
    (rig.tmp / "data.marks.json").unlink()
    assert rig.service().status().licensed is False


def test_restored_old_state_file_is_refused(rig):
    svc = rig.service()
    svc.request_code("owner@cafe.example", "activate")
    svc.activate("owner@cafe.example", rig.cloud.codes["owner@cafe.example"])
    old = rig.state_path.read_bytes()  # a genuine, sealed copy while the license was active
    rig.clock.advance(DAY)
    rig.cloud.licenses[next(iter(rig.cloud.licenses))]["status"] = "revoked"
    assert svc.sync_now().reason == "revoked"
    svc.stop()
    rig.state_path.write_bytes(old)
    status = rig.service().status()
    assert (status.reason, status.licensed) == ("token_invalid", False)  # older than the newest token seen


ISSUE_TYPE_CONFUSION = {"keyset_updates": 5, "high_water": 1e308, "last_sync": -1e20}


def test_type_confused_state_does_not_stop_the_agent(agents, tmp_path):
    agent = agents(f"http://127.0.0.1:{free_port()}")
    agent.data_dir.mkdir(parents=True)
    (agent.data_dir / "state.json").write_text(json.dumps({"format": 1, "data": ISSUE_TYPE_CONFUSION}))
    agent.start()
    body = agent.license()
    assert (body["license_state"], body["licensed"]) == ("license_missing", False)
    assert agent.cli("status", "--json").returncode == 1  # not licensed, but answering


def test_type_confused_state_sealed_with_the_right_key_still_starts(rig):
    svc = rig.service()
    svc.start_trial()
    svc.stop()
    doc = json.loads(rig.state_path.read_text())
    doc["data"] = seal_state(
        {
            **doc["data"],
            **ISSUE_TYPE_CONFUSION,
            "fingerprint": [1],
            "checkout": 7,
            "clock_rolled_back": "no",
            "token_iat": "x",
        },
        rig.seal(),
    )
    rig.state_path.write_text(json.dumps(doc))
    again = rig.service()
    assert again.load_status.value == "resync_needed"
    assert again.status().license_state == "trial_active"  # the token itself was fine


# ------------------------------------------------------------------------------------ wiped data dir


def test_wiped_data_dir_gives_no_new_provisional_trial(rig):
    rig.cloud.online = False
    svc = rig.service()
    first = svc.start_trial()
    assert first.reason == "provisional_trial"
    svc.stop()
    rig.clock.advance(DAY)
    shutil.rmtree(rig.data)  # the machine key (a file here) goes with it
    again = rig.service()
    assert again.status().license_state == "license_missing"
    with pytest.raises(Offline):
        again.start_trial()
    assert again.status().license_state == "license_missing"


def test_wiped_state_resumes_the_same_provisional_trial_never_a_new_one(rig):
    rig.cloud.online = False
    svc = rig.service()
    first = svc.start_trial()
    svc.stop()
    rig.clock.advance(DAY)
    rig.state_path.unlink()
    (rig.data / "state.json.bak").unlink(missing_ok=True)
    resumed = rig.service().start_trial()
    assert (resumed.reason, resumed.valid_until, resumed.days_left) == (
        "provisional_trial",
        first.valid_until,
        2,
    )
    rig.clock.advance(3 * DAY)
    rig.state_path.unlink()
    (rig.data / "state.json.bak").unlink(missing_ok=True)
    late = rig.service()
    with pytest.raises(Offline):
        late.start_trial()
    assert late.status().licensed is False


@pytest.mark.parametrize("wipe", ["data dir", "state only"])
def test_an_expired_trial_and_a_wiped_data_dir_offline_give_no_provisional_trial(rig, wipe):
    """Issue 27: a server trial ran out, the data dir was wiped, the server is unreachable: the marks
    remember that this PC held a server token, so there are no 3 more days."""
    svc = rig.service()
    assert svc.start_trial().license_state == "trial_active"
    _sync_days(rig, svc, 1)
    svc.stop()
    rig.clock.advance(40 * DAY)
    rig.cloud.online = False
    if wipe == "data dir":
        shutil.rmtree(rig.data)  # the machine key (a file here) goes with it
    else:
        rig.state_path.unlink()
        (rig.data / "state.json.bak").unlink(missing_ok=True)
    for _ in range(2):  # and again after a restart that rewrote the marks under the new key
        again = rig.service()
        with pytest.raises(Offline):
            again.start_trial()
        assert again.status().licensed is False
        again.stop()


def test_wiped_data_dir_gives_no_new_provisional_trial_in_a_real_agent(agents):
    agent = agents(f"http://127.0.0.1:{free_port()}")
    assert agent.cli("trial").returncode == 0
    first = json.loads(agent.cli("status", "--json").stdout)
    shutil.rmtree(agent.data_dir)
    again = agent.cli("trial")
    status = json.loads(agent.cli("status", "--json").stdout)
    # Never a new 3 days: either no trial, or the very same one (when the machine key survived in a keyring).
    if status["licensed"]:
        assert status["valid_until"] == first["valid_until"]
    else:
        assert again.returncode != 0 and status["license_state"] == "license_missing"


# ------------------------------------------------------------------------------------ property test

_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
_FIELDS = [
    "token",
    "machine_id",
    "last_sync",
    "provisional_trial_started",
    "high_water",
    "token_iat",
    "clock_rolled_back",
    "terminal_name",
    "language",
    "trial_email",
    "fingerprint",
    "keyset_updates",
    "checkout",
    "key_anchor",
    "seal",
    "offline_license",
]


def _licence_value(status) -> tuple:
    return (status.licensed, status.valid_until, status.grace_until)


# Times near the genuine ones, where an edit could matter.
_times = st.integers(min_value=1_772_300_000, max_value=1_773_300_000)
_START = int(datetime(2026, 3, 1, 12, tzinfo=UTC).timestamp())  # the rigs' FakeClock start


@pytest.fixture(scope="module", params=["trial_day_10", "provisional_expired"])
def genuine(request, tmp_path_factory):
    """A genuine state with its marks and machine key: 10 days into a trial (licensed), or a provisional
    trial that ran out offline (not licensed, so any licensed result would be an extension)."""
    tmp = tmp_path_factory.mktemp(request.param)
    marks = MemoryMarkStore()
    rig = Rig(tmp, marks=marks)
    svc = rig.service()
    if request.param == "provisional_expired":
        rig.cloud.online = False
        svc.start_trial()
        rig.clock.advance(4 * DAY)
        svc.refresh_status()
    else:
        svc.start_trial()
        _sync_days(rig, svc, 10)
    svc.stop()
    return rig, json.loads(rig.state_path.read_text()), marks.text, _licence_value(rig.service().status())


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    edits=st.dictionaries(
        st.one_of(st.sampled_from(_FIELDS), st.sampled_from(_FIELDS), st.text(max_size=6)),
        st.one_of(_times, _json),
        min_size=1,
        max_size=6,
    ),
    reseal=st.booleans(),
)
# The issue's edits, always tried: a provisional start moved to "yesterday", the rollback latch undone.
@example(edits={"provisional_trial_started": _START + 3 * DAY}, reseal=False)
@example(edits={"high_water": _START, "clock_rolled_back": False, "token_iat": 0}, reseal=False)
@example(edits=dict(ISSUE_TYPE_CONFUSION), reseal=True)
def test_arbitrary_state_json_never_stops_the_agent_nor_licenses_more(genuine, edits, reseal):
    rig, state, marks_text, base = genuine
    doc = {"format": 1, "data": {**state["data"], **edits}}
    if reseal:  # someone who dug the machine key out: the type checks still keep the agent up
        doc["data"] = seal_state(doc["data"], rig.seal())
    rig.state_path.write_text(json.dumps(doc))
    (rig.data / "state.json.bak").unlink(missing_ok=True)
    rig.marks.text = marks_text
    status = rig.service().status()  # must not raise
    assert status.license_state
    if not reseal:
        licensed, valid_until, grace_until = _licence_value(status)
        if licensed:
            assert base[0] and valid_until <= base[1] and grace_until <= base[2]


def test_the_property_test_bounds_are_real(genuine):
    """One genuine state is licensed, the other not, so "never more licensed" bounds something."""
    rig, _state, _marks, base = genuine
    assert base[0] is (rig.cloud.online is True)
