"""`pospal-agent` command line: a thin dispatcher, one small function per subcommand.

Each subcommand is registered by an `_add_<name>(subparsers)` function that sets `func` on its parser;
`main` parses and calls it. The function returns the process exit code.

- `service install|remove|start|stop|run` (Windows): the license core as the "POSPal License Agent"
  service (agent.host.winservice); `run` is what the Service Control Manager starts.
- `run [--headless]` runs the agent: local API, sync schedule and cache, plus the tray when a display
  exists, as a supervised child process (`run --tray-only`, which loads the UI through the
  `pospal_agent.frontends` entry point; the agent process itself never imports PySide6).
  Where the Linux system service serves this PC (agent.host.linuxservice), a user's `run` is only the tray.
- `status`, `trial`, `activate`, `buy`, `terminals`, `rename`, `sync`, `pause`, `resume`, `deactivate` talk
  to the running agent over its caller-checked channel (`agent.link.channelcontrol`, as the tray does), or the
  local API with the api-token from the data directory when it hosts none; when none answers they run
  the agent's service in this process for the one command, on the same data directory.
- Owner actions (buying on an e-mail that is already a customer's, adding this PC to its subscription,
  removing or renaming another terminal) ask for the owner's e-mailed code on stdin when the server wants
  it, as the window's owner dialog does, then try once more.
- `trial`, `activate` and `buy` take `--name` (this terminal's name, sent with its activation); `rename NAME
  [--terminal ID]` renames this PC, or another terminal of the license.

Settings come from POSPAL_SERVER_URL, POSPAL_AGENT_PORT and POSPAL_DATA_DIR. Exit codes: 0 done (for
`status`: licensed), 1 failed or (for `status`) not licensed, 2 usage, 130 interrupted. Errors are one
line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

from agent import messages
from agent.errors import Error
from pospal_protocol import __version__

log = logging.getLogger("agent.cli")


def cmd_fingerprint(args: argparse.Namespace) -> int:
    """Print each fingerprint component: name, whether its source worked, and its hash (never raw values)."""
    from pospal_protocol import fingerprint

    fp = fingerprint.current()
    rows = [c.to_dict() for c in fp.components]
    if args.json:
        print(json.dumps({"components": rows, "working": fp.working_count()}, indent=2))
        return 0
    for row in rows:
        state = "ok" if row["ok"] else "unavailable"
        print(f"{row['name']:<18} {state:<12} {row['hash'] or '-'}")
    print(f"{fp.working_count()} of {len(rows)} components available")
    return 0


def _add_fingerprint(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fingerprint", help="show this machine's fingerprint components (hashes only)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_fingerprint)


# -------------------------------------------------------------------------------------------------- run


def _setup_logging(data_dir: Any, name: str = "agent.log") -> None:
    """Log to stderr and to `data_dir/name` (rotated). The Windows service's launcher process logs to
    service.log: two processes rotating one file would collide on Windows."""
    from logging.handlers import RotatingFileHandler

    root = logging.getLogger()
    root.setLevel(logging.INFO)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    stderr = logging.StreamHandler()
    stderr.setFormatter(fmt)
    root.addHandler(stderr)
    # apscheduler logs every wake-up at INFO; the agent log must stay small.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    try:
        file = RotatingFileHandler(data_dir / name, maxBytes=1_000_000, backupCount=3, encoding="utf-8")
    except OSError as exc:
        log.warning("cannot write %s: %s", name, exc)
        return
    file.setFormatter(fmt)
    root.addHandler(file)


def _has_display() -> bool:
    if os.name == "nt":
        from agent.host.winsupport import interactive_session

        return interactive_session()  # session 0 (SYSTEM, a service) has no desktop for a tray
    return sys.platform == "darwin" or bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def cmd_run(args: argparse.Namespace) -> int:
    """Run the agent until SIGTERM, Ctrl+C or Quit in the tray; with `--tray-only`, only the tray.

    The tray is a child process (agent.link.supervisor) talking to the agent over its channel, restarted
    with backoff when it dies, so a Qt abort never stops the license answer. When another agent already
    serves this PC (a second Windows session), this one runs only its session's tray, attached to it,
    and takes over the service if that agent goes away; where the Linux system service serves this PC
    (agent.host.linuxservice), a user's run is only the tray from the start and never takes over.
    """
    from agent.config import AgentSettings

    settings = AgentSettings.from_env()
    if args.tray_only:
        return _run_tray_only(settings)
    from agent.host import linuxservice
    from agent.selfupdate import handoff

    if not handoff.inherited() and linuxservice.serves_for_others(settings.runtime_dir):
        return _beside_the_service(settings, args.headless)
    supported = _prepare(settings)
    if handoff.inherited():  # started by pospal-launcher (agent.selfupdate.launcher): serve on its socket
        from agent.selfupdate import launched

        return launched.run(settings)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    tray = _tray_supervisor(settings) if supported and not args.headless and _has_display() else None
    try:
        while not stop.is_set():
            if _serve(settings, tray, stop, headless=tray is None):
                return 0
            # Another agent serves this PC: keep our session's tray attached until it goes away.
            assert tray is not None
            tray.start()
            while not stop.wait(5.0) and not tray.quit.is_set() and _port_taken(settings.agent_port):
                pass
            if tray.quit.is_set():
                return 0
            log.info("the other agent is gone; taking over the service")
        return 0
    finally:
        if tray is not None:
            tray.stop()


def _beside_the_service(settings: Any, headless: bool) -> int:
    """A user's `run` while the Linux system service serves this PC (agent.host.linuxservice): only this
    session's tray, attached to the service, so no second core takes 7421 while the service restarts."""
    if headless or not _has_display():
        print(
            "pospal-agent: the POSPal License service serves this PC (systemctl status pospal-agent); "
            + ("a second agent here would compete for its port." if headless else "no display for a tray."),
            file=sys.stderr,
        )
        return 1 if headless else 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log.info("the POSPal License service serves this PC: running only this session's tray")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    tray = _tray_supervisor(settings)
    tray.start()
    try:
        while not stop.wait(1.0) and not tray.quit.is_set():
            pass
    finally:
        tray.stop()
    return 0


def run_headless(stop: threading.Event, *, on_ready: Callable[[], None] | None = None) -> int:
    """The headless core exactly as `run --headless` runs it, until `stop` is set; returns 0.

    This is the Windows service's body (agent.host.winservice): a service gets no signals, so its control
    handler owns `stop`. `on_ready` is called once the local API listens and the license service runs.
    Raises `Error` when the port cannot be bound.
    """
    from agent.config import AgentSettings

    settings = AgentSettings.from_env()
    _prepare(settings)
    _serve(settings, None, stop, headless=True, on_ready=on_ready)
    return 0


def _prepare(settings: Any) -> bool:
    """What every agent run does first: the data directory, the log, the per-user move; then whether this
    Windows is supported (told once if not)."""
    from agent.host import winsupport
    from agent.vault import store
    from pospal_protocol import winprobes

    store.ensure_dir(settings.data_dir)
    _setup_logging(settings.data_dir)
    _migrate(settings)
    return winsupport.check_and_tell(winprobes.windows_version())


def _serve(
    settings: Any,
    tray: Any,
    stop: threading.Event,
    *,
    headless: bool,
    on_ready: Callable[[], None] | None = None,
) -> bool:
    """Serve the local API and the license until stopped or the tray quits; False when another agent
    already serves the port (and this one has a tray to attach). Raises `Error` for any other bind failure.
    `on_ready` is called once both run (the Windows service tells the SCM "running" then)."""
    from agent.control import InProcessControl
    from agent.core.service import AgentService
    from agent.localapi import portcheck
    from agent.localapi.api import LocalApi
    from agent.vault import store

    service = AgentService(settings, probe_in_background=True)
    try:
        api = LocalApi(
            InProcessControl(service),
            api_token=store.ensure_api_token(settings.data_dir),
            port=settings.agent_port,
            allowed_origins=settings.allowed_origins,
            prover=service.proof_material,
            keyset_chain=service.keyset_chain,
        ).start()
    except OSError as exc:
        service.stop()
        failure = portcheck.explain(settings.agent_port, exc)
        log.warning("cannot listen on 127.0.0.1:%d: %s", settings.agent_port, failure.message)
        if failure.kind == portcheck.AGENT and not headless:
            return False
        raise Error(f"cannot listen on 127.0.0.1:{settings.agent_port}: {failure.message}") from exc
    from agent.link import channel

    # The tray's caller-checked channel (agent.link.channel): the service and `run --headless` both host it.
    tray_channel = channel.host(settings, api.routes, __version__)
    try:
        service.start()
        _take_over_old_app(service, settings)
        log.info(
            "agent %s listening on 127.0.0.1:%d, server %s, data %s",
            __version__,
            api.port,
            settings.server_url,
            settings.data_dir,
        )
        if on_ready is not None:
            on_ready()
        if tray is not None:
            tray.start()
        # Python runs signal handlers between waits; with a tray, its Quit is noticed within a second.
        while not stop.wait(1.0 if os.name == "nt" or tray is not None else 3600.0):
            if tray is not None and tray.quit.is_set():
                break
        return True
    finally:
        if tray_channel is not None:
            tray_channel.stop()
        api.stop()
        service.stop()
        log.info("agent stopped")


def _take_over_old_app(service: Any, settings: Any) -> None:
    """First run on a PC of the old POSPal app: move its license (agent/vault/pospal1.py), off the start
    path."""
    from agent.vault import pospal1

    threading.Thread(
        target=pospal1.take_over_once,
        args=(service, settings.data_dir, dict(os.environ)),
        name="pospal1-take-over",
        daemon=True,
    ).start()


def _port_taken(port: int) -> bool:
    from pospal_client.client import health

    from agent.errors import LocalApiError

    try:
        health(port, timeout=2.0)
    except LocalApiError:
        return False
    return True


def _tray_supervisor(settings: Any) -> Any:
    from agent.link.supervisor import ChildSupervisor, child_env, tray_command

    return ChildSupervisor(tray_command(), env=child_env(), log_path=settings.data_dir / "tray.log")


def _migrate(settings: Any) -> None:
    """Move a per-user install's data to the per-machine directory (first start of this version)."""
    from agent import config
    from agent.vault import migrate

    if os.environ.get("POSPAL_DATA_DIR"):
        return  # an explicit directory is the operator's choice: nothing to move
    try:
        moved = migrate.from_user_dir(config.legacy_user_data_dir(), settings.data_dir)
    except Error as exc:
        log.warning("could not move this user's license data: %s", exc.message)
        return
    if moved:
        log.info("moved this user's license data to %s: %s", settings.data_dir, ", ".join(moved))


def _run_tray_only(settings: Any) -> int:
    """The tray alone, attached to the running agent over its channel (its child, or a login's tray)."""
    from agent import connect
    from agent.link.supervisor import EXIT_NO_UI

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        run_tray = _load_tray()
    except Exception as exc:  # no UI installed, or PySide6 missing or broken: nothing to restart
        log.warning("tray unavailable (%s)", exc)
        return EXIT_NO_UI
    run_tray(connect(settings=settings))
    return 0


# The tray is a frontend found through this entry-point group (pyproject registers ui.app:run_tray), so
# agent/ never names the UI package (STYLE.md) and an agent-only install simply runs headless. A frozen
# bundle, which has no package metadata, registers it with `register_tray` instead.
TRAY_ENTRY_POINTS = "pospal_agent.frontends"
_tray_loader: Callable[[], Callable[[Any], Any]] | None = None


def register_tray(loader: Callable[[], Callable[[Any], Any]]) -> None:
    """Use `loader()` (which returns `run_tray(service)`) for the tray instead of the entry point."""
    global _tray_loader
    _tray_loader = loader


def _load_tray() -> Callable[[Any], Any]:
    """The registered tray, or the `tray` entry point; raises LookupError when neither exists."""
    if _tray_loader is not None:
        return _tray_loader()
    from importlib.metadata import entry_points

    for entry in entry_points(group=TRAY_ENTRY_POINTS, name="tray"):
        return entry.load()
    raise LookupError("no tray frontend is installed")


def _run_tray(service: Any) -> bool:
    """Run the tray (on a service or an AgentControl) until Quit; False (after a log line) when the UI
    cannot start here."""
    try:
        run_tray = _load_tray()
    except Exception as exc:  # no UI installed, or PySide6 missing or broken: the agent serves headless
        log.warning("tray unavailable (%s); running headless", exc)
        return False
    try:
        run_tray(service)
    except Exception:
        log.exception("tray failed; running headless")
        return False
    return True


def _add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run the agent (local API, sync, and the tray when a display exists)")
    p.add_argument("--headless", action="store_true", help="never start the tray")
    p.add_argument(
        "--tray-only",
        action="store_true",
        help="only the tray, attached to the running agent (the agent starts it this way)",
    )
    p.set_defaults(func=cmd_run)


# ------------------------------------------------------------------------------------- agent commands


def _control() -> Any:
    """The running agent over its channel (else its local API), or else this process's own service on the
    same data dir."""
    from pospal_client.client import AgentClient

    from agent.config import AgentSettings
    from agent.control import InProcessControl
    from agent.errors import AgentUnavailable
    from agent.localapi.remote import HttpControl
    from agent.vault import store

    settings = AgentSettings.from_env()
    try:
        AgentClient(settings.agent_port, timeout=1.0).health()
    except AgentUnavailable:
        from agent.core.service import AgentService

        return InProcessControl(AgentService(settings))
    # The service's caller-checked channel, as the tray uses (the service's files are closed to this
    # account); the bearer token only for an agent without one.
    from agent.link.channelcontrol import ChannelControl, open_stream

    opener = open_stream(settings)
    try:
        opener(1.0).close()
    except AgentUnavailable:
        return HttpControl(settings.agent_port, store.read_api_token(settings.data_dir))
    return ChannelControl(opener, timeout=60.0)


def _line(status: Any) -> str:
    days = f" ({status.days_left} days left)" if status.days_left is not None else ""
    return f"{status.license_state}{days}: {status.message}"


def _report(status: Any) -> int:
    print(_line(status))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """Print the status; exit 0 when licensed, 1 when not."""
    status = _control().status()
    if args.json:
        print(json.dumps(status.to_dict(), indent=2, ensure_ascii=False))
    else:
        print(_line(status))
    return 0 if status.licensed else 1


def cmd_trial(args: argparse.Namespace) -> int:
    """Start (or resume) this machine's trial (with `--email`, the server sends a reminder before it ends)."""
    control = _control()
    _name_this_pc(control, args.name)
    return _report(control.start_trial(args.email))


def _name_this_pc(control: Any, name: str | None) -> None:
    """`--name`: this PC's terminal name, kept before it activates and sent with its activation."""
    if name is not None:
        control.rename_terminal(name)


def cmd_rename(args: argparse.Namespace) -> int:
    """Rename this PC, or with `--terminal ID` another terminal of the license (the owner's).

    Renaming another terminal needs the owner: on an activated PC the owner's e-mailed code when the
    server asks (as for removing one); with `--email` (a PC not activated), a code e-mailed to the owner.
    """
    control = _control()
    if args.email:
        if not args.terminal:
            raise Error("give --terminal ID: the terminal to rename on the owner's license")
        code = _emailed_code(control, args.email, "owner")
        terminals = control.rename_terminal(args.name, args.terminal, args.email, code)
    else:
        owner = control.status().customer_email
        terminals = _as_owner(control, owner, lambda: control.rename_terminal(args.name, args.terminal))
    if not terminals:
        print(f"This PC is now called {control.status().terminal_name}.", file=sys.stderr)
    _print_terminals(terminals)
    return 0


def cmd_activate(args: argparse.Namespace) -> int:
    """Email a code to EMAIL, read it from stdin, activate this PC; or activate by file (offline)."""
    if args.offline_request:
        return _offline_request(args.offline_request)
    if args.offline_response:
        return _offline_response(args.offline_response)
    if not args.email:
        raise Error("give EMAIL, --offline-request FILE or --offline-response FILE")
    control = _control()
    _name_this_pc(control, args.name)
    return _report(control.activate(args.email, _emailed_code(control, args.email, "activate")))


def _emailed_code(control: Any, email: str, purpose: str) -> str:
    """Have the server e-mail a code for `purpose` to `email`, then read it from stdin."""
    control.request_code(email, purpose)
    print(f"A 6-digit code was sent to {email}.", file=sys.stderr)
    print("Code: ", end="", file=sys.stderr, flush=True)
    code = sys.stdin.readline().strip()
    if not code:
        raise Error("no code entered")
    return code


OWNER_REFUSAL = "owner_proof_required"
_NAME_HELP = "this terminal's name in the owner's list (default: the host name and a short tag)"


def _as_owner(control: Any, email: str | None, action: Callable[[], Any]) -> Any:
    """Run `action`; when the server says only the owner may, prove the owner's e-mail and run it once more.

    The window does the same with its owner dialog (ui/ownercode.py): a code (purpose "owner") goes to
    `email`, the owner types it here, and this PC may then do owner actions for 15 minutes.
    """
    try:
        return action()
    except Error as exc:
        if getattr(exc, "code", None) != OWNER_REFUSAL or not email:
            raise
    print(messages.text("owner.cli", _language_of(control), email=email), file=sys.stderr)
    control.prove_owner(email, _emailed_code(control, email, "owner"))
    return action()


def _language_of(control: Any) -> str:
    """The agent's language for a message printed here (English when the control cannot say)."""
    try:
        return str(control.language())
    except Exception:  # a CLI message must never fail on the language
        return messages.DEFAULT_LANGUAGE


def _ask_yes(question: str) -> bool:
    """Ask a y/N question on stderr; anything but y/yes (or no answer) is no."""
    print(f"{question} [y/N] ", end="", file=sys.stderr, flush=True)
    return sys.stdin.readline().strip().lower() in ("y", "yes")


def _offline_request(path: str) -> int:
    """Write this PC's activation request file to `path` (atomically), then say what to do with it."""
    from pathlib import Path

    from agent.vault import store

    target = Path(path)
    control = _control()
    store.atomic_write(target, control.offline_request(), mode=0o644)
    lang = _language_of(control)
    # The server's page in the request file's language (the agent's), so the owner reads it as the till does.
    url = f"{control.diagnostics().server_url.rstrip('/')}/offline?lang={lang}"
    print(messages.text("offline.request_saved", lang, path=target, url=url), file=sys.stderr)
    return 0


def _offline_response(path: str) -> int:
    """Import a license file from the server; refused files change nothing."""
    from pathlib import Path

    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise Error(f"cannot read {path}: {exc.strerror or exc}") from exc
    return _report(_control().import_offline_license(data))


def cmd_buy(args: argparse.Namespace) -> int:
    """Open Checkout for EMAIL, then wait until it is paid and this PC is activated."""
    import webbrowser

    restaurant = args.restaurant.strip()
    if not restaurant and sys.stdin.isatty():
        print("Restaurant name (for the invoice): ", end="", file=sys.stderr, flush=True)
        restaurant = sys.stdin.readline().strip()
    control = _control()
    _name_this_pc(control, args.name)
    # The invoice needs a name; the email stands in when none was given (the portal can change it).
    email, name = args.email, restaurant or args.email
    try:
        checkout = _as_owner(
            control, email, lambda: control.start_checkout(email, name, args.quantity, args.new_subscription)
        )
    except Error as exc:
        if getattr(exc, "code", None) != "subscription_exists":
            raise
        return _add_this_terminal(control, args.email)
    print(checkout.url, flush=True)
    try:
        webbrowser.open(checkout.url)
    except Exception:  # no browser here: the URL is printed above
        log.debug("could not open a browser", exc_info=True)
    print("Waiting for the payment to complete (Ctrl+C to stop)...", file=sys.stderr, flush=True)
    status = control.wait_checkout(checkout.checkout_id, threading.Event(), args.poll)
    return _report(status)


def _add_this_terminal(control: Any, email: str) -> int:
    """The e-mail already subscribes: offer to add this PC to that subscription (price first), never a
    second subscription unasked. Exit 1 when the owner declines."""
    preview = _as_owner(control, email, lambda: control.add_terminal(email))
    if preview.quantity_new <= preview.quantity_now:
        print(
            f"{email} already has a subscription with a free seat: this PC can use it at no charge.",
            file=sys.stderr,
        )
    else:
        price = f"{preview.amount_due / 100:.2f} {preview.currency.upper()}"
        print(
            f"{email} already has a subscription. Adding this PC takes it from {preview.quantity_now} to "
            f"{preview.quantity_new} terminals; charged now for the rest of this period: {price}.",
            file=sys.stderr,
        )
    if not _ask_yes("Add this terminal?"):
        print("Nothing was changed (`buy --new-subscription` buys a second subscription).", file=sys.stderr)
        return 1
    control.add_terminal(email, True, preview.quantity_new)
    return _report(control.status())


def cmd_terminals(args: argparse.Namespace) -> int:
    """List the license's terminals; `--remove ID` frees one's seat (the owner's code when asked).

    On an activated PC the list is machine-signed; with `--email` (a PC not activated yet, e.g. moving the
    license here) a code e-mailed to the owner proves it.
    """
    control = _control()
    if args.email:
        code = _emailed_code(control, args.email, "terminals")
        if args.remove:
            control.remove_terminal(args.remove, args.email, code)
        terminals = control.list_terminals(args.email, code)
    else:
        owner = control.status().customer_email
        if args.remove:
            _as_owner(control, owner, lambda: control.remove_terminal(args.remove))
        terminals = control.list_terminals()
    _print_terminals(terminals)
    return 0


def _print_terminals(terminals: Sequence[Any]) -> None:
    for t in terminals:
        state = "active" if t.active else (t.reason or "inactive")
        here = "  (this PC)" if t.this_machine else ""
        print(f"{t.machine_id}  {t.terminal_name or '-':<20} {state}{here}")


def cmd_pause(args: argparse.Namespace) -> int:
    """Pause the subscription for the season (`--until DATE`, else until `resume`); the owner's code."""
    from datetime import UTC, datetime

    resumes_at = None
    if args.until:
        try:
            resumes_at = datetime.fromisoformat(args.until).replace(tzinfo=UTC)
        except ValueError:
            raise Error(f"--until must be a date (YYYY-MM-DD), not {args.until!r}") from None
    control = _control()
    owner = control.status().customer_email
    return _report(_as_owner(control, owner, lambda: control.pause_subscription(resumes_at)))


def cmd_resume(_args: argparse.Namespace) -> int:
    """Resume the paused subscription now; the owner's code when asked."""
    control = _control()
    owner = control.status().customer_email
    return _report(_as_owner(control, owner, control.resume_subscription))


def cmd_sync(_args: argparse.Namespace) -> int:
    """Sync with the server now."""
    return _report(_control().sync_now())


def cmd_deactivate(args: argparse.Namespace) -> int:
    """Deactivate this PC (frees its seat); `--offline-file FILE`: give a license file up, by file."""
    if args.offline_file:
        from pathlib import Path

        from agent import messages
        from agent.vault import store

        target = Path(args.offline_file)
        control = _control()
        store.atomic_write(target, control.offline_deactivation(), mode=0o644)
        url = f"{control.diagnostics().server_url.rstrip('/')}/offline"
        print(messages.text("offline.given_up", control.language(), path=target, url=url), file=sys.stderr)
        return _report(control.status())
    return _report(_control().deactivate())


def _add_agent_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="show the license status (exit 0 when licensed)")
    p.add_argument("--json", action="store_true", help="the local API's JSON body")
    p.set_defaults(func=cmd_status)
    trial = sub.add_parser("trial", help="start the 30-day trial")
    trial.add_argument("--email", help="where to send a reminder 3 days before the trial ends (optional)")
    trial.add_argument("--name", help=_NAME_HELP)
    trial.set_defaults(func=cmd_trial)
    p = sub.add_parser("activate", help="activate this PC with a code emailed to EMAIL, or by file")
    p.add_argument("email", nargs="?")
    p.add_argument("--name", help=_NAME_HELP)
    offline = p.add_mutually_exclusive_group()
    offline.add_argument(
        "--offline-request", metavar="FILE", help="write an activation request file for a PC without internet"
    )
    offline.add_argument(
        "--offline-response", metavar="FILE", help="import the license file the server gave for that request"
    )
    p.set_defaults(func=cmd_activate)
    p = sub.add_parser("buy", help="buy a subscription: open Checkout, then wait for the payment")
    p.add_argument("email")
    p.add_argument("--restaurant", default="", help="restaurant name for the invoice")
    p.add_argument("--name", help=_NAME_HELP)
    p.add_argument("--quantity", type=int, default=1, help="number of terminals")
    p.add_argument(
        "--new-subscription",
        action="store_true",
        help="buy a second subscription even though EMAIL already has one",
    )
    p.add_argument("--poll", type=float, default=2.0, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_buy)
    p = sub.add_parser("terminals", help="list this license's terminals, or remove one (the owner's)")
    p.add_argument("--remove", metavar="ID", help="free the seat of the terminal with this id")
    p.add_argument("--email", help="the owner's e-mail, from a PC that is not activated (a code is sent)")
    p.set_defaults(func=cmd_terminals)
    p = sub.add_parser("rename", help="rename this PC, or (the owner's) another terminal of the license")
    p.add_argument("name", help="the new name, as the owner's terminal list and e-mails show it")
    p.add_argument("--terminal", metavar="ID", help="the terminal to rename (default: this PC)")
    p.add_argument("--email", help="the owner's e-mail, from a PC that is not activated (a code is sent)")
    p.set_defaults(func=cmd_rename)
    sub.add_parser("sync", help="sync with the license server now").set_defaults(func=cmd_sync)
    p = sub.add_parser(
        "pause", help="pause the subscription for the season (the owner's): nothing is charged"
    )
    p.add_argument(
        "--until", metavar="DATE", help="resume by itself on this day (YYYY-MM-DD); default: never"
    )
    p.set_defaults(func=cmd_pause)
    sub.add_parser("resume", help="resume a paused subscription now (the owner's)").set_defaults(
        func=cmd_resume
    )
    p = sub.add_parser("deactivate", help="deactivate this PC and free its seat")
    p.add_argument(
        "--offline-file",
        metavar="FILE",
        help="give a license file up: write the deactivation file for /offline",
    )
    p.set_defaults(func=cmd_deactivate)


def _add_service(sub: argparse._SubParsersAction) -> None:
    from agent.host.winservice import add_parser

    add_parser(sub)


def _add_update(sub: argparse._SubParsersAction) -> None:
    from agent.selfupdate.updatecli import add_update

    add_update(sub)


SUBCOMMANDS = [_add_fingerprint, _add_run, _add_agent_commands, _add_service, _add_update]


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with every registered subcommand."""
    parser = argparse.ArgumentParser(prog="pospal-agent", description="POSPal License Agent")
    parser.add_argument("--version", action="version", version=f"pospal-agent {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `pospal-agent`: parse `argv` and run the chosen subcommand; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like
        return 0
    except Error as exc:
        code = getattr(exc, "code", None)
        print(f"pospal-agent: {exc.message}" + (f" [{code}]" if code else ""), file=sys.stderr)
        return 1
    except Exception as exc:  # a bug: one line for the user, the details in the log
        log.debug("unexpected error", exc_info=True)
        print(f"pospal-agent: unexpected error: {exc.__class__.__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
