"""The agent under the launcher (agent/selfupdate/launched.py): it serves on a socket it was lent, and knows
when the
POS is idle and whether a request is still being answered (what a swap waits for)."""

from __future__ import annotations

import http.client
import json
import socket
import threading

from agent.selfupdate import handoff
from agent.selfupdate.launched import TrackedApi
from tests.agent.test_api import TOKEN, StubControl, StubStatus


def get(port: int, path: str) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path, headers={"Host": f"127.0.0.1:{port}"})
        return json.loads(conn.getresponse().read())
    finally:
        conn.close()


def test_serves_on_the_lent_socket_and_tracks_requests_in_flight() -> None:
    lent = handoff.listen(0)
    port = lent.getsockname()[1]
    control = StubControl()
    release = threading.Event()
    entered = threading.Event()

    def slow_sync() -> StubStatus:
        entered.set()
        release.wait(10)
        return StubStatus("licensed_active")

    control.sync_now = slow_sync  # type: ignore[method-assign]
    api = TrackedApi(control, api_token=TOKEN, port=0, poll_interval=0.02)
    api.adopt(lent.dup())  # the agent's own descriptor, as a launched child inherits it
    api.start()
    try:
        assert api.port == port
        assert get(port, "/v1/license")["license_state"] == "trial_active"
        assert api.idle_s() < 5
        assert api.in_flight() == 0

        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        headers = {"Host": f"127.0.0.1:{port}", "Authorization": f"Bearer {TOKEN}"}
        conn.request("POST", "/v1/sync", body=b"{}", headers={**headers, "Content-Type": "application/json"})
        assert entered.wait(10)
        assert api.in_flight() == 1  # a swap now would cut this answer off: launched.run waits
        release.set()
        assert json.loads(conn.getresponse().read())["license_state"] == "licensed_active"
        conn.close()
        assert api.in_flight() == 0
    finally:
        release.set()
        api.stop()
    # The launcher's socket outlives the agent that served on it: a POS connecting now is queued, not
    # refused, until the next version serves.
    try:
        waiting = socket.create_connection(("127.0.0.1", port), timeout=5)
        waiting.close()
    finally:
        lent.close()


def test_once_the_gate_closes_no_new_worker_request_starts_but_the_license_still_answers() -> None:
    api = TrackedApi(StubControl(), api_token=TOKEN, port=0, poll_interval=0.02).start()
    try:
        assert api.close_gate(wait_s=1)
        conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=5)
        headers = {"Host": f"127.0.0.1:{api.port}", "Authorization": f"Bearer {TOKEN}"}
        conn.request("POST", "/v1/sync", body=b"{}", headers={**headers, "Content-Type": "application/json"})
        resp = conn.getresponse()
        assert (resp.status, json.loads(resp.read())["error"]) == (503, "updating")
        conn.close()
        assert get(api.port, "/v1/license")["license_state"] == "trial_active"
    finally:
        api.stop()
