"""The fleet simulation, small: 100 agents over 3 simulated days against one real server, with faults.

The server is SIGKILLed and restarted 3 times, the email provider refuses for a minute of server time,
webhooks are delivered duplicated and out of order. Old POSPal customers are imported and their tills move
over (once per customer, inside the migration window), and owners pause for the season and resume (by
date, by the owner, and a pause still running at the end). The same zeros as the 1,000-agent bench run
(bench/fleet.py) must hold: no agent in a state PRODUCT.md does not call for, no email lost or sent twice,
no webhook event left unprocessed, no audit gap, and every server error an agent saw came during an
injected fault and was followed by a successful retry. The oracle itself is checked on hand-made
histories, so it cannot pass by agreeing with everything.
"""

from __future__ import annotations

import pytest

from bench import fleet_check
from bench.fleet import Fleet

DAY = 86400.0
HW = {n: f"{n}-1-gen0" for n in ("machine_id", "product_uuid", "board_serial", "disk_serial", "mac")}


def _agent(history: list[dict], log: list[tuple[float, str, int]], hw: dict | None = None) -> dict:
    return {
        "history": history,
        "log": log,
        "hw": hw or dict(HW),
        "hw0": dict(HW),
        "customer": 1,
        "index": 1,
        "role": "t",
        "email": "a@b.c",
    }


def test_oracle_follows_product_rules_on_hand_made_histories() -> None:
    """The oracle is independent of agent.core.state, so check it against PRODUCT.md by hand."""
    bought = fleet_check.Billing([(1 * DAY, "purchase")])
    synced = [(0.5 * DAY, "/v1/trials", 200), (1 * DAY, "/v1/activations", 200)]
    expect = fleet_check.expected_state
    # Synced an hour ago: active. Offline 3 days: grace. Offline 15 days: the lease ran out.
    assert expect(_agent([], [*synced, (10 * DAY, "/v1/refresh", 200)]), bought, 10 * DAY + 3600)[:2] == (
        "licensed_active",
        True,
    )
    assert expect(_agent([], [*synced, (10 * DAY, "/v1/refresh", 200)]), bought, 13 * DAY)[:2] == (
        "licensed_grace",
        True,
    )
    assert expect(_agent([], synced), bought, 16 * DAY)[2] == "offline_expired"
    # Payment failed at day 5: orders allowed until day 12, then not.
    failed = fleet_check.Billing([(1 * DAY, "purchase"), (5 * DAY, "fail_renewal")])
    log = [*synced, (11 * DAY, "/v1/refresh", 200)]
    assert expect(_agent([], log), failed, 11.5 * DAY)[:2] == ("licensed_renewal_required", True)
    assert expect(_agent([], [*log, (12.5 * DAY, "/v1/refresh", 200)]), failed, 12.6 * DAY)[:2] == (
        "licensed_renewal_required",
        False,
    )
    # A trial started at day 0.5 has ended at day 30.5.
    trial = [synced[0], (30 * DAY, "/v1/refresh", 200)]
    assert expect(_agent([], trial), None, 30.6 * DAY)[0] == "trial_expired"
    assert expect(_agent([], trial), None, 30.4 * DAY)[0] == "trial_active"
    # One part replaced: still licensed; three of five: machine_changed.
    one = dict(HW, mac="mac-1-gen1")
    three = dict(HW, mac="mac-1-gen1", disk_serial="x-gen1", board_serial="y-gen1")
    hw1 = _agent([{"t": 2 * DAY, "kind": "hw", "values": one}], [*synced, (2 * DAY, "/v1/refresh", 200)], one)
    assert expect(hw1, bought, 2.1 * DAY)[0] == "licensed_active"
    hw3 = _agent(
        [{"t": 2 * DAY, "kind": "hw", "values": three}], [*synced, (2 * DAY, "/v1/refresh", 200)], three
    )
    assert expect(hw3, bought, 2.1 * DAY)[2] == "machine_changed"
    # A clock set back 2 days at a reboot: rollback until the next successful sync.
    back = [{"t": 3 * DAY, "kind": "reboot", "wall_shift": -2 * DAY}]
    assert expect(_agent(back, synced), bought, 3.1 * DAY)[2] == "clock_rollback"
    assert expect(_agent(back, [*synced, (3.2 * DAY, "/v1/refresh", 200)]), bought, 3.3 * DAY)[0] == (
        "licensed_active"
    )
    # Never activated; a first run offline: a 3-day provisional trial.
    assert expect(_agent([], []), None, DAY)[0] == "license_missing"
    prov = [{"t": DAY, "kind": "provisional"}]
    assert expect(_agent(prov, []), None, 3 * DAY)[0] == "trial_active"
    assert expect(_agent(prov, []), None, 4.5 * DAY)[2] == "offline_expired"
    # An old till moved with its unlock token holds a license on the imported subscription.
    imported = fleet_check.billing_by_customer([], [], [{"customer": 1}])[1]
    moved = _agent([], [(0.5 * DAY, "/v1/migrations", 200)])
    assert expect(moved, imported, DAY)[:2] == ("licensed_active", True)
    assert expect(_agent([], [(0.5 * DAY, "/v1/migrations", 409)]), imported, DAY)[0] == "license_missing"


def test_oracle_pauses_until_the_date_or_the_owners_resume() -> None:
    expect = fleet_check.expected_state
    by_date = fleet_check.Billing([(1 * DAY, "purchase")], [(5 * DAY, "pause", 9 * DAY)])
    log = [(1 * DAY, "/v1/activations", 200), (5 * DAY, "/v1/refresh", 200)]
    # Paused at day 5: nothing sells, whatever the time, until a sync after the resume date.
    assert expect(_agent([], log), by_date, 5.1 * DAY) == ("licensed_cancelled", False, "paused")
    assert expect(_agent([], log), by_date, 9.5 * DAY)[2] == "paused"
    assert (
        expect(_agent([], [*log, (9 * DAY, "/v1/refresh", 200)]), by_date, 9.1 * DAY)[0] == "licensed_active"
    )
    # "Until I resume": still paused at day 20, licensed again at the first sync after the owner resumed.
    open_ended = fleet_check.Billing(
        [(1 * DAY, "purchase")], [(5 * DAY, "pause", None), (20 * DAY, "resume", None)]
    )
    assert expect(_agent([], [*log, (19.9 * DAY, "/v1/refresh", 200)]), open_ended, 20 * DAY)[2] == "paused"
    assert expect(_agent([], [*log, (20 * DAY, "/v1/refresh", 200)]), open_ended, 20.1 * DAY)[0] == (
        "licensed_active"
    )


@pytest.mark.timeout(600)
def test_fleet_of_100_agents_over_3_days_with_faults_loses_nothing(tmp_path) -> None:
    """100 agents, 3 simulated days, SIGKILLs, an email outage, duplicated and reordered webhooks."""
    report = Fleet(
        agents=100,
        days=3,
        workers=2,
        database_url=None,
        pg_stop=False,
        email_outage_s=60,
        outage_speed=10,
        seed=11,
        max_wall_s=540,
    ).run()
    server = report["server_checks"]
    assert report["states"]["wrong"] == []
    # Old tills: moved once per customer inside the window, refused (and then activated by code) otherwise.
    assert report["migrations"]["wrong"] == []
    assert report["migrations"]["outcomes"] == {
        "licensed": 2,
        "refused:migration_used": 1,
        "refused:migration_closed": 1,
    }
    assert server["duplicates"] == [] and server["old_imported"] == 3
    # A paused season: every pause and resume audited, nothing collected while paused, the tills' states
    # during and after each pause as the oracle says (checked above), and one pause still running.
    assert server["pause_windows"] == 3 and report["states"]["observed"] == 10
    assert server["pause_audit_gaps"] == [] and server["collected_while_paused"] == []
    assert report["states"]["paused_at_end"] == 2
    assert server["emails_lost"] == 0, server["email_problems"]
    # Only sign-in codes may expire unsent (during the e-mail outage): nothing else has a life to outlive.
    assert set(server["expired_templates"]) <= {"activation_code"}, server["expired_templates"]
    assert server["emails_duplicated"] == 0, server["email_problems"]
    # The fleet's one server process sends one message at a time: a SIGKILL can catch at most one of them
    # accepted by the sink but not yet marked sent, which goes again under the same Message-ID.
    redelivered = server["emails_redelivered"]
    assert redelivered <= len(report["kills"]), (redelivered, report["kills"])
    assert server["events_not_processed"] == 0 and report["deliveries_failed"] == 0
    assert server["audit_gaps"] == []
    assert server["hw1_not_healed"] == []
    assert server["replacements_refused"] == []  # dead tills freed their seats with no manual removal
    assert report["errors"]["outside_faults"] == 0, report["errors"]["samples"]
    assert report["errors"]["not_retried_ok"] == 0, report["errors"]["samples"]
    # A keep-alive connection the server closed just as an agent reused it is retried (above), and it
    # stays rare: at most 1 in 1,000 requests outside the injected faults (0-3 in the 30-day reports).
    assert report["errors"]["no_answer_outside_faults"] <= report["requests"] / 1000, report["errors"][
        "samples"
    ]
    assert report["agent_exceptions"] == 0, report["exception_samples"]
    # The faults really happened and were felt: 3 restarts, refused emails, duplicates answered as such.
    assert report["server_starts"] >= 4
    assert report["errors"]["by_fault"].get("server SIGKILL", 0) > 0
    assert report["sink_refused"] > 0 and server["outbox_retried"] > 0
    assert report["duplicates_delivered"] > 0 and report["reordered"] > 0
    # The fleet covered the states that matter.
    finals = report["states"]["final_states"]
    for state in ("trial_active", "licensed_active", "licensed_renewal_required", "license_error"):
        assert finals.get(state, 0) > 0, finals
    # PRODUCT.md: about 4 syncs a day per terminal, not thousands.
    assert report["by_route"]["/v1/refresh"] / 100 / 3 < 6


def test_schedule_kills_tills_and_activates_replacements_after_the_seat_idle_days() -> None:
    from bench.fleet_schedule import DAY, build

    for agents, days in ((100, 3), (1000, 30)):
        schedule = build(agents, days)
        dead = [p for p in schedule.plans if p.role == "dead_till"]
        replacements = {p.email: p for p in schedule.plans if p.role == "replacement"}
        assert len(dead) == max(1, agents // 50) == len(replacements)
        for till in dead:
            gone = next(t for t, name, _ in till.actions if name == "offline")
            ask = next(t for t, name, _ in replacements[till.email].actions if name == "activate_code")
            assert gone + schedule.seat_idle_days * DAY < ask < schedule.duration_s
    assert build(1000, 30).seat_idle_days == 15  # longer than the 14-day offline lease
