"""server.nonces: each nonce is accepted once (database primary key), and expired ones are purged."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from server import nonces
from server.errors import Replay
from server.models import RequestNonce


def test_a_nonce_is_accepted_once(database, clock):
    ts = int(clock.now().timestamp())
    with database.transaction() as session:
        nonces.remember(session, "a" * 32, "m_1", ts, clock.now())
    with database.transaction() as session, pytest.raises(Replay):
        nonces.remember(session, "a" * 32, "m_1", ts, clock.now())


def test_replay_does_not_spoil_the_transaction(database, clock):
    ts = int(clock.now().timestamp())
    with database.transaction() as session:
        nonces.remember(session, "b" * 32, "m_1", ts, clock.now())
        with pytest.raises(Replay):
            nonces.remember(session, "b" * 32, "m_1", ts, clock.now())
        nonces.remember(session, "c" * 32, "m_1", ts, clock.now())
    with database.transaction() as session:
        assert session.scalar(select(func.count()).select_from(RequestNonce)) == 2


@pytest.mark.parametrize("offset", [-301, 301])
def test_timestamps_outside_five_minutes_are_refused(database, clock, offset):
    with database.transaction() as session, pytest.raises(Replay):
        nonces.remember(session, "d" * 32, "m_1", int(clock.now().timestamp()) + offset, clock.now())


def test_expired_nonces_are_purged(database, clock):
    with database.transaction() as session:
        nonces.remember(session, "e" * 32, "m_1", int(clock.now().timestamp()), clock.now())
    later = clock.now() + timedelta(seconds=601)
    with database.transaction() as session:
        nonces.remember(session, "f" * 32, "m_1", int(later.timestamp()), later)
        assert nonces.purge_expired(session, later) == 1
        assert session.scalars(select(RequestNonce.nonce)).all() == ["f" * 32]
