"""The agents of the fleet simulation, run in-process: many real `AgentService`s per worker process.

Each `SimAgent` is a whole agent: its own `FakeClock`, data directory, machine key (an in-memory
keyring, so the OS keyring is never touched), fake hardware (five Linux-named components whose values
the script can replace) and an `HttpTransport` on a `requests.Session` that logs every request (simulated
time, path, status) and can be switched "offline" (the cable is pulled: no packet leaves). The real
sync engine runs it: the worker moves every clock, runs the script's actions for the step, then calls
`engine.run_due()`, exactly what the agent's scheduler does.

Old POSPal tills get the old app's license file (sealed for this PC's old hardware id, as the old app
sealed it) in their own old-app folder, and their first run is the agent's `take_over_once`, exactly what
`pospal-agent run` does at its start. Owners pause and resume as at the till: an e-mailed code proves the
owner on that PC, then the machine-signed pause or resume.

`worker_main` is the worker process: it receives ("step", now, dt, sample) messages from the
orchestrator and answers with state counts; ("finish",) returns every agent's final status, history and
request log.
"""

from __future__ import annotations

import json
import logging
import random
import re
import shutil
import threading
import time
import traceback
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter

from agent.cloud.transport import HttpTransport
from agent.config import AgentSettings
from agent.core.clock import FakeClock
from agent.core.service import AgentService
from agent.errors import Error as AgentError
from agent.errors import Offline, ServerRefused
from agent.vault import pospal1
from agent.vault.store import MachineKeyStore
from pospal_protocol import fingerprint

COMPONENTS = ("machine_id", "product_uuid", "board_serial", "disk_serial", "mac")
# A step's action that cannot run (server down) is tried again at the next steps, this many times.
MAX_ACTION_TRIES = 400
_SUB_RE = re.compile(r'name="subscription_id" value="([^"]+)"')
_CODE_RE = re.compile(r"\b(\d{6})\b")
# Codes already tried by an agent of this worker (all agents of one owner live in one worker).
USED_CODES: set[str] = set()
CODE_WAIT_S = 8.0
# Concurrent syncs per worker process (agents wait on the network, not on the CPU).
SYNC_THREADS = 12


class MemoryKeyring:
    """A keyring backend in memory: the machine key survives reboots of the simulated PC, not the run."""

    priority = 1

    def __init__(self) -> None:
        self._items: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, user: str) -> str | None:
        """The stored secret, or None."""
        return self._items.get((service, user))

    def set_password(self, service: str, user: str, password: str) -> None:
        """Store a secret."""
        self._items[(service, user)] = password

    def delete_password(self, service: str, user: str) -> None:
        """Forget a secret."""
        self._items.pop((service, user), None)


class SimNow:
    """The worker's current simulated server time (what the orchestrator wrote to the clock file)."""

    t = 0.0


def route_of(path: str) -> str:
    """A request path with ids folded, for counting."""
    if path.startswith("/v1/checkout/"):
        return "/v1/checkout/{id}"
    if path.startswith("/sandbox/"):
        return "/sandbox"
    return path


class AgentSession(requests.Session):
    """A requests Session that logs each request and can be offline (raises before sending)."""

    def __init__(self, ip: str, adapter: HTTPAdapter, metrics: WorkerMetrics) -> None:
        super().__init__()
        self.mount("http://", adapter)
        self.headers["X-Forwarded-For"] = ip  # each restaurant has its own address (rate limits)
        self.offline = False
        self.log: list[tuple[float, str, int]] = []
        self.metrics = metrics

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        """Send (or refuse, when offline) and log (sim time, route, status; 0 = no answer, -1 offline)."""
        route = route_of(urlsplit(url).path)
        if self.offline:
            self.log.append((SimNow.t, route, -1))
            raise requests.ConnectionError("simulated: this PC is offline")
        started = time.perf_counter()
        try:
            resp = super().request(method, url, *args, **kwargs)
        except requests.RequestException:
            self.log.append((SimNow.t, route, 0))
            self.metrics.note(started, None)
            raise
        self.log.append((SimNow.t, route, resp.status_code))
        self.metrics.note(started, time.perf_counter() - started)
        return resp


class WorkerMetrics:
    """Requests per real second and latencies seen by this worker's agents."""

    def __init__(self) -> None:
        self.per_second: Counter[int] = Counter()
        self.latencies: list[float] = []
        self._lock = threading.Lock()

    def note(self, started: float, latency: float | None) -> None:
        """Count one request (and its latency when it was answered)."""
        with self._lock:
            self.per_second[int(time.time())] += 1
            if latency is not None:
                self.latencies.append(latency)


class SimAgent:
    """One simulated POS computer running the real agent service."""

    def __init__(
        self, plan: dict[str, Any], cfg: dict[str, Any], adapter: HTTPAdapter, metrics: WorkerMetrics
    ) -> None:
        self.plan = plan
        self.index = plan["index"]
        self.cfg = cfg
        self.clock = FakeClock(start=_dt(cfg["t0"]))
        self.hw = {name: f"{name}-{self.index}-gen0" for name in COMPONENTS}
        self.hw0 = dict(self.hw)
        self.keyring = MemoryKeyring()
        self.data_dir = Path(cfg["base_dir"]) / f"agent{self.index:05d}"
        ip = f"10.{(self.index >> 16) & 255}.{(self.index >> 8) & 255}.{self.index & 255}"
        self.session = AgentSession(ip, adapter, metrics)
        self.history: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self.pending = list(plan["actions"])
        self.tries: Counter[int] = Counter()
        self.work: dict[str, Any] = {}
        self.svc = self._new_service()

    # -- construction ----------------------------------------------------------------------------------

    def _fingerprint(self) -> fingerprint.Fingerprint:
        return fingerprint.Fingerprint(
            tuple(
                fingerprint.Component(n, True, fingerprint.hash_component(n, fingerprint.normalize(v) or v))
                for n, v in self.hw.items()
            )
        )

    def _new_service(self) -> AgentService:
        settings = AgentSettings(
            server_url=self.cfg["server_url"],
            data_dir=self.data_dir,
            trusted_keys_path=Path(self.cfg["trusted_keys"]),
        )
        transport = HttpTransport(
            self.cfg["server_url"], self.clock, session=self.session, connect_timeout=3.0, read_timeout=30.0
        )
        return AgentService(
            settings,
            clock=self.clock,
            transport=transport,
            fingerprinter=self._fingerprint,
            key_store=MachineKeyStore(self.data_dir, backend=self.keyring),
            terminal_name=f"POS-{self.index}",
            rng=random.Random(self.index),
        )

    def reboot(self) -> None:
        """Restart the agent process (monotonic time starts over; the cache and keyring stay)."""
        self.svc.stop()
        self.clock.restart()
        self.svc = self._new_service()

    # -- the script ------------------------------------------------------------------------------------

    def note(self, kind: str, **data: Any) -> None:
        """Append to this agent's history (what the oracle reads)."""
        self.history.append({"t": SimNow.t, "kind": kind, **data})

    def run_actions(self, now_s: float) -> None:
        """Run every action due by `now_s` (seconds from the start); a failed one stays for the next step."""
        while self.pending and self.pending[0][0] <= now_s:
            at, name, params = self.pending[0]
            try:
                done = getattr(self, f"do_{name}")(**params)
            except (Offline, requests.RequestException) as exc:
                done = False
                self.work["last_error"] = str(exc)
            except Exception:
                self.errors.append(f"{name}: {traceback.format_exc(limit=4)}")
                done = True
            key = id(self.pending[0])
            self.tries[key] += 1
            if done or self.tries[key] >= MAX_ACTION_TRIES:
                if not done:
                    self.errors.append(f"{name}: gave up after {MAX_ACTION_TRIES} tries")
                self.pending.pop(0)
            else:
                return

    def do_trial(self) -> bool:
        """Start the trial (offline: a provisional one)."""
        status = self.svc.start_trial()
        self.note("provisional" if status.reason == "provisional_trial" else "trial")
        return True

    def do_offline(self) -> bool:
        """Pull the cable: no request leaves this PC."""
        self.session.offline = True
        self.note("offline")
        return True

    def do_online(self) -> bool:
        """Plug the cable back in."""
        self.session.offline = False
        self.note("online")
        return True

    def do_buy(self, quantity: int, decline_first: bool) -> bool:
        """Buy through the sandbox Checkout page (optionally declined first), then wait and activate."""
        base = self.cfg["server_url"]
        if "checkout" not in self.work:
            checkout = self.svc.start_checkout(self.plan["email"], f"Taverna {self.index}", quantity)
            self.work["checkout"] = checkout
        checkout = self.work["checkout"]
        page = urlsplit(checkout.url).path
        if not self.work.get("paid"):
            if decline_first and not self.work.get("declined"):
                _ok(self.session.post(base + page, data={"action": "fail"}, allow_redirects=False))
                self.work["declined"] = True
            _ok(self.session.post(base + page, data={"action": "pay"}, allow_redirects=False))
            self.work["paid"] = True
            html = _ok(self.session.get(base + page)).text
            match = _SUB_RE.search(html)
            self.work["sub"] = match.group(1) if match else None
            self.work["page"] = page
            self.note("purchase", quantity=quantity, declined_first=decline_first)
        cancel = threading.Event()
        timer = threading.Timer(15.0, cancel.set)
        timer.start()
        try:
            status = self.svc.wait_checkout(checkout.checkout_id, cancel, poll_s=0.05)
        finally:
            timer.cancel()
        if status.license_state not in ("licensed_active",) and cancel.is_set():
            return False
        self.note("activated", via="checkout", machine_id=status.machine_id)
        return True

    def do_sub_action(self, action: str) -> bool:
        """Press a subscription button on the sandbox page (fail renewal, pay now, cancel...)."""
        base = self.cfg["server_url"]
        page, sub = self.work.get("page"), self.work.get("sub")
        if not page or not sub:
            self.errors.append(f"sub_action {action}: no subscription")
            return True
        _ok(
            self.session.post(
                base + page, data={"action": action, "subscription_id": sub}, allow_redirects=False
            )
        )
        self.note("billing", action=action)
        return True

    def _emailed_code(self, purpose: str) -> str | None:
        """Ask for a code for `purpose` (once) and read it from the mail; None while it has not come."""
        email = self.plan["email"]
        if self.work.get("asked") != purpose:
            self.svc.request_code(email, purpose)
            self.work["asked"] = purpose
            self.note("code_requested", purpose=purpose)
        code = None
        deadline = time.monotonic() + CODE_WAIT_S  # the outbox worker polls every 2 s (real time)
        while code is None and time.monotonic() < deadline:
            code = _find_code(Path(self.cfg["mail_log"]), email, USED_CODES)
            if code is None:
                time.sleep(0.2)
        if code is None:
            # Not here yet (the email provider is refusing): look again next step, ask again much later.
            self.work["waits"] = self.work.get("waits", 0) + 1
            if self.work["waits"] % 40 == 0:
                self.work["asked"] = None
            return None
        USED_CODES.add(code)  # a code serves one terminal; another terminal of the owner takes the next
        return code

    def do_activate_code(self) -> bool:
        """Activate this PC on the owner's license with a code read from the emailed message."""
        email = self.plan["email"]
        code = self._emailed_code("activate")
        if code is None:
            return False
        try:
            status = self.svc.activate(email, code)
        except ServerRefused as exc:
            if exc.code == "seats_full":
                self.note("seats_full", terminals=len(exc.extra.get("terminals") or []))
                return True
            if exc.code in ("bad_code", "code_expired", "too_many_attempts", "rate_limited"):
                self.note("code_refused", code=exc.code)
                self.work["asked"] = None
                return False
            raise
        self.work["asked"] = None
        self.note("activated", via="code", machine_id=status.machine_id)
        return True

    def _as_owner(self) -> bool:
        """Prove the owner's e-mail on this PC with an emailed code (owner actions for 15 minutes)."""
        code = self._emailed_code("owner")
        if code is None:
            return False
        try:
            self.svc.prove_owner(self.plan["email"], code)
        except ServerRefused as exc:
            if exc.code in ("bad_code", "code_expired", "too_many_attempts", "rate_limited"):
                self.note("code_refused", code=exc.code)
                self.work["asked"] = None
                return False
            raise
        self.work["asked"] = None
        return True

    def do_pause(self, resumes_in: float | None) -> bool:
        """The owner pauses the subscription for the season from this till: until a date, or until resumed."""
        if not self._as_owner():
            return False
        resumes_at = None if resumes_in is None else SimNow.t + resumes_in
        when = None if resumes_at is None else _dt(self.cfg["t0"] + resumes_at)
        status = self.svc.pause_subscription(when)
        self.note("billing", action="pause", resumes_at=resumes_at, state=status.license_state)
        return True

    def do_resume(self) -> bool:
        """The owner resumes the paused subscription now, from this till."""
        if not self._as_owner():
            return False
        status = self.svc.resume_subscription()
        self.note("billing", action="resume", state=status.license_state)
        return True

    def do_observe(self) -> bool:
        """Note what the till shows now (the checker compares it with the oracle at this moment)."""
        status = self.svc.refresh_status()
        self.note("observe", state=status.license_state, licensed=status.licensed, reason=status.reason)
        return True

    def do_old_first_run(self, token: str) -> bool:
        """The first run of the new agent on an old POSPal till: the old license is exchanged once."""
        old_dir = self.data_dir.parent / f"old{self.index:05d}"
        license_file = old_dir / "data" / pospal1.LICENSE_FILE
        if not license_file.exists():
            license_file.parent.mkdir(parents=True, exist_ok=True)
            hardware_id = pospal1.old_hardware_id()
            record = {"customer_email": self.plan["email"], "unlock_token": token, "hardware_id": hardware_id}
            license_file.write_text(pospal1.seal_old_license({**record, "version": "1.0"}, hardware_id))
        outcome = pospal1.take_over_once(self.svc, self.data_dir, {"POSPAL_OLD_APP_DIR": str(old_dir)})
        if outcome == "offline":
            return False  # `pospal-agent run` tries again at its next start
        status = self.svc.status()
        self.note(
            "migrated" if outcome == "licensed" else "migration_refused",
            outcome=outcome,
            machine_id=status.machine_id,
            state=status.license_state,
            notice=getattr(status, "old_app_notice", None),
            old_file_kept=license_file.exists(),
        )
        return True

    def do_hw(self, changed: int) -> bool:
        """Replace the last `changed` hardware components, then reboot."""
        for name in COMPONENTS[-changed:]:
            self.hw[name] = self.hw[name].replace("gen0", "gen1")
        self.reboot()
        self.note("hw", changed=changed, values=dict(self.hw))
        return True

    def do_reboot(self, wall_shift: float) -> bool:
        """Set the wall clock by `wall_shift` seconds, then reboot."""
        self.clock.shift_wall(wall_shift)
        self.reboot()
        self.note("reboot", wall_shift=wall_shift)
        return True

    def do_reinstall(self) -> bool:
        """Wipe the data directory and the machine key, then start the trial again."""
        self.svc.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)
        self.keyring = MemoryKeyring()
        self.clock.restart()
        self.svc = self._new_service()
        self.note("reinstall")
        return self.do_trial()

    def do_deactivate(self) -> bool:
        """Deactivate this PC (frees its seat)."""
        machine_id = self.svc.status().machine_id
        self.svc.deactivate()
        self.note("deactivated", machine_id=machine_id)
        return True

    # -- results ---------------------------------------------------------------------------------------

    def result(self) -> dict[str, Any]:
        """Final status, history and request log for the checker."""
        status = self.svc.refresh_status()
        return {
            "index": self.index,
            "role": self.plan["role"],
            "customer": self.plan["customer"],
            "email": self.plan["email"],
            "license_state": status.license_state,
            "licensed": status.licensed,
            "reason": status.reason,
            "machine_id": status.machine_id,
            "hw": dict(self.hw),
            "hw0": self.hw0,
            "history": self.history,
            "log": self.session.log,
            "errors": self.errors,
            "unfinished": [(a[0], a[1]) for a in self.pending if a[0] <= SimNow.t],
        }


def _ok(resp: requests.Response) -> requests.Response:
    if resp.status_code >= 500:
        raise Offline(f"HTTP {resp.status_code}")
    if resp.status_code >= 400:
        raise AgentError(f"sandbox page answered HTTP {resp.status_code}")
    return resp


def _find_code(mail_log: Path, email: str, used: set[str]) -> str | None:
    """The newest unused activation code emailed to `email` (from the SMTP sink's log)."""
    try:
        lines = mail_log.read_text().splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if msg.get("to") == email and "code" in msg.get("subject", "").lower():
            match = _CODE_RE.search(msg.get("text", ""))
            if match and match.group(1) not in used:
                return match.group(1)
    return None


def _dt(ts: float) -> Any:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, UTC)


def worker_main(conn: Any, plans: list[dict[str, Any]], cfg: dict[str, Any]) -> None:
    """The worker process loop (see the module docstring)."""
    logging.disable(logging.CRITICAL)
    metrics = WorkerMetrics()
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=SYNC_THREADS)
    pool = ThreadPoolExecutor(SYNC_THREADS, thread_name_prefix="agents")
    SimNow.t = 0.0
    agents = [SimAgent(p, cfg, adapter, metrics) for p in plans]
    by_customer: dict[int, list[SimAgent]] = {}
    for a in agents:
        by_customer.setdefault(a.plan["customer"], []).append(a)
    customers = list(by_customer.values())
    conn.send(("ready", len(agents)))
    phases: Counter[str] = Counter()
    while True:
        msg = conn.recv()
        if msg[0] == "step":
            _, now_s, dt, sample = msg
            SimNow.t = now_s
            t = time.perf_counter()
            for a in agents:
                a.clock.advance(dt)
            # Customers are independent: each one's agents act in order, customers side by side.
            list(pool.map(lambda group, t=now_s: [a.run_actions(t) for a in group], customers))
            phases["actions"] += time.perf_counter() - t
            t = time.perf_counter()
            # Agents are independent PCs: their syncs run side by side, as a real fleet's do.
            list(pool.map(lambda a: a.svc.engine.run_due(), agents))
            phases["syncs"] += time.perf_counter() - t
            t = time.perf_counter()
            counts: Counter[str] = Counter()
            if sample:
                for a in agents:
                    counts[a.svc.refresh_status().license_state] += 1
            phases["sample"] += time.perf_counter() - t
            phases["cpu"] = time.process_time()
            conn.send(("ok", dict(counts)))
        elif msg[0] == "finish":
            results = [a.result() for a in agents]
            conn.send(("done", results, dict(metrics.per_second), metrics.latencies, dict(phases)))
            for a in agents:
                a.svc.stop()
            pool.shutdown()
            return
