"""The Windows service's control handler (agent.host.winservice.ServiceHost) against a fake Service Control
Manager: what the SCM is told on start, stop, shutdown and a crash, and that the core it hosts is the
headless run path with its stop event."""

from __future__ import annotations

import threading

import pytest

from agent.host import winservice
from agent.host.winservice import RUNNING, START_PENDING, STOP_PENDING, STOPPED, ServiceHost


class FakeScm:
    """Records every report; `fail` records the exit code the process would end with."""

    def __init__(self) -> None:
        self.reports: list[str] = []
        self.failed: int | None = None
        self.changed = threading.Condition()

    def report(self, state: str, wait_hint_ms: int = 0) -> None:
        with self.changed:
            self.reports.append(state)
            self.changed.notify_all()

    def fail(self, exit_code: int) -> None:
        self.failed = exit_code

    def wait_for(self, state: str) -> None:
        with self.changed:
            assert self.changed.wait_for(lambda: state in self.reports, timeout=10), self.reports


class FakeCore:
    """A core like `run_headless`: ready once listening, then serves until the stop event is set."""

    def __init__(self, *, crash_after_ready: bool = False, returns_early: bool = False) -> None:
        self.crash_after_ready = crash_after_ready
        self.returns_early = returns_early
        self.saved = False

    def __call__(self, stop: threading.Event, *, on_ready) -> int:
        on_ready()
        if self.crash_after_ready:
            raise RuntimeError("disk gone")
        if self.returns_early:
            return 3
        assert stop.wait(10), "the stop event was never set"
        self.saved = True  # the real core saves its state and releases the port on the way out
        return 0


def start_host(core) -> tuple[ServiceHost, FakeScm, threading.Thread]:
    scm = FakeScm()
    host = ServiceHost(scm, core)
    thread = threading.Thread(target=host.run, daemon=True)
    thread.start()
    return host, scm, thread


@pytest.mark.parametrize("control", ["stop", "shutdown"])
def test_start_then_stop_or_shutdown_tells_the_scm_each_step_and_lets_the_core_save(control):
    core = FakeCore()
    host, scm, thread = start_host(core)
    scm.wait_for(RUNNING)
    getattr(host, control)()
    thread.join(10)
    assert not thread.is_alive()
    assert scm.reports == [START_PENDING, RUNNING, STOP_PENDING, STOPPED]
    assert core.saved and scm.failed is None


def test_a_second_stop_is_ignored():
    host, scm, thread = start_host(FakeCore())
    scm.wait_for(RUNNING)
    host.stop()
    host.shutdown()
    thread.join(10)
    assert scm.reports.count(STOP_PENDING) == 1


def test_a_crashing_core_ends_the_process_as_failed_without_saying_stopped():
    """No STOPPED and a non-zero exit: the SCM treats it as a crash and runs the recovery actions."""
    _host, scm, thread = start_host(FakeCore(crash_after_ready=True))
    thread.join(10)
    assert scm.failed == winservice.EXIT_FAILED
    assert STOPPED not in scm.reports


def test_a_core_that_returns_unasked_is_a_failure_too():
    _host, scm, thread = start_host(FakeCore(returns_early=True))
    thread.join(10)
    assert scm.failed == 3
    assert STOPPED not in scm.reports


def test_a_core_that_cannot_bind_fails_before_saying_running():
    """A squatter on 7421 at boot: the start fails, and the SCM retries it (recovery) until it binds."""

    def core(stop, *, on_ready):
        raise winservice.Error("cannot listen on 127.0.0.1:7421")

    _host, scm, thread = start_host(core)
    thread.join(10)
    assert scm.reports == [START_PENDING]
    assert scm.failed == winservice.EXIT_FAILED


def test_a_stop_during_start_never_reports_running_after_stop_pending():
    gate = threading.Event()

    def core(stop, *, on_ready):
        assert gate.wait(10)
        on_ready()
        stop.wait(10)
        return 0

    host, scm, thread = start_host(core)
    scm.wait_for(START_PENDING)
    host.stop()
    gate.set()
    thread.join(10)
    assert scm.reports == [START_PENDING, STOP_PENDING, STOPPED]


def test_the_service_hosts_the_headless_run_path(monkeypatch):
    """run_core is `run --headless`'s code: agent.cli.run_headless, given the host's stop event."""
    seen = {}

    def fake_run_headless(stop, *, on_ready):
        seen["stop"] = stop
        on_ready()
        return 0

    monkeypatch.setattr("agent.cli.run_headless", fake_run_headless)
    scm = FakeScm()
    host = ServiceHost(scm, winservice.run_core)
    host.stop_requested.set()  # already asked to stop: the run ends at once
    host.run()
    assert seen["stop"] is host.stop_requested


def test_run_headless_serves_until_stopped_and_releases_the_port(tmp_path, monkeypatch):
    """The real core, as the service runs it: ready once listening, port free again after stop."""
    import socket

    from agent import cli

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("POSPAL_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("POSPAL_AGENT_PORT", str(port))
    monkeypatch.setenv("POSPAL_SERVER_URL", "http://127.0.0.1:9")
    stop, ready = threading.Event(), threading.Event()
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(cli.run_headless(stop, on_ready=ready.set)))
    thread.start()
    try:
        assert ready.wait(30)
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
    finally:
        stop.set()
        thread.join(30)
    assert result == [0]
    with socket.socket() as again:  # released: the port binds again
        again.bind(("127.0.0.1", port))


def test_service_commands_refuse_off_windows(monkeypatch):
    monkeypatch.setattr(winservice.sys, "platform", "linux")
    with pytest.raises(winservice.Error, match="Windows service"):
        winservice.install()


def test_the_service_command_runs_the_installed_exe_when_frozen(monkeypatch):
    monkeypatch.setattr(winservice.sys, "frozen", True, raising=False)
    monkeypatch.setattr(
        winservice.sys, "executable", r"C:\Program Files\POSPal License Agent\pospal-agent.exe"
    )
    assert winservice.service_command() == [
        r"C:\Program Files\POSPal License Agent\pospal-agent.exe",
        "service",
        "run",
    ]
