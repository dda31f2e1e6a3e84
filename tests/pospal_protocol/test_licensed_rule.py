"""`pospal_protocol.tokens.why_not_licensed`, the rule a POS applies to a verified token, gives the same
`licensed` as the agent's own state machine (`agent.core.state.compute_status`) for every kind, status and
boundary a token can have, so the POS can never be stricter or looser than the agent on its own clock.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import pytest

from agent.core.state import StatusInputs, compute_status
from pospal_protocol.tokens import why_not_licensed
from tests.agent.tokenkit import NOW_TS, claims

DAY = 86400
SHAPES = {
    "active": {},
    "trial": {"kind": "trial", "status": "trialing", "trial_end": NOW_TS + 3 * DAY},
    "trial canceled": {"kind": "trial", "status": "canceled", "trial_end": NOW_TS + 3 * DAY},
    "past due": {"status": "past_due", "payment_grace_end": NOW_TS + 7 * DAY},
    "past due, no grace end": {"status": "past_due"},
    "cancel scheduled": {"cancel_at": NOW_TS + 10 * DAY},
    "canceled": {"status": "canceled"},
    "revoked": {"status": "revoked"},
    "offline license": {"policy": {"offline": True}},
}
OFFSETS = [0, DAY, 3 * DAY - 1, 3 * DAY, 5 * DAY, 7 * DAY, 10 * DAY, 14 * DAY - 1, 14 * DAY, 30 * DAY]


@pytest.mark.parametrize(("shape", "offset"), list(itertools.product(SHAPES, OFFSETS)))
def test_the_pos_rule_agrees_with_the_agents_state_machine(shape, offset):
    c = claims(**SHAPES[shape])
    now = NOW_TS + offset
    agent = compute_status(
        StatusInputs(
            now=datetime.fromtimestamp(now, UTC),
            claims=c,
            last_sync=datetime.fromtimestamp(c.srv, UTC),
            fingerprint_match=True,
            machine_id=c.mid,
        )
    )
    assert (why_not_licensed(c, now) is None) == agent.licensed, (shape, offset, agent.license_state)
