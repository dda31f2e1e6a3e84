"""Fingerprint hashing, the hard deadline and the majority match (pospal_protocol/fingerprint.py)."""

from __future__ import annotations

import json
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pospal_protocol import fingerprint as fpm
from pospal_protocol.probes import FuncProbe, windows_probes

# ------------------------------------------------------------------------------------ hashing, matching


def test_hash_is_salted_hmac_of_name_and_value():
    import hashlib
    import hmac

    expected = hmac.new(fpm.PRODUCT_SALT, b"machine_id:ABC", hashlib.sha256).hexdigest()
    assert fpm.hash_component("machine_id", "ABC") == expected
    assert fpm.hash_component("disk_serial", "ABC") != expected  # same value, other component
    assert fpm.hash_component("machine_id", "ABC", salt=b"other") != expected


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("  abc-123\n", "ABC-123"),
        ("a\x00b", "A B"),
        ("To be filled by O.E.M.", None),
        ("Default string", None),
        ("00000000-0000-0000-0000-000000000000", None),
        ("", None),
        (None, None),
        ("   ", None),
    ],
)
def test_normalize_drops_whitespace_case_and_placeholders(raw, normalized):
    assert fpm.normalize(raw) == normalized


@pytest.mark.parametrize(
    ("matching", "total", "ok"),
    [
        (3, 5, True),
        (2, 5, False),
        (5, 5, True),
        (0, 5, False),
        (1, 2, True),
        (0, 2, False),
        (2, 3, True),
        (1, 1, True),
        (3, 6, True),
        (2, 6, False),
        (4, 6, True),
    ],
)
def test_with_every_component_read_a_strict_majority_must_differ(matching, total, ok):
    bound = {f"c{i}": f"h{i}" for i in range(total)}
    current = {f"c{i}": (f"h{i}" if i < matching else "changed") for i in range(total)}
    result = fpm.match(bound, current)
    assert (result.matched, result.total, result.compared, result.decided) == (matching, total, total, True)
    assert result.ok == ok


@pytest.mark.parametrize(
    ("read", "differ", "ok", "decided"),
    [
        (0, 0, True, False),  # every probe timed out
        (1, 1, True, False),  # only MachineGuid left (the old PowerShell failure): never machine_changed
        (2, 2, True, False),  # two replaced parts and everything else unreadable: not enough to judge
        (3, 2, False, True),  # three read, two of them changed
        (3, 1, True, True),
        (4, 2, True, True),  # half is not a majority
    ],
)
def test_a_component_that_was_not_read_is_unknown_never_different(read, differ, ok, decided):
    bound = {f"c{i}": f"h{i}" for i in range(6)}
    current = {f"c{i}": ("changed" if i < differ else f"h{i}") for i in range(read)}
    result = fpm.match(bound, current)
    assert (result.compared, result.differ, result.ok, result.decided) == (read, differ, ok, decided)


def test_a_token_binding_fewer_components_than_the_minimum_needs_them_all_read():
    bound = {"platform_uuid": "a", "serial": "b"}  # macOS binds two
    assert not fpm.match(bound, {"platform_uuid": "x", "serial": "y"}).ok
    assert fpm.match(bound, {"platform_uuid": "x"}).ok  # one unreadable: undecided, kept


@settings(max_examples=300, deadline=None)
@given(
    bound=st.dictionaries(st.sampled_from("abcdef"), st.sampled_from("xyz"), max_size=6),
    current=st.dictionaries(st.sampled_from("abcdefg"), st.sampled_from("xyz")),
)
def test_match_property(bound, current):
    result = fpm.match(bound, current)
    both = [k for k in bound if k in current]
    differ = sum(1 for k in both if current[k] != bound[k])
    assert result.compared == len(both) and result.differ == differ and result.total == len(bound)
    decided = bool(bound) and len(both) >= min(fpm.MIN_COMPARED, len(bound))
    assert result.ok == (not decided or 2 * differ <= len(both))
    # components the token never bound cannot help or hurt
    assert fpm.match(bound, dict(current, zzz="extra")) == result
    # a changed component that becomes unreadable can never turn "same machine" into "machine changed"
    for k in both:
        if result.ok and current[k] != bound[k]:
            assert fpm.match(bound, {n: v for n, v in current.items() if n != k}).ok
    # with fewer than the minimum readable, the license is always kept
    if len(both) < min(fpm.MIN_COMPARED, len(bound)):
        assert result.ok and not result.decided


# ------------------------------------------------------------------------------- deadline and failures


def test_failing_and_hanging_probes_are_skipped_never_fatal():
    release = threading.Event()

    def hang():
        release.wait(30)
        return "late"

    def boom():
        raise OSError("permission denied")

    probes = [
        FuncProbe("good", lambda: "value"),
        FuncProbe("hangs", hang),
        FuncProbe("fails", boom),
        FuncProbe("absent", lambda: None),
        FuncProbe("junk", lambda: "To Be Filled By O.E.M."),
    ]
    try:
        result = fpm.collect(probes, deadline_s=0.3)
    finally:
        release.set()
    assert [(c.name, c.ok) for c in result.components] == [
        ("good", True),
        ("hangs", False),
        ("fails", False),
        ("absent", False),
        ("junk", False),
    ]
    assert result.problems() == {"hangs": "timeout", "fails": "error", "absent": "absent", "junk": "absent"}
    assert result.hashes() == {"good": fpm.hash_component("good", "VALUE")}
    assert result.working_count() == 1


def test_an_incomplete_fingerprint_is_probed_again_at_the_next_call(monkeypatch):
    answers = iter([None, "v", "w"])
    monkeypatch.setattr(fpm, "default_probes", lambda: [FuncProbe("x", lambda: next(answers))])
    fpm.clear_cache()
    try:
        assert fpm.current().working_count() == 0  # a NIC not up yet at boot, say
        second = fpm.current()
        assert second.working_count() == 1 and fpm.current() is second  # complete: cached
    finally:
        fpm.clear_cache()


def test_reprobe_backs_off_and_stops_when_done_or_out_of_attempts():
    results = iter([False, True])
    seen = threading.Event()
    done = fpm.Reprobe(lambda: next(results) and not seen.set(), delays=(0.01, 0.01, 0.01))
    done.start()
    assert seen.wait(10)
    done._thread.join(10)
    assert done.attempts == 2 and not done.running

    never = fpm.Reprobe(lambda: False, delays=(0.0, 0.0, 0.0))
    never.start()
    never._thread.join(10)
    assert never.attempts == 3 and not never.running


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


# ------------------------------------------- degraded Windows probes: the till stays licensed (service)


def _windows_fp(deadline_s=2.0, **overrides):
    from tests.agent.test_probes import sources

    return fpm.collect(windows_probes(sources(**overrides)), deadline_s=deadline_s)


@pytest.fixture
def licensed_windows_till(tmp_path, monkeypatch):
    """A till activated with all six Windows components read, restarted with `probe` as its fingerprint."""
    from tests.agent.test_service import Rig, activated

    rig = Rig(tmp_path)
    rig.fp = _windows_fp()
    assert rig.fp.working_count() == 6
    _svc, status = activated(rig)
    assert status.licensed
    monkeypatch.setattr(fpm, "REPROBE_DELAYS_S", (0.01, 0.01, 0.01))
    services = []

    def restart(fp_func):
        svc = rig.service(fingerprinter=fp_func)
        services.append(svc)
        return svc

    yield restart
    for svc in services:
        svc.stop()


def test_every_probe_timing_out_keeps_the_license_and_probes_again(licensed_windows_till):
    release = threading.Event()

    def blocked():
        release.wait(10)
        return None

    first = _windows_fp(
        deadline_s=0.05, smbios=blocked, adapters=blocked, disk_serial=blocked, machine_guid=blocked
    )
    release.set()
    assert first.working_count() == 0 and set(first.problems().values()) == {"timeout"}
    answers = iter([first])
    svc = licensed_windows_till(lambda: next(answers, None) or _windows_fp())
    status = svc.status()
    assert (status.license_state, status.licensed) == ("licensed_active", True)
    extra = svc.diagnostics().extra
    assert "undecided" in extra["fingerprint_match"] or "same machine" in extra["fingerprint_match"]
    # The background re-probe reads everything once the sources answer again.
    assert svc._reprobe.running
    svc._reprobe._thread.join(10)
    assert svc._reprobe.attempts == 1 and svc._fingerprint.working_count() == 6
    assert svc.status().licensed
    assert "same machine" in svc.diagnostics().extra["fingerprint_match"]


def test_only_machine_guid_left_as_under_constrained_language_mode_keeps_the_license(licensed_windows_till):
    # What PowerShell under CLM (or Wine, or a cold start past the deadline) used to leave: MachineGuid.
    def blocked_by_policy():
        raise PermissionError("Cannot create type. Only core types are supported in this language mode.")

    only_guid = _windows_fp(
        smbios=blocked_by_policy, adapters=blocked_by_policy, disk_serial=blocked_by_policy
    )
    assert only_guid.working_count() == 1
    status = licensed_windows_till(lambda: only_guid).status()
    assert (status.license_state, status.licensed, status.reason) == ("licensed_active", True, "active")


def test_a_non_ascii_code_page_reads_the_same_values(licensed_windows_till, monkeypatch):
    import locale

    # A Greek Windows: OEM code page 737, ANSI 1253. No Windows probe decodes text through either.
    monkeypatch.setattr(locale, "getpreferredencoding", lambda *a, **k: "cp1253")
    monkeypatch.setattr(locale, "getencoding", lambda: "cp737", raising=False)
    again = _windows_fp()
    assert again.hashes() == _windows_fp().hashes() and again.working_count() == 6
    assert licensed_windows_till(lambda: again).status().licensed


def test_an_empty_smbios_table_keeps_the_license(licensed_windows_till):
    empty = _windows_fp(smbios=lambda: b"")
    assert empty.working_count() == 3
    status = licensed_windows_till(lambda: empty).status()
    assert (status.license_state, status.licensed) == ("licensed_active", True)


def test_a_really_different_pc_is_still_machine_changed(licensed_windows_till):
    other = _windows_fp(
        machine_guid=lambda: "00112233-4455-6677-8899-aabbccddeeff",
        disk_serial=lambda: "OTHERDISK1",
        smbios=lambda: b"",
    )
    status = licensed_windows_till(lambda: other).status()
    assert (status.license_state, status.reason) == ("license_error", "machine_changed")


def test_a_changed_machine_guid_under_the_same_key_is_reported_as_a_clone(licensed_windows_till, caplog):
    same = _windows_fp()
    licensed_windows_till(lambda: same).stop()  # the master image's agent ran: the OS id is recorded
    clone = _windows_fp(machine_guid=lambda: "00112233-4455-6677-8899-aabbccddeeff")
    svc = licensed_windows_till(lambda: clone)
    assert svc.status().licensed  # one component of six: still this machine as far as the match goes
    assert "clone_suspected" in svc.diagnostics().extra
    assert "machine_guid changed since this PC's machine key was made" in caplog.text
    again = licensed_windows_till(lambda: same)
    assert "clone_suspected" not in again.diagnostics().extra
