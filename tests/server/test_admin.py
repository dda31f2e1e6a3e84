"""`pospal-server admin` output (server/admin.py): what reaches the operator's terminal."""

from __future__ import annotations

import json

from server import cli
from server.models import Customer, Machine

HOSTILE_NAME = "Cafe \u009b2J\u202eevil\x1b[31m"


def test_admin_customer_show_wrote_raw_c1_and_bidi_characters_to_the_operators_terminal(
    server_env, monkeypatch, client, seed_subscription, login_code, make_machine, capsys, database
):
    for name, value in server_env.items():
        monkeypatch.setenv(name, value)
    customer_id, _, _ = seed_subscription(email="owner@cafe.gr", seats=1)
    machine = make_machine()
    assert machine.activate(client, "owner@cafe.gr", login_code(client, "owner@cafe.gr")).status_code == 200
    with database.transaction() as session:  # stored before the input rule existed
        session.get(Customer, customer_id).name = HOSTILE_NAME
        session.get(Machine, machine.machine_id).terminal_name = "Till \u202e1"
    assert cli.main(["admin", "customer", "show", "owner@cafe.gr"]) == 0
    out = capsys.readouterr().out
    assert not any(ch in out for ch in "\u009b\u202e\x1b")
    shown = json.loads(out)
    assert shown["customer"]["name"] == "Cafe \\u009b2J\\u202eevil\\u001b[31m"
    assert shown["licenses"][0]["machines"][0]["terminal_name"] == "Till \\u202e1"


def test_admin_machine_remove_of_a_till_licensed_by_file_says_its_seat_stays_taken(
    client, seed_subscription, make_machine, database, clock
):
    import argparse

    from server import admin
    from tests.server.test_offline import EMAIL, _round_trip

    seed_subscription(email=EMAIL, seats=1)
    doc = json.loads(_round_trip(client, database, make_machine(terminal_name="Beach"), clock).content)
    printed = []
    args = argparse.Namespace(entity="machine", action="remove", id=doc["machine_id"], seat_idle_days=30)
    with database.transaction() as session:  # the operator's command, on the test's clock
        assert admin.run(session, args, clock.now(), printed.append) == 0
    shown = printed[0]["machine"]
    assert (shown["active"], shown["why"]) == (True, "removed_offline_license") and shown["offline_until"]
    assert _round_trip(client, database, make_machine(terminal_name="Bar"), clock).status_code == 409
