"""Refresh throughput and latency of a real `pospal-server run` over loopback.

For each database (SQLite file, and PostgreSQL when a URL is given) this migrates a fresh database,
seeds one subscription with `--machines` activated machines, starts `pospal-server run --workers N` as
a real process, and drives `POST /v1/refresh` from 1 and from 32 concurrent keep-alive connections.
Every request is a valid, machine-signed refresh with its own nonce, so the server does the full work:
signature check, nonce insert, last_seen update, claims, Ed25519 token signing.

Before the databases, the same load generator drives bench/sign_only.py: the same FastAPI/uvicorn
stack with the same workers, whose one route only signs an EdDSA JWT (no database, no signature check).
That is the ceiling, and every refresh run is also printed as a ratio of it at the same client count
(the target: at least 0.6x at 32 clients, with p99 at most 50 ms). All servers are up at once and
each run is cut into `--rounds` slices, driven in turn with the other runs' (ceiling, SQLite,
PostgreSQL, again and again), so a ratio compares loads of the same moments on a shared machine; the
table gives the ratio of each round's slices as a range, and the "cpu ratio": the ceiling's server
CPU per request over the run's, which a busy machine moves least.

The load generator is one asyncio process speaking raw HTTP/1.1 over keep-alive connections, and the
requests are signed before the clock starts, so it uses as little CPU as possible. It still shares the
machine's cores with the server, which the report says.

    python bench/server_refresh.py                      # SQLite, plus PostgreSQL if POSPAL_TEST_DATABASE_URL
    python bench/server_refresh.py --db postgres --pg-url postgresql+psycopg://postgres@127.0.0.1/test
    python bench/server_refresh.py --instances 2        # PostgreSQL: 1 server, then 1 and 2 behind lb_proxy

Output: one JSON line per run (db, instances, workers, clients, requests, errors, req/s, p50, p90, p99,
max, CPU ms per request of the server processes, the load generator and, on PostgreSQL runs, every
`postgres` process; for refresh runs the ceiling's req/s and the ratio), then a table and the verdict
at 32 clients.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGET_RATIO = 0.6
TARGET_P99_MS = 50.0
VERDICT_CLIENTS = 32
sys.path.insert(0, str(REPO))

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from pospal_protocol.signatures import new_nonce, sign_request  # noqa: E402
from pospal_protocol.trust import encode_public_key  # noqa: E402
from server.db import Database, upgrade  # noqa: E402
from server.licensing import ensure_license_for_subscription  # noqa: E402
from server.models import Customer, Machine, Subscription  # noqa: E402


@dataclass
class Result:
    """One measured run."""

    db: str
    instances: int
    workers: int
    clients: int
    requests: int
    errors: int
    seconds: float
    latencies_ms: list[float]
    proxy: bool = False
    server_cpu_s: float = 0.0
    db_cpu_s: float | None = None
    client_cpu_s: float = 0.0
    ceiling_req_per_s: float | None = None
    # This run's ratio to the ceiling in each interleaved round (see `run_interleaved`).
    round_ratios: list[float] = field(default_factory=list)
    ceiling_cpu_ms_per_req: float | None = None

    @property
    def cpu_ratio(self) -> float | None:
        """The ceiling's server CPU per request over this run's: the ratio if both were CPU-bound.

        CPU time per request hardly depends on what else the machine runs, so this moves less than
        the throughput ratio on a busy machine (PostgreSQL's own CPU is not in it: see db_cpu_ms_per_req).
        """
        if not self.ceiling_cpu_ms_per_req or not self.requests or not self.server_cpu_s:
            return None
        return self.ceiling_cpu_ms_per_req / (self.server_cpu_s * 1000 / self.requests)

    @property
    def req_per_s(self) -> float:
        """Answered requests per second."""
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    @property
    def ratio(self) -> float | None:
        """This run's throughput as a share of the sign-only ceiling at the same client count."""
        if not self.ceiling_req_per_s:
            return None
        return self.req_per_s / self.ceiling_req_per_s

    def pct(self, p: float) -> float:
        """The `p`th percentile latency in ms, rounded to 0.01."""
        lat = sorted(self.latencies_ms) or [0.0]
        return round(lat[min(len(lat) - 1, int(p / 100 * len(lat)))], 2)

    def row(self) -> dict[str, object]:
        """The figures as a dict (also the JSON output)."""
        lat = sorted(self.latencies_ms) or [0.0]
        pct = self.pct

        return {
            "db": self.db,
            "instances": self.instances,
            "proxy": self.proxy,
            "workers": self.workers,
            "clients": self.clients,
            "requests": self.requests,
            "errors": self.errors,
            "req_per_s": round(self.req_per_s, 1),
            "p50_ms": pct(50),
            "p90_ms": pct(90),
            "p99_ms": pct(99),
            "max_ms": round(lat[-1], 2),
            "mean_ms": round(statistics.fmean(lat), 2),
            # CPU spent per request, independent of what else the machine is doing.
            "server_cpu_ms_per_req": round(self.server_cpu_s * 1000 / max(1, self.requests), 3),
            "client_cpu_ms_per_req": round(self.client_cpu_s * 1000 / max(1, self.requests), 3),
            "db_cpu_ms_per_req": None
            if self.db_cpu_s is None
            else round(self.db_cpu_s * 1000 / max(1, self.requests), 3),
            "load_avg_1m": round(os.getloadavg()[0], 2),
            "ceiling_req_per_s": None if self.ceiling_req_per_s is None else round(self.ceiling_req_per_s, 1),
            "ratio": None if self.ratio is None else round(self.ratio, 3),
            "ratio_rounds": [round(r, 3) for r in self.round_ratios],
            "cpu_ratio": None if self.cpu_ratio is None else round(self.cpu_ratio, 3),
        }


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def group_cpu_seconds(pgids: list[int]) -> float:
    """User+system CPU seconds of every live process in these process groups (server and workers)."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # After the command name: state(0) ppid(1) pgrp(2) ... utime(11) stime(12)
        if int(fields[2]) in pgids:
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def postgres_cpu_seconds() -> float:
    """User+system CPU seconds of every live PostgreSQL process on this machine (its backends)."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            name, fields = (entry / "stat").read_text().split(" (", 1)[1].rsplit(")", 1)
        except (OSError, ValueError, IndexError):
            continue
        if name == "postgres":
            values = fields.split()
            total += int(values[11]) + int(values[12])
    return total / os.sysconf("SC_CLK_TCK")


# ------------------------------------------------------------------------------------------- setup


def sandbox_server_env(url: str, workdir: Path, secret: str) -> dict[str, str]:
    """The settings of a quiet sandbox server on `url` for a bench: its data and keys under `workdir`."""
    return {
        "POSPAL_DATABASE_URL": url,
        "POSPAL_SERVER_DATA_DIR": str(workdir / "sdata"),
        "POSPAL_SIGNING_KEY_DIR": str(workdir / "skeys"),
        "POSPAL_BILLING": "sandbox",
        "POSPAL_EMAIL": "console",
        "POSPAL_OUTBOX_WORKER": "0",
        "POSPAL_LOG_LEVEL": "WARNING",
        "POSPAL_SERVER_SECRET": secret,
    }


def fresh_database(kind: str, workdir: Path, pg_url: str | None) -> tuple[str, Callable[[], None]]:
    """Create and migrate an empty database; return its URL and a cleanup callable."""
    if kind == "sqlite":
        url = f"sqlite:///{workdir / 'bench.db'}"
        db = Database(url, pool_size=1)
        upgrade(db)
        db.dispose()
        return url, lambda: None
    if not pg_url:
        raise SystemExit("PostgreSQL needs --pg-url or POSPAL_TEST_DATABASE_URL")
    name = f"pospal_bench_{secrets.token_hex(4)}"
    admin = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(pg_url).set(database=name).render_as_string(hide_password=False)
    db = Database(url, pool_size=1)
    upgrade(db)
    db.dispose()

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return url, drop


def seed_machines(url: str, count: int) -> list[tuple[str, Ed25519PrivateKey, dict[str, str]]]:
    """One customer with a `count`-seat subscription and `count` activated machines."""
    now = datetime.now(UTC)
    db = Database(url, pool_size=1)
    machines = []
    with db.transaction() as session:
        customer = Customer(email="bench@cafe.gr", name="Bench", created_at=now)
        session.add(customer)
        session.flush()
        sub = Subscription(
            customer_id=customer.id,
            provider="sandbox",
            provider_subscription_id="sub_bench",
            status="active",
            quantity=count,
            current_period_end=now + timedelta(days=30),
            updated_at=now,
        )
        session.add(sub)
        session.flush()
        license_ = ensure_license_for_subscription(session, sub, now)
        for n in range(count):
            key = Ed25519PrivateKey.generate()
            fp = {c: secrets.token_hex(32) for c in ("machine_id", "product_uuid", "board_serial", "mac")}
            machine = Machine(
                license_id=license_.id,
                fingerprint=fp,
                public_key=encode_public_key(key.public_key()),
                terminal_name=f"Till {n}",
                activated_at=now,
                last_seen_at=now,
            )
            session.add(machine)
            session.flush()
            machines.append((machine.id, key, fp))
    db.dispose()
    return machines


def start_server(env: dict[str, str], workers: int, log: Path) -> tuple[subprocess.Popen, int]:
    """Start `pospal-server run` and wait for /health; return the process and its port."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "server.cli", "run", "--port", str(port), "--workers", str(workers)],
        cwd=REPO,
        env={**os.environ, **env, "PYTHONPATH": str(REPO)},
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    wait_ready("127.0.0.1", port, proc, log)
    return proc, port


def wait_ready(host: str, port: int, proc: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    """Poll GET /health until it answers 200 (bounded)."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited:\n{log.read_text()[-2000:]}")
        try:
            if httpx.get(f"http://{host}:{port}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"server not ready:\n{log.read_text()[-2000:]}")


def stop(proc: subprocess.Popen) -> None:
    """Stop a process group this script started."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def start_ceiling(workers: int, log: Path) -> tuple[subprocess.Popen, int]:
    """Start bench/sign_only.py with `workers` processes and wait for /health; return it and its port."""
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            str(REPO / "bench" / "sign_only.py"),
            "--port",
            str(port),
            "--workers",
            str(workers),
        ],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    wait_ready("127.0.0.1", port, proc, log)
    return proc, port


def start_proxy(upstreams: list[int], log: Path) -> tuple[subprocess.Popen, int]:
    """Put bench/lb_proxy.py (round-robin per request) in front of several instances (issue 8)."""
    script = REPO / "bench" / "lb_proxy.py"
    if not script.exists():
        raise SystemExit("--instances > 1 needs bench/lb_proxy.py")
    args = [sys.executable, str(script), "--listen", "127.0.0.1:0"]
    for port in upstreams:
        args += ["--upstream", f"127.0.0.1:{port}"]
    proc = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=log.open("ab"), start_new_session=True, text=True
    )
    line = proc.stdout.readline() if proc.stdout else ""
    if "listening on" not in line:
        stop(proc)
        raise SystemExit(f"proxy did not start: {line!r}")
    return proc, int(line.strip().rsplit(":", 1)[1])


def bench_machines(count: int) -> list[tuple[str, Ed25519PrivateKey, dict[str, str]]]:
    """`count` machines as `seed_machines` returns them, but in no database (for the ceiling)."""
    return [
        (
            f"m_bench{n}",
            Ed25519PrivateKey.generate(),
            {c: secrets.token_hex(32) for c in ("machine_id", "product_uuid", "board_serial", "mac")},
        )
        for n in range(count)
    ]


# ------------------------------------------------------------------------------------------- load


def presign(machines: list, total: int) -> list[bytes]:
    """`total` complete HTTP/1.1 refresh requests, signed now, each with a fresh nonce."""
    requests = []
    ts = int(time.time())
    for n in range(total):
        machine_id, key, fp = machines[n % len(machines)]
        body = json.dumps({"fingerprint": fp, "known_kids": []}).encode()
        headers = sign_request(key, "POST", "/v1/refresh", body, ts, new_nonce(), machine_id=machine_id)
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        requests.append(
            (
                "POST /v1/refresh HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n{head}\r\n"
            ).encode()
            + body
        )
    return requests


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    await reader.readexactly(length)
    return status


async def drive(
    port: int, requests: list[bytes], clients: int, seconds: float
) -> tuple[int, int, float, list[float]]:
    """Send from `clients` keep-alive connections for `seconds`; return count, errors, time, latencies."""
    queue = iter(requests)
    latencies: list[float] = []
    errors = 0
    stop_at = 0.0

    async def client() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while time.perf_counter() < stop_at:
                request = next(queue, None)
                if request is None:
                    return
                started = time.perf_counter()
                writer.write(request)
                status = await _read_response(reader)
                latencies.append((time.perf_counter() - started) * 1000)
                if status != 200:
                    errors += 1
        finally:
            writer.close()

    started = time.perf_counter()
    stop_at = started + seconds
    await asyncio.gather(*(client() for _ in range(clients)))
    elapsed = time.perf_counter() - started
    return len(latencies), errors, elapsed, latencies


def warm_up(port: int, machines: list, clients: int) -> None:
    """A short untimed load, so the first timed slice does not pay for cold caches and connections."""
    asyncio.run(drive(port, presign(machines, 200), min(clients, 8), 2.0))


def measure(
    port: int, machines: list, clients: int, seconds: float, max_rate: int, pgids: list[int]
) -> tuple[int, int, float, list[float], float, float, float]:
    """One timed load; also return server, client and PostgreSQL CPU seconds.

    PostgreSQL's share is every `postgres` process on the machine, so only PostgreSQL runs report it.
    """
    requests = presign(machines, int(max_rate * seconds))
    server_before, client_before = group_cpu_seconds(pgids), time.process_time()
    db_before = postgres_cpu_seconds()
    count, errors, elapsed, latencies = asyncio.run(drive(port, requests, clients, seconds))
    server_cpu = group_cpu_seconds(pgids) - server_before
    db_cpu = postgres_cpu_seconds() - db_before
    if count >= len(requests):  # the run stopped early: still a true rate, over a shorter time
        print(f"# used all {count} pre-signed requests in {elapsed:.1f} s: raise --max-rate", flush=True)
    return count, errors, elapsed, latencies, server_cpu, time.process_time() - client_before, db_cpu


@dataclass
class Target:
    """One thing under load: the sign-only ceiling, or a database served by `instances` servers."""

    db: str
    instances: int
    proxy: bool
    port: int
    machines: list
    procs: list[subprocess.Popen]
    cleanup: Callable[[], None]

    @property
    def pgids(self) -> list[int]:
        """The process groups whose CPU is the server's (each process was started in its own)."""
        return [proc.pid for proc in self.procs]

    def stop(self) -> None:
        """Stop every process of this target, then drop its database."""
        for proc in self.procs:
            stop(proc)
        if self.proxy and self.procs[-1].stdout is not None:
            print(f"# proxy requests per instance: {self.procs[-1].stdout.read().strip()}", flush=True)
        self.cleanup()


def start_db(
    kind: str, args: argparse.Namespace, workdir: Path, instances: int = 1, proxy: bool = False
) -> Target:
    """A fresh, seeded database served by `instances` servers (behind the proxy if `proxy`)."""
    workdir = workdir / f"{kind}-{instances}{'-lb' if proxy else ''}"
    workdir.mkdir()
    url, cleanup = fresh_database(kind, workdir, args.pg_url)
    procs: list[subprocess.Popen] = []
    try:
        machines = seed_machines(url, args.machines)
        env = {
            "POSPAL_DATABASE_URL": url,
            "POSPAL_SERVER_DATA_DIR": str(workdir / "data"),
            "POSPAL_SIGNING_KEY_DIR": str(workdir / "keys"),
            "POSPAL_BILLING": "sandbox",
            "POSPAL_EMAIL": "console",
            "POSPAL_OUTBOX_WORKER": "0",
            "POSPAL_LOG_LEVEL": "WARNING",
        }
        ports = []
        for n in range(instances):
            proc, port = start_server(env, args.workers, workdir / f"server-{kind}-{n}.log")
            procs.append(proc)
            ports.append(port)
        port = ports[0]
        if proxy:
            proxy_proc, port = start_proxy(ports, workdir / "proxy.log")
            procs.append(proxy_proc)
    except BaseException:
        for proc in procs:
            stop(proc)
        cleanup()
        raise
    return Target(kind, instances, proxy, port, machines, procs, cleanup)


def start_sign_only(args: argparse.Namespace, workdir: Path) -> Target:
    """bench/sign_only.py with the same workers (the ceiling)."""
    workdir = workdir / "sign-only"
    workdir.mkdir()
    proc, port = start_ceiling(args.workers, workdir / "sign-only.log")
    return Target("sign-only", 1, False, port, bench_machines(args.machines), [proc], lambda: None)


def run_interleaved(targets: list[Target], args: argparse.Namespace) -> list[Result]:
    """Every client count against every target, in `args.rounds` interleaved slices.

    The machine is shared, and its load drifts within seconds. So each target is driven for
    `args.seconds / args.rounds` at a time, in turn (ceiling, then each database, again and again), and
    its slices are added up: each ratio compares runs made in the same seconds, not minutes apart.
    Targets[0] is the ceiling.
    """
    results = []
    slice_s = args.seconds / args.rounds
    for clients in args.clients:
        for target in targets:
            warm_up(target.port, target.machines, clients)
        slices: list[list[tuple]] = [[] for _ in targets]
        for _round in range(args.rounds):
            for n, target in enumerate(targets):
                slices[n].append(
                    measure(target.port, target.machines, clients, slice_s, args.max_rate, target.pgids)
                )
        ceiling = None
        for target, parts in zip(targets, slices, strict=True):
            result = Result(
                target.db,
                target.instances,
                args.workers,
                clients,
                sum(p[0] for p in parts),
                sum(p[1] for p in parts),
                sum(p[2] for p in parts),
                [ms for p in parts for ms in p[3]],
                target.proxy,
                server_cpu_s=sum(p[4] for p in parts),
                client_cpu_s=sum(p[5] for p in parts),
                db_cpu_s=sum(p[6] for p in parts) if target.db == "postgres" else None,
                ceiling_req_per_s=None if ceiling is None else ceiling.req_per_s,
            )
            if ceiling is None:
                ceiling = result
            else:
                result.round_ratios = [
                    (p[0] / p[2]) / (c[0] / c[2])
                    for p, c in zip(parts, slices[0], strict=True)
                    if c[0] and p[2]
                ]
                result.ceiling_cpu_ms_per_req = ceiling.server_cpu_s * 1000 / max(1, ceiling.requests)
            results.append(result)
            print(json.dumps(result.row()), flush=True)
    return results


def verdict(result: Result) -> str:
    """One line: a refresh run against the ceiling and the target (ratio and p99)."""
    ratio = result.ratio
    p99 = result.pct(99)
    met = ratio is not None and ratio >= TARGET_RATIO and p99 <= TARGET_P99_MS
    ratio_text = "no ceiling" if ratio is None else f"{ratio:.2f}x"
    return (
        f"{result.db:9} {result.clients} clients: {result.req_per_s:,.0f} req/s of a "
        f"{result.ceiling_req_per_s or 0:,.0f} req/s ceiling = {ratio_text}, p50 {result.pct(50)} ms, "
        f"p99 {p99} ms: {'meets' if met else 'misses'} the target "
        f"(>= {TARGET_RATIO}x, p99 <= {TARGET_P99_MS:.0f} ms)"
    )


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--pg-url", default=os.environ.get("POSPAL_TEST_DATABASE_URL", ""))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--instances", type=int, default=1, help="N > 1: PostgreSQL, 1 server, then 1 and N behind the proxy"
    )
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 32])
    parser.add_argument(
        "--seconds", type=float, default=10.0, help="timed seconds per target and client count"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=5,
        help="interleaved slices per run (run_interleaved)",
    )
    parser.add_argument("--machines", type=int, default=64)
    parser.add_argument("--max-rate", type=int, default=8000, help="requests pre-signed per second of run")
    args = parser.parse_args(argv)
    kinds = ["sqlite", "postgres"] if args.db == "both" else [args.db]
    if args.db == "both" and not args.pg_url:
        kinds = ["sqlite"]
    setups = [(1, False)]
    if args.instances > 1:
        # Several instances need PostgreSQL. One server direct, one behind the proxy (its cost alone)
        # and N behind it, all in this run, so the figures share the machine's load of the moment.
        if not args.pg_url:
            raise SystemExit("--instances needs PostgreSQL: --pg-url or POSPAL_TEST_DATABASE_URL")
        kinds, setups = ["postgres"], [(1, False), (1, True), (args.instances, True)]
    print(
        f"# {os.cpu_count()} CPUs shared by server workers, PostgreSQL, the proxy (+lb rows) and this "
        "load generator; loopback; "
        f"{args.seconds:.0f} s per run, in {args.rounds} slices interleaved with the other runs'",
        flush=True,
    )
    targets: list[Target] = []
    with tempfile.TemporaryDirectory(prefix="pospal-bench-") as tmp:
        try:
            targets.append(start_sign_only(args, Path(tmp)))
            for kind in kinds:
                for instances, proxy in setups:
                    targets.append(start_db(kind, args, Path(tmp), instances, proxy))
            results = run_interleaved(targets, args)
        finally:
            for target in targets:
                target.stop()
    order = ["sign-only", *kinds]
    results.sort(key=lambda r: (order.index(r.db), r.instances, r.proxy, r.clients))
    print()
    print(f"# load average (1 min) at the end: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    print(
        f"{'db':9} {'inst':>6} {'wrk':>3} {'clients':>7} {'requests':>8} {'err':>4} {'req/s':>8} "
        f"{'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7} {'max ms':>7} {'srv cpu ms':>9} {'pg cpu ms':>9} "
        f"{'ratio':>6} {'rounds':>11} {'cpu ratio':>9}"
    )
    for r in results:
        row = r.row()
        served_by = f"{row['instances']}{'+lb' if r.proxy else ''}"
        print(
            f"{row['db']:9} {served_by:>6} {row['workers']:>3} {row['clients']:>7} "
            f"{row['requests']:>8} {row['errors']:>4} {row['req_per_s']:>8} {row['p50_ms']:>7} "
            f"{row['p90_ms']:>7} {row['p99_ms']:>7} {row['max_ms']:>7} {row['server_cpu_ms_per_req']:>9} "
            f"{'' if row['db_cpu_ms_per_req'] is None else row['db_cpu_ms_per_req']:>9} "
            f"{'' if r.ratio is None else f'{r.ratio:.2f}x':>6} "
            f"{'' if not r.round_ratios else f'{min(r.round_ratios):.2f}-{max(r.round_ratios):.2f}':>11} "
            f"{'' if r.cpu_ratio is None else f'{r.cpu_ratio:.2f}x':>9}"
        )
    print()
    print(f"# refresh / sign-only ceiling (same stack, {args.workers} workers, same load generator):")
    for r in results:
        if r.db != "sign-only" and r.clients == VERDICT_CLIENTS:
            print(verdict(r))
    return 1 if any(r.errors for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
