"""The Windows service's control handler (agent.host.winservice.ServiceHost) against a fake Service Control
Manager: what the SCM is told on start, stop, shutdown and a crash; that the core it hosts is the update
launcher over an install seeded from the service's own build, running the headless agent; and that
`run --headless` itself serves until stopped."""

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


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _get(port: int, path: str) -> dict | None:
    from agent.selfupdate.launcher import probe

    return probe(port, path, 2.0)


def test_the_service_runs_the_launcher_over_an_install_seeded_from_itself(tmp_path, monkeypatch):
    """run_core: the install under ProgramData seeded with this build's command, the launcher holding the
    port and running that version's `run --headless`; RUNNING once it answers; a stop ends the agent,
    frees the port and says STOPPED."""
    import json

    from agent.selfupdate.install import SEEDED, Install
    from pospal_protocol import __version__

    port = _free_port()
    monkeypatch.setattr(winservice, "install_root", lambda: tmp_path / "install")
    monkeypatch.setenv("POSPAL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("POSPAL_AGENT_PORT", str(port))
    monkeypatch.setenv("POSPAL_SERVER_URL", "http://127.0.0.1:9")  # offline: a provisional answer
    host, scm, thread = start_host(winservice.run_core)
    try:
        scm.wait_for(RUNNING)
        health = _get(port, "/v1/health")
        assert health is not None and health["version"] == __version__
        answer = _get(port, "/v1/license")
        assert answer is not None and "license_state" in answer
        install = Install(tmp_path / "install")
        assert install.current() == __version__
        seeded = json.loads((install.versions / __version__ / SEEDED).read_text())
        assert seeded == winservice.seed_command()
    finally:
        host.stop()
        thread.join(30)
    assert scm.reports == [START_PENDING, RUNNING, STOP_PENDING, STOPPED] and scm.failed is None
    assert _get(port, "/v1/health") is None  # the agent the launcher ran is gone with it
    import socket

    with socket.socket() as again:  # and the port is free for the next start
        again.bind(("127.0.0.1", port))


def test_a_service_whose_port_is_taken_fails_before_saying_running(tmp_path, monkeypatch):
    import socket

    from agent.selfupdate.install import Install

    install = Install(tmp_path / "install")
    install.seed("1.0.0", winservice.seed_command(), script=False)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        scm = FakeScm()
        host = ServiceHost(
            scm, lambda stop, on_ready: winservice.run_launcher(install, port, stop, on_ready=on_ready)
        )
        host.run()
    assert scm.reports == [START_PENDING] and scm.failed == winservice.EXIT_FAILED


def test_an_install_with_no_version_is_a_failure_the_scm_restarts(tmp_path):
    from agent.selfupdate.install import Install

    scm = FakeScm()
    empty = Install(tmp_path / "install")
    host = ServiceHost(
        scm,
        lambda stop, on_ready: winservice.run_launcher(empty, 0, stop, on_ready=on_ready, ready_within_s=0.2),
    )
    host.run()
    assert scm.failed == 1 and STOPPED not in scm.reports


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
