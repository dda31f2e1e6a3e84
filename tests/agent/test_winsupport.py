"""The Windows support matrix (agent/host/winsupport.py): 10 1809 (build 17763) and later, and Windows 11."""

from __future__ import annotations

import pytest

from agent.host import winsupport


@pytest.mark.parametrize(
    ("version", "supported"),
    [
        (None, True),  # not Windows
        ((10, 0, 17763), True),  # 1809, LTSC 2019
        ((10, 0, 19045), True),  # 22H2
        ((10, 0, 22631), True),  # Windows 11 (still reports major 10)
        ((10, 0, 17134), False),  # 1803
        ((10, 0, 14393), False),  # 1607, LTSB 2016
        ((6, 3, 9600), False),  # 8.1
        ((6, 1, 7601), False),  # 7 SP1
    ],
)
def test_support_matrix(version, supported):
    assert (winsupport.unsupported_reason(version) is None) == supported


def test_an_unsupported_windows_is_told_once_and_in_words(caplog):
    assert winsupport.check_and_tell((10, 0, 14393)) is False
    assert "build 14393" in caplog.text and "The POS keeps working" in caplog.text
    assert winsupport.check_and_tell((10, 0, 19045)) is True
