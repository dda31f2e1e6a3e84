"""The owner's authority and seats from the agent's side, against the real server app on a real port.

Two tills (two data dirs, two machine keys) of one restaurant: the second cannot buy or open billing on
the owner's e-mail until the owner proves it with a code; it then adds itself to the subscription
(price first, quantity +1) instead of buying a second one; lowering the quantity puts the least recently
seen till in `license_error`/`seats_exceeded`.
"""

from __future__ import annotations

import random
import secrets
from datetime import UTC, datetime

import pytest
from keyring.backends import fail
from sqlalchemy import select

from agent.cloud.transport import HttpTransport
from agent.config import AgentSettings
from agent.core.clock import FakeClock
from agent.core.service import AgentService
from agent.errors import ServerRefused
from agent.vault.store import MachineKeyStore
from pospal_protocol.fingerprint import Component, Fingerprint
from tests.agent.conftest import buy, emailed_code, write_trusted_keys

EMAIL = "owner@taverna.example"


class Restaurant:
    """The in-process server and tills that share one FakeClock."""

    def __init__(self, inproc_server, tmp_path):
        self.clock = FakeClock(datetime(2026, 4, 1, 9, tzinfo=UTC))
        self.server = inproc_server(self.clock)
        self.tmp = tmp_path
        self.keys = write_trusted_keys(self.server.url, tmp_path / "trusted.json")

    def till(self, name: str) -> AgentService:
        data = self.tmp / name
        fp = Fingerprint(
            tuple(
                Component(n, True, secrets.token_hex(32))
                for n in ("machine_id", "product_uuid", "disk_serial", "mac")
            )
        )
        settings = AgentSettings(
            server_url=self.server.url, agent_port=7421, data_dir=data, trusted_keys_path=self.keys
        )
        return AgentService(
            settings,
            clock=self.clock,
            transport=HttpTransport(self.server.url, self.clock),
            fingerprinter=lambda: fp,
            key_store=MachineKeyStore(data, backend=fail.Keyring()),
            rng=random.Random(7),
            terminal_name=name,
        )

    def code(self) -> str:
        return emailed_code(self.server.env["POSPAL_DATABASE_URL"], EMAIL)

    def set_quantity(self, quantity: int) -> None:
        """The owner changes the quantity in the portal; the webhook's sync follows."""
        from server.billing.sync import WebhookContext, sync_subscription
        from server.models import Subscription

        svc = self.server.app.state.services
        with svc.db.transaction() as session:
            provider_id = session.scalars(select(Subscription.provider_subscription_id)).one()
        svc.billing.update_quantity(provider_id, quantity, f"e2e-{quantity}")
        ctx = WebhookContext(clock=svc.clock, public_url=self.server.url, system_admin_email=None)
        with svc.db.transaction() as session:
            sync_subscription(session, svc.billing, provider_id, ctx, svc.clock.now())


@pytest.fixture
def restaurant(inproc_server, tmp_path):
    return Restaurant(inproc_server, tmp_path)


def test_second_till_adds_itself_to_the_subscription_only_with_the_owners_code(restaurant):
    bar = restaurant.till("Bar")
    assert buy(bar, EMAIL, "Taverna").license_state == "licensed_active"
    kitchen = restaurant.till("Kitchen")
    with pytest.raises(ServerRefused) as refused:
        kitchen.start_checkout(EMAIL, "Renamed by a stranger")
    assert refused.value.code == "owner_proof_required"
    kitchen.request_code(EMAIL, "owner")
    kitchen.prove_owner(EMAIL, restaurant.code())
    with pytest.raises(ServerRefused) as refused:
        kitchen.start_checkout(EMAIL, "Taverna")
    assert refused.value.code == "subscription_exists"  # never a second subscription unasked
    price = kitchen.add_terminal(EMAIL)
    assert (price.quantity_now, price.quantity_new, price.currency) == (1, 2, "eur") and price.amount_due > 0
    kitchen.add_terminal(EMAIL, confirm=True, expected_quantity=price.quantity_new)
    status = kitchen.status()
    assert (status.license_state, status.seats) == ("licensed_active", 2)
    # Billing from the bar's till needs the owner too; the kitchen's proof does not carry over.
    with pytest.raises(ServerRefused) as refused:
        bar.portal_url()
    assert refused.value.code == "owner_proof_required"
    bar.request_code(EMAIL, "owner")
    bar.prove_owner(EMAIL, restaurant.code())
    assert "/sandbox/portal/" in bar.portal_url()


def test_lowering_the_quantity_stops_the_least_recently_seen_till_with_its_own_message(restaurant):
    bar = restaurant.till("Bar")
    buy(bar, EMAIL, "Taverna")
    kitchen = restaurant.till("Kitchen")
    kitchen.request_code(EMAIL, "owner")
    kitchen.prove_owner(EMAIL, restaurant.code())
    kitchen.add_terminal(EMAIL, confirm=True, expected_quantity=2)
    restaurant.clock.advance(600)
    kitchen.sync_now()  # the kitchen was seen last
    restaurant.set_quantity(1)
    stopped = bar.sync_now()
    assert (stopped.license_state, stopped.reason, stopped.licensed) == (
        "license_error",
        "seats_exceeded",
        False,
    )
    assert "number of terminals" in stopped.message
    assert kitchen.sync_now().license_state == "licensed_active"
    restaurant.set_quantity(2)
    assert bar.sync_now().license_state == "licensed_active"
