"""Fingerprint hashing, the hard deadline and the majority match (agent/fingerprint.py)."""

from __future__ import annotations

import json
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent import fingerprint as fpm
from agent.probes import FuncProbe

# ------------------------------------------------------------------------------------ hashing, matching


def test_hash_is_salted_hmac_of_name_and_value():
    import hashlib
    import hmac

    expected = hmac.new(fpm.PRODUCT_SALT, b"machine_id:ABC", hashlib.sha256).hexdigest()
    assert fpm.hash_component("machine_id", "ABC") == expected
    assert fpm.hash_component("disk_serial", "ABC") != expected  # same value, other component
    assert fpm.hash_component("machine_id", "ABC", salt=b"other") != expected


@pytest.mark.parametrize(("raw", "normalized"), [
    ("  abc-123\n", "ABC-123"), ("a\x00b", "A B"), ("To be filled by O.E.M.", None), ("Default string", None),
    ("00000000-0000-0000-0000-000000000000", None), ("", None), (None, None), ("   ", None),
])
def test_normalize_drops_whitespace_case_and_placeholders(raw, normalized):
    assert fpm.normalize(raw) == normalized


@pytest.mark.parametrize(("matching", "total", "ok"), [
    (3, 5, True), (2, 5, False), (5, 5, True), (0, 5, False), (1, 2, False), (2, 2, True), (2, 3, True),
    (1, 1, True), (0, 0, False), (3, 6, False), (4, 6, True),
])
def test_match_is_a_strict_majority_of_bound_components(matching, total, ok):
    bound = {f"c{i}": f"h{i}" for i in range(total)}
    current = {f"c{i}": (f"h{i}" if i < matching else "changed") for i in range(total)}
    assert fpm.match(bound, current) == fpm.MatchResult(matching, total, ok)


@settings(max_examples=300, deadline=None)
@given(bound=st.dictionaries(st.sampled_from("abcdef"), st.sampled_from("xyz"), max_size=6),
       current=st.dictionaries(st.sampled_from("abcdefg"), st.sampled_from("xyz")))
def test_match_property(bound, current):
    result = fpm.match(bound, current)
    same = sum(1 for k, v in bound.items() if current.get(k) == v)
    assert result.matched == same and result.total == len(bound)
    assert result.ok == (same > len(bound) / 2)
    # components the token never bound cannot help or hurt
    assert fpm.match(bound, dict(current, zzz="extra")) == result


# ------------------------------------------------------------------------------- deadline and failures


def test_failing_and_hanging_probes_are_skipped_never_fatal():
    release = threading.Event()

    def hang():
        release.wait(30)
        return "late"

    def boom():
        raise OSError("permission denied")

    probes = [FuncProbe("good", lambda: "value"), FuncProbe("hangs", hang), FuncProbe("fails", boom),
              FuncProbe("absent", lambda: None), FuncProbe("junk", lambda: "To Be Filled By O.E.M.")]
    try:
        result = fpm.collect(probes, deadline_s=0.3)
    finally:
        release.set()
    assert [(c.name, c.ok) for c in result.components] == [
        ("good", True), ("hangs", False), ("fails", False), ("absent", False), ("junk", False)]
    assert result.hashes() == {"good": fpm.hash_component("good", "VALUE")}
    assert result.working_count() == 1


def test_current_is_cached_for_the_process(monkeypatch):
    calls = []
    monkeypatch.setattr(fpm, "default_probes", lambda: [FuncProbe("x", lambda: calls.append(1) or "v")])
    fpm.clear_cache()
    try:
        first = fpm.current()
        assert fpm.current() is first and len(calls) == 1
        fpm.current(refresh=True)
        assert len(calls) == 2
    finally:
        fpm.clear_cache()


def test_component_dict_never_holds_the_raw_value():
    result = fpm.collect([FuncProbe("machine_id", lambda: "supersecretvalue")])
    assert "SUPERSECRETVALUE" not in json.dumps([c.to_dict() for c in result.components]).upper()
