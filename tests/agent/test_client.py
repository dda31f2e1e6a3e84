"""pospal_client.client against a real local API server (with a stub agent behind it) and against dead
ports."""

from __future__ import annotations

import socket
import threading

import pytest
from pospal_client import client as client_mod
from pospal_client.client import AgentClient

from agent.errors import AgentUnavailable, LocalApiError
from agent.localapi.api import LocalApi
from tests.agent.test_api import TOKEN, StubControl, StubStatus


@pytest.fixture
def control():
    return StubControl()


@pytest.fixture
def api(control):
    server = LocalApi(control, api_token=TOKEN, port=0, poll_interval=0.02).start()
    yield server
    server.stop()


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_license_health_and_sync(api, control):
    c = AgentClient(api.port)
    try:
        assert c.license()["license_state"] == "trial_active"
        assert c.health()["ok"] is True
        assert c.is_licensed() is True
        assert c.sync(TOKEN)["license_state"] == "licensed_active"
        control.set_status(StubStatus("trial_expired", False))
        assert c.license()["licensed"] is False and c.is_licensed() is False
    finally:
        c.close()
    assert client_mod.license(api.port)["license_state"] == "trial_expired"
    assert client_mod.health(api.port)["ok"] is True
    assert client_mod.sync(TOKEN, api.port)["license_state"] == "licensed_active"


def test_sync_without_the_token_is_refused_with_the_api_code(api, control):
    with pytest.raises(LocalApiError) as info:
        AgentClient(api.port).sync()
    assert (info.value.status, info.value.code) == (401, "unauthorized")
    assert control.calls == []


def test_no_agent_raises_agent_unavailable_and_is_not_licensed():
    c = AgentClient(_dead_port(), timeout=1)
    with pytest.raises(AgentUnavailable):
        c.license()
    assert c.is_licensed() is False


def test_an_agent_that_never_answers_times_out():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        c = AgentClient(listener.getsockname()[1], timeout=0.2)
        with pytest.raises(AgentUnavailable, match="did not answer in time"):
            c.license()


def test_reconnects_after_the_agent_restarted(control):
    first = LocalApi(control, api_token=TOKEN, port=0, poll_interval=0.02).start()
    port = first.port
    c = AgentClient(port)
    assert c.license()["licensed"] is True
    first.stop()
    second = LocalApi(control, api_token=TOKEN, port=port, poll_interval=0.02).start()
    try:
        # The old keep-alive socket is dead; the client notices and reconnects once.
        assert c.license()["licensed"] is True
        assert c.sync(TOKEN)["license_state"] == "licensed_active"
    finally:
        c.close()
        second.stop()


def test_each_thread_has_its_own_connection(api):
    c = AgentClient(api.port)
    results = []

    def poll():
        results.extend(c.license()["licensed"] for _ in range(10))
        c.close()

    threads = [threading.Thread(target=poll) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert results == [True] * 40


def test_port_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("POSPAL_AGENT_PORT", "7999")
    assert AgentClient().port == 7999
    monkeypatch.setenv("POSPAL_AGENT_PORT", "junk")
    assert AgentClient().port == 7421


# ------------------------------------------------------------------------------ verified_license (unit)

from datetime import timedelta  # noqa: E402

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402

from agent.errors import AgentStarting, BadProof, LicenseExpired, OtherMachine  # noqa: E402
from pospal_protocol.clock import FakeClock  # noqa: E402
from pospal_protocol.trust import encode_public_key, jwk_thumbprint  # noqa: E402
from tests.agent import tokenkit  # noqa: E402


class Machine:
    """A machine key and a server signer minting tokens bound to it (cnf.jkt)."""

    def __init__(self) -> None:
        self.key = Ed25519PrivateKey.generate()
        self.signer = tokenkit.Signer()

    def token(self, **overrides) -> str:
        overrides.setdefault("cnf", {"jkt": jwk_thumbprint(self.key.public_key())})
        return self.signer.sign(**overrides)


def _proving_api(control, prover):
    return LocalApi(control, api_token=TOKEN, port=0, poll_interval=0.02, prover=prover).start()


def _client(api, machine, clock=None, **kw):
    c = AgentClient(
        api.port,
        trusted_keys=machine.signer.trusted(),
        clock=clock or FakeClock(tokenkit.NOW),
        fingerprinter=lambda: tokenkit.FP,
        **kw,
    )
    c.wait_ready(5)
    return c


@pytest.fixture
def machine():
    return Machine()


def test_verified_license_accepts_the_genuine_agent_and_caches_it(control, machine):
    token = machine.token()
    api = _proving_api(control, lambda: (token, machine.key))
    asked = []
    original = api.challenge_response
    api.challenge_response = lambda q, *rest: asked.append(q) or original(q, *rest)
    clock = FakeClock(tokenkit.NOW)
    try:
        c = _client(api, machine, clock, recheck_s=60)
        first = c.verified_license()
        assert first["license_state"] == "trial_active" and first["licensed"] is True
        assert "proof" not in first and "token" not in first
        assert c.verified_license() == first and len(asked) == 1  # cached: no new challenge
        clock.advance(61)
        assert c.verified_license()["licensed"] is True and len(asked) == 2  # re-challenged
        assert asked[0] != asked[1]
    finally:
        api.stop()


def test_a_plain_answer_without_proof_is_refused(control, machine):
    api = _proving_api(control, lambda: (None, None))
    try:
        with pytest.raises(BadProof) as info:
            _client(api, machine).verified_license()
        assert info.value.reason == "no_token"
    finally:
        api.stop()


@pytest.mark.parametrize(
    ("make", "error", "reason"),
    [
        (
            lambda m: (tokenkit.Signer().sign(cnf={"jkt": jwk_thumbprint(m.key.public_key())}), m.key),
            BadProof,
            "token",
        ),
        (lambda m: (m.signer.sign(), m.key), BadProof, "unbound"),
        (lambda m: (m.token(), Ed25519PrivateKey.generate()), BadProof, "key"),
        (lambda m: (m.token(fp={k: "0" * 64 for k in tokenkit.FP}), m.key), OtherMachine, "fingerprint"),
        (
            lambda m: (m.token(iat=tokenkit.NOW_TS - 15 * tokenkit.DAY), m.key),
            LicenseExpired,
            "offline_expired",
        ),
        (
            lambda m: (
                m.token(status="canceled", cancel_at=tokenkit.NOW_TS - 60, period_end=tokenkit.NOW_TS - 60),
                m.key,
            ),
            LicenseExpired,
            "licensed_cancelled",
        ),
        (lambda m: (m.token(status="revoked"), m.key), BadProof, "contradicts"),
    ],
    ids=[
        "untrusted-signer",
        "token-without-cnf",
        "key-not-the-tokens",
        "other-machine",
        "lease-expired",
        "cancelled-but-says-licensed",
        "revoked-but-says-licensed",
    ],
)
def test_verified_license_refuses_with_a_reason(control, machine, make, error, reason):
    token, key = make(machine)
    api = _proving_api(control, lambda: (token, key))
    try:
        with pytest.raises(error) as info:
            _client(api, machine).verified_license()
        assert info.value.reason == reason and info.value.message
    finally:
        api.stop()


def test_expired_by_the_clients_own_clock(control, machine):
    token = machine.token()
    api = _proving_api(control, lambda: (token, machine.key))
    try:
        late = FakeClock(tokenkit.NOW + timedelta(days=15))
        with pytest.raises(LicenseExpired):
            _client(api, machine, late).verified_license()
    finally:
        api.stop()


def test_a_body_changed_after_signing_is_refused(control, machine):
    token = machine.token()
    api = _proving_api(control, lambda: (token, machine.key))
    original = api.challenge_response

    def tamper(query, *rest):
        return original(query, *rest).replace(b'"reason":null', b'"reason":"xx"')

    api.challenge_response = tamper
    try:
        with pytest.raises(BadProof) as info:
            _client(api, machine).verified_license()
        assert info.value.reason == "proof"
    finally:
        api.stop()


def test_agent_starting_is_told_apart_from_no_agent(control, machine):
    loaded = threading.Event()
    token = machine.token()

    def slow_prover():
        loaded.wait(10)
        return token, machine.key

    api = _proving_api(control, slow_prover)
    try:
        c = AgentClient(
            api.port,
            trusted_keys=machine.signer.trusted(),
            clock=FakeClock(tokenkit.NOW),
            fingerprinter=lambda: tokenkit.FP,
        )
        with pytest.raises(AgentStarting):
            c.verified_license()
        with pytest.raises(AgentStarting):
            c.wait_ready(0.3)
        assert c.health()["ready"] is False
        loaded.set()
        assert c.wait_ready(5)["ready"] is True
        assert c.verified_license()["licensed"] is True
    finally:
        loaded.set()
        api.stop()
    with pytest.raises(AgentUnavailable) as info:
        AgentClient(_dead_port(), timeout=0.5).verified_license()
    assert not isinstance(info.value, AgentStarting)


@pytest.mark.parametrize("challenge", ["", "short", "A" * 100, "a+b/" * 8, "%00" * 20])
def test_a_malformed_challenge_is_refused(control, machine, challenge):
    token = machine.token()
    api = _proving_api(control, lambda: (token, machine.key))
    try:
        with pytest.raises(LocalApiError) as info:
            AgentClient(api.port).request("GET", f"/v1/license?challenge={challenge}")
        assert (info.value.status, info.value.code) == (400, "bad_challenge")
    finally:
        api.stop()


def test_the_answer_names_the_machine_key(control, machine):
    token = machine.token()
    api = _proving_api(control, lambda: (token, machine.key))
    try:
        c = _client(api, machine)
        answer = c.request("GET", "/v1/license?challenge=" + "A" * 43)
        assert answer["token"] == token
        assert answer["machine_key"] == encode_public_key(machine.key.public_key())
        assert isinstance(answer["proof"], str)
    finally:
        api.stop()


def test_a_pos_clock_a_few_minutes_slow_still_accepts_a_fresh_token(control, machine):
    """Right after a sync the token is newer than a slow PC clock: genuine all the same, never refused."""
    token = machine.token()
    api = _proving_api(control, lambda: (token, machine.key))
    try:
        slow = FakeClock(tokenkit.NOW - timedelta(minutes=10))
        assert _client(api, machine, slow).verified_license()["licensed"] is True
    finally:
        api.stop()


def test_a_challenge_answer_comes_in_the_language_asked_and_verifies(machine):
    """`?lang=el&challenge=...` proves the Greek answer the same way (the status carries translations)."""
    import dataclasses

    from agent.core.state import StatusInputs, compute_status
    from pospal_protocol.tokens import Claims, verify_token

    token = machine.token()
    claims: Claims = verify_token(token, machine.signer.trusted(), tokenkit.NOW)
    inputs = StatusInputs(now=tokenkit.NOW, claims=claims, fingerprint_match=True)
    status = compute_status(inputs)
    greek_text = compute_status(dataclasses.replace(inputs, language="el")).message
    status = dataclasses.replace(status, translations=(("en", status.message), ("el", greek_text)))
    control = StubControl()
    control.current = status
    api = _proving_api(control, lambda: (token, machine.key))
    try:
        c = _client(api, machine)
        english = c.verified_license()
        greek = c.request("GET", "/v1/license?lang=el&challenge=" + "A" * 43)
        assert greek["message"] != english["message"] and greek["proof"]
        from pospal_protocol.proof import verify_answer

        assert verify_answer(machine.key.public_key(), "A" * 43, greek)
    finally:
        api.stop()
