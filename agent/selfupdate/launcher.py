"""`pospal-launcher`: the small, stable process the service runs; it runs one agent version at a time.

    pospal-launcher --install DIR [--port 7421] [--deadline 20]

It holds the local API's listening socket (`agent.selfupdate.handoff`) and starts
`<install>/versions/<current>/ pospal-agent run --headless` with that socket. The agent exits with `EXIT_SWAP`
(75) when it has staged an update in `<install>/pending` and the POS is idle (`agent.selfupdate.launched`);
the launcher then:

1. points `current` at the new version (atomically; `previous` keeps the old one);
2. starts it and asks `GET /v1/health` (the new version must name itself) and `GET /v1/license` on the
   shared socket until both answer, within `--deadline` seconds;
3. on success records the swap in `launcher.json`; on failure (no answer in time, or the process died)
   stops it, points `current` back, marks the version failed (`failed.json`: never staged again), records
   the reason for the agent to report, and starts the previous version again.

Any other exit of the agent (a crash) restarts the same version after 1, 2, 5, 15, 30, 60 s; a version
that dies 3 times in a row within 2 minutes of its start gives way to `previous` (marked failed, recorded
as `fell_back`). After a good swap only the new and the previous versions stay on disk. SIGTERM /
Ctrl+C stops the agent (SIGTERM on POSIX; on Windows the process is ended) and then the launcher. The
launcher imports only the standard library and `agent.selfupdate.install`/`agent.selfupdate.handoff`, which
are standard library too, so an update can never break it. It never touches the license data dir or the marks:
each version finds them where the environment says, as before.
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from agent.selfupdate import handoff
from agent.selfupdate.install import Install

log = logging.getLogger("agent.selfupdate.launcher")

EXIT_SWAP = 75  # the agent stopped at an idle moment so that the staged version can take over
DEFAULT_DEADLINE_S = 20.0
STOP_WAIT_S = 10.0
_RESTART_DELAYS = (1.0, 2.0, 5.0, 15.0, 30.0, 60.0)
_HEALTHY_RUN_S = 120.0  # a version that ran this long counts as healthy again
FALLBACK_AFTER = 3  # quick deaths in a row before a version gives way to the previous one


def probe(port: int, path: str, timeout: float) -> dict | None:
    """One GET on the local API; the JSON answer when it is 200 and a JSON object, else None."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Host": f"127.0.0.1:{port}"})
        resp = conn.getresponse()
        raw = resp.read()
        if resp.status != 200:
            return None
        data = json.loads(raw)
        return data if isinstance(data, dict) else None
    except (OSError, ValueError, http.client.HTTPException):
        return None
    finally:
        conn.close()


class Launcher:
    """Runs the agent versions of `install` on one listening socket (see the module docstring)."""

    def __init__(
        self,
        install: Install,
        port: int,
        *,
        deadline_s: float = DEFAULT_DEADLINE_S,
        env: dict[str, str] | None = None,
        args: Sequence[str] = ("run", "--headless"),
        quiet: bool = False,
    ) -> None:
        self.install = install
        self.deadline_s = deadline_s
        self.env = dict(os.environ if env is None else env)
        self.args = list(args)
        # A Windows service has no console: its agents' output goes nowhere (they log to agent.log) rather
        # than to the half-closed pipe Popen makes for a missing standard handle.
        nowhere = subprocess.DEVNULL
        self.output: dict[str, int] = {"stdout": nowhere, "stderr": nowhere} if quiet else {}
        self.sock = handoff.listen(port)
        self.port = self.sock.getsockname()[1]
        self.stop = threading.Event()
        self.proc: subprocess.Popen | None = None
        self.version: str | None = None

    # -- one child -------------------------------------------------------------------------------------

    def _spawn(self, version: str) -> subprocess.Popen:
        env = dict(self.env, POSPAL_INSTALL_DIR=str(self.install.root), POSPAL_AGENT_PORT=str(self.port))
        command = [*self.install.command(version), *self.args]
        log.info("starting agent %s", version)
        # Its own directory as the working directory: nothing of the launcher's (or an older version's) is
        # found first on a relative path.
        self.proc = handoff.spawn(
            command, self.sock, env, cwd=str(self.install.versions / version), **self.output
        )
        self.version = version
        return self.proc

    def _stop_child(self) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        if os.name == "nt":
            proc.terminate()
        else:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_WAIT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def healthy(self, proc: subprocess.Popen, version: str) -> str | None:
        """None when `version` answers health (naming itself) and license in time, else why not."""
        deadline = time.monotonic() + self.deadline_s
        seen_health = False
        while time.monotonic() < deadline and not self.stop.is_set():
            if proc.poll() is not None:
                return f"exited with code {proc.returncode} during its start check"
            left = max(0.05, deadline - time.monotonic())
            if not seen_health:
                health = probe(self.port, "/v1/health", min(1.0, left))
                if health is not None and health.get("ok") is True:
                    if health.get("version") != version:
                        return f"answered as version {health.get('version')!r}, not {version}"
                    seen_health = True
            if seen_health:
                answer = probe(self.port, "/v1/license", min(1.0, left))
                if answer is not None and "license_state" in answer:
                    return None
            time.sleep(0.02)
        return f"did not answer /v1/health and /v1/license within {self.deadline_s:g} s"

    # -- the swap --------------------------------------------------------------------------------------

    def swap(self, new: str, stopped_at: float) -> str:
        """Start `new` in place of the stopped current version; returns the version now running."""
        old = self.version
        self.install.set_current(new, previous=old)
        proc = self._spawn(new)
        problem = self.healthy(proc, new)
        report = {"from": old, "to": new, "at": time.time(), "gap_s": round(time.monotonic() - stopped_at, 3)}
        if problem is None:
            self.install.set_pending(None)
            self.install.prune(keep={new, old})
            self.install.record_swap({**report, "outcome": "swapped"})  # last: the swap is done
            log.info("now running agent %s (was %s)", new, old)
            return new
        log.warning("agent %s %s; going back to %s", new, problem, old)
        self._stop_child()
        self.install.mark_failed(new, problem)
        self.install.set_pending(None)
        if old is None:
            raise SystemExit(f"agent {new} {problem}, and there is no previous version")
        self.install.set_current(old, previous=None)
        self._spawn(old)
        report["gap_s"] = round(time.monotonic() - stopped_at, 3)
        self.install.record_swap({**report, "outcome": "rolled_back", "reason": problem})
        return old

    def _fall_back(self, code: int | None) -> bool:
        """A version that keeps dying soon after its start (after a reboot, say) gives way to the previous
        one, like a failed swap; False when there is no previous version to go back to."""
        bad, previous = self.version, self.install.previous()
        if bad is None or previous is None or previous == bad:
            return False
        reason = f"exited with code {code} {FALLBACK_AFTER} times in a row soon after starting"
        log.warning("agent %s %s; going back to %s", bad, reason, previous)
        self.install.mark_failed(bad, reason)
        self.install.set_current(previous, previous=None)
        self.install.record_swap(
            {
                "from": bad,
                "to": previous,
                "at": time.time(),
                "gap_s": None,
                "outcome": "fell_back",
                "reason": reason,
            }
        )
        self._spawn(previous)
        return True

    # -- the loop --------------------------------------------------------------------------------------

    def run(self) -> int:
        """Run until `stop` is set (the service stops, SIGTERM); returns the exit code."""
        version = self.install.current()
        if version is None:
            log.error("no agent version under %s", self.install.versions)
            return 1
        crashes = 0
        started = time.monotonic()
        proc = self._spawn(version)
        try:
            while not self.stop.is_set():
                try:
                    code = proc.wait(0.2)
                except subprocess.TimeoutExpired:
                    continue
                stopped_at = time.monotonic()
                pending = self.install.pending()
                if code == EXIT_SWAP and pending is not None and pending != self.version:
                    self.swap(pending, stopped_at)
                    crashes = 0
                else:
                    crashes = 0 if time.monotonic() - started > _HEALTHY_RUN_S else crashes + 1
                    if code != EXIT_SWAP and crashes >= FALLBACK_AFTER and self._fall_back(code):
                        crashes = 0
                        assert self.proc is not None
                        proc = self.proc
                        started = time.monotonic()
                        continue
                    step = min(max(crashes, 1), len(_RESTART_DELAYS)) - 1
                    delay = 0.0 if code == EXIT_SWAP else _RESTART_DELAYS[step]
                    log.warning("agent %s exited with %s; restarting in %.0f s", self.version, code, delay)
                    if self.stop.wait(delay):
                        break
                    assert self.version is not None
                    self._spawn(self.version)
                assert self.proc is not None
                proc = self.proc
                started = time.monotonic()
        finally:
            self._stop_child()
            self.sock.close()
        return 0


def build_parser() -> argparse.ArgumentParser:
    """The launcher's arguments."""
    p = argparse.ArgumentParser(prog="pospal-launcher", description="runs the installed POSPal agent version")
    p.add_argument("--install", required=True, help="the install directory (versions/, current, ...)")
    p.add_argument("--port", type=int, default=int(os.environ.get("POSPAL_AGENT_PORT", "7421")))
    p.add_argument("--deadline", type=float, default=DEFAULT_DEADLINE_S, help="start check, seconds")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `pospal-launcher` (the Windows service and the systemd unit run this)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        launcher = Launcher(Install(Path(args.install)), args.port, deadline_s=args.deadline)
    except OSError as exc:
        print(f"pospal-launcher: cannot listen on 127.0.0.1:{args.port}: {exc}", file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, lambda *_: launcher.stop.set())
    try:
        return launcher.run()
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
