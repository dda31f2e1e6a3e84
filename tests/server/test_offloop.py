"""server.offloop: a batch's result is not held back a whole default switch interval (5 ms) for the GIL."""

from __future__ import annotations

import sys

import pytest

from server.offloop import SWITCH_INTERVAL_S, OffLoop


@pytest.fixture
def switch_interval():
    before = sys.getswitchinterval()
    yield
    sys.setswitchinterval(before)


def test_an_offloop_lowers_the_switch_interval_and_never_raises_it(switch_interval):
    sys.setswitchinterval(0.005)
    OffLoop("test-lower")
    assert sys.getswitchinterval() == pytest.approx(SWITCH_INTERVAL_S)
    sys.setswitchinterval(SWITCH_INTERVAL_S / 5)
    OffLoop("test-keep")
    assert sys.getswitchinterval() == pytest.approx(SWITCH_INTERVAL_S / 5)
