"""The channel server: credentials bound to the caller the OS named; the owner proof stays in its session."""

from __future__ import annotations

from typing import Any

import pytest

from agent import errors
from agent.link.channel import (
    MAX_FRAME,
    OWNER_GRANT_S,
    Caller,
    ChannelError,
    ChannelServer,
    encode,
    read_frame,
)


class _Route:
    def __init__(self, handler: Any) -> None:
        self.handler = handler


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _routes(calls: list[tuple[str, dict[str, Any]]]) -> dict[tuple[str, str], _Route]:
    def record(path: str, answer: Any = None) -> _Route:
        def handler(body: dict[str, Any]) -> tuple[int, Any]:
            calls.append((path, body))
            return 200, answer if answer is not None else {"ok": True}

        return _Route(handler)

    def refuse(_body: dict[str, Any]) -> tuple[int, Any]:
        raise errors.ServerRefused("seats_full", "No free seat.", {"terminals": []})

    return {
        ("GET", "/v1/license"): _Route(
            lambda _b: (200, b'{"license_state":"trial_active","machine_id":"m_1"}')
        ),
        ("POST", "/v1/owner"): record("/v1/owner"),
        ("POST", "/v1/portal"): record("/v1/portal", {"url": "https://billing.example/x"}),
        ("POST", "/v1/terminals/remove"): record("/v1/terminals/remove"),
        ("POST", "/v1/terminals/keep"): record("/v1/terminals/keep"),
        ("POST", "/v1/terminals/add"): record("/v1/terminals/add"),
        ("POST", "/v1/activate"): _Route(refuse),
        ("POST", "/v1/terminals/rename"): record("/v1/terminals/rename"),
    }


ALICE = Caller("uid:1001", "3", 4000)
ALICE_OTHER_SESSION = Caller("uid:1001", "7", 4100)
BOB = Caller("uid:1002", "5", 4200)


def _hello(server: ChannelServer, caller: Caller) -> str:
    answer = server.handle({"method": "POST", "path": "hello"}, caller)
    assert answer["status"] == 200 and answer["body"]["user"] == caller.user
    return answer["body"]["credential"]


def _ask(
    server: ChannelServer, caller: Caller, credential: Any, path: str, body: Any = None, method: str = "POST"
):
    return server.handle(
        {"method": method, "path": path, "body": body or {}, "credential": credential}, caller
    )


def test_the_caller_reads_the_status_with_its_own_credential() -> None:
    server = ChannelServer(_routes([]))
    answer = _ask(server, ALICE, _hello(server, ALICE), "/v1/license", method="GET")
    assert answer == {"status": 200, "body": {"license_state": "trial_active", "machine_id": "m_1"}}


def test_another_users_credential_is_refused() -> None:
    calls: list = []
    server = ChannelServer(_routes(calls))
    stolen = _hello(server, ALICE)
    answer = _ask(server, BOB, stolen, "/v1/license", method="GET")
    assert answer["status"] == 401 and answer["body"]["error"] == "wrong_caller"
    assert calls == []


def test_another_sessions_credential_of_the_same_user_is_refused() -> None:
    calls: list = []
    server = ChannelServer(_routes(calls))
    answer = _ask(
        server, ALICE_OTHER_SESSION, _hello(server, ALICE), "/v1/terminals/keep", {"machine_ids": ["m"]}
    )
    assert answer["body"]["error"] == "wrong_caller" and calls == []


def test_no_credential_or_an_unknown_one_is_refused() -> None:
    server = ChannelServer(_routes([]))
    assert _ask(server, ALICE, None, "/v1/license", method="GET")["body"]["error"] == "credential_required"
    # What a tray holds after the service restarted: it says hello again.
    assert (
        _ask(server, ALICE, "forgotten", "/v1/license", method="GET")["body"]["error"] == "credential_unknown"
    )


def test_owner_routes_need_the_owners_proof_in_this_session() -> None:
    calls: list = []
    server = ChannelServer(_routes(calls))
    credential = _hello(server, ALICE)
    for path in ("/v1/portal", "/v1/terminals/keep", "/v1/terminals/add", "/v1/terminals/remove"):
        answer = _ask(server, ALICE, credential, path, {"machine_id": "m_2", "code": "123456"})
        assert answer["status"] == 403 and answer["body"]["error"] == "owner_proof_required", path
    assert calls == []
    assert (
        _ask(server, ALICE, credential, "/v1/owner", {"email": "o@x.gr", "code": "123456"})["status"] == 200
    )
    assert _ask(server, ALICE, credential, "/v1/portal")["body"] == {"url": "https://billing.example/x"}


def test_the_owners_proof_in_one_session_does_not_open_billing_in_another() -> None:
    calls: list = []
    server = ChannelServer(_routes(calls))
    owner = _hello(server, ALICE)
    _ask(server, ALICE, owner, "/v1/owner", {"email": "o@x.gr", "code": "123456"})
    waiter = _hello(server, BOB)
    for path in ("/v1/portal", "/v1/terminals/add", "/v1/terminals/keep"):
        assert _ask(server, BOB, waiter, path)["body"]["error"] == "owner_proof_required"
    assert [path for path, _ in calls] == ["/v1/owner"]


def test_the_owners_proof_ends_with_the_servers() -> None:
    clock = _Clock()
    server = ChannelServer(_routes([]), monotonic=clock)
    credential = _hello(server, ALICE)
    _ask(server, ALICE, credential, "/v1/owner", {"email": "o@x.gr", "code": "123456"})
    clock.now += OWNER_GRANT_S + 1
    assert _ask(server, ALICE, credential, "/v1/portal")["body"]["error"] == "owner_proof_required"


def test_removing_a_terminal_with_the_owners_emailed_code_is_proven_by_the_code() -> None:
    calls: list = []
    server = ChannelServer(_routes(calls))
    credential = _hello(server, ALICE)
    body = {"machine_id": "m_2", "email": "o@x.gr", "code": "123456"}
    assert _ask(server, ALICE, credential, "/v1/terminals/remove", body)["status"] == 200
    assert calls == [("/v1/terminals/remove", body)]


def test_server_refusals_pass_through_with_their_code_and_extra() -> None:
    server = ChannelServer(_routes([]))
    answer = _ask(server, ALICE, _hello(server, ALICE), "/v1/activate", {"email": "a@b.gr", "code": "1"})
    assert answer == {
        "status": 409,
        "body": {"error": "seats_full", "message": "No free seat.", "terminals": []},
    }


class _Bytes:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def recv_exact(self, n: int) -> bytes:
        out, self.data = self.data[:n], self.data[n:]
        return out

    def send_all(self, data: bytes) -> None:
        self.data += data

    def close(self) -> None:
        pass


def test_frames_round_trip_and_oversized_or_garbage_frames_are_refused() -> None:
    assert read_frame(_Bytes(encode({"a": "ά"}))) == {"a": "ά"}
    assert read_frame(_Bytes(b"")) is None
    with pytest.raises(ChannelError):
        read_frame(_Bytes((MAX_FRAME + 1).to_bytes(4, "big")))
    with pytest.raises(ChannelError):
        read_frame(_Bytes((3).to_bytes(4, "big") + b"[1]"))
    with pytest.raises(ChannelError):
        read_frame(_Bytes((10).to_bytes(4, "big") + b"{}"))


def test_staff_rename_this_pc_but_another_terminal_only_as_the_owner() -> None:
    calls: list = []
    server = ChannelServer(_routes(calls))
    credential = _hello(server, BOB)
    for body in ({"name": "Bar 2"}, {"name": "Bar 2", "machine_id": "m_1"}):
        assert _ask(server, BOB, credential, "/v1/terminals/rename", body)["status"] == 200, body
    other = {"name": "Kitchen", "machine_id": "m_9"}
    assert (
        _ask(server, BOB, credential, "/v1/terminals/rename", other)["body"]["error"]
        == "owner_proof_required"
    )
    proven = {**other, "email": "o@x.gr", "code": "123456"}
    assert _ask(server, BOB, credential, "/v1/terminals/rename", proven)["status"] == 200
    assert [body for path, body in calls if path.endswith("rename")][-1] == proven
