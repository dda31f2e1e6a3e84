"""The local API's sockets: one selector loop and a small worker pool, built so that a flood of
connections cannot drown the POS's own requests (`agent.localapi.httpd` owns the wire format it speaks).

- **Bounded connections and threads.** One thread runs a `selectors` loop over every connection; it
  parses requests and answers the quick routes (`GET /v1/license`, `/v1/health`) itself. Routes that may
  block (every POST, diagnostics) run on a fixed pool of `WORKERS` threads. At most `MAX_CONNECTIONS`
  connections are open: at the cap, the oldest connection that has not completed a request within
  `PRESSURE_IDLE_S` of its accept is dropped to make room, or, only when no connection is still on its
  first request, the newest kept-alive one silent for `PRESSURE_KEEPALIVE_S`; else the new one is
  refused (`503 busy`, then closed) and accepting pauses until one could be dropped, so newcomers wait
  in the backlog instead of costing a refusal each. A connection that has completed a request (the
  POS's, kept alive between orders) is never dropped for a flood of connections that have not.
- **A whole-request deadline.** From a connection's accept, or the first byte of a request on a kept-alive
  one, the request line, headers and body must all arrive within `REQUEST_DEADLINE_S`; dripping one byte
  at a time does not extend it. An idle kept-alive connection is closed after `IDLE_TIMEOUT_S`.
- **Every body read.** Whatever the method, a request's body is read before it is handled, so a GET's body
  is never parsed as the next request; a refused body is drained briefly (bounded) so the client reads the
  answer instead of a reset.
- **Backlog.** `BACKLOG` pending connections: the POS and the tray plus headroom for a burst.
  TCP_NODELAY is set on every connection.
"""

from __future__ import annotations

import logging
import os
import queue
import selectors
import socket
import threading
import time
from collections.abc import Callable

from agent.localapi.httpd import (
    MAX_HEAD,
    ApiError,
    Refuse,
    Request,
    Site,
    handle,
    parse_head,
    refusal,
    response,
)

log = logging.getLogger("agent.localapi.api")

MAX_CONNECTIONS = 256  # below the 512 sockets select() handles on Windows
WORKERS = 8
BACKLOG = 128
REQUEST_DEADLINE_S = 10.0
IDLE_TIMEOUT_S = 60.0
PRESSURE_IDLE_S = 1.0
PRESSURE_KEEPALIVE_S = 15.0
# A refused body is drained for at most this long (and this many bytes) before the socket closes.
_DRAIN_S = 1.0
_DRAIN_BYTES = 1024 * 1024
_ACCEPT_BATCH = 16
# Request heads known to get the cached license answer (see `Server._learn`): a POS sends the same bytes
# every time. Bounded, so a stream of distinct heads costs a re-parse, never memory.
_QUICK_MAX = 64
_QUICK_HEAD_MAX = 1024
_RECV = 65536

_BUSY = response(
    503,
    ApiError(503, "busy", "The agent has too many connections; try again.").body(),
    "Retry-After: 1\r\n",
    close=True,
)

# ------------------------------------------------------------------------------------------- the loop

_READING, _WORKING, _WRITING, _DRAINING = range(4)
_WAKE = "wake"  # the selector data of the workers' wake-up socket (compared by identity)


class _Conn:
    """One client connection's state in the selector loop."""

    __slots__ = (
        "sock",
        "inbuf",
        "outbuf",
        "state",
        "deadline",
        "last_active",
        "close_after",
        "drained",
        "registered",
        "head_len",
        "body_len",
        "pending",
        "served",
        "born",
    )

    def __init__(self, sock: socket.socket, now: float) -> None:
        self.sock = sock
        self.inbuf = bytearray()
        self.outbuf = b""
        self.state = _READING
        self.deadline = now + REQUEST_DEADLINE_S
        self.last_active = now
        self.close_after = False
        self.drained = 0
        self.registered = 0
        self.head_len = -1  # bytes of the current request's head, once its blank line arrived
        self.body_len = 0
        self.pending: Request | None = None
        self.served = 0  # answers sent on this connection
        self.born = now


class Server:
    """The listening socket on 127.0.0.1, its selector loop and worker pool (see the module docstring).

    `api` (a `Site`, in practice `agent.localapi.api.LocalApi`) provides the routes; `blocking(req)` says
    which requests go to a worker.
    """

    def __init__(
        self,
        address: tuple[str, int],
        api: Site,
        *,
        blocking: Callable[[Request], bool],
        max_connections: int = MAX_CONNECTIONS,
        workers: int = WORKERS,
        backlog: int = BACKLOG,
    ) -> None:
        self.api = api
        self._blocking = blocking
        self.max_connections = max_connections
        self._workers_n = workers
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            if os.name == "nt" and hasattr(socket, "SO_EXCLUSIVEADDRUSE"):
                # On Windows SO_REUSEADDR lets another process bind the same port; ask for exclusive use.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_EXCLUSIVEADDRUSE, 1)
            else:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
            sock.listen(backlog)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self.socket = sock
        self.server_address = sock.getsockname()[:2]
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._conns: dict[socket.socket, _Conn] = {}
        self._jobs: queue.SimpleQueue[tuple[_Conn, Request] | None] = queue.SimpleQueue()
        self._done: queue.SimpleQueue[tuple[_Conn, bytes, bool]] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self._stopped = threading.Event()
        self._stopped.set()
        self._no_victim_until = 0.0
        self._accept_paused_until: float | None = None
        # Exact request bytes -> whether to close after answering: each was seen to pass every guard and
        # take the cached license answer, which depends on nothing but those bytes and the published status.
        self._quick: dict[bytes, bool] = {}
        # `hand_over`: until then no accepting, every answer closes its connection, idle kept-alive ones
        # close at once; `_handed_over` is set when no connection is left (or at that time).
        self._handover_until: float | None = None
        self._handed_over = threading.Event()

    # -- lifecycle -------------------------------------------------------------------------------------

    @property
    def connections(self) -> int:
        """Open client connections (for tests and the benchmark)."""
        return len(self._conns)

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        """Serve until `shutdown()`; starts the worker threads."""
        self._stop.clear()
        self._stopped.clear()
        for i in range(self._workers_n):
            t = threading.Thread(target=self._work, name=f"pospal-api-worker-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        try:
            self._sel.register(self.socket, selectors.EVENT_READ, None)
            self._sel.register(self._wake_r, selectors.EVENT_READ, _WAKE)
            next_sweep = time.monotonic() + 0.25
            woken = False
            while not self._stop.is_set():
                wait = min(poll_interval, 0.25)
                if self._accept_paused_until is not None:
                    wait = max(0.0, min(wait, self._accept_paused_until - time.monotonic()))
                events = self._sel.select(wait)
                now = time.monotonic()
                if self._accept_paused_until is not None and now >= self._accept_paused_until:
                    self._resume_accept()
                for key, mask in events:
                    data = key.data
                    if data is None:
                        self._accept(now)
                    elif data is _WAKE:
                        try:
                            while self._wake_r.recv(4096):
                                pass
                        except OSError:
                            pass
                        # A worker puts its answer before it wakes the loop, so every finished job is
                        # in the queue by now (a later one sends another wake-up).
                        woken = True
                    else:
                        self._on_event(data, mask, now)
                if woken:
                    woken = False
                    self._finish_jobs(now)
                if now >= next_sweep:
                    next_sweep = now + 0.25
                    self._sweep(now)
                if self._handover_until is not None and not self._handed_over.is_set():
                    self._handing_over(now)
        finally:
            for conn in list(self._conns.values()):
                self._close(conn)
            for key in list(self._sel.get_map().values()):
                self._sel.unregister(key.fileobj)
            for _ in self._threads:
                self._jobs.put(None)
            self._threads.clear()
            self._stopped.set()

    def hand_over(self, within_s: float = 1.0) -> bool:
        """Before a swap (agent.selfupdate.launched): stop accepting, so new connections wait in the
        listening socket's backlog for the next version; answer every request already on an accepted
        connection and close it after its answer (a socket closed with a request unread would reset
        the POS's connection); close idle kept-alive connections at once. Returns True when no
        connection is left within `within_s` (the rest are closed by `shutdown`)."""
        self._handed_over.clear()
        self._handover_until = time.monotonic() + within_s
        self._wake()
        return self._handed_over.wait(within_s + 1.0) and not self._conns

    def _handing_over(self, now: float) -> None:
        """One loop turn of `hand_over`."""
        if self._accept_paused_until is not None:
            self._accept_paused_until = None  # the socket is unregistered already; never resumed now
        elif self.socket in self._sel.get_map():
            self._sel.unregister(self.socket)
        for conn in list(self._conns.values()):
            if conn.state == _READING and not conn.inbuf and conn.served:
                self._close(conn)  # kept alive and between requests: nothing of the POS's is lost
        assert self._handover_until is not None
        if not self._conns or now >= self._handover_until:
            self._handed_over.set()

    def shutdown(self) -> None:
        """Stop the loop and wait for it to end."""
        self._stop.set()
        self._wake()
        self._stopped.wait(10)

    def server_close(self) -> None:
        """Close the listening socket."""
        self.socket.close()
        self._wake_r.close()
        self._wake_w.close()
        self._sel.close()

    # -- workers ---------------------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            conn, req = job
            answer = handle(self.api, req)
            self._done.put((conn, answer, not req.keep_alive))
            self._wake()

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"x")
        except OSError:  # the pipe is full (the loop wakes anyway) or closed at shutdown
            pass

    def _finish_jobs(self, now: float) -> None:
        while True:
            try:
                conn, answer, close = self._done.get_nowait()
            except queue.Empty:
                return
            if conn.sock in self._conns:
                self._respond(conn, answer, close, now)

    # -- connections -----------------------------------------------------------------------------------

    def _accept(self, now: float) -> None:
        # A few at a time, so a connection storm cannot keep the loop from the requests already in.
        for _ in range(_ACCEPT_BATCH):
            try:
                sock, _addr = self.socket.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of file descriptors: leave the rest in the backlog for now
                log.warning("local API cannot accept a connection: %s", exc)
                return
            if len(self._conns) >= self.max_connections and not self._evict_one(now):
                try:
                    sock.setblocking(False)
                    sock.send(_BUSY)
                except OSError:
                    pass
                sock.close()
                # Full, and nobody to drop before `_no_victim_until`: stop accepting until then (or until
                # a connection closes). Newcomers wait in the backlog instead of costing a refusal each.
                self._pause_accept(min(max(self._no_victim_until, now + 0.05), now + 1.0))
                return
            sock.setblocking(False)
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
            conn = _Conn(sock, now)
            self._conns[sock] = conn
            self._watch(conn, selectors.EVENT_READ)

    def _pause_accept(self, until: float) -> None:
        if self._accept_paused_until is None:
            self._sel.unregister(self.socket)
        self._accept_paused_until = until

    def _resume_accept(self) -> None:
        if self._accept_paused_until is not None:
            self._accept_paused_until = None
            self._sel.register(self.socket, selectors.EVENT_READ, None)

    def _evict_one(self, now: float) -> bool:
        """At the cap, make room for a newcomer; returns whether a connection was dropped.

        In order: a connection refused and draining; the oldest connection that has not completed a
        request within PRESSURE_IDLE_S of its accept (a slow-loris, however steadily it drips); and
        only when no connection is still on its first request, the newest kept-alive one silent for
        PRESSURE_KEEPALIVE_S. So a connection that completed a request, like the POS's kept-alive one
        silent between orders, is never dropped while a connection that has not is open (issue 28,
        case 4): a flood of those waits in the backlog or is refused instead. Among quiet kept-alive
        connections the newest goes first, because a POS opens its connection when it starts and keeps
        it all day."""
        if now < self._no_victim_until:
            return False  # the last scan found none, and none can have appeared since: refuse in O(1)
        kept = None
        first_pending = False
        soonest = now + PRESSURE_IDLE_S
        soonest_kept = soonest
        # `_conns` is in accept order, so the first unserved one old enough is the oldest such.
        for conn in self._conns.values():
            if conn.state == _DRAINING:
                self._close(conn)
                return True
            if conn.state != _READING:
                continue
            if not conn.served:
                if conn.born + PRESSURE_IDLE_S <= now:
                    self._close(conn)
                    return True
                first_pending = True
                soonest = min(soonest, conn.born + PRESSURE_IDLE_S)
            elif conn.last_active + PRESSURE_KEEPALIVE_S <= now:
                kept = conn  # the last such in accept order: the newest
            else:
                soonest_kept = min(soonest_kept, conn.last_active + PRESSURE_KEEPALIVE_S)
        if first_pending or kept is None:
            self._no_victim_until = soonest if first_pending else soonest_kept
            return False
        self._close(kept)
        return True

    def _watch(self, conn: _Conn, events: int) -> None:
        if conn.registered == events:
            return
        if conn.registered and events:
            self._sel.modify(conn.sock, events, conn)
        elif events:
            self._sel.register(conn.sock, events, conn)
        else:
            self._sel.unregister(conn.sock)
        conn.registered = events

    def _close(self, conn: _Conn) -> None:
        if self._conns.pop(conn.sock, None) is None:
            return
        if self._accept_paused_until is not None and not self._stop.is_set() and self._handover_until is None:
            self._resume_accept()  # a slot is free: take the next connection from the backlog
        if conn.registered:
            try:
                self._sel.unregister(conn.sock)
            except (KeyError, ValueError, OSError):
                pass
            conn.registered = 0
        try:
            conn.sock.close()
        except OSError:
            pass

    def _sweep(self, now: float) -> None:
        for conn in list(self._conns.values()):
            if conn.state != _WORKING and now >= conn.deadline:
                self._close(conn)

    def _on_event(self, conn: _Conn, mask: int, now: float) -> None:
        if conn.sock not in self._conns:
            return
        try:
            if mask & selectors.EVENT_WRITE:
                self._flush(conn, now)
            if mask & selectors.EVENT_READ and conn.sock in self._conns:
                if conn.state == _DRAINING:
                    self._drain(conn)
                elif conn.state == _READING:
                    self._read(conn, now)
        except OSError:
            self._close(conn)

    def _read(self, conn: _Conn, now: float) -> None:
        # Read no more than this request may still need: the head's cap, or the rest of the body.
        if conn.head_len < 0:
            room = MAX_HEAD + 4 - len(conn.inbuf)
        else:
            room = conn.head_len + conn.body_len - len(conn.inbuf)
        try:
            data = conn.sock.recv(max(1, min(_RECV, room)))
        except (BlockingIOError, InterruptedError):  # a spurious wake-up: nothing to read yet
            return
        if not data:
            self._close(conn)
            return
        if not conn.inbuf:
            close = self._quick.get(data)
            if close is not None:
                # The POS's usual request, whole in one read: the cached answer, with no parsing, sent
                # straight away; nearly always whole, and then the connection just waits for the next one.
                answer = self.api._license_response
                try:
                    sent = conn.sock.send(answer)
                except (BlockingIOError, InterruptedError):
                    sent = 0
                conn.last_active = now
                if sent == len(answer) and not close and self._handover_until is None:
                    conn.served += 1
                    conn.deadline = now + IDLE_TIMEOUT_S
                    return
                self._respond(conn, answer[sent:], close, now)
                return
            # The first byte of a request on a kept-alive connection starts its whole-request deadline;
            # later bytes never extend it (a fresh connection's deadline runs from its accept).
            conn.deadline = min(conn.deadline, now + REQUEST_DEADLINE_S)
        conn.inbuf += data
        conn.last_active = now
        self._advance(conn, now)

    def _advance(self, conn: _Conn, now: float) -> None:
        """Handle the request in `inbuf` once it is complete (head, then body)."""
        if conn.head_len < 0:
            end = conn.inbuf.find(b"\r\n\r\n")
            if end < 0:
                if len(conn.inbuf) > MAX_HEAD:
                    self._refuse(conn, 431, "The request head is too long.", now)
                return
            if end > MAX_HEAD:
                self._refuse(conn, 431, "The request head is too long.", now)
                return
            try:
                req, length = parse_head(bytes(conn.inbuf[:end]))
            except Refuse as exc:
                self._refuse(conn, exc.status, exc.message, now)
                return
            conn.head_len = end + 4
            conn.body_len = length
            conn.pending = req
            if (
                length
                and req.headers.get("expect", "").lower() == "100-continue"
                and req.version == "HTTP/1.1"
                and len(conn.inbuf) < end + 4 + length
            ):
                conn.sock.send(b"HTTP/1.1 100 Continue\r\n\r\n")
        total = conn.head_len + conn.body_len
        if len(conn.inbuf) < total:
            return
        full = conn.pending
        assert full is not None
        conn.pending = None
        raw = bytes(conn.inbuf[:total]) if total <= _QUICK_HEAD_MAX and full.method == "GET" else b""
        full.body = bytes(conn.inbuf[conn.head_len : total])
        del conn.inbuf[:total]
        conn.head_len, conn.body_len = -1, 0
        if self._blocking(full):
            conn.state = _WORKING
            self._watch(conn, 0)
            self._jobs.put((conn, full))
            return
        answer = handle(self.api, full)
        if raw and answer is self.api._license_response:
            self._learn(raw, full)
        self._respond(conn, answer, not full.keep_alive, now)

    def _learn(self, raw: bytes, req: Request) -> None:
        """Remember `raw`, a whole request that got the cached license answer, for `_read`'s quick path.

        Only a plain `GET /v1/license` (no query, body, Origin, Referer or Accept-Language) qualifies:
        then the answer depends on nothing else, as `httpd.handle`'s hot path says."""
        if req.target != "/v1/license" or req.body or "accept-language" in req.headers:
            return
        if "origin" in req.headers or "referer" in req.headers:
            return
        if len(self._quick) >= _QUICK_MAX:
            self._quick.clear()  # many distinct heads: start over rather than grow
        self._quick[raw] = not req.keep_alive

    def _respond(self, conn: _Conn, answer: bytes, close: bool, now: float) -> None:
        conn.state = _WRITING
        conn.close_after = close or self._handover_until is not None
        conn.outbuf = answer
        conn.deadline = now + REQUEST_DEADLINE_S
        try:
            self._flush(conn, now)
        except OSError:
            self._close(conn)

    def _flush(self, conn: _Conn, now: float) -> None:
        if conn.outbuf:
            try:
                sent = conn.sock.send(conn.outbuf)
            except (BlockingIOError, InterruptedError):  # the socket's buffer is full: wait for EVENT_WRITE
                sent = 0
            conn.outbuf = conn.outbuf[sent:]
            if conn.outbuf:
                self._watch(conn, selectors.EVENT_WRITE)
                return
        if conn.state == _DRAINING:
            # Answer sent: stop writing, and read (and drop) what the client still sends for a moment.
            conn.sock.shutdown(socket.SHUT_WR)
            self._watch(conn, selectors.EVENT_READ)
            return
        if conn.close_after:
            self._close(conn)
            return
        conn.served += 1
        conn.state = _READING
        conn.last_active = now
        conn.deadline = now + (REQUEST_DEADLINE_S if conn.inbuf else IDLE_TIMEOUT_S)
        self._watch(conn, selectors.EVENT_READ)
        if conn.inbuf:  # a pipelined request is already here
            self._advance(conn, now)

    def _refuse(self, conn: _Conn, status: int, message: str, now: float) -> None:
        """Answer an unframeable request, stop reading requests, drain briefly, then close."""
        conn.inbuf.clear()
        conn.state = _DRAINING
        conn.outbuf = refusal(status, message)
        conn.deadline = now + _DRAIN_S
        try:
            self._flush(conn, now)
        except OSError:
            self._close(conn)

    def _drain(self, conn: _Conn) -> None:
        try:
            data = conn.sock.recv(_RECV)
        except (BlockingIOError, InterruptedError):
            return
        conn.drained += len(data)
        if not data or conn.drained > _DRAIN_BYTES:
            self._close(conn)
