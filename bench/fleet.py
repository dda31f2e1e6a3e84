"""Fleet simulation with fault injection: N agents over D simulated days against one real server process.

    python -m bench.fleet --agents 1000 --days 30                     # SQLite
    python -m bench.fleet --agents 1000 --days 30 --postgres postgresql+psycopg://postgres@127.0.0.1:5432/test

The orchestrator (this module) owns simulated time. Each step (15 simulated minutes) it writes the time
to the server's clock file (server/testhooks.py), plays the payment provider's own actions, injects the
scheduled faults, and tells the worker processes (bench/fleet_agents.py) to move their agents' clocks,
run the script's actions (bench/fleet_schedule.py) and let every sync engine run what is due. Faults:

- the server SIGKILLed mid-step and restarted, 3 times (down for two steps each time);
- PostgreSQL stopped for 10 s (with `--pg-stop`; always started again);
- the email provider (an SMTP sink) refusing for 5 minutes of server time, while purchases and code
  requests happen; simulated time runs at `--outage-speed` x real time meanwhile, so the outbox worker
  (which polls in real time) meets the refusals as it would in production;
- webhooks duplicated (processed events delivered again, every simulated day) and reordered (for the
  "reorder" customers the provider's events are delivered shuffled, old ones after new ones).

Before the server starts, the old POSPal server's customers are made as the operator finds them: their
subscriptions live at the payment provider (the sandbox), and their rows in the old server's D1 export,
which `pospal-server import-pospal1` imports; the migration window (`POSPAL_MIGRATION_WINDOW`) is open from
a day before the start to day 10 (scaled), in the server's simulated time.

At the end bench/fleet_check.py compares every agent with the oracle and checks the database, the audit
log, the outbox and the sink; bench/fleet_report.py writes the text report and the PNG chart. Loopback
only; every loop is bounded in steps and in wall time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import multiprocessing as mp
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

from bench import fleet_check, fleet_report
from bench.fleet_agents import worker_main
from bench.fleet_schedule import DAY, HOUR, Schedule, build
from bench.fleet_server import (
    ServerProcess,
    ServerStartFailed,
    SimClockFile,
    SmtpSink,
    create_pg_database,
    drop_pg_database,
    old_export,
    postgres_stopped,
)

STEP_S = 900.0
OUTAGE_STEP_S = 10.0
KILL_DOWN_STEPS = 2
PG_STEP_S = 60.0
MAX_DELIVERY_TRIES = 60


class Fleet:
    """One simulation run (see the module docstring); `run()` returns the report data."""

    def __init__(
        self,
        *,
        agents: int,
        days: float,
        workers: int,
        database_url: str | None,
        pg_stop: bool,
        email_outage_s: float,
        outage_speed: float,
        seed: int,
        max_wall_s: float,
        pg_stop_s: float = 10.0,
        dup_per_day: int = 20,
    ) -> None:
        self.n, self.days, self.n_workers = agents, days, workers
        self.pg_admin_url = database_url
        self.pg_stop, self.pg_stop_s = pg_stop, pg_stop_s
        self.email_outage_s, self.outage_speed = email_outage_s, outage_speed
        self.seed, self.max_wall_s, self.dup_per_day = seed, max_wall_s, dup_per_day
        self.rng = random.Random(seed)
        shm = Path("/dev/shm")
        self.run_dir = Path(tempfile.mkdtemp(prefix="pospal-fleet-", dir=shm if shm.is_dir() else None))
        self.t0 = math.ceil(time.time() / HOUR) * HOUR
        self.now = 0.0
        self.faults: list[tuple[float, float, str]] = []
        self.samples: list[tuple[float, dict[str, int]]] = []
        self.provider_log: list[dict[str, Any]] = []
        self.deliveries = self.dup_delivered = self.reordered = self.deliveries_failed = 0
        self.rss: list[int] = []
        self.kills: list[float] = []
        self.pg_db_name: str | None = None
        self.timing: Counter[str] = Counter()
        self.start_failures: list[str] = []
        self.import_lines: list[str] = []

    # -- set-up ------------------------------------------------------------------------------------------

    def _database_url(self) -> str:
        if self.pg_admin_url:
            self.pg_db_name = f"fleet_{int(time.time())}_{self.rng.randrange(10**6)}"
            return create_pg_database(self.pg_admin_url, self.pg_db_name)
        return f"sqlite:///{self.run_dir / 'server' / 'pospal.db'}"

    def run(self) -> dict[str, Any]:
        """Run the whole simulation and the checks; always cleans up what it started."""
        started = time.monotonic()
        schedule = build(self.n, self.days, self.seed)
        self.schedule = schedule
        self.clock = SimClockFile(self.run_dir / "clock", self.t0)
        self.sink = SmtpSink(self.run_dir / "mail.jsonl")
        self.sink.start()
        self.db_url = self._database_url()
        start, end = (self.t0 + t for t in schedule.migration_window)
        window = f"{_iso(start)}/{_iso(end)}"
        self.server = ServerProcess(
            self.run_dir, self.db_url, self.clock.path, self.sink.port, schedule.seat_idle_days, window
        )
        procs: list[Any] = []
        stop_rss = threading.Event()
        try:
            self.server.migrate()
            self._open_provider()
            self._import_old_customers(schedule)
            self.server.start()
            keys = requests.get(self.server.url + "/v1/keys", timeout=10).json()
            (self.run_dir / "trusted.json").write_text(json.dumps(keys))
            threading.Thread(target=self._sample_rss, args=(stop_rss,), daemon=True).start()
            conns, procs = self._start_workers(schedule)
            self._loop(schedule, conns, started)
            results, per_second, latencies = self._finish(conns)
            self._settle_outbox()
            return self._check(results, per_second, latencies, started)
        finally:
            stop_rss.set()
            for p in procs:
                p.join(timeout=20)
                if p.is_alive():
                    p.kill()
            with contextlib.suppress(Exception):
                self.sandbox.close()
                self.provider_db.dispose()
            self.server.stop()
            self.sink.stop()
            if self.pg_db_name and self.pg_admin_url:
                with contextlib.suppress(Exception):
                    drop_pg_database(self.pg_admin_url, self.pg_db_name)
            shutil.rmtree(self.run_dir, ignore_errors=True)

    def _start_workers(self, schedule: Schedule) -> tuple[list[Any], list[Any]]:
        groups = sorted(schedule.by_customer().values(), key=len, reverse=True)
        shards: list[list[dict[str, Any]]] = [[] for _ in range(self.n_workers)]
        for group in groups:  # whole customers per worker, balanced by agent count
            min(shards, key=len).extend(asdict(p) for p in group)
        cfg = {
            "t0": self.t0,
            "base_dir": str(self.run_dir / "agents"),
            "server_url": self.server.url,
            "trusted_keys": str(self.run_dir / "trusted.json"),
            "mail_log": str(self.sink.log_path),
        }
        ctx = mp.get_context("spawn")
        conns, procs = [], []
        for shard in shards:
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=worker_main, args=(child, shard, cfg), daemon=True)
            proc.start()
            conns.append(parent)
            procs.append(proc)
        for conn in conns:
            if not conn.poll(300):
                raise RuntimeError("a worker did not start")
            conn.recv()
        return conns, procs

    def _open_provider(self) -> None:
        """The payment provider's side for reorder customers: the sandbox's own state, on the same DB."""
        from server.billing.sandbox import SandboxBilling
        from server.db import Database
        from server.testhooks import FileClock

        self.provider_db = Database(self.db_url, pool_size=2)
        self.sandbox = SandboxBilling(self.provider_db, FileClock(self.clock.path), self.server.url)

    def _import_old_customers(self, schedule: Schedule) -> None:
        """The old server's customers: subscriptions at the provider, rows in a D1 export, then the import.

        Each old subscription is bought through the sandbox's own checkout (the old server's purchase, long
        before the run: its events went to the old server, so none is delivered here).
        """
        from server.billing.base import CheckoutRequest

        rows = []
        for old in schedule.old_customers:
            customer_id = self.sandbox.find_or_create_customer(old["email"], old["name"], None)
            checkout = self.sandbox.create_checkout(
                CheckoutRequest(
                    customer_id=customer_id,
                    email=old["email"],
                    quantity=old["quantity"],
                    client_reference_id=f"pospal1-{old['customer']}",
                    success_url="https://old.example/ok",
                    cancel_url="https://old.example/cancel",
                )
            )
            self.sandbox.apply_action(checkout.id, "pay")
            subscription_id = self.sandbox.fetch_checkout(checkout.id).subscription_id
            rows.append({**old, "customer_id": customer_id, "subscription_id": subscription_id})
        if rows:
            self.import_lines = self.server.import_pospal1(old_export(self.run_dir / "d1-export.sql", rows))

    def _sample_rss(self, stop: threading.Event) -> None:
        while not stop.wait(0.5):
            rss = self.server.rss_kib()
            if rss:
                self.rss.append(rss)

    # -- the loop ----------------------------------------------------------------------------------------

    def _step(self, conns: list[Any], dt: float, sample: bool, during: Any = None) -> None:
        began = time.monotonic()
        try:
            self._step_inner(conns, dt, sample, during)
        finally:
            self.timing["steps"] += time.monotonic() - began

    def _step_inner(self, conns: list[Any], dt: float, sample: bool, during: Any = None) -> None:
        self.now += dt
        self.clock.set(self.t0 + self.now)
        for conn in conns:
            conn.send(("step", self.now, dt, sample))
        if during is not None:
            during()
        counts: Counter[str] = Counter()
        for conn in conns:
            if not conn.poll(600):
                raise RuntimeError("a worker stopped answering")
            _, part = conn.recv()
            counts.update(part)
        if sample:
            self.samples.append((self.now, dict(counts)))

    def _loop(self, schedule: Schedule, conns: list[Any], started: float) -> None:
        sample_every = max(STEP_S, schedule.duration_s / 120)
        next_sample, next_dups = 0.0, DAY * self.days / 30
        kills = list(schedule.kills_at)
        outage_done, pg_done = False, not self.pg_stop
        provider = list(schedule.provider_actions)
        max_steps = int(schedule.duration_s / STEP_S) + 10_000
        for _ in range(max_steps):
            if self.now >= schedule.duration_s:
                return
            if time.monotonic() - started > self.max_wall_s:
                raise RuntimeError(f"the run exceeded {self.max_wall_s:.0f} s of wall time")
            sample = self.now + STEP_S >= next_sample
            if sample:
                next_sample += sample_every
            if not outage_done and self.now + STEP_S >= schedule.email_outage_at:
                self._email_outage(conns)
                outage_done = True
                continue
            if kills and self.now + STEP_S >= kills[0]:
                kills.pop(0)
                self._kill_and_restart(conns)
                continue
            if not pg_done and self.now + STEP_S >= schedule.pg_stop_at:
                self._pg_outage(conns)
                pg_done = True
                continue
            provider = self._provider_actions(provider, self.now + STEP_S)
            if int((self.now + STEP_S) / DAY) > int(self.now / DAY):
                print(
                    f"[fleet] day {int((self.now + STEP_S) / DAY)} after {time.monotonic() - started:.0f} s "
                    f"{dict(self.timing)}",
                    file=sys.stderr,
                    flush=True,
                )
            if self.now + STEP_S >= next_dups:
                self._deliver_duplicates(max(2, round(self.dup_per_day * self.days / 30)))
                next_dups += DAY * max(self.days / 30, 0.1)
            self._step(conns, STEP_S, sample)
        raise RuntimeError("step budget exhausted")

    def _email_outage(self, conns: list[Any]) -> None:
        start = self.now + OUTAGE_STEP_S
        self.sink.handler.refusing = True
        try:
            # Owners ask for codes right now, so mail is certainly due while the provider refuses.
            owners = [p.email for p in self.schedule.plans if p.role == "multi" and p.email][:3]
            for email in owners:
                with contextlib.suppress(requests.RequestException):
                    requests.post(
                        self.server.url + "/v1/codes",
                        json={"email": email, "purpose": "portal"},
                        headers={"X-Forwarded-For": "10.255.0.1"},
                        timeout=30,
                    )
            for _ in range(int(self.email_outage_s / OUTAGE_STEP_S)):
                t = time.monotonic()
                self._step(conns, OUTAGE_STEP_S, False)
                time.sleep(max(0.0, OUTAGE_STEP_S / self.outage_speed - (time.monotonic() - t)))
        finally:
            self.sink.handler.refusing = False
        self.faults.append((start, self.now, "email refusing"))

    def _kill_and_restart(self, conns: list[Any]) -> None:
        start = self.now + STEP_S

        def kill() -> None:
            time.sleep(0.05)  # mid-step: agents have requests in flight
            self.server.kill()

        self._step(conns, STEP_S, False, during=kill)
        self.kills.append(start)
        for _ in range(KILL_DOWN_STEPS):
            self._step(conns, STEP_S, False)
        began = time.monotonic()
        for attempt in range(3):  # a supervisor would start it again; each failure is reported
            try:
                self.server.start()
                break
            except ServerStartFailed as exc:
                self.start_failures.append(str(exc)[-1500:])
                if attempt == 2:
                    raise
        self.timing["restarts"] += time.monotonic() - began
        self.faults.append((start, self.now + STEP_S, "server SIGKILL"))

    def _pg_outage(self, conns: list[Any]) -> None:
        start = self.now + PG_STEP_S
        with postgres_stopped():
            until = time.monotonic() + self.pg_stop_s
            for _ in range(10_000):
                if time.monotonic() >= until:
                    break
                self._step(conns, PG_STEP_S, False)
                time.sleep(0.2)
        for _ in range(600):
            if self.server.healthy():
                break
            time.sleep(0.1)
        self.faults.append((start, self.now + STEP_S, "PostgreSQL stopped"))

    # -- the payment provider ----------------------------------------------------------------------------

    def _deliver(self, event: dict[str, Any]) -> str | None:
        """Deliver one event as Stripe would: again and again until the server takes it (bounded)."""
        self.deliveries += 1
        began = time.monotonic()
        try:
            return self._deliver_inner(event)
        finally:
            self.timing["deliveries"] += time.monotonic() - began

    def _deliver_inner(self, event: dict[str, Any]) -> str | None:
        for _ in range(MAX_DELIVERY_TRIES):
            try:
                resp = requests.post(self.server.url + "/_test/webhook", json=event, timeout=30)
                if resp.status_code == 200:
                    return str(resp.json().get("outcome"))
            except requests.RequestException:
                pass
            time.sleep(0.5)
        self.deliveries_failed += 1
        return None

    def _subscription_of(self, email: str) -> str | None:
        from sqlalchemy import select

        from server.models import Customer, Subscription

        return self._retry_db(lambda: self._subscription_query(email, select, Customer, Subscription))

    def _retry_db(self, read: Any) -> Any:
        """Run a read, again after a dropped connection (PostgreSQL was just restarted), bounded."""
        from sqlalchemy.exc import OperationalError

        for attempt in range(10):
            try:
                return read()
            except OperationalError:
                if attempt == 9:
                    raise
                time.sleep(1.0)
        return None

    def _subscription_query(self, email: str, select: Any, Customer: Any, Subscription: Any) -> str | None:  # noqa: N803
        with self.provider_db.transaction() as session:
            return session.scalars(
                select(Subscription.provider_subscription_id)
                .join(Customer, Customer.id == Subscription.customer_id)
                .where(Customer.email == email)
            ).first()

    def _provider_actions(self, pending: list[tuple[float, str, dict[str, Any]]], until: float) -> list[Any]:
        """Run the provider's own actions due by `until`; deliver their events shuffled and duplicated."""
        later = []
        for at, name, params in pending:
            if at > until:
                later.append((at, name, params))
                continue
            plan = self.schedule.plans[params["plan"]]
            sub = self._subscription_of(plan.email or "")
            if sub is None:  # not bought yet (the server was down at the time): try again next step
                later.append((at + STEP_S, name, params))
                continue
            t = self.now + STEP_S
            self.clock.set(self.t0 + t)  # the provider acts at the step's time
            if name == "reorder_fail":
                events = self.sandbox.apply_action(sub, "fail_renewal")
                params["old"] = events
                batch = events + events
            elif name == "reorder_recover":
                old = next(
                    (p[2].get("old", []) for p in self.provider_log_raw(plan.index, "reorder_fail")), []
                )
                new = self.sandbox.apply_action(sub, "pay_now")
                batch = new + old + new + old  # a stale failure arrives after the recovery
                self.reordered += len(old)
            else:
                events = []
                for action in ("cancel_at_period_end", "resume", "cancel_at_period_end"):
                    events += self.sandbox.apply_action(sub, action)
                batch = list(reversed(events)) + events
                self.reordered += len(events)
            self.provider_log.append({"t": t, "name": name, "plan": plan.index, "params": params})
            for event in batch:
                self._deliver(event)
        return later

    def provider_log_raw(self, plan: int, name: str) -> list[tuple[float, str, dict[str, Any]]]:
        """The provider actions already done for `plan` named `name`."""
        return [
            (p["t"], p["name"], p["params"])
            for p in self.provider_log
            if p["plan"] == plan and p["name"] == name
        ]

    def _deliver_duplicates(self, count: int) -> None:
        """Stripe delivers some events twice: send already processed ones again; each must be a no-op."""
        from sqlalchemy import select

        from server.models import StripeEvent

        payloads = self._retry_db(lambda: self._processed_payloads(select, StripeEvent))
        for payload in self.rng.sample(payloads, min(count, len(payloads))):
            outcome = self._deliver(dict(payload))
            if outcome == "duplicate":
                self.dup_delivered += 1
            else:
                self.deliveries_failed += 1

    def _processed_payloads(self, select: Any, StripeEvent: Any) -> list[Any]:  # noqa: N803
        with self.provider_db.transaction() as session:
            return list(
                session.scalars(select(StripeEvent.payload).where(StripeEvent.processed_at.isnot(None)))
            )

    # -- the end -----------------------------------------------------------------------------------------

    def _finish(self, conns: list[Any]) -> tuple[list[dict[str, Any]], Counter[int], list[float]]:
        results: list[dict[str, Any]] = []
        per_second: Counter[int] = Counter()
        latencies: list[float] = []
        for conn in conns:
            conn.send(("finish",))
        for conn in conns:
            if not conn.poll(600):
                raise RuntimeError("a worker did not finish")
            _, part, seconds, lat, phases = conn.recv()
            self.timing.update({f"worker_{k}": v for k, v in phases.items()})
            results += part
            per_second.update(seconds)
            latencies += lat
        return sorted(results, key=lambda r: r["index"]), per_second, latencies

    def _settle_outbox(self) -> None:
        """Give the outbox worker simulated time to finish retries (agents no longer step), bounded."""
        from sqlalchemy import func, select

        from server.models import Outbox

        self._deliver_duplicates(self.dup_per_day)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with self.provider_db.transaction() as session:
                pending = session.scalar(
                    select(func.count()).select_from(Outbox).where(Outbox.status == "pending")
                )
            if not pending:
                return
            self.clock.set(self.t0 + self.now + 3600)  # due now: retries wait at most an hour
            time.sleep(1.0)

    def _check(
        self, results: list[dict[str, Any]], per_second: Counter[int], latencies: list[float], started: float
    ) -> dict[str, Any]:
        end = self.now
        logs = [entry for r in results for entry in r["log"] if entry[2] != -1]
        by_route = Counter(route for _t, route, _s in logs)
        lat = sorted(latencies) or [0.0]
        exceptions = [e for r in results for e in r["errors"]]
        report = {
            "agents": self.n,
            "days": self.days,
            "workers": self.n_workers,
            "seed": self.seed,
            "backend": "PostgreSQL" if self.pg_admin_url else "SQLite",
            "started": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "faults": self.faults,
            "kills": self.kills,
            "states": fleet_check.check_states(results, self.provider_log, end, self.schedule.old_customers),
            "migrations": fleet_check.check_migrations(results, self.schedule.old_customers),
            "errors": fleet_check.check_errors(results, self.faults),
            "server_checks": fleet_check.check_server(
                self.db_url,
                results,
                self.provider_log,
                self.sink.messages(),
                self.schedule.old_customers,
                self.t0,
            ),
            "import_lines": self.import_lines,
            "requests": len(logs),
            "by_route": dict(by_route.most_common()),
            "requests_per_agent_day": len(logs) / self.n / (end / DAY),
            "peak_rps": max(per_second.values(), default=0),
            "p50_ms": statistics.median(lat) * 1000,
            "p99_ms": lat[int(0.99 * (len(lat) - 1))] * 1000,
            "max_ms": lat[-1] * 1000,
            "rss_peak_mib": max(self.rss, default=0) / 1024,
            "rss_end_mib": (self.rss[-1] if self.rss else 0) / 1024,
            "server_starts": self.server.starts,
            "start_failures": self.start_failures,
            "deliveries": self.deliveries,
            "duplicates_delivered": self.dup_delivered,
            "reordered": self.reordered,
            "deliveries_failed": self.deliveries_failed,
            "sink_refused": self.sink.handler.refused,
            "agent_exceptions": len(exceptions) + sum(len(r["unfinished"]) for r in results),
            "exception_samples": exceptions[:5]
            + [f"agent {r['index']} unfinished {r['unfinished']}" for r in results if r["unfinished"]][:5],
            "samples": self.samples,
            "wall_s": time.monotonic() - started,
            "timing": {k: round(v, 1) for k, v in self.timing.items()},
        }
        return report


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def main(argv: list[str] | None = None) -> int:
    """Run the simulation and write the report and chart."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--days", type=float, default=30.0)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--postgres", help="admin URL of a PostgreSQL server (a fleet_* database is made)")
    parser.add_argument("--pg-stop", action="store_true", help="stop PostgreSQL for 10 s during the run")
    parser.add_argument("--email-outage-s", type=float, default=300.0, help="server-time seconds of refusal")
    parser.add_argument("--outage-speed", type=float, default=10.0, help="sim/real speed during the outage")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--max-wall-s", type=float, default=5400.0)
    parser.add_argument("--out", default="docs/fleet", help="directory for the report and chart")
    args = parser.parse_args(argv)
    fleet = Fleet(
        agents=args.agents,
        days=args.days,
        workers=args.workers,
        database_url=args.postgres,
        pg_stop=args.pg_stop,
        email_outage_s=args.email_outage_s,
        outage_speed=args.outage_speed,
        seed=args.seed,
        max_wall_s=args.max_wall_s,
    )
    report = fleet.run()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = f"fleet-{report['agents']}-{report['backend'].lower()}"
    (out / f"{name}.txt").write_text(fleet_report.text(report))
    fleet_report.chart(
        report["samples"],
        report["faults"],
        out / f"{name}.png",
        f"{report['agents']} agents, {report['days']:g} simulated days, {report['backend']}",
    )
    print(fleet_report.text(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
