"""A small round-robin HTTP/1.1 reverse proxy on loopback, standing in for nginx in benchmarks and tests.

Each request (not each connection) goes to the next upstream in turn, over a pooled keep-alive
connection to that upstream, as nginx's `upstream { server ...; keepalive N; }` does. So a load
generator with a few keep-alive connections still spreads its requests over every instance. It relays
Content-Length and chunked bodies, adds `X-Forwarded-For`, tries the next upstream when one refuses the
connection (nothing was sent, so that is safe for a POST), and answers 502 when none is reachable.
It is a test tool, not a production load balancer: the README's "several instances" section shows nginx.

    python bench/lb_proxy.py --listen 127.0.0.1:0 --upstream 127.0.0.1:8001 --upstream 127.0.0.1:8002

prints `listening on HOST:PORT` once it accepts connections, and on SIGTERM or SIGINT prints one JSON line
`{"requests": [n1, n2, ...]}`: how many requests each upstream answered.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

MAX_HEAD = 64 * 1024
# Hop-by-hop headers, plus X-Forwarded-For, which `_forward` sets again with the client's address.
NOT_FORWARDED = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"upgrade", b"x-forwarded-for"}
)
_BAD_GATEWAY_BODY = b'{"error": "bad_gateway", "message": "No server instance is reachable."}'
BAD_GATEWAY = (
    b"HTTP/1.1 502 Bad Gateway\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(_BAD_GATEWAY_BODY), _BAD_GATEWAY_BODY)
)


class ProxyError(Exception):
    """A message that cannot be relayed (malformed head or body, or a connection lost midway)."""


@dataclass
class Message:
    """A parsed request or response head: its first line and headers, and how its body is framed."""

    first_line: bytes
    headers: list[tuple[bytes, bytes]]
    length: int | None = None
    chunked: bool = False
    close: bool = False

    @classmethod
    def parse(cls, head: bytes) -> Message:
        """Parse a head ending in CRLF CRLF; raise `ProxyError` if it is malformed."""
        lines = head[:-4].split(b"\r\n")
        message = cls(lines[0], [])
        version = lines[0].split(b" ", 1)[0] if lines[0][:5] == b"HTTP/" else lines[0].rsplit(b" ", 1)[-1]
        message.close = version == b"HTTP/1.0"
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep:
                raise ProxyError("malformed header line")
            name, value = name.strip().lower(), value.strip()
            if name == b"content-length":
                if not value.isdigit():
                    raise ProxyError("bad Content-Length")
                message.length = int(value)
            elif name == b"transfer-encoding":
                message.chunked = value.lower().endswith(b"chunked")
            elif name == b"connection":
                tokens = {t.strip().lower() for t in value.split(b",")}
                message.close = b"close" in tokens or (message.close and b"keep-alive" not in tokens)
            message.headers.append((name, value))
        return message

    def encode(self, extra: Sequence[tuple[bytes, bytes]] = ()) -> bytes:
        """The head to send on, without hop-by-hop headers, plus `extra`."""
        kept = [n + b": " + v for n, v in self.headers if n not in NOT_FORWARDED]
        kept += [n + b": " + v for n, v in extra]
        return b"\r\n".join([self.first_line, *kept]) + b"\r\n\r\n"


async def read_head(reader: asyncio.StreamReader) -> bytes | None:
    """The next message head, or None when the peer closed cleanly between messages."""
    try:
        return await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None
        raise ProxyError("connection closed inside a head") from None
    except asyncio.LimitOverrunError:
        raise ProxyError("head too large") from None


async def relay_body(
    message: Message, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, to_eof: bool = False
) -> None:
    """Copy one message body from `reader` to `writer` as it is framed (length, chunked or until EOF)."""
    try:
        if message.chunked:
            while True:
                size_line = await reader.readuntil(b"\r\n")
                writer.write(size_line)
                size = int(size_line.split(b";", 1)[0].strip(), 16)
                if size == 0:
                    while True:  # trailers, then the empty line
                        line = await reader.readuntil(b"\r\n")
                        writer.write(line)
                        if line == b"\r\n":
                            return
                writer.write(await reader.readexactly(size + 2))
        elif message.length:
            remaining = message.length
            while remaining:
                chunk = await reader.read(min(remaining, 65536))
                if not chunk:
                    raise ProxyError("connection closed inside a body")
                writer.write(chunk)
                remaining -= len(chunk)
        elif to_eof:
            while chunk := await reader.read(65536):
                writer.write(chunk)
    except (asyncio.IncompleteReadError, ValueError) as exc:
        raise ProxyError(f"bad body: {type(exc).__name__}") from None


@dataclass
class Upstream:
    """One server instance and its idle keep-alive connections."""

    host: str
    port: int
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = field(default_factory=list)
    answered: int = 0

    async def connection(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bool]:
        """An idle connection (reused=True) or a new one; raises OSError when the instance refuses."""
        while self.idle:
            reader, writer = self.idle.pop()
            if not writer.is_closing() and not reader.at_eof():
                return reader, writer, True
            writer.close()
        reader, writer = await asyncio.open_connection(self.host, self.port, limit=MAX_HEAD)
        return reader, writer, False


class LbProxy:
    """Round-robin over `upstreams` ((host, port) pairs), one request at a time per client connection."""

    def __init__(self, upstreams: Sequence[tuple[str, int]]) -> None:
        if not upstreams:
            raise ValueError("at least one upstream is needed")
        self.upstreams = [Upstream(host, port) for host, port in upstreams]
        self._next = 0
        self.client_connections = 0  # accepted so far: a keep-alive client opens one

    @property
    def counts(self) -> list[int]:
        """Requests answered by each upstream so far, in the order given."""
        return [u.answered for u in self.upstreams]

    async def handle_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve one client connection until it closes or asks to."""
        self.client_connections += 1
        peer = writer.get_extra_info("peername")
        client_ip = str(peer[0]).encode() if peer else b"unknown"
        try:
            while True:
                head = await read_head(reader)
                if head is None:
                    break
                request = Message.parse(head)
                keep_open = await self._forward(request, reader, writer, client_ip)
                await writer.drain()
                if request.close or not keep_open:
                    break
        except (ProxyError, ConnectionError):
            pass
        except asyncio.CancelledError:
            pass  # shutting down: end this connection quietly, the loop is closing
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _forward(
        self,
        request: Message,
        client_reader: asyncio.StreamReader,
        client_writer: asyncio.StreamWriter,
        client_ip: bytes,
    ) -> bool:
        """Send one request to the next upstream and relay its answer; return False to close the client."""
        forwarded = [h for n, h in request.headers if n == b"x-forwarded-for"]
        xff = b", ".join([*forwarded, client_ip])
        head = request.encode([(b"x-forwarded-for", xff)])
        body = bytearray()
        if request.length or request.chunked:
            sink = _Buffer(body)
            await relay_body(request, client_reader, sink)  # type: ignore[arg-type]
        for _ in range(len(self.upstreams)):
            upstream = self.upstreams[self._next % len(self.upstreams)]
            self._next += 1
            for _attempt in range(2):
                try:
                    up_reader, up_writer, reused = await upstream.connection()
                except OSError:
                    break  # refused: nothing was sent, so the next instance may take it
                up_writer.write(head + bytes(body))
                try:
                    await up_writer.drain()
                    response_head = await read_head(up_reader)
                except (ConnectionError, ProxyError):
                    response_head = None
                if response_head is None:
                    up_writer.close()
                    if reused:
                        continue  # the instance closed an idle keep-alive connection; retry on a new one
                    raise ProxyError("the instance closed the connection without answering")
                return await self._relay_response(
                    request, response_head, upstream, up_reader, up_writer, client_writer
                )
        client_writer.write(BAD_GATEWAY)
        return False

    async def _relay_response(
        self,
        request: Message,
        response_head: bytes,
        upstream: Upstream,
        up_reader: asyncio.StreamReader,
        up_writer: asyncio.StreamWriter,
        client_writer: asyncio.StreamWriter,
    ) -> bool:
        response = Message.parse(response_head)
        status = int(response.first_line.split(b" ", 2)[1])
        has_body = not (request.first_line.startswith(b"HEAD ") or status in (204, 304) or status < 200)
        to_eof = has_body and not response.chunked and response.length is None
        extra = [(b"connection", b"close")] if request.close or to_eof else []
        client_writer.write(response.encode(extra))
        if has_body:
            await relay_body(response, up_reader, client_writer, to_eof=to_eof)
        upstream.answered += 1
        if response.close or to_eof:
            up_writer.close()
        else:
            upstream.idle.append((up_reader, up_writer))
        return not to_eof

    async def serve(self, host: str, port: int, ready: asyncio.Future[int] | None = None) -> None:
        """Accept connections on host:port until cancelled; `ready` gets the bound port."""
        server = await asyncio.start_server(self.handle_client, host, port, limit=MAX_HEAD, backlog=1024)
        bound = server.sockets[0].getsockname()[1]
        if ready is not None:
            ready.set_result(bound)
        async with server:
            await server.serve_forever()


class _Buffer:
    """Collects a request body so it can be sent again if a reused upstream connection was stale."""

    def __init__(self, target: bytearray) -> None:
        self.target = target

    def write(self, data: bytes) -> None:
        """Append `data`."""
        self.target += data


@dataclass
class RunningProxy:
    """A proxy serving from a background thread (for tests); call `stop()` when done."""

    proxy: LbProxy
    port: int
    loop: asyncio.AbstractEventLoop
    task: asyncio.Future
    thread: threading.Thread

    @property
    def url(self) -> str:
        """The proxy's base URL."""
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        """Stop serving and join the thread."""
        self.loop.call_soon_threadsafe(self.task.cancel)
        self.thread.join(timeout=10)


def start_in_thread(upstreams: Sequence[tuple[str, int]], host: str = "127.0.0.1") -> RunningProxy:
    """Start a proxy on `host` and a free port in a daemon thread; return once it accepts connections."""
    proxy = LbProxy(upstreams)
    loop = asyncio.new_event_loop()
    started = threading.Event()
    holder: dict[str, object] = {}

    def run() -> None:
        asyncio.set_event_loop(loop)
        ready: asyncio.Future[int] = loop.create_future()
        task = loop.create_task(proxy.serve(host, 0, ready))
        holder["task"] = task
        ready.add_done_callback(lambda f: (holder.__setitem__("port", f.result()), started.set()))
        with contextlib.suppress(asyncio.CancelledError):
            loop.run_until_complete(task)
        loop.close()

    thread = threading.Thread(target=run, name="lb-proxy", daemon=True)
    thread.start()
    if not started.wait(10):
        raise RuntimeError("the proxy did not start")
    return RunningProxy(proxy, int(holder["port"]), loop, holder["task"], thread)  # type: ignore[arg-type]


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host or "127.0.0.1", int(port)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the proxy until SIGTERM or SIGINT, then print how many requests each upstream answered."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", default="127.0.0.1:8080", help="HOST:PORT (port 0: any free port)")
    parser.add_argument("--upstream", action="append", required=True, help="HOST:PORT, repeat per instance")
    args = parser.parse_args(argv)
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    proxy = LbProxy([_address(u) for u in args.upstream])
    host, port = _address(args.listen)

    async def run() -> None:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[int] = loop.create_future()
        task = asyncio.ensure_future(proxy.serve(host, port, ready))
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        print(f"listening on {host}:{await ready}", flush=True)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(run())
    print(json.dumps({"requests": proxy.counts}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
