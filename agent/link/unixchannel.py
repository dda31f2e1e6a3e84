"""The channel on Linux and macOS: a Unix domain socket in the service's runtime directory.

**Server.** `UnixChannel` listens on `<runtime dir>/agent.sock`. The directory is the service's own
(systemd's `RuntimeDirectory=`, `/run/pospal-agent`, 0755, owned by the service's account) and the agent
refuses one that another account owns or that others may write, so nobody else can put a socket there. The
socket itself is 0666: every local account may connect, and the kernel tells the server who did
(SO_PEERCRED on Linux: uid and pid, credentials taken at connect(); LOCAL_PEERCRED on macOS: uid). That
becomes the `Caller` (`uid:<n>`, and on Linux the caller's audit session id from /proc) that
`agent.link.channel` binds credentials to. At most `MAX_CONNECTIONS` connections, `MAX_PER_USER` per account.

**Client: the genuine service first.** Before the tray sends a byte, `connect` checks that the directory
and the socket belong to a trusted account (root, the service account `SERVICE_USER`, or the caller
itself: an agent one runs oneself) and that others cannot write the directory, then asks the kernel who
listens (SO_PEERCRED of the connected socket names the server's uid) and refuses anyone else:
`NotGenuineService`. A program that took port 7421, or put a socket anywhere it can write, gets nothing.
"""

from __future__ import annotations

import logging
import os
import socket
import stat
import struct
import sys
import threading
from collections.abc import Iterable
from pathlib import Path

from agent import errors
from agent.link.channel import Caller, ChannelServer

log = logging.getLogger(__name__)

SOCKET_NAME = "agent.sock"
SERVICE_USER = "pospal-agent"
DEFAULT_RUNTIME_DIR = Path("/run/pospal-agent")
MAX_CONNECTIONS = 32
MAX_PER_USER = 4
_UNSET_SESSION = "4294967295"  # (u32)-1: the audit session id of a process outside any login


class SocketStream:
    """`agent.link.channel.Stream` over a connected socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def recv_exact(self, n: int) -> bytes:
        """Exactly `n` bytes, b"" at a clean end before any byte; fewer only if the peer hung up mid-way."""
        chunks: list[bytes] = []
        got = 0
        while got < n:
            chunk = self.sock.recv(n - got)
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)

    def send_all(self, data: bytes) -> None:
        """Write all of `data`."""
        self.sock.sendall(data)

    def close(self) -> None:
        """Close the socket."""
        try:
            self.sock.close()
        except OSError:
            pass


def peer_uid_pid(sock: socket.socket) -> tuple[int, int | None]:
    """The peer's uid (and pid on Linux) as the kernel recorded them; raises OSError."""
    if sys.platform.startswith("linux"):
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid, uid, _gid = struct.unpack("3i", creds)
        return uid, pid
    # macOS: LOCAL_PEERCRED (SOL_LOCAL 0, option 1) answers a struct xucred {u_int version; uid_t uid; ...}.
    raw = sock.getsockopt(0, 1, 76)
    _version, uid = struct.unpack_from("<II", raw)
    return uid, None


def login_session(pid: int | None) -> str | None:
    """The audit (login) session id of `pid` on Linux, or None when there is none or it cannot be read."""
    if pid is None or not sys.platform.startswith("linux"):
        return None
    try:
        value = Path(f"/proc/{pid}/sessionid").read_text(encoding="ascii").strip()
    except OSError:
        return None
    return None if not value or value == _UNSET_SESSION else value


def trusted_server_uids(service_user: str = SERVICE_USER) -> frozenset[int]:
    """Accounts a genuine service runs as: root, the service account (when it exists), and this caller."""
    if sys.platform == "win32":
        raise errors.AgentUnavailable("Windows uses the named pipe (agent.link.winpipe)")
    import pwd

    uids = {0, os.getuid()}
    try:
        uids.add(pwd.getpwnam(service_user).pw_uid)
    except KeyError:
        pass
    return frozenset(uids)


def socket_path(runtime_dir: Path) -> Path:
    """Where the service listens inside its runtime directory."""
    return Path(runtime_dir) / SOCKET_NAME


def _check_dir(directory: Path, owners: Iterable[int]) -> os.stat_result:
    """The runtime directory's stat, if it is a real directory of a trusted owner nobody else may write."""
    try:
        st = os.lstat(directory)
    except FileNotFoundError as exc:
        raise errors.AgentUnavailable("The POSPal License service is not running.") from exc
    if not stat.S_ISDIR(st.st_mode):
        raise errors.NotGenuineService(f"{directory} is not a directory")
    if st.st_uid not in set(owners):
        raise errors.NotGenuineService(f"{directory} belongs to uid {st.st_uid}, not to the service")
    if st.st_mode & 0o022:
        raise errors.NotGenuineService(f"{directory} can be written by other accounts")
    return st


def connect(
    runtime_dir: Path, *, trusted_uids: Iterable[int] | None = None, timeout: float = 5.0
) -> SocketStream:
    """Connect to the service's socket after proving it is the service's (see the module docstring).

    Raises `AgentUnavailable` (nothing listens) or `NotGenuineService` (something else does).
    """
    if sys.platform == "win32":
        raise errors.AgentUnavailable("Windows uses the named pipe (agent.link.winpipe)")
    owners = frozenset(trusted_server_uids() if trusted_uids is None else trusted_uids)
    directory = Path(runtime_dir)
    dir_stat = _check_dir(directory, owners)
    path = socket_path(directory)
    try:
        st = os.lstat(path)
    except FileNotFoundError as exc:
        raise errors.AgentUnavailable("The POSPal License service is not running.") from exc
    if not stat.S_ISSOCK(st.st_mode) or st.st_uid != dir_stat.st_uid:
        raise errors.NotGenuineService(f"{path} is not the service's socket")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(str(path))
        uid, pid = peer_uid_pid(sock)
    except OSError as exc:
        sock.close()
        raise errors.AgentUnavailable(f"The POSPal License service does not answer ({exc}).") from exc
    if uid != dir_stat.st_uid or uid not in owners:
        sock.close()
        log.warning("refused a channel served by uid %s (pid %s), not the service", uid, pid)
        raise errors.NotGenuineService(f"the socket is served by uid {uid}, not by the service")
    return SocketStream(sock)


def prepare_runtime_dir(directory: Path) -> Path:
    """Make sure the runtime directory is this account's and closed to others' writes (created 0755 if
    missing, as systemd's RuntimeDirectory= would); raises `StoreError` otherwise."""
    if sys.platform == "win32":
        raise errors.AgentUnavailable("Windows uses the named pipe (agent.link.winpipe)")
    directory = Path(directory)
    try:
        directory.mkdir(mode=0o755, parents=True, exist_ok=True)
        st = os.lstat(directory)
    except OSError as exc:
        raise errors.StoreError(f"Cannot create the runtime directory {directory}: {exc}") from exc
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
        raise errors.StoreError(f"{directory} is not this service's directory (owner uid {st.st_uid})")
    if st.st_mode & 0o022:
        raise errors.StoreError(f"{directory} can be written by other accounts: refusing to listen there")
    return directory


class UnixChannel:
    """The listening side: accepts connections and hands each, with its `Caller`, to the `ChannelServer`."""

    runtime_dir: Path
    path: Path
    _server: ChannelServer
    _stop: threading.Event
    _lock: threading.Lock
    _open: dict[socket.socket, str]
    _sock: socket.socket
    _thread: threading.Thread | None

    def __init__(self, runtime_dir: Path, server: ChannelServer) -> None:
        if sys.platform == "win32":
            raise errors.StoreError("Windows uses the named pipe (agent.link.winpipe)")
        self.runtime_dir = prepare_runtime_dir(runtime_dir)
        self.path = socket_path(self.runtime_dir)
        self._server = server
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._open: dict[socket.socket, str] = {}
        if self.path.is_socket():
            self.path.unlink()  # a stale socket of an earlier run (the directory is ours)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(str(self.path))
        # Anyone may connect; the kernel's peer credentials decide what they may do.
        os.chmod(self.path, 0o666)  # noqa: S103
        self._sock.listen(16)
        self._sock.settimeout(0.5)
        self._thread: threading.Thread | None = None

    def start(self) -> UnixChannel:
        """Accept in a daemon thread; returns self."""
        self._thread = threading.Thread(target=self._accept_loop, name="pospal-channel", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting, close every connection and remove the socket."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._sock.close()
        with self._lock:
            for conn in list(self._open):
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        try:
            self.path.unlink()
        except OSError:
            pass

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._stop.is_set():
                    return
                continue
            conn.settimeout(None)
            try:
                uid, pid = peer_uid_pid(conn)
            except OSError:
                conn.close()
                continue
            caller = Caller(f"uid:{uid}", login_session(pid), pid)
            with self._lock:
                mine = sum(1 for user in self._open.values() if user == caller.user)
                if len(self._open) >= MAX_CONNECTIONS or mine >= MAX_PER_USER:
                    log.warning("refused a channel connection from %s: too many open", caller.user)
                    conn.close()
                    continue
                self._open[conn] = caller.user
            threading.Thread(
                target=self._serve, args=(conn, caller), name="pospal-channel-conn", daemon=True
            ).start()

    def _serve(self, conn: socket.socket, caller: Caller) -> None:
        try:
            self._server.serve(SocketStream(conn), caller)
        except OSError:
            pass
        finally:
            with self._lock:
                self._open.pop(conn, None)
            conn.close()
