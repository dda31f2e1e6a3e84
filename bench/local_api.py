"""Benchmark of the agent's local API, as a POS app sees it. Prints figures; asserts nothing.

Starts `pospal-agent run --headless` (a real process, temp data dir, free port, its server pointed at a
dead port so the numbers show the offline case, which must be as fast as the online one) and measures:

- time from process start to the first `GET /v1/license` answer      (target <= 1.5 s)
- `GET /v1/license` over keep-alive from 1 client and from 16 clients  (targets p50 <= 0.5 ms,
  p99 <= 2 ms, >= 3000 req/s); each client is its own process with one persistent connection and a
  minimal raw-socket HTTP/1.1 client, so client-side Python overhead stays out of the figures
- the agent's resident memory (RSS) after the load                     (target <= 60 MB)
- the bare-socket floor (issue 23): a `ThreadingHTTPServer` with TCP_NODELAY in its own process,
  answering the agent's own `GET /v1/license` body (send_response, two headers, the body; `--floor
  one-write`: the whole answer in one write), side by side in the same run: each client keeps one
  connection to each and asks them in turn, so both see the same moments of a busy machine; prints each
  p99 as agent / floor, for 1 and 16 clients and the paced run (target <= 0.6x)

`--flood N` (issue 12): N slow connections (each sends half a request head, then one byte every 2 s,
and reconnects 0.5 s after the agent drops it) from their own process, while one POS client that was
connected before asks `GET /v1/license` over keep-alive at 100 req/s. Prints the client's p50/p99
(target p99 <= 5 ms), the agent's threads (target <= 64) and RSS before, during and after (target
<= 80 MB), how many flood connections the agent refused, and whether a POS reconnecting mid-flood got in;
and (issue 28, case 4) 8 kept-alive POS connections silent 20 s before asking mid-flood: answers and
refusals (target 0 refused).

`--verified` (issue 19): a real `pospal-server run` (SQLite, sandbox) and a second agent on a trial;
`AgentClient.verified_license()` timed for the first call (with this PC's fingerprint probe), cached
calls, and re-challenged calls (target p50 <= 1 ms), beside the plain `AgentClient.license()`.

Usage: .venv/bin/python bench/local_api.py [--requests N] [--clients C] [--only basic|flood|verified]
       [--floor idiomatic|one-write]
"""

from __future__ import annotations

import argparse
import collections
import json
import multiprocessing as mp
import os
import resource
import selectors
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_response(sock: socket.socket, buf: bytearray) -> bytes:
    """Read one HTTP response (Content-Length framed) from `sock`; leftover bytes stay in `buf`."""
    while True:
        end = buf.find(b"\r\n\r\n")
        if end >= 0:
            head = bytes(buf[:end]).lower()
            i = head.find(b"content-length:")
            length = int(head[i + 15 : head.find(b"\r\n", i) if head.find(b"\r\n", i) > 0 else None])
            total = end + 4 + length
            while len(buf) < total:
                chunk = sock.recv(65536)
                if not chunk:
                    raise ConnectionError("agent closed the connection")
                buf += chunk
            response = bytes(buf[:total])
            del buf[:total]
            return response
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("agent closed the connection")
        buf += chunk


def floor_server(ready: mp.Queue, body: bytes, one_write: bool) -> None:
    """The bare-socket floor: Python's ThreadingHTTPServer (a thread per connection, TCP_NODELAY)
    answering every GET with `body`, the agent's own body, the way an http.server app does
    (`one_write`: the whole answer prebuilt and sent in one write, a harder floor)."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    if hasattr(os, "setsid"):
        os.setsid()  # its own session, as the agent's (start_new_session): the scheduler treats them alike

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            super().setup()

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            if one_write:
                self.wfile.write(whole)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    whole = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    ready.put(server.server_address[1])
    server.serve_forever()


def start_floor(agent_port: int, one_write: bool) -> tuple[mp.Process, int]:
    """Start the floor server in its own process with the agent's current body; (process, port)."""
    request = f"GET /v1/license HTTP/1.1\r\nHost: 127.0.0.1:{agent_port}\r\nConnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", agent_port), timeout=5) as s:
        s.sendall(request.encode())
        body = read_response(s, bytearray()).partition(b"\r\n\r\n")[2]
    ctx = mp.get_context("fork" if sys.platform != "win32" else "spawn")
    ready: mp.Queue = ctx.Queue()
    proc = ctx.Process(target=floor_server, args=(ready, body, one_write), daemon=True)
    proc.start()
    return proc, ready.get(timeout=30)


def client(port: int | tuple[int, ...], n: int, start_at: float, out: mp.Queue, rate: float = 0.0) -> None:
    """One keep-alive client: warm up, wait for the common start, send `n` requests, report latencies.

    With `rate` > 0 the client sends on a fixed schedule (`rate` requests a second) instead of as fast as
    it can, and each latency runs from the request's scheduled time, so a client that falls behind counts
    its queueing delay too (no coordinated omission). Given several ports, it keeps one connection to each
    and sends its requests to them in turn (`n` each), so every server sees the same moments of a busy
    machine; the latencies are reported per port, each from its own send.
    """
    ports = (port,) if isinstance(port, int) else tuple(port)
    conns = []
    for target in ports:
        request = f"GET /v1/license HTTP/1.1\r\nHost: 127.0.0.1:{target}\r\n\r\n".encode()
        sock = socket.create_connection(("127.0.0.1", target))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = bytearray()
        for _ in range(200):
            sock.sendall(request)
            read_response(sock, buf)
        conns.append((sock, request, buf))
    while time.time() < start_at:
        time.sleep(0.001)
    lat: list[list[float]] = [[] for _ in ports]
    perf = time.perf_counter
    k = len(ports)
    t0 = perf()
    for i in range(n * k):
        sock, request, buf = conns[i % k]
        s = perf()
        if rate > 0:
            due = t0 + i / (rate * k)
            if due > s:
                time.sleep(due - s)
            # Alone, a latency runs from the scheduled time; side by side, from the send, so one
            # server's slow answer never counts against the next request, to the other one.
            s = due if k == 1 else perf()
        sock.sendall(request)
        response = read_response(sock, buf)
        lat[i % k].append(perf() - s)
        assert response.startswith(b"HTTP/1.1 200"), response[:80]
    t1 = perf()
    for sock, _request, _buf in conns:
        sock.close()
    out.put((lat if k > 1 else lat[0], t0, t1))


def run_clients(port: int, clients: int, n: int, rate: float = 0.0) -> tuple[list[float], float]:
    """Run `clients` client processes of `n` requests each (paced at `rate`/s each when > 0).

    Returns (all latencies, req/s).
    """
    results = _run(port, clients, n, rate)
    lat = [x for r in results for x in r[0]]
    # Each client times its own run; the load lasts from the first start to the last end. perf_counter is
    # system-wide monotonic on Linux, so the processes' readings compare.
    span = max(r[2] for r in results) - min(r[1] for r in results)
    return lat, len(lat) / span


def run_side_by_side(ports: tuple[int, ...], clients: int, n: int, rate: float = 0.0) -> list[list[float]]:
    """`clients` processes, each asking every port in turn (`n` requests each): latencies per port."""
    results = _run(ports, clients, n, rate)
    return [[x for r in results for x in r[0][i]] for i in range(len(ports))]


def _run(port: int | tuple[int, ...], clients: int, n: int, rate: float) -> list:
    ctx = mp.get_context("fork" if sys.platform != "win32" else "spawn")
    out: mp.Queue = ctx.Queue()
    start_at = time.time() + 1.0 + 0.05 * clients
    procs = [ctx.Process(target=client, args=(port, n, start_at, out, rate)) for _ in range(clients)]
    for p in procs:
        p.start()
    results = [out.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(30)
    return results


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))] * 1000


def rss_mb(pid: int) -> tuple[float, float]:
    """(current RSS, peak RSS) in MB from /proc (Linux)."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) the process has used, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def threads_of(pid: int) -> int:
    """The process's thread count, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return -1


def start_agent(
    data_dir: Path, port: int, server_url: str | None = None, trusted_keys: Path | None = None
) -> tuple[subprocess.Popen, float]:
    """Start the headless agent; returns the process and seconds until the first license answer."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("POSPAL_")}
    env.update(
        PYTHONPATH=str(REPO),
        POSPAL_DATA_DIR=str(data_dir),
        POSPAL_AGENT_PORT=str(port),
        POSPAL_SERVER_URL=server_url or f"http://127.0.0.1:{free_port()}",
    )
    if trusted_keys is not None:
        env["POSPAL_TRUSTED_KEYS"] = str(trusted_keys)
    env.pop("DISPLAY", None)
    env.pop("WAYLAND_DISPLAY", None)
    request = f"GET /v1/license HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode()
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent.cli", "run", "--headless"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = started + 30
    while time.perf_counter() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(request)
                if read_response(s, bytearray()).startswith(b"HTTP/1.1 200"):
                    return proc, time.perf_counter() - started
        except OSError:
            time.sleep(0.005)
    proc.kill()
    raise SystemExit("the agent did not answer within 30 s")


def raise_fd_limit(need: int) -> None:
    """Raise this process's open-file limit to `need` (within the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))


def flooder(port: int, n: int, seconds: float, out: mp.Queue) -> None:
    """Keep `n` slow connections on the agent for `seconds`: each sends half a request head, then one
    byte every 2 s; one the agent drops is reopened 0.5 s later. Reports (opened, dropped, peak open)."""
    raise_fd_limit(n + 256)
    sel = selectors.DefaultSelector()
    head = f"GET /v1/license HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-Slow: ".encode()
    pending_reopen: collections.deque[float] = collections.deque()
    live: dict[socket.socket, float] = {}  # socket -> next drip time
    opened = dropped = peak = 0

    def open_one(now: float) -> None:
        nonlocal opened
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        sel.register(s, selectors.EVENT_WRITE)
        live[s] = now
        opened += 1

    def drop(s: socket.socket, now: float) -> None:
        nonlocal dropped
        sel.unregister(s)
        s.close()
        live.pop(s, None)
        dropped += 1
        pending_reopen.append(now + 0.5)

    start = time.monotonic()
    next_drip = start
    for _ in range(n):
        open_one(start)
    while time.monotonic() - start < seconds:
        now = time.monotonic()
        for key, mask in sel.select(0.05):
            s = key.fileobj
            if mask & selectors.EVENT_WRITE:
                if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                    drop(s, now)
                    continue
                try:
                    s.send(head)
                except OSError:
                    drop(s, now)
                    continue
                sel.modify(s, selectors.EVENT_READ)
                live[s] = now + 2.0
            elif mask & selectors.EVENT_READ:
                try:
                    data = s.recv(4096)
                except OSError:
                    data = b""
                if not data:
                    drop(s, now)
        if now >= next_drip:  # drip once every 0.25 s over the due sockets (a cheap flooder)
            next_drip = now + 0.25
            for s in [s for s, due in live.items() if due <= now]:
                if sel.get_key(s).events != selectors.EVENT_READ:
                    continue
                try:
                    s.send(b"a")
                    live[s] = now + 2.0
                except OSError:
                    drop(s, now)
        while pending_reopen and pending_reopen[0] <= now:
            pending_reopen.popleft()
            open_one(now)
        peak = max(peak, len(live))
    for s in list(live):
        s.close()
    out.put((opened, dropped, peak))


def reconnects(port: int, seconds: float, out: mp.Queue) -> None:
    """Once a second, a POS opening a new connection and asking once: counts (served, refused)."""
    request = f"GET /v1/license HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode()
    served = refused = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                s.sendall(request)
                ok = read_response(s, bytearray()).startswith(b"HTTP/1.1 200")
        except OSError:
            ok = False
        served, refused = served + ok, refused + (not ok)
        time.sleep(1.0)
    out.put((served, refused))


def quiet_pos(port: int, n: int, first_ask: float, out: mp.Queue) -> None:
    """`n` kept-alive POS connections (issue 28, case 4), each answered once before the flood, then
    silent (as a README POS between orders) until `first_ask` + 0.5 s * its number (Unix time), then
    asking 3 times a second apart. A connection the agent dropped is reopened once and asked again, as
    `AgentClient` does. Reports (answers, refused: anything but a 200 in time, dropped kept-alive
    connections, shortest silence in s)."""
    request = f"GET /v1/license HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    conns = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=2)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(request)
        read_response(s, bytearray())
        conns.append(s)
    last_answer = time.time()
    asks = sorted((first_ask + 0.5 * i + k, i) for i in range(n) for k in range(3))
    answers = refused = dropped = 0
    for due, i in asks:
        time.sleep(max(0.0, due - time.time()))
        try:
            conns[i].sendall(request)
            ok = read_response(conns[i], bytearray()).startswith(b"HTTP/1.1 200")
        except OSError:
            dropped += 1
            conns[i].close()
            try:
                conns[i] = socket.create_connection(("127.0.0.1", port), timeout=2)
                conns[i].sendall(request)
                ok = read_response(conns[i], bytearray()).startswith(b"HTTP/1.1 200")
            except OSError:
                ok = False
        answers, refused = answers + ok, refused + (not ok)
    for s in conns:
        s.close()
    out.put((answers, refused, dropped, first_ask - last_answer))


def flood_run(port: int, pid: int, n: int) -> None:
    """The flood figures (see the module docstring)."""
    raise_fd_limit(n + 256)
    ctx = mp.get_context("fork" if sys.platform != "win32" else "spawn")
    rss_before, _ = rss_mb(pid)
    threads_before = threads_of(pid)
    rate, seconds = 100.0, 15.0
    # The same client without a flood first: on shared cores, this is the floor the flood adds to.
    quiet, _ = run_clients(port, 1, int(rate * 5), rate=rate)
    out: mp.Queue = ctx.Queue()
    # The POS connects first (its keep-alive connection is open all day), then the flood begins.
    start_at = time.time() + 4.0
    pos = ctx.Process(target=_paced_client, args=(port, int(rate * seconds), start_at, out, rate))
    pos.start()
    time.sleep(1.0)
    # Kept-alive POS connections that fall silent 20 s before the flood's connections arrive and ask
    # in the middle of it; the flood outlasts their last question.
    quiet_n = 8
    quiet_out: mp.Queue = ctx.Queue()
    silent_pos = ctx.Process(target=quiet_pos, args=(port, quiet_n, time.time() + 20.5, quiet_out))
    silent_pos.start()
    time.sleep(0.5)
    flood_out: mp.Queue = ctx.Queue()
    flood = ctx.Process(
        target=flooder, args=(port, n, max(seconds + 6.0, 20.0 + 0.5 * quiet_n + 4), flood_out)
    )
    flood.start()
    rec_out: mp.Queue = ctx.Queue()
    rec = ctx.Process(target=reconnects, args=(port, seconds, rec_out))
    time.sleep(max(0.0, start_at - time.time()))
    rec.start()
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    samples = []
    while pos.is_alive():
        samples.append((threads_of(pid), rss_mb(pid)[0]))
        pos.join(0.5)
    cpu_share = (cpu_seconds(pid) - cpu0) / (time.monotonic() - t0)
    lat, _t0, _t1 = out.get(timeout=60)
    opened, dropped, peak = flood_out.get(timeout=60)
    served, refused = rec_out.get(timeout=60)
    q_answers, q_refused, q_dropped, q_silence = quiet_out.get(timeout=60)
    for proc in (flood, rec, silent_pos):
        proc.join(30)
    time.sleep(11.0)  # past the request deadline: what the flood left behind
    rss_after, peak_rss = rss_mb(pid)
    print(
        f"flood of {n} slow connections ({opened} opened, {dropped} dropped or refused by the agent, "
        f"at most {peak} open at once on the flooder's side):"
    )
    print(
        f"  the same client with no flood:      p50 {pct(quiet, 50):.3f} ms, p99 {pct(quiet, 99):.3f} ms, "
        f"max {max(quiet) * 1000:.3f} ms over {len(quiet)} requests"
    )
    print(
        f"  POS keep-alive client at {rate:.0f} req/s: p50 {pct(lat, 50):.3f} ms, "
        f"p99 {pct(lat, 99):.3f} ms, "
        f"max {max(lat) * 1000:.3f} ms over {len(lat)} requests (target p99 <= 5 ms)"
    )
    print(f"  agent CPU during the flood: {cpu_share * 100:.0f} % of one core")
    print(
        f"  agent threads: before {threads_before}, during max {max(t for t, _ in samples)}, "
        f"after {threads_of(pid)} (target <= 64)"
    )
    print(
        f"  agent RSS: before {rss_before:.1f} MB, during max {max(r for _, r in samples):.1f} MB, "
        f"after {rss_after:.1f} MB, peak {peak_rss:.1f} MB (target <= 80 MB)"
    )
    print(
        f"  a POS opening a new connection each second during the flood: {served} served, "
        f"{refused} refused or timed out (2 s)"
    )
    print(
        f"  {quiet_n} kept-alive POS connections silent {q_silence:.1f} s and more, then asking 3 times "
        f"each during the flood: {q_answers} answers, {q_refused} refused (target 0), "
        f"{q_dropped} kept-alive connections dropped by the agent"
    )


def _paced_client(port: int, n: int, start_at: float, out: mp.Queue, rate: float) -> None:
    client(port, n, start_at, out, rate)


def verified_run(tmp: Path, n: int) -> None:
    """The verified-call figures (see the module docstring)."""
    sys.path.insert(0, str(REPO))
    import requests
    from pospal_client.client import AgentClient

    from bench.server_refresh import fresh_database, sandbox_server_env, start_server, stop
    from pospal_protocol import fingerprint

    url, cleanup = fresh_database("sqlite", tmp, None)
    env = sandbox_server_env(url, tmp, "bench-local-api")
    server, sport = start_server(env, 1, tmp / "server.log")
    agent = None
    try:
        jwks = requests.get(f"http://127.0.0.1:{sport}/v1/keys", timeout=10).json()
        trusted = tmp / "trusted.json"
        trusted.write_text(json.dumps(jwks))
        port = free_port()
        agent, _ = start_agent(tmp / "vdata", port, f"http://127.0.0.1:{sport}", trusted)
        api_token = (tmp / "vdata" / "api-token").read_text().strip()
        requests.post(
            f"http://127.0.0.1:{port}/v1/trial",
            json={},
            timeout=30,
            headers={"Authorization": f"Bearer {api_token}"},
        ).raise_for_status()
        perf = time.perf_counter
        fingerprint.clear_cache()
        pos = AgentClient(port, trusted_keys=jwks)
        pos.wait_ready(30)
        t = perf()
        first = pos.verified_license()
        first_ms = (perf() - t) * 1000
        assert first["licensed"] is True, first

        def timed(call, count: int) -> list[float]:
            lat = []
            for _ in range(count):
                t0 = perf()
                call()
                lat.append(perf() - t0)
            return lat

        plain = timed(pos.license, n)
        cached = timed(pos.verified_license, n)
        pos.recheck_s = 0.0  # every call challenges the agent afresh
        pos.forget_verified()
        rechallenged = timed(pos.verified_license, n)
        print(f"verified_license(), agent on a trial from a real server ({n} calls each):")
        print(f"  first call, with this PC's fingerprint probe: {first_ms:.3f} ms")
        for name, lat in (
            ("plain license() (today's call)", plain),
            ("verified, cached", cached),
            ("verified, re-challenged", rechallenged),
        ):
            print(
                f"  {name:32s} p50 {pct(lat, 50):.3f} ms, p99 {pct(lat, 99):.3f} ms, "
                f"mean {statistics.fmean(lat) * 1000:.3f} ms"
            )
        print("  (targets: re-challenged p50 <= 1 ms; cached no slower than plain)")
        pos.close()
    finally:
        if agent is not None:
            os.killpg(agent.pid, signal.SIGTERM)
            agent.wait(15)
        stop(server)
        cleanup()


def main() -> None:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=20000, help="requests per run (split over clients)")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument(
        "--paced-total", type=float, default=3200.0, help="total req/s of the paced 16-client run"
    )
    parser.add_argument("--flood", type=int, default=2000, help="slow connections in the flood run")
    parser.add_argument("--verified-calls", type=int, default=2000)
    parser.add_argument(
        "--floor",
        choices=("idiomatic", "one-write"),
        default="idiomatic",
        help="the floor server: send_response + headers + body (default), or one prebuilt write",
    )
    parser.add_argument(
        "--only",
        choices=("basic", "flood", "verified"),
        action="append",
        help="run only these parts (repeatable); default all",
    )
    args = parser.parse_args()
    parts = set(args.only or ("basic", "flood", "verified"))

    with tempfile.TemporaryDirectory(prefix="pospal-bench-") as tmp:
        port = free_port()
        proc, first = start_agent(Path(tmp) / "data", port)
        try:
            load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
            print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {load:.2f}")
            if "basic" in parts:
                basic_run(proc, port, first, args)
            if "flood" in parts:
                flood_run(port, proc.pid, args.flood)
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(15)
        if "verified" in parts:
            verified_run(Path(tmp), args.verified_calls)


def basic_run(proc: subprocess.Popen, port: int, first: float, args: argparse.Namespace) -> None:
    """Start-up, keep-alive latency and throughput, memory (the original figures)."""
    cpu = cpu_seconds(proc.pid)
    idle_rss, _ = rss_mb(proc.pid)
    print(
        f"start to first answer:        {first * 1000:8.1f} ms      (target <= 1500 ms; "
        f"CPU used by then {cpu * 1000:.0f} ms)"
    )
    print(f"headless agent RSS, idle:     {idle_rss:8.1f} MB      (target <= 60 MB)")
    for clients in (1, args.clients):
        lat, rps = run_clients(port, clients, max(1000, args.requests // clients))
        print(
            f"GET /v1/license, {clients:2d} client{'s' if clients > 1 else ' '}: "
            f"p50 {pct(lat, 50):.3f} ms, p99 {pct(lat, 99):.3f} ms, "
            f"mean {statistics.fmean(lat) * 1000:.3f} ms, {rps:,.0f} req/s "
            f"over {len(lat)} requests "
            f"(targets p50 <= 0.5 ms, p99 <= 2 ms, >= 3000 req/s)"
        )
    # Flat out, 16 closed-loop clients on 2 shared cores queue behind each other (Little's law:
    # mean latency = clients / throughput), so also measure 16 terminals that together ask at
    # the target rate of 3,200 req/s, each on its own schedule.
    per_client = args.paced_total / args.clients
    lat, rps = run_clients(port, args.clients, int(per_client * 3), rate=per_client)
    print(
        f"GET /v1/license, {args.clients:2d} clients paced at {args.paced_total:,.0f} req/s "
        "in all: "
        f"p50 {pct(lat, 50):.3f} ms, p99 {pct(lat, 99):.3f} ms, "
        f"mean {statistics.fmean(lat) * 1000:.3f} ms, {rps:,.0f} req/s over {len(lat)} requests"
    )
    floor, floor_port = start_floor(port, args.floor == "one-write")
    print(
        f"side by side with the bare-socket floor ({args.floor}): each client asks the agent and the floor "
        "in turn over one connection to each"
    )
    try:
        runs = [
            (f"{c} client{'s' if c > 1 else ''}", c, max(1000, args.requests // c), 0.0)
            for c in (1, args.clients)
        ]
        runs.append((f"{args.clients} clients paced", args.clients, int(per_client * 3), per_client))
        for label, clients, n, rate in runs:
            agent, floor_lat = run_side_by_side((port, floor_port), clients, n, rate)
            print(
                f"  {label:18s} agent p50 {pct(agent, 50):.3f} ms, p99 {pct(agent, 99):.3f} ms; floor p50 "
                f"{pct(floor_lat, 50):.3f} ms, p99 {pct(floor_lat, 99):.3f} ms; p99 agent / floor "
                f"{pct(agent, 99) / pct(floor_lat, 99):.2f}x (target <= 0.6x)"
            )
    finally:
        floor.terminate()
        floor.join(10)
    rss, peak = rss_mb(proc.pid)
    print(f"headless agent RSS after load: {rss:7.1f} MB, peak {peak:.1f} MB (target <= 60 MB)")


if __name__ == "__main__":
    main()
