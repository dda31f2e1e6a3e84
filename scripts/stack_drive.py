"""Drive a server stack through its proxy: a trial, a sandbox purchase, refreshes while one instance stops.

    python scripts/stack_drive.py --url https://localhost:18443 --ca root.crt \
        --upstream http://127.0.0.1:18001 --upstream http://127.0.0.1:18002 \
        --stop 'podman stop -t 10 pospal-smoke-server-1'

Through `--url` (the TLS proxy): `/health/ready`, an agent's trial, a sandbox checkout paid on its page and
the activation that follows, then `--refreshes` refreshes from 4 threads; after a third of them `--stop` runs
(in the background, so requests are in flight while the instance shuts down). Every answer must be 200 with
a token, and before the stop both `--upstream`s must have answered refreshes (their own /metrics). Prints
one JSON line of figures; exits 1 on any failure. Used by scripts/image_smoke.sh.
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

        statuses: list[int] = []
        lock = threading.Lock()
        stop_at = args.refreshes // 3
        stopper: list[threading.Thread] = []
        served_before: list[int] = []

        def one(i: int) -> None:
            if i == stop_at:
                served_before.extend(_refreshes_served(u) for u in args.upstream)
                thread = threading.Thread(target=subprocess.run, args=(shlex.split(args.stop),), daemon=True)
                thread.start()
                stopper.append(thread)
            machine = trial if i % 2 else paid
            try:
                response = machine.refresh(http)
                ok = response.status_code == 200 and "token" in response.json()
                status = response.status_code if ok or response.status_code != 200 else -1
            except httpx.HTTPError:
                status = 0
            with lock:
                statuses.append(status)

        started_at = time.monotonic()
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(one, range(args.refreshes)))
        elapsed = time.monotonic() - started_at
        for thread in stopper:
            thread.join(60)
        after = [_refreshes_served(u) for u in args.upstream[1:]]

    lost = [s for s in statuses if s != 200]
    figures = {
        "refreshes": len(statuses),
        "lost": len(lost),
        "lost_statuses": sorted(set(lost)),
        "served_before_stop": served_before,
        "served_after_by_the_others": after,
        "seconds": round(elapsed, 2),
    }
    print(json.dumps(figures))
    both_served = len(served_before) == len(args.upstream) and all(n > 0 for n in served_before)
    return 0 if not lost and both_served else 1


if __name__ == "__main__":
    sys.exit(main())
