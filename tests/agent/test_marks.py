"""Tamper marks outside the data directory (agent/vault/marks.py): one conformance suite for every MarkStore
(the file, the registry against a fake winreg, and the in-memory fake), then the marks' own rules."""

from __future__ import annotations

import stat
import sys

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.errors import StoreError
from agent.vault import marks
from agent.vault.marks import FileMarkStore, Marks, MemoryMarkStore, RegistryMarkStore, parse, read_marks
from agent.vault.seal import Seal, seal_key


class FakeWinreg:
    """Just enough of `winreg` for RegistryMarkStore; `locked` hives refuse writes (HKLM for a user)."""

    HKEY_LOCAL_MACHINE, HKEY_CURRENT_USER = "HKLM", "HKCU"
    KEY_READ, KEY_SET_VALUE, REG_SZ = 1, 2, 1

    def __init__(self, locked=()):
        self.values: dict[tuple[str, str, str], tuple[object, int]] = {}
        self.locked = set(locked)

    class _Key:
        def __init__(self, hive, path):
            self.hive, self.path = hive, path

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    def OpenKey(self, hive, path, reserved, access):  # noqa: N802 (winreg's names)
        if not any(h == hive and p == path for h, p, _ in self.values):
            raise FileNotFoundError(path)
        return self._Key(hive, path)

    def CreateKeyEx(self, hive, path, reserved, access):  # noqa: N802
        if hive in self.locked:
            raise PermissionError("access denied")
        return self._Key(hive, path)

    def QueryValueEx(self, key, name):  # noqa: N802
        try:
            return self.values[(key.hive, key.path, name)]
        except KeyError:
            raise FileNotFoundError(name) from None

    def SetValueEx(self, key, name, reserved, kind, value):  # noqa: N802
        self.values[(key.hive, key.path, name)] = (value, kind)


@pytest.fixture(params=["memory", "file", "registry", "registry-user-only"])
def store(request, tmp_path):
    if request.param == "memory":
        return MemoryMarkStore()
    if request.param == "file":
        return FileMarkStore(tmp_path / "elsewhere" / "marks.json")
    return RegistryMarkStore(FakeWinreg(locked={"HKLM"} if request.param.endswith("only") else ()))


def test_a_store_starts_empty_and_returns_what_was_written(store):
    assert store.read() == []
    store.write('{"a":1}')
    store.write('{"a":2}')
    assert store.read() and set(store.read()) == {'{"a":2}'}


def test_a_registry_store_that_can_write_nowhere_raises():
    with pytest.raises(StoreError):
        RegistryMarkStore(FakeWinreg(locked={"HKLM", "HKCU"})).write("x")


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX file modes")
def test_the_file_is_private(tmp_path):
    store = FileMarkStore(tmp_path / "d" / "marks.json")
    store.write("x")
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.path.parent.stat().st_mode) == 0o700


def _seal() -> Seal:
    return Seal(seal_key(Ed25519PrivateKey.generate()))


def test_sealed_marks_round_trip_and_copies_merge_the_cautious_way():
    seal = _seal()
    a = Marks(high_water=200, token_iat=100, provisional_trial=50, rolled_back=False)
    b = Marks(high_water=150, token_iat=120, provisional_trial=40, rolled_back=True)
    store = RegistryMarkStore(FakeWinreg())
    store.write(a.document(seal))
    assert read_marks(store, seal) == Marks(200, 100, 50, False, True)
    merged = parse(a.document(seal), seal).merge(parse(b.document(seal), seal))
    assert (merged.high_water, merged.token_iat, merged.provisional_trial, merged.rolled_back) == (
        200,
        120,
        40,
        True,
    )


def test_an_edited_or_foreign_document_is_ignored_but_a_provisional_trial_in_it_still_counts():
    seal = _seal()
    doc = Marks(high_water=200, provisional_trial=50).document(seal)
    edited = doc.replace('"high_water":200', '"high_water":1')
    assert parse(edited, seal) == Marks(provisional_seen=True)
    assert parse(doc, _seal()) == Marks(provisional_seen=True)
    assert parse(Marks(high_water=5).document(_seal()), seal) == Marks()
    assert parse("not json", seal).provisional_seen and parse("[1]", seal).provisional_seen


def test_out_of_range_times_in_a_sealed_document_are_dropped():
    seal = _seal()
    body = {"format": 1, "high_water": 10**20, "token_iat": -5, "provisional_trial": True, "rolled_back": 1}
    import json

    doc = json.dumps({**body, "mac": seal.sign(body)})
    assert parse(doc, seal) == Marks(provisional_seen=True)


def test_development_marks_sit_next_to_the_data_dir_not_in_it(tmp_path):
    store = marks.default_store(tmp_path / "data")
    assert isinstance(store, FileMarkStore) and store.path.parent == tmp_path
    assert (tmp_path / "data") not in store.path.parents


def test_release_marks_have_one_fixed_place_whatever_the_data_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setenv("HOME", str(tmp_path / "elsewhere"))
    a, b = marks.default_store(tmp_path / "one"), marks.default_store(tmp_path / "two")
    assert isinstance(a, FileMarkStore) and a.path == b.path
    assert tmp_path not in a.path.parents  # not from $HOME, which the user sets


def test_a_foreign_document_that_saw_a_server_token_spends_the_provisional_trial():
    """Issue 27: after a wipe the marks no longer verify, but a token's issue time in them still says
    this PC held a server token, so it gets no provisional trial."""
    doc = Marks(high_water=200, token_iat=150).document(_seal())
    assert parse(doc, _seal()).provisional_seen
    assert Marks(token_iat=1).merge(Marks()).provisional_seen
