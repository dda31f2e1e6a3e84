"""The license core as the Windows service "POSPal License Agent" (service name `POSPalAgent`).

The Service Control Manager starts `pospal-agent.exe service run` at boot (automatic start, before any
login), as the virtual account `NT SERVICE\\POSPalAgent`. Its body (`run_core`) is the update launcher
(`agent.selfupdate.launcher`) over `%ProgramData%\\POSPal\\install` (`install_root`): the launcher
holds 127.0.0.1:7421 and runs the current agent version, `pospal-agent.exe run --headless` on its socket,
swapping to a staged update at an idle moment and back when one fails its start check. At each start the
service seeds that install from itself (a command seed naming this `pospal-agent.exe`: the version the
installer put in Program Files), so a fresh install or an installer upgrade runs its own version unless a
newer staged update is current. This module adds only what a service needs around it:

- `ServiceHost`: the control handler's logic, free of pywin32 so Linux tests drive it with a fake SCM.
  It says START_PENDING, then RUNNING once the local API listens; on STOP or SHUTDOWN it says
  STOP_PENDING and sets the core's stop event (the core saves its state and releases the port), then
  STOPPED. A core that raises, or returns without being asked to stop, is a failure: the process exits
  with a non-zero code without reporting STOPPED, which the SCM counts as a crash and answers with the
  recovery actions (restart).
- the pywin32 side (`win32serviceutil.ServiceFramework`, `servicemanager`), built only on Windows;
- `install`, `remove`, `start`, `stop`: what the installer runs (`pospal-agent.exe service install` and
  so on). `install` also sets the DACLs of agent.host.winacl on the data directory, the marks key and the
  service object, so the installer needs no ACL tooling of its own.

Why a virtual account rather than LocalService: its SID (`winacl.service_sid`) belongs to this service
alone, so the data directory's DACL grants exactly this service and no other LocalService process; it
needs no password, and reaches the network as the computer account (only outbound HTTPS is needed).

The executable the service runs is `service_command()[0]`: the installed `pospal-agent.exe` in a frozen
build. An updater that installs a new version elsewhere points the service at it with `install(command)`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from agent.errors import Error

log = logging.getLogger(__name__)

SERVICE_NAME = "POSPalAgent"
DISPLAY_NAME = "POSPal License Agent"
DESCRIPTION = (
    "Answers the POS's license questions on 127.0.0.1:7421, keeps the license in sync with POSPal's server."
)
ACCOUNT = rf"NT SERVICE\{SERVICE_NAME}"

START_PENDING = "start-pending"
RUNNING = "running"
STOP_PENDING = "stop-pending"
STOPPED = "stopped"

# How long the SCM should wait before it thinks a pending start or stop hangs (it asks again then).
START_WAIT_MS = 30_000
STOP_WAIT_MS = 15_000
# The process's exit code when the core fails: any non-zero code makes the SCM apply recovery actions.
EXIT_FAILED = 1

# RUNNING once the launcher's agent answers health, or after this long anyway (the port is held by then).
READY_WITHIN_S = 25.0

# Recovery: restart after 2 s, again after 2 s, then every 10 s; the count resets after a quiet day.
RESTART_DELAYS_MS = (2_000, 2_000, 10_000)
FAILURE_RESET_S = 86_400


class Scm(Protocol):
    """What the service tells the Service Control Manager."""

    def report(self, state: str, wait_hint_ms: int = 0) -> None:
        """Report a state (START_PENDING, RUNNING, STOP_PENDING, STOPPED)."""
        ...

    def fail(self, exit_code: int) -> None:
        """End the process as failed (non-zero exit, no STOPPED), so the SCM's recovery restarts it."""
        ...


Core = Callable[..., int]


class ServiceHost:
    """Runs `core(stop, on_ready=...)` and translates its life into what the SCM is told."""

    def __init__(self, scm: Scm, core: Core) -> None:
        self.scm = scm
        self.core = core
        self.stop_requested = threading.Event()
        self._lock = threading.Lock()

    def run(self) -> None:
        """The service's main: returns after STOPPED, or after `scm.fail` when the core failed."""
        self.scm.report(START_PENDING, START_WAIT_MS)
        try:
            code = self.core(self.stop_requested, on_ready=self._ready)
        except (Exception, SystemExit):  # the launcher exits when a swap fails with nothing to go back to
            log.exception("the license core failed; the Service Control Manager restarts it")
            self.scm.fail(EXIT_FAILED)
            return
        if not self.stop_requested.is_set():
            log.error(
                "the license core stopped by itself (exit %s); the Service Control Manager restarts it", code
            )
            self.scm.fail(code or EXIT_FAILED)
            return
        log.info("service stopped")
        self.scm.report(STOPPED)

    def _ready(self) -> None:
        with self._lock:
            if not self.stop_requested.is_set():  # a stop that came first wins: never "running" after it
                self.scm.report(RUNNING)

    def stop(self) -> None:
        """SERVICE_CONTROL_STOP: STOP_PENDING, then the core stops (state saved, port released)."""
        with self._lock:
            if self.stop_requested.is_set():
                return
            self.scm.report(STOP_PENDING, STOP_WAIT_MS)
            self.stop_requested.set()

    def shutdown(self) -> None:
        """SERVICE_CONTROL_SHUTDOWN: the machine is going down; stop exactly as for STOP."""
        self.stop()


def install_root() -> Path:
    """The launcher's install directory: `%ProgramData%\\POSPal\\install`, under the data root's DACL
    (the service and administrators write it; a till user can read it, never change it)."""
    from agent.host.winacl import data_root

    return data_root() / "install"


def seed_command() -> list[str]:
    """What the seeded version runs: this frozen `pospal-agent.exe`; from a source tree, this Python with
    `-m agent.cli`."""
    if getattr(sys, "frozen", False):
        return [sys.executable]
    return [sys.executable, "-m", "agent.cli"]


def run_core(stop: threading.Event, *, on_ready: Callable[[], None]) -> int:
    """The core the service hosts: the launcher over `install_root()`, seeded from this build first."""
    from agent.cli import _setup_logging
    from agent.config import AgentSettings
    from agent.selfupdate.install import Install
    from agent.vault import store
    from pospal_protocol import __version__

    settings = AgentSettings.from_env()
    store.ensure_dir(settings.data_dir)
    _setup_logging(settings.data_dir, "service.log")  # the agent it runs writes agent.log
    install = Install(install_root())
    if not install.seed(__version__, seed_command(), script=False):
        log.info("agent %s installed; the staged update %s stays current", __version__, install.current())
    return run_launcher(install, settings.agent_port, stop, on_ready=on_ready)


def run_launcher(
    install: Any,
    port: int,
    stop: threading.Event,
    *,
    on_ready: Callable[[], None],
    env: dict[str, str] | None = None,
    ready_within_s: float = READY_WITHIN_S,
) -> int:
    """Run `agent.selfupdate.launcher.Launcher` on `install` until `stop` is set; `on_ready` once its
    agent answers `/v1/health` (or after `ready_within_s` regardless: the launcher holds the port and
    restarts an agent that fails, so the service is running either way). Returns the launcher's exit code
    (0 after a stop; 1 when the install holds no version). Raises `Error` when the port is taken."""
    from agent.selfupdate.launcher import Launcher, probe

    try:
        launcher = Launcher(install, port, env=env, quiet=True)
    except OSError as exc:
        raise Error(f"cannot listen on 127.0.0.1:{port}: {exc.strerror or exc}") from exc
    launcher.stop = stop

    def announce() -> None:
        end = time.monotonic() + ready_within_s
        while not stop.is_set() and time.monotonic() < end:
            health = probe(launcher.port, "/v1/health", 1.0)
            if health is not None and health.get("ok") is True:
                on_ready()
                return
            stop.wait(0.1)
        if not stop.is_set():
            log.warning("no agent answered /v1/health in %.0f s; the launcher goes on", ready_within_s)
            on_ready()

    threading.Thread(target=announce, name="service-ready", daemon=True).start()
    return launcher.run()


def service_command() -> list[str]:
    """The command line the SCM starts: this frozen executable with `service run`. From a source tree
    (tests, a developer), the Python interpreter running `agent.cli`."""
    if getattr(sys, "frozen", False):
        return [sys.executable, "service", "run"]
    return [sys.executable, "-m", "agent.cli", "service", "run"]


def _quote(args: Sequence[str]) -> str:
    import subprocess

    return subprocess.list2cmdline(list(args))


# ------------------------------------------------------------------------------------------- Windows


def framework_class() -> Any:  # pragma: no cover - Windows only; run by the Wine smoke test
    """The pywin32 service class (built on Windows only, where pywin32 exists)."""
    import servicemanager
    import win32service
    import win32serviceutil

    states = {
        START_PENDING: win32service.SERVICE_START_PENDING,
        RUNNING: win32service.SERVICE_RUNNING,
        STOP_PENDING: win32service.SERVICE_STOP_PENDING,
        STOPPED: win32service.SERVICE_STOPPED,
    }

    class PywinScm:
        def __init__(self, service: Any) -> None:
            self.service = service

        def report(self, state: str, wait_hint_ms: int = 0) -> None:
            self.service.ReportServiceStatus(states[state], waitHint=wait_hint_ms)

        def fail(self, exit_code: int) -> None:
            servicemanager.LogErrorMsg(f"{DISPLAY_NAME}: the license core failed (exit {exit_code})")
            logging.shutdown()
            os._exit(exit_code)

    class LicenseAgentService(win32serviceutil.ServiceFramework):
        _svc_name_ = SERVICE_NAME
        _svc_display_name_ = DISPLAY_NAME
        _svc_description_ = DESCRIPTION

        def __init__(self, args: Any) -> None:
            super().__init__(args)
            self.host = ServiceHost(PywinScm(self), run_core)

        def SvcRun(self) -> None:  # noqa: N802 - pywin32's name; replaces its "RUNNING at once"
            self.host.run()

        def SvcStop(self) -> None:  # noqa: N802
            self.host.stop()

        def SvcShutdown(self) -> None:  # noqa: N802 - its presence makes pywin32 accept SHUTDOWN
            self.host.shutdown()

    return LicenseAgentService


def dispatch() -> int:  # pragma: no cover - Windows only
    """`service run`: hand this process to the SCM, which calls the service class's handlers."""
    import servicemanager
    import win32service

    servicemanager.Initialize()
    servicemanager.PrepareToHostSingle(framework_class())
    try:
        servicemanager.StartServiceCtrlDispatcher()
    except win32service.error as exc:
        raise Error(f"`service run` is started by the Service Control Manager ({exc.strerror})") from exc
    return 0


def _windows() -> None:
    if sys.platform != "win32":
        raise Error("the license service is a Windows service; on Linux use the systemd unit")


def install(command: Sequence[str] | None = None) -> None:  # pragma: no cover - Windows only
    """Create the service, or update it in place (an upgrade keeps its name and so its SID and data):
    automatic start as NT SERVICE\\POSPalAgent, restart on failure, the service DACL; then protect the
    data directory and the marks key (agent.host.winacl). Run elevated (the installer, maybe as SYSTEM)."""
    _windows()
    import win32service

    from agent.host import winacl
    from agent.vault import marks

    bin_path = _quote(command or service_command())
    scm = win32service.OpenSCManager(None, None, win32service.SC_MANAGER_ALL_ACCESS)
    try:
        try:
            handle = win32service.OpenService(scm, SERVICE_NAME, win32service.SERVICE_ALL_ACCESS)
            win32service.ChangeServiceConfig(
                handle,
                win32service.SERVICE_WIN32_OWN_PROCESS,
                win32service.SERVICE_AUTO_START,
                win32service.SERVICE_ERROR_NORMAL,
                bin_path,
                None,
                0,
                None,
                ACCOUNT,
                None,
                DISPLAY_NAME,
            )
            log.info("service %s updated: %s", SERVICE_NAME, bin_path)
        except win32service.error:
            handle = win32service.CreateService(
                scm,
                SERVICE_NAME,
                DISPLAY_NAME,
                win32service.SERVICE_ALL_ACCESS,
                win32service.SERVICE_WIN32_OWN_PROCESS,
                win32service.SERVICE_AUTO_START,
                win32service.SERVICE_ERROR_NORMAL,
                bin_path,
                None,
                0,
                None,
                ACCOUNT,
                None,
            )
            log.info("service %s created: %s", SERVICE_NAME, bin_path)
        try:
            _configure(handle)
            winacl.apply_to_service(handle, winacl.service_policy())
        finally:
            win32service.CloseServiceHandle(handle)
    finally:
        win32service.CloseServiceHandle(scm)
    winacl.apply_to_path(winacl.data_root(), winacl.data_dir_policy())
    winacl.apply_to_key(marks.REGISTRY_PATH, winacl.marks_key_policy())


def _configure(handle: Any) -> None:  # pragma: no cover - Windows only
    import win32service

    win32service.ChangeServiceConfig2(handle, win32service.SERVICE_CONFIG_DESCRIPTION, DESCRIPTION)
    actions = [(win32service.SC_ACTION_RESTART, delay) for delay in RESTART_DELAYS_MS]
    win32service.ChangeServiceConfig2(
        handle,
        win32service.SERVICE_CONFIG_FAILURE_ACTIONS,
        {"ResetPeriod": FAILURE_RESET_S, "RebootMsg": None, "Command": None, "Actions": actions},
    )
    try:
        # Recovery also when the service reports STOPPED with an error, not only when its process dies.
        win32service.ChangeServiceConfig2(handle, win32service.SERVICE_CONFIG_FAILURE_ACTIONS_FLAG, True)
    except win32service.error as exc:  # Wine 8: "Invalid level"; a crash still counts there
        log.warning("failure actions flag not set: %s", exc.strerror)


def _control(action: str, timeout_s: float) -> None:  # pragma: no cover - Windows only
    # WaitForServiceStatus counts quarter seconds with range(): whole seconds only.
    import win32service
    import win32serviceutil

    if action == "start":
        try:
            win32serviceutil.StartService(SERVICE_NAME)
        except win32service.error as exc:
            if exc.winerror != 1056:  # ERROR_SERVICE_ALREADY_RUNNING
                raise Error(f"cannot start {SERVICE_NAME}: {exc.strerror}") from exc
        win32serviceutil.WaitForServiceStatus(SERVICE_NAME, win32service.SERVICE_RUNNING, int(timeout_s))
        return
    try:
        win32serviceutil.StopService(SERVICE_NAME)
    except win32service.error as exc:
        if exc.winerror not in (1062, 1060):  # ERROR_SERVICE_NOT_ACTIVE, ERROR_SERVICE_DOES_NOT_EXIST
            raise Error(f"cannot stop {SERVICE_NAME}: {exc.strerror}") from exc
        return
    win32serviceutil.WaitForServiceStatus(SERVICE_NAME, win32service.SERVICE_STOPPED, int(timeout_s))


def start(timeout_s: float = 30.0) -> None:  # pragma: no cover - Windows only
    """Start the service and wait until it says RUNNING (its local API listens then)."""
    _windows()
    _control("start", timeout_s)


def stop(timeout_s: float = 30.0) -> None:  # pragma: no cover - Windows only
    """Stop the service (if it runs) and wait until it says STOPPED."""
    _windows()
    _control("stop", timeout_s)


def remove() -> None:  # pragma: no cover - Windows only
    """Stop and delete the service (the data directory stays; the uninstaller decides about it)."""
    _windows()
    import win32service
    import win32serviceutil

    stop()
    try:
        win32serviceutil.RemoveService(SERVICE_NAME)
    except win32service.error as exc:
        if exc.winerror != 1060:  # ERROR_SERVICE_DOES_NOT_EXIST: nothing to remove
            raise Error(f"cannot remove {SERVICE_NAME}: {exc.strerror}") from exc


# ----------------------------------------------------------------------------------------------- CLI


def cmd_service(args: argparse.Namespace) -> int:
    """`pospal-agent service ACTION`."""
    _windows()
    if args.action == "run":  # pragma: no cover - Windows only
        return dispatch()
    action = {"install": install, "remove": remove, "start": start, "stop": stop}[args.action]
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    action()  # pragma: no cover - Windows only
    return 0  # pragma: no cover


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `service` on the `pospal-agent` command line."""
    p = sub.add_parser("service", help="the Windows service: install, remove, start, stop (run: the SCM's)")
    p.add_argument("action", choices=["install", "remove", "start", "stop", "run"])
    p.set_defaults(func=cmd_service)
