"""PRODUCT.md's time rules, in process, with a FakeClock, against the real server app on a real port.

The server runs in this process (uvicorn in a thread) with its clock following the agent's FakeClock, so
days pass for both at once; the agent talks to it over HTTP through the real HttpTransport.
"""

from __future__ import annotations

import json
import random
import secrets
from datetime import UTC, datetime

import pytest
from keyring.backends import fail

from agent.cloud.transport import HttpTransport
from agent.config import AgentSettings
from agent.core.clock import FakeClock
from agent.core.service import AgentService
from agent.vault.store import MachineKeyStore
from pospal_protocol.fingerprint import Component, Fingerprint
from tests.agent.conftest import buy, pay, subscription_action, write_trusted_keys
from tests.agent.tokenkit import Authority

HOUR = 3600
DAY = 24 * HOUR


class World:
    """One terminal (AgentService) and the in-process server sharing a FakeClock."""

    def __init__(self, inproc_server, tmp_path):
        self.clock = FakeClock(datetime(2026, 2, 2, 9, tzinfo=UTC))
        self.server = inproc_server(self.clock)
        self.tmp = tmp_path
        self.keys = write_trusted_keys(self.server.url, tmp_path / "trusted.json")
        self.authority = Authority()  # the publisher's offline key-set keys, in the agent's anchors
        self.keys.write_text(json.dumps(self.authority.anchors(json.loads(self.keys.read_text()))))
        self.fp = Fingerprint(
            tuple(
                Component(n, True, secrets.token_hex(32))
                for n in ("machine_id", "product_uuid", "disk_serial", "mac")
            )
        )
        self.transport = HttpTransport(self.server.url, self.clock)
        self.checkout_url: str | None = None

    def service(self) -> AgentService:
        settings = AgentSettings(
            server_url=self.server.url,
            agent_port=7421,
            data_dir=self.tmp / "agent",
            trusted_keys_path=self.keys,
        )
        return AgentService(
            settings,
            clock=self.clock,
            transport=self.transport,
            fingerprinter=lambda: self.fp,
            key_store=MachineKeyStore(self.tmp / "agent", backend=fail.Keyring()),
            rng=random.Random(4),
            terminal_name="Till 1",
        )

    def _pay(self, url: str) -> None:
        self.checkout_url = url
        pay(url)  # the buyer presses "Pay" on the sandbox checkout page

    def bought(self) -> AgentService:
        svc = self.service()
        status = buy(svc, f"owner-{secrets.token_hex(3)}@cafe.example", "Cafe", self._pay)
        assert status.license_state == "licensed_active", status
        return svc


@pytest.fixture
def world(inproc_server, tmp_path):
    return World(inproc_server, tmp_path)


def first_hours(svc: AgentService, clock: FakeClock, hours: int) -> dict[str, int]:
    """Step an hour at a time (running due syncs); the first hour each (state/reason) was seen."""
    seen: dict[str, int] = {}
    for hour in range(1, hours + 1):
        clock.advance(HOUR)
        svc.engine.run_due()
        status = svc.refresh_status()
        seen.setdefault(f"{status.license_state}/{status.reason}/{status.licensed}", hour)
    return seen


def test_offline_active_then_grace_at_48h_then_offline_expired_after_14_days(world):
    svc = world.bought()
    world.server.stop()  # the internet goes away
    seen = first_hours(svc, world.clock, 15 * 24)
    assert seen["licensed_active/active/True"] == 1
    assert seen["licensed_grace/offline_grace/True"] == 48
    assert seen["license_error/offline_expired/False"] == 14 * 24
    assert len(seen) == 3
    assert svc.engine.failures > 0  # it kept trying, with backoff, all along


def test_failed_payment_keeps_orders_going_until_day_7(world):
    svc = world.bought()
    subscription_action(world.checkout_url, "fail_renewal")
    status = svc.sync_now()
    assert (status.license_state, status.licensed) == ("licensed_renewal_required", True)
    licensed_by_day = {}
    for day in range(1, 9):
        world.clock.advance(DAY)
        assert svc.engine.run_due() is not None  # the server is up: a sync ran that day
        status = svc.refresh_status()
        licensed_by_day[day] = (status.license_state, status.licensed)
    assert all(licensed_by_day[d] == ("licensed_renewal_required", True) for d in range(1, 7))
    assert licensed_by_day[7] == ("licensed_renewal_required", False)
    assert licensed_by_day[8] == ("licensed_renewal_required", False)


def test_clock_set_back_two_days_is_a_rollback_until_the_next_sync(world):
    svc = world.bought()
    svc.stop()
    world.clock.shift_wall(-2 * DAY)  # the owner sets the PC clock back, then the agent restarts
    restarted = world.service()
    status = restarted.status()
    assert (status.license_state, status.reason) == ("license_error", "clock_rollback")
    assert status.licensed is False
    status = restarted.sync_now()  # signed with a 2-day-old timestamp: re-signed with the server's time
    assert (status.license_state, status.licensed) == ("licensed_active", True)
    assert world.transport.skew_s == pytest.approx(2 * DAY, abs=60)


def test_a_simulated_month_makes_at_most_five_sync_requests_a_day(world):
    svc = world.bought()
    before = sum(world.transport.requests_made.values())
    elapsed = 0.0
    while elapsed < 30 * DAY:
        step = min(svc.engine.seconds_until_due(), 30 * DAY - elapsed) or 1.0
        world.clock.advance(step)
        elapsed += step
        svc.engine.run_due()
    requests = sum(world.transport.requests_made.values()) - before
    per_day = requests / 30
    print(f"30-day month: {requests} requests, {per_day:.2f}/day")
    assert per_day <= 5
    assert svc.status().license_state == "licensed_active"


def test_refresh_learns_a_rotated_server_key_and_keeps_trusting_it(world):
    """Key-set updates: the operator rotates and publishes the authority's key set in the key directory;
    the next refresh carries it."""
    svc = world.bought()
    # Rotate through the running app's own key store (a rotation from another process, such as
    # `pospal-server keys rotate`, reaches a running instance within its 10 s key cache).
    services = world.server.app.state.services
    with services.db.transaction() as session:
        new_kid, _ = services.keys.rotate(session, world.clock.now())
        published = world.authority.keyset(1, services.keys.jwks(session, world.clock.now()))
    (services.keys.key_dir / "keyset.json").write_text(published)
    world.clock.advance(svc.engine.seconds_until_due())
    assert svc.engine.run_due().ok
    assert svc._claims.kid == new_kid and svc.status().license_state == "licensed_active"
    svc.stop()
    # After a restart the new key is trusted again only through the persisted, re-verified update.
    restarted = world.service()
    assert restarted.status().license_state == "licensed_active"
    assert new_kid in restarted.diagnostics().extra["trusted_kids"]
