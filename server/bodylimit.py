"""`BodyLimit`: the ASGI middleware that caps every request body, declared or chunked (413 `too_large`).

A Content-Length over the route's limit is refused before anything is read. A chunked body (or a
Content-Length that lies) is counted as the app reads it: `receive` is wrapped, and the moment the count
passes the limit the middleware answers 413 itself, tells the app the client went away, and drops
whatever the app tries to send afterwards. Nothing past the limit is ever read, so a 200 MiB chunked
body costs the server one chunk of memory, not 200 MiB. The 413 closes the connection, since the rest of
that body is still on the wire.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

DEFAULT_LIMIT = 64 * 1024
# Stripe events (and the simulation's test webhook) can be larger than any agent request.
ROUTE_LIMITS: Mapping[str, int] = {"/v1/webhooks/stripe": 1024 * 1024, "/_test/webhook": 1024 * 1024}
TOO_LARGE = {"error": "too_large", "message": "The request body is too large."}


def limit_for(path: str) -> int:
    """The body limit in bytes for a request path."""
    return ROUTE_LIMITS.get(path, DEFAULT_LIMIT)


class BodyLimit:
    """Refuse request bodies over the route's limit with 413, whether declared or chunked."""

    def __init__(
        self, app: Any, limits: Mapping[str, int] | None = None, default: int = DEFAULT_LIMIT
    ) -> None:
        self.app = app
        self.limits = dict(ROUTE_LIMITS if limits is None else limits)
        self.default = default

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        """Pass the request on with a counting `receive`; answer 413 past the limit."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limits.get(scope["path"], self.default)
        declared = _content_length(scope["headers"])
        if declared is not None and (declared < 0 or declared > limit):
            await _send_413(send)
            return
        state = {"read": 0, "refused": False, "started": False}

        async def counting_receive() -> dict:
            if state["refused"]:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                state["read"] += len(message.get("body", b""))
                if state["read"] > limit:
                    state["refused"] = True
                    if not state["started"]:
                        state["started"] = True
                        await _send_413(send)
                    # The app sees a client that went away; it stops reading and its answer is dropped.
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: dict) -> None:
            if state["refused"]:
                return
            if message["type"] == "http.response.start":
                state["started"] = True
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not state["refused"]:
                raise
            # The app failed because its body was cut off; the 413 has been sent already.


def _content_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    for name, value in headers:
        if name == b"content-length":
            return int(value) if value.isdigit() else -1
    return None


async def _send_413(send: Any) -> None:
    body = json.dumps(TOO_LARGE).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
