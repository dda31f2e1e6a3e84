"""`RefreshFastPath`: the ASGI middleware that answers `POST /v1/refresh` without FastAPI's routing.

Refresh is most of the server's traffic. Routing, dependency solving, the hop to a worker thread and
back, and the exception middleware cost several times the refresh's own work, so this answers it
directly on the event loop, in three steps:

1. read: the machine's state, batched with the other refreshes in flight (`RefreshReads`: one SELECT
   on a connection that takes no write lock), then the signature and timestamp checks;
2. write: the nonce and last-seen time go to `RefreshWrites`, which commits the writes of all the
   refreshes in flight in one transaction and never blocks the loop on a lock;
3. sign the token once the nonce is known to be new.

A refresh that re-binds a fingerprint (rare; it writes an audit row) runs the route's one-transaction
`refresh_answer` in a worker thread instead. Anything the fast path does not fully understand (another
content type, a body that fails validation) is replayed to the app unchanged, so FastAPI gives its
usual answer; `ApiError`s, unstorable values and an unreachable database get the same JSON answers
as the app's handlers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import weakref
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError
from sqlalchemy.exc import DataError, OperationalError
from starlette.concurrency import run_in_threadpool

from server.api.deps import Services
from server.api.refresh import (
    UNSTORABLE,
    check_state,
    machine_id_header,
    refresh_answer,
    signed_answer,
    token_parts,
)
from server.api.schemas import RefreshRequest
from server.errors import ApiError, DatabaseUnavailable, Replay, UnknownMachine
from server.logs import DatabaseOutageLog
from server.refresh_reads import RefreshReads
from server.refresh_writes import RefreshWrites

REFRESH_PATH = "/v1/refresh"
# Made once: `json.dumps` with options builds a new encoder on every call.
_ENCODE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_OUTAGE_LOG = DatabaseOutageLog(logging.getLogger("pospal.refresh"))


class RefreshFastPath:
    """ASGI middleware answering well-formed refreshes itself (see the module docstring)."""

    def __init__(self, app: Any, services: Services, route: Any) -> None:
        self.app = app
        self.services = services
        self.route = route
        # One read and one write queue per event loop (a server process has one; tests may start several).
        self._queues: weakref.WeakKeyDictionary[Any, tuple[RefreshReads, RefreshWrites]] = (
            weakref.WeakKeyDictionary()
        )

    def queues(self) -> tuple[RefreshReads, RefreshWrites]:
        """The running event loop's read and write queues."""
        loop = asyncio.get_running_loop()
        queues = self._queues.get(loop)
        if queues is None:
            svc = self.services

            def parts(connection: Any, state: Any, now: Any, known_kids: Any) -> Any:
                return token_parts(svc, connection, state, now, known_kids)

            reads = RefreshReads(svc.db, parts, batch_scope=svc.keys.one_look)
            queues = self._queues[loop] = (reads, RefreshWrites(svc.db))
        return queues

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        """Answer a refresh here, pass everything else on."""
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or scope["path"] != REFRESH_PATH
            or not _is_json(scope["headers"])
        ):
            await self.app(scope, receive, send)
            return
        chunks = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        raw = b"".join(chunks)
        try:
            body = RefreshRequest.model_validate_json(raw)
        except ValidationError:
            await self.app(scope, _replay(raw, receive), send)
            return
        scope["route"] = self.route  # what the metrics middleware labels requests by
        status = 200
        extra: tuple[tuple[bytes, bytes], ...] = ()
        try:
            try:
                answer = await self.answer(body, RequestHeaders(scope["headers"]), raw)
            except OperationalError as exc:  # the database is down: retryable, and one log line per few s
                _OUTAGE_LOG.failed(REFRESH_PATH, exc)
                raise DatabaseUnavailable() from None
        except ApiError as exc:
            status, answer = exc.status, exc.body()
            extra = tuple((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in exc.headers.items())
        except DataError:
            status, answer = 422, UNSTORABLE
        content = _ENCODE(answer).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-length", str(len(content)).encode()),
                    (b"content-type", b"application/json"),
                    *extra,
                ],
            }
        )
        await send({"type": "http.response.body", "body": content})

    async def answer(self, body: RefreshRequest, headers: Mapping[str, str], raw: bytes) -> dict[str, Any]:
        """Read and check, queue the writes, sign; raises `ApiError`s for `__call__` to answer."""
        svc: Services = self.services
        now = svc.clock.now()
        reads, writes = self.queues()
        read = await reads.submit(machine_id_header(headers), now, body.known_kids)
        if read is None:
            raise UnknownMachine()
        checked = check_state(read.state, body, "POST", REFRESH_PATH, headers, raw, now)
        healing = checked.rebind is not None or checked.heal is not None
        if healing or read.state.machine.seat_state is not None:
            # Re-binding writes an audit row; a machine without a seat may take a free one (server.seats).
            return await run_in_threadpool(refresh_answer, svc, body, "POST", REFRESH_PATH, headers, raw)
        if not await writes.submit(checked.write()):
            raise Replay()
        return signed_answer(svc, read.parts, checked.signed.nonce)


class RequestHeaders(dict[str, str]):
    """A request's headers by lower-case name, first value of each (as Starlette's `Headers.get` gives).

    Built once per refresh, where `Headers` would scan and decode the list again on each of the six
    lookups a refresh makes.
    """

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        super().__init__()
        for name, value in raw:
            key = name.decode("latin-1").lower()
            if key not in self:
                self[key] = value.decode("latin-1")

    def get(self, key: str, default: Any = None) -> Any:
        """The header's value by name in any case, else `default`."""
        return dict.get(self, key.lower(), default)

    def __getitem__(self, key: str) -> str:
        return dict.__getitem__(self, key.lower())

    def __contains__(self, key: object) -> bool:
        return dict.__contains__(self, key.lower() if isinstance(key, str) else key)


def _is_json(headers: list[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        if name == b"content-type":
            return value.split(b";", 1)[0].strip().lower() == b"application/json"
    return False


def _replay(raw: bytes, receive: Any) -> Any:
    """A `receive` that hands the already-read body over once, then defers to the real one."""
    sent = False

    async def replay() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": raw, "more_body": False}
        return await receive()

    return replay
