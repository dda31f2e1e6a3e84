"""The POS client rides over `503 busy` (a connection flood, issue 28 case 4), `503 updating` and a swap's
refused connections (issue 24) inside its one total deadline, and gives up with the same error as before
when the agent keeps refusing: loopback servers speaking the agent's own refusal bytes, and
`pospal_client.retry.Budget` on a fake clock for the budget itself.
"""

from __future__ import annotations

import json
import random
import socket
import threading

import pytest
from pospal_client import retry
from pospal_client.client import AgentClient

from agent.errors import AgentStarting, AgentUnavailable, LocalApiError
from agent.localapi.httpd import ApiError, response
from agent.localapi.httploop import _BUSY
from pospal_protocol.clock import FakeClock
from tests.clients.scripted import ScriptedServer, http_answer, read_request

NOT_LICENSED = json.dumps({"license_state": "license_missing", "licensed": False}).encode()
OK = http_answer(200, NOT_LICENSED)
# The agent's own answer while it hands over to a new version (agent.selfupdate.launched.TrackedApi), kept
# alive.
UPDATING = response(
    503,
    ApiError(503, "updating", "The agent is updating; ask again in a moment.", {"retry_after": 1}).body(),
    "Retry-After: 1\r\n",
)


def _busy_with(seconds: int) -> bytes:
    return _BUSY.replace(b"Retry-After: 1\r\n", b"Retry-After: %d\r\n" % seconds)


@pytest.fixture
def scripted():
    servers: list[ScriptedServer] = []

    def start(script, port: int = 0) -> ScriptedServer:
        server = ScriptedServer(script, port)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def _counting(answers: list[bytes], then: bytes | None, asked: list[int]):
    """Answer the i-th request with answers[i] (`then` once they run out), counting requests."""

    def script(_index: int, sock: socket.socket) -> None:
        while read_request(sock):
            n = len(asked)
            asked.append(n)
            answer = answers[n] if n < len(answers) else then
            if answer is None:
                return
            sock.sendall(answer)
            if b"Connection: close" in answer:
                return

    return script


def test_a_busy_agent_during_a_flood_still_answers_the_pos_once(scripted):
    asked: list[int] = []
    server = scripted(_counting([_BUSY], OK, asked))  # the agent's real 503 busy, Retry-After: 1
    pos = AgentClient(server.port, timeout=5.0, trust_file=None)
    assert pos.verified_license()["licensed"] is False  # the answer, not the busy refusal
    assert len(asked) == 2


def test_an_agent_busy_for_ever_gives_the_busy_error_by_the_deadline(scripted):
    asked: list[int] = []
    server = scripted(_counting([], _busy_with(0), asked))  # Retry-After: 0, so many retries fit
    with pytest.raises(LocalApiError) as info:
        AgentClient(server.port, timeout=1.0, trust_file=None).license()
    assert (info.value.status, info.value.code) == (503, "busy")
    assert 2 <= len(asked) <= retry.MAX_ATTEMPTS


def test_a_retry_after_past_the_deadline_is_not_waited_for(scripted):
    asked: list[int] = []
    server = scripted(_counting([], _busy_with(30), asked))
    with pytest.raises(LocalApiError) as info:
        AgentClient(server.port, timeout=2.0, trust_file=None).license()
    assert info.value.code == "busy"
    assert len(asked) == 1  # 30 s cannot fit in 2 s: no retry started


def test_a_pos_request_during_an_update_swap_gets_the_new_answer(scripted):
    asked: list[int] = []
    server = scripted(_counting([OK, UPDATING], OK, asked))
    pos = AgentClient(server.port, timeout=5.0, trust_file=None)
    assert pos.license()["licensed"] is False
    assert pos.license()["licensed"] is False  # updating once, then answered on the same connection
    assert len(asked) == 3


def test_starting_is_not_retried_so_can_sell_keeps_its_own_limit(scripted):
    asked: list[int] = []
    body = json.dumps({"error": "starting", "message": "The agent is starting.", "retry_after": 1}).encode()
    server = scripted(_counting([], http_answer(503, body), asked))
    with pytest.raises(AgentStarting):
        AgentClient(server.port, timeout=5.0, trust_file=None).verified_license()
    assert len(asked) == 1


def test_a_refused_connection_while_the_agent_swaps_versions_is_ridden_over(scripted):
    old = scripted(_counting([], OK, []))
    port = old.port
    pos = AgentClient(port, timeout=10.0, trust_file=None)
    assert pos.license()["licensed"] is False  # the old version answered: the POS knows an agent
    old.stop()  # the old version is gone; for a moment nothing listens on the port
    asked: list[int] = []
    # The new version listens a moment later, while the POS's call is retrying its refused connections.
    starter = threading.Timer(0.3, lambda: scripted(_counting([], OK, asked), port))
    starter.start()
    try:
        assert pos.license()["licensed"] is False  # answered by the new version
    finally:
        starter.join(10)
    assert len(asked) == 1


def test_no_agent_ever_is_still_unavailable_at_once_and_not_retried(monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    attempts: list[int] = []
    original = retry.Budget.begin

    def counted(self: retry.Budget) -> None:
        attempts.append(1)
        original(self)

    monkeypatch.setattr(retry.Budget, "begin", counted)
    with pytest.raises(AgentUnavailable):
        AgentClient(port, timeout=5.0, trust_file=None).license()
    assert len(attempts) == 1  # never answered: a refusal means no agent, not a swap


# -- the budget, on a fake clock ------------------------------------------------------------------------


def _run(deadline_in: float, took: float, wait: float, gap: bool = False) -> tuple[FakeClock, retry.Budget]:
    """Attempts that each take `took` and fail, retried with `wait` until the budget says no."""
    clock = FakeClock()
    start = clock.monotonic()
    budget = retry.Budget(start + deadline_in, clock, sleep=clock.advance)
    while True:
        budget.begin()
        if budget.attempts > 1:
            # A retry is started only when one more attempt like the last one fits before the deadline.
            assert clock.monotonic() + took <= budget.deadline
        clock.advance(min(took, budget.deadline - clock.monotonic()))  # the wire stops at the deadline
        if not (budget.retry_gap() if gap else budget.retry(wait)):
            return clock, budget


def test_the_retry_budget_never_passes_the_deadline_on_a_fake_clock():
    rng = random.Random(28)
    for _ in range(500):
        deadline_in = rng.uniform(0.1, 5.0)
        took = rng.uniform(0.0, 0.5)
        wait = rng.choice([0.0, 0.01, 0.3, 1.0, 3.0, 60.0])
        clock, budget = _run(deadline_in, took, wait, gap=rng.random() < 0.3)
        assert clock.monotonic() <= budget.deadline
        assert 1 <= budget.attempts <= retry.MAX_ATTEMPTS


def test_the_budget_honours_retry_after_and_counts_the_attempts_that_fit():
    # 2 s, attempts of 0.1 s, Retry-After 1: at 0 and at 1.1; a third would start at 2.2, past 2.
    clock, budget = _run(2.0, 0.1, 1.0)
    assert budget.attempts == 2
    assert clock.monotonic() - 1000.0 == pytest.approx(1.2)


def test_retry_after_comes_from_the_header_then_the_body():
    assert retry.retry_after({"retry-after": "3"}, {"retry_after": 1}) == 3.0
    assert retry.retry_after({}, {"retry_after": 1}) == 1.0
    assert retry.retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, {}) == retry.DEFAULT_WAIT_S
    assert retry.retry_after({}, {"retry_after": True}) == retry.DEFAULT_WAIT_S
