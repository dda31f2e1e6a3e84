"""Drive a server stack through its proxy: a trial, a sandbox purchase, refreshes while one instance stops.

    python scripts/stack_drive.py --url https://localhost:18443 --ca root.crt \
        --upstream http://127.0.0.1:18001 --upstream http://127.0.0.1:18002 \
        --stop 'podman stop -t 10 pospal-smoke-server-1'

Through `--url` (the TLS proxy): `/health/ready`, an agent's trial, a sandbox checkout paid on its page and
the activation that follows, then refreshes from 4 threads; after a third of `--refreshes` `--stop` runs (in
the background, so requests are in flight while the instance shuts down), and refreshes go on until
`--refreshes` are sent and `--after-stop` more went after the stop command returned (the instance gone),
within 120 s. Every answer must be 200 with a token, the stop command must exit 0, and before the stop both
`--upstream`s must have answered refreshes (their own /metrics). Prints
one JSON line of figures (with each refresh's latency: p50, p99, max); exits 1 on any failure. Used by
scripts/compose_smoke.sh and scripts/image_smoke.sh.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pospal_protocol.clock import SystemClock  # noqa: E402
from tests.server.conftest import MachineKey, token_claims  # noqa: E402

EMAIL = "owner@smoke.example"


def _refreshes_served(upstream: str) -> int:
    """How many refreshes this instance answered, from its Prometheus counter."""
    text = httpx.get(f"{upstream}/metrics", timeout=5).text
    found = re.findall(r'pospal_http_requests_total\{[^}]*route="/v1/refresh"[^}]*\} ([0-9.e+]+)', text)
    return int(sum(float(n) for n in found))


def _wait_ready(http: httpx.Client, deadline_s: float) -> None:
    end = time.monotonic() + deadline_s
    while True:
        try:
            if http.get("/health/ready").status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > end:
            raise SystemExit("the stack did not become ready through the proxy")
        time.sleep(0.5)


def _purchase(http: httpx.Client, machine: MachineKey, base: str) -> dict:
    body = {**machine.identity(), "email": EMAIL, "restaurant_name": "Smoke Cafe", "quantity": 2}
    response = machine.post(http, "/v1/checkout", body, machine_id=None)
    assert response.status_code == 200, response.text
    checkout_id, page = response.json()["checkout_id"], response.json()["url"].removeprefix(base)
    paid = http.post(page, data={"action": "pay"}, follow_redirects=False)
    assert paid.status_code == 303, paid.text
    assert http.get(f"/v1/checkout/{checkout_id}").json() == {"status": "complete"}
    activated = machine.activate(http, EMAIL, checkout_id=checkout_id)
    assert activated.status_code == 200, activated.text
    return token_claims(activated.json()["token"])


def main() -> int:
    """Run the drive; print figures as JSON; 0 when every request was answered."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--ca", required=True, help="the proxy's root certificate (PEM)")
    parser.add_argument("--upstream", action="append", default=[])
    parser.add_argument("--stop", required=True, help="the command that stops one instance")
    parser.add_argument("--refreshes", type=int, default=300)
    parser.add_argument(
        "--after-stop", type=int, default=100, help="refreshes still sent after the stop command returned"
    )
    args = parser.parse_args()

    base = args.url.rstrip("/")
    with httpx.Client(base_url=base, verify=args.ca, timeout=15) as http:
        _wait_ready(http, 60)
        trial, paid = MachineKey(clock=SystemClock()), MachineKey(clock=SystemClock())
        started = trial.start_trial(http)
        assert started.status_code == 200, started.text
        assert token_claims(started.json()["token"])["kind"] == "trial"
        claims = _purchase(http, paid, base)
        assert claims["status"] == "active" and claims["seats"] == 2, claims
        # Caddy's first health check of an instance may come before it listens (it is then out of the
        # rotation until the next check, 10 s on): refresh, uncounted, until every instance has answered.
        warm_until = time.monotonic() + 40
        while args.upstream and time.monotonic() < warm_until:
            if all(_refreshes_served(u) > 0 for u in args.upstream):
                break
            assert paid.refresh(http).status_code == 200
            time.sleep(0.2)
        baseline = [_refreshes_served(u) for u in args.upstream]  # the figures below count from here

        # Each refresh: (status, seconds, phase): 0 before the stop, 1 while the stop command runs (the
        # instance shutting down), 2 after it returned (the instance gone).
        results: list[tuple[int, float, int]] = []
        lock = threading.Lock()
        stop_at = args.refreshes // 3
        issued = [0]
        stop_launched, stop_returned = threading.Event(), threading.Event()
        stop_result: list[int] = []
        served_before: list[int] = []
        deadline = time.monotonic() + 120

        def stop() -> None:
            stop_result.append(subprocess.run(shlex.split(args.stop), check=False).returncode)
            stop_returned.set()

        def enough() -> bool:
            after = sum(1 for r in results if r[2] == 2)
            return issued[0] >= args.refreshes and after >= args.after_stop

        def worker() -> None:
            while time.monotonic() < deadline:
                with lock:
                    if enough():
                        return
                    i = issued[0]
                    issued[0] += 1
                    if i == stop_at:
                        served_before.extend(
                            _refreshes_served(u) - b for u, b in zip(args.upstream, baseline, strict=True)
                        )
                        threading.Thread(target=stop, daemon=True).start()
                        stop_launched.set()
                phase = 2 if stop_returned.is_set() else 1 if stop_launched.is_set() else 0
                machine = trial if i % 2 else paid
                sent = time.monotonic()
                try:
                    response = machine.refresh(http)
                    ok = response.status_code == 200 and "token" in response.json()
                    status = response.status_code if ok or response.status_code != 200 else -1
                except httpx.HTTPError:
                    status = 0
                with lock:
                    results.append((status, time.monotonic() - sent, phase))

        started_at = time.monotonic()
        with ThreadPoolExecutor(4) as pool:
            for future in [pool.submit(worker) for _ in range(4)]:
                future.result()
        elapsed = time.monotonic() - started_at
        stop_returned.wait(max(0.0, deadline - time.monotonic()))
        after = [_refreshes_served(u) - b for u, b in zip(args.upstream[1:], baseline[1:], strict=True)]

    lost = [r[0] for r in results if r[0] != 200]
    ranked = sorted(r[1] for r in results)
    figures = {
        "refreshes": len(results),
        "while_stopping": sum(1 for r in results if r[2] == 1),
        "after_stopped": sum(1 for r in results if r[2] == 2),
        "lost": len(lost),
        "lost_statuses": sorted(set(lost)),
        "served_before_stop": served_before,
        "served_by_the_others_after": [n - b for n, b in zip(after, served_before[1:], strict=False)],
        "stop_exit": stop_result[0] if stop_result else None,
        "seconds": round(elapsed, 2),
        # Per refresh, through the proxy; the slowest are those Caddy retried on the other instance.
        "latency_ms": {
            "p50": round(ranked[len(ranked) // 2] * 1000, 1),
            "p99": round(ranked[min(len(ranked) - 1, len(ranked) * 99 // 100)] * 1000, 1),
            "max": round(ranked[-1] * 1000, 1),
        },
    }
    print(json.dumps(figures))
    both_served = len(served_before) == len(args.upstream) and all(n > 0 for n in served_before)
    stopped = stop_result == [0] and figures["after_stopped"] >= args.after_stop
    return 0 if not lost and both_served and stopped else 1


if __name__ == "__main__":
    sys.exit(main())
